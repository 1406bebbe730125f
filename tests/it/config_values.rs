//! Bad numbers in a configuration get an error, never a panic (issue 13, item 4a). A property
//! test writes arbitrary values (NaN, ±inf, 0, negative, huge, tiny, the wrong type) into the
//! numeric fields of every section of the shipped `config/default.toml`, adding the sections it
//! lacks: `Config::from_text` must not panic, and when it accepts, neither may building what
//! `gridwatch run` builds from the configuration at startup. Named cases pin the finding.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gridwatch::config::{Config, ConfigError, EMBEDDED_DEFAULT, EMBEDDED_DEFAULT_DIR};
use gridwatch::infer::Detection;
use gridwatch::infer::kinds::ObjectKind;
use gridwatch::infer::pool::Detections;
use gridwatch::ingest::Frame;
use proptest::prelude::*;
use toml_edit::{DocumentMut, Item, Table};

use crate::support::{TempDir, line_of, repo};

/// What a field holds in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Int,
}

/// Every numeric field the configuration has, by table (`a.b[i].c`, created when absent).
const FIELDS: &[(&str, &str, Kind)] = &[
    // The key area: groups, phases (and their shorthands), cameras, zones.
    ("groups[0]", "analysis_fps", Kind::Float),
    ("groups[2].phases[1]", "analysis_fps", Kind::Float),
    ("groups[2].phases[1]", "crowd_min_persons", Kind::Int),
    (
        "groups[2].phases[2]",
        "crowd_min_duration_seconds",
        Kind::Float,
    ),
    ("cameras[0]", "lat", Kind::Float),
    ("cameras[0]", "lon", Kind::Float),
    ("cameras[0].zones[0]", "min_score", Kind::Float),
    ("cameras[0].zones[1]", "min_overlap_ratio", Kind::Float),
    ("cameras[0].zones[0]", "analysis_fps", Kind::Float),
    // Catalog thresholds, through camera and phase overrides.
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "dwell_seconds",
        Kind::Float,
    ),
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "clear_seconds",
        Kind::Float,
    ),
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "cooldown_seconds",
        Kind::Float,
    ),
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "score_threshold",
        Kind::Float,
    ),
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "stationary_tolerance_ratio",
        Kind::Float,
    ),
    (
        "cameras[0].scenario_overrides.illegal_parking",
        "min_persistence_ratio",
        Kind::Float,
    ),
    (
        "cameras[1].scenario_overrides.nonmotor_parking",
        "min_count",
        Kind::Int,
    ),
    (
        "cameras[1].scenario_overrides.nonmotor_parking",
        "companion_distance_ratio",
        Kind::Float,
    ),
    (
        "cameras[1].scenario_overrides.crowd_gathering",
        "min_persons",
        Kind::Int,
    ),
    (
        "cameras[1].scenario_overrides.crowd_gathering",
        "clear_seconds",
        Kind::Float,
    ),
    (
        "groups[2].phases[1].scenario_overrides.nonmotor_parking",
        "dwell_seconds",
        Kind::Float,
    ),
    (
        "groups[2].phases[1].scenario_overrides.crowd_gathering",
        "min_duration_seconds",
        Kind::Float,
    ),
    // Each stage's section.
    ("model", "score_threshold", Kind::Float),
    ("model", "nms_iou", Kind::Float),
    ("inference", "workers", Kind::Int),
    ("inference", "intra_op_threads", Kind::Int),
    ("inference", "detections_queue_capacity", Kind::Int),
    ("inference", "max_frame_age_ms", Kind::Int),
    ("inference", "cross_model_iou", Kind::Float),
    ("ingest", "stall_timeout_seconds", Kind::Float),
    ("ingest", "reconnect_initial_seconds", Kind::Float),
    ("ingest", "reconnect_max_seconds", Kind::Float),
    ("ingest", "rtsp_timeout_seconds", Kind::Float),
    ("gate", "min_foreground_ratio", Kind::Float),
    ("gate", "periodic_inference_seconds", Kind::Float),
    ("gate", "analysis_width_pixels", Kind::Int),
    ("tracker", "match_iou", Kind::Float),
    ("tracker", "high_score", Kind::Float),
    ("tracker", "max_gap_seconds", Kind::Float),
    ("tracker", "min_hits", Kind::Int),
    ("tracker", "stationary_tolerance_ratio", Kind::Float),
    ("scenarios.crowd_gathering", "min_persons", Kind::Int),
    (
        "scenarios.crowd_gathering",
        "min_duration_seconds",
        Kind::Float,
    ),
    ("scenarios.crowd_gathering", "clear_seconds", Kind::Float),
    ("scenarios.crowd_gathering", "score_threshold", Kind::Float),
    (
        "scenarios.fire_baseline",
        "analysis_width_pixels",
        Kind::Int,
    ),
    ("scenarios.fire_baseline", "min_region_ratio", Kind::Float),
    (
        "scenarios.fire_baseline",
        "fire_min_flicker_ratio",
        Kind::Float,
    ),
    (
        "scenarios.fire_baseline",
        "smoke_min_persistence",
        Kind::Float,
    ),
    (
        "scenarios.fire_baseline",
        "smoke_min_growth_ratio",
        Kind::Float,
    ),
    ("cases", "event_queue_capacity", Kind::Int),
    ("cases", "snapshot_max_width_pixels", Kind::Int),
    ("cases.deadlines", "simple_seconds", Kind::Float),
    ("cases.deadlines", "general_seconds", Kind::Float),
    ("cases.deadlines", "difficult_seconds", Kind::Float),
    ("cases.deadlines", "remind_before_seconds", Kind::Float),
    ("cases.verification", "checks", Kind::Int),
    ("cases.verification", "window_seconds", Kind::Float),
    ("cases.verification", "clear_checks", Kind::Int),
    ("dispatch.status", "poll_seconds", Kind::Float),
    ("dispatch", "timeout_seconds", Kind::Float),
    ("dispatch", "retry_initial_seconds", Kind::Float),
    ("dispatch", "retry_max_seconds", Kind::Float),
    ("dispatch", "breaker_failure_threshold", Kind::Int),
    ("dispatch", "breaker_open_seconds", Kind::Float),
    ("dispatch.targets[0]", "timeout_seconds", Kind::Float),
    ("dispatch.targets[0]", "retry_initial_seconds", Kind::Float),
    ("dispatch.targets[0]", "retry_max_seconds", Kind::Float),
    (
        "dispatch.targets[0]",
        "breaker_failure_threshold",
        Kind::Int,
    ),
    ("dispatch.targets[0]", "breaker_open_seconds", Kind::Float),
    ("review", "auto_dispatch_score", Kind::Float),
    ("review", "review_score", Kind::Float),
    ("review", "rotation_seconds", Kind::Int),
    ("review", "session_hours", Kind::Float),
    ("review", "review_timeout_minutes", Kind::Float),
    ("review", "object_suppression_after_rejections", Kind::Int),
    ("review", "object_suppression_days", Kind::Float),
    (
        "review.scenarios.illegal_parking",
        "auto_dispatch_score",
        Kind::Float,
    ),
    (
        "review.scenarios.illegal_parking",
        "review_score",
        Kind::Float,
    ),
    ("cluster", "lease_ttl_seconds", Kind::Int),
    ("cluster", "fence_margin_seconds", Kind::Float),
    ("cluster", "etcd_timeout_seconds", Kind::Float),
    ("cluster", "poll_interval_ms", Kind::Int),
];

