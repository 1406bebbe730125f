//! Camera-group ownership across nodes (etcd v3). Each node keeps a lease alive and lists
//! itself under the lease; camera groups are divided among the live nodes by `assign`, and a
//! node analyses a group only while it holds the group's owner key (created under its lease)
//! and the lease is certainly valid: the fence that the supervisor (which cameras run) and the
//! case stage (which cases are committed) consult.
//!
//! Keys, below `<key_prefix>/<centre>`: `nodes/<node>` (JSON `NodeInfo`, under the node's
//! lease) and `owners/<group>` (the owning node's id, under its lease).

pub mod assign;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::telemetry;
use settings::{ClusterSettings, check_node_id};

/// Environment variable naming this node (overrides `[cluster] node_id`).
pub const NODE_ID_ENV: &str = "GRIDWATCH_NODE_ID";

/// Environment variable with this node's status URL (overrides `[cluster] advertise_url`).
pub const ADVERTISE_URL_ENV: &str = "GRIDWATCH_ADVERTISE_URL";

/// After joining, a node watches the member list this many poll intervals before claiming
/// groups, so that nodes starting together do not first grab everything and then hand it over.
const SETTLE_POLLS: u32 = 2;

/// How long a release waits for the supervisor to stop a group's cameras before it deletes
/// the owner key anyway (the case fence still holds back that group's cases).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Pause between attempts to open a session while etcd cannot be reached.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd {op}: {source}")]
    Etcd {
        op: &'static str,
        source: etcd_client::Error,
    },
    #[error("etcd {op}: no answer within {seconds} s")]
    Timeout { op: &'static str, seconds: f64 },
    #[error("the lease expired on the server (etcd answered TTL 0)")]
    LeaseExpired,
    #[error("the lease was not renewed before its fence deadline")]
    LeaseNotRenewed,
    #[error("cluster node id: {0}")]
    NodeId(String),
    #[error(
        "node id `{0}` is in use by another live node (its entry is still being renewed); give each node its own --node-id"
    )]
    NodeIdInUse(String),
}

/// This node's name: `--node-id`, else `GRIDWATCH_NODE_ID`, else `[cluster] node_id`, else the
/// host name.
pub fn node_id(cli: Option<&str>, settings: &ClusterSettings) -> Result<String, ClusterError> {
    let env = std::env::var(NODE_ID_ENV).ok();
    let id = cli
        .map(str::to_owned)
        .or(env)
        .or_else(|| settings.node_id.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default();
    check_node_id(&id).map_err(ClusterError::NodeId)?;
    Ok(id)
}

/// What a node publishes about itself under `nodes/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub node_id: String,
    pub status_url: Option<String>,
    /// Unix milliseconds when this node's current session began.
    pub joined_at_ms: i64,
    /// SHA-256 (hex, first 16) of the group ids this node divides: nodes that disagree would
    /// compute different assignments (a rolling change of the group list).
    #[serde(default)]
    pub groups_hash: String,
}

fn groups_hash(groups: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for g in groups {
        h.update(g.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The node's relation to the cluster.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// No session with etcd yet (or reconnecting after a lost lease): analyses nothing.
    #[default]
    Joining,
    /// Lease alive; owns the groups it holds keys for.
    Member,
    /// The lease could not be renewed in time: everything stopped until a new session.
    Fenced,
    /// Shutting down: the lease is being revoked.
    Leaving,
}

/// One group as this node sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupView {
    pub id: String,
    /// Holder of the owner key in etcd, if any.
    pub owner: Option<String>,
    /// The node the assignment gives it to.
    pub assigned_to: Option<String>,
    /// This node holds its key and may analyse it.
    pub owned_here: bool,
    /// Its cameras are running on this node.
    pub analysing_here: bool,
}

/// `/api/v1/cluster`: the node, its lease, the members and every group's owner.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterView {
    pub node_id: String,
    pub state: NodeState,
    /// Hex, as `etcdctl lease list` shows it.
    pub lease_id: Option<String>,
    /// How long this node may still analyse without a renewal (fence margin deducted).
    pub lease_valid_for_ms: u64,
    pub nodes: Vec<NodeInfo>,
    pub groups: Vec<GroupView>,
    pub groups_owned: usize,
    pub last_error: Option<String>,
    /// Members whose group list differs from this node's (they would assign differently).
    pub mismatched_nodes: Vec<String>,
}

