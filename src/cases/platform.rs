//! A case's life after delivery, stored with it in the outbox database: the statuses the
//! platform reports back (each event once per target, whichever way it came), the camera's
//! verification rounds (视频核查), the 103060 clock (level, the moment it starts, reminder and
//! escalation sent), and the updates owed to the platform (verified, reopened, self-resolved,
//! reminder, escalated, level changed). Updates are an outbox of their own with the cases'
//! guarantees: one row per (case, target, kind, round), so a decision taken twice (a restart, a
//! repeated status) is sent once; its id is the idempotency key; it is due only once its case
//! reached that target.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{Outbox, OutboxError, PendingCase};
use super::settings::{ClockStart, DeadlineSettings};
use gridwatch_case::HandlingLevel;
use gridwatch_case::platform::{
    CaseUpdate, PlatformStatus, StatusEvent, UPDATE_SCHEMA, UpdateKind,
};

pub use gridwatch_case::platform::Station;

/// Migration step 8 (see `outbox::MIGRATIONS`).
pub const SCHEMA: &str = "
CREATE TABLE platform_statuses (
    target TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    note TEXT,
    via TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, event_id)
);
CREATE INDEX platform_statuses_case ON platform_statuses(case_id, at_ms);
CREATE TABLE platform_cursors (
    target TEXT PRIMARY KEY,
    after INTEGER NOT NULL
);
CREATE TABLE case_clocks (
    case_id TEXT PRIMARY KEY,
    level TEXT NOT NULL,
    counted_from TEXT NOT NULL,
    start_ms INTEGER,
    handled_at_ms INTEGER,
    self_resolved_at_ms INTEGER,
    reminded_at_ms INTEGER,
    escalated_at_ms INTEGER,
    -- Level changes so far: the round of the reminder and escalation under the current level.
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX case_clocks_open ON case_clocks(escalated_at_ms, handled_at_ms);
CREATE TABLE verifications (
    case_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    camera TEXT NOT NULL,
    zone TEXT NOT NULL,
    scenario TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('checking', 'passed', 'failed')),
    requested_at_ms INTEGER NOT NULL,
    decided_at_ms INTEGER,
    PRIMARY KEY (case_id, round)
);
CREATE INDEX verifications_state ON verifications(state);
CREATE TABLE case_updates (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    round INTEGER NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    UNIQUE (case_id, target, kind, round)
);
CREATE INDEX case_updates_due ON case_updates(target, state, next_attempt_at_ms);
CREATE INDEX case_updates_case ON case_updates(case_id);
";

/// Tables of a case's platform life, deleted with it by the retention purge.
pub const CASE_TABLES: &[&str] = &[
    "DELETE FROM platform_statuses WHERE case_id = ?1",
    "DELETE FROM case_clocks WHERE case_id = ?1",
    "DELETE FROM verifications WHERE case_id = ?1",
    "DELETE FROM case_updates WHERE case_id = ?1",
];

/// A camera re-check the platform asked for (the shared type of `recheck`).
pub use crate::recheck::Request as RecheckRequest;

/// What an update says besides its kind.
#[derive(Debug, Clone, Default)]
pub struct UpdateFacts {
    pub note: Option<String>,
    pub level: Option<HandlingLevel>,
    pub deadline_ms: Option<i64>,
    pub station: Option<Station>,
    /// JPEG, width, height.
    pub snapshot: Option<(Vec<u8>, u32, u32)>,
}

/// The case's 103060 clock as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Clock {
    pub level: String,
    pub counted_from: String,
    pub start_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub handled_at_ms: Option<i64>,
    pub self_resolved_at_ms: Option<i64>,
    pub reminded_at_ms: Option<i64>,
    pub escalated_at_ms: Option<i64>,
}