/// The table at `path` (`a.b[i].c`), created (with what a new one must hold) when absent.
fn table_at<'a>(doc: &'a mut DocumentMut, path: &str) -> &'a mut Table {
    let mut t = doc.as_table_mut();
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, i)) => (n, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (seg, None),
        };
        let item = t.entry(name).or_insert_with(|| match index {
            Some(_) => Item::ArrayOfTables(Default::default()),
            None => toml_edit::table(),
        });
        t = match index {
            Some(i) => {
                let list = item.as_array_of_tables_mut().unwrap();
                while list.len() <= i {
                    list.push(Table::new());
                }
                list.get_mut(i).unwrap()
            }
            None => item.as_table_mut().unwrap(),
        };
    }
    // Required fields of the sections the default lacks.
    if path == "cluster" && !t.contains_key("etcd_endpoints") {
        let mut endpoints = toml_edit::Array::new();
        endpoints.push("http://127.0.0.1:2379");
        t.insert("etcd_endpoints", toml_edit::value(endpoints));
    }
    if path == "dispatch.targets[0]" && !t.contains_key("id") {
        t.insert("id", toml_edit::value("neighbour"));
        t.insert("url", toml_edit::value("http://127.0.0.1:9/api/v1/cases"));
    }
    t
}

/// A value written into the file: mostly of the field's type, sometimes of the other.
#[derive(Debug, Clone)]
enum Num {
    F(f64),
    I(i64),
}

