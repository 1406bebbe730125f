//! Cross-region routing with the real pipeline, real SQLite and real HTTP over loopback: cases
//! go to the targets their routes pick, and one target's outage does not hold up another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::dispatch_support::{
    TOKEN, TestReceiver, free_port, received, spawn_run, terminate, terminate_after_exit,
    wait_running, wait_until,
};
use crate::support::{TempDir, line_of, repo};

/// Fast retries so a recovered target is retried within a second or two.
const FAST_RETRY: &str = "timeout_seconds = 5.0\nretry_initial_seconds = 0.2\nretry_max_seconds = 1.5\nbreaker_failure_threshold = 3\nbreaker_open_seconds = 1.0";

/// Two cameras on the sample clip. `cbd-cam` (unit `cbd`) has a `border` zone (left half) and
/// an untagged one (right half); `res-cam` (unit `res`) has one zone, also tagged `border`.
/// `[dispatch]` is the town's platform; `targets` is appended (the `[[dispatch.targets]]`).
fn write_config(dir: &Path, town_url: &str, looped: bool, targets: &str) -> PathBuf {
    let clip = repo("sample-streams/vtest.mp4");
    let text = format!(
        r#"
[centre]
name = "routing test"
[[units]]
id = "cbd"
name = "商业商务区"
[[units]]
id = "res"
name = "居住区"
[[groups]]
id = "g-cbd"
name = "巡查编组"
unit = "cbd"
analysis_fps = 2.0
[[groups]]
id = "g-res"
name = "居住区编组"
unit = "res"
analysis_fps = 2.0
[[cameras]]
id = "cbd-cam"
name = "边界"
unit = "cbd"
group = "g-cbd"
uri = "{clip}"
loop = {looped}
[[cameras.zones]]
id = "left"
tags = ["border"]
polygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras.zones]]
id = "right"
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras]]
id = "res-cam"
name = "小区"
unit = "res"
group = "g-res"
uri = "{clip}"
loop = {looped}
[[cameras.zones]]
id = "all"
tags = ["border"]
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[model]
card = "{card}"
[inference]
workers = 1
[ingest]
pace = "fast"
[scenarios.crowd_gathering]
min_persons = 4
min_duration_seconds = 0.5
clear_seconds = 0.5
[cases]
outbox = "outbox.sqlite"
[dispatch]
id = "town"
url = "{town_url}"
bearer_token = "{TOKEN}"
{FAST_RETRY}
{targets}
"#,
        clip = clip.display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One stored case: where it came from and its delivery per target.
#[derive(Debug)]
struct Stored {
    camera: String,
    zone: String,
    /// Unix ms of the commit.
    stored_ms: i64,
    /// target → (state, delivered at, Unix ms).
    deliveries: BTreeMap<String, (String, Option<i64>)>,
}

/// Every case of the outbox with its deliveries, read straight from SQLite.
fn outbox(path: &Path) -> BTreeMap<String, Stored> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut out = BTreeMap::new();
    let Ok(mut stmt) = conn.prepare(
        "SELECT id, camera, json_extract(body, '$.zone.id'),
                CAST(ROUND((julianday(created_at) - 2440587.5) * 86400000) AS INTEGER)
         FROM cases",
    ) else {
        return out;
    };
    let rows: Vec<(String, String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, camera, zone, stored_ms) in rows {
        out.insert(
            id,
            Stored {
                camera,
                zone,
                stored_ms,
                deliveries: BTreeMap::new(),
            },
        );
    }
    let mut stmt = conn
        .prepare("SELECT case_id, target, state, delivered_at_ms FROM deliveries")
        .unwrap();
    let rows: Vec<(String, String, String, Option<i64>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, target, state, at) in rows {
        if let Some(c) = out.get_mut(&id) {
            c.deliveries.insert(target, (state, at));
        }
    }
    out
}

fn ids(set: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    set.into_iter().collect()
}

