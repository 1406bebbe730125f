//! Dispatch stage: delivers the outbox's cases to the dispatch API over HTTP, one POST per case
//! with `Idempotency-Key` = case id and a bearer token. Responses are classified (2xx delivered;
//! 400/413/422 dead letter with the reason; 409, 408, 429, other 4xx, 5xx, timeouts and refused
//! connections retried with exponential backoff and full jitter), and a circuit breaker backs off
//! the whole endpoint after consecutive failures. Cases are taken oldest-due first, so none
//! starves. Also the outbox status route. The reference receiver is its own crate
//! (`gridwatch-dispatch-ref`, crates/dispatch-ref).

pub mod settings;
pub mod status_back;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::cases::CASE_FIELDS;
use crate::cases::outbox::{Outbox, OutboxCounts, OutboxError, PendingCase};
use crate::cases::platform::UpdateOutcome;
use crate::telemetry;
use settings::{DispatchSettings, ImageUpload};

const BATCH: usize = 16;
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the outbox gauges are refreshed while delivering.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Image fields of the case that multipart uploads move into their own parts.
const IMAGE_FIELDS: &[&str] = &["snapshot", "crop"];
/// Longest error text kept from a response body.
const REASON_CHARS: usize = 200;

/// What the delivery task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// No more cases will come: deliver what is pending, then stop. At the deadline a request in
    /// flight is cut (its case stays pending; the idempotency key makes a repeat harmless).
    Drain {
        deadline: Instant,
    },
    /// Stop after the request in flight; what is pending stays in the outbox.
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("outbox task failed: {0}")]
    Join(String),
    #[error(transparent)]
    FieldMap(#[from] FieldMapError),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FieldMapError {
    #[error("`{0}` is not a field of the case (known: {known})", known = CASE_FIELDS.join(", "))]
    UnknownField(String),
    #[error("`{0}` is renamed to an empty name")]
    Empty(String),
    #[error("two fields would be sent as `{0}`")]
    Collision(String),
}

/// Renames of top-level case fields for a platform whose API uses other names.
#[derive(Debug, Clone, Default)]
pub struct FieldMap(BTreeMap<String, String>);