/// One status as the console shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatusRow {
    pub target: String,
    pub status: String,
    pub status_zh: String,
    pub at_ms: i64,
    pub note: Option<String>,
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerificationRow {
    pub round: i64,
    pub state: String,
    pub requested_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UpdateRow {
    pub id: String,
    pub target: String,
    pub kind: String,
    pub kind_zh: String,
    pub state: String,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// Everything the console shows of a case's platform life.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PlatformView {
    pub statuses: Vec<StatusRow>,
    pub verifications: Vec<VerificationRow>,
    pub clock: Option<Clock>,
    pub updates: Vec<UpdateRow>,
}

/// The latest status and verification of a case, for lists.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlatformSummary {
    pub status: Option<String>,
    pub status_zh: Option<String>,
    pub verification: Option<String>,
    pub level: Option<String>,
    pub deadline_ms: Option<i64>,
    pub escalated: bool,
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn datetime_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Starts a new case's clock (in the case's own transaction): at detection, or (counted from
/// review) at detection when nobody will review it; otherwise when that moment comes.
pub fn start_clock(
    tx: &Transaction<'_>,
    case_id: &str,
    level: HandlingLevel,
    from: ClockStart,
    detected_ms: i64,
    held: bool,
) -> rusqlite::Result<()> {
    let start = match from {
        ClockStart::Detection => Some(detected_ms),
        ClockStart::Review if !held => Some(detected_ms),
        _ => None,
    };
    tx.execute(
        "INSERT OR IGNORE INTO case_clocks (case_id, level, counted_from, start_ms) VALUES (?1, ?2, ?3, ?4)",
        params![case_id, level.as_str(), from.as_str(), start],
    )?;
    Ok(())
}

/// The moment `from` happened for a case (review decided, first delivery): its clock starts
/// if it counts from that moment and has not started.
pub fn clock_moment(
    conn: &rusqlite::Connection,
    case_id: &str,
    from: ClockStart,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE case_clocks SET start_ms = ?3 WHERE case_id = ?1 AND counted_from = ?2 AND start_ms IS NULL",
    )?
    .execute(params![case_id, from.as_str(), now_ms()])?;
    Ok(())
}

/// Queues `kind` (round `round`) for every target the case goes to that takes updates (its
/// platform reports status back: `accepting`), once per target.
fn enqueue(
    tx: &Transaction<'_>,
    case_id: &str,
    (kind, round): (UpdateKind, i64),
    facts: &UpdateFacts,
    accepting: &[String],
) -> Result<usize, OutboxError> {
    let Ok(case_uuid) = Uuid::parse_str(case_id) else {
        return Ok(0);
    };
    let targets: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT target FROM deliveries WHERE case_id = ?1 AND state IN ('held', 'pending', 'delivered') ORDER BY target",
        )?;
        stmt.query_map(params![case_id], |r| r.get::<_, String>(0))?
            .filter(|t| t.as_ref().map_or(true, |t| accepting.contains(t)))
            .collect::<Result<_, _>>()?
    };
    let now = now_ms();
    let mut queued = 0;
    for target in targets {
        let id = Uuid::now_v7();
        let update = CaseUpdate {
            schema: UPDATE_SCHEMA.into(),
            id,
            case_id: case_uuid,
            kind,
            kind_zh: kind.name_zh().into(),
            at: datetime_ms(now),
            note: facts.note.clone(),
            handling_level: facts.level,
            deadline_at: facts.deadline_ms.map(datetime_ms),
            station: facts.station.clone(),
            snapshot: facts
                .snapshot
                .as_ref()
                .map(|(jpeg, w, h)| gridwatch_case::CaseSnapshot::inline_jpeg(jpeg, *w, *h)),
        };
        let body = serde_json::to_string(&update)
            .map_err(|e| OutboxError::Invalid(format!("update JSON: {e}")))?;
        queued += tx.execute(
            "INSERT OR IGNORE INTO case_updates (id, case_id, target, kind, round, body, state, next_attempt_at_ms, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
            params![id.to_string(), case_id, target, kind.as_str(), round, body, now],
        )?;
    }
    Ok(queued)
}