struct Inner {
    node_id: String,
    origin: Instant,
    groups: Vec<String>,
    index: HashMap<String, usize>,
    /// This node holds the group's owner key (set by the controller).
    owned: Vec<AtomicBool>,
    /// The group's cameras are running here (set by the supervisor).
    analysing: Vec<AtomicBool>,
    /// Milliseconds since `origin` before which the lease is certainly valid on the server,
    /// less the fence margin; 0: no lease.
    fence_until_ms: AtomicU64,
    /// The run is stopping: no new claims.
    draining: AtomicBool,
    view: Mutex<ClusterView>,
}

/// The shared ownership state: written by the controller (owned, lease) and the supervisor
/// (analysing), read by the supervisor, the case stage and the status endpoint.
#[derive(Clone)]
pub struct Ownership(Arc<Inner>);

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("node_id", &self.0.node_id)
            .field("owned", &self.owned_groups())
            .finish()
    }
}

impl Ownership {
    pub fn new(node_id: String, groups: Vec<String>) -> Self {
        let index = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), i))
            .collect();
        let n = groups.len();
        let view = ClusterView {
            node_id: node_id.clone(),
            ..ClusterView::default()
        };
        Ownership(Arc::new(Inner {
            node_id,
            origin: Instant::now(),
            groups,
            index,
            owned: (0..n).map(|_| AtomicBool::new(false)).collect(),
            analysing: (0..n).map(|_| AtomicBool::new(false)).collect(),
            fence_until_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            view: Mutex::new(view),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.0.node_id
    }

    fn now_ms(&self) -> u64 {
        self.0.origin.elapsed().as_millis() as u64
    }

    /// The lease is valid (fence margin deducted) at this moment.
    pub fn lease_valid(&self) -> bool {
        self.now_ms() < self.0.fence_until_ms.load(Ordering::SeqCst)
    }

    /// This node may run the cameras of `group` and commit their cases: it holds the group's
    /// key and its lease cannot have expired on the server yet.
    pub fn may_analyse(&self, group: &str) -> bool {
        self.group_index(group)
            .is_some_and(|i| self.may_analyse_index(i))
    }

    /// The group's index in the ownership table (per-frame checks look it up once).
    pub fn group_index(&self, group: &str) -> Option<usize> {
        self.0.index.get(group).copied()
    }

    /// [`Ownership::may_analyse`] by index: two atomic loads and a clock read, for every frame.
    pub fn may_analyse_index(&self, group: usize) -> bool {
        self.0
            .owned
            .get(group)
            .is_some_and(|o| o.load(Ordering::SeqCst))
            && self.lease_valid()
    }

    /// The run is stopping: claim nothing more (what is held is handed over at the end).
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Every camera has stopped (shutdown).
    pub fn clear_analysing(&self) {
        for a in &self.0.analysing {
            a.store(false, Ordering::SeqCst);
        }
    }

    fn any_analysing(&self) -> bool {
        self.0.analysing.iter().any(|a| a.load(Ordering::SeqCst))
    }

    /// The supervisor reports whether `group`'s cameras are running here.
    pub fn set_analysing(&self, group: &str, running: bool) {
        if let Some(&i) = self.0.index.get(group) {
            self.0.analysing[i].store(running, Ordering::SeqCst);
        }
    }

    fn analysing(&self, i: usize) -> bool {
        self.0
            .analysing
            .get(i)
            .is_some_and(|a| a.load(Ordering::SeqCst))
    }

    fn owned(&self, i: usize) -> bool {
        self.0.owned[i].load(Ordering::SeqCst)
    }

    fn set_owned(&self, i: usize, owned: bool) {
        self.0.owned[i].store(owned, Ordering::SeqCst);
    }

    pub fn owned_groups(&self) -> Vec<String> {
        (0..self.0.groups.len())
            .filter(|&i| self.owned(i))
            .map(|i| self.0.groups[i].clone())
            .collect()
    }

    /// A keep-alive sent at `sent` was answered with `ttl`: the server's expiry is at least
    /// `sent + ttl`, so analysis may go on until that less the margin.
    fn renewed(&self, sent: Instant, ttl: Duration, margin: Duration) {
        // The TTL comes from the etcd server: one past the clock's range renews nothing.
        let until = sent
            .checked_add(ttl)
            .unwrap_or(sent)
            .saturating_duration_since(self.0.origin);
        let until_ms = until.saturating_sub(margin).as_millis() as u64;
        self.0.fence_until_ms.fetch_max(until_ms, Ordering::SeqCst);
    }

    /// Everything stops: no group is owned and no lease is valid.
    fn drop_all(&self, reason: &'static str) {
        self.0.fence_until_ms.store(0, Ordering::SeqCst);
        for i in 0..self.0.groups.len() {
            if self.0.owned[i].swap(false, Ordering::SeqCst) {
                telemetry::cluster_group_released(&self.0.groups[i], reason);
            }
        }
    }

    pub fn view(&self) -> ClusterView {
        let mut v = self
            .0
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let until = self.0.fence_until_ms.load(Ordering::SeqCst);
        v.lease_valid_for_ms = until.saturating_sub(self.now_ms());
        for (i, g) in v.groups.iter_mut().enumerate() {
            g.owned_here = self.owned(i) && v.lease_valid_for_ms > 0;
            g.analysing_here = self.analysing(i);
        }
        v.groups_owned = v.groups.iter().filter(|g| g.owned_here).count();
        v
    }

    fn update_view(&self, f: impl FnOnce(&mut ClusterView)) {
        let mut v = self.0.view.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut v);
    }
}

