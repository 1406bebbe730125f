//! The SQLite databases over time and under contention. Every schema ever shipped (the SQL as it
//! shipped, in `schemas/`, with rows written the way that release wrote them) opens with the
//! current code: its rows are all there and usable, and its schema is the one a new database
//! gets. Read-then-write transactions wait for a concurrent writer (`BEGIN IMMEDIATE` and the
//! busy timeout) where a deferred transaction fails at once with SQLITE_BUSY.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::cases::outbox::{InitialState, NewCase, Outbox, SCHEMA_VERSION, Selection};
use gridwatch::cases::routing::PRIMARY_TARGET_ID;
use gridwatch::review::auth::{Role, User};
use gridwatch::review::store::ReviewStore;
use gridwatch_dispatch_ref::{CaseStatus, StoredCase};
use rusqlite::{Connection, ErrorCode, params};

use crate::dispatch_support::{TOKEN, TestReceiver, case};
use crate::support::TempDir;

const OUTBOX_B7384ED: &str = include_str!("schemas/outbox-b7384ed.sql");
const OUTBOX_9AE0C3A: &str = include_str!("schemas/outbox-9ae0c3a.sql");
const REVIEW_9AE0C3A: &str = include_str!("schemas/review-9ae0c3a.sql");
const OUTBOX_1CF6D60: &str = include_str!("schemas/outbox-1cf6d60.sql");
const RECEIVER_B7384ED: &str = include_str!("schemas/receiver-b7384ed.sql");
const RECEIVER_357C287: &str = include_str!("schemas/receiver-357c287.sql");

/// What the current code needs in an outbox database: if a migration step were lost, a new
/// database and an upgraded one would agree with each other, but not with this.
const OUTBOX_OBJECTS: &[(&str, &str)] = &[
    ("table", "cases"),
    ("table", "outbox"),
    ("table", "deliveries"),
    ("table", "review_frames"),
    ("table", "review_users"),
    ("table", "review_tokens"),
    ("table", "review_decisions"),
    ("table", "review_audit"),
    ("table", "review_suppressions"),
    ("index", "outbox_due"),
    ("index", "deliveries_due"),
    ("index", "deliveries_state"),
    ("index", "cases_created"),
    ("index", "review_audit_case"),
    ("index", "review_decisions_decided"),
    ("index", "review_suppressions_until"),
    ("trigger", "deliveries_roll_up_update"),
    ("trigger", "deliveries_roll_up_delete"),
];

/// (type, name, table, SQL with whitespace runs and `IF NOT EXISTS` taken out).
type Object = (String, String, String, Option<String>);