/// Border-zone cases of the `cbd` unit go to both the town and 徐泾; the right half of that
/// camera (no tag) and the `res` camera (tagged, but another unit) go to the town only.
#[test]
fn border_zone_cases_go_to_both_targets_and_the_rest_only_to_the_town() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("routing-sets");
    let town = TestReceiver::start(&dir.path("town.sqlite"), "127.0.0.1:0");
    let xujing = TestReceiver::start(&dir.path("xujing.sqlite"), "127.0.0.1:0");
    let config = write_config(
        &dir.0,
        &town.cases_url(),
        false,
        &format!(
            r#"
[[dispatch.targets]]
id = "xujing"
name = "徐泾镇城运中心"
url = "{}"
bearer_token = "{TOKEN}"
[[dispatch.targets.routes]]
units = ["cbd"]
zone_tags = ["border"]
scenarios = ["crowd_gathering"]
"#,
            xujing.cases_url()
        ),
    );
    let run = spawn_run(&config, &dir.0, "run", 30.0);
    let out = terminate_after_exit(run, Duration::from_secs(240));
    println!("gridwatch: {}", out.trim());

    let stored = outbox(&dir.path("outbox.sqlite"));
    let border: BTreeSet<String> = stored
        .iter()
        .filter(|(_, c)| c.camera == "cbd-cam" && c.zone == "left")
        .map(|(id, _)| id.clone())
        .collect();
    let others: BTreeSet<String> = stored
        .keys()
        .filter(|id| !border.contains(*id))
        .cloned()
        .collect();
    let count = |cam: &str, zone: &str| {
        stored
            .values()
            .filter(|c| c.camera == cam && c.zone == zone)
            .count()
    };
    println!(
        "cases: cbd-cam/left (border) {}, cbd-cam/right {}, res-cam/all (border, unit res) {}",
        count("cbd-cam", "left"),
        count("cbd-cam", "right"),
        count("res-cam", "all")
    );
    assert!(
        count("cbd-cam", "left") > 0
            && count("cbd-cam", "right") > 0
            && count("res-cam", "all") > 0,
        "each kind of case occurred at least once"
    );
    // Routing decided at commit: exactly these deliveries, all made.
    for (id, c) in &stored {
        let want: &[&str] = if border.contains(id) {
            &["town", "xujing"]
        } else {
            &["town"]
        };
        assert_eq!(
            c.deliveries.keys().map(String::as_str).collect::<Vec<_>>(),
            want,
            "{id} ({}/{})",
            c.camera,
            c.zone
        );
        assert!(
            c.deliveries.values().all(|(s, _)| s == "delivered"),
            "{id}: {:?}",
            c.deliveries
        );
    }
    // And the receivers got exactly these sets, each case once.
    let got_town = received(&town.db);
    let got_xujing = received(&xujing.db);
    assert_eq!(ids(got_town.keys().cloned()), ids(stored.keys().cloned()));
    assert_eq!(ids(got_xujing.keys().cloned()), border);
    assert!(got_xujing.keys().all(|id| !others.contains(id)));
    assert!(
        got_town
            .values()
            .chain(got_xujing.values())
            .all(|n| *n == 1)
    );
}

