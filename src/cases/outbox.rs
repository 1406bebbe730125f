//! The SQLite outbox: a case, the targets it is routed to and one delivery row per target are
//! written in one transaction before any delivery attempt, so a case that was decided is never
//! lost by a crash or an outage. Also the queries behind the outbox's visible state (depth,
//! oldest age, retries, dead letters; per target) and the dead-letter operations of
//! `gridwatch outbox`.
//!
//! Two levels of state. A delivery (`deliveries`, one per case and target): `held` (awaiting a
//! reviewer) → `pending` → `delivered` | `dead`, or `held` → `rejected`. A case (`outbox`):
//! `awaiting_review` → `pending` | `rejected` by a reviewer; otherwise the roll-up of its
//! deliveries (`pending` while any is pending, then `dead` if any is dead, else `delivered`),
//! or `unrouted` when no target takes it. The roll-up is kept by triggers on `deliveries`, so
//! every writer (delivery, the review console, the CLI) leaves both levels consistent.
//!
//! The schema is versioned ([`MIGRATIONS`], `PRAGMA user_version`); databases of every earlier
//! schema are migrated on open. The snapshot JPEG is stored once (`cases.snapshot`): the case
//! JSON is stored without its base64, which is put back, byte for byte, when the case is sent
//! ([`Outbox::due`], [`case_body`]). Delivered and rejected cases older than
//! `[cases] retention_days` are deleted by [`Outbox::purge_expired`] ([`Purger`] runs it).
//! Every transaction that reads and then writes starts with `BEGIN IMMEDIATE`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::routing::PRIMARY_TARGET_ID;
use gridwatch_sqlite::Step;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox {path}: schema migration failed: {source}")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("outbox: cannot create folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "outbox: the disk (or the database's size limit) is full; no new case can be stored: {0}"
    )]
    DiskFull(#[source] rusqlite::Error),
    #[error("outbox: I/O error from SQLite; no new case can be stored: {0}")]
    Io(#[source] rusqlite::Error),
    #[error("outbox: {0}")]
    Sql(#[source] rusqlite::Error),
    #[error("outbox: {0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for OutboxError {
    /// Disk-full and I/O errors get their own variants so the operator sees what to fix.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => OutboxError::DiskFull(e),
            Some(rusqlite::ErrorCode::SystemIoFailure) => OutboxError::Io(e),
            _ => OutboxError::Sql(e),
        }
    }
}

/// The outbox's state as `GET /api/v1/outbox`, the metrics and `gridwatch outbox status` show it.
/// The top-level numbers count cases; `targets` counts deliveries per target.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxStats {
    /// Cases not delivered to every target yet (the outbox depth).
    pub pending: u64,
    pub delivered: u64,
    pub dead_letters: u64,
    /// Age of the oldest undelivered case, from when it was stored.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Failed attempts so far, over every delivery still in the outbox.
    pub retries: u64,
    /// The most recent error of a pending delivery, if any.
    pub last_error: Option<String>,
    /// Cases held for the review console (not part of the depth: delivery does not take them).
    #[serde(default)]
    pub awaiting_review: u64,
    /// Cases rejected by a reviewer.
    #[serde(default)]
    pub rejected: u64,
    /// Cases no dispatch target takes (a routing gap in the configuration): stored, never sent.
    #[serde(default)]
    pub unrouted: u64,
    /// Events kept without a case because rendering it failed (`gridwatch outbox unrendered`).
    #[serde(default)]
    pub unrendered: u64,
    /// The same numbers per delivery target, keyed by target id.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetStats>,
}

/// The deliveries to one target.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetStats {
    pub pending: u64,
    pub delivered: u64,
    pub dead_letters: u64,
    /// Routed here but held for a reviewer.
    pub held: u64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub retries: u64,
    pub last_error: Option<String>,
}

/// What delivery exports per target every second (`gridwatch_outbox_pending`,
/// `gridwatch_outbox_dead_letters`, `gridwatch_outbox_oldest_pending_age_seconds`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetGauges {
    pub pending: u64,
    pub dead_letters: u64,
    pub oldest_pending_age_seconds: Option<f64>,
}

/// One outbox row, as `gridwatch outbox list` shows it. Without a target filter `state`,
/// `attempts`, `last_error` and `delivered_at` are the case's (attempts summed over its
/// deliveries); with one, they are that target's delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub state: String,
    pub created_at: String,
    pub scenario: String,
    pub camera: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    /// Every target the case was routed to, with that delivery's state.
    #[serde(default)]
    pub deliveries: Vec<DeliveryEntry>,
}

/// One case's delivery to one target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryEntry {
    pub target: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
}

/// Which rows a dead-letter operation touches.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<String>),
}

/// A case waiting for delivery to one target.
#[derive(Debug, Clone)]
pub struct PendingCase {
    /// The case's id, or an update's (both are idempotency keys).
    pub id: String,
    pub body: String,
    /// Attempts to this target so far.
    pub attempts: u32,
    /// `Some(case id)`: this is an update of that case (`platform::Outbox::due_updates`).
    pub update_of: Option<String>,
}

/// Case counts for reports and the exit summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Held for a reviewer (never delivered until confirmed).
    pub awaiting_review: u64,
    /// Rejected by a reviewer (false positives; never delivered).
    pub rejected: u64,
    /// Taken by no target (stored, never delivered).
    pub unrouted: u64,
}

/// The state a new case starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// Delivered as soon as possible (automatic discovery).
    Pending,
    /// Held in the review queue until a reviewer confirms or rejects it.
    AwaitingReview,
}

/// A case to store, with the targets routing chose for it.
#[derive(Debug, Clone, Copy)]
pub struct NewCase<'a> {
    pub id: &'a str,
    pub scenario: &'a str,
    pub camera: &'a str,
    pub body: &'a str,
    pub snapshot: &'a [u8],
    pub state: InitialState,
    /// The unannotated frame a reviewed case keeps for the training-data export.
    pub clean_frame: Option<&'a [u8]>,
    /// Target ids; empty: no target takes the case (stored as `unrouted`).
    pub targets: &'a [String],
}

pub struct Outbox {
    pub(super) conn: Connection,
}

/// The case-level columns of `outbox` recomputed from the case's deliveries (`outbox.case_id`
/// is the row being updated). Review states are the reviewer's and stay.
macro_rules! roll_up {
    () => {
        "state = CASE
            WHEN state IN ('awaiting_review', 'rejected') THEN state
            WHEN NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id) THEN 'unrouted'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state IN ('pending', 'held')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state = 'dead') THEN 'dead'
            ELSE 'delivered' END,
         attempts = (SELECT COALESCE(SUM(d.attempts), 0) FROM deliveries d WHERE d.case_id = outbox.case_id),
         last_error = (SELECT d.last_error FROM deliveries d WHERE d.case_id = outbox.case_id
             AND d.state IN ('pending', 'dead') AND d.last_error IS NOT NULL ORDER BY d.next_attempt_at_ms DESC LIMIT 1),
         delivered_at = (SELECT CASE WHEN COUNT(*) > 0 AND COUNT(*) = SUM(d.state = 'delivered')
             THEN strftime('%Y-%m-%dT%H:%M:%fZ', MAX(d.delivered_at_ms) / 1000.0, 'unixepoch') END
             FROM deliveries d WHERE d.case_id = outbox.case_id)"
    };
}

/// Step 1's schema: the outbox as shipped with routing (1cf6d60), the last one before the
/// schema was versioned. Frozen: later changes are later steps.
const ROUTING_SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    scenario TEXT NOT NULL,
    camera TEXT NOT NULL,
    body TEXT NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'awaiting_review', 'rejected', 'unrouted')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    case_id TEXT NOT NULL REFERENCES cases(id),
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'pending', 'delivered', 'dead', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at_ms INTEGER,
    PRIMARY KEY (case_id, target)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(target, state, next_attempt_at_ms);
CREATE TRIGGER IF NOT EXISTS deliveries_roll_up_update AFTER UPDATE ON deliveries
BEGIN
    UPDATE outbox SET ",
    roll_up!(),
    " WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER IF NOT EXISTS deliveries_roll_up_delete AFTER DELETE ON deliveries
BEGIN
    UPDATE outbox SET ",
    roll_up!(),
    " WHERE case_id = OLD.case_id;
END;
CREATE TABLE IF NOT EXISTS review_frames (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    jpeg BLOB NOT NULL
);
"
);

/// Step 2: the review console's tables (`review::store`), as shipped with the console (9ae0c3a).
/// Until versioning they were created when the console opened the file, so they may exist.
const REVIEW_TABLES: &str = "
CREATE TABLE IF NOT EXISTS review_users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES review_users(id),
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    csrf TEXT,
    expires_ms INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_decisions (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    decision TEXT NOT NULL CHECK (decision IN ('confirmed', 'rejected')),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    original_scenario TEXT,
    suppress_until_ms INTEGER
);
CREATE TABLE IF NOT EXISTS review_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    case_id TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS review_suppressions (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    zone TEXT NOT NULL,
    scenario TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    case_id TEXT
);
";

