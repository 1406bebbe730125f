//! The loop back from the platform, with real processes: `gridwatch run` (a real binary, real
//! GStreamer and onnxruntime on generated clips) and the reference dispatch service as the
//! platform. Cases are delivered; the platform moves them to 派遣 and 处置; the camera re-check
//! finds one problem gone (exactly one 核查通过 update) and another still there (reopened); a
//! third episode ends before anyone acts (self-resolved); a reminder and an escalation (督办)
//! follow the 103060 clock of the reopened case; every case also goes to the night target
//! because the centre's clock says night. All of it across a 30 s outage of the platform and a
//! kill -9 of gridwatch, with nothing lost or duplicated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dispatch_support::{
    TOKEN, TestReceiver, free_port, gridwatch, spawn_run, wait_running, wait_until,
};
use crate::support::{TempDir, repo};

/// Persons for `persons_seconds`, then an empty grey picture, at 2 frames per second.
fn make_clip(dir: &Path, name: &str, persons_seconds: u32, total_seconds: u32) -> PathBuf {
    let out = dir.join(name);
    let script = r#"
import sys, cv2, numpy as np
src, out, persons, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
img = cv2.imread(src)
grey = np.full_like(img, 128)
w = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (img.shape[1], img.shape[0]))
for i in range(total * 2):
    w.write(img if i < persons * 2 else grey)
w.release()
"#;
    let status = Command::new(repo(".venv/bin/python"))
        .args(["-c", script])
        .arg(repo("tests/data/frames/vtest-416-a.png"))
        .arg(&out)
        .args([persons_seconds.to_string(), total_seconds.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "clip generation failed");
    out
}

/// An offset that makes the centre's local time about 22:00 now: a night case.
fn night_offset() -> String {
    let hour = (time::OffsetDateTime::now_utc().hour() as i32) % 24;
    let mut offset = (22 - hour).rem_euclid(24);
    if offset > 12 {
        offset -= 24;
    }
    format!(
        "{}{:02}:00",
        if offset < 0 { "-" } else { "+" },
        offset.abs()
    )
}