/// Every table, index and trigger of the database, and its version.
fn schema(path: &Path) -> (i64, Vec<Object>) {
    let conn = Connection::open(path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let objects = stmt
        .query_map([], |r| {
            let sql: Option<String> = r.get(3)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                sql.map(|s| {
                    s.replace("IF NOT EXISTS ", "")
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (version, objects)
}

fn columns(path: &Path, table: &str) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A database of `sql` (as shipped, unversioned) with rows added by `rows`.
fn historical(path: &Path, sql: &[&str], rows: impl FnOnce(&Connection)) {
    let conn = Connection::open(path).unwrap();
    for s in sql {
        conn.execute_batch(s).unwrap();
    }
    rows(&conn);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0, "shipped databases were unversioned");
}

/// The outbox schema of a new database.
fn fresh_outbox(dir: &TempDir) -> (i64, Vec<Object>) {
    let path = dir.path("fresh-outbox.sqlite");
    drop(Outbox::open(&path).unwrap());
    let s = schema(&path);
    assert_eq!(s.0, SCHEMA_VERSION as i64);
    for (kind, name) in OUTBOX_OBJECTS {
        assert!(
            s.1.iter().any(|(k, n, _, _)| k == kind && n == name),
            "a new outbox lacks {kind} {name}"
        );
    }
    assert!(columns(&path, "cases").contains(&"snapshot_at".to_owned()));
    s
}

/// The comparison has teeth: the historical database at `path` (not opened yet) migrated by
/// every proper prefix of `steps` differs from a new database.
fn a_missing_step_shows(
    path: &Path,
    steps: &[gridwatch::sqlite::Step],
    fresh: &(i64, Vec<Object>),
) {
    for k in 0..steps.len() {
        let copy = path.with_extension(format!("first-{k}-steps"));
        std::fs::copy(path, &copy).unwrap();
        let mut conn = Connection::open(&copy).unwrap();
        gridwatch::sqlite::migrate(&mut conn, &steps[..k]).unwrap();
        drop(conn);
        assert_ne!(
            schema(&copy).1,
            fresh.1,
            "without step {} the schema would still pass",
            k + 1
        );
    }
}

fn assert_same_schema(path: &Path, fresh: &(i64, Vec<Object>), what: &str) {
    let (version, objects) = schema(path);
    assert_eq!(version, fresh.0, "{what}: version");
    for (o, f) in objects.iter().zip(&fresh.1) {
        assert_eq!(o, f, "{what}: schema object differs from a new database's");
    }
    assert_eq!(objects.len(), fresh.1.len(), "{what}: {objects:#?}");
}

/// A case JSON as the pipeline stores it (snapshot and crop inline) and its snapshot JPEG.
fn case_json() -> (String, String, Vec<u8>) {
    let c = case(1, "商业商务区");
    let jpeg = c.snapshot.jpeg().unwrap();
    (c.id.to_string(), serde_json::to_string(&c).unwrap(), jpeg)
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The case rows as every release before routing wrote them (`cases` + `outbox`).
fn insert_unrouted_era_case(conn: &Connection, id: &str, body: &str, jpeg: &[u8], state: &str) {
    conn.execute(
        "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, rfc3339(SystemTime::now()), "crowd_gathering", "cam-1", body, jpeg],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES (?1, 'pending', ?2)",
        params![id, now_ms()],
    )
    .unwrap();
    match state {
        "delivered" => conn.execute(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL WHERE case_id = ?1",
            params![id, rfc3339(SystemTime::now())],
        ),
        "dead" => conn.execute(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2 WHERE case_id = ?1",
            params![id, "HTTP 422: no"],
        ),
        "pending" => conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE case_id = ?1",
            params![id, now_ms() - 1, "HTTP 503"],
        ),
        other => conn.execute(
            "UPDATE outbox SET state = ?2 WHERE case_id = ?1",
            params![id, other],
        ),
    }
    .unwrap();
}

/// After the upgrade the database takes new cases to several targets and purges old ones.
fn still_works(path: &Path) {
    let mut outbox = Outbox::open(path).unwrap();
    let (id, body, jpeg) = case_json();
    outbox
        .store(&NewCase {
            id: &id,
            scenario: "crowd_gathering",
            camera: "cam-1",
            body: &body,
            snapshot: &jpeg,
            state: InitialState::Pending,
            clean_frame: None,
            targets: &["town".to_owned(), "xujing".to_owned()],
        })
        .unwrap();
    let due = outbox.due("xujing", 100).unwrap();
    assert_eq!(due.iter().find(|d| d.id == id).unwrap().body, body);
    outbox.mark_delivered(&id, "town").unwrap();
    outbox.mark_delivered(&id, "xujing").unwrap();
    let before = outbox.counts().unwrap();
    // A year on, every finished case has expired; nothing else goes.
    let later = SystemTime::now() + Duration::from_secs(365 * 86_400);
    let purged = outbox
        .purge_expired(later, Duration::from_secs(30 * 86_400), 1000)
        .unwrap() as u64;
    assert_eq!(purged, before.delivered + before.rejected);
    let after = outbox.counts().unwrap();
    assert_eq!(
        (
            after.pending,
            after.dead,
            after.awaiting_review,
            after.unrouted
        ),
        (
            before.pending,
            before.dead,
            before.awaiting_review,
            before.unrouted
        )
    );
}

/// The console's re-routing when a reviewer keeps the scenario: the targets stay.
fn keep_targets(_: &gridwatch::cases::Case, _: &str) -> Option<Vec<String>> {
    None
}

fn reviewer() -> User {
    User {
        id: 1,
        name: "li".into(),
        role: Role::Reviewer,
    }
}

#[test]
fn an_outbox_of_the_first_release_upgrades_with_its_cases() {
    let dir = TempDir::new("schema-b7384ed");
    let fresh = fresh_outbox(&dir);
    let path = dir.path("outbox.sqlite");
    let (id, body, jpeg) = case_json();
    historical(&path, &[OUTBOX_B7384ED], |c| {
        insert_unrouted_era_case(c, &id, &body, &jpeg, "pending");
        insert_unrouted_era_case(c, "delivered-1", "{}", b"jpeg-d", "delivered");
        insert_unrouted_era_case(c, "dead-1", "{}", b"jpeg-x", "dead");
    });
    a_missing_step_shows(&path, gridwatch::cases::outbox::MIGRATIONS, &fresh);
    let outbox = Outbox::open(&path).unwrap();
    assert_same_schema(&path, &fresh, "b7384ed");
    let c = outbox.counts().unwrap();
    assert_eq!((c.pending, c.delivered, c.dead), (1, 1, 1));
    // The pending case goes to the primary target with its attempt count, byte for byte.
    let due = outbox.due(PRIMARY_TARGET_ID, 10).unwrap();
    assert_eq!(
        due.iter()
            .map(|d| (d.id.as_str(), d.attempts))
            .collect::<Vec<_>>(),
        [(id.as_str(), 1)]
    );
    assert_eq!(due[0].body, body);
    let dead = outbox
        .list_for(PRIMARY_TARGET_ID, Some("dead"), 10)
        .unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 422: no"));
    let delivered = outbox.list(Some("delivered"), 10).unwrap();
    assert!(delivered[0].delivered_at.is_some());
    drop(outbox);
    let store = ReviewStore::open(&path).unwrap();
    assert_eq!(store.snapshot(&id).unwrap().unwrap(), jpeg);
    assert_eq!(store.history(10, None).unwrap().len(), 3);
    drop(store);
    still_works(&path);
}

#[test]
fn an_outbox_of_the_review_release_upgrades_with_its_cases_and_decisions() {
    let dir = TempDir::new("schema-9ae0c3a");
    let fresh = fresh_outbox(&dir);
    for console in [false, true] {
        let path = dir.path(&format!("outbox-{console}.sqlite"));
        let mut sql = vec![OUTBOX_9AE0C3A];
        if console {
            sql.push(REVIEW_9AE0C3A);
        }
        let (id, body, jpeg) = case_json();
        historical(&path, &sql, |c| {
            insert_unrouted_era_case(c, &id, &body, &jpeg, "awaiting_review");
            c.execute(
                "INSERT INTO review_frames (case_id, jpeg) VALUES (?1, ?2)",
                params![id, b"clean".to_vec()],
            )
            .unwrap();
            insert_unrouted_era_case(c, "rejected-1", "{}", b"j", "rejected");
            insert_unrouted_era_case(c, "delivered-1", "{}", b"j", "delivered");
            if console {
                c.execute_batch(
                    "INSERT INTO review_users (name, role, password_hash, created_at) VALUES ('li', 'reviewer', 'hash', 't');
                     INSERT INTO review_tokens (token_hash, user_id, kind, created_at) VALUES ('digest', 1, 'api', 't');
                     INSERT INTO review_decisions (case_id, decision, reviewer, decided_at) VALUES ('rejected-1', 'rejected', 'li', '2026-01-01T00:00:00Z');
                     INSERT INTO review_audit (at, user, action, case_id, detail) VALUES ('2026-01-01T00:00:00Z', 'li', 'reject', 'rejected-1', 'a shadow');
                     INSERT INTO review_suppressions (camera, zone, scenario, until_ms, created_by, case_id) VALUES ('cam-1', 'all', 'crowd_gathering', 99999999999999, 'li', 'rejected-1');",
                )
                .unwrap();
            }
        });
        let store = ReviewStore::open(&path).unwrap();
        assert_same_schema(&path, &fresh, &format!("9ae0c3a, console {console}"));
        if console {
            assert_eq!(store.user_count().unwrap(), 1);
            let r = store.item("rejected-1").unwrap().unwrap();
            assert_eq!(
                (
                    r.decision.as_deref(),
                    r.reviewer.as_deref(),
                    r.remark.as_deref()
                ),
                (Some("rejected"), Some("li"), Some("a shadow"))
            );
            assert_eq!(store.active_suppressions().unwrap().len(), 1);
            assert_eq!(store.audit_log(10).unwrap().len(), 1);
        }
        // The held case is in the queue, with its clean frame, and confirming sends it.
        let queue = store.queue(&Default::default()).unwrap();
        assert_eq!(
            queue.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [id.as_str()]
        );
        assert_eq!(queue[0].camera_name, "东门");
        store
            .confirm(&id, &reviewer(), None, None, &keep_targets)
            .unwrap();
        drop(store);
        let outbox = Outbox::open(&path).unwrap();
        let due = outbox.due(PRIMARY_TARGET_ID, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, body);
        let c = outbox.counts().unwrap();
        assert_eq!((c.pending, c.rejected, c.delivered), (1, 1, 1));
        drop(outbox);
        still_works(&path);
    }
}

#[test]
fn an_outbox_of_the_routing_release_upgrades_with_its_deliveries() {
    let dir = TempDir::new("schema-1cf6d60");
    let fresh = fresh_outbox(&dir);
    let path = dir.path("outbox.sqlite");
    let (id, body, jpeg) = case_json();
    historical(&path, &[OUTBOX_1CF6D60, REVIEW_9AE0C3A], |c| {
        // As 1cf6d60's `store` wrote them: the case, its row, one delivery per target.
        let store = |id: &str, body: &str, state: &str, targets: &[&str], delivery: &str| {
            c.execute(
                "INSERT INTO cases (id, created_at, scenario, camera, body, snapshot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, rfc3339(SystemTime::now()), "crowd_gathering", "cam-1", body, jpeg],
            )
            .unwrap();
            c.execute(
                "INSERT INTO outbox (case_id, state, next_attempt_ms) VALUES (?1, ?2, ?3)",
                params![id, state, now_ms()],
            )
            .unwrap();
            for t in targets {
                c.execute(
                    "INSERT INTO deliveries (case_id, target, state, next_attempt_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![id, t, delivery, now_ms()],
                )
                .unwrap();
            }
        };
        store(&id, &body, "pending", &["town", "xujing"], "pending");
        store("held-1", "{}", "awaiting_review", &["town"], "held");
        store("unrouted-1", "{}", "unrouted", &[], "pending");
        // Delivery as 1cf6d60 recorded it (the triggers roll it up).
        c.execute(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at_ms = ?3, last_error = NULL
             WHERE case_id = ?1 AND target = ?2",
            params![id, "town", now_ms()],
        )
        .unwrap();
        c.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at_ms = ?3, last_error = ?4
             WHERE case_id = ?1 AND target = ?2",
            params![id, "xujing", now_ms() - 1, "HTTP 503"],
        )
        .unwrap();
    });
    a_missing_step_shows(&path, gridwatch::cases::outbox::MIGRATIONS, &fresh);
    let outbox = Outbox::open(&path).unwrap();
    assert_same_schema(&path, &fresh, "1cf6d60");
    let stats = outbox.stats().unwrap();
    assert_eq!(
        (stats.pending, stats.awaiting_review, stats.unrouted),
        (1, 1, 1)
    );
    assert_eq!(
        (stats.targets["town"].delivered, stats.targets["town"].held),
        (1, 1)
    );
    assert_eq!(
        (
            stats.targets["xujing"].pending,
            stats.targets["xujing"].retries
        ),
        (1, 1)
    );
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 503"));
    let due = outbox.due("xujing", 10).unwrap();
    assert_eq!((due[0].id.as_str(), due[0].attempts), (id.as_str(), 1));
    assert_eq!(due[0].body, body, "a case stored whole is sent as it was");
    let g = outbox.target_gauges("xujing").unwrap();
    assert_eq!((g.pending, g.dead_letters), (1, 0));
    drop(outbox);
    still_works(&path);
}

/// What the dispatch service serves for a stored case.
fn get_case(rx: &TestReceiver, id: &str) -> StoredCase {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/{id}", rx.cases_url()))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn intake(rx: &TestReceiver) -> u16 {
    let c = case(1, "商业商务区");
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(rx.cases_url())
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", c.id.to_string())
        .header("content-type", "application/json")
        .body(serde_json::to_string(&c).unwrap())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn dispatch_service_databases_of_every_release_upgrade_with_their_cases() {
    let dir = TempDir::new("schema-receiver");
    let fresh_path = dir.path("fresh-receiver.sqlite");
    drop(gridwatch_dispatch_ref::router(&fresh_path, None).unwrap());
    let fresh = schema(&fresh_path);
    assert_eq!(fresh.0, gridwatch_dispatch_ref::MIGRATIONS.len() as i64);
    assert!(
        fresh
            .1
            .iter()
            .any(|(k, n, _, _)| k == "index" && n == "received_recent")
    );
    let (_, body, jpeg) = case_json();
    for (release, sql) in [("b7384ed", RECEIVER_B7384ED), ("357c287", RECEIVER_357C287)] {
        let path = dir.path(&format!("receiver-{release}.sqlite"));
        historical(&path, &[sql], |c| {
            c.execute(
                "INSERT INTO received (id, received_at, body_sha256, body, scenario, camera, unit, first_seen_at, confidence, snapshot)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params!["old-1", "2026-01-01T00:00:00Z", "sha", body, "crowd_gathering", "cam-1", "商业商务区",
                        "2026-01-01T00:00:00Z", 0.8, jpeg],
            )
            .unwrap();
            if release == "357c287" {
                c.execute_batch(
                    "UPDATE received SET status = 'dispatched', dispatched_at = '2026-01-01T00:01:00Z', department = '公安' WHERE id = 'old-1';
                     INSERT INTO case_history (case_id, status, at) VALUES ('old-1', 'registered', '2026-01-01T00:00:00Z');
                     INSERT INTO case_history (case_id, status, at) VALUES ('old-1', 'dispatched', '2026-01-01T00:01:00Z');",
                )
                .unwrap();
            }
        });
        a_missing_step_shows(&path, gridwatch_dispatch_ref::MIGRATIONS, &fresh);
        let rx = TestReceiver::start(&path, "127.0.0.1:0");
        assert_same_schema(&path, &fresh, release);
        let old = get_case(&rx, "old-1");
        assert_eq!(old.snapshot_bytes, jpeg.len() as i64);
        let expected = if release == "357c287" {
            CaseStatus::Dispatched
        } else {
            CaseStatus::Registered
        };
        assert_eq!(old.status, expected, "{release}");
        assert_eq!(intake(&rx), 201, "{release}: new cases are taken");
    }
}

/// Takes the write lock of the database at `path` from another connection (a transaction
/// with an uncommitted write, as delivery or the console hold while they write) and commits
/// after `hold`. Returns once the lock is held.
fn hold_write_lock(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let (held_tx, held_rx) = mpsc::channel();
    let path = path.to_owned();
    let t = std::thread::spawn(move || {
        let conn = Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS other_writer (n INTEGER);
             INSERT INTO other_writer VALUES (1);",
        )
        .unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    held_rx.recv().unwrap();
    t
}

const HOLD: Duration = Duration::from_millis(400);

/// Runs `f` while another connection holds the write lock; `f` must wait for it and succeed.
fn waits_for_the_writer<T>(path: &Path, what: &str, f: impl FnOnce() -> T) -> T {
    let writer = hold_write_lock(path, HOLD);
    let t0 = Instant::now();
    let out = f();
    let waited = t0.elapsed();
    writer.join().unwrap();
    assert!(
        waited >= HOLD / 2,
        "{what} took {waited:?}: it did not wait for the writer"
    );
    out
}

#[test]
fn read_then_write_transactions_wait_for_a_concurrent_writer() {
    let dir = TempDir::new("busy");
    let path = dir.path("outbox.sqlite");
    let mut outbox = Outbox::open(&path).unwrap();
    let new = |id| NewCase {
        id,
        scenario: "crowd_gathering",
        camera: "cam-1",
        body: "{}",
        snapshot: b"jpeg",
        state: InitialState::AwaitingReview,
        clean_frame: None,
        targets: &[],
    };
    for id in ["h1", "h2", "h3"] {
        outbox
            .store(&NewCase {
                targets: &[PRIMARY_TARGET_ID.to_owned()],
                ..new(id)
            })
            .unwrap();
    }
    outbox
        .store(&NewCase {
            state: InitialState::Pending,
            targets: &[PRIMARY_TARGET_ID.to_owned()],
            ..new("d1")
        })
        .unwrap();
    outbox
        .mark_dead("d1", PRIMARY_TARGET_ID, "HTTP 422")
        .unwrap();

    // The hazard: a deferred transaction that has read cannot take the write lock while
    // another connection holds it, and SQLite does not wait (the busy handler is not called
    // for a transaction that already reads): SQLITE_BUSY at once.
    {
        let conn = Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let writer = hold_write_lock(&path, HOLD);
        conn.execute_batch("BEGIN DEFERRED").unwrap();
        let _: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'awaiting_review'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let err = conn
            .execute(
                "UPDATE outbox SET state = 'pending' WHERE case_id = 'h1'",
                [],
            )
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy),
            "{err}"
        );
        conn.execute_batch("ROLLBACK").unwrap();
        writer.join().unwrap();
    }

    // The outbox's read-then-write transactions begin IMMEDIATE: they wait, then succeed.
    let released = waits_for_the_writer(&path, "release_held", || {
        outbox.release_held(i64::MAX).unwrap()
    });
    assert_eq!(released, ["h1", "h2", "h3"]);
    let n = waits_for_the_writer(&path, "retry_dead", || {
        outbox.retry_dead(&Selection::All).unwrap()
    });
    assert_eq!(n, 1);
    outbox.mark_delivered("d1", PRIMARY_TARGET_ID).unwrap();
    let later = SystemTime::now() + Duration::from_secs(86_400);
    let n = waits_for_the_writer(&path, "purge_expired", || {
        outbox
            .purge_expired(later, Duration::from_secs(60), 100)
            .unwrap()
    });
    assert_eq!(n, 1);

    // The console's decisions.
    for id in ["c1", "r1"] {
        outbox
            .store(&NewCase {
                targets: &[PRIMARY_TARGET_ID.to_owned()],
                ..new(id)
            })
            .unwrap();
    }
    let store = ReviewStore::open(&path).unwrap();
    waits_for_the_writer(&path, "confirm", || {
        store
            .confirm("c1", &reviewer(), None, None, &keep_targets)
            .unwrap()
    });
    waits_for_the_writer(&path, "reject", || {
        store
            .reject(
                "r1",
                &reviewer(),
                None,
                Some(10),
                gridwatch::review::settings::ObjectLearning::OFF,
            )
            .unwrap()
    });

    // The dispatch service's intake.
    let rx_path = dir.path("receiver.sqlite");
    let rx = TestReceiver::start(&rx_path, "127.0.0.1:0");
    let status = waits_for_the_writer(&rx_path, "intake", || intake(&rx));
    assert_eq!(status, 201);
}

/// `[cases] retention_days`: 30 when absent, 0 turns the purge off, beyond ten years is refused
/// with its line.
#[test]
fn retention_days_defaults_to_thirty_and_is_range_checked() {
    use gridwatch::cases::settings::DEFAULT_RETENTION_DAYS;
    use gridwatch::config::{Config, ConfigError};
    let dir = crate::support::repo("config");
    let text = std::fs::read_to_string(dir.join("default.toml")).unwrap();
    let line = "retention_days = 30";
    assert!(text.contains(line));
    let with = |value: &str| Config::from_text(&text.replace(line, value), "default.toml", &dir);
    let absent = with("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(absent.cases.retention_days, DEFAULT_RETENTION_DAYS);
    assert_eq!(DEFAULT_RETENTION_DAYS, 30);
    assert_eq!(with("retention_days = 0").unwrap().cases.retention_days, 0);
    assert_eq!(
        with("retention_days = 3650").unwrap().cases.retention_days,
        3650
    );
    let Err(ConfigError::Invalid(problems)) = with("retention_days = 3651") else {
        panic!("must be refused");
    };
    let expected_line = text.lines().position(|l| l.contains(line)).unwrap() + 1;
    assert!(
        problems
            .iter()
            .any(|p| p.field == "cases.retention_days" && p.line == expected_line),
        "{problems:?}"
    );
    assert!(matches!(
        with("retention_days = -1"),
        Err(ConfigError::Invalid(_))
    ));
}