/// Floats at and past every edge a configured number meets: not a number, infinite, signed
/// zero, subnormal, past `Duration` (u64::MAX seconds), just past a day and a week, huge.
const SPECIAL_FLOATS: [f64; 18] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    -1.0,
    5e-324,
    1e-300,
    1e-9,
    0.5,
    86_400.000_001,
    604_800.1,
    1e9,
    9.3e15,
    1.8446744073709552e19,
    1e300,
    f64::MAX,
    f64::MIN,
];

/// Integers at and past every edge: zero, negative, past u32 and usize bounds of the fields.
const SPECIAL_INTS: [i64; 11] = [
    0,
    -1,
    1,
    65_537,
    1_000_000,
    4_000_000_000,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
    i64::MAX / 1000,
];

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(SPECIAL_FLOATS.to_vec()),
        // Plausible values, so that the other edits of a case are often accepted.
        3 => 0.0..2.0f64,
        1 => -1e6..1e6f64,
        1 => any::<f64>(),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => prop::sample::select(SPECIAL_INTS.to_vec()),
        3 => 1..20i64,
        1 => any::<i64>(),
    ]
}

fn value_for(kind: Kind) -> impl Strategy<Value = Num> {
    let native = match kind {
        Kind::Float => float().prop_map(Num::F).boxed(),
        Kind::Int => int().prop_map(Num::I).boxed(),
    };
    let other = match kind {
        Kind::Float => int().prop_map(Num::I).boxed(),
        Kind::Int => float().prop_map(Num::F).boxed(),
    };
    prop_oneof![8 => native, 1 => other]
}

/// One to four fields changed, and whether the second camera joins the group with phases (so
/// that phase overrides meet a camera at run time).
fn edits() -> impl Strategy<Value = (Vec<(usize, Num)>, bool)> {
    let one = (0..FIELDS.len()).prop_flat_map(|i| (Just(i), value_for(FIELDS[i].2)));
    (prop::collection::vec(one, 1..=4), any::<bool>())
}

fn edited(changes: &[(usize, Num)], phased_camera: bool) -> String {
    let mut doc: DocumentMut = EMBEDDED_DEFAULT.parse().unwrap();
    if phased_camera {
        let cam = table_at(&mut doc, "cameras[1]");
        cam.insert("unit", toml_edit::value("hemu"));
        cam.insert("group", toml_edit::value("hemu-patrol"));
    }
    for (i, v) in changes {
        let (path, key, _) = FIELDS[*i];
        let t = table_at(&mut doc, path);
        match v {
            Num::F(f) => t.insert(key, toml_edit::value(*f)),
            Num::I(n) => t.insert(key, toml_edit::value(*n)),
        };
    }
    doc.to_string()
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_text(text, "values.toml", Path::new(EMBEDDED_DEFAULT_DIR))
}

/// A small grey frame of camera `camera` at stream time `t`.
fn frame(camera: usize, id: &Arc<str>, seq: u64, t: f64) -> Frame {
    let (w, h) = (64u32, 48u32);
    Frame::from_rgb(
        camera,
        id.clone(),
        seq,
        t,
        w,
        h,
        vec![(seq % 200) as u8; (w * h * 3) as usize],
    )
    .expect("gstreamer initialises")
}