/// Step 3: bounded storage. `cases.snapshot_at`: where in the stored case JSON the snapshot's
/// base64 goes back (`NULL`: the JSON is whole, as in cases stored before this step). Indexes
/// for the queries that run often: history and the retention purge walk `cases` by
/// `created_at`; `deliveries_due` also carries the attempts, so the per-target statistics
/// read only the index; the outbox-wide last error and the dead-letter commands find
/// deliveries by state; the console's remark of a case is its latest audit entry; the export
/// lists decisions by time; the pipeline loads the suppressions in force.
const STORAGE: &str = "
ALTER TABLE cases ADD COLUMN snapshot_at INTEGER;
CREATE INDEX cases_created ON cases(created_at, id);
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries(target, state, next_attempt_at_ms, attempts);
CREATE INDEX deliveries_state ON deliveries(state, next_attempt_at_ms);
CREATE INDEX review_audit_case ON review_audit(case_id, id);
CREATE INDEX review_decisions_decided ON review_decisions(decided_at, case_id);
CREATE INDEX review_suppressions_until ON review_suppressions(until_ms);
";

/// Events the case stage could not turn into a case (evidence or JSON failed): the event's
/// facts and the reason, so that nothing the rules found is lost without a trace.
const UNRENDERED: &str = "
CREATE TABLE unrendered (
    id INTEGER PRIMARY KEY,
    kept_at TEXT NOT NULL,
    scenario TEXT NOT NULL,
    camera TEXT NOT NULL,
    zone TEXT NOT NULL,
    reason TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX unrendered_kept ON unrendered(kept_at);
";

/// An event kept without its case: see [`Outbox::keep_unrendered`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unrendered {
    pub id: i64,
    pub kept_at: String,
    pub scenario: String,
    pub camera: String,
    pub zone: String,
    pub reason: String,
    /// The event's facts as JSON (times, confidence, objects).
    pub event: serde_json::Value,
}

/// The outbox database's schema, one step per change: `PRAGMA user_version` is the number of
/// steps applied. Never edit a shipped step; add one.
pub const MIGRATIONS: &[Step] = &[
    // 1: the routing schema, from an empty file or from any unversioned schema ever shipped.
    Step::hook(unversioned_to_routing),
    // 2: the review console's tables.
    Step::sql(REVIEW_TABLES),
    // 3: snapshot once, indexes.
    Step::sql(STORAGE),
    // 4: events whose case could not be rendered, kept with the reason.
    Step::sql(UNRENDERED),
    // 5: suppressions of one object (learned from repeated rejections).
    Step::sql("ALTER TABLE review_suppressions ADD COLUMN object TEXT;"),
    // 6: zone-state labels set by patrol staff on the wall (the analysed frame, lossless).
    Step::sql(ZONE_LABELS),
    // 7: labels also come from reviews of a state's held cases (their clean JPEG frame).
    Step::sql(
        "ALTER TABLE review_zone_labels RENAME COLUMN frame_png TO frame;
         ALTER TABLE review_zone_labels ADD COLUMN case_id TEXT;",
    ),
    // 8: the platform loop: statuses back, verification rounds, 103060 clocks, updates.
    Step::sql(super::platform::SCHEMA),
    // 9: the live wall asks for each camera's recent open cases.
    Step::sql("CREATE INDEX IF NOT EXISTS cases_camera ON cases(camera, created_at);"),
    // 10: one row of facts per case for statistics, kept past the retention purge.
    Step::sql(super::facts::SCHEMA),
    // 11: the cameras' health over time (uptime, stalls, reconnects in reports).
    Step::sql(super::facts::CAMERA_SAMPLES),
];

const ZONE_LABELS: &str = "
CREATE TABLE IF NOT EXISTS review_zone_labels (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    present INTEGER NOT NULL,
    labelled_at_ms INTEGER NOT NULL,
    user TEXT NOT NULL,
    frame_png BLOB NOT NULL
);
CREATE INDEX review_zone_labels_zone ON review_zone_labels(camera, zone, state, labelled_at_ms);
";

/// The schema version this binary writes (`PRAGMA user_version` of an up-to-date outbox).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

fn table_sql(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()
}

/// Step 1. Outboxes were unversioned until step 3 (user_version 0), in one of three shipped
/// schemas: the first (b7384ed: `cases`, `outbox` with pending/delivered/dead), with the review
/// states (9ae0c3a: a wider CHECK, `review_frames`) and with routing (1cf6d60: `unrouted`,
/// `deliveries` and their roll-up triggers). An `outbox` table whose CHECK lacks the newer
/// states is copied into one with the routing constraint (SQLite cannot alter a CHECK), and
/// every case of a database from before routing becomes one delivery to `primary` in its state
/// (`awaiting_review` → `held`), with its attempts, next attempt time, last error and delivery
/// time. An empty file just gets the routing schema.
fn unversioned_to_routing(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let outbox = table_sql(tx, "outbox")?;
    let had_deliveries = table_sql(tx, "deliveries")?.is_some();
    match &outbox {
        Some(sql) if !sql.contains("unrouted") => {
            tx.execute_batch(
                "ALTER TABLE outbox RENAME TO outbox_before_routing;
                 DROP INDEX IF EXISTS outbox_due;",
            )?;
            tx.execute_batch(ROUTING_SCHEMA)?;
            tx.execute_batch(
                "INSERT INTO outbox (case_id, state, attempts, next_attempt_ms, last_error, delivered_at)
                 SELECT case_id, state, attempts, next_attempt_ms, last_error, delivered_at FROM outbox_before_routing;
                 DROP TABLE outbox_before_routing;",
            )?;
        }
        _ => tx.execute_batch(ROUTING_SCHEMA)?,
    }
    if outbox.is_some() && !had_deliveries {
        let n = tx.execute(
            "INSERT INTO deliveries (case_id, target, state, attempts, next_attempt_at_ms, last_error, delivered_at_ms)
             SELECT case_id, ?1, CASE state WHEN 'awaiting_review' THEN 'held' ELSE state END,
                    attempts, next_attempt_ms, last_error,
                    CAST(ROUND((julianday(delivered_at) - 2440587.5) * 86400000) AS INTEGER)
             FROM outbox",
            params![PRIMARY_TARGET_ID],
        )?;
        tracing::info!(
            cases = n,
            target = PRIMARY_TARGET_ID,
            "outbox migrated: each stored case is now a delivery to the primary target"
        );
    }
    Ok(())
}

/// The case JSON as stored: the snapshot's base64 (the `data_base64` whose text is `jpeg` in
/// base64) cut out, and the byte offset where it goes back. JSON without it is stored whole.
fn split_snapshot<'a>(body: &'a str, jpeg: &[u8]) -> (Cow<'a, str>, Option<i64>) {
    if jpeg.is_empty() {
        return (Cow::Borrowed(body), None);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    const KEY: &str = "\"data_base64\":\"";
    for (i, _) in body.match_indices(KEY) {
        let at = i + KEY.len();
        let rest = &body[at..];
        if rest.starts_with(&b64) && rest[b64.len()..].starts_with('"') {
            let mut stored = String::with_capacity(body.len() - b64.len());
            stored.push_str(&body[..at]);
            stored.push_str(&rest[b64.len()..]);
            return (Cow::Owned(stored), Some(at as i64));
        }
    }
    (Cow::Borrowed(body), None)
}

/// The case JSON as it was given to [`Outbox::store`]: the snapshot's base64 put back at `at`.
fn join_snapshot(id: &str, body: String, at: Option<i64>, jpeg: Option<&[u8]>) -> String {
    let Some(at) = at else {
        return body;
    };
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    match jpeg {
        Some(jpeg) if body.is_char_boundary(at) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
            let mut whole = String::with_capacity(body.len() + b64.len());
            whole.push_str(&body[..at]);
            whole.push_str(&b64);
            whole.push_str(&body[at..]);
            whole
        }
        _ => {
            // Only this module writes `snapshot_at`, always with the body it belongs to.
            tracing::error!(case = %id, at, "outbox: the stored case JSON has no place for its snapshot; sent without it");
            body
        }
    }
}

/// The case JSON of `id` as it is sent (the snapshot's base64 put back); `None`: no such case.
pub fn case_body(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT body, snapshot_at, CASE WHEN snapshot_at IS NOT NULL THEN snapshot END FROM cases WHERE id = ?1",
        params![id],
        |r| {
            let jpeg: Option<Vec<u8>> = r.get(2)?;
            Ok(join_snapshot(id, r.get(0)?, r.get(1)?, jpeg.as_deref()))
        },
    )
    .optional()
}

/// Replaces the case JSON of `id` and its scenario column (a reviewer's correction); the
/// snapshot's base64 in `body` is stored once, as by [`Outbox::store`]. Returns rows changed.
pub fn set_case_body(
    conn: &Connection,
    id: &str,
    body: &str,
    scenario: &str,
) -> rusqlite::Result<usize> {
    let jpeg: Option<Vec<u8>> = conn
        .query_row(
            "SELECT snapshot FROM cases WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(jpeg) = jpeg else {
        return Ok(0);
    };
    let (stored, at) = split_snapshot(body, &jpeg);
    let changed = conn.execute(
        "UPDATE cases SET body = ?2, snapshot_at = ?3, scenario = ?4 WHERE id = ?1",
        params![id, stored, at, scenario],
    )?;
    super::facts::record(conn, id)?;
    Ok(changed)
}

