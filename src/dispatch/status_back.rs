//! Status back from the platforms: a poller per target with a status feed (`GET
//! <feed>?after=<event id>`, the cursor kept in the outbox, so a restart resumes where it was),
//! and the signed webhook a platform calls (`POST /api/v1/platform/<target>/status`,
//! HMAC-SHA256 over "<unix seconds>.<body>" with the target's secret; a signature older than
//! five minutes is refused as a replay, and an event stored before is acknowledged without
//! effect). Both store each event once (`Outbox::record_statuses`) and hand a `handling` status
//! to the camera re-checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::{DispatchError, Phase};
use crate::cases::outbox::{Outbox, OutboxError};
use crate::recheck::Rechecks;
use crate::telemetry;
use gridwatch_case::platform::{SIGNATURE_HEADER, StatusEvent, verify};

/// Events asked for per poll; a full page is followed at once by the next.
const FEED_PAGE: usize = 100;
/// Where a platform's webhook calls (`{target}` is the target id).
pub const WEBHOOK_PATH: &str = "/api/v1/platform/{target}/status";
/// A webhook body larger than this is not one status event.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// What both ways of hearing back share: the outbox connection, the re-checks, and whether
/// a `handling` status starts one.
#[derive(Clone)]
pub struct StatusSink {
    outbox: Arc<Mutex<Outbox>>,
    rechecks: Rechecks,
    verify: bool,
}

impl StatusSink {
    pub fn new(outbox: Outbox, rechecks: Rechecks, verify: bool) -> Self {
        Self {
            outbox: Arc::new(Mutex::new(outbox)),
            rechecks,
            verify,
        }
    }

    /// Stores `events` of `target` (each once) and starts the re-checks they ask for.
    async fn record(
        &self,
        target: &str,
        events: Vec<StatusEvent>,
        (via, cursor): (&'static str, Option<i64>),
    ) -> Result<(), OutboxError> {
        let outbox = self.outbox.clone();
        let target_owned = target.to_owned();
        let verify = self.verify;
        let rechecks = tokio::task::spawn_blocking(move || {
            outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record_statuses(&target_owned, &events, (via, cursor), verify)
        })
        .await
        .map_err(|e| OutboxError::Invalid(format!("status task: {e}")))??;
        for r in rechecks {
            self.rechecks.add(r);
        }
        Ok(())
    }

    async fn cursor(&self, target: &str) -> Result<i64, OutboxError> {
        let outbox = self.outbox.clone();
        let target = target.to_owned();
        tokio::task::spawn_blocking(move || {
            outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .status_cursor(&target)
        })
        .await
        .map_err(|e| OutboxError::Invalid(format!("status task: {e}")))?
    }
}

/// Polls one target's status feed until the run stops.
pub struct StatusPoller {
    pub target: String,
    pub feed_url: String,
    pub interval: Duration,
    pub bearer_token: Option<String>,
    pub timeout: Duration,
}

impl StatusPoller {
    pub async fn run(
        self,
        sink: StatusSink,
        mut phase: watch::Receiver<Phase>,
    ) -> Result<(), DispatchError> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| DispatchError::Client(e.to_string()))?;
        tracing::info!(target = %self.target, feed = %self.feed_url, every_seconds = self.interval.as_secs_f64(), "polling the platform's case statuses");
        loop {
            if *phase.borrow() != Phase::Running {
                return Ok(());
            }
            let full = match self.poll_once(&client, &sink).await {
                Ok(n) => n >= FEED_PAGE,
                Err(PollError::Outbox(e)) => return Err(e.into()),
                Err(PollError::Feed(reason)) => {
                    telemetry::platform_status_error(&self.target, "poll");
                    tracing::warn!(target = %self.target, feed = %self.feed_url, %reason, "status poll failed; will poll again");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = phase.changed() => {}
            }
        }
    }

