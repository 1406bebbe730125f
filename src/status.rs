//! The status endpoint of `gridwatch run`: Prometheus metrics, liveness, and the per-camera state
//! as JSON, for the command centre's monitoring and the review console.

use axum::Router;
use axum::routing::get;

use crate::ingest::status::CameraRegistry;

/// `/metrics`, `/healthz`, `/api/v1/cameras`.
pub fn router(cameras: CameraRegistry) -> Router {
    let handle = crate::telemetry::prometheus();
    let for_metrics = cameras.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                for_metrics.export_gauges();
                handle.map(|h| h.render()).unwrap_or_default()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/v1/cameras",
            get(move || async move { axum::Json(cameras.snapshot()) }),
        )
}
