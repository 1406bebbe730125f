//! The review console's SQLite tables, kept in the outbox database so that a decision and the
//! case's outbox state change in one transaction: accounts and tokens, decisions (first reviewer
//! wins through a conditional UPDATE), remarks and the audit log, suppressions, and the queries
//! behind the queue, the case history and the training-data export. The tables and their
//! indexes are part of the outbox's migrations ([`crate::cases::outbox::MIGRATIONS`]); every
//! decision is one `BEGIN IMMEDIATE` transaction.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ReviewError;
use super::auth::{self, Role, User};
use super::settings::ObjectLearning;
use crate::cases::outbox::Outbox;
use crate::cases::tiers::{OBJECT_MATCH_IOU, Suppression};
use crate::scenarios::ScenarioInfo;

/// A zone-state label as staff set it on the wall.
#[derive(Debug, Clone)]
pub struct NewZoneLabel<'a> {
    pub camera: &'a str,
    pub zone: &'a str,
    /// The scenario the state stands for.
    pub state: &'a str,
    pub present: bool,
    /// The analysed frame, PNG.
    pub frame_png: &'a [u8],
}

/// A stored zone-state label.
#[derive(Debug, Clone)]
pub struct ZoneLabel {
    pub id: i64,
    pub present: bool,
    pub labelled_at_ms: i64,
    pub user: String,
    /// The analysed frame: PNG when set on the wall, the case's clean JPEG when it came from a
    /// review (see `case_id`).
    pub frame: Vec<u8>,
    /// The held case whose confirmation or rejection made this label; `None`: the wall.
    pub case_id: Option<String>,
}

/// A case in the review queue (or one looked up by id), without its images.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ReviewItem {
    pub id: String,
    /// Outbox state: `awaiting_review`, `pending`, `delivered`, `dead`, `rejected`.
    pub state: String,
    pub created_at: String,
    pub waiting_seconds: f64,
    pub scenario: String,
    pub scenario_name_zh: String,
    pub scenario_name_en: String,
    pub camera: String,
    pub camera_name: String,
    pub unit: String,
    pub unit_name: String,
    pub group: String,
    pub group_name: String,
    pub zone: String,
    pub zone_name: String,
    pub confidence: f64,
    pub objects: u32,
    pub confirmed_at: String,
    pub deadline_at: String,
    pub remark: Option<String>,
    pub decision: Option<String>,
    pub reviewer: Option<String>,
}

/// One recent case with its delivery state and 103060 time left.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub item: ReviewItem,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    /// Seconds until the 103060 deadline (negative: overdue).
    pub time_left_seconds: i64,
    /// The case kept its clean frame (held for review, or a learned zone state's): it can be
    /// labelled from the history.
    pub frame_kept: bool,
    /// Its latest platform status, verification and 103060 clock.
    #[serde(default)]
    pub platform: crate::cases::platform::PlatformSummary,
}

/// A case still open on its camera (the live wall marks its zone).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpenCase {
    pub id: String,
    pub scenario: String,
    pub name_zh: String,
    pub zone: String,
    pub created_at: String,
    /// The outbox state (pending, delivered, awaiting_review, …).
    pub state: String,
    /// The member of staff who reported it, if a person did.
    pub reported_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub user: String,
    pub action: String,
    pub case_id: Option<String>,
    pub detail: Option<String>,
}

/// Filters of the queue.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct QueueFilter {
    pub unit: Option<String>,
    pub group: Option<String>,
    pub scenario: Option<String>,
}

/// A reviewed case for the training-data export.
pub struct Reviewed {
    pub id: String,
    pub confirmed: bool,
    pub scenario: String,
    /// The case's objects' boxes, [x1, y1, x2, y2] normalised.
    pub boxes: Vec<[f32; 4]>,
    pub clean_jpeg: Vec<u8>,
}

pub struct ReviewStore {
    conn: Mutex<Connection>,
    /// The outbox database's file (statistics open their own read-only connection).
    path: std::path::PathBuf,
    /// Failed logins per account name in the current window (name → count, window start).
    failures: Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
}

/// Failed logins allowed per account name within [`LOGIN_FAILURE_WINDOW`]; then the name is
/// locked out until the window passes (password guessing also costs the inference cores an
/// argon2 hash per try).
pub const MAX_LOGIN_FAILURES: u32 = 5;
pub const LOGIN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);
/// Longest account name and password a login may send (no hashing of megabytes).
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Hash checked for unknown names, so that a wrong name costs as much as a wrong password
/// (the answer time does not tell which names exist).
static DUMMY_HASH: std::sync::LazyLock<Option<String>> =
    std::sync::LazyLock::new(|| auth::hash_password("gridwatch-dummy-password").ok());