/// A peer that accepts connections and never answers (a centre whose network swallows
/// requests) until dropped: every request to it ends in the client's timeout.
struct BlackHole {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start(port: u16) -> Self {
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((socket, _)) = accepted {
                                held.push(socket);
                            }
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        BlackHole {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 徐泾's centre swallows every request for 30 s (each attempt waits for its 15 s timeout,
/// then its breaker opens). The town's platform still gets each case within a few seconds of
/// it being stored; once 徐泾 answers again it gets every case routed to it, once.
#[test]
fn one_target_down_for_30_s_does_not_delay_the_other() {
    let _exclusive = crate::support::exclusive();
    let outage = Duration::from_secs(30);
    let dir = TempDir::new("routing-outage");
    let town = TestReceiver::start(&dir.path("town.sqlite"), "127.0.0.1:0");
    let xujing_port = free_port();
    let hole = BlackHole::start(xujing_port);
    let xujing_url = format!("http://127.0.0.1:{xujing_port}/api/v1/cases");
    // 徐泾 takes the border zones; every target inherits [dispatch]'s fast retries.
    let config = write_config(
        &dir.0,
        &town.cases_url(),
        true,
        &format!(
            r#"
[[dispatch.targets]]
id = "xujing"
url = "{xujing_url}"
bearer_token = "{TOKEN}"
timeout_seconds = 15.0
[[dispatch.targets.routes]]
zone_tags = ["border"]
"#
        ),
    );
    let run = spawn_run(&config, &dir.0, "run", 30.0);
    wait_running(&dir.0, "run");
    // The outage counts from the pipeline running, so that a slow start on a loaded machine
    // does not eat it.
    let outage_began = Instant::now();
    let outbox_path = dir.path("outbox.sqlite");
    std::thread::sleep(outage.saturating_sub(outage_began.elapsed()));
    let during = outbox(&outbox_path);
    drop(hole);
    let outage_ms = {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        now_ms as i64
    };
    let xujing = TestReceiver::start(
        &dir.path("xujing.sqlite"),
        &format!("127.0.0.1:{xujing_port}"),
    );
    // The backlog reaches 徐泾 (its breaker probes within a second or two).
    let owed: Vec<String> = during
        .iter()
        .filter(|(_, c)| c.deliveries.contains_key("xujing"))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let got = received(&xujing.db);
            owed.iter().all(|id| got.contains_key(id))
        }),
        "徐泾 got its backlog once back"
    );
    let out = terminate(run, Duration::from_secs(40));
    println!("gridwatch: {}", out.trim());

