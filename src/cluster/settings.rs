//! The `[cluster]` section: etcd endpoints and lease timing for running several nodes on one
//! configuration, each camera group owned by exactly one node. Absent section: a single node
//! analyses every camera and no etcd is needed.

use std::time::Duration;

use serde::Deserialize;

/// A node that stops renewing loses its groups after this long (etcd lease TTL).
pub const DEFAULT_LEASE_TTL_SECONDS: u32 = 10;
/// A node stops analysing this long before its lease could expire on the server, so that a
/// group is never analysed by two nodes at once (covers supervisor tick and camera teardown).
pub const DEFAULT_FENCE_MARGIN_SECONDS: f64 = 3.0;
/// Every key gridwatch writes lives under this prefix (then the centre's name).
pub const DEFAULT_KEY_PREFIX: &str = "/gridwatch";
/// One etcd request (grant, keep-alive, range, transaction) may take at most this long.
pub const DEFAULT_ETCD_TIMEOUT_SECONDS: f64 = 2.0;
/// How often a node reads the member list and group owners (and so notices joins and leaves).
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 500;
/// Leases shorter than this leave no room for a keep-alive round trip and the fence margin.
pub const MIN_LEASE_TTL_SECONDS: u32 = 2;
/// A lost node's groups wait at most this long for a new owner: longer leases are typos.
pub const MAX_LEASE_TTL_SECONDS: u32 = 3600;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// etcd v3 client URLs, e.g. `["http://10.0.0.5:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// This node's name; usually given per node with `gridwatch run --node-id` (or
    /// `GRIDWATCH_NODE_ID`) since all nodes share the file. Default: the host name.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default = "default_lease_ttl_seconds")]
    pub lease_ttl_seconds: u32,
    #[serde(default = "default_fence_margin_seconds")]
    pub fence_margin_seconds: f64,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_etcd_timeout_seconds")]
    pub etcd_timeout_seconds: f64,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Where other nodes and operators reach this node's status endpoint (shown in
    /// `/api/v1/cluster`); default: none.
    #[serde(default)]
    pub advertise_url: Option<String>,
}