impl FieldMap {
    /// Checks that every source is a case field and that no two fields end up with one name.
    pub fn new(map: &BTreeMap<String, String>) -> Result<Self, FieldMapError> {
        let mut targets = std::collections::HashSet::new();
        for (from, to) in map {
            if !CASE_FIELDS.contains(&from.as_str()) {
                return Err(FieldMapError::UnknownField(from.clone()));
            }
            if to.trim().is_empty() {
                return Err(FieldMapError::Empty(from.clone()));
            }
            if !targets.insert(to.as_str()) {
                return Err(FieldMapError::Collision(to.clone()));
            }
        }
        // A field kept under its own name must not collide with a renamed one.
        for f in CASE_FIELDS {
            if !map.contains_key(*f) && targets.contains(f) {
                return Err(FieldMapError::Collision((*f).to_owned()));
            }
        }
        Ok(Self(map.clone()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renames the top-level fields of a case JSON object.
    pub fn apply(&self, value: Value) -> Value {
        match value {
            Value::Object(obj) if !self.0.is_empty() => Value::Object(
                obj.into_iter()
                    .map(|(k, v)| (self.0.get(&k).cloned().unwrap_or(k), v))
                    .collect(),
            ),
            v => v,
        }
    }
}

/// How one delivery attempt ended.
#[derive(Debug)]
enum Attempt {
    Delivered(u16),
    /// The API refused the case for good (malformed for it): kept as a dead letter with the reason.
    Refused(String),
    Retry {
        reason: String,
        /// The endpoint answered sensibly (e.g. 409, key still being processed): not a failure
        /// of the endpoint, so it does not count towards the circuit breaker.
        endpoint_ok: bool,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
}

/// The breaker's state, also exported as a gauge (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// Cool-down over: one probe request decides.
    HalfOpen,
}

/// A circuit breaker for the whole endpoint: after `threshold` consecutive failures no request
/// is sent for `open_for`; then one case is sent as a probe, whose result closes or reopens it.
/// While open, no case spends an attempt, so backoffs do not grow during an outage.
#[derive(Debug)]
struct Breaker {
    /// The target whose endpoint this breaker guards (logs and metrics).
    target: String,
    threshold: u32,
    open_for: Duration,
    consecutive_failures: u32,
    state: BreakerState,
}

impl Breaker {
    fn new(target: &str, threshold: u32, open_for: Duration) -> Self {
        Self {
            target: target.to_owned(),
            threshold: threshold.max(1),
            open_for,
            consecutive_failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// `None` if a request may go now, else how long to wait.
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        match self.state {
            BreakerState::Open { until } if now < until => Some(until - now),
            BreakerState::Open { .. } => {
                self.set(BreakerState::HalfOpen);
                tracing::info!(target = %self.target, "circuit breaker half-open: probing the dispatch endpoint");
                None
            }
            _ => None,
        }
    }

    fn success(&mut self) {
        self.consecutive_failures = 0;
        if self.state != BreakerState::Closed {
            tracing::info!(target = %self.target, "circuit breaker closed: the dispatch endpoint answers again");
            self.set(BreakerState::Closed);
        }
    }

    fn failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let trip =
            self.state == BreakerState::HalfOpen || self.consecutive_failures >= self.threshold;
        if trip && !matches!(self.state, BreakerState::Open { .. }) {
            tracing::warn!(
                target = %self.target,
                consecutive_failures = self.consecutive_failures,
                open_seconds = self.open_for.as_secs_f64(),
                "circuit breaker open: leaving the dispatch endpoint alone"
            );
            telemetry::breaker_opened(&self.target);
            self.set(BreakerState::Open {
                until: now + self.open_for,
            });
        }
    }

    fn set(&mut self, state: BreakerState) {
        self.state = state;
        telemetry::breaker_state(
            &self.target,
            match state {
                BreakerState::Closed => 0,
                BreakerState::Open { .. } => 1,
                BreakerState::HalfOpen => 2,
            },
        );
    }
}

/// Delivery to one target: its own client (timeout), token, field map, breaker and backoff, so
/// one target's outage never delays another's cases. `run` spawns one per target.
pub struct Delivery {
    /// The target id (`settings.id`, default `primary`): the outbox's `deliveries.target`.
    target: String,
    client: reqwest::Client,
    settings: DispatchSettings,
    field_map: FieldMap,
    url: String,
    outbox: Arc<Mutex<Outbox>>,
}

impl Delivery {
    /// Delivery to the target `settings` describes (`settings.id`, default `primary`; see
    /// [`DispatchSettings::per_target`]). `url` is the endpoint resolved by the caller
    /// (configured, or the embedded receiver's).
    pub fn new(
        settings: DispatchSettings,
        url: String,
        outbox: Outbox,
    ) -> Result<Self, DispatchError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.timeout())
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DispatchError::Client(e.to_string()))?;
        let field_map = FieldMap::new(&settings.field_map)?;
        Ok(Self {
            target: settings.primary_id().to_owned(),
            client,
            settings,
            field_map,
            url,
            outbox: Arc::new(Mutex::new(outbox)),
        })
    }

