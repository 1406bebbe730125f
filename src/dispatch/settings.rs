//! The `[dispatch]` section: the primary dispatch endpoint and `[[dispatch.targets]]` (another
//! town's command centre), each with its own endpoint, token, field mapping, retries, breaker and
//! routing rules (`routes`, see `crate::cases::routing`). Cross-references (units, scenarios and
//! zones a route names) are checked by the configuration, which sees the whole key area.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::FieldMap;
use crate::cases::routing::{PRIMARY_TARGET_ID, Route, Routing};

pub const DEFAULT_DISPATCH_TIMEOUT_SECONDS: f64 = 10.0;
pub const DEFAULT_RETRY_INITIAL_SECONDS: f64 = 1.0;
pub const DEFAULT_RETRY_MAX_SECONDS: f64 = 60.0;
pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_OPEN_SECONDS: f64 = 30.0;
/// Delivery timings longer than a day are typos, and `inf` would overflow the clock arithmetic.
pub const MAX_DISPATCH_SECONDS: f64 = 86_400.0;
/// The shortest request timeout: less leaves no time for an answer.
pub const MIN_DISPATCH_TIMEOUT_SECONDS: f64 = 0.1;
/// Opening the breaker only after more consecutive failures than this never protects anything.
pub const MAX_BREAKER_FAILURE_THRESHOLD: u32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    /// This endpoint's id as a delivery target (outbox rows, metrics, logs); default `primary`.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// The dispatch API endpoint cases are POSTed to; defaults to the embedded receiver's.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default = "default_dispatch_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_retry_initial")]
    pub retry_initial_seconds: f64,
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: f64,
    /// Start a dispatch receiver in the same process (demo and single-machine use).
    #[serde(default)]
    pub embedded_receiver: Option<EmbeddedReceiver>,
    /// Consecutive failed deliveries (5xx, timeouts, refused connections) that open the circuit
    /// breaker: the whole endpoint is left alone for `breaker_open_seconds`, then probed once.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failure_threshold: u32,
    #[serde(default = "default_breaker_open")]
    pub breaker_open_seconds: f64,
    /// Images inline in the JSON (base64) or as parts of a multipart/form-data request.
    #[serde(default)]
    pub image_upload: ImageUpload,
    /// Renames top-level fields of the case JSON for a platform with other names,
    /// e.g. `confirmed_at = "reportTime"`.
    #[serde(default)]
    pub field_map: std::collections::BTreeMap<String, String>,
    /// Which cases this endpoint takes (same rules as a target's); none: every case.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// More endpoints (another town's command centre), each with its own routes.
    #[serde(default)]
    pub targets: Vec<DispatchTarget>,
    /// How this platform reports case status back (polled feed and/or signed webhook).
    #[serde(default)]
    pub status: Option<StatusBack>,
}

/// Status back from a platform (`[dispatch.status]`, `[dispatch.targets.status]`): statuses
/// (立案 … 结案, 退回) are polled from `feed_url` every `poll_seconds`, and/or accepted from the
/// platform's webhook at `/api/v1/platform/<target id>/status` on the status endpoint when
/// signed with `webhook_secret` (HMAC-SHA256, `X-Gridwatch-Signature`). Each event is stored
/// once, whichever way it came.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBack {
    /// The platform's status feed (`GET ?after=<event id>`); absent for the embedded receiver:
    /// its own feed. Absent otherwise: no polling.
    #[serde(default)]
    pub feed_url: Option<String>,
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: f64,
    /// The shared secret of the platform's webhook; absent: no webhook for this target.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// How often a status feed is polled when `poll_seconds` is absent.
pub const DEFAULT_STATUS_POLL_SECONDS: f64 = 5.0;
/// A webhook secret shorter than this is guessable.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

fn default_poll_seconds() -> f64 {
    DEFAULT_STATUS_POLL_SECONDS
}

impl Default for StatusBack {
    fn default() -> Self {
        Self {
            feed_url: None,
            poll_seconds: DEFAULT_STATUS_POLL_SECONDS,
            webhook_secret: None,
        }
    }
}