impl Outbox {
    /// Run at start with the configured targets: cases stored without delivery rows (written by
    /// a binary from before routing while this file was already migrated, or restored from a
    /// backup) become deliveries to the primary target, and deliveries to `primary` (what the
    /// migration names the old endpoint) move to the primary's configured id when that differs.
    /// Returns how many rows changed. Without this such cases would wait forever.
    pub fn adopt_legacy(&mut self, primary_id: &str) -> Result<usize, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let backfilled = tx.execute(
            "INSERT INTO deliveries (case_id, target, state, attempts, next_attempt_at_ms, last_error, delivered_at_ms)
             SELECT o.case_id, ?1, CASE o.state WHEN 'awaiting_review' THEN 'held' ELSE o.state END,
                    o.attempts, o.next_attempt_ms, o.last_error,
                    CAST(ROUND((julianday(o.delivered_at) - 2440587.5) * 86400000) AS INTEGER)
             FROM outbox o
             WHERE o.state IN ('pending', 'awaiting_review', 'dead', 'delivered')
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = o.case_id)",
            params![primary_id],
        )?;
        let renamed = if primary_id == PRIMARY_TARGET_ID {
            0
        } else {
            tx.execute(
                "UPDATE deliveries SET target = ?1
                 WHERE target = ?2
                   AND NOT EXISTS (SELECT 1 FROM deliveries d2
                                   WHERE d2.case_id = deliveries.case_id AND d2.target = ?1)",
                params![primary_id, PRIMARY_TARGET_ID],
            )?
        };
        tx.commit()?;
        if backfilled + renamed > 0 {
            tracing::warn!(
                backfilled,
                renamed,
                target = primary_id,
                "outbox: cases without deliveries or addressed to `primary` now go to the primary target"
            );
        }
        Ok(backfilled + renamed)
    }
}

/// Moves a held case to delivery: its held deliveries become pending (due now), and the case
/// `pending` (or `unrouted` when no target takes it). Returns 0 when the case was not
/// `awaiting_review` (already handled). Used by the review timeout and the console's confirm,
/// inside their transactions.
pub fn release_case(conn: &Connection, id: &str) -> Result<usize, OutboxError> {
    let now = now_ms();
    let n = conn.execute(
        "UPDATE outbox SET state = CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = ?1)
             THEN 'pending' ELSE 'unrouted' END, next_attempt_ms = ?2
         WHERE case_id = ?1 AND state = 'awaiting_review'",
        params![id, now],
    )?;
    if n > 0 {
        conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2 WHERE case_id = ?1 AND state = 'held'",
            params![id, now],
        )?;
        // Confirmed, or released unreviewed: a clock counted from review starts now.
        super::platform::clock_moment(conn, id, super::settings::ClockStart::Review)?;
    }
    Ok(n)
}

