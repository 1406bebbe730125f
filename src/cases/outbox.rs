//! The SQLite outbox: a case and its delivery row are written in one transaction before any
//! delivery attempt, so a case that was decided is never lost by a crash or an outage.

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
    #[error("outbox: {0}")]
    Sql(#[from] rusqlite::Error),
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
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
";

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
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, now_rfc3339(), scenario, camera, body, snapshot],
        )?;
        tx.execute(
            "INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES (?1, 'pending', ?2)",
            params![id, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
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
                _ => c.dead = n as u64,
            }
        }
        Ok(c)
    }
}