impl StatusBack {
    fn validate(&self, at: &str, err: &mut impl FnMut(String, String)) {
        if let Some(url) = &self.feed_url
            && let Err(e) = reqwest::Url::parse(url)
        {
            err(format!("{at}.feed_url"), format!("not a URL: {e}"));
        }
        if let Some(msg) = out_of_bounds_seconds(self.poll_seconds) {
            err(format!("{at}.poll_seconds"), msg);
        }
        if let Some(s) = &self.webhook_secret
            && s.chars().count() < MIN_WEBHOOK_SECRET_CHARS
        {
            err(
                format!("{at}.webhook_secret"),
                format!("must be at least {MIN_WEBHOOK_SECRET_CHARS} characters"),
            );
        }
    }

    pub fn poll_interval(&self) -> Duration {
        bounded_seconds(self.poll_seconds, 0.1, DEFAULT_STATUS_POLL_SECONDS)
    }
}

/// How case images travel to the dispatch API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageUpload {
    /// `data_base64` inside the JSON body.
    #[default]
    Inline,
    /// A `case` part (JSON, images referenced by `part`) plus one `image/jpeg` part per image.
    Multipart,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedReceiver {
    /// Address to listen on, e.g. "127.0.0.1:8765".
    pub listen: String,
    /// SQLite file of the receiver.
    pub database: PathBuf,
}

/// One more dispatch endpoint (`[[dispatch.targets]]`). Timing, retry and breaker settings left
/// out take the `[dispatch]` values; the token, field map and image upload do not, because they
/// belong to the other platform (the town's token must not go to its neighbour).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchTarget {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub retry_initial_seconds: Option<f64>,
    #[serde(default)]
    pub retry_max_seconds: Option<f64>,
    #[serde(default)]
    pub breaker_failure_threshold: Option<u32>,
    #[serde(default)]
    pub breaker_open_seconds: Option<f64>,
    #[serde(default)]
    pub image_upload: ImageUpload,
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    /// Which cases this target takes; none: every case.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How this platform reports case status back; none: it does not.
    #[serde(default)]
    pub status: Option<StatusBack>,
}

impl DispatchSettings {
    /// The primary target's id (`[dispatch] id`, default `primary`).
    pub fn primary_id(&self) -> &str {
        self.id.as_deref().unwrap_or(PRIMARY_TARGET_ID)
    }

    /// The routing rules of every target, primary first, for the case stage.
    pub fn routing(&self) -> Routing {
        let mut targets = vec![(self.primary_id().to_owned(), self.routes.clone())];
        targets.extend(
            self.targets
                .iter()
                .map(|t| (t.id.clone(), t.routes.clone())),
        );
        Routing { targets }
    }

    /// The settings one delivery task uses for each target, primary first: `id` is the
    /// target's, `url` its endpoint (`None` for a primary served by the embedded receiver,
    /// resolved by the caller), no further targets. Absent timing settings of a target take the
    /// `[dispatch]` values.
    pub fn per_target(&self) -> Vec<DispatchSettings> {
        let mut primary = self.clone();
        primary.id = Some(self.primary_id().to_owned());
        primary.targets.clear();
        let mut out = vec![primary];
        for t in &self.targets {
            out.push(DispatchSettings {
                id: Some(t.id.clone()),
                name: t.name.clone(),
                url: Some(t.url.clone()),
                bearer_token: t.bearer_token.clone(),
                timeout_seconds: t.timeout_seconds.unwrap_or(self.timeout_seconds),
                retry_initial_seconds: t
                    .retry_initial_seconds
                    .unwrap_or(self.retry_initial_seconds),
                retry_max_seconds: t.retry_max_seconds.unwrap_or(self.retry_max_seconds),
                embedded_receiver: None,
                breaker_failure_threshold: t
                    .breaker_failure_threshold
                    .unwrap_or(self.breaker_failure_threshold),
                breaker_open_seconds: t.breaker_open_seconds.unwrap_or(self.breaker_open_seconds),
                image_upload: t.image_upload,
                field_map: t.field_map.clone(),
                routes: t.routes.clone(),
                targets: Vec::new(),
                status: t.status.clone(),
            });
        }
        out
    }

    /// The request (and connect) timeout, within [`MIN_DISPATCH_TIMEOUT_SECONDS`,
    /// `MAX_DISPATCH_SECONDS`] whatever is configured.
    pub fn timeout(&self) -> Duration {
        bounded_seconds(
            self.timeout_seconds,
            MIN_DISPATCH_TIMEOUT_SECONDS,
            DEFAULT_DISPATCH_TIMEOUT_SECONDS,
        )
    }