    let stored = outbox(&outbox_path);
    // The town's deliveries of cases stored during the outage: latency from commit to
    // delivery, from the outbox's own timestamps.
    let mut latencies: Vec<i64> = stored
        .values()
        .filter(|c| c.stored_ms <= outage_ms)
        .filter_map(|c| {
            c.deliveries
                .get("town")
                .and_then(|(_, at)| *at)
                .map(|at| at - c.stored_ms)
        })
        .collect();
    latencies.sort_unstable();
    let routed_xujing = stored
        .values()
        .filter(|c| c.deliveries.contains_key("xujing") && c.stored_ms <= outage_ms)
        .count();
    println!(
        "outage {} s: {} cases stored during it ({} routed to 徐泾); town delivery latency ms: min {:?}, median {:?}, max {:?}",
        outage.as_secs(),
        latencies.len(),
        routed_xujing,
        latencies.first(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    assert!(
        routed_xujing > 0 && latencies.len() > routed_xujing,
        "cases for both targets were stored during the outage"
    );
    // 徐泾's attempts each wait 15 s for a timeout: a town delivery that waited for them would
    // be late by at least that much; half of it leaves room for a loaded machine.
    assert!(
        latencies.iter().all(|ms| *ms < 7_500),
        "the town got each case well within 徐泾's 15 s timeout: {latencies:?}"
    );
    // Nothing lost, nothing twice: each target has exactly its cases.
    let want_xujing: BTreeSet<String> = stored
        .iter()
        .filter(|(_, c)| c.camera == "res-cam" || c.zone == "left")
        .map(|(id, _)| id.clone())
        .collect();
    for (id, c) in &stored {
        assert!(
            c.deliveries.values().all(|(s, _)| s == "delivered"),
            "{id} not delivered everywhere: {:?}",
            c.deliveries
        );
    }
    let got_town = received(&town.db);
    let got_xujing = received(&xujing.db);
    assert_eq!(ids(got_town.keys().cloned()), ids(stored.keys().cloned()));
    assert_eq!(ids(got_xujing.keys().cloned()), want_xujing);
    assert!(
        got_town.values().all(|n| *n == 1),
        "the town never got a case twice"
    );
    // Every failed attempt to 徐泾 was counted under its own target in the log.
    let log = plain(&std::fs::read_to_string(dir.path("run.log")).unwrap());
    assert!(
        log.lines()
            .any(|l| l.contains("delivery failed; will retry") && l.contains("target=xujing")),
        "retries are logged with their target: {}",
        log.lines()
            .filter(|l| l.contains("will retry"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("delivery failed") && l.contains("target=town")),
        "the town never failed"
    );
}

/// Routing mistakes are configuration errors that name the file, line and field; a case no
/// target takes is a warning (`gridwatch check`), not an error.
#[test]
fn routing_mistakes_are_reported_with_their_line_and_field() {
    let dir = TempDir::new("routing-config");
    let load = |targets: &str| {
        let path = write_config(&dir.0, "http://127.0.0.1:9/cases", false, targets);
        let text = std::fs::read_to_string(&path).unwrap();
        (gridwatch::config::Config::load(&path), text)
    };
    let (result, text) = load(
        r#"
[[dispatch.targets]]
id = "town"
url = "http://127.0.0.1:9/a"
[[dispatch.targets]]
id = "xujing"
url = "http://127.0.0.1:9/b"
[[dispatch.targets.routes]]
units = ["nope"]
[[dispatch.targets.routes]]
scenarios = ["no_such_scenario"]
[[dispatch.targets.routes]]
zone_tags = ["coast"]
[[dispatch.targets.routes]]
units = ["res"]
zone_tags = []
"#,
    );
    let err = result.unwrap_err();
    let problems = err.problems();
    // The last line with `needle` (`id = "town"` is also the [dispatch] id above).
    let last_line_of = |needle: &str| {
        text.lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.trim() == needle)
            .map(|i| i + 1)
            .unwrap()
    };
    let find = |field: &str| {
        problems
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("no problem at {field}: {err}"))
    };
    let dup = find("dispatch.targets[0].id");
    assert!(dup.message.contains("duplicate target id `town`"), "{dup}");
    assert_eq!(dup.line, last_line_of(r#"id = "town""#));
    let unit = find("dispatch.targets[1].routes[0].units[0]");
    assert!(
        unit.message.contains("unknown management unit `nope`"),
        "{unit}"
    );
    assert_eq!(unit.line, last_line_of(r#"units = ["nope"]"#));
    let scenario = find("dispatch.targets[1].routes[1].scenarios[0]");
    assert!(scenario.message.contains("unknown scenario"), "{scenario}");
    let never = find("dispatch.targets[1].routes[2]");
    assert!(never.message.contains("can never match"), "{never}");
    let empty = find("dispatch.targets[1].routes[3].zone_tags");
    assert!(empty.message.contains("empty list"), "{empty}");
    assert!(err.to_string().contains("run.toml:"), "{err}");

    // An unknown field in a target is named with its line, like everywhere else.
    let (result, text) = load(
        r#"
[[dispatch.targets]]
id = "xujing"
url = "http://127.0.0.1:9/b"
retries = 3
"#,
    );
    let err = result.unwrap_err();
    let p = &err.problems()[0];
    assert!(p.message.contains("unknown field `retries`"), "{p}");
    assert_eq!(p.line, line_of(&text, "retries = 3"));

    // The town only takes border zones and 徐泾 only the res unit: cbd-cam's right half goes
    // nowhere. Valid, with a warning per gap.
    let (result, _) = load(
        r#"
[[dispatch.routes]]
zone_tags = ["border"]
[[dispatch.targets]]
id = "xujing"
url = "http://127.0.0.1:9/b"
timeout_seconds = 2.5
[[dispatch.targets.routes]]
units = ["res"]
"#,
    );
    let config = result.unwrap();
    let gaps = config.unrouted();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0].contains("camera `cbd-cam` zone `right`"),
        "{gaps:?}"
    );
    assert_eq!(
        config
            .dispatch
            .routing()
            .route("res", &["border".into()], "crowd_gathering", None),
        ["town", "xujing"]
    );
    assert_eq!(
        config
            .dispatch
            .routing()
            .route("cbd", &[], "crowd_gathering", None),
        Vec::<String>::new()
    );
    // `gridwatch check` passes it and says so.
    let out = crate::dispatch_support::gridwatch()
        .args(["check", "--config"])
        .arg(dir.path("run.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning: camera `cbd-cam` zone `right`")
                && l.contains("no dispatch target")),
        "{stdout}"
    );
    // Timing settings a target leaves out are the [dispatch] ones; its own are kept.
    let per = config.dispatch.per_target();
    assert_eq!(per[1].timeout_seconds, 2.5);
    assert_eq!(per[1].retry_max_seconds, config.dispatch.retry_max_seconds);
    assert_eq!(
        per[1].bearer_token, None,
        "the town's token stays with the town"
    );
}

/// `text` without ANSI colour sequences (the log is coloured even in a file).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A reviewer's scenario correction picks the held case's targets again (rules may name
/// scenarios): 徐泾 takes straw burning only, so a crowd case corrected to straw burning goes
/// to both centres, and one corrected back goes to the town only. Real SQLite, the real store.
#[test]
fn a_corrected_scenario_picks_its_dispatch_targets_again() {
    use gridwatch::cases::outbox::{InitialState, NewCase, Outbox};
    use gridwatch::review::auth::{Role, User};
    use gridwatch::review::store::ReviewStore;

    let dir = TempDir::new("routing-review");
    let path = dir.path("outbox.sqlite");
    let catalog = gridwatch::scenarios::catalog::Catalog::load_or_embedded(None).unwrap();
    let burning = catalog.info("straw_burning").unwrap();
    let crowd = catalog.info("crowd_gathering").unwrap();
    let mut outbox = Outbox::open(&path).unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let case = crate::dispatch_support::case(0, "cbd");
        let id = case.id.to_string();
        outbox
            .store(&NewCase {
                id: &id,
                scenario: &case.scenario.id,
                camera: &case.camera.id,
                body: &serde_json::to_string(&case).unwrap(),
                snapshot: b"x",
                state: InitialState::AwaitingReview,
                clean_frame: None,
                targets: &["town".to_owned()],
            })
            .unwrap();
        ids.push(id);
    }
    drop(outbox);
    let store = ReviewStore::open(&path).unwrap();
    let user = User {
        id: 1,
        name: "alice".into(),
        role: Role::Reviewer,
    };
    // The rule as `[dispatch]` routing computes it: the town takes all, 徐泾 straw burning.
    let rules = |case: &gridwatch::cases::Case, scenario: &str| {
        assert_eq!(case.unit.id, "cbd", "the case's own unit is routed");
        Some(if scenario == "straw_burning" {
            vec!["town".to_owned(), "xujing".to_owned()]
        } else {
            vec!["town".to_owned()]
        })
    };
    let deliveries = |id: &str| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT target, state FROM deliveries WHERE case_id = ?1 ORDER BY target")
            .unwrap();
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let pair = |t: &str, s: &str| (t.to_owned(), s.to_owned());

    // Corrected while still held: both centres, still held.
    store
        .change_scenario(&ids[0], &user, &burning, &rules)
        .unwrap();
    assert_eq!(
        deliveries(&ids[0]),
        [pair("town", "held"), pair("xujing", "held")]
    );
    // Confirmed with the scenario set back: the town only, now due.
    store
        .confirm(&ids[0], &user, Some(&crowd), None, &rules)
        .unwrap();
    assert_eq!(deliveries(&ids[0]), [pair("town", "pending")]);
    // Confirmed as straw burning in one step: both centres, due.
    store
        .confirm(&ids[1], &user, Some(&burning), None, &rules)
        .unwrap();
    assert_eq!(
        deliveries(&ids[1]),
        [pair("town", "pending"), pair("xujing", "pending")]
    );
    // A dispatched case is never re-routed: a late correction is refused.
    assert!(
        store
            .change_scenario(&ids[1], &user, &crowd, &rules)
            .is_err()
    );
    assert_eq!(deliveries(&ids[1]).len(), 2);
}