fn object(kind: ObjectKind, bbox: [f32; 4]) -> Detection {
    Detection {
        class_id: 0,
        label: Arc::from(kind.as_str()),
        kind,
        score: 0.9,
        bbox,
    }
}

thread_local! {
    /// The request timeouts a `Delivery` was already built with.
    static TIMEOUTS_SEEN: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// What `gridwatch run` builds from an accepted configuration before and while frames flow
/// (src/run.rs, src/dispatch/mod.rs, src/cluster/mod.rs, src/review/mod.rs), short of the
/// threads, sockets and etcd: none of it may panic.
fn start_up(config: &Config, outbox: &Path) {
    let (model_w, model_h) = (416, 416);
    let nows = [
        time::OffsetDateTime::now_utc(),
        time::macros::datetime!(2026-12-15 03:00 UTC),
        time::macros::datetime!(2027-06-01 13:00 UTC),
    ];
    for i in 0..config.area.cameras.len() {
        // A plan that cannot be made is an error the run reports, not a panic.
        let _ =
            gridwatch::ingest::CameraPlan::new(&config.area, &config.ingest, i, model_w, model_h);
        for now in nows {
            let _ = config.area.profile_at(i, now);
        }
    }
    let ingest = &config.ingest;
    let _ = (ingest.stall_timeout(), ingest.rtsp_timeout());
    for attempt in [0, 1, 10, 30, u32::MAX] {
        let _ = gridwatch::ingest::reconnect_delay(
            attempt,
            ingest.reconnect_initial(),
            ingest.reconnect_max(),
        );
    }

    // Mailboxes, queues, gates: run.rs sizes them from the settings.
    let ids: Vec<Arc<str>> = config
        .area
        .cameras
        .iter()
        .map(|c| Arc::from(c.id.as_str()))
        .collect();
    let mailboxes = gridwatch::infer::pool::Mailboxes::new(
        ids.clone(),
        config.ingest.pace,
        config.inference.max_frame_age(),
    );
    let _ = crossbeam_channel::bounded::<u8>(config.inference.detections_queue_capacity.max(1));
    let _ = crossbeam_channel::bounded::<u8>(config.cases.event_queue_capacity.max(1));
    let mut gate = gridwatch::gate::MotionGate::new(config.gate.clone()).expect("gate");
    for (seq, t) in [0.0, 0.5, 1e6, f64::MAX].into_iter().enumerate() {
        let _ = gate.decide(&frame(0, &ids[0], seq as u64, t));
    }
    let _ =
        gridwatch::gate::GatedSink::new(&config.area, 0, &config.gate, mailboxes).expect("sink");
    let mut fire =
        gridwatch::scenarios::fire::FireBaseline::new(config.scenarios.fire_baseline.clone())
            .expect("fire baseline");
    let mut found = Vec::new();
    for seq in 0..6 {
        let _ = fire.detect(&frame(0, &ids[0], seq, seq as f64), &mut found);
    }

    // The scenario stage, fed a crowd and parked cars in camera 0's zones, and the case stage's
    // evidence for what fires.
    let mut engine = gridwatch::scenarios::ScenarioEngine::new(config.scenario_setup());
    let crowd: Vec<Detection> = (0..12)
        .map(|k| {
            let x = 0.05 + 0.05 * k as f32;
            object(ObjectKind::Person, [x, 0.5, x + 0.04, 0.7])
        })
        .chain([object(ObjectKind::Car, [0.75, 0.05, 0.9, 0.2])])
        .collect();
    let mut events = Vec::new();
    for (seq, t) in [0.0, 1.0, 50.0, 1e4, 1e7, 1e7 + 1.0]
        .into_iter()
        .enumerate()
    {
        let d = Detections {
            frame: frame(0, &ids[0], seq as u64, t),
            objects: crowd.clone(),
            queue_seconds: 0.0,
            times: Default::default(),
            probe: None,
        };
        engine.evaluate(d, |e| events.push(e));
    }
    for e in &events {
        let _ = gridwatch::cases::build(e, config.cases.snapshot_max_width_pixels);
    }

    // Tiers, routing, the console's configuration.
    let tiers = gridwatch::cases::tiers::Tiers::new(config.review.as_ref().map(|r| r.tiers()));
    for id in config.catalog.ids() {
        let _ = tiers.decide(id, 0.5);
    }
    let _ = (
        config.dispatch.routing(),
        config.unrouted(),
        config.console_config(),
    );

    // Delivery per target: its client's timeouts, its breaker and its backoff.
    for settings in config.dispatch.per_target() {
        let _ = (settings.timeout(), settings.breaker_open());
        let _ = Instant::now() + settings.breaker_open();
        for attempts in [0, 1, 10, 30, u32::MAX] {
            let _ = gridwatch::dispatch::backoff_ms(
                attempts,
                settings.retry_initial_seconds,
                settings.retry_max_seconds,
            );
        }
        // The client depends on the timeout only; building one (TLS roots and all) is slow,
        // so once per distinct value.
        let fresh =
            TIMEOUTS_SEEN.with(|seen| seen.borrow_mut().insert(settings.timeout_seconds.to_bits()));
        if !fresh {
            continue;
        }
        let outbox = gridwatch::cases::outbox::Outbox::open(outbox).expect("outbox");
        let url = settings
            .url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:9/api/v1/cases".into());
        gridwatch::dispatch::Delivery::new(settings, url, outbox).expect("delivery");
    }

    // The console: a login's session, the held cases' release time (run.rs computes it inline
    // from `review_timeout_minutes`; the same sum through the settings' own conversion).
    if let Some(r) = &config.review {
        let ttl = r.session_ttl();
        let _ = SystemTime::now() + ttl;
        let _ = i64::try_from(ttl.as_millis()).expect("session in milliseconds");
        let timeout_ms = i64::try_from(r.review_timeout().as_millis()).expect("timeout in ms");
        // A learned suppression's expiry is added to the clock at each rejection.
        let learning = r.object_learning();
        assert!(
            std::time::SystemTime::now()
                .checked_add(learning.lasts)
                .is_some(),
            "learned suppression expiry overflows"
        );
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        assert!(
            (now_ms as i64).checked_sub(timeout_ms).is_some(),
            "release time overflows"
        );
        assert!(
            (r.review_timeout_minutes * 60_000.0) as i64 <= timeout_ms.saturating_add(1),
            "run.rs's inline conversion agrees with review_timeout()"
        );
    }

    // Cluster mode: the controller and the lease timings it derives.
    if let Some(c) = &config.cluster {
        let ownership =
            gridwatch::cluster::Ownership::new("node-a".into(), config.area.group_ids());
        let _ = gridwatch::cluster::Controller::new(c.clone(), ownership, &config.area.centre.name);
        let ttl = c.lease_ttl();
        let _ = Instant::now() + ttl + Duration::from_secs(2);
        let _ = (c.etcd_timeout(), c.fence_margin(), c.poll_interval());
        assert!(c.fence_margin() <= ttl && c.etcd_timeout() <= ttl);
    }
}

/// Loads `text` and, when it is accepted, starts it up: `Err` with the panic's message if
/// either panicked, else whether the configuration was accepted.
fn outcome(text: &str, outbox: &Path) -> Result<bool, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match load(text) {
        Ok(c) => {
            start_up(&c, outbox);
            true
        }
        Err(e) => {
            assert!(
                e.problems()
                    .iter()
                    .any(|p| !p.field.is_empty() && p.line > 1),
                "a refusal names the edited field and its line: {e}"
            );
            false
        }
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Every field with every edge value, alone (and the values of the other type): exhaustive
/// where the property test samples.
#[test]
fn every_field_with_every_edge_value() {
    let dir = TempDir::new("config-edges");
    let outbox = dir.path("outbox.sqlite");
    let mut panics = Vec::new();
    let mut accepted = 0;
    for (i, (path, key, _)) in FIELDS.iter().enumerate() {
        // The field's own type at every edge, and a few of the other type.
        let values: Vec<Num> = match FIELDS[i].2 {
            Kind::Float => SPECIAL_FLOATS
                .iter()
                .map(|&f| Num::F(f))
                .chain([0, -1, i64::MAX].map(Num::I))
                .collect(),
            Kind::Int => SPECIAL_INTS
                .iter()
                .map(|&n| Num::I(n))
                .chain([f64::NAN, 0.5, 1e300].map(Num::F))
                .collect(),
        };
        for v in values {
            let text = edited(&[(i, v.clone())], path.starts_with("groups[2]"));
            match outcome(&text, &outbox) {
                Ok(true) => accepted += 1,
                Ok(false) => {}
                Err(panic) => panics.push(format!("{path}.{key} = {v:?}: {panic}")),
            }
        }
    }
    assert!(panics.is_empty(), "panicked:\n{}", panics.join("\n"));
    assert!(accepted > 0, "no edge value was accepted");
}

#[test]
fn arbitrary_numbers_never_panic_check_or_startup() {
    let dir = TempDir::new("config-values");
    let outbox = dir.path("outbox.sqlite");
    // The unmodified default must start, or the property says nothing.
    start_up(&Config::embedded_default().unwrap(), &outbox);
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let accepted = Cell::new(0usize);
    let refused = Cell::new(0usize);
    proptest!(config, |((changes, phased) in edits())| {
        let text = edited(&changes, phased);
        match load(&text) {
            Ok(c) => {
                accepted.set(accepted.get() + 1);
                start_up(&c, &outbox);
            }
            Err(e) => {
                refused.set(refused.get() + 1);
                // A refusal points at an edited field (every edit is below line 1).
                prop_assert!(
                    e.problems().iter().any(|p| !p.field.is_empty() && p.line > 1),
                    "{e}"
                );
            }
        }
    });
    // Both sides of the property were exercised.
    let (accepted, refused) = (accepted.get(), refused.get());
    eprintln!("configurations accepted {accepted}, refused {refused}");
    assert!(
        accepted > 0 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
}

/// The problem of `field` in `text`, or a panic naming what was reported instead.
fn problem(text: &str, field: &str) -> gridwatch::config::ConfigProblem {
    let Err(e) = load(text) else {
        panic!("`{field}` must be refused");
    };
    e.problems()
        .iter()
        .find(|p| p.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("no problem at `{field}`: {e}"))
}

fn with(path: &str, key: &str, v: Num) -> String {
    let i = FIELDS
        .iter()
        .position(|(p, k, _)| *p == path && *k == key)
        .unwrap_or_else(|| panic!("{path}.{key} is not in FIELDS"));
    edited(&[(i, v)], false)
}

#[test]
fn an_infinite_rtsp_timeout_is_refused_with_its_line_and_range() {
    let text = with("ingest", "rtsp_timeout_seconds", Num::F(f64::INFINITY));
    let p = problem(&text, "ingest.rtsp_timeout_seconds");
    assert_eq!(p.line, line_of(&text, "rtsp_timeout_seconds = inf"), "{p}");
    assert!(p.message.contains("[0.1, 86400]"), "{p}");
}

#[test]
fn gridwatch_check_refuses_an_infinite_rtsp_timeout() {
    let dir = TempDir::new("check-inf");
    let path = dir.path("area.toml");
    // The default with its relative paths made absolute, and the finding's value.
    let text = EMBEDDED_DEFAULT
        .replace("\"../", &format!("\"{}/", repo("").display()))
        .replace("rtsp_timeout_seconds = 5.0", "rtsp_timeout_seconds = inf");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = line_of(&text, "rtsp_timeout_seconds = inf");
    assert!(
        stderr.contains(&format!("area.toml:{line}:"))
            && stderr.contains("field `ingest.rtsp_timeout_seconds`")
            && stderr.contains("got inf"),
        "{stderr}"
    );
    assert!(stderr.contains("1 problem(s)"), "{stderr}");
}

#[test]
fn gridwatch_run_refuses_an_infinite_drain_timeout_before_starting() {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["run", "--drain-timeout-seconds", "inf"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("[0, 86400]"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Values that used to pass `check` and are nonsense or dangerous at run time, each refused
/// at its own field.
#[test]
fn the_gaps_are_closed() {
    let cases: &[(&str, &str, Num, &str)] = &[
        // `inf` tracks never die; a week-long dwell is the limit.
        (
            "tracker",
            "max_gap_seconds",
            Num::F(f64::INFINITY),
            "tracker.max_gap_seconds",
        ),
        (
            "tracker",
            "stationary_tolerance_ratio",
            Num::F(f64::INFINITY),
            "tracker.stationary_tolerance_ratio",
        ),
        (
            "tracker",
            "min_hits",
            Num::I(4_000_000_000),
            "tracker.min_hits",
        ),
        (
            "cameras[0].scenario_overrides.illegal_parking",
            "cooldown_seconds",
            Num::F(f64::INFINITY),
            "cameras[0].scenario_overrides.illegal_parking",
        ),
        (
            "cameras[0].scenario_overrides.illegal_parking",
            "stationary_tolerance_ratio",
            Num::F(f64::NAN),
            "cameras[0].scenario_overrides.illegal_parking",
        ),
        (
            "cameras[1].scenario_overrides.nonmotor_parking",
            "companion_distance_ratio",
            Num::F(-1.0),
            "cameras[1].scenario_overrides.nonmotor_parking",
        ),
        (
            "groups[2].phases[2]",
            "crowd_min_duration_seconds",
            Num::F(1e300),
            "groups[2].phases[2].crowd_min_duration_seconds",
        ),
        (
            "groups[2].phases[1]",
            "crowd_min_persons",
            Num::I(i64::MAX),
            "groups[2].phases[1].crowd_min_persons",
        ),
        (
            "groups[0]",
            "analysis_fps",
            Num::F(1e-300),
            "groups[0].analysis_fps",
        ),
        (
            "ingest",
            "stall_timeout_seconds",
            Num::F(5e-324),
            "ingest.stall_timeout_seconds",
        ),
        ("cameras[0]", "lat", Num::F(f64::NAN), "cameras[0].lat"),
        (
            "scenarios.fire_baseline",
            "smoke_min_growth_ratio",
            Num::F(f64::INFINITY),
            "scenarios.fire_baseline.smoke_min_growth_ratio",
        ),
        (
            "dispatch",
            "timeout_seconds",
            Num::F(-5.0),
            "dispatch.timeout_seconds",
        ),
        (
            "dispatch",
            "breaker_failure_threshold",
            Num::I(i64::from(u32::MAX)),
            "dispatch.breaker_failure_threshold",
        ),
        // A huge review timeout overflowed the release time and released every held case.
        (
            "review",
            "review_timeout_minutes",
            Num::F(1e300),
            "review.review_timeout_minutes",
        ),
        (
            "review",
            "session_hours",
            Num::F(1e-9),
            "review.session_hours",
        ),
        (
            "review",
            "rotation_seconds",
            Num::I(4_000_000_000),
            "review.rotation_seconds",
        ),
        (
            "cluster",
            "lease_ttl_seconds",
            Num::I(4_000_000_000),
            "cluster.lease_ttl_seconds",
        ),
    ];
    let mut missed = Vec::new();
    for (path, key, v, field) in cases {
        let text = with(path, key, v.clone());
        match load(&text) {
            Ok(_) => missed.push(format!("{path}.{key} = {v:?} accepted")),
            Err(e) => match e.problems().iter().find(|p| p.field == *field) {
                None => missed.push(format!("{path}.{key} = {v:?}: nothing at `{field}`: {e}")),
                Some(p) if p.line <= 1 || !(p.message.contains('[') || p.message.contains('(')) => {
                    missed.push(format!("{path}.{key} = {v:?}: no line or range: {p}"))
                }
                Some(_) => {}
            },
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}