/// The `/api/v1/cluster` route.
pub fn status_routes(ownership: Ownership) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/cluster",
        axum::routing::get(move || {
            let o = ownership.clone();
            async move { axum::Json(o.view()) }
        }),
    )
}

/// The etcd side of one node: keeps its lease alive, lists itself, claims the groups the
/// assignment gives it and releases the others once their cameras have stopped.
pub struct Controller {
    settings: ClusterSettings,
    ownership: Ownership,
    /// `<key_prefix>/<centre>/`
    root: String,
    status_url: Option<String>,
}

/// One lease and its keep-alive stream.
struct Session {
    client: Client,
    lease: i64,
    info: NodeInfo,
    /// Renews the lease on its own task, so that slow reads or claims never delay a renewal;
    /// ends (with why) when the lease is gone. Aborted with the session.
    renewer: Option<tokio::task::JoinHandle<ClusterError>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// Bounded in time: an unreachable etcd must never hold a caller past the fence.
async fn bounded<T>(
    timeout: Duration,
    op: &'static str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => {
            telemetry::cluster_etcd_error(op);
            Err(ClusterError::Etcd { op, source })
        }
        Err(_) => {
            telemetry::cluster_etcd_error(op);
            Err(ClusterError::Timeout {
                op,
                seconds: timeout.as_secs_f64(),
            })
        }
    }
}

/// Keeps one lease alive: a renewal every third of the TTL, retried sooner after a failure.
/// Each answered renewal moves the fence deadline to (time sent + TTL − margin); returns when
/// etcd says the lease has expired (the fence has closed by then).
async fn renew_forever(
    mut client: Client,
    lease: i64,
    ownership: Ownership,
    ttl: Duration,
    margin: Duration,
    timeout: Duration,
) -> ClusterError {
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let every = ttl / 4;
    loop {
        if stream.is_none() {
            // Opening the stream is itself a renewal, answered before it returns.
            let sent = Instant::now();
            match bounded(timeout, "lease_keep_alive", client.lease_keep_alive(lease)).await {
                Ok(pair) => {
                    ownership.renewed(sent, ttl, margin);
                    stream = Some(pair);
                    tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
                    continue;
                }
                Err(ClusterError::Etcd {
                    source: etcd_client::Error::LeaseKeepAliveError(msg),
                    ..
                }) if msg.contains("not found") => return ClusterError::LeaseExpired,
                Err(e) => {
                    tracing::warn!(node = %ownership.node_id(), error = %e, "cluster: keep-alive failed; retrying");
                    tokio::time::sleep(ttl / 20).await;
                    continue;
                }
            }
        }
        let (keeper, answers) = stream.as_mut().expect("set above");
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                ownership.renewed(sent, Duration::from_secs(r.ttl() as u64), margin);
                tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
            }
            Ok(Ok(Some(_))) => return ClusterError::LeaseExpired,
            other => {
                // A late answer on this stream could be taken for the next request's: open a
                // new stream.
                stream = None;
                telemetry::cluster_etcd_error("keep_alive");
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(None)) => "stream closed".to_owned(),
                    _ => format!("no answer within {} s", timeout.as_secs_f64()),
                };
                // Retried at once on a new stream (opening it renews).
                tracing::warn!(node = %ownership.node_id(), error = %why, "cluster: keep-alive failed; retrying");
            }
        }
    }
}