/// The boxes of a stored case's objects (normalised x1, y1, x2, y2).
fn object_boxes(objects_json: Option<String>) -> Vec<[f32; 4]> {
    #[derive(serde::Deserialize)]
    struct Object {
        bbox: [f32; 4],
    }
    objects_json
        .and_then(|j| serde_json::from_str::<Vec<Object>>(&j).ok())
        .map(|v| v.into_iter().map(|o| o.bbox).collect())
        .unwrap_or_default()
}

/// In the rejection's transaction: each object of case `id` that was also in at least
/// `after_rejections - 1` other cases rejected at the same camera, zone and scenario within
/// `lasts` becomes a suppression of that object there for `lasts` (stored, audited).
fn learn_objects(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    (camera, zone, scenario): (&str, &str, &str),
    learning: ObjectLearning,
) -> Result<Vec<Suppression>, ReviewError> {
    if learning.after_rejections == 0 {
        return Ok(Vec::new());
    }
    let ours = object_boxes(tx.query_row(
        "SELECT json_extract(body, '$.objects') FROM cases WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )?);
    let since = OffsetDateTime::from(SystemTime::now() - learning.lasts)
        .format(&Rfc3339)
        .unwrap_or_default();
    let earlier: Vec<Vec<[f32; 4]>> = {
        let mut stmt = tx.prepare_cached(
            "SELECT json_extract(c.body, '$.objects') FROM review_decisions d JOIN cases c ON c.id = d.case_id
             WHERE d.decision = 'rejected' AND c.camera = ?1 AND c.scenario = ?2
               AND json_extract(c.body, '$.zone.id') = ?3 AND c.id != ?4 AND d.decided_at >= ?5",
        )?;
        let rows = stmt.query_map(params![camera, scenario, zone, id, since], |r| r.get(0))?;
        rows.map(|r| r.map(object_boxes))
            .collect::<Result<_, _>>()?
    };
    let until = SystemTime::now() + learning.lasts;
    let until_ms = until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut learned = Vec::new();
    for b in ours {
        let seen_before = earlier
            .iter()
            .filter(|boxes| {
                boxes
                    .iter()
                    .any(|o| crate::track::iou(o, &b) >= OBJECT_MATCH_IOU)
            })
            .count();
        if seen_before + 1 < learning.after_rejections as usize {
            continue;
        }
        let object = serde_json::to_string(&b).unwrap_or_default();
        tx.execute(
            "INSERT INTO review_suppressions (camera, zone, scenario, until_ms, created_by, case_id, object) VALUES (?1, ?2, ?3, ?4, 'learned', ?5, ?6)",
            params![camera, zone, scenario, until_ms, id, object],
        )?;
        audit(
            tx,
            "learned",
            "suppress_object",
            Some(id),
            Some(&format!(
                "{camera}/{zone}/{scenario} object {object} after {} rejections",
                seen_before + 1
            )),
        )?;
        learned.push(Suppression {
            camera: camera.to_owned(),
            zone: zone.to_owned(),
            scenario: scenario.to_owned(),
            until,
            object: Some(b),
        });
    }
    Ok(learned)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn seconds_since(t: &str) -> f64 {
    OffsetDateTime::parse(t, &Rfc3339)
        .map(|t| (OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0))
        .unwrap_or(0.0)
}

fn seconds_until(t: &str) -> i64 {
    OffsetDateTime::parse(t, &Rfc3339)
        .map(|t| (t - OffsetDateTime::now_utc()).whole_seconds())
        .unwrap_or(0)
}

/// Columns of a [`ReviewItem`], read out of the case JSON by SQLite (the images stay on disk).
const ITEM_COLUMNS: &str = "c.id, o.state, c.created_at, c.scenario,
    json_extract(c.body, '$.scenario.name_zh'), json_extract(c.body, '$.scenario.name_en'),
    c.camera, json_extract(c.body, '$.camera.name'),
    json_extract(c.body, '$.unit.id'), json_extract(c.body, '$.unit.name'),
    json_extract(c.body, '$.group.id'), json_extract(c.body, '$.group.name'),
    json_extract(c.body, '$.zone.id'), json_extract(c.body, '$.zone.name'),
    json_extract(c.body, '$.confidence'), json_array_length(c.body, '$.objects'),
    json_extract(c.body, '$.confirmed_at'), json_extract(c.body, '$.deadline_at'),
    (SELECT detail FROM review_audit a WHERE a.case_id = c.id AND a.action IN ('remark', 'confirm', 'reject') AND detail IS NOT NULL AND detail != '' ORDER BY a.id DESC LIMIT 1),
    d.decision, d.reviewer";

const ITEM_FROM: &str = "FROM outbox o JOIN cases c ON c.id = o.case_id
    LEFT JOIN review_decisions d ON d.case_id = c.id";

/// The history: the newest cases through the `cases_created` index, each case's outbox row,
/// decision and latest remark by key (no scan, however many cases the outbox keeps).
fn history_sql() -> String {
    format!(
        "SELECT {ITEM_COLUMNS}, o.attempts, o.last_error, o.delivered_at,
                EXISTS (SELECT 1 FROM review_frames f WHERE f.case_id = c.id) {ITEM_FROM}
         ORDER BY c.created_at DESC, c.id DESC LIMIT ?1"
    )
}

fn item(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewItem> {
    let text = |i: usize| -> rusqlite::Result<String> {
        Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default())
    };
    let created_at: String = r.get(2)?;
    Ok(ReviewItem {
        id: r.get(0)?,
        state: r.get(1)?,
        waiting_seconds: seconds_since(&created_at),
        created_at,
        scenario: r.get(3)?,
        scenario_name_zh: text(4)?,
        scenario_name_en: text(5)?,
        camera: r.get(6)?,
        camera_name: text(7)?,
        unit: text(8)?,
        unit_name: text(9)?,
        group: text(10)?,
        group_name: text(11)?,
        zone: text(12)?,
        zone_name: text(13)?,
        confidence: r.get::<_, Option<f64>>(14)?.unwrap_or(0.0),
        objects: r.get::<_, Option<u32>>(15)?.unwrap_or(0),
        confirmed_at: text(16)?,
        deadline_at: text(17)?,
        remark: r.get(18)?,
        decision: r.get(19)?,
        reviewer: r.get(20)?,
    })
}

/// How a decision went.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Decision {
    pub id: String,
    pub decision: String,
    pub reviewer: String,
    pub decided_at: String,
    pub scenario: String,
    #[serde(default)]
    pub suppressed_until: Option<String>,
}

impl ReviewStore {
    /// Opens the outbox database at `path`, migrating it (the review tables are among its
    /// migrations).
    pub fn open(path: &Path) -> Result<Self, ReviewError> {
        drop(Outbox::open(path)?);
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(
            None,
            "journal_size_limit",
            crate::cases::outbox::WAL_SIZE_LIMIT_BYTES,
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            failures: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The outbox database's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- accounts and tokens -----

    pub fn user_count(&self) -> Result<u64, ReviewError> {
        Ok(self
            .lock()
            .query_row("SELECT COUNT(*) FROM review_users", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Creates the account, or sets the password and role of an existing one.
    pub fn set_user(&self, name: &str, role: Role, password: &str) -> Result<User, ReviewError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(ReviewError::Invalid("a name of 1 to 64 characters".into()));
        }
        if password.chars().count() < 8 {
            return Err(ReviewError::Invalid(
                "a password of at least 8 characters".into(),
            ));
        }
        let hash = auth::hash_password(password)?;
        let conn = self.lock();
        conn.execute(
            "INSERT INTO review_users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash",
            params![name, role.as_str(), hash, now_rfc3339()],
        )?;
        let id = conn.query_row(
            "SELECT id FROM review_users WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        Ok(User {
            id,
            name: name.to_owned(),
            role,
        })
    }

    /// Whether `name` is locked out after too many failed logins.
    pub fn locked_out(&self, name: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(name).is_some_and(|(n, since)| {
            *n >= MAX_LOGIN_FAILURES && since.elapsed() < LOGIN_FAILURE_WINDOW
        })
    }

    fn record_login(&self, name: &str, ok: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            failures.remove(name);
            return;
        }
        // Bounded: forget windows that passed before remembering a new name.
        failures.retain(|_, (_, since)| since.elapsed() < LOGIN_FAILURE_WINDOW);
        let e = failures
            .entry(name.to_owned())
            .or_insert((0, std::time::Instant::now()));
        e.0 += 1;
    }

    pub fn login(&self, name: &str, password: &str) -> Result<Option<User>, ReviewError> {
        let user = self.check_login(name, password)?;
        self.record_login(name, user.is_some());
        Ok(user)
    }

    fn check_login(&self, name: &str, password: &str) -> Result<Option<User>, ReviewError> {
        let row: Option<(i64, String, String)> = self
            .lock()
            .query_row(
                "SELECT id, role, password_hash FROM review_users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        // Verify outside the lock: argon2 takes tens of milliseconds on purpose.
        if row.is_none()
            && let Some(dummy) = DUMMY_HASH.as_deref()
        {
            let _ = auth::verify_password(password, dummy);
        }
        Ok(row.and_then(|(id, role, hash)| {
            auth::verify_password(password, &hash).then(|| User {
                id,
                name: name.to_owned(),
                role: Role::parse(&role).unwrap_or(Role::Reviewer),
            })
        }))
    }

    /// A new browser session: (cookie token, CSRF token).
    pub fn new_session(&self, user: &User, ttl: Duration) -> Result<(String, String), ReviewError> {
        let token = auth::random_token(32)?;
        let csrf = auth::random_token(32)?;
        let conn = self.lock();
        conn.execute(
            "DELETE FROM review_tokens WHERE kind = 'session' AND expires_ms < ?1",
            params![now_ms()],
        )?;
        conn.execute(
            "INSERT INTO review_tokens (token_hash, user_id, kind, csrf, expires_ms, created_at)
             VALUES (?1, ?2, 'session', ?3, ?4, ?5)",
            params![
                auth::token_digest(&token),
                user.id,
                csrf,
                now_ms() + ttl.as_millis() as i64,
                now_rfc3339()
            ],
        )?;
        Ok((token, csrf))
    }

    /// A new API token for `user` (shown once; only its digest is kept).
    pub fn new_api_token(&self, user: &User) -> Result<String, ReviewError> {
        let token = auth::random_token(32)?;
        self.lock().execute(
            "INSERT INTO review_tokens (token_hash, user_id, kind, created_at) VALUES (?1, ?2, 'api', ?3)",
            params![auth::token_digest(&token), user.id, now_rfc3339()],
        )?;
        Ok(token)
    }

    /// The account behind a token of `kind`, and the session's CSRF token; expired sessions
    /// are nobody.
    pub fn token_user(
        &self,
        token: &str,
        kind: &str,
    ) -> Result<Option<(User, Option<String>)>, ReviewError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT u.id, u.name, u.role, t.csrf FROM review_tokens t JOIN review_users u ON u.id = t.user_id
                 WHERE t.token_hash = ?1 AND t.kind = ?2 AND (t.expires_ms IS NULL OR t.expires_ms > ?3)",
                params![auth::token_digest(token), kind, now_ms()],
                |r| {
                    Ok((
                        User {
                            id: r.get(0)?,
                            name: r.get(1)?,
                            role: Role::parse(&r.get::<_, String>(2)?).unwrap_or(Role::Reviewer),
                        },
                        r.get(3)?,
                    ))
                },
            )
            .optional()?)
    }

    pub fn end_session(&self, token: &str) -> Result<(), ReviewError> {
        self.lock().execute(
            "DELETE FROM review_tokens WHERE token_hash = ?1 AND kind = 'session'",
            params![auth::token_digest(token)],
        )?;
        Ok(())
    }

    // ----- audit -----

    pub fn audit(
        &self,
        user: &str,
        action: &str,
        case_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), ReviewError> {
        audit(&self.lock(), user, action, case_id, detail)?;
        Ok(())
    }

    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at, user, action, case_id, detail FROM review_audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                user: r.get(2)?,
                action: r.get(3)?,
                case_id: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- queue, items, history -----

    pub fn queue(&self, filter: &QueueFilter) -> Result<Vec<ReviewItem>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} {ITEM_FROM} WHERE o.state = 'awaiting_review'
             AND (?1 IS NULL OR json_extract(c.body, '$.unit.id') = ?1)
             AND (?2 IS NULL OR json_extract(c.body, '$.group.id') = ?2)
             AND (?3 IS NULL OR c.scenario = ?3)
             ORDER BY c.created_at, c.id"
        ))?;
        let blank = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let rows = stmt.query_map(
            params![
                blank(&filter.unit),
                blank(&filter.group),
                blank(&filter.scenario)
            ],
            item,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn queue_depth(&self) -> Result<u64, ReviewError> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'awaiting_review'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn item(&self, id: &str) -> Result<Option<ReviewItem>, ReviewError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {ITEM_COLUMNS} {ITEM_FROM} WHERE c.id = ?1"),
                params![id],
                item,
            )
            .optional()?)
    }

    /// The annotated snapshot of a case.
    pub fn snapshot(&self, id: &str) -> Result<Option<Vec<u8>>, ReviewError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT snapshot FROM cases WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The most recent cases, newest first.
    pub fn history(
        &self,
        limit: u32,
        deadlines: Option<&crate::cases::settings::DeadlineSettings>,
    ) -> Result<Vec<HistoryItem>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&history_sql())?;
        let rows = stmt.query_map(params![limit], |r| {
            let item = item(r)?;
            Ok(HistoryItem {
                time_left_seconds: seconds_until(&item.deadline_at),
                item,
                attempts: r.get(21)?,
                last_error: r.get(22)?,
                delivered_at: r.get(23)?,
                frame_kept: r.get(24)?,
                platform: Default::default(),
            })
        })?;
        let mut items: Vec<HistoryItem> = rows.collect::<Result<_, _>>()?;
        for h in &mut items {
            h.platform = crate::cases::platform::platform_summary(&conn, &h.item.id, deadlines)?;
        }
        Ok(items)
    }

    /// A case's platform life (statuses, verification rounds, clock, updates).
    pub fn platform(
        &self,
        id: &str,
        deadlines: &crate::cases::settings::DeadlineSettings,
    ) -> Result<Option<crate::cases::platform::PlatformView>, ReviewError> {
        let conn = self.lock();
        if conn
            .query_row("SELECT 1 FROM cases WHERE id = ?1", params![id], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Ok(None);
        }
        let view = crate::cases::platform::platform_view(&conn, id, deadlines)?;
        Ok(Some(view))
    }

    /// A reviewer changes a case's handling level (audited); the platform is told by an update.
    pub fn set_level(
        &self,
        id: &str,
        level: crate::cases::HandlingLevel,
        user: &User,
        (deadlines, accepting): (&crate::cases::settings::DeadlineSettings, &[String]),
    ) -> Result<bool, ReviewError> {
        let mut conn = self.lock();
        let note = format!("{} 调整处置等级为 {}", user.name, level.as_str());
        let changed = crate::cases::platform::set_level(
            &mut conn,
            id,
            (level, deadlines),
            Some(note.clone()),
            accepting,
        )?;
        if changed {
            audit(&conn, &user.name, "level_changed", Some(id), Some(&note))?;
        }
        Ok(changed)
    }

    // ----- decisions -----

    /// Why a case that is no longer awaiting review cannot be decided on: who handled it.
    fn handled(conn: &Connection, id: &str) -> Result<ReviewError, ReviewError> {
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM outbox WHERE case_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(state) = state else {
            return Ok(ReviewError::NotFound);
        };
        let decision: Option<(String, String, String)> = conn
            .query_row(
                "SELECT decision, reviewer, decided_at FROM review_decisions WHERE case_id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match decision {
            Some((decision, by, at)) => ReviewError::AlreadyHandled { decision, by, at },
            // Dispatched unattended (automatic discovery): nobody reviewed it.
            None => ReviewError::AlreadyHandled {
                decision: state,
                by: "gridwatch".into(),
                at: String::new(),
            },
        })
    }

    /// Reassigns the scenario of a case awaiting review: the stored case JSON (scenario,
    /// department, workstation, handling level and 103060 deadline) is rewritten.
    pub fn change_scenario(
        &self,
        id: &str,
        user: &User,
        info: &ScenarioInfo,
        reroute: &Reroute<'_>,
    ) -> Result<(), ReviewError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let from = rewrite_scenario(&tx, id, info, "awaiting_review")?;
        retarget(&tx, id, info.id, reroute)?;
        audit(
            &tx,
            &user.name,
            "change_scenario",
            Some(id),
            Some(&format!("{from} -> {}", info.id)),
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn remark(&self, id: &str, user: &User, text: &str) -> Result<(), ReviewError> {
        let conn = self.lock();
        if conn
            .query_row("SELECT 1 FROM cases WHERE id = ?1", params![id], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(ReviewError::NotFound);
        }
        audit(&conn, &user.name, "remark", Some(id), Some(text))?;
        Ok(())
    }

    // ----- zone-state labels -----

    /// Stores a label staff set on the wall: whether `state` shows in the camera's zone on
    /// the analysed frame `frame_png` (lossless, at the analysed size); audited. Returns its id.
    pub fn add_zone_label(
        &self,
        label: &NewZoneLabel<'_>,
        user: &User,
    ) -> Result<i64, ReviewError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO review_zone_labels (camera, zone, state, present, labelled_at_ms, user, frame)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                label.camera,
                label.zone,
                label.state,
                label.present,
                now_ms(),
                user.name,
                label.frame_png
            ],
        )?;
        let id = tx.last_insert_rowid();
        let detail = format!(
            "{} {} {} {}",
            label.camera,
            label.zone,
            label.state,
            if label.present { "present" } else { "clear" }
        );
        audit(&tx, &user.name, "label_zone", None, Some(&detail))?;
        tx.commit()?;
        Ok(id)
    }

    /// "This zone shows X" / "clear" on a case from the history: a label of `state` in the
    /// case's zone on the clean frame the case kept; audited. `Ok(None)`: the case kept no
    /// frame; [`ReviewError::NotFound`]: no such case.
    pub fn label_case_frame(
        &self,
        id: &str,
        state: &str,
        present: bool,
        user: &User,
    ) -> Result<Option<i64>, ReviewError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT c.camera, json_extract(c.body, '$.zone.id'), f.jpeg
                 FROM cases c LEFT JOIN review_frames f ON f.case_id = c.id WHERE c.id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        r.get(2)?,
                    ))
                },
            )
            .optional()?;
        let (camera, zone, frame) = row.ok_or(ReviewError::NotFound)?;
        let Some(frame) = frame else {
            return Ok(None);
        };
        tx.execute(
            "INSERT INTO review_zone_labels (camera, zone, state, present, labelled_at_ms, user, frame, case_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![camera, zone, state, present, now_ms(), user.name, frame, id],
        )?;
        let label = tx.last_insert_rowid();
        let detail = format!(
            "{camera} {zone} {state} {} (from the history)",
            if present { "present" } else { "clear" }
        );
        audit(&tx, &user.name, "label_zone", Some(id), Some(&detail))?;
        tx.commit()?;
        Ok(Some(label))
    }

    /// The labels of one camera's zone and state, oldest first (what `gridwatch learn` trains
    /// on, split by time).
    pub fn zone_labels(
        &self,
        camera: &str,
        zone: &str,
        state: &str,
    ) -> Result<Vec<ZoneLabel>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, present, labelled_at_ms, user, frame, case_id FROM review_zone_labels
             WHERE camera = ?1 AND zone = ?2 AND state = ?3 ORDER BY labelled_at_ms, id",
        )?;
        let rows = stmt.query_map(params![camera, zone, state], |r| {
            Ok(ZoneLabel {
                id: r.get(0)?,
                present: r.get(1)?,
                labelled_at_ms: r.get(2)?,
                user: r.get(3)?,
                frame: r.get(4)?,
                case_id: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Confirms a case: it becomes `pending` (due now) for delivery. Only the first decision
    /// counts: the conditional UPDATE matches nothing for the second reviewer, who gets
    /// [`ReviewError::AlreadyHandled`] with the first one's name.
    pub fn confirm(
        &self,
        id: &str,
        user: &User,
        scenario: Option<&ScenarioInfo>,
        remark: Option<&str>,
        reroute: &Reroute<'_>,
    ) -> Result<Decision, ReviewError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(info) = scenario {
            // Routing rules may name scenarios: a corrected scenario picks its targets again
            // (the case is still held, so its deliveries are all `held`).
            retarget(&tx, id, info.id, reroute)?;
        }
        // The case and its deliveries to every target it was routed to become pending.
        let n = crate::cases::outbox::release_case(&tx, id)?;
        if n == 0 {
            return Err(Self::handled(&tx, id)?);
        }
        let mut original = None;
        if let Some(info) = scenario {
            // `pending`, or `unrouted` for a case no dispatch target takes.
            let now: String = tx.query_row(
                "SELECT state FROM outbox WHERE case_id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            let from = rewrite_scenario(&tx, id, info, &now)?;
            if from != info.id {
                original = Some(from);
            }
        }
        let at = now_rfc3339();
        tx.execute(
            "INSERT INTO review_decisions (case_id, decision, reviewer, decided_at, original_scenario) VALUES (?1, 'confirmed', ?2, ?3, ?4)",
            params![id, user.name, at, original],
        )?;
        audit(&tx, &user.name, "confirm", Some(id), remark)?;
        let scenario: String = tx.query_row(
            "SELECT scenario FROM cases WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        label_from_review(&tx, id, &user.name, Some(&scenario))?;
        tx.commit()?;
        Ok(Decision {
            id: id.to_owned(),
            decision: "confirmed".into(),
            reviewer: user.name.clone(),
            decided_at: at,
            scenario,
            suppressed_until: None,
        })
    }

    /// Rejects a case (a false positive; never delivered), optionally suppressing its camera +
    /// zone + scenario for `suppress_minutes`; an object rejected there often enough before is
    /// suppressed by itself (`learning`). Returns the suppressions made.
    pub fn reject(
        &self,
        id: &str,
        user: &User,
        remark: Option<&str>,
        suppress_minutes: Option<u32>,
        learning: ObjectLearning,
    ) -> Result<(Decision, Vec<Suppression>), ReviewError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'rejected' WHERE case_id = ?1 AND state = 'awaiting_review'",
            params![id],
        )?;
        if n == 0 {
            return Err(Self::handled(&tx, id)?);
        }
        crate::cases::outbox::reject_deliveries(&tx, id)?;
        let (scenario, camera, zone): (String, String, String) = tx.query_row(
            "SELECT scenario, camera, json_extract(body, '$.zone.id') FROM cases WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                ))
            },
        )?;
        let at = now_rfc3339();
        let suppression = suppress_minutes.filter(|m| *m > 0).map(|m| Suppression {
            camera: camera.clone(),
            zone: zone.clone(),
            scenario: scenario.clone(),
            until: SystemTime::now() + Duration::from_secs(u64::from(m) * 60),
            object: None,
        });
        let until_ms = suppression.as_ref().map(|s| {
            s.until
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        tx.execute(
            "INSERT INTO review_decisions (case_id, decision, reviewer, decided_at, suppress_until_ms) VALUES (?1, 'rejected', ?2, ?3, ?4)",
            params![id, user.name, at, until_ms],
        )?;
        if let Some(until) = until_ms {
            tx.execute(
                "INSERT INTO review_suppressions (camera, zone, scenario, until_ms, created_by, case_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![camera, zone, scenario, until, user.name, id],
            )?;
        }
        audit(&tx, &user.name, "reject", Some(id), remark)?;
        if let Some(m) = suppress_minutes.filter(|m| *m > 0) {
            audit(
                &tx,
                &user.name,
                "suppress",
                Some(id),
                Some(&format!("{camera}/{zone}/{scenario} for {m} min")),
            )?;
        }
        let learned = learn_objects(&tx, id, (&camera, &zone, &scenario), learning)?;
        label_from_review(&tx, id, &user.name, None)?;
        tx.commit()?;
        let suppressed_until = suppression.as_ref().map(|s| {
            OffsetDateTime::from(s.until)
                .format(&Rfc3339)
                .unwrap_or_default()
        });
        Ok((
            Decision {
                id: id.to_owned(),
                decision: "rejected".into(),
                reviewer: user.name.clone(),
                decided_at: at,
                scenario,
                suppressed_until,
            },
            suppression.into_iter().chain(learned).collect(),
        ))
    }

    /// Suppressions still in force (loaded into the pipeline's handle at start).
    pub fn active_suppressions(&self) -> Result<Vec<Suppression>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT camera, zone, scenario, until_ms, object FROM review_suppressions WHERE until_ms > ?1",
        )?;
        let rows = stmt.query_map(params![now_ms()], |r| {
            Ok(Suppression {
                camera: r.get(0)?,
                zone: r.get(1)?,
                scenario: r.get(2)?,
                until: UNIX_EPOCH + Duration::from_millis(r.get::<_, i64>(3)?.max(0) as u64),
                // A box that does not parse suppresses nothing rather than the whole zone.
                object: r
                    .get::<_, Option<String>>(4)?
                    .map(|text| serde_json::from_str(&text).unwrap_or([0.0; 4])),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The cases of `camera` stored since `since` (RFC 3339) that are still open: not
    /// rejected, not handled, not resolved by themselves. Newest first, at most `limit`.
    pub fn open_cases(
        &self,
        camera: &str,
        since: &str,
        limit: u32,
    ) -> Result<Vec<OpenCase>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.scenario, json_extract(c.body, '$.scenario.name_zh'),
                    json_extract(c.body, '$.zone.id'), c.created_at, o.state,
                    json_extract(c.body, '$.reported_by.user')
             FROM cases c JOIN outbox o ON o.case_id = c.id
             LEFT JOIN case_clocks k ON k.case_id = c.id
             WHERE c.camera = ?1 AND c.created_at >= ?2 AND o.state != 'rejected'
               AND k.handled_at_ms IS NULL AND k.self_resolved_at_ms IS NULL
             ORDER BY c.created_at DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![camera, since, limit], |r| {
            Ok(OpenCase {
                id: r.get(0)?,
                scenario: r.get(1)?,
                name_zh: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                zone: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                created_at: r.get(4)?,
                state: r.get(5)?,
                reported_by: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every reviewed case that kept its clean frame, oldest first.
    pub fn reviewed(&self) -> Result<Vec<Reviewed>, ReviewError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT c.id, d.decision, c.scenario, json_extract(c.body, '$.objects'), f.jpeg
             FROM review_decisions d JOIN cases c ON c.id = d.case_id JOIN review_frames f ON f.case_id = c.id
             ORDER BY d.decided_at, c.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let objects: Option<String> = r.get(3)?;
            let boxes = objects
                .and_then(|o| serde_json::from_str::<Vec<serde_json::Value>>(&o).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|o| serde_json::from_value::<[f32; 4]>(o.get("bbox")?.clone()).ok())
                .collect();
            Ok(Reviewed {
                id: r.get(0)?,
                confirmed: r.get::<_, String>(1)? == "confirmed",
                scenario: r.get(2)?,
                boxes,
                clean_jpeg: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A held case of a learned zone state, reviewed: its clean frame becomes a label of that
/// state in its zone, present when the case was confirmed as that scenario (`confirmed_as`),
/// clear when rejected or confirmed as another scenario (the state was not what it showed).
/// Cases of objects, and cases kept without a clean frame, make no label.
fn label_from_review(
    tx: &Connection,
    id: &str,
    user: &str,
    confirmed_as: Option<&str>,
) -> Result<(), ReviewError> {
    let row: Option<(String, String, String, Vec<u8>)> = tx
        .query_row(
            "SELECT c.camera, json_extract(c.body, '$.zone.id'),
                    json_extract(c.body, '$.objects[0].label'), f.jpeg
             FROM cases c JOIN review_frames f ON f.case_id = c.id WHERE c.id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    r.get(3)?,
                ))
            },
        )
        .optional()?;
    let Some((camera, zone, label, frame)) = row else {
        return Ok(());
    };
    let Some(state) = label.strip_prefix(crate::area::kinds::STATE_LABEL_PREFIX) else {
        return Ok(());
    };
    let present = confirmed_as == Some(state);
    tx.execute(
        "INSERT INTO review_zone_labels (camera, zone, state, present, labelled_at_ms, user, frame, case_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![camera, zone, state, present, now_ms(), user, frame, id],
    )?;
    let detail = format!(
        "{camera} {zone} {state} {} (from the review)",
        if present { "present" } else { "clear" }
    );
    Ok(audit(tx, user, "label_zone", Some(id), Some(&detail))?)
}

fn audit(
    conn: &Connection,
    user: &str,
    action: &str,
    case_id: Option<&str>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO review_audit (at, user, action, case_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_rfc3339(), user, action, case_id, detail],
    )?;
    Ok(())
}

/// Rewrites the case JSON for another scenario; returns the previous scenario id. Only cases
/// still awaiting review may change: a dispatched case is the receiver's now.
/// The dispatch targets of a held case under a corrected scenario, from the current
/// configuration; `None` keeps the targets it has (its camera or zone is gone after a reload).
pub type Reroute<'a> = dyn Fn(&crate::cases::Case, &str) -> Option<Vec<String>> + 'a;

/// Replaces a held case's deliveries by those `reroute` gives for `scenario`.
fn retarget(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    scenario: &str,
    reroute: &Reroute<'_>,
) -> Result<(), ReviewError> {
    let row: Option<(String, String)> = tx
        .query_row(
            "SELECT c.body, o.state FROM cases c JOIN outbox o ON o.case_id = c.id WHERE c.id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((body, state)) = row else {
        return Ok(());
    };
    if state != "awaiting_review" {
        // Already handled: `release_case` reports who did.
        return Ok(());
    }
    let case: crate::cases::Case = serde_json::from_str(&body)?;
    let Some(targets) = reroute(&case, scenario) else {
        return Ok(());
    };
    tx.execute(
        "DELETE FROM deliveries WHERE case_id = ?1 AND state = 'held'",
        params![id],
    )?;
    for t in &targets {
        tx.execute(
            "INSERT INTO deliveries (case_id, target, state, next_attempt_at_ms) VALUES (?1, ?2, 'held', 0)",
            params![id, t],
        )?;
    }
    Ok(())
}

fn rewrite_scenario(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    info: &ScenarioInfo,
    expect_state: &str,
) -> Result<String, ReviewError> {
    let row: Option<(String, String)> = tx
        .query_row(
            "SELECT c.scenario, o.state FROM cases c JOIN outbox o ON o.case_id = c.id WHERE c.id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((from, state)) = row else {
        return Err(ReviewError::NotFound);
    };
    // Inside `confirm` the state already reads `pending` (this transaction changed it).
    if state != expect_state {
        return Err(ReviewError::Handled(state));
    }
    // The JSON as sent (snapshot included), so that it is re-serialised whole.
    let body = crate::cases::outbox::case_body(tx, id)?.ok_or(ReviewError::NotFound)?;
    let mut case: crate::cases::Case = serde_json::from_str(&body)?;
    case.scenario = crate::cases::CaseScenario {
        id: info.id.into(),
        name_zh: info.name_zh.into(),
        name_en: info.name_en.into(),
        category_code: info.category_code.into(),
        category_major: info.category_major.into(),
        category_minor: info.category_minor.into(),
    };
    case.department = info.department.into();
    case.workstation = info.workstation.into();
    case.handling_level = info.level;
    case.deadline_minutes = info.level.deadline_minutes();
    case.deadline_at = crate::cases::deadline(case.confirmed_at, info.level);
    crate::cases::outbox::set_case_body(tx, id, &serde_json::to_string(&case)?, info.id)?;
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's queries search through indexes: the history walks `cases_created` newest
    /// first with no sort, and the remark of each case is found through `review_audit_case`.
    #[test]
    fn the_console_queries_use_indexes() {
        let path = std::env::temp_dir().join(format!(
            "gridwatch-review-plan-{}-{}.sqlite",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = ReviewStore::open(&path).unwrap();
        let conn = store.lock();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows: Vec<String> = stmt
                .query_map(params![10], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.join(" | ")
        };
        let history = plan(&history_sql());
        assert!(
            history.contains("SCAN c USING INDEX cases_created"),
            "{history}"
        );
        assert!(!history.contains("TEMP B-TREE"), "{history}");
        assert!(history.contains("review_audit_case"), "{history}");
        assert_eq!(history.matches("SCAN").count(), 1, "{history}");
        let queue = plan(&format!(
            "SELECT {ITEM_COLUMNS} {ITEM_FROM} WHERE o.state = 'awaiting_review' AND ?1 > 0"
        ));
        assert!(!queue.contains("SCAN"), "{queue}");
        let depth = plan("SELECT COUNT(*) FROM outbox WHERE state = 'awaiting_review' AND ?1 > 0");
        assert!(!depth.contains("SCAN"), "{depth}");
        drop(conn);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