impl ClusterSettings {
    /// The etcd lease TTL, within [`MIN_LEASE_TTL_SECONDS`, `MAX_LEASE_TTL_SECONDS`] whatever
    /// is configured.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.lease_ttl_seconds
                .clamp(MIN_LEASE_TTL_SECONDS, MAX_LEASE_TTL_SECONDS),
        ))
    }

    /// How long one etcd request may take: within (0, TTL / 2] whatever is configured (not a
    /// number: the default).
    pub fn etcd_timeout(&self) -> Duration {
        self.within_half_ttl(self.etcd_timeout_seconds, DEFAULT_ETCD_TIMEOUT_SECONDS)
    }

    /// How long before its lease could expire a node stops analysing: within (0, TTL / 2].
    pub fn fence_margin(&self) -> Duration {
        self.within_half_ttl(self.fence_margin_seconds, DEFAULT_FENCE_MARGIN_SECONDS)
    }

    /// How often a node reads the member list: within [1 ms, TTL].
    pub fn poll_interval(&self) -> Duration {
        let ttl_ms = u64::from(
            self.lease_ttl_seconds
                .clamp(MIN_LEASE_TTL_SECONDS, MAX_LEASE_TTL_SECONDS),
        ) * 1000;
        Duration::from_millis(self.poll_interval_ms.clamp(1, ttl_ms))
    }

    fn within_half_ttl(&self, seconds: f64, fallback: f64) -> Duration {
        let half = self.lease_ttl().as_secs_f64() / 2.0;
        let s = if seconds.is_nan() { fallback } else { seconds };
        Duration::try_from_secs_f64(s.clamp(0.001, half)).unwrap_or(Duration::from_secs(1))
    }

    /// (field path below `cluster`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.etcd_endpoints.is_empty() {
            out.push((
                "etcd_endpoints".into(),
                "name at least one etcd endpoint".into(),
            ));
        }
        for (i, e) in self.etcd_endpoints.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                out.push((
                    format!("etcd_endpoints[{i}]"),
                    format!("must be an http:// or https:// URL, got `{e}`"),
                ));
            }
        }
        if let Some(id) = &self.node_id
            && let Err(e) = check_node_id(id)
        {
            out.push(("node_id".into(), e));
        }
        if !(MIN_LEASE_TTL_SECONDS..=MAX_LEASE_TTL_SECONDS).contains(&self.lease_ttl_seconds) {
            out.push((
                "lease_ttl_seconds".into(),
                format!(
                    "must be a number of seconds in [{MIN_LEASE_TTL_SECONDS}, {MAX_LEASE_TTL_SECONDS}], got {}",
                    self.lease_ttl_seconds
                ),
            ));
        }
        let ttl = f64::from(self.lease_ttl_seconds);
        if !(self.fence_margin_seconds > 0.0 && self.fence_margin_seconds <= ttl / 2.0) {
            out.push((
                "fence_margin_seconds".into(),
                format!(
                    "must be in (0, lease_ttl_seconds / 2] = (0, {}], got {}",
                    ttl / 2.0,
                    self.fence_margin_seconds
                ),
            ));
        }
        if !(self.etcd_timeout_seconds > 0.0 && self.etcd_timeout_seconds <= ttl / 2.0) {
            out.push((
                "etcd_timeout_seconds".into(),
                format!(
                    "must be in (0, lease_ttl_seconds / 2], got {}",
                    self.etcd_timeout_seconds
                ),
            ));
        }
        if self.poll_interval_ms == 0
            || self.poll_interval_ms > u64::from(self.lease_ttl_seconds) * 1000
        {
            out.push((
                "poll_interval_ms".into(),
                format!(
                    "must be in [1, lease_ttl_seconds × 1000] = [1, {}] milliseconds, got {}",
                    u64::from(self.lease_ttl_seconds) * 1000,
                    self.poll_interval_ms
                ),
            ));
        }
        if !self.key_prefix.starts_with('/') || self.key_prefix.ends_with('/') {
            out.push((
                "key_prefix".into(),
                format!(
                    "must start with `/` and not end with one, got `{}`",
                    self.key_prefix
                ),
            ));
        }
        out
    }
}

/// Node ids become etcd key segments and metric labels: keep them plain.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node id `{id}` must be 1-64 characters of A-Z a-z 0-9 - _ ."
        ))
    }
}

fn default_lease_ttl_seconds() -> u32 {
    DEFAULT_LEASE_TTL_SECONDS
}
fn default_fence_margin_seconds() -> f64 {
    DEFAULT_FENCE_MARGIN_SECONDS
}
fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}
fn default_etcd_timeout_seconds() -> f64 {
    DEFAULT_ETCD_TIMEOUT_SECONDS
}
fn default_poll_interval_ms() -> u64 {
    DEFAULT_POLL_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_timings_are_refused_and_still_convert_without_a_panic() {
        let base: ClusterSettings =
            toml::from_str("etcd_endpoints = [\"http://127.0.0.1:2379\"]").unwrap();
        assert!(base.validate().is_empty());
        for (ttl, v) in [
            (0, f64::NAN),
            (u32::MAX, f64::INFINITY),
            (10, -1.0),
            (2, 1e300),
        ] {
            let s = ClusterSettings {
                lease_ttl_seconds: ttl,
                fence_margin_seconds: v,
                etcd_timeout_seconds: v,
                poll_interval_ms: u64::MAX,
                ..base.clone()
            };
            let fields: Vec<String> = s.validate().into_iter().map(|(f, _)| f).collect();
            for f in [
                "fence_margin_seconds",
                "etcd_timeout_seconds",
                "poll_interval_ms",
            ] {
                assert!(fields.contains(&f.to_owned()), "{ttl}, {v}: {fields:?}");
            }
            let ttl = s.lease_ttl();
            assert!(ttl >= Duration::from_secs(2) && ttl <= Duration::from_secs(3600));
            assert!(s.fence_margin() <= ttl / 2 && s.etcd_timeout() <= ttl / 2);
            assert!(s.poll_interval() <= ttl);
        }
    }
}