/// Why a session ended.
enum Ended {
    Leave,
    Lost(ClusterError),
}

impl Controller {
    pub fn new(settings: ClusterSettings, ownership: Ownership, centre: &str) -> Self {
        // Centre names may be Chinese; keys take them as they are (etcd keys are bytes).
        let root = format!("{}/{}/", settings.key_prefix, centre);
        // The file is shared by every node: the environment names this node's own address.
        let status_url = std::env::var(ADVERTISE_URL_ENV)
            .ok()
            .or_else(|| settings.advertise_url.clone());
        Controller {
            settings,
            ownership,
            root,
            status_url,
        }
    }

    // Bounded conversions (`ClusterSettings`): no panic even for unvalidated settings.
    fn timeout(&self) -> Duration {
        self.settings.etcd_timeout()
    }

    fn ttl(&self) -> Duration {
        self.settings.lease_ttl()
    }

    fn margin(&self) -> Duration {
        self.settings.fence_margin()
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.root)
    }

    fn owner_key(&self, group: &str) -> String {
        format!("{}owners/{group}", self.root)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        bounded(self.timeout(), op, f).await
    }

    fn note_error(&self, e: &ClusterError) {
        let msg = e.to_string();
        self.ownership.update_view(|v| v.last_error = Some(msg));
    }

    /// Runs until `leave` turns true; then stops renewing and revokes the lease, so the other
    /// nodes take this node's groups at once instead of after the TTL.
    pub async fn run(self, mut leave: watch::Receiver<bool>) {
        let o = &self.ownership;
        o.update_view(|v| {
            v.groups =
                o.0.groups
                    .iter()
                    .map(|g| GroupView {
                        id: g.clone(),
                        owner: None,
                        assigned_to: None,
                        owned_here: false,
                        analysing_here: false,
                    })
                    .collect()
        });
        loop {
            if *leave.borrow() {
                return;
            }
            let mut session = match self.open().await {
                Ok(s) => s,
                Err(e) => {
                    if matches!(e, ClusterError::NodeIdInUse(_)) {
                        tracing::error!(node = %o.node_id(), error = %e, "cluster: cannot join; retrying");
                    } else {
                        tracing::warn!(node = %o.node_id(), error = %e, "cluster: cannot join; retrying");
                    }
                    self.note_error(&e);
                    tokio::select! {
                        _ = leave.wait_for(|l| *l) => return,
                        _ = tokio::time::sleep(RECONNECT_PAUSE) => continue,
                    }
                }
            };
            tracing::info!(node = %o.node_id(), lease = %format!("{:x}", session.lease), "cluster: joined");
            o.update_view(|v| {
                v.state = NodeState::Member;
                v.lease_id = Some(format!("{:x}", session.lease));
            });
            match self.serve(&mut session, &mut leave).await {
                Ended::Leave => {
                    self.leave(&mut session).await;
                    return;
                }
                Ended::Lost(e) => {
                    o.drop_all("lease_lost");
                    telemetry::cluster_lease_lost();
                    tracing::error!(node = %o.node_id(), error = %e, "cluster: lease lost; stopped analysing every group, rejoining");
                    self.note_error(&e);
                    o.update_view(|v| {
                        v.state = NodeState::Fenced;
                        v.lease_id = None;
                    });
                    // Best effort: a revoke frees the groups for the others before the TTL, but
                    // only once this node's cameras are down (the lease may still be alive).
                    let stopped_by = Instant::now() + self.ttl();
                    while o.any_analysing() && Instant::now() < stopped_by {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let lease = session.lease;
                    let _ = self
                        .bounded("lease_revoke", session.client.lease_revoke(lease))
                        .await;
                    publish_metrics(o, 0);
                }
            }
        }
    }

    async fn open(&self) -> Result<Session, ClusterError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.timeout())
            .with_timeout(self.timeout())
            .with_keep_alive(self.timeout(), self.timeout());
        let mut client = self
            .bounded(
                "connect",
                Client::connect(&self.settings.etcd_endpoints, Some(options)),
            )
            .await?;
        // Two live processes with one node id would fight over the same keys. An earlier
        // session's entry (a crash, a kill) expires within the TTL; one that outlives it is
        // renewed by a live duplicate.
        let me = self.ownership.node_id().to_owned();
        let key = self.node_key(&me);
        let give_up = Instant::now() + self.ttl() + Duration::from_secs(2);
        loop {
            let r = self
                .bounded("get_node", client.get(key.as_str(), None))
                .await?;
            if r.kvs().is_empty() {
                break;
            }
            if Instant::now() >= give_up {
                return Err(ClusterError::NodeIdInUse(me));
            }
            tokio::time::sleep(self.settings.poll_interval()).await;
        }
        let sent = Instant::now();
        let ttl = i64::from(self.settings.lease_ttl_seconds);
        let grant = self
            .bounded("lease_grant", client.lease_grant(ttl, None))
            .await?;
        let lease = grant.id();
        self.ownership.renewed(
            sent,
            Duration::from_secs(grant.ttl().max(0) as u64),
            self.margin(),
        );
        let info = NodeInfo {
            node_id: self.ownership.node_id().to_owned(),
            status_url: self.status_url.clone(),
            joined_at_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                as i64,
            groups_hash: groups_hash(&self.ownership.0.groups),
        };
        let renewer = tokio::spawn(renew_forever(
            client.clone(),
            lease,
            self.ownership.clone(),
            self.ttl(),
            self.margin(),
            self.timeout(),
        ));
        let mut session = Session {
            client,
            lease,
            info,
            renewer: Some(renewer),
        };
        self.register(&mut session).await?;
        Ok(session)
    }

    /// Lists this node under its lease: created if absent, rewritten if already under this
    /// lease, refused if another live process holds the name.
    async fn register(&self, s: &mut Session) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(&s.info).unwrap_or_default();
        let key = self.node_key(&s.info.node_id);
        let put = || {
            TxnOp::put(
                key.as_str(),
                value.clone(),
                Some(PutOptions::new().with_lease(s.lease)),
            )
        };
        let create = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([put()]);
        let mine = Txn::new()
            .when([Compare::lease(key.as_str(), CompareOp::Equal, s.lease)])
            .and_then([put()]);
        let mut client = s.client.clone();
        if self
            .bounded("put_node", client.txn(create))
            .await?
            .succeeded()
            || self
                .bounded("put_node", client.txn(mine))
                .await?
                .succeeded()
        {
            Ok(())
        } else {
            Err(ClusterError::NodeIdInUse(s.info.node_id.clone()))
        }
    }

    async fn serve(&self, s: &mut Session, leave: &mut watch::Receiver<bool>) -> Ended {
        let o = &self.ownership;
        let poll = self.settings.poll_interval();
        // group → (when it was fenced for hand-over, in which pass)
        let mut releasing: BTreeMap<usize, (Instant, u32)> = BTreeMap::new();
        let mut polls = 0u32;
        let mut invalid_since: Option<Instant> = None;
        let Some(mut renewer) = s.renewer.take() else {
            return Ended::Lost(ClusterError::LeaseNotRenewed);
        };
        loop {
            tokio::select! {
                _ = leave.wait_for(|l| *l) => {
                    renewer.abort();
                    return Ended::Leave;
                }
                ended = &mut renewer => {
                    return Ended::Lost(ended.unwrap_or(ClusterError::LeaseNotRenewed));
                }
                _ = tokio::time::sleep(poll) => {}
            }
            if !o.lease_valid() {
                // Fenced: the cameras stop, nothing is committed. A renewal that gets through
                // while the server still has the lease reopens the fence with the groups kept
                // (nobody else could claim them); past another TTL the lease is surely gone.
                let since = *invalid_since.get_or_insert_with(Instant::now);
                o.update_view(|v| v.state = NodeState::Fenced);
                if since.elapsed() >= self.ttl() {
                    renewer.abort();
                    return Ended::Lost(ClusterError::LeaseNotRenewed);
                }
                continue;
            }
            if invalid_since.take().is_some() {
                tracing::warn!(node = %o.node_id(), "cluster: lease renewed again; fence reopened");
            }
            polls += 1;
            match self
                .reconcile(s, &mut releasing, polls, polls > SETTLE_POLLS)
                .await
            {
                Ok(()) => {}
                Err(e @ ClusterError::NodeIdInUse(_)) => {
                    renewer.abort();
                    return Ended::Lost(e);
                }
                Err(e) => {
                    tracing::warn!(node = %o.node_id(), error = %e, "cluster: cannot read or update ownership; retrying");
                    self.note_error(&e);
                }
            }
        }
    }

    /// One pass: read members and owners, claim what the assignment gives this node and is
    /// free, release what it no longer gives it.
    async fn reconcile(
        &self,
        s: &mut Session,
        releasing: &mut BTreeMap<usize, (Instant, u32)>,
        pass: u32,
        may_claim: bool,
    ) -> Result<(), ClusterError> {
        let may_claim = may_claim && !self.ownership.draining();
        let o = &self.ownership;
        let me = o.node_id().to_owned();
        let nodes_prefix = self.node_key("");
        let owners_prefix = self.owner_key("");
        let members = self
            .bounded(
                "get_nodes",
                s.client
                    .get(nodes_prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut infos = Vec::new();
        let mut live: Vec<String> = Vec::new();
        let mut listed_here = false;
        for kv in members.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let id = key.trim_start_matches(nodes_prefix.as_str()).to_owned();
            if id == me {
                if kv.lease() != s.lease {
                    // Another live process renews an entry under this node's name.
                    return Err(ClusterError::NodeIdInUse(me));
                }
                listed_here = true;
            }
            // Only real members: an entry under a lease, describing the node its key names
            // (a hand-written key would otherwise be assigned groups nobody claims).
            let Ok(info) = serde_json::from_slice::<NodeInfo>(kv.value()) else {
                continue;
            };
            if kv.lease() == 0 || info.node_id != id {
                continue;
            }
            infos.push(info);
            live.push(id);
        }
        if !listed_here {
            // Deleted by someone: put back (refused if another process took the name).
            self.register(s).await?;
            live.push(me.clone());
            infos.push(s.info.clone());
        }
        let mismatched: Vec<String> = infos
            .iter()
            .filter(|i| !i.groups_hash.is_empty() && i.groups_hash != s.info.groups_hash)
            .map(|i| i.node_id.clone())
            .collect();
        if !mismatched.is_empty() {
            tracing::warn!(node = %me, others = ?mismatched, "cluster: nodes with a different list of camera groups; assignments disagree until every node runs the same configuration");
        }
        let owners_resp = self
            .bounded(
                "get_owners",
                s.client.get(
                    owners_prefix.as_str(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        // group → (owner node, lease)
        let mut owners: HashMap<String, (String, i64)> = HashMap::new();
        for kv in owners_resp.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            owners.insert(
                key.trim_start_matches(owners_prefix.as_str()).to_owned(),
                (value.to_owned(), kv.lease()),
            );
        }
        let groups = &o.0.groups;
        let assignment = assign::assign(groups, &live);
        for (i, g) in groups.iter().enumerate() {
            let want = assignment.get(g.as_str()) == Some(&me);
            let holder = owners.get(g);
            let held_here = holder.is_some_and(|(n, l)| *n == me && *l == s.lease);
            if o.owned(i) && !held_here {
                // Someone deleted the key (an operator, or etcd compaction of a lost lease).
                o.set_owned(i, false);
                telemetry::cluster_group_released(g, "key_lost");
                tracing::warn!(node = %me, group = %g, "cluster: owner key gone; stopped the group");
            }
            if !want && !o.owned(i) && held_here && !releasing.contains_key(&i) {
                // A claim whose answer was lost, now assigned elsewhere: free it.
                releasing.insert(i, (Instant::now(), pass));
            }
            if want && !o.owned(i) && may_claim {
                if held_here {
                    // Still ours (a claim whose answer was lost, or a release not yet done).
                    o.set_owned(i, true);
                    releasing.remove(&i);
                } else if holder.is_none() && self.claim(s, g).await? {
                    o.set_owned(i, true);
                    releasing.remove(&i);
                    telemetry::cluster_group_acquired(g);
                    tracing::info!(node = %me, group = %g, "cluster: group acquired");
                }
            }
            if !want && o.owned(i) {
                // Fence first: the supervisor stops the cameras, the case stage commits nothing
                // more for the group; the key goes once the cameras are down.
                o.set_owned(i, false);
                releasing.insert(i, (Instant::now(), pass));
                telemetry::cluster_group_released(g, "rebalance");
                tracing::info!(node = %me, group = %g, to = ?assignment.get(g.as_str()), "cluster: handing the group over");
            }
        }
        // Read on a later pass than the fence was set: the supervisor marks a group analysed
        // before it re-checks ownership, so either it saw the fence or this sees its mark.
        let ready: Vec<usize> = releasing
            .iter()
            .filter(|&(&i, &(since, fenced_in))| {
                pass > fenced_in && (!o.analysing(i) || since.elapsed() >= RELEASE_WAIT)
            })
            .map(|(&i, _)| i)
            .collect();
        for i in ready {
            let g = &groups[i];
            let key = self.owner_key(g);
            let txn = Txn::new()
                .when([
                    Compare::value(key.as_str(), CompareOp::Equal, me.as_str()),
                    Compare::lease(key.as_str(), CompareOp::Equal, s.lease),
                ])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            self.bounded("release", s.client.txn(txn)).await?;
            releasing.remove(&i);
            owners.remove(g);
            tracing::info!(node = %me, group = %g, "cluster: group released");
        }
        let views: Vec<GroupView> = groups
            .iter()
            .map(|g| GroupView {
                id: g.clone(),
                owner: owners.get(g).map(|(n, _)| n.clone()),
                assigned_to: assignment.get(g.as_str()).cloned(),
                owned_here: false,
                analysing_here: false,
            })
            .collect();
        infos.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let nodes = infos.len();
        o.update_view(|v| {
            v.nodes = infos;
            v.groups = views;
            v.state = NodeState::Member;
            v.last_error = None;
            v.mismatched_nodes = mismatched;
        });
        publish_metrics(o, nodes);
        Ok(())
    }

    /// Creates the group's owner key under this node's lease if nobody holds it.
    async fn claim(&self, s: &mut Session, group: &str) -> Result<bool, ClusterError> {
        let key = self.owner_key(group);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.ownership.node_id(),
                Some(PutOptions::new().with_lease(s.lease)),
            )]);
        let r = self.bounded("claim", s.client.txn(txn)).await?;
        Ok(r.succeeded())
    }

    /// Clean shutdown: the pipeline has drained; revoking the lease deletes this node's keys.
    async fn leave(&self, s: &mut Session) {
        let o = &self.ownership;
        o.update_view(|v| v.state = NodeState::Leaving);
        o.drop_all("shutdown");
        let lease = s.lease;
        match self
            .bounded("lease_revoke", s.client.lease_revoke(lease))
            .await
        {
            Ok(_) => tracing::info!(node = %o.node_id(), "cluster: left (lease revoked)"),
            Err(e) => {
                tracing::warn!(node = %o.node_id(), error = %e, "cluster: could not revoke the lease; it expires after its TTL")
            }
        }
        publish_metrics(o, 0);
    }
}