impl Outbox {
    /// Records status events of `target` (oldest first), each once; a `handling` event opens a
    /// verification round when `verify`. A poll also moves the target's cursor to `cursor`
    /// (the last event id read, kept or skipped). Returns the re-checks to start.
    pub fn record_statuses(
        &mut self,
        target: &str,
        events: &[StatusEvent],
        (via, cursor): (&str, Option<i64>),
        verify: bool,
    ) -> Result<Vec<RecheckRequest>, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rechecks = Vec::new();
        for ev in events {
            if let Some(r) = record_one(&tx, target, ev, via, verify)? {
                rechecks.push(r);
            }
        }
        if let Some(last) = cursor {
            tx.execute(
                "INSERT INTO platform_cursors (target, after) VALUES (?1, ?2)
                 ON CONFLICT(target) DO UPDATE SET after = MAX(after, excluded.after)",
                params![target, last],
            )?;
        }
        tx.commit()?;
        Ok(rechecks)
    }

    /// The last event id polled from `target`'s feed.
    pub fn status_cursor(&self, target: &str) -> Result<i64, OutboxError> {
        Ok(self
            .conn
            .query_row(
                "SELECT after FROM platform_cursors WHERE target = ?1",
                params![target],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Verification rounds still checking (at start: they survive a restart).
    pub fn open_verifications(&self) -> Result<Vec<RecheckRequest>, OutboxError> {
        let mut stmt = self.conn.prepare(
            "SELECT case_id, round, camera, zone, scenario, requested_at_ms FROM verifications WHERE state = 'checking'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RecheckRequest {
                case_id: r.get(0)?,
                round: r.get(1)?,
                camera: r.get(2)?,
                zone: r.get(3)?,
                scenario: r.get(4)?,
                requested_at_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Decides a verification round: passed → 核查通过, else reopened (核查不通过; the clock
    /// runs again). Once per round: a second decision of the same round changes nothing.
    pub fn finish_verification(
        &mut self,
        case_id: &str,
        round: i64,
        passed: bool,
        facts: &UpdateFacts,
        accepting: &[String],
    ) -> Result<bool, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = if passed { "passed" } else { "failed" };
        let changed = tx.execute(
            "UPDATE verifications SET state = ?3, decided_at_ms = ?4 WHERE case_id = ?1 AND round = ?2 AND state = 'checking'",
            params![case_id, round, state, now_ms()],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let kind = if passed {
            UpdateKind::Verified
        } else {
            tx.execute(
                "UPDATE case_clocks SET handled_at_ms = NULL WHERE case_id = ?1",
                params![case_id],
            )?;
            UpdateKind::Reopened
        };
        enqueue(&tx, case_id, (kind, round), facts, accepting)?;
        tx.commit()?;
        Ok(true)
    }

    /// The episode of `case_id` ended before anyone acted: tell the platform (自行消除), once.
    /// Nothing when the case was rejected, is held, or someone already acted on it.
    pub fn self_resolved(
        &mut self,
        case_id: &str,
        facts: &UpdateFacts,
        accepting: &[String],
    ) -> Result<bool, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let eligible: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE case_id = ?1 AND state IN ('pending', 'delivered'))
               AND NOT EXISTS (SELECT 1 FROM case_clocks WHERE case_id = ?1 AND handled_at_ms IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM verifications WHERE case_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM platform_statuses WHERE case_id = ?1
                               AND status IN ('handling', 'verified', 'closed', 'returned'))",
            params![case_id],
            |r| r.get(0),
        )?;
        if !eligible {
            return Ok(false);
        }
        tx.execute(
            "UPDATE case_clocks SET self_resolved_at_ms = ?2 WHERE case_id = ?1",
            params![case_id, now_ms()],
        )?;
        let queued = enqueue(
            &tx,
            case_id,
            (UpdateKind::SelfResolved, 0),
            facts,
            accepting,
        )?;
        tx.commit()?;
        Ok(queued > 0)
    }

    /// A reviewer set the case's handling level: its clock follows, the platform is told.
    pub fn set_level(
        &mut self,
        case_id: &str,
        level: HandlingLevel,
        deadlines: &DeadlineSettings,
        note: Option<String>,
        accepting: &[String],
    ) -> Result<bool, OutboxError> {
        set_level(&mut self.conn, case_id, (level, deadlines), note, accepting)
    }
}

/// [`Outbox::set_level`] on any connection to the outbox database (the console's); `false`
/// when the case has no clock or already has that level.
pub fn set_level(
    conn: &mut rusqlite::Connection,
    case_id: &str,
    (level, deadlines): (HandlingLevel, &DeadlineSettings),
    note: Option<String>,
    accepting: &[String],
) -> Result<bool, OutboxError> {
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE case_clocks SET level = ?2, reminded_at_ms = NULL, escalated_at_ms = NULL, generation = generation + 1
             WHERE case_id = ?1 AND level <> ?2",
            params![case_id, level.as_str()],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let start: Option<i64> = tx.query_row(
            "SELECT start_ms FROM case_clocks WHERE case_id = ?1",
            params![case_id],
            |r| r.get(0),
        )?;
        let round: i64 = tx.query_row(
            "SELECT COUNT(*) FROM case_updates WHERE case_id = ?1 AND kind = 'level_changed'",
            params![case_id],
            |r| r.get(0),
        )?;
        let facts = UpdateFacts {
            note,
            level: Some(level),
            deadline_ms: start.map(|s| s + deadlines.limit_ms(level)),
            ..UpdateFacts::default()
        };
        enqueue(
            &tx,
            case_id,
            (UpdateKind::LevelChanged, round),
            &facts,
            accepting,
        )?;
        tx.commit()?;
        Ok(true)
    }
}

impl Outbox {
    /// Reminders before and escalations at the 103060 deadline of cases nobody has handled,
    /// each once per case (per level). Returns (reminders, escalations) queued now.
    pub fn tick_deadlines(
        &mut self,
        deadlines: &DeadlineSettings,
        station: Option<&Station>,
        accepting: &[String],
    ) -> Result<(usize, usize), OutboxError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let open: Vec<(String, String, i64, Option<i64>, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT k.case_id, k.level, k.start_ms, k.reminded_at_ms, k.generation FROM case_clocks k
                 JOIN outbox o ON o.case_id = k.case_id
                 WHERE k.escalated_at_ms IS NULL AND k.handled_at_ms IS NULL
                   AND k.self_resolved_at_ms IS NULL AND k.start_ms IS NOT NULL
                   AND o.state IN ('pending', 'delivered', 'awaiting_review')",
            )?;
            stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let (mut reminders, mut escalations) = (0, 0);
        let remind_ms = (deadlines.remind_before_seconds * 1000.0) as i64;
        for (case_id, level, start, reminded, generation) in open {
            let level = HandlingLevel::parse(&level).unwrap_or(HandlingLevel::General);
            let deadline = start + deadlines.limit_ms(level);
            let facts = UpdateFacts {
                level: Some(level),
                deadline_ms: Some(deadline),
                ..UpdateFacts::default()
            };
            if now >= deadline && deadlines.escalate {
                let facts = UpdateFacts {
                    station: station.cloned(),
                    note: Some(format!("超过{}时限", level_zh(level))),
                    ..facts
                };
                escalations += enqueue(
                    &tx,
                    &case_id,
                    (UpdateKind::Escalated, generation),
                    &facts,
                    accepting,
                )?;
                tx.execute(
                    "UPDATE case_clocks SET escalated_at_ms = ?2 WHERE case_id = ?1",
                    params![case_id, now],
                )?;
            } else if remind_ms > 0 && reminded.is_none() && now >= deadline - remind_ms {
                reminders += enqueue(
                    &tx,
                    &case_id,
                    (UpdateKind::Reminder, generation),
                    &facts,
                    accepting,
                )?;
                tx.execute(
                    "UPDATE case_clocks SET reminded_at_ms = ?2 WHERE case_id = ?1",
                    params![case_id, now],
                )?;
            }
        }
        tx.commit()?;
        Ok((reminders, escalations))
    }

    /// Pending updates to `target` whose case reached it, due now, oldest first.
    pub fn due_updates(&self, target: &str, limit: usize) -> Result<Vec<PendingCase>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.id, u.body, u.attempts, u.case_id FROM case_updates u
             JOIN deliveries d ON d.case_id = u.case_id AND d.target = u.target
             WHERE u.target = ?1 AND u.state = 'pending' AND u.next_attempt_at_ms <= ?2 AND d.state = 'delivered'
             ORDER BY u.next_attempt_at_ms, u.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![target, now_ms(), limit as i64], |r| {
            Ok(PendingCase {
                id: r.get(0)?,
                body: r.get(1)?,
                attempts: r.get(2)?,
                update_of: Some(r.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Updates owed to `target` whose case reached it (the drain waits for these too).
    pub fn pending_updates_for(&self, target: &str) -> Result<u64, OutboxError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM case_updates u JOIN deliveries d ON d.case_id = u.case_id AND d.target = u.target
             WHERE u.target = ?1 AND u.state = 'pending' AND d.state = 'delivered'",
            params![target],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    pub fn mark_update(&self, id: &str, outcome: UpdateOutcome<'_>) -> Result<(), OutboxError> {
        let now = now_ms();
        match outcome {
            UpdateOutcome::Delivered => self.conn.execute(
                "UPDATE case_updates SET state = 'delivered', attempts = attempts + 1, delivered_at_ms = ?2, last_error = NULL WHERE id = ?1",
                params![id, now],
            )?,
            UpdateOutcome::Retry { delay_ms, error } => self.conn.execute(
                "UPDATE case_updates SET attempts = attempts + 1, next_attempt_at_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, now.saturating_add(delay_ms), error],
            )?,
            UpdateOutcome::Dead { error } => self.conn.execute(
                "UPDATE case_updates SET state = 'dead', attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?,
        };
        Ok(())
    }

    /// The case's platform life, for the console.
    pub fn platform_view(
        &self,
        case_id: &str,
        deadlines: &DeadlineSettings,
    ) -> Result<PlatformView, OutboxError> {
        platform_view(&self.conn, case_id, deadlines)
    }
}

/// How one update delivery went.
#[derive(Debug, Clone, Copy)]
pub enum UpdateOutcome<'a> {
    Delivered,
    Retry { delay_ms: i64, error: &'a str },
    Dead { error: &'a str },
}

fn level_zh(l: HandlingLevel) -> &'static str {
    match l {
        HandlingLevel::Simple => "简单问题10分钟",
        HandlingLevel::General => "一般问题30分钟",
        HandlingLevel::Difficult => "疑难问题60分钟",
    }
}

/// Stores one event unless stored before; a new `handling` opens a verification round.
fn record_one(
    tx: &Transaction<'_>,
    target: &str,
    ev: &StatusEvent,
    via: &str,
    verify: bool,
) -> Result<Option<RecheckRequest>, OutboxError> {
    let at_ms = (ev.at.unix_timestamp_nanos() / 1_000_000) as i64;
    // A platform's feed covers all its cases; only ours are kept (bounded with our cases).
    let ours: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM cases WHERE id = ?1)",
        params![ev.case_id],
        |r| r.get(0),
    )?;
    if !ours {
        return Ok(None);
    }
    let new = tx.execute(
        "INSERT OR IGNORE INTO platform_statuses (target, event_id, case_id, status, at_ms, note, via, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![target, ev.event_id, ev.case_id, ev.status.as_str(), at_ms, ev.note, via, now_ms()],
    )?;
    if new == 0 {
        return Ok(None);
    }
    crate::telemetry::platform_status(target, ev.status.as_str());
    // Handled while some target's latest status (by time, then event id) is handled: a late
    // or another target's 立案/派遣 does not restart the clock of a handled case.
    tx.execute(
        "UPDATE case_clocks SET handled_at_ms = (
             SELECT MIN(p.at_ms) FROM platform_statuses p
             WHERE p.case_id = ?1 AND p.status IN ('handling', 'verified', 'closed', 'returned')
               AND NOT EXISTS (SELECT 1 FROM platform_statuses q
                   WHERE q.case_id = p.case_id AND q.target = p.target
                     AND (q.at_ms > p.at_ms OR (q.at_ms = p.at_ms AND q.event_id > p.event_id))))
         WHERE case_id = ?1",
        params![ev.case_id],
    )?;
    if ev.status != PlatformStatus::Handling || !verify {
        return Ok(None);
    }
    open_round(tx, &ev.case_id)
}

/// A new verification round for the case's camera, zone and scenario, unless one is checking.
fn open_round(tx: &Transaction<'_>, case_id: &str) -> Result<Option<RecheckRequest>, OutboxError> {
    let checking: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM verifications WHERE case_id = ?1 AND state = 'checking')",
        params![case_id],
        |r| r.get(0),
    )?;
    if checking {
        return Ok(None);
    }
    let place: Option<(String, String, String)> = tx
        .query_row(
            "SELECT camera, json_extract(body, '$.zone.id'), scenario FROM cases WHERE id = ?1",
            params![case_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get(2)?,
                ))
            },
        )
        .optional()?;
    let Some((camera, zone, scenario)) = place else {
        return Ok(None);
    };
    let round: i64 = tx.query_row(
        "SELECT COALESCE(MAX(round), 0) + 1 FROM verifications WHERE case_id = ?1",
        params![case_id],
        |r| r.get(0),
    )?;
    let now = now_ms();
    tx.execute(
        "INSERT INTO verifications (case_id, round, camera, zone, scenario, state, requested_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'checking', ?6)",
        params![case_id, round, camera, zone, scenario, now],
    )?;
    Ok(Some(RecheckRequest {
        case_id: case_id.to_owned(),
        round,
        camera,
        zone,
        scenario,
        requested_at_ms: now,
    }))
}

