//! The `[cluster]` section: etcd endpoints and lease timing for running several nodes on one
//! configuration, each camera group owned by exactly one node. Absent section: a single node
//! analyses every camera and no etcd is needed.

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
        if self.lease_ttl_seconds < MIN_LEASE_TTL_SECONDS {
            out.push((
                "lease_ttl_seconds".into(),
                format!("must be at least {MIN_LEASE_TTL_SECONDS}"),
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
                "must be between 1 and lease_ttl_seconds × 1000".into(),
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
