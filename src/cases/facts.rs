//! One row of facts per case for statistics and reports (`stats`): when it was found, where
//! (unit, camera group, camera), what (scenario, department, handling level) and whether staff
//! reported it by hand. The row is written in the transaction that stores the case and follows
//! a reviewer's change of scenario; the retention purge deletes a case's evidence but keeps its
//! facts, freezing what happened to it (review, dispatch, the 103060 clock, reopening) into the
//! row first, so a month's report still counts cases whose pictures are gone.

use rusqlite::{Connection, params};

macro_rules! fact_columns {
    () => {
        "case_id, detected_ms, unit, unit_name, grp, grp_name, department, scenario, scenario_name,
         camera, camera_name, level, manual"
    };
}

/// The facts of `cases` rows, read from the stored case JSON (invalid or old JSON gives empty
/// names rather than failing the migration: such a case is still counted, by its columns).
macro_rules! facts_select {
    () => {
        "SELECT id,
            COALESCE(CAST(unixepoch(json_extract(j, '$.confirmed_at'), 'subsec') * 1000 AS INTEGER),
                     CAST(unixepoch(created_at, 'subsec') * 1000 AS INTEGER), 0),
            COALESCE(json_extract(j, '$.unit.id'), ''),
            COALESCE(json_extract(j, '$.unit.name'), ''),
            COALESCE(json_extract(j, '$.group.id'), ''),
            COALESCE(json_extract(j, '$.group.name'), ''),
            COALESCE(json_extract(j, '$.department'), ''),
            COALESCE(json_extract(j, '$.scenario.id'), scenario),
            COALESCE(json_extract(j, '$.scenario.name_zh'), scenario),
            COALESCE(json_extract(j, '$.camera.id'), camera),
            COALESCE(json_extract(j, '$.camera.name'), camera),
            COALESCE(json_extract(j, '$.handling_level'), ''),
            json_type(j, '$.reported_by') IS NOT NULL
         FROM (SELECT id, created_at, scenario, camera,
                      CASE WHEN json_valid(body) THEN body ELSE '{}' END AS j FROM cases)"
    };
}

/// Migration step 10 (see `outbox::MIGRATIONS`): the table, its index by time, and the facts
/// of every case already stored.
pub const SCHEMA: &str = concat!(
    "
CREATE TABLE case_facts (
    case_id TEXT PRIMARY KEY,
    detected_ms INTEGER NOT NULL,
    unit TEXT NOT NULL,
    unit_name TEXT NOT NULL,
    grp TEXT NOT NULL,
    grp_name TEXT NOT NULL,
    department TEXT NOT NULL,
    scenario TEXT NOT NULL,
    scenario_name TEXT NOT NULL,
    camera TEXT NOT NULL,
    camera_name TEXT NOT NULL,
    level TEXT NOT NULL,
    manual INTEGER NOT NULL,
    -- Frozen by the retention purge (NULL while the case's own rows exist).
    purged_at_ms INTEGER,
    review TEXT,
    dispatched_ms INTEGER,
    clock_level TEXT,
    clock_start_ms INTEGER,
    handled_ms INTEGER,
    self_resolved_ms INTEGER,
    reopened INTEGER
);
CREATE INDEX case_facts_detected ON case_facts(detected_ms);
INSERT INTO case_facts (",
    fact_columns!(),
    ") ",
    facts_select!(),
    ";"
);

/// Writes (or rewrites, after a change of scenario) the facts of case `id` from its stored JSON.
pub(super) fn record(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(concat!(
        "INSERT OR REPLACE INTO case_facts (",
        fact_columns!(),
        ") SELECT * FROM (",
        facts_select!(),
        ") WHERE id = ?1"
    ))?
    .execute(params![id])?;
    Ok(())
}

/// Before the purge deletes case `id`: what happened to it, into its facts row. (`+state`:
/// by the case's own rows, not a scan of the state index.)
pub(super) fn freeze(tx: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE case_facts SET
            purged_at_ms = ?2,
            review = (SELECT decision FROM review_decisions WHERE case_id = ?1),
            dispatched_ms = (SELECT MIN(delivered_at_ms) FROM deliveries
                             WHERE case_id = ?1 AND +state = 'delivered'),
            clock_level = (SELECT level FROM case_clocks WHERE case_id = ?1),
            clock_start_ms = (SELECT start_ms FROM case_clocks WHERE case_id = ?1),
            handled_ms = (SELECT handled_at_ms FROM case_clocks WHERE case_id = ?1),
            self_resolved_ms = (SELECT self_resolved_at_ms FROM case_clocks WHERE case_id = ?1),
            reopened = EXISTS (SELECT 1 FROM verifications WHERE case_id = ?1 AND +state = 'failed')
         WHERE case_id = ?1",
    )?
    .execute(params![id, now_ms])?;
    Ok(())
}

/// Migration step 11: the cameras' health sampled by the supervisor, for uptime, stalls and
/// reconnects over a report's period. `reconnects` and `stalls` are the camera's counters since
/// the process started (a restart starts them again).
pub const CAMERA_SAMPLES: &str = "
CREATE TABLE camera_samples (
    at_ms INTEGER NOT NULL,
    camera TEXT NOT NULL,
    state TEXT NOT NULL,
    reconnects INTEGER NOT NULL,
    stalls INTEGER NOT NULL,
    PRIMARY KEY (at_ms, camera)
);
";

/// One camera's health at a moment.
#[derive(Debug, Clone)]
pub struct CameraSample<'a> {
    pub camera: &'a str,
    /// The ingest state machine's state (`streaming`, `stalled`, `inactive`, …).
    pub state: &'a str,
    pub reconnects: u64,
    pub stalls: u64,
}

impl super::outbox::Outbox {
    /// Stores the cameras' health at `at_ms`, in one transaction.
    pub fn record_camera_samples(
        &mut self,
        at_ms: i64,
        samples: &[CameraSample<'_>],
    ) -> Result<(), super::outbox::OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO camera_samples (at_ms, camera, state, reconnects, stalls)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in samples {
                insert.execute(params![
                    at_ms,
                    s.camera,
                    s.state,
                    s.reconnects as i64,
                    s.stalls as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes camera samples taken before `before_ms` (the retention); returns how many.
    pub fn purge_camera_samples(
        &mut self,
        before_ms: i64,
    ) -> Result<usize, super::outbox::OutboxError> {
        Ok(self.conn.execute(
            "DELETE FROM camera_samples WHERE at_ms < ?1",
            params![before_ms],
        )?)
    }
}