    async fn with_outbox<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, DispatchError> {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || f(&outbox.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| DispatchError::Join(e.to_string()))?
            .map_err(DispatchError::from)
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    async fn refresh_gauges(&self) -> Result<(), DispatchError> {
        let target = self.target.clone();
        let stats = self.with_outbox(move |o| o.target_gauges(&target)).await?;
        telemetry::outbox_state(
            &self.target,
            stats.pending,
            stats.dead_letters,
            stats.oldest_pending_age_seconds.unwrap_or(0.0),
        );
        Ok(())
    }

    /// Cases and updates still owed to this target (the drain waits for both).
    async fn pending(&self) -> Result<u64, DispatchError> {
        let target = self.target.clone();
        self.with_outbox(move |o| Ok(o.pending_for(&target)? + o.pending_updates_for(&target)?))
            .await
    }

    /// Records how an attempt went, for a case or an update.
    async fn record(&self, item: &PendingCase, outcome: Recorded) -> Result<(), DispatchError> {
        let id = item.id.clone();
        let target = self.target.clone();
        let update = item.update_of.is_some();
        self.with_outbox(move |o| match (update, outcome) {
            (false, Recorded::Delivered) => o.mark_delivered(&id, &target),
            (false, Recorded::Retry(delay, reason)) => o.mark_retry(&id, &target, delay, &reason),
            (false, Recorded::Dead(reason)) => o.mark_dead(&id, &target, &reason),
            (true, Recorded::Delivered) => o.mark_update(&id, UpdateOutcome::Delivered),
            (true, Recorded::Retry(delay_ms, error)) => o.mark_update(
                &id,
                UpdateOutcome::Retry {
                    delay_ms,
                    error: &error,
                },
            ),
            (true, Recorded::Dead(error)) => {
                o.mark_update(&id, UpdateOutcome::Dead { error: &error })
            }
        })
        .await
    }

    /// Delivers to this target until told to stop, or until its deliveries are drained;
    /// returns the outbox's case counts at the end. An outbox error (disk full, I/O) ends the
    /// task with that error: nothing is marked delivered that was not recorded as such.
    pub async fn run(
        self,
        wake: Arc<Notify>,
        mut phase: watch::Receiver<Phase>,
    ) -> Result<OutboxCounts, DispatchError> {
        let mut breaker = Breaker::new(
            &self.target,
            self.settings.breaker_failure_threshold,
            self.settings.breaker_open(),
        );
        breaker.set(BreakerState::Closed);
        let mut gauges_at = Instant::now() - GAUGE_INTERVAL;
        'outer: loop {
            let now_phase = *phase.borrow();
            let now = Instant::now();
            if now.duration_since(gauges_at) >= GAUGE_INTERVAL {
                self.refresh_gauges().await?;
                gauges_at = now;
            }
            let deadline = match now_phase {
                Phase::Stop => break,
                Phase::Drain { deadline } if now >= deadline => break,
                Phase::Drain { deadline } => Some(deadline),
                Phase::Running => None,
            };
            if let Some(wait) = breaker.wait(now) {
                if deadline.is_some() && self.pending().await? == 0 {
                    break;
                }
                let wait = deadline.map_or(wait, |d| wait.min(d - now));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
            let target = self.target.clone();
            let due = self
                .with_outbox(move |o| {
                    // Cases first: an update waits for its case anyway.
                    let mut due = o.due(&target, BATCH)?;
                    if due.len() < BATCH {
                        due.extend(o.due_updates(&target, BATCH - due.len())?);
                    }
                    Ok(due)
                })
                .await?;
            if due.is_empty() {
                if deadline.is_some() && self.pending().await? == 0 {
                    break;
                }
                let target = self.target.clone();
                let next = self.with_outbox(move |o| o.next_due_in_ms(&target)).await?;
                let mut wait = next.map_or(IDLE_POLL, |ms| {
                    Duration::from_millis(ms as u64).min(IDLE_POLL)
                });
                if let Some(d) = deadline {
                    wait = wait.min(d.saturating_duration_since(Instant::now()));
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
            for case in due {
                if *phase.borrow() == Phase::Stop || breaker.wait(Instant::now()).is_some() {
                    continue 'outer;
                }
                if !self.deliver(case, &mut breaker, &mut phase).await? {
                    // Cut at the drain deadline.
                    break 'outer;
                }
            }
        }
        self.refresh_gauges().await?;
        self.with_outbox(|o| o.counts()).await
    }

    /// One attempt for `case`, recorded in the outbox. `false` if the drain deadline cut it.
    async fn deliver(
        &self,
        case: PendingCase,
        breaker: &mut Breaker,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<bool, DispatchError> {
        let started = Instant::now();
        let Some(attempt) = bounded(self.post(&case), phase).await else {
            tracing::warn!(case = %case.id, target = %self.target, "request cut at the shutdown deadline; the case stays in the outbox");
            return Ok(false);
        };
        telemetry::delivery_seconds(&self.target, started.elapsed().as_secs_f64());
        let id = case.id.clone();
        let kind = case.update_of.as_ref().map(|_| update_kind(&case.body));
        let count = |outcome: &'static str| match &kind {
            Some(k) => telemetry::update_delivery(&self.target, k, outcome),
            None => telemetry::delivery(&self.target, outcome),
        };
        match attempt {
            Attempt::Delivered(status) => {
                breaker.success();
                count("delivered");
                match (&kind, &case.update_of) {
                    (Some(k), Some(of)) => {
                        tracing::info!(update = %id, case = %of, kind = %k, target = %self.target, status, "case update delivered")
                    }
                    _ => {
                        tracing::info!(case = %id, target = %self.target, status, attempts = case.attempts + 1, url = %self.url, "case delivered")
                    }
                }
                self.record(&case, Recorded::Delivered).await?;
            }
            Attempt::Refused(reason) => {
                breaker.success();
                count("dead_letter");
                tracing::error!(id = %id, update_of = ?case.update_of, target = %self.target, reason = %reason, "dispatch API refused it; kept as a dead letter (see `gridwatch outbox list`)");
                self.record(&case, Recorded::Dead(reason)).await?;
            }
            Attempt::Retry {
                reason,
                endpoint_ok,
                retry_after,
            } => {
                if endpoint_ok {
                    breaker.success();
                } else {
                    breaker.failure(Instant::now());
                }
                count("retry");
                telemetry::delivery_retry(&self.target);
                let mut delay = backoff_ms(
                    case.attempts,
                    self.settings.retry_initial_seconds,
                    self.settings.retry_max_seconds,
                );
                if let Some(after) = retry_after {
                    let cap = (self.settings.retry_max_seconds * 1000.0) as i64;
                    // A peer's Retry-After may be any u64 of seconds: saturate, never wrap.
                    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                    delay = delay.max(after_ms.min(cap));
                }
                tracing::warn!(id = %id, update_of = ?case.update_of, target = %self.target, reason = %reason, attempts = case.attempts + 1, retry_in_ms = delay, "delivery failed; will retry");
                self.record(&case, Recorded::Retry(delay, reason)).await?;
            }
        }
        Ok(true)
    }

    /// The request for a case: field names mapped, images inline or as multipart parts. An
    /// update goes as it is, to `<url>/<case id>/updates`.
    fn request(&self, case: &PendingCase) -> Result<reqwest::RequestBuilder, String> {
        let url = match &case.update_of {
            Some(of) => format!("{}/{of}/updates", self.url.trim_end_matches('/')),
            None => self.url.clone(),
        };
        let req = self.client.post(url).header("Idempotency-Key", &case.id);
        let req = match &self.settings.bearer_token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        if case.update_of.is_some() {
            return Ok(req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(case.body.clone()));
        }
        if self.settings.image_upload == ImageUpload::Inline && self.field_map.is_empty() {
            // The stored body as is: no parse on the common path.
            return Ok(req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(case.body.clone()));
        }
        let mut value: Value = serde_json::from_str(&case.body)
            .map_err(|e| format!("stored case is not JSON: {e}"))?;
        let mut images = Vec::new();
        if self.settings.image_upload == ImageUpload::Multipart {
            for field in IMAGE_FIELDS {
                let Some(img) = value.get_mut(*field).and_then(Value::as_object_mut) else {
                    continue;
                };
                let Some(Value::String(b64)) = img.remove("data_base64") else {
                    continue;
                };
                let jpeg = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("stored {field} is not base64: {e}"))?;
                img.insert("part".into(), Value::String((*field).into()));
                images.push((*field, jpeg));
            }
        }
        let body = serde_json::to_vec(&self.field_map.apply(value))
            .map_err(|e| format!("case cannot be serialised: {e}"))?;
        if self.settings.image_upload == ImageUpload::Inline {
            return Ok(req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body));
        }
        let json = reqwest::multipart::Part::bytes(body)
            .mime_str("application/json")
            .map_err(|e| e.to_string())?;
        let mut form = reqwest::multipart::Form::new().part("case", json);
        for (name, jpeg) in images {
            let part = reqwest::multipart::Part::bytes(jpeg)
                .file_name(format!("{name}.jpg"))
                .mime_str("image/jpeg")
                .map_err(|e| e.to_string())?;
            form = form.part(name, part);
        }
        Ok(req.multipart(form))
    }

    async fn post(&self, case: &PendingCase) -> Attempt {
        let req = match self.request(case) {
            Ok(r) => r,
            Err(reason) => return Attempt::Refused(reason),
        };
        match req.send().await {
            Ok(resp) => classify(resp).await,
            Err(e) => Attempt::Retry {
                reason: error_chain(&e),
                endpoint_ok: false,
                retry_after: None,
            },
        }
    }
}

/// How an attempt is recorded.
enum Recorded {
    Delivered,
    Retry(i64, String),
    Dead(String),
}

/// An update's kind, read from its stored JSON (for metrics and logs).
fn update_kind(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `request` unless the drain deadline passes first (`None` then). A `Running → Drain`
/// change while the request is in flight starts the bound.
async fn bounded<F: std::future::Future>(
    request: F,
    phase: &mut watch::Receiver<Phase>,
) -> Option<F::Output> {
    tokio::pin!(request);
    let mut phase_open = true;
    loop {
        let deadline = match *phase.borrow() {
            Phase::Drain { deadline } => Some(deadline),
            _ => None,
        };
        let cut = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut request => return Some(out),
            _ = cut => return None,
            changed = phase.changed(), if phase_open => phase_open = changed.is_ok(),
        }
    }
}

/// The reqwest error with its causes ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

async fn classify(resp: reqwest::Response) -> Attempt {
    let status = resp.status();
    if status.is_success() {
        return Attempt::Delivered(status.as_u16());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let reason = format!(
        "HTTP {}: {}",
        status.as_u16(),
        text.chars().take(REASON_CHARS).collect::<String>()
    );
    match status.as_u16() {
        // The case itself is wrong for this API: retrying cannot help.
        400 | 413 | 422 => Attempt::Refused(reason),
        // The key is still being processed (or a transient conflict): try again later.
        409 => Attempt::Retry {
            reason,
            endpoint_ok: true,
            retry_after,
        },
        // 401/403/404 (configuration), 408, 429 and 5xx: the endpoint, not the case.
        _ => Attempt::Retry {
            reason,
            endpoint_ok: false,
            retry_after,
        },
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^attempts)].
pub fn backoff_ms(attempts: u32, initial_seconds: f64, max_seconds: f64) -> i64 {
    let cap = (initial_seconds * 2f64.powi(attempts.min(30) as i32)).min(max_seconds);
    (fastrand::f64() * cap * 1000.0).round() as i64
}

/// `GET /api/v1/outbox`: depth, oldest undelivered age, retries and dead letters of the outbox
/// at `outbox_path`, as JSON ([`crate::cases::outbox::OutboxStats`]). Merged into the status
/// server.
pub fn status_routes(outbox_path: PathBuf) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/api/v1/outbox",
        axum::routing::get(move || {
            let path = outbox_path.clone();
            async move {
                let stats = tokio::task::spawn_blocking(move || {
                    Outbox::open(&path).and_then(|o| o.stats())
                })
                .await;
                match stats {
                    Ok(Ok(s)) => axum::Json(s).into_response(),
                    Ok(Err(e)) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({ "error": e.to_string() })),
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap() {
        for attempts in 0..40 {
            let cap = (1.0 * 2f64.powi(attempts.min(30) as i32)).min(60.0) * 1000.0;
            for _ in 0..50 {
                let d = backoff_ms(attempts, 1.0, 60.0);
                assert!(d >= 0 && d as f64 <= cap, "{attempts}: {d} > {cap}");
            }
        }
    }

    #[test]
    fn breaker_opens_after_threshold_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new("primary", 3, Duration::from_secs(10));
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.wait(t0), None, "below the threshold requests still go");
        b.failure(t0);
        assert_eq!(
            b.wait(t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            b.wait(t0 + Duration::from_secs(10)),
            None,
            "cool-down over: probe"
        );
        assert_eq!(b.state, BreakerState::HalfOpen);
        b.failure(t0 + Duration::from_secs(10));
        assert!(
            b.wait(t0 + Duration::from_secs(11)).is_some(),
            "failed probe reopens"
        );
        assert_eq!(b.wait(t0 + Duration::from_secs(20)), None);
        b.success();
        assert_eq!(b.state, BreakerState::Closed);
        b.failure(t0 + Duration::from_secs(21));
        assert_eq!(
            b.wait(t0 + Duration::from_secs(21)),
            None,
            "count restarted"
        );
    }

    #[test]
    fn field_map_renames_top_level_fields_and_rejects_bad_maps() {
        let map: BTreeMap<String, String> = [("id", "caseId"), ("confirmed_at", "reportTime")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        let fm = FieldMap::new(&map).unwrap();
        let v = fm.apply(serde_json::json!({"id": "x", "confirmed_at": "t", "unit": {"id": "u"}}));
        assert_eq!(
            v,
            serde_json::json!({"caseId": "x", "reportTime": "t", "unit": {"id": "u"}})
        );
        let bad = |pairs: &[(&str, &str)]| {
            FieldMap::new(
                &pairs
                    .iter()
                    .map(|(a, b)| ((*a).into(), (*b).into()))
                    .collect(),
            )
            .unwrap_err()
        };
        assert_eq!(
            bad(&[("nope", "x")]),
            FieldMapError::UnknownField("nope".into())
        );
        assert_eq!(bad(&[("id", " ")]), FieldMapError::Empty("id".into()));
        assert_eq!(
            bad(&[("id", "k"), ("lat", "k")]),
            FieldMapError::Collision("k".into())
        );
        assert_eq!(
            bad(&[("id", "unit")]),
            FieldMapError::Collision("unit".into())
        );
    }
}