/// A reviewer's rejection reaches the case's deliveries: none of them will ever be sent. The
/// caller has moved the case to `rejected` in the same transaction.
pub fn reject_deliveries(conn: &Connection, id: &str) -> Result<(), OutboxError> {
    conn.execute(
        "UPDATE deliveries SET state = 'rejected' WHERE case_id = ?1 AND state = 'held'",
        params![id],
    )?;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn age_seconds(created_at: Option<String>) -> Option<f64> {
    let now = time::OffsetDateTime::now_utc();
    created_at
        .and_then(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (now - t).as_seconds_f64().max(0.0))
}

impl Outbox {
    /// Opens (creating or migrating if needed: [`MIGRATIONS`]) the outbox; WAL with full sync
    /// so a committed case survives power loss. An up-to-date file is opened without a write
    /// lock.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Folder {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let open_err = |source| OutboxError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // A long reader (a backup, say) holds checkpoints back and the WAL grows meanwhile;
        // SQLite keeps the file at its largest size unless told otherwise.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(open_err)?;
        let mut conn = conn;
        gridwatch_sqlite::migrate(&mut conn, MIGRATIONS).map_err(|source| {
            OutboxError::Migrate {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(Self { conn })
    }

    /// Stores a case and queues it for delivery to the primary target, atomically.
    pub fn insert(
        &mut self,
        id: &str,
        scenario: &str,
        camera: &str,
        body: &str,
        snapshot: &[u8],
    ) -> Result<(), OutboxError> {
        self.insert_as(
            id,
            scenario,
            camera,
            body,
            snapshot,
            InitialState::Pending,
            None,
        )
    }

    /// Stores a case in `state` for the primary target, atomically; `clean_frame` is the
    /// unannotated frame a reviewed case keeps for the training-data export.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_as(
        &mut self,
        id: &str,
        scenario: &str,
        camera: &str,
        body: &str,
        snapshot: &[u8],
        state: InitialState,
        clean_frame: Option<&[u8]>,
    ) -> Result<(), OutboxError> {
        self.store(&NewCase {
            id,
            scenario,
            camera,
            body,
            snapshot,
            state,
            clean_frame,
            targets: &[PRIMARY_TARGET_ID.to_owned()],
        })
    }

    /// Stores a case with one delivery per target, in one transaction: the routing decided
    /// now is never decided again (a later configuration does not re-route stored cases).
    pub fn store(&mut self, case: &NewCase<'_>) -> Result<(), OutboxError> {
        self.store_if(case, || true).map(|_| ())
    }

    /// [`Outbox::store`], if `allowed()` still holds once the write lock is held: in cluster
    /// mode the fence is checked after any wait for the lock, so a lease that ran out meanwhile
    /// commits nothing. Returns whether the case was stored.
    pub fn store_if(
        &mut self,
        case: &NewCase<'_>,
        allowed: impl Fn() -> bool,
    ) -> Result<bool, OutboxError> {
        self.store_with_clock(case, None, allowed)
    }

    /// [`Outbox::store_if`], starting the case's 103060 clock (level, counted from, detection
    /// time in Unix ms) in the same transaction.
    pub fn store_with_clock(
        &mut self,
        case: &NewCase<'_>,
        clock: Option<(super::HandlingLevel, super::settings::ClockStart, i64)>,
        allowed: impl Fn() -> bool,
    ) -> Result<bool, OutboxError> {
        let (case_state, delivery_state) = match (case.state, case.targets.is_empty()) {
            (InitialState::AwaitingReview, _) => ("awaiting_review", "held"),
            (InitialState::Pending, true) => ("unrouted", "pending"),
            (InitialState::Pending, false) => ("pending", "pending"),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !allowed() {
            return Ok(false);
        }
        let now = now_ms();
        // The snapshot once: the JPEG here, its base64 cut out of the JSON.
        let (body, snapshot_at) = split_snapshot(case.body, case.snapshot);
        tx.execute(
            "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot, snapshot_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![case.id, now_rfc3339(), case.scenario, case.camera, body, case.snapshot, snapshot_at],
        )?;
        super::facts::record(&tx, case.id)?;
        tx.execute(
            "INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES (?1, ?2, ?3)",
            params![case.id, case_state, now],
        )?;
        for target in case.targets {
            tx.execute(
                "INSERT INTO deliveries (case_id, target, state, next_attempt_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![case.id, target, delivery_state, now],
            )?;
        }
        if let Some(jpeg) = case.clean_frame {
            tx.execute(
                "INSERT INTO review_frames (case_id, jpeg) VALUES (?1, ?2)",
                params![case.id, jpeg],
            )?;
        }
        if let Some((level, from, detected_ms)) = clock {
            let held = case.state == InitialState::AwaitingReview;
            super::platform::start_clock(&tx, case.id, level, from, detected_ms, held)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Held cases no reviewer handled since before `held_before_ms` (Unix ms) go out unreviewed:
    /// a held case must never wait forever (no reviewer on shift, the console switched off).
    /// Returns their ids; each is recorded in the review audit log.
    pub fn release_held(&mut self, held_before_ms: i64) -> Result<Vec<String>, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT case_id FROM outbox WHERE state = 'awaiting_review' AND next_attempt_ms <= ?1",
            )?;
            stmt.query_map(params![held_before_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(ids);
        }
        for id in &ids {
            release_case(&tx, id)?;
            tx.execute(
                "INSERT INTO review_audit (at, user, action, case_id, detail) VALUES (?1, 'gridwatch', 'released_unreviewed', ?2, 'review timeout')",
                params![now_rfc3339(), id],
            )?;
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Pending deliveries to `target` whose next attempt is due, oldest first; each body is the
    /// case JSON as it was stored (snapshot included).
    pub fn due(&self, target: &str, limit: usize) -> Result<Vec<PendingCase>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.body, d.attempts, c.snapshot_at,
                    CASE WHEN c.snapshot_at IS NOT NULL THEN c.snapshot END
             FROM deliveries d JOIN cases c ON c.id = d.case_id
             WHERE d.target = ?1 AND d.state = 'pending' AND d.next_attempt_at_ms <= ?2
             ORDER BY d.next_attempt_at_ms, c.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![target, now_ms(), limit as i64], |r| {
            let id: String = r.get(0)?;
            let jpeg: Option<Vec<u8>> = r.get(4)?;
            Ok(PendingCase {
                body: join_snapshot(&id, r.get(1)?, r.get(3)?, jpeg.as_deref()),
                id,
                attempts: r.get(2)?,
                update_of: None,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Milliseconds until the earliest pending delivery to `target` is due (0 if one is due now).
    pub fn next_due_in_ms(&self, target: &str) -> Result<Option<i64>, OutboxError> {
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(next_attempt_at_ms) FROM deliveries WHERE target = ?1 AND state = 'pending'",
                params![target],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(next.map(|n| (n - now_ms()).max(0)))
    }

    /// Deliveries to `target` still to be made (the drain at shutdown waits for these).
    pub fn pending_for(&self, target: &str) -> Result<u64, OutboxError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE target = ?1 AND state = 'pending'",
            params![target],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    pub fn mark_delivered(&self, id: &str, target: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at_ms = ?3, last_error = NULL
             WHERE case_id = ?1 AND target = ?2",
            params![id, target, now_ms()],
        )?;
        // A 103060 clock counted from dispatch starts with the first delivery.
        super::platform::clock_moment(&self.conn, id, super::settings::ClockStart::Dispatch)?;
        Ok(())
    }

    pub fn mark_retry(
        &self,
        id: &str,
        target: &str,
        delay_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at_ms = ?3, last_error = ?4
             WHERE case_id = ?1 AND target = ?2",
            params![id, target, now_ms().saturating_add(delay_ms), error],
        )?;
        Ok(())
    }

    pub fn mark_dead(&self, id: &str, target: &str, error: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = ?3
             WHERE case_id = ?1 AND target = ?2",
            params![id, target, error],
        )?;
        Ok(())
    }

    /// Depth, oldest undelivered age, retries and dead letters: of cases, and per target.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let c = self.counts()?;
        let oldest: Option<String> = self
            .conn
            .query_row(
                "SELECT c.created_at FROM outbox o JOIN cases c ON c.id = o.case_id
                 WHERE o.state = 'pending' ORDER BY c.created_at LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let targets = self.target_stats(None)?;
        let last_error: Option<String> = self
            .conn
            .query_row(
                "SELECT last_error FROM deliveries WHERE state = 'pending' AND last_error IS NOT NULL
                 ORDER BY next_attempt_at_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(OutboxStats {
            pending: c.pending,
            delivered: c.delivered,
            dead_letters: c.dead,
            oldest_pending_age_seconds: age_seconds(oldest),
            retries: targets.values().map(|t| t.retries).sum(),
            last_error,
            awaiting_review: c.awaiting_review,
            rejected: c.rejected,
            unrouted: c.unrouted,
            unrendered: self
                .conn
                .query_row("SELECT COUNT(*) FROM unrendered", [], |r| {
                    r.get::<_, i64>(0)
                })?
                .max(0) as u64,
            targets,
        })
    }

    /// Per-target delivery numbers: every target with a delivery, or just `only`. Counts and
    /// retries come from the `deliveries_due` index alone (target, state, …, attempts), but
    /// still from every delivery in the outbox (bounded by the retention). The per-second
    /// gauges use [`Outbox::target_gauges`] instead.
    pub fn target_stats(
        &self,
        only: Option<&str>,
    ) -> Result<BTreeMap<String, TargetStats>, OutboxError> {
        const RETRIES: &str = "COALESCE(SUM(CASE WHEN state = 'pending' THEN attempts ELSE MAX(attempts - 1, 0) END), 0)";
        let mut stmt = match only {
            Some(_) => self.conn.prepare_cached(&format!(
                "SELECT target, state, COUNT(*), {RETRIES} FROM deliveries WHERE target = ?1 GROUP BY state"
            ))?,
            None => self.conn.prepare_cached(&format!(
                "SELECT target, state, COUNT(*), {RETRIES} FROM deliveries GROUP BY target, state"
            ))?,
        };
        let rows = match only {
            Some(t) => stmt.query(params![t])?,
            None => stmt.query([])?,
        };
        let rows: Vec<(String, String, i64, i64)> = rows
            .mapped(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .collect::<Result<_, _>>()?;
        let mut out: BTreeMap<String, TargetStats> = BTreeMap::new();
        for (target, state, n, retries) in rows {
            let stats = out.entry(target).or_default();
            let n = n.max(0) as u64;
            match state.as_str() {
                "pending" => stats.pending = n,
                "delivered" => stats.delivered = n,
                "dead" => stats.dead_letters = n,
                "held" => stats.held = n,
                _ => {}
            }
            stats.retries += retries.max(0) as u64;
        }
        let mut last = self.conn.prepare_cached(
            "SELECT last_error FROM deliveries WHERE target = ?1 AND state = 'pending' AND last_error IS NOT NULL
             ORDER BY next_attempt_at_ms DESC LIMIT 1",
        )?;
        for (target, stats) in out.iter_mut() {
            stats.last_error = last.query_row(params![target], |r| r.get(0)).optional()?;
            stats.oldest_pending_age_seconds = self.oldest_pending(target)?;
        }
        Ok(out)
    }

    /// Age of the oldest case pending delivery to `target` (reads only its pending deliveries).
    fn oldest_pending(&self, target: &str) -> Result<Option<f64>, OutboxError> {
        let oldest: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT MIN(c.created_at) FROM deliveries d JOIN cases c ON c.id = d.case_id
                 WHERE d.target = ?1 AND d.state = 'pending'",
            )?
            .query_row(params![target], |r| r.get(0))?;
        Ok(age_seconds(oldest))
    }

    /// The per-target gauges delivery refreshes every second: pending and dead deliveries
    /// (counted in the `deliveries_due` index, never the delivered ones) and the age of the
    /// oldest pending case (a lookup per pending delivery).
    pub fn target_gauges(&self, target: &str) -> Result<TargetGauges, OutboxError> {
        let count = |state: &str| -> Result<u64, OutboxError> {
            let n: i64 = self
                .conn
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE target = ?1 AND state = ?2")?
                .query_row(params![target, state], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        Ok(TargetGauges {
            pending: count("pending")?,
            dead_letters: count("dead")?,
            oldest_pending_age_seconds: self.oldest_pending(target)?,
        })
    }

    /// The case JSON of `id` as it is sent (see [`case_body`]).
    pub fn case_body(&self, id: &str) -> Result<Option<String>, OutboxError> {
        Ok(case_body(&self.conn, id)?)
    }

    /// Deletes, in one `IMMEDIATE` transaction, at most `batch` cases stored before
    /// `now - retention` that are finished: delivered to every target they were routed to, or
    /// rejected by a reviewer. Each goes with its deliveries, snapshot, body, clean frame and
    /// review decision (the audit log keeps its entries). Pending, held, dead-lettered and
    /// unrouted cases are never deleted, however old. Returns how many cases were deleted; a
    /// full batch means there may be more.
    pub fn purge_expired(
        &mut self,
        now: SystemTime,
        retention: Duration,
        batch: usize,
    ) -> Result<usize, OutboxError> {
        let cutoff = time::OffsetDateTime::from(
            now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH),
        )
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            // `cases` first (CROSS JOIN keeps that order): the oldest through `cases_created`,
            // not every delivered case through the state index.
            let mut stmt = tx.prepare_cached(
                "SELECT c.id FROM cases c CROSS JOIN outbox o ON o.case_id = c.id
                 WHERE c.created_at < ?1 AND o.state IN ('delivered', 'rejected')
                   AND NOT EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.case_id = c.id AND d.state IN ('pending', 'held', 'dead'))
                 LIMIT ?2",
            )?;
            stmt.query_map(params![cutoff, batch as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &ids {
            delete_case(&tx, id)?;
        }
        // Unrendered events age out with the cases (`kept_at` is RFC 3339 UTC, as `created_at`).
        tx.execute("DELETE FROM unrendered WHERE kept_at < ?1", params![cutoff])?;
        tx.commit()?;
        Ok(ids.len())
    }
    /// Keeps an event whose case could not be rendered, with the reason (one statement).
    pub fn keep_unrendered(
        &self,
        scenario: &str,
        camera: &str,
        zone: &str,
        reason: &str,
        event: &serde_json::Value,
    ) -> Result<i64, OutboxError> {
        let kept_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.conn.execute(
            "INSERT INTO unrendered (kept_at, scenario, camera, zone, reason, event)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![kept_at, scenario, camera, zone, reason, event.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Events kept without a case, newest first.
    pub fn unrendered(&self, limit: usize) -> Result<Vec<Unrendered>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kept_at, scenario, camera, zone, reason, event FROM unrendered
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            let event: String = r.get(6)?;
            Ok(Unrendered {
                id: r.get(0)?,
                kept_at: r.get(1)?,
                scenario: r.get(2)?,
                camera: r.get(3)?,
                zone: r.get(4)?,
                reason: r.get(5)?,
                event: serde_json::from_str(&event).unwrap_or(serde_json::Value::String(event)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Cases in `state` (`None`: every state), oldest first, each with its deliveries.
    pub fn list(&self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.id, o.state, c.created_at, c.scenario, c.camera, o.attempts, o.last_error, o.delivered_at
             FROM outbox o JOIN cases c ON c.id = o.case_id
             WHERE ?1 IS NULL OR o.state = ?1 ORDER BY c.created_at, c.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![state, limit as i64], entry)?;
        self.with_deliveries(rows.collect::<Result<_, _>>()?)
    }

    /// Cases routed to `target` whose delivery there is in `state` (`None`: any), oldest first;
    /// the entry's state, attempts, last error and delivery time are that delivery's.
    pub fn list_for(
        &self,
        target: &str,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.id, d.state, c.created_at, c.scenario, c.camera, d.attempts, d.last_error,
                    CASE WHEN d.delivered_at_ms IS NOT NULL
                         THEN strftime('%Y-%m-%dT%H:%M:%fZ', d.delivered_at_ms / 1000.0, 'unixepoch') END
             FROM deliveries d JOIN cases c ON c.id = d.case_id
             WHERE d.target = ?1 AND (?2 IS NULL OR d.state = ?2) ORDER BY c.created_at, c.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![target, state, limit as i64], entry)?;
        self.with_deliveries(rows.collect::<Result<_, _>>()?)
    }

    fn with_deliveries(
        &self,
        mut entries: Vec<OutboxEntry>,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT target, state, attempts, last_error, delivered_at_ms FROM deliveries
             WHERE case_id = ?1 ORDER BY rowid",
        )?;
        for e in &mut entries {
            e.deliveries = stmt
                .query_map(params![e.id], |r| {
                    Ok(DeliveryEntry {
                        target: r.get(0)?,
                        state: r.get(1)?,
                        attempts: r.get(2)?,
                        last_error: r.get(3)?,
                        delivered_at: r.get::<_, Option<i64>>(4)?.and_then(rfc3339_ms),
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(entries)
    }

    /// Puts dead letters back in the queue, due now, with a fresh backoff; returns how many
    /// deliveries. Every target's, or only `target`'s.
    pub fn retry_dead(&mut self, which: &Selection) -> Result<usize, OutboxError> {
        self.retry_dead_at(which, None)
    }

    pub fn retry_dead_at(
        &mut self,
        which: &Selection,
        target: Option<&str>,
    ) -> Result<usize, OutboxError> {
        let now = now_ms();
        self.for_dead(which, target, |tx, id, target| {
            tx.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at_ms = ?3
                 WHERE case_id = ?1 AND target = ?2 AND state = 'dead'",
                params![id, target, now],
            )
        })
    }

    /// Moves every undelivered delivery (pending, dead, held) of target `from` to `to`, in one
    /// transaction; a case that already has a delivery to `to` keeps that one. Dead letters
    /// become pending. Returns how many moved.
    pub fn retarget(&mut self, from: &str, to: &str) -> Result<usize, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE deliveries
             SET target = ?2,
                 state = CASE state WHEN 'dead' THEN 'pending' ELSE state END,
                 attempts = CASE state WHEN 'dead' THEN 0 ELSE attempts END,
                 next_attempt_at_ms = ?3
             WHERE target = ?1 AND state IN ('pending', 'dead', 'held')
               AND NOT EXISTS (SELECT 1 FROM deliveries d2
                               WHERE d2.case_id = deliveries.case_id AND d2.target = ?2)",
            params![from, to, now_ms()],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Gives every `unrouted` case a delivery to `target` (due now). Returns how many.
    pub fn route_unrouted(&mut self, target: &str) -> Result<usize, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "INSERT INTO deliveries (case_id, target, state, next_attempt_at_ms)
             SELECT case_id, ?1, 'pending', ?2 FROM outbox WHERE state = 'unrouted'",
            params![target, now_ms()],
        )?;
        // Inserts have no roll-up trigger (a new case is stored with its state).
        tx.execute(
            "UPDATE outbox SET state = 'pending' WHERE state = 'unrouted'",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Deletes dead letters; a case left with no delivery goes with them (its row and body).
    /// Returns how many deliveries were purged.
    pub fn purge_dead(&mut self, which: &Selection) -> Result<usize, OutboxError> {
        self.purge_dead_at(which, None)
    }

    pub fn purge_dead_at(
        &mut self,
        which: &Selection,
        target: Option<&str>,
    ) -> Result<usize, OutboxError> {
        self.for_dead(which, target, |tx, id, target| {
            let n = tx.execute(
                "DELETE FROM deliveries WHERE case_id = ?1 AND target = ?2 AND state = 'dead'",
                params![id, target],
            )?;
            let left: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE case_id = ?1)",
                params![id],
                |r| r.get(0),
            )?;
            if n > 0 && !left {
                delete_case(tx, id)?;
            }
            Ok(n)
        })
    }

    /// Applies `f` to each selected dead delivery in one transaction: all or nothing.
    fn for_dead(
        &mut self,
        which: &Selection,
        target: Option<&str>,
        f: impl Fn(&rusqlite::Transaction<'_>, &str, &str) -> rusqlite::Result<usize>,
    ) -> Result<usize, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT case_id, target FROM deliveries
                 WHERE state = 'dead' AND (?1 IS NULL OR target = ?1) ORDER BY case_id, target",
            )?;
            stmt.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for (id, t) in &rows {
            let chosen = match which {
                Selection::All => true,
                Selection::Ids(ids) => ids.iter().any(|i| i == id),
            };
            if chosen {
                n += f(&tx, id, t)?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let mut c = OutboxCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            let n = n.max(0) as u64;
            match state.as_str() {
                "pending" => c.pending = n,
                "delivered" => c.delivered = n,
                "awaiting_review" => c.awaiting_review = n,
                "rejected" => c.rejected = n,
                "unrouted" => c.unrouted = n,
                _ => c.dead = n,
            }
        }
        Ok(c)
    }
}

/// Deletes a case and everything stored with it (not its audit entries). The outbox row goes
/// first, so the roll-up triggers of the deliveries' deletion find nothing to update.
fn delete_case(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<()> {
    super::facts::freeze(tx, id, now_ms())?;
    for sql in [
        "DELETE FROM outbox WHERE case_id = ?1",
        "DELETE FROM deliveries WHERE case_id = ?1",
        "DELETE FROM review_frames WHERE case_id = ?1",
        "DELETE FROM review_decisions WHERE case_id = ?1",
        "DELETE FROM cases WHERE id = ?1",
    ]
    .iter()
    .chain(super::platform::CASE_TABLES)
    {
        tx.prepare_cached(sql)?.execute(params![id])?;
    }
    Ok(())
}

/// The WAL file is cut back to this size once a checkpoint has emptied it.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// How often [`Purger`] looks for expired cases when the last look found less than a batch.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Cases deleted per purge transaction: the write lock is held for one batch at a time, so
/// delivery and new cases wait at most that long.
pub const PURGE_BATCH: usize = 500;

/// The retention purge (`[cases] retention_days`), driven by the run's supervisor loop:
/// [`Purger::tick`] runs [`Outbox::purge_expired`] at start and then every
/// [`PURGE_INTERVAL`]; a backlog goes a batch per tick until it is gone. Each run that deleted
/// something is logged and counted (`gridwatch_outbox_purged_cases_total`).
pub struct Purger {
    /// `None`: `retention_days = 0`, cases are kept forever.
    retention: Option<Duration>,
    next: Instant,
    /// Deleted so far in the current run of full batches.
    run: u64,
}

impl Purger {
    pub fn new(retention_days: u32) -> Self {
        Purger {
            retention: (retention_days > 0)
                .then(|| Duration::from_secs(u64::from(retention_days) * 86_400)),
            next: Instant::now(),
            run: 0,
        }
    }

    /// Purges one batch if one is due; errors are logged and tried again at the next interval.
    pub fn tick(&mut self, outbox: &mut Outbox) {
        let Some(retention) = self.retention else {
            return;
        };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        match outbox.purge_expired(SystemTime::now(), retention, PURGE_BATCH) {
            Ok(n) => {
                self.run += n as u64;
                if n > 0 {
                    crate::telemetry::outbox_purged(n as u64);
                }
                if n == PURGE_BATCH {
                    // More may be waiting: the next batch at the next tick.
                    self.next = now;
                    return;
                }
                if self.run > 0 {
                    tracing::info!(
                        cases = self.run,
                        retention_days = retention.as_secs() / 86_400,
                        "outbox: delivered and rejected cases past the retention deleted"
                    );
                }
                self.run = 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox: retention purge failed; tried again later");
            }
        }
        self.next = now + PURGE_INTERVAL;
    }
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        state: r.get(1)?,
        created_at: r.get(2)?,
        scenario: r.get(3)?,
        camera: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        delivered_at: r.get(7)?,
        deliveries: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "gridwatch-outbox-{tag}-{}-{}.sqlite",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    #[test]
    fn a_full_disk_is_reported_as_such_and_nothing_is_half_stored() {
        let path = temp_path("full");
        let mut outbox = Outbox::open(&path).unwrap();
        outbox.insert("a", "s", "c", "{}", b"x").unwrap();
        // SQLite's page limit behaves like a full disk: SQLITE_FULL on the next growth.
        let pages: i64 = outbox
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        outbox
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = "x".repeat(1 << 20);
        let err = outbox.insert("b", "s", "c", &big, b"x").unwrap_err();
        assert!(matches!(err, OutboxError::DiskFull(_)), "{err:?}");
        assert!(err.to_string().contains("full"), "{err}");
        let c = outbox.counts().unwrap();
        assert_eq!(
            (c.pending, c.delivered, c.dead),
            (1, 0, 0),
            "the failed case left no row"
        );
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn deliveries_move_to_another_target_and_unrouted_cases_get_one() {
        let path = temp_path("retarget");
        let mut outbox = Outbox::open(&path).unwrap();
        let store = |o: &mut Outbox, id: &str, targets: &[String]| {
            o.store(&NewCase {
                id,
                scenario: "s",
                camera: "c",
                body: "{}",
                snapshot: b"x",
                state: InitialState::Pending,
                clean_frame: None,
                targets,
            })
            .unwrap()
        };
        store(&mut outbox, "a", &["old".into()]);
        store(&mut outbox, "b", &["old".into(), "new".into()]);
        store(&mut outbox, "u", &[]);
        outbox.mark_dead("a", "old", "HTTP 404").unwrap();
        assert_eq!(
            outbox.retarget("old", "new").unwrap(),
            1,
            "b already has `new`"
        );
        let mut due: Vec<String> = outbox
            .due("new", 10)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        due.sort();
        assert_eq!(
            due,
            ["a", "b"],
            "the dead letter is due again at its new target"
        );
        assert_eq!(outbox.route_unrouted("new").unwrap(), 1);
        assert_eq!(outbox.due("new", 10).unwrap().len(), 3);
        let state: String = outbox
            .conn
            .query_row("SELECT state FROM outbox WHERE case_id = 'u'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "pending");
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn legacy_rows_are_adopted_by_the_configured_primary_target() {
        let path = temp_path("adopt");
        let mut outbox = Outbox::open(&path).unwrap();
        // A case migrated to `primary`, and one a pre-routing binary wrote after the
        // migration (an outbox row with no delivery).
        outbox.insert("migrated", "s", "c", "{}", b"x").unwrap();
        outbox
            .conn
            .execute_batch(
                "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot) VALUES ('legacy', 't', 's', 'c', '{}', x'00');
                 INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES ('legacy', 'pending', 0);",
            )
            .unwrap();
        assert!(outbox.due("town", 10).unwrap().is_empty());
        assert_eq!(outbox.adopt_legacy("town").unwrap(), 2);
        let mut due: Vec<String> = outbox
            .due("town", 10)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        due.sort();
        assert_eq!(due, ["legacy", "migrated"]);
        assert!(outbox.due(PRIMARY_TARGET_ID, 10).unwrap().is_empty());
        assert_eq!(outbox.adopt_legacy("town").unwrap(), 0, "idempotent");
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_outbox_from_before_the_review_states_is_migrated() {
        let path = temp_path("migrate");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE cases (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, scenario TEXT NOT NULL,
                    camera TEXT NOT NULL, body TEXT NOT NULL, snapshot BLOB NOT NULL);
                 CREATE TABLE outbox (case_id TEXT PRIMARY KEY REFERENCES cases(id),
                    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL,
                    last_error TEXT, delivered_at TEXT);
                 INSERT INTO cases VALUES ('old', 't', 's', 'c', '{}', x'00');
                 INSERT INTO outbox VALUES ('old', 'delivered', 1, 0, NULL, 't');",
            )
            .unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        outbox
            .insert_as(
                "new",
                "s",
                "c",
                "{}",
                b"x",
                InitialState::AwaitingReview,
                Some(b"jpeg"),
            )
            .unwrap();
        let c = outbox.counts().unwrap();
        assert_eq!((c.delivered, c.awaiting_review, c.pending), (1, 1, 0));
        assert!(
            outbox.due(PRIMARY_TARGET_ID, 10).unwrap().is_empty(),
            "held cases are not due"
        );
        drop(outbox);
        // Opening again is a no-op.
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.counts().unwrap().awaiting_review, 1);
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn held_cases_go_out_unreviewed_after_the_timeout_and_only_then() {
        let path = temp_path("held");
        let mut outbox = Outbox::open(&path).unwrap();
        outbox
            .insert_as(
                "h1",
                "crowd_gathering",
                "cam",
                "{}",
                b"jpeg",
                InitialState::AwaitingReview,
                None,
            )
            .unwrap();
        outbox
            .insert_as(
                "p1",
                "crowd_gathering",
                "cam",
                "{}",
                b"jpeg",
                InitialState::Pending,
                None,
            )
            .unwrap();
        // Held since "now": not yet older than a cutoff an hour ago.
        assert!(
            outbox
                .release_held(now_ms() - 3_600_000)
                .unwrap()
                .is_empty()
        );
        assert_eq!(outbox.counts().unwrap().awaiting_review, 1);
        assert_eq!(outbox.release_held(now_ms() + 1).unwrap(), ["h1"]);
        let c = outbox.counts().unwrap();
        assert_eq!((c.awaiting_review, c.pending), (0, 2));
        assert!(
            outbox
                .due(PRIMARY_TARGET_ID, 10)
                .unwrap()
                .iter()
                .any(|p| p.id == "h1")
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn dead_letters_can_be_listed_retried_and_purged() {
        let path = temp_path("dead");
        let mut outbox = Outbox::open(&path).unwrap();
        for id in ["a", "b", "c"] {
            outbox.insert(id, "s", "cam", "{}", b"x").unwrap();
        }
        outbox
            .mark_dead("a", PRIMARY_TARGET_ID, "HTTP 422: nope")
            .unwrap();
        outbox
            .mark_dead("b", PRIMARY_TARGET_ID, "HTTP 400: bad")
            .unwrap();
        outbox
            .mark_retry("c", PRIMARY_TARGET_ID, 60_000, "HTTP 503")
            .unwrap();
        let stats = outbox.stats().unwrap();
        assert_eq!(
            (stats.pending, stats.dead_letters, stats.retries),
            (1, 2, 1)
        );
        assert!(stats.oldest_pending_age_seconds.unwrap() >= 0.0);
        assert_eq!(stats.last_error.as_deref(), Some("HTTP 503"));
        let dead = outbox.list(Some("dead"), 10).unwrap();
        assert_eq!(
            dead.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 422: nope"));

        assert_eq!(
            outbox
                .retry_dead(&Selection::Ids(vec!["a".into(), "c".into()]))
                .unwrap(),
            1,
            "only dead letters are retried"
        );
        assert_eq!(
            outbox
                .due(PRIMARY_TARGET_ID, 10)
                .unwrap()
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(outbox.purge_dead(&Selection::All).unwrap(), 1);
        let c = outbox.counts().unwrap();
        assert_eq!((c.pending, c.dead), (2, 0));
        let cases: i64 = outbox
            .conn
            .query_row("SELECT COUNT(*) FROM cases", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cases, 2, "the purged case is gone with its row");
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    /// case, target, state, attempts, last error, delivered at (ms).
    type DeliveryRow = (String, String, String, u32, Option<String>, Option<i64>);

    /// An outbox written before routing (cases + `outbox` rows, no `deliveries`) opens as
    /// deliveries to `primary` in the same states, with attempts, errors, due times and delivery
    /// times kept; delivery and the review states go on from there.
    #[test]
    fn an_outbox_from_before_routing_becomes_deliveries_to_primary() {
        let path = temp_path("routing-migrate");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE cases (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, scenario TEXT NOT NULL,
                    camera TEXT NOT NULL, body TEXT NOT NULL, snapshot BLOB NOT NULL);
                 CREATE TABLE outbox (case_id TEXT PRIMARY KEY REFERENCES cases(id),
                    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'awaiting_review', 'rejected')),
                    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL,
                    last_error TEXT, delivered_at TEXT);
                 CREATE INDEX outbox_due ON outbox(state, next_attempt_ms);
                 CREATE TABLE review_frames (case_id TEXT PRIMARY KEY REFERENCES cases(id), jpeg BLOB NOT NULL);
                 INSERT INTO cases VALUES ('d', '2026-01-01T00:00:00Z', 's', 'c', '{}', x'00');
                 INSERT INTO cases VALUES ('p', '2026-01-01T00:00:01Z', 's', 'c', '{\"n\":1}', x'00');
                 INSERT INTO cases VALUES ('x', '2026-01-01T00:00:02Z', 's', 'c', '{}', x'00');
                 INSERT INTO cases VALUES ('h', '2026-01-01T00:00:03Z', 's', 'c', '{}', x'00');
                 INSERT INTO cases VALUES ('r', '2026-01-01T00:00:04Z', 's', 'c', '{}', x'00');
                 INSERT INTO outbox VALUES ('d', 'delivered', 2, 0, NULL, '2026-01-01T00:00:10.250Z');
                 INSERT INTO outbox VALUES ('p', 'pending', 3, 0, 'HTTP 503', NULL);
                 INSERT INTO outbox VALUES ('x', 'dead', 1, 0, 'HTTP 422: no', NULL);
                 INSERT INTO outbox VALUES ('h', 'awaiting_review', 0, 0, NULL, NULL);
                 INSERT INTO outbox VALUES ('r', 'rejected', 0, 0, NULL, NULL);",
            )
            .unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        let rows: Vec<DeliveryRow> = outbox
            .conn
            .prepare("SELECT case_id, target, state, attempts, last_error, delivered_at_ms FROM deliveries ORDER BY case_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let p = PRIMARY_TARGET_ID.to_owned();
        assert_eq!(
            rows,
            [
                (
                    "d".into(),
                    p.clone(),
                    "delivered".into(),
                    2,
                    None,
                    Some(1_767_225_610_250)
                ),
                ("h".into(), p.clone(), "held".into(), 0, None, None),
                (
                    "p".into(),
                    p.clone(),
                    "pending".into(),
                    3,
                    Some("HTTP 503".into()),
                    None
                ),
                ("r".into(), p.clone(), "rejected".into(), 0, None, None),
                (
                    "x".into(),
                    p.clone(),
                    "dead".into(),
                    1,
                    Some("HTTP 422: no".into()),
                    None
                ),
            ]
        );
        let c = outbox.counts().unwrap();
        assert_eq!(
            (
                c.delivered,
                c.pending,
                c.dead,
                c.awaiting_review,
                c.rejected
            ),
            (1, 1, 1, 1, 1),
            "case states are kept"
        );
        // The pending case is due to primary with its attempts; the held one is not.
        let due = outbox.due(PRIMARY_TARGET_ID, 10).unwrap();
        assert_eq!(
            due.iter()
                .map(|d| (d.id.as_str(), d.attempts))
                .collect::<Vec<_>>(),
            [("p", 3)]
        );
        assert_eq!(due[0].body, r#"{"n":1}"#);
        // The migrated table takes the new states; a new case can go to two targets.
        outbox
            .store(&NewCase {
                id: "n",
                scenario: "s",
                camera: "c",
                body: "{}",
                snapshot: b"x",
                state: InitialState::Pending,
                clean_frame: None,
                targets: &[p.clone(), "xujing".into()],
            })
            .unwrap();
        outbox.mark_delivered("p", PRIMARY_TARGET_ID).unwrap();
        assert_eq!(outbox.release_held(i64::MAX).unwrap(), ["h"]);
        let stats = outbox.stats().unwrap();
        assert_eq!(stats.targets[PRIMARY_TARGET_ID].pending, 2, "h and n");
        assert_eq!(stats.targets[PRIMARY_TARGET_ID].delivered, 2, "d and p");
        assert_eq!(stats.targets["xujing"].pending, 1);
        drop(outbox);
        // Opening again is a no-op.
        let outbox = Outbox::open(&path).unwrap();
        let n: i64 = outbox
            .conn
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 7);
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    /// Each target's delivery moves on its own; the case is delivered when every target has it,
    /// dead when one refused it for good, and a case no target takes is kept as `unrouted`.
    #[test]
    fn a_case_rolls_up_the_state_of_its_deliveries() {
        let path = temp_path("roll-up");
        let mut outbox = Outbox::open(&path).unwrap();
        let both = ["town".to_owned(), "xujing".to_owned()];
        let new = |id, targets| NewCase {
            id,
            scenario: "s",
            camera: "c",
            body: "{}",
            snapshot: b"x",
            state: InitialState::Pending,
            clean_frame: None,
            targets,
        };
        outbox.store(&new("a", &both)).unwrap();
        outbox.store(&new("b", &both)).unwrap();
        outbox.store(&new("u", &[])).unwrap();
        let state = |o: &Outbox, id: &str| {
            o.list(None, 10)
                .unwrap()
                .into_iter()
                .find(|e| e.id == id)
                .unwrap()
        };
        outbox.mark_delivered("a", "town").unwrap();
        assert_eq!(state(&outbox, "a").state, "pending", "xujing still owed");
        outbox.mark_retry("a", "xujing", 0, "refused").unwrap();
        outbox.mark_delivered("a", "xujing").unwrap();
        let a = state(&outbox, "a");
        assert_eq!((a.state.as_str(), a.attempts), ("delivered", 3));
        assert!(a.delivered_at.is_some());
        outbox.mark_dead("b", "xujing", "HTTP 422").unwrap();
        assert_eq!(state(&outbox, "b").state, "pending");
        outbox.mark_delivered("b", "town").unwrap();
        assert_eq!(state(&outbox, "b").state, "dead");
        assert_eq!(state(&outbox, "u").state, "unrouted");
        assert_eq!(outbox.counts().unwrap().unrouted, 1);
        assert!(outbox.due("town", 10).unwrap().is_empty());
        // Retrying at one target leaves the other's delivery alone.
        assert_eq!(
            outbox.retry_dead_at(&Selection::All, Some("town")).unwrap(),
            0
        );
        assert_eq!(
            outbox
                .retry_dead_at(&Selection::All, Some("xujing"))
                .unwrap(),
            1
        );
        assert_eq!(state(&outbox, "b").state, "pending");
        assert_eq!(outbox.pending_for("xujing").unwrap(), 1);
        assert_eq!(outbox.pending_for("town").unwrap(), 0);
        outbox.mark_dead("b", "xujing", "HTTP 422").unwrap();
        // Purging b's dead letter keeps the case: town has it.
        assert_eq!(outbox.purge_dead(&Selection::All).unwrap(), 1);
        assert_eq!(state(&outbox, "b").state, "delivered");
        let dead = outbox.list_for("xujing", Some("dead"), 10).unwrap();
        assert!(dead.is_empty());
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    /// A held case goes to none of its targets until confirmed; then to all of them. A
    /// rejected one never goes out, and one no target takes becomes `unrouted` when confirmed.
    #[test]
    fn held_cases_reach_every_target_only_when_confirmed() {
        let path = temp_path("held-routed");
        let mut outbox = Outbox::open(&path).unwrap();
        let both = ["town".to_owned(), "xujing".to_owned()];
        for (id, targets) in [("c", &both[..]), ("r", &both[..]), ("n", &[][..])] {
            outbox
                .store(&NewCase {
                    id,
                    scenario: "s",
                    camera: "c",
                    body: "{}",
                    snapshot: b"x",
                    state: InitialState::AwaitingReview,
                    clean_frame: Some(b"jpeg"),
                    targets,
                })
                .unwrap();
        }
        assert!(outbox.due("town", 10).unwrap().is_empty());
        assert!(outbox.due("xujing", 10).unwrap().is_empty());
        assert_eq!(
            outbox.target_stats(Some("xujing")).unwrap()["xujing"].held,
            2
        );
        assert_eq!(release_case(&outbox.conn, "c").unwrap(), 1);
        assert_eq!(release_case(&outbox.conn, "c").unwrap(), 0, "only once");
        outbox
            .conn
            .execute(
                "UPDATE outbox SET state = 'rejected' WHERE case_id = 'r'",
                [],
            )
            .unwrap();
        reject_deliveries(&outbox.conn, "r").unwrap();
        assert_eq!(release_case(&outbox.conn, "n").unwrap(), 1);
        for target in ["town", "xujing"] {
            let due = outbox.due(target, 10).unwrap();
            assert_eq!(due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["c"]);
        }
        let c = outbox.counts().unwrap();
        assert_eq!(
            (c.pending, c.rejected, c.unrouted, c.awaiting_review),
            (1, 1, 1, 0)
        );
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    /// A compact case JSON like `serde_json::to_string(&Case)` writes: the snapshot and the crop
    /// inline, each as base64.
    fn case_json(snapshot: &[u8], crop: &[u8]) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        format!(
            r#"{{"schema":"gridwatch.case.v1","camera":{{"id":"cam-1","name":"东门"}},"snapshot":{{"content_type":"image/jpeg","width":4,"height":2,"data_base64":"{}"}},"crop":{{"content_type":"image/jpeg","width":1,"height":1,"data_base64":"{}"}}}}"#,
            b64(snapshot),
            b64(crop)
        )
    }

    fn stored_body(outbox: &Outbox, id: &str) -> (String, Option<i64>) {
        outbox
            .conn
            .query_row(
                "SELECT body, snapshot_at FROM cases WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// The snapshot is stored once (the blob), yet what delivery sends is, byte for byte, the
    /// JSON that was stored; the same after a reviewer's rewrite of the body.
    #[test]
    fn the_snapshot_is_stored_once_and_the_json_goes_out_byte_for_byte() {
        let path = temp_path("snapshot-once");
        let mut outbox = Outbox::open(&path).unwrap();
        let jpeg: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let crop = b"crop-bytes".to_vec();
        let body = case_json(&jpeg, &crop);
        for (id, crop) in [("a", &crop[..]), ("same", &jpeg[..])] {
            let body = case_json(&jpeg, crop);
            outbox
                .store(&NewCase {
                    id,
                    scenario: "s",
                    camera: "cam-1",
                    body: &body,
                    snapshot: &jpeg,
                    state: InitialState::Pending,
                    clean_frame: None,
                    targets: &[PRIMARY_TARGET_ID.to_owned()],
                })
                .unwrap();
            let (stored, at) = stored_body(&outbox, id);
            let b64_len = base64::engine::general_purpose::STANDARD
                .encode(&jpeg)
                .len();
            assert_eq!(stored.len(), body.len() - b64_len, "one copy: the blob");
            assert!(at.is_some());
            // Still JSON the console can read fields from.
            let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
            assert_eq!(v["camera"]["name"], "东门");
            assert_eq!(v["snapshot"]["data_base64"], "");
            assert_eq!(case_body(&outbox.conn, id).unwrap().unwrap(), body);
        }
        let due = outbox.due(PRIMARY_TARGET_ID, 10).unwrap();
        assert_eq!(due.len(), 2);
        let sent = due.iter().find(|d| d.id == "a").unwrap();
        assert_eq!(sent.body, body, "byte for byte");

        // A body rewritten (the console's scenario correction) keeps one copy too.
        let rewritten = body.replace("东门", "西门");
        set_case_body(&outbox.conn, "a", &rewritten, "s2").unwrap();
        assert_eq!(outbox.case_body("a").unwrap().unwrap(), rewritten);
        assert!(stored_body(&outbox, "a").0.len() < rewritten.len());

        // JSON without the snapshot inline (older cases, tests) is stored whole.
        outbox
            .insert("plain", "s", "c", r#"{"n":1}"#, &jpeg)
            .unwrap();
        assert_eq!(
            stored_body(&outbox, "plain"),
            (r#"{"n":1}"#.to_owned(), None)
        );
        assert_eq!(outbox.case_body("plain").unwrap().unwrap(), r#"{"n":1}"#);
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    fn backdate(outbox: &Outbox, id: &str, days: i64) {
        let t = time::OffsetDateTime::now_utc() - time::Duration::days(days);
        outbox
            .conn
            .execute(
                "UPDATE cases SET created_at = ?2 WHERE id = ?1",
                params![
                    id,
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                ],
            )
            .unwrap();
    }

    /// Finished cases past the retention go with everything stored for them; unfinished ones
    /// (pending, held, dead, unrouted, delivered to one target of two) stay however old.
    #[test]
    fn the_retention_purge_deletes_only_finished_cases_past_it() {
        let path = temp_path("purge");
        let mut outbox = Outbox::open(&path).unwrap();
        // Review tables as the console uses them.
        let both = ["town".to_owned(), "xujing".to_owned()];
        let store = |o: &mut Outbox, id: &str, state, targets: &[String]| {
            o.store(&NewCase {
                id,
                scenario: "s",
                camera: "c",
                body: "{}",
                snapshot: b"jpeg",
                state,
                clean_frame: Some(b"clean"),
                targets,
            })
            .unwrap()
        };
        for id in ["delivered", "half", "dead", "pending", "new_delivered"] {
            store(&mut outbox, id, InitialState::Pending, &both);
        }
        store(&mut outbox, "unrouted", InitialState::Pending, &[]);
        for id in ["held", "rejected"] {
            store(&mut outbox, id, InitialState::AwaitingReview, &both);
        }
        for t in &both {
            outbox.mark_delivered("delivered", t).unwrap();
            outbox.mark_delivered("new_delivered", t).unwrap();
        }
        outbox.mark_delivered("half", "town").unwrap();
        outbox.mark_delivered("dead", "town").unwrap();
        outbox.mark_dead("dead", "xujing", "HTTP 422").unwrap();
        outbox
            .conn
            .execute_batch(
                "UPDATE outbox SET state = 'rejected' WHERE case_id = 'rejected';
                 UPDATE deliveries SET state = 'rejected' WHERE case_id = 'rejected';
                 INSERT INTO review_decisions (case_id, decision, reviewer, decided_at) VALUES ('rejected', 'rejected', 'li', 't');
                 INSERT INTO review_audit (at, user, action, case_id) VALUES ('t', 'li', 'reject', 'rejected');",
            )
            .unwrap();
        for id in [
            "delivered",
            "half",
            "dead",
            "pending",
            "unrouted",
            "held",
            "rejected",
        ] {
            backdate(&outbox, id, 40);
        }
        backdate(&outbox, "new_delivered", 10);
        let retention = Duration::from_secs(30 * 86_400);
        assert_eq!(
            outbox
                .purge_expired(SystemTime::now(), retention, 1)
                .unwrap(),
            1,
            "a batch at most"
        );
        assert_eq!(
            outbox
                .purge_expired(SystemTime::now(), retention, 100)
                .unwrap(),
            1
        );
        assert_eq!(
            outbox
                .purge_expired(SystemTime::now(), retention, 100)
                .unwrap(),
            0
        );
        let ids = |sql: &str| -> Vec<String> {
            outbox
                .conn
                .prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let kept = [
            "dead",
            "half",
            "held",
            "new_delivered",
            "pending",
            "unrouted",
        ];
        assert_eq!(ids("SELECT id FROM cases ORDER BY id"), kept);
        assert_eq!(ids("SELECT case_id FROM outbox ORDER BY case_id"), kept);
        assert_eq!(
            ids("SELECT DISTINCT case_id FROM deliveries ORDER BY case_id"),
            ["dead", "half", "held", "new_delivered", "pending"]
        );
        assert_eq!(
            ids("SELECT case_id FROM review_frames ORDER BY case_id"),
            kept
        );
        assert!(ids("SELECT case_id FROM review_decisions").is_empty());
        assert_eq!(
            ids("SELECT case_id FROM review_audit"),
            ["rejected"],
            "the audit log keeps its entries"
        );
        // The roll-up is untouched for what stays.
        let c = outbox.counts().unwrap();
        assert_eq!(
            (
                c.delivered,
                c.pending,
                c.dead,
                c.awaiting_review,
                c.unrouted
            ),
            (1, 2, 1, 1, 1)
        );
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_purger_without_retention_deletes_nothing() {
        let path = temp_path("purger");
        let mut outbox = Outbox::open(&path).unwrap();
        outbox.insert("old", "s", "c", "{}", b"x").unwrap();
        outbox.mark_delivered("old", PRIMARY_TARGET_ID).unwrap();
        backdate(&outbox, "old", 400);
        Purger::new(0).tick(&mut outbox);
        assert_eq!(
            outbox.counts().unwrap().delivered,
            1,
            "0 days: kept forever"
        );
        let mut purger = Purger::new(365);
        purger.tick(&mut outbox);
        assert_eq!(outbox.counts().unwrap().delivered, 0);
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }

    /// The gauges agree with the full statistics, and neither they nor delivery's and the
    /// purge's queries scan a table: each is a search through an index (`EXPLAIN QUERY PLAN`).
    #[test]
    fn the_gauges_agree_with_the_stats_and_the_hot_queries_use_indexes() {
        let path = temp_path("gauges");
        let mut outbox = Outbox::open(&path).unwrap();
        let both = ["town".to_owned(), "xujing".to_owned()];
        for id in ["a", "b", "c"] {
            outbox
                .store(&NewCase {
                    id,
                    scenario: "s",
                    camera: "c",
                    body: "{}",
                    snapshot: b"x",
                    state: InitialState::Pending,
                    clean_frame: None,
                    targets: &both,
                })
                .unwrap();
        }
        outbox.mark_delivered("a", "town").unwrap();
        outbox.mark_dead("b", "town", "HTTP 422").unwrap();
        outbox
            .mark_retry("c", "xujing", 60_000, "HTTP 503")
            .unwrap();
        let stats = outbox.target_stats(None).unwrap();
        for t in &both {
            let g = outbox.target_gauges(t).unwrap();
            assert_eq!(
                (g.pending, g.dead_letters),
                (stats[t].pending, stats[t].dead_letters)
            );
            assert!(g.oldest_pending_age_seconds.is_some());
        }
        assert_eq!(
            (
                stats["town"].pending,
                stats["town"].delivered,
                stats["town"].dead_letters
            ),
            (1, 1, 1)
        );
        assert_eq!((stats["xujing"].pending, stats["xujing"].retries), (3, 1));
        assert_eq!(stats["xujing"].last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(outbox.target_stats(Some("town")).unwrap().len(), 1);

        let plan = |sql: &str| -> String {
            let mut stmt = outbox
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.join(" | ")
        };
        for (what, sql) in [
            ("gauge count", "SELECT COUNT(*) FROM deliveries WHERE target = 'x' AND state = 'pending'"),
            (
                "gauge oldest",
                "SELECT MIN(c.created_at) FROM deliveries d JOIN cases c ON c.id = d.case_id
                 WHERE d.target = 'x' AND d.state = 'pending'",
            ),
            (
                "due",
                "SELECT c.id FROM deliveries d JOIN cases c ON c.id = d.case_id
                 WHERE d.target = 'x' AND d.state = 'pending' AND d.next_attempt_at_ms <= 0
                 ORDER BY d.next_attempt_at_ms, c.id LIMIT 5",
            ),
            (
                "last error",
                "SELECT last_error FROM deliveries WHERE state = 'pending' AND last_error IS NOT NULL
                 ORDER BY next_attempt_at_ms DESC LIMIT 1",
            ),
            (
                "purge",
                "SELECT c.id FROM cases c CROSS JOIN outbox o ON o.case_id = c.id
                 WHERE c.created_at < 'x' AND o.state IN ('delivered', 'rejected')
                   AND NOT EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.case_id = c.id AND d.state IN ('pending', 'held', 'dead'))
                 LIMIT 5",
            ),
        ] {
            let p = plan(sql);
            assert!(!p.contains("SCAN"), "{what}: {p}");
        }
        assert!(plan("SELECT c.id FROM cases c CROSS JOIN outbox o ON o.case_id = c.id WHERE c.created_at < 'x'").contains("cases_created"));
        // The statistics count every delivery, but in the index only.
        let stats = plan(
            "SELECT target, state, COUNT(*), SUM(attempts) FROM deliveries GROUP BY target, state",
        );
        assert!(stats.contains("COVERING INDEX deliveries_due"), "{stats}");
        drop(outbox);
        let _ = std::fs::remove_file(&path);
    }
}