    /// How long an open breaker leaves the endpoint alone, at most `MAX_DISPATCH_SECONDS`.
    pub fn breaker_open(&self) -> Duration {
        bounded_seconds(self.breaker_open_seconds, 0.0, DEFAULT_BREAKER_OPEN_SECONDS)
    }

    /// Range and format checks of the section: (field path below `dispatch`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |field: String, msg: String| out.push((field, msg));
        match (&self.url, &self.embedded_receiver) {
            (None, None) => err(
                String::new(),
                "set `url` (the dispatch API) or `embedded_receiver`".into(),
            ),
            (Some(url), _) => {
                if let Err(e) = reqwest::Url::parse(url) {
                    err("url".into(), format!("not a URL: {e}"));
                }
            }
            _ => {}
        }
        if let Some(r) = &self.embedded_receiver
            && r.listen.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                "embedded_receiver.listen".into(),
                format!("not an address:port: `{}`", r.listen),
            );
        }
        // Each timing's own range is checked below; here, only their order.
        if self.retry_max_seconds < self.retry_initial_seconds {
            err(
                "retry_max_seconds".into(),
                format!(
                    "must not be less than retry_initial_seconds ({} < {})",
                    self.retry_max_seconds, self.retry_initial_seconds
                ),
            );
        }
        if let Some(msg) = out_of_bounds_threshold(self.breaker_failure_threshold) {
            err("breaker_failure_threshold".into(), msg);
        }
        if let Err(e) = FieldMap::new(&self.field_map) {
            err("field_map".into(), e.to_string());
        }
        if let Some(msg) = out_of_bounds_timeout(self.timeout_seconds) {
            err("timeout_seconds".into(), msg);
        }
        for (field, v) in [
            ("retry_initial_seconds", self.retry_initial_seconds),
            ("retry_max_seconds", self.retry_max_seconds),
            ("breaker_open_seconds", self.breaker_open_seconds),
        ] {
            if let Some(msg) = out_of_bounds_seconds(v) {
                err(field.to_owned(), msg);
            }
        }
        if let Some(s) = &self.status {
            s.validate("status", &mut err);
        }
        for r in &self.routes {
            r.validate("routes", &mut err);
        }
        self.validate_targets(&mut err);
        out
    }

    fn validate_targets(&self, err: &mut impl FnMut(String, String)) {
        let mut ids = HashSet::new();
        ids.insert(self.primary_id());
        // Cases stored before routing existed are deliveries to `primary`: only the
        // `[dispatch]` endpoint may carry that name, or they would go out with another
        // target's token.
        ids.insert(PRIMARY_TARGET_ID);
        if let Some(id) = &self.id
            && id.trim().is_empty()
        {
            err("id".into(), "id must not be empty".into());
        }
        for (i, t) in self.targets.iter().enumerate() {
            let at = format!("targets[{i}]");
            if t.id.trim().is_empty() {
                err(format!("{at}.id"), "id must not be empty".into());
            } else if t.id == PRIMARY_TARGET_ID {
                err(
                    format!("{at}.id"),
                    format!(
                        "`{PRIMARY_TARGET_ID}` is reserved for the `[dispatch]` endpoint (cases stored before routing are its deliveries)"
                    ),
                );
            } else if !ids.insert(t.id.as_str()) {
                err(
                    format!("{at}.id"),
                    format!(
                        "duplicate target id `{}` (the `[dispatch]` endpoint is `{}`)",
                        t.id,
                        self.primary_id()
                    ),
                );
            }
            if let Err(e) = reqwest::Url::parse(&t.url) {
                err(format!("{at}.url"), format!("not a URL: {e}"));
            }
            if let Some(msg) = t.timeout_seconds.and_then(out_of_bounds_timeout) {
                err(format!("{at}.timeout_seconds"), msg);
            }
            for (field, v) in [
                ("retry_initial_seconds", t.retry_initial_seconds),
                ("retry_max_seconds", t.retry_max_seconds),
                ("breaker_open_seconds", t.breaker_open_seconds),
            ] {
                if let Some(msg) = v.and_then(out_of_bounds_seconds) {
                    err(format!("{at}.{field}"), msg);
                }
            }
            let initial = t
                .retry_initial_seconds
                .unwrap_or(self.retry_initial_seconds);
            let max = t.retry_max_seconds.unwrap_or(self.retry_max_seconds);
            if max < initial {
                err(
                    format!("{at}.retry_max_seconds"),
                    format!("must not be less than retry_initial_seconds ({max} < {initial})"),
                );
            }
            if let Some(msg) = t
                .breaker_failure_threshold
                .and_then(out_of_bounds_threshold)
            {
                err(format!("{at}.breaker_failure_threshold"), msg);
            }
            if let Err(e) = FieldMap::new(&t.field_map) {
                err(format!("{at}.field_map"), e.to_string());
            }
            if let Some(s) = &t.status {
                s.validate(&format!("{at}.status"), err);
            }
            for r in &t.routes {
                r.validate(&format!("{at}.routes"), err);
            }
        }
    }
}

