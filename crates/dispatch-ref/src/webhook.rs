//! The webhook (push): the status feed POSTed to one URL, one [`StatusEvent`] per request,
//! oldest first, signed with [`gridwatch_case::platform::sign`] in [`SIGNATURE_HEADER`]. The
//! cursor (the last event the URL answered 2xx to) lives in `webhook_cursor`, so a restart
//! resumes where delivery stopped; failures are retried with a doubling backoff, and nothing is
//! skipped. At least once: an event whose 2xx was lost is sent again, and a receiver stores each
//! `event_id` once.

use std::time::Duration;

use gridwatch_case::platform::{SIGNATURE_HEADER, sign};

use super::*;

/// How often the feed is checked for new events.
const POLL: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A receiver that takes longer than this to answer is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events read from the feed per look.
const BATCH: u32 = 100;

/// Where the status feed is pushed, and the secret its requests are signed with.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

/// The delivery loop of one [`Webhook`], over the receiver's database.
pub struct WebhookTask {
    db: Arc<Mutex<Connection>>,
    webhook: Webhook,
    client: reqwest::Client,
}

/// Why one delivery failed (it is retried).
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("event does not serialise: {0}")]
    Json(#[from] serde_json::Error),
}

impl WebhookTask {
    pub(crate) fn new(db: Arc<Mutex<Connection>>, webhook: Webhook) -> Result<Self, ReceiverError> {
        let fail = |reason: String| ReceiverError::Webhook {
            url: webhook.url.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&webhook.url).map_err(|e| fail(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail("not an http(s) URL".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            db,
            webhook,
            client,
        })
    }

    /// Delivers the feed until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::select! {
            () = shutdown => {}
            () = self.deliver_forever() => {}
        }
    }

    async fn deliver_forever(&self) {
        let mut after = self.cursor().await;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let events =
                match blocking(&self.db, move |c| feed::events_after(c, after, BATCH)).await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook: reading the status feed failed");
                        Vec::new()
                    }
                };
            if events.is_empty() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            for event in events {
                if let Err(e) = self.post(&event).await {
                    tracing::warn!(url = %self.webhook.url, event_id = event.event_id, error = %e, retry_in_s = backoff.as_secs(), "webhook delivery failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
                after = event.event_id;
                backoff = FIRST_BACKOFF;
                self.save_cursor(after).await;
            }
        }
    }

    /// The stored cursor; retried until the database answers (nothing may be skipped).
    async fn cursor(&self) -> i64 {
        loop {
            let url = self.webhook.url.clone();
            let read = blocking(&self.db, move |c| {
                c.query_row(
                    "SELECT after FROM webhook_cursor WHERE url = ?1",
                    params![url],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
            })
            .await;
            match read {
                Ok(after) => return after.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: reading the cursor failed");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Only a lost write here resends (the in-memory cursor has moved on): at least once.
    async fn save_cursor(&self, after: i64) {
        let url = self.webhook.url.clone();
        let saved = blocking(&self.db, move |c| {
            c.execute(
                "INSERT INTO webhook_cursor (url, after) VALUES (?1, ?2)
                 ON CONFLICT(url) DO UPDATE SET after = excluded.after",
                params![url, after],
            )
        })
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, after, "webhook: saving the cursor failed");
        }
    }

    async fn post(&self, event: &StatusEvent) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(event)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(self.webhook.secret.as_bytes(), now, &body);
        let answer = self
            .client
            .post(&self.webhook.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(answer.status()))
        }
    }
}
