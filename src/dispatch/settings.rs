//! The `[dispatch]` section: the primary dispatch endpoint and `[[dispatch.targets]]` (another
//! town's command centre), each with its own endpoint, token, field mapping, retries, breaker and
//! routing rules (`routes`, see `crate::cases::routing`). Cross-references (units, scenarios and
//! zones a route names) are checked by the configuration, which sees the whole key area.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

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
            });
        }
        out
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
        if self.retry_initial_seconds <= 0.0 || self.retry_max_seconds < self.retry_initial_seconds
        {
            err(
                "retry_max_seconds".into(),
                "need 0 < retry_initial_seconds <= retry_max_seconds".into(),
            );
        }
        if self.breaker_failure_threshold == 0 || self.breaker_open_seconds <= 0.0 {
            err(
                "breaker_failure_threshold".into(),
                "need breaker_failure_threshold >= 1 and breaker_open_seconds > 0".into(),
            );
        }
        if let Err(e) = FieldMap::new(&self.field_map) {
            err("field_map".into(), e.to_string());
        }
        for (field, v) in [
            ("timeout_seconds", self.timeout_seconds),
            ("retry_initial_seconds", self.retry_initial_seconds),
            ("retry_max_seconds", self.retry_max_seconds),
            ("breaker_open_seconds", self.breaker_open_seconds),
        ] {
            if let Some(msg) = out_of_bounds_seconds(v) {
                err(field.to_owned(), msg);
            }
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
            if t.timeout_seconds.is_some_and(|s| s <= 0.0) {
                err(format!("{at}.timeout_seconds"), "must be positive".into());
            }
            for (field, v) in [
                ("timeout_seconds", t.timeout_seconds),
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
            if initial <= 0.0 || max < initial {
                err(
                    format!("{at}.retry_max_seconds"),
                    "need 0 < retry_initial_seconds <= retry_max_seconds".into(),
                );
            }
            if t.breaker_failure_threshold == Some(0)
                || t.breaker_open_seconds.is_some_and(|s| s <= 0.0)
            {
                err(
                    format!("{at}.breaker_failure_threshold"),
                    "need breaker_failure_threshold >= 1 and breaker_open_seconds > 0".into(),
                );
            }
            if let Err(e) = FieldMap::new(&t.field_map) {
                err(format!("{at}.field_map"), e.to_string());
            }
        }
    }
}

/// Why a delivery timing is unusable, if it is.
pub fn out_of_bounds_seconds(v: f64) -> Option<String> {
    (!(v.is_finite() && v <= MAX_DISPATCH_SECONDS)).then(|| {
        format!("must be a finite number of seconds up to {MAX_DISPATCH_SECONDS}, got {v}")
    })
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