/// Why a delivery timing is unusable, if it is: every one is positive and at most a day.
pub fn out_of_bounds_seconds(v: f64) -> Option<String> {
    (!(v > 0.0 && v <= MAX_DISPATCH_SECONDS))
        .then(|| format!("must be a number of seconds in (0, {MAX_DISPATCH_SECONDS}], got {v}"))
}

/// Why a request timeout is unusable, if it is: from [`MIN_DISPATCH_TIMEOUT_SECONDS`] to a day.
fn out_of_bounds_timeout(v: f64) -> Option<String> {
    (!(MIN_DISPATCH_TIMEOUT_SECONDS..=MAX_DISPATCH_SECONDS).contains(&v)).then(|| {
        format!(
            "must be a number of seconds in [{MIN_DISPATCH_TIMEOUT_SECONDS}, {MAX_DISPATCH_SECONDS}], got {v}"
        )
    })
}

/// Why a breaker's failure threshold is unusable, if it is.
fn out_of_bounds_threshold(n: u32) -> Option<String> {
    (!(1..=MAX_BREAKER_FAILURE_THRESHOLD).contains(&n))
        .then(|| format!("must be in [1, {MAX_BREAKER_FAILURE_THRESHOLD}], got {n}"))
}

/// `seconds` within [`min`, `MAX_DISPATCH_SECONDS`] as a `Duration`; not a number (never a
/// validated value): `fallback`. Never panics.
fn bounded_seconds(seconds: f64, min: f64, fallback: f64) -> Duration {
    let s = if seconds.is_nan() { fallback } else { seconds };
    Duration::try_from_secs_f64(s.clamp(min, MAX_DISPATCH_SECONDS)).unwrap_or(Duration::ZERO)
}

fn default_dispatch_timeout() -> f64 {
    DEFAULT_DISPATCH_TIMEOUT_SECONDS
}
fn default_retry_initial() -> f64 {
    DEFAULT_RETRY_INITIAL_SECONDS
}
fn default_retry_max() -> f64 {
    DEFAULT_RETRY_MAX_SECONDS
}
fn default_breaker_failures() -> u32 {
    DEFAULT_BREAKER_FAILURE_THRESHOLD
}
fn default_breaker_open() -> f64 {
    DEFAULT_BREAKER_OPEN_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: f64) -> DispatchSettings {
        let mut s: DispatchSettings = toml::from_str("url = \"http://127.0.0.1:1/\"").unwrap();
        s.timeout_seconds = v;
        s.breaker_open_seconds = v;
        s
    }

    #[test]
    fn odd_timings_are_refused_and_still_convert_without_a_panic() {
        for v in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300] {
            let s = settings(v);
            let fields: Vec<String> = s.validate().into_iter().map(|(f, _)| f).collect();
            assert!(
                fields.contains(&"timeout_seconds".to_owned())
                    && fields.contains(&"breaker_open_seconds".to_owned()),
                "{v}: {fields:?}"
            );
            let day = Duration::from_secs(86_400);
            assert!(s.timeout() >= Duration::from_millis(100) && s.timeout() <= day);
            assert!(s.breaker_open() <= day);
        }
        assert!(settings(10.0).validate().is_empty());
        assert_eq!(settings(10.0).timeout(), Duration::from_secs(10));
    }
}
