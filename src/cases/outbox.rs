//! The SQLite outbox: a case and its delivery row are written in one transaction before any
//! delivery attempt, so a case that was decided is never lost by a crash or an outage. Also the
//! queries behind the outbox's visible state (depth, oldest age, retries, dead letters) and the
//! dead-letter operations of `gridwatch outbox`.
//!
//! States: `pending` → `delivered` | `dead`; with the review console, a case may start as
//! `awaiting_review` (delivery never picks it) and a reviewer moves it to `pending` or
//! `rejected`. Databases from before the review states are migrated on open.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
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
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxStats {
    /// Cases not delivered yet (the outbox depth).
    pub pending: u64,
    pub delivered: u64,
    pub dead_letters: u64,
    /// Age of the oldest undelivered case, from when it was stored.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Failed attempts so far, over every case still in the outbox.
    pub retries: u64,
    /// The most recent error of a pending case, if any.
    pub last_error: Option<String>,
    /// Cases held for the review console (not part of the depth: delivery does not take them).
    #[serde(default)]
    pub awaiting_review: u64,
    /// Cases rejected by a reviewer.
    #[serde(default)]
    pub rejected: u64,
}

/// One outbox row, as `gridwatch outbox list` shows it.
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
}

/// Which rows a dead-letter operation touches.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<String>),
}

/// A case waiting for delivery.
#[derive(Debug, Clone)]
pub struct PendingCase {
    pub id: String,
    pub body: String,
    pub attempts: u32,
}

/// Delivery counts for reports and the exit summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Held for a reviewer (never delivered until confirmed).
    pub awaiting_review: u64,
    /// Rejected by a reviewer (false positives; never delivered).
    pub rejected: u64,
}

/// The state a new case starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// Delivered as soon as possible (automatic discovery).
    Pending,
    /// Held in the review queue until a reviewer confirms or rejects it.
    AwaitingReview,
}

pub struct Outbox {
    conn: Connection,
}

const SCHEMA: &str = "
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
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'awaiting_review', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS review_frames (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    jpeg BLOB NOT NULL
);
";

/// Rebuilds an `outbox` table created before the review states existed: SQLite cannot alter a
/// CHECK constraint, so the table is copied into one with the new constraint, in one transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match sql {
        Some(sql) if !sql.contains("awaiting_review") => {
            let tx = conn.transaction()?;
            tx.execute_batch(
                "ALTER TABLE outbox RENAME TO outbox_before_review;
                 DROP INDEX IF EXISTS outbox_due;",
            )?;
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(
                "INSERT INTO outbox (case_id, state, attempts, next_attempt_ms, last_error, delivered_at)
                 SELECT case_id, state, attempts, next_attempt_ms, last_error, delivered_at FROM outbox_before_review;
                 DROP TABLE outbox_before_review;",
            )?;
            tx.commit()
        }
        _ => Ok(()),
    }
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