/// The deadline of a clock started at `start` (Unix ms) for `level`, under `deadlines`.
fn deadline_ms(deadlines: &DeadlineSettings, level: &str, start: Option<i64>) -> Option<i64> {
    Some(start? + deadlines.limit_ms(HandlingLevel::parse(level)?))
}

/// The case's platform life, for the console (any connection to the outbox database).
pub fn platform_view(
    conn: &rusqlite::Connection,
    case_id: &str,
    deadlines: &DeadlineSettings,
) -> Result<PlatformView, OutboxError> {
    let mut view = PlatformView {
        statuses: statuses_of(conn, case_id)?,
        verifications: verifications_of(conn, case_id)?,
        clock: clock_of(conn, case_id)?,
        updates: updates_of(conn, case_id)?,
    };
    if let Some(c) = view.clock.as_mut() {
        c.deadline_ms = deadline_ms(deadlines, &c.level, c.start_ms);
    }
    Ok(view)
}

fn statuses_of(conn: &rusqlite::Connection, case_id: &str) -> Result<Vec<StatusRow>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT target, status, at_ms, note, via FROM platform_statuses WHERE case_id = ?1 ORDER BY at_ms, event_id",
    )?;
    let rows = stmt
        .query_map(params![case_id], |r| {
            let status: String = r.get(1)?;
            Ok(StatusRow {
                target: r.get(0)?,
                status_zh: PlatformStatus::parse(&status)
                    .map_or("", |s| s.name_zh())
                    .into(),
                status,
                at_ms: r.get(2)?,
                note: r.get(3)?,
                via: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn verifications_of(
    conn: &rusqlite::Connection,
    case_id: &str,
) -> Result<Vec<VerificationRow>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT round, state, requested_at_ms, decided_at_ms FROM verifications WHERE case_id = ?1 ORDER BY round",
    )?;
    let rows = stmt
        .query_map(params![case_id], |r| {
            Ok(VerificationRow {
                round: r.get(0)?,
                state: r.get(1)?,
                requested_at_ms: r.get(2)?,
                decided_at_ms: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn clock_of(conn: &rusqlite::Connection, case_id: &str) -> Result<Option<Clock>, OutboxError> {
    Ok(conn
        .prepare_cached(
            "SELECT level, counted_from, start_ms, handled_at_ms, self_resolved_at_ms, reminded_at_ms, escalated_at_ms FROM case_clocks WHERE case_id = ?1",
        )?
        .query_row(params![case_id], |r| {
            Ok(Clock {
                level: r.get(0)?,
                counted_from: r.get(1)?,
                start_ms: r.get(2)?,
                deadline_ms: None,
                handled_at_ms: r.get(3)?,
                self_resolved_at_ms: r.get(4)?,
                reminded_at_ms: r.get(5)?,
                escalated_at_ms: r.get(6)?,
            })
        })
        .optional()?)
}

fn updates_of(conn: &rusqlite::Connection, case_id: &str) -> Result<Vec<UpdateRow>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, target, kind, state, attempts, created_at_ms, delivered_at_ms FROM case_updates WHERE case_id = ?1 ORDER BY created_at_ms, id",
    )?;
    let rows = stmt
        .query_map(params![case_id], |r| {
            let kind: String = r.get(2)?;
            Ok(UpdateRow {
                id: r.get(0)?,
                target: r.get(1)?,
                kind_zh: UpdateKind::parse(&kind).map_or("", |k| k.name_zh()).into(),
                kind,
                state: r.get(3)?,
                attempts: r.get(4)?,
                created_at_ms: r.get(5)?,
                delivered_at_ms: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The latest status, verification state and clock of a case, for lists.
pub fn platform_summary(
    conn: &rusqlite::Connection,
    case_id: &str,
    deadlines: Option<&DeadlineSettings>,
) -> Result<PlatformSummary, OutboxError> {
    let status: Option<String> = conn
        .prepare_cached(
            "SELECT status FROM platform_statuses WHERE case_id = ?1 ORDER BY at_ms DESC, event_id DESC LIMIT 1",
        )?
        .query_row(params![case_id], |r| r.get(0))
        .optional()?;
    let verification: Option<String> = conn
        .prepare_cached(
            "SELECT state FROM verifications WHERE case_id = ?1 ORDER BY round DESC LIMIT 1",
        )?
        .query_row(params![case_id], |r| r.get(0))
        .optional()?;
    let clock: Option<(String, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT level, start_ms, escalated_at_ms FROM case_clocks WHERE case_id = ?1",
        )?
        .query_row(params![case_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (level, start, escalated) = match clock {
        Some((l, s, e)) => (Some(l), s, e.is_some()),
        None => (None, None, false),
    };
    let deadline_ms = deadlines
        .zip(level.as_deref())
        .and_then(|(d, l)| deadline_ms(d, l, start));
    Ok(PlatformSummary {
        status_zh: status
            .as_deref()
            .and_then(PlatformStatus::parse)
            .map(|s| s.name_zh().to_owned()),
        status,
        verification,
        level,
        deadline_ms,
        escalated,
    })
}