    /// One page of the feed after the stored cursor; the number of events read.
    async fn poll_once(
        &self,
        client: &reqwest::Client,
        sink: &StatusSink,
    ) -> Result<usize, PollError> {
        let after = sink.cursor(&self.target).await.map_err(PollError::Outbox)?;
        let mut req = client.get(&self.feed_url).query(&[
            ("after", after.to_string()),
            ("limit", FEED_PAGE.to_string()),
        ]);
        if let Some(t) = &self.bearer_token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PollError::Feed(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(PollError::Feed(format!("HTTP {}", resp.status())));
        }
        let feed: RawFeed = resp
            .json()
            .await
            .map_err(|e| PollError::Feed(format!("not a status feed: {e}")))?;
        let n = feed.events.len();
        // An event this version cannot read (a status of the town's own, say) is skipped and
        // counted, never allowed to hold the feed at one page.
        let cursor = feed
            .events
            .iter()
            .filter_map(|v| v.get("event_id")?.as_i64())
            .max();
        let events: Vec<StatusEvent> = feed
            .events
            .into_iter()
            .filter_map(|v| match serde_json::from_value(v) {
                Ok(e) => Some(e),
                Err(e) => {
                    telemetry::platform_status_error(&self.target, "unreadable_event");
                    tracing::warn!(target = %self.target, error = %e, "status event skipped");
                    None
                }
            })
            .collect();
        if cursor.is_some() {
            sink.record(&self.target, events, ("poll", cursor))
                .await
                .map_err(PollError::Outbox)?;
        }
        Ok(n)
    }
}

/// The feed as read: events parsed one by one (`StatusFeed` is its strict form).
#[derive(serde::Deserialize)]
struct RawFeed {
    events: Vec<serde_json::Value>,
}

enum PollError {
    /// The platform's side: retried at the next poll.
    Feed(String),
    /// Ours: the run stops.
    Outbox(OutboxError),
}

#[derive(Clone)]
struct WebhookState {
    sink: StatusSink,
    /// Target id → its webhook secret.
    secrets: Arc<HashMap<String, String>>,
}

/// The webhook route for the targets that have a secret; merged into the status endpoint.
pub fn webhook_routes(sink: StatusSink, secrets: HashMap<String, String>) -> axum::Router {
    axum::Router::new()
        .route(WEBHOOK_PATH, axum::routing::post(webhook))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(WebhookState {
            sink,
            secrets: Arc::new(secrets),
        })
}

async fn webhook(
    State(s): State<WebhookState>,
    UrlPath(target): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = s.secrets.get(&target) else {
        return (StatusCode::NOT_FOUND, "no webhook for this target").into_response();
    };
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        telemetry::platform_status_error(&target, "unsigned");
        return (StatusCode::UNAUTHORIZED, "missing signature").into_response();
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = verify(secret.as_bytes(), signature, &body, now) {
        telemetry::platform_status_error(&target, "signature");
        tracing::warn!(target = %target, error = %e, "webhook call refused");
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            telemetry::platform_status_error(&target, "malformed");
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("not JSON: {e}")).into_response();
        }
    };
    if !value.get("event_id").is_some_and(serde_json::Value::is_i64) {
        telemetry::platform_status_error(&target, "malformed");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a status event: no event_id",
        )
            .into_response();
    }
    let event: StatusEvent = match serde_json::from_value(value) {
        Ok(e) => e,
        // Signed and well formed but not readable here (a status of the town's own, say):
        // acknowledged, so that the platform's pusher does not retry it forever.
        Err(e) => {
            telemetry::platform_status_error(&target, "unreadable_event");
            tracing::warn!(target = %target, error = %e, "webhook status event skipped");
            return StatusCode::NO_CONTENT.into_response();
        }
    };
    match s.sink.record(&target, vec![event], ("webhook", None)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(target = %target, error = %e, "webhook status could not be stored");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store now; send again",
            )
                .into_response()
        }
    }
}

/// The status endpoint path of a receiver's feed, for a target served by the embedded one.
pub fn embedded_feed_url(receiver_base: &str) -> String {
    format!(
        "{}/api/v1/status-events",
        receiver_base.trim_end_matches('/')
    )
}

/// Webhook secrets of the targets that have one.
pub fn secrets(settings: &[super::settings::DispatchSettings]) -> HashMap<String, String> {
    settings
        .iter()
        .filter_map(|s| {
            let secret = s.status.as_ref()?.webhook_secret.clone()?;
            Some((s.primary_id().to_owned(), secret))
        })
        .collect()
}