impl Outbox {
    /// Opens (creating if needed) the outbox; WAL with full sync so a committed case survives power loss.
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
        let mut conn = conn;
        migrate(&mut conn).map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self { conn })
    }

    /// Stores a case and queues it for delivery, atomically.
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

    /// Stores a case in `state`, atomically; `clean_frame` is the unannotated frame a reviewed
    /// case keeps for the training-data export.
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
        let state = match state {
            InitialState::Pending => "pending",
            InitialState::AwaitingReview => "awaiting_review",
        };
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, now_rfc3339(), scenario, camera, body, snapshot],
        )?;
        tx.execute(
            "INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES (?1, ?2, ?3)",
            params![id, state, now_ms()],
        )?;
        if let Some(jpeg) = clean_frame {
            tx.execute(
                "INSERT INTO review_frames (case_id, jpeg) VALUES (?1, ?2)",
                params![id, jpeg],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Held cases no reviewer handled since before `held_before_ms` (Unix ms) go out unreviewed:
    /// a held case must never wait forever (no reviewer on shift, the console switched off).
    /// Returns their ids; each is recorded in the review audit log when there is one.
    pub fn release_held(&mut self, held_before_ms: i64) -> Result<Vec<String>, OutboxError> {
        let tx = self.conn.transaction()?;
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
        let audited: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'review_audit')",
            [],
            |r| r.get(0),
        )?;
        for id in &ids {
            tx.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_ms = ?2 WHERE case_id = ?1 AND state = 'awaiting_review'",
                params![id, now_ms()],
            )?;
            if audited {
                tx.execute(
                    "INSERT INTO review_audit (at, user, action, case_id, detail) VALUES (?1, 'gridwatch', 'released_unreviewed', ?2, 'review timeout')",
                    params![now_rfc3339(), id],
                )?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Pending cases whose next attempt is due, oldest first.
    pub fn due(&self, limit: usize) -> Result<Vec<PendingCase>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.body, o.attempts FROM outbox o JOIN cases c ON c.id = o.case_id
             WHERE o.state = 'pending' AND o.next_attempt_ms <= ?1 ORDER BY o.next_attempt_ms, c.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms(), limit as i64], |r| {
            Ok(PendingCase {
                id: r.get(0)?,
                body: r.get(1)?,
                attempts: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Milliseconds until the earliest pending case is due (0 if one is due now).
    pub fn next_due_in_ms(&self) -> Result<Option<i64>, OutboxError> {
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(next_attempt_ms) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(next.map(|n| (n - now_ms()).max(0)))
    }

    pub fn mark_delivered(&self, id: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL WHERE case_id = ?1",
            params![id, now_rfc3339()],
        )?;
        Ok(())
    }

    pub fn mark_retry(&self, id: &str, delay_ms: i64, error: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE case_id = ?1",
            params![id, now_ms() + delay_ms, error],
        )?;
        Ok(())
    }

    pub fn mark_dead(&self, id: &str, error: &str) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2 WHERE case_id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// Depth, oldest undelivered age, retries and dead letters.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let c = self.counts()?;
        let (oldest, retries): (Option<String>, i64) = self.conn.query_row(
            "SELECT (SELECT c.created_at FROM outbox o JOIN cases c ON c.id = o.case_id
                     WHERE o.state = 'pending' ORDER BY c.created_at LIMIT 1),
                    COALESCE(SUM(CASE WHEN state = 'pending' THEN attempts ELSE MAX(attempts - 1, 0) END), 0)
             FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last_error: Option<String> = self
            .conn
            .query_row(
                "SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL
                 ORDER BY next_attempt_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let now = time::OffsetDateTime::now_utc();
        let oldest_pending_age_seconds = oldest
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| (now - t).as_seconds_f64().max(0.0));
        Ok(OutboxStats {
            pending: c.pending,
            delivered: c.delivered,
            dead_letters: c.dead,
            oldest_pending_age_seconds,
            retries: retries.max(0) as u64,
            last_error,
            awaiting_review: c.awaiting_review,
            rejected: c.rejected,
        })
    }

    /// Rows in `state` (`None`: every state), oldest first.
    pub fn list(&self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.id, o.state, c.created_at, c.scenario, c.camera, o.attempts, o.last_error, o.delivered_at
             FROM outbox o JOIN cases c ON c.id = o.case_id
             WHERE ?1 IS NULL OR o.state = ?1 ORDER BY c.created_at, c.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![state, limit as i64], |r| {
            Ok(OutboxEntry {
                id: r.get(0)?,
                state: r.get(1)?,
                created_at: r.get(2)?,
                scenario: r.get(3)?,
                camera: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                delivered_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts dead letters back in the queue, due now, with a fresh backoff; returns how many.
    pub fn retry_dead(&mut self, which: &Selection) -> Result<usize, OutboxError> {
        self.for_dead(which, |tx, id| {
            tx.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2
                 WHERE case_id = ?1 AND state = 'dead'",
                params![id, now_ms()],
            )
        })
    }

    /// Deletes dead letters (the case and its row); returns how many.
    pub fn purge_dead(&mut self, which: &Selection) -> Result<usize, OutboxError> {
        self.for_dead(which, |tx, id| {
            let n = tx.execute(
                "DELETE FROM outbox WHERE case_id = ?1 AND state = 'dead'",
                params![id],
            )?;
            if n > 0 {
                tx.execute("DELETE FROM cases WHERE id = ?1", params![id])?;
            }
            Ok(n)
        })
    }

    /// Applies `f` to each selected dead letter in one transaction: all or nothing.
    fn for_dead(
        &mut self,
        which: &Selection,
        f: impl Fn(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<usize>,
    ) -> Result<usize, OutboxError> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = match which {
            Selection::All => {
                let mut stmt = tx.prepare("SELECT case_id FROM outbox WHERE state = 'dead'")?;
                stmt.query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            }
            Selection::Ids(ids) => ids.clone(),
        };
        let mut n = 0;
        for id in &ids {
            n += f(&tx, id)?;
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
            match state.as_str() {
                "pending" => c.pending = n as u64,
                "delivered" => c.delivered = n as u64,
                "awaiting_review" => c.awaiting_review = n as u64,
                "rejected" => c.rejected = n as u64,
                _ => c.dead = n as u64,
            }
        }
        Ok(c)
    }
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
        assert!(outbox.due(10).unwrap().is_empty(), "held cases are not due");
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
        assert!(outbox.due(10).unwrap().iter().any(|p| p.id == "h1"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn dead_letters_can_be_listed_retried_and_purged() {
        let path = temp_path("dead");
        let mut outbox = Outbox::open(&path).unwrap();
        for id in ["a", "b", "c"] {
            outbox.insert(id, "s", "cam", "{}", b"x").unwrap();
        }
        outbox.mark_dead("a", "HTTP 422: nope").unwrap();
        outbox.mark_dead("b", "HTTP 400: bad").unwrap();
        outbox.mark_retry("c", 60_000, "HTTP 503").unwrap();
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
                .due(10)
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
}
