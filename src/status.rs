//! The status endpoint of `gridwatch run`: Prometheus metrics, liveness, readiness, and the
//! per-camera state as JSON, for the command centre's monitoring and the review console.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::ingest::status::{CameraRegistry, CameraState};

/// How long the readiness probe waits for the outbox's write lock (the case stage may hold it).
pub const READINESS_OUTBOX_LOCK_TIMEOUT_MS: u64 = 1000;

/// What `/readyz` needs to know that the camera registry does not: whether the model is loaded
/// and where the outbox is. Cheap to clone; `run` fills it in as it starts.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    model_loaded: Arc<AtomicBool>,
    outbox: Arc<Mutex<Option<PathBuf>>>,
    /// Cluster mode: a node without a valid lease analyses nothing and is not ready.
    cluster: Arc<Mutex<Option<crate::cluster::Ownership>>>,
}

impl Readiness {
    pub fn model_loaded(&self) {
        self.model_loaded.store(true, Ordering::SeqCst);
    }

    pub fn set_cluster(&self, ownership: crate::cluster::Ownership) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(ownership);
    }

    pub fn set_outbox(&self, path: PathBuf) {
        *self.outbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// `Ok` when ready; otherwise the reason. Takes the outbox's write lock (`BEGIN IMMEDIATE`,
    /// rolled back): that catches a read-only mount, a missing folder or a lock held elsewhere,
    /// not a full disk (no page is written); a full disk stops the pipeline at its next write.
    pub fn check(&self, cameras: &CameraRegistry) -> Result<(), String> {
        if !self.model_loaded.load(Ordering::SeqCst) {
            return Err("model not loaded yet".into());
        }
        let cluster = self
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(o) = &cluster
            && !o.lease_valid()
        {
            return Err("cluster mode: no valid etcd lease".into());
        }
        let states: Vec<CameraState> = cameras.snapshot().iter().map(|c| c.state).collect();
        let streaming = states.contains(&CameraState::Streaming);
        // Finite sources that have all ended are a finished job, cameras outside their active
        // hours are off on purpose, and so are those another node analyses: none is an
        // outage. A failed file is one.
        let all_done = !states.is_empty()
            && states.iter().all(|s| {
                matches!(
                    s,
                    CameraState::Ended | CameraState::Inactive | CameraState::Standby
                )
            });
        if !streaming && !all_done {
            return Err("no camera is streaming".into());
        }
        let path = self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("outbox not opened yet")?;
        let conn = rusqlite::Connection::open(&path)
            .map_err(|e| format!("outbox {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_millis(READINESS_OUTBOX_LOCK_TIMEOUT_MS))
            .map_err(|e| format!("outbox {}: {e}", path.display()))?;
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| format!("outbox {} not writable: {e}", path.display()))?;
        Ok(())
    }

    /// Sets `gridwatch_outbox_cases{scenario, state}` from the outbox (read-only query).
    pub fn export_outbox_cases(&self) {
        let Some(path) = self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return;
        };
        let _ = conn.busy_timeout(Duration::from_millis(READINESS_OUTBOX_LOCK_TIMEOUT_MS));
        let Ok(mut stmt) = conn.prepare(
            "SELECT c.scenario, o.state, count(*) FROM outbox o JOIN cases c ON c.id = o.case_id \
             GROUP BY c.scenario, o.state",
        ) else {
            return;
        };
        let Ok(rows) = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) else {
            return;
        };
        for (scenario, state, n) in rows.flatten() {
            crate::telemetry::outbox_cases(&scenario, &state, n.max(0) as u64);
        }
    }
}

/// `/metrics`, `/healthz`, `/readyz` (never ready: no run reports to it), `/api/v1/cameras`.
pub fn router(cameras: CameraRegistry) -> Router {
    router_with_readiness(cameras, Readiness::default())
}

/// `/metrics`, `/healthz`, `/readyz` (200 when the model is loaded, a camera streams or every
/// camera has ended or is outside its active hours, and the outbox takes a write transaction;
/// otherwise 503 with `{"ready": false, "reason": …}`),
/// `/api/v1/cameras`.
pub fn router_with_readiness(cameras: CameraRegistry, readiness: Readiness) -> Router {
    let handle = crate::telemetry::prometheus();
    let for_metrics = cameras.clone();
    let for_ready = cameras.clone();
    let outbox_metrics = readiness.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (cameras, outbox) = (for_metrics.clone(), outbox_metrics.clone());
                async move {
                    cameras.export_gauges();
                    let _ = tokio::task::spawn_blocking(move || outbox.export_outbox_cases()).await;
                    handle.map(|h| h.render()).unwrap_or_default()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (readiness, cameras) = (readiness.clone(), for_ready.clone());
                async move {
                    let result = tokio::task::spawn_blocking(move || readiness.check(&cameras))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    match result {
                        Ok(()) => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"ready": true})),
                        ),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"ready": false, "reason": reason})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/api/v1/cameras",
            get(move || async move { axum::Json(cameras.snapshot()) }),
        )
}
