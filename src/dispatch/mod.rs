//! Dispatch stage: delivers the outbox's cases to the dispatch API over HTTP (JSON, one POST per
//! case with `Idempotency-Key` = case id), marking a case delivered only on a 2xx and retrying
//! everything else with exponential backoff and full jitter. Also the reference receiver.

pub mod server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::cases::outbox::{Outbox, OutboxCounts, OutboxError, PendingCase};
use crate::config::DispatchSettings;
use crate::telemetry;

const BATCH: usize = 16;
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What the delivery task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// No more cases will come: deliver what is pending, then stop (or at the deadline).
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
}

/// How one delivery attempt ended.
#[derive(Debug)]
enum Attempt {
    Delivered(u16),
    /// The API refused the case for good (malformed for it): kept as a dead letter with the reason.
    Refused(String),
    Retry(String),
}

pub struct Delivery {
    client: reqwest::Client,
    settings: DispatchSettings,
    url: String,
    outbox: Arc<Mutex<Outbox>>,
}

impl Delivery {
    /// `url` is the endpoint resolved by the caller (configured, or the embedded receiver's).
    pub fn new(
        settings: DispatchSettings,
        url: String,
        outbox: Outbox,
    ) -> Result<Self, DispatchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(settings.timeout_seconds.max(0.1)))
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DispatchError::Client(e.to_string()))?;
        Ok(Self {
            client,
            settings,
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

    /// Delivers until told to stop, or until drained; returns the outbox counts at the end.
    pub async fn run(
        self,
        wake: Arc<Notify>,
        mut phase: watch::Receiver<Phase>,
    ) -> Result<OutboxCounts, DispatchError> {
        loop {
            let now_phase = *phase.borrow();
            if now_phase == Phase::Stop {
                break;
            }
            let due = self.with_outbox(|o| o.due(BATCH)).await?;
            if due.is_empty() {
                if let Phase::Drain { deadline } = now_phase {
                    let counts = self.with_outbox(|o| o.counts()).await?;
                    if counts.pending == 0 || Instant::now() >= deadline {
                        break;
                    }
                }
                let next = self.with_outbox(|o| o.next_due_in_ms()).await?;
                let wait = next.map_or(IDLE_POLL, |ms| {
                    Duration::from_millis(ms as u64).min(IDLE_POLL)
                });
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
            for case in due {
                if *phase.borrow() == Phase::Stop {
                    break;
                }
                self.deliver(case).await?;
            }
        }
        self.with_outbox(|o| o.counts()).await
    }

    async fn deliver(&self, case: PendingCase) -> Result<(), DispatchError> {
        let attempt = self.post(&case).await;
        let id = case.id.clone();
        match attempt {
            Attempt::Delivered(status) => {
                telemetry::delivery("delivered");
                tracing::info!(case = %id, status, attempts = case.attempts + 1, url = %self.url, "case delivered");
                self.with_outbox(move |o| o.mark_delivered(&id)).await
            }
            Attempt::Refused(reason) => {
                telemetry::delivery("dead_letter");
                tracing::error!(case = %id, reason = %reason, "dispatch API refused the case; kept as a dead letter");
                self.with_outbox(move |o| o.mark_dead(&id, &reason)).await
            }
            Attempt::Retry(reason) => {
                telemetry::delivery("retry");
                telemetry::delivery_retry();
                let delay = backoff_ms(
                    case.attempts,
                    self.settings.retry_initial_seconds,
                    self.settings.retry_max_seconds,
                );
                tracing::warn!(case = %id, reason = %reason, attempts = case.attempts + 1, retry_in_ms = delay, "delivery failed; will retry");
                self.with_outbox(move |o| o.mark_retry(&id, delay, &reason))
                    .await
            }
        }
    }

    async fn post(&self, case: &PendingCase) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &case.id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(case.body.clone());
        if let Some(token) = &self.settings.bearer_token {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Attempt::Delivered(status.as_u16());
                }
                let text = resp.text().await.unwrap_or_default();
                let reason = format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    text.chars().take(200).collect::<String>()
                );
                match status.as_u16() {
                    400 | 413 | 422 => Attempt::Refused(reason),
                    _ => Attempt::Retry(reason),
                }
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^attempts)].
pub fn backoff_ms(attempts: u32, initial_seconds: f64, max_seconds: f64) -> i64 {
    let cap = (initial_seconds * 2f64.powi(attempts.min(30) as i32)).min(max_seconds);
    (fastrand::f64() * cap * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_stays_within_its_cap() {
        for attempts in 0..40 {
            let cap = (1.0 * 2f64.powi(attempts.min(30) as i32)).min(60.0) * 1000.0;
            for _ in 0..50 {
                let d = super::backoff_ms(attempts, 1.0, 60.0);
                assert!(d >= 0 && d as f64 <= cap, "{attempts}: {d} > {cap}");
            }
        }
    }
}