fn config(
    dir: &Path,
    clips: &[(&str, &Path)],
    platform: &str,
    night: &str,
    status_port: u16,
) -> PathBuf {
    let mut cameras = String::new();
    for (id, clip) in clips {
        cameras.push_str(&format!(
            r#"
[[cameras]]
id = "{id}"
name = "{id}"
unit = "cbd"
group = "g"
uri = "{clip}"
loop = false
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
"#,
            clip = clip.display()
        ));
    }
    let text = format!(
        r#"
[centre]
name = "platform loop"
utc_offset = "{offset}"
[[units]]
id = "cbd"
name = "商业商务区"
[[groups]]
id = "g"
name = "巡查编组"
unit = "cbd"
analysis_fps = 2.0
{cameras}
[[departments]]
id = "chengguan"
name = "城管"
[[stations]]
id = "joint-1"
name = "第一联勤联动工作站"
kind = "joint"
leads_difficult = true
departments = ["chengguan"]
[model]
card = "{card}"
[inference]
workers = 1
[ingest]
pace = "realtime"
[scenarios.crowd_gathering]
min_persons = 2
min_duration_seconds = 1.0
clear_seconds = 2.0
[cases]
outbox = "outbox.sqlite"
[cases.deadlines]
simple_seconds = 45
general_seconds = 45
difficult_seconds = 45
remind_before_seconds = 25
[cases.verification]
checks = 3
window_seconds = 24
clear_checks = 2
[telemetry]
metrics_listen = "127.0.0.1:{status_port}"
[dispatch]
url = "{platform}"
bearer_token = "{TOKEN}"
retry_initial_seconds = 0.5
retry_max_seconds = 2.0
breaker_open_seconds = 1.0
[dispatch.status]
feed_url = "{feed}"
poll_seconds = 1.0
[[dispatch.targets]]
id = "night-patrol"
name = "社保大队夜间车巡"
url = "{night}"
bearer_token = "{TOKEN}"
[[dispatch.targets.routes]]
hours = ["20:00-08:00"]
"#,
        offset = night_offset(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
        feed = platform.replace("/api/v1/cases", "/api/v1/status-events"),
    );
    let path = dir.join("loop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// (case id, camera id, status) of every case the platform holds.
fn platform_cases(db: &Path) -> Vec<(String, String, String)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let Ok(mut stmt) = conn.prepare("SELECT id, camera, status FROM received") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Updates the platform stored: case id → kind → (distinct updates, POSTs received).
fn platform_updates(db: &Path) -> HashMap<String, HashMap<String, (i64, i64)>> {
    let mut out: HashMap<String, HashMap<String, (i64, i64)>> = HashMap::new();
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return out;
    };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let Ok(mut stmt) = conn.prepare(
        "SELECT case_id, kind, COUNT(*), SUM(deliveries) FROM case_update GROUP BY case_id, kind",
    ) else {
        return out;
    };
    let rows: Vec<(String, String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (case, kind, n, posts) in rows {
        out.entry(case).or_default().insert(kind, (n, posts));
    }
    out
}

fn advance(http: &reqwest::blocking::Client, base: &str, case: &str, status: &str) {
    let r = http
        .post(format!("{base}/api/v1/cases/{case}/status"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "status": status, "note": "test" }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{case} → {status}: {}", r.status());
}

fn first_case_of(db: &Path, camera: &str) -> Option<String> {
    platform_cases(db)
        .into_iter()
        .find(|(_, c, _)| c == camera)
        .map(|(id, _, _)| id)
}

fn kind_count(db: &Path, case: &str, kind: &str) -> i64 {
    platform_updates(db)
        .get(case)
        .and_then(|k| k.get(kind))
        .map_or(0, |(n, _)| *n)
}

#[test]
fn the_platform_loop_verifies_reopens_reminds_and_escalates_across_an_outage_and_a_kill() {
    let _guard = crate::support::exclusive();
    let dir = TempDir::new("platform-loop");
    // Gone: persons for 20 s (the case, then handled), then nobody: the re-check passes.
    let gone = make_clip(&dir.0, "gone.mp4", 20, 300);
    // Stays: persons throughout: the re-check fails and the case is reopened.
    let stays = make_clip(&dir.0, "stays.mp4", 300, 300);
    // Leaves: persons for 12 s, then nobody, and nobody acts: self-resolved.
    let leaves = make_clip(&dir.0, "leaves.mp4", 12, 300);
    let port = free_port();
    let platform_db = dir.path("platform.sqlite");
    let platform = TestReceiver::start(&platform_db, &format!("127.0.0.1:{port}"));
    let night_db = dir.path("night.sqlite");
    let night = TestReceiver::start(&night_db, "127.0.0.1:0");
    let config = config(
        &dir.0,
        &[("gone", &gone), ("stays", &stays), ("leaves", &leaves)],
        &platform.cases_url(),
        &night.cases_url(),
        free_port(),
    );
    let check = gridwatch()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut run = spawn_run(&config, &dir.0, "first", 5.0);
    wait_running(&dir.0, "first");
    let base = platform.base.clone();
    let http = reqwest::blocking::Client::new();

    // 1. Delivered, then 派遣 and 处置 for the two handled cases.
    assert!(
        wait_until(Duration::from_secs(40), || ["gone", "stays", "leaves"]
            .iter()
            .all(|c| first_case_of(&platform_db, c).is_some())),
        "a case per camera at the platform"
    );
    let (a, b, c) = (
        first_case_of(&platform_db, "gone").unwrap(),
        first_case_of(&platform_db, "stays").unwrap(),
        first_case_of(&platform_db, "leaves").unwrap(),
    );
    for case in [&a, &b] {
        advance(&http, &base, case, "dispatched");
        advance(&http, &base, case, "handling");
    }
    // 2. The re-checks: A's problem goes at 20 s (核查通过); B's stays (reopened); C ends alone.
    assert!(
        wait_until(Duration::from_secs(60), || kind_count(
            &platform_db,
            &a,
            "verified"
        ) == 1
            && kind_count(&platform_db, &b, "reopened") == 1
            && kind_count(&platform_db, &c, "self_resolved") == 1),
        "verification and self-resolution updates: {:?}",
        platform_updates(&platform_db)
    );
    // 3. The platform goes away for 30 s; meanwhile B's reminder and escalation fall due, and
    //    gridwatch is killed with -9 and started again.
    drop(platform);
    std::thread::sleep(Duration::from_secs(12));
    let _ = run.kill();
    let _ = run.wait();
    let mut run = spawn_run(&config, &dir.0, "second", 5.0);
    wait_running(&dir.0, "second");
    std::thread::sleep(Duration::from_secs(18));
    let platform = TestReceiver::start(&platform_db, &format!("127.0.0.1:{port}"));
    assert!(
        wait_until(Duration::from_secs(60), || kind_count(
            &platform_db,
            &b,
            "reminder"
        ) == 1
            && kind_count(&platform_db, &b, "escalated") == 1),
        "reminder and escalation of the reopened case: {:?}",
        platform_updates(&platform_db)
    );
    // Let anything still owed arrive, then stop.
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let _ = run.wait();

    // Exactly once: one update of each kind per case, whatever was repeated.
    let updates = platform_updates(&platform_db);
    for (case, kinds) in &updates {
        for (kind, (n, _posts)) in kinds {
            assert_eq!(*n, 1, "{case} {kind}: one update");
        }
    }
    assert!(
        updates.get(&a).is_none_or(|k| !k.contains_key("reopened")),
        "A was not reopened"
    );
    assert!(
        updates.get(&b).is_none_or(|k| !k.contains_key("verified")),
        "B was not verified"
    );
    let statuses: HashMap<String, String> = platform_cases(&platform_db)
        .into_iter()
        .map(|(id, _, s)| (id, s))
        .collect();
    assert_eq!(statuses[&a], "verified", "核查通过");
    assert_eq!(statuses[&b], "dispatched", "reopened: back to 派遣");
    assert_eq!(statuses[&c], "closed", "self-resolved");
    // The escalation names the station that leads difficult problems.
    let conn = rusqlite::Connection::open(&platform_db).unwrap();
    let station: Option<String> = conn
        .query_row(
            "SELECT station FROM case_update WHERE case_id = ?1 AND kind = 'escalated'",
            [&b],
            |r| r.get(0),
        )
        .unwrap();
    assert!(station.is_some_and(|s| s.contains("第一联勤联动工作站")));
    // At the right times: the deadline is the case's confirmation + 45 s (the configured limit,
    // computed here from what the platform received), the reminder within 25 s before it, the
    // escalation at it (a little later: gridwatch was restarting then).
    let rfc = |s: String| {
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let confirmed = rfc(conn
        .query_row(
            "SELECT confirmed_at FROM received WHERE id = ?1",
            [&b],
            |r| r.get(0),
        )
        .unwrap());
    let update_time = |kind: &str| -> (time::OffsetDateTime, time::OffsetDateTime) {
        let (at, deadline): (String, String) = conn
            .query_row(
                "SELECT at, deadline_at FROM case_update WHERE case_id = ?1 AND kind = ?2",
                [&b, kind],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (rfc(at), rfc(deadline))
    };
    let second = time::Duration::seconds(1);
    let (reminded_at, deadline) = update_time("reminder");
    let expected = confirmed + time::Duration::seconds(45);
    assert!(
        (deadline - expected).abs() <= second,
        "deadline {deadline} vs {expected}"
    );
    assert!(
        reminded_at >= deadline - time::Duration::seconds(25) - second && reminded_at < deadline,
        "reminder at {reminded_at}, deadline {deadline}"
    );
    let (escalated_at, _) = update_time("escalated");
    assert!(
        escalated_at >= deadline && escalated_at <= deadline + time::Duration::seconds(15),
        "escalation at {escalated_at}, deadline {deadline}"
    );
    // Night: every case also went to the night target, once; nothing lost from the outbox.
    let night_cases = crate::dispatch_support::received(&night_db);
    for case in [&a, &b, &c] {
        assert!(night_cases.contains_key(case.as_str()), "{case} at night");
    }
    let committed = crate::dispatch_support::committed(&dir.path("outbox.sqlite"));
    assert!(
        committed.values().all(|s| s == "delivered"),
        "{committed:?}"
    );
    for id in committed.keys() {
        assert!(
            statuses.contains_key(id) && night_cases.contains_key(id),
            "{id} delivered to both"
        );
    }
    drop(platform);
    drop(night);
}

/// The webhook a platform calls: a signed event is stored once (a replay of it changes
/// nothing), a `handling` status starts a re-check, and unsigned, wrongly signed or stale
/// calls are refused.
#[test]
fn the_status_webhook_takes_signed_events_once_and_refuses_the_rest() {
    use gridwatch::cases::outbox::Outbox;
    use gridwatch::dispatch::status_back::{StatusSink, webhook_routes};
    use gridwatch_case::platform::{PlatformStatus, SIGNATURE_HEADER, StatusEvent, sign};
    use tower::ServiceExt as _;

    let dir = TempDir::new("webhook");
    let db = dir.path("outbox.sqlite");
    let mut outbox = Outbox::open(&db).unwrap();
    let case = crate::dispatch_support::case(1, "cbd");
    let id = case.id.to_string();
    let body = serde_json::to_string(&case).unwrap();
    outbox
        .insert(&id, "crowd_gathering", &case.camera.id, &body, &[1, 2, 3])
        .unwrap();
    let rechecks = gridwatch::recheck::Rechecks::new(gridwatch::recheck::Policy {
        checks: 2,
        window: Duration::from_secs(10),
        clear_checks: 2,
    });
    let secret = "a-shared-secret-of-32-characters";
    let router = webhook_routes(
        StatusSink::new(Outbox::open(&db).unwrap(), rechecks.clone(), true),
        HashMap::from([("primary".to_owned(), secret.to_owned())]),
    );
    let event = |event_id, status| {
        serde_json::to_vec(&StatusEvent {
            event_id,
            case_id: id.clone(),
            status,
            at: time::OffsetDateTime::now_utc(),
            note: None,
        })
        .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let call = |target: &str, body: Vec<u8>, signature: Option<String>| {
        let mut req = axum::http::Request::post(format!("/api/v1/platform/{target}/status"))
            .header("content-type", "application/json");
        if let Some(sig) = signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        rt.block_on(
            router
                .clone()
                .oneshot(req.body(axum::body::Body::from(body)).unwrap()),
        )
        .unwrap()
        .status()
        .as_u16()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let handling = event(7, PlatformStatus::Handling);
    let signed = sign(secret.as_bytes(), now, &handling);
    assert_eq!(call("primary", handling.clone(), Some(signed.clone())), 204);
    assert_eq!(
        call("primary", handling.clone(), Some(signed)),
        204,
        "a replay is acknowledged"
    );
    assert_eq!(call("primary", handling.clone(), None), 401, "unsigned");
    assert_eq!(
        call(
            "primary",
            handling.clone(),
            Some(sign(b"wrong-secret-wrong-secret", now, &handling))
        ),
        401
    );
    assert_eq!(
        call(
            "primary",
            handling.clone(),
            Some(sign(secret.as_bytes(), now - 3600, &handling))
        ),
        401,
        "stale"
    );
    assert_eq!(
        call(
            "elsewhere",
            handling.clone(),
            Some(sign(secret.as_bytes(), now, &handling))
        ),
        404
    );
    // A status of the platform's own that this version cannot read: acknowledged, not stored.
    let own = serde_json::to_vec(&serde_json::json!({
        "event_id": 8, "case_id": id, "status": "suspended", "at": "2026-12-01T08:00:00Z"
    }))
    .unwrap();
    assert_eq!(
        call(
            "primary",
            own.clone(),
            Some(sign(secret.as_bytes(), now, &own))
        ),
        204
    );
    let bad = b"{not json".to_vec();
    assert_eq!(
        call(
            "primary",
            bad.clone(),
            Some(sign(secret.as_bytes(), now, &bad))
        ),
        422
    );
    let view = Outbox::open(&db)
        .unwrap()
        .platform_view(&id, &Default::default())
        .unwrap();
    assert_eq!(view.statuses.len(), 1, "stored once: {:?}", view.statuses);
    assert_eq!(view.statuses[0].status, "handling");
    assert_eq!(view.verifications.len(), 1, "a re-check round opened");
    assert_eq!(rechecks.len(), 1);
    assert!(rechecks.due(&case.camera.id));
}