fn publish_metrics(o: &Ownership, nodes: usize) {
    let owned = o.owned_groups().len();
    telemetry::cluster_state(owned, nodes, o.lease_valid());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_closes_before_the_lease_could_expire() {
        let o = Ownership::new("a".into(), vec!["g1".into(), "g2".into()]);
        assert!(!o.may_analyse("g1"), "no lease, no analysis");
        o.set_owned(0, true);
        assert!(
            !o.may_analyse("g1"),
            "a key without a valid lease is not enough"
        );
        let sent = Instant::now();
        o.renewed(sent, Duration::from_millis(300), Duration::from_millis(100));
        assert!(o.may_analyse("g1"));
        assert!(!o.may_analyse("g2"), "not owned");
        assert!(!o.may_analyse("unknown"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            !o.may_analyse("g1"),
            "closed once less than the margin is left"
        );
        o.drop_all("lease_lost");
        assert!(o.owned_groups().is_empty());
    }

    #[test]
    fn an_older_keepalive_never_shortens_the_deadline() {
        let o = Ownership::new("a".into(), vec!["g".into()]);
        let now = Instant::now();
        o.renewed(now, Duration::from_secs(10), Duration::from_secs(1));
        o.renewed(now, Duration::from_secs(2), Duration::from_secs(1));
        assert!(o.view().lease_valid_for_ms > 8_000);
    }
}
