//! `/metrics` as Prometheus reads it. The real `gridwatch run` over the sample clip stores cases
//! and delivers them to a receiver over loopback; its `/metrics` is fetched over HTTP and linted by
//! `promtool check metrics` (Prometheus' own linter; Debian's `prometheus` package, installed by
//! scripts/setup), which must have nothing to say. Every family declared in src/telemetry.rs has
//! HELP text, and carries it (and its type) wherever it appears.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gridwatch::telemetry::{self, FAMILIES, Kind};

use crate::dispatch_support::{
    TestReceiver, free_port, received, spawn_run, terminate, wait_running, wait_until,
};
use crate::support::{TempDir, exclusive};

/// The names of the `pub const NAME: &str = "gridwatch_…";` declarations in src/telemetry.rs, read
/// from the source so that a name declared without a [`FAMILIES`] entry is noticed.
fn declared_names() -> BTreeSet<&'static str> {
    include_str!("../../src/telemetry.rs")
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"gridwatch_"))
        .map(|l| l.split('"').nth(1).unwrap())
        .collect()
}

#[test]
fn every_declared_metric_family_has_help_text() {
    let declared = declared_names();
    assert!(declared.len() > 30, "declarations found: {declared:?}");
    let described: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    assert_eq!(
        declared, described,
        "every name in src/telemetry.rs has exactly one FAMILIES entry"
    );
    assert_eq!(FAMILIES.len(), described.len(), "no family described twice");
    for f in FAMILIES {
        assert!(
            f.help.trim().len() >= 10,
            "{}: HELP text missing or too short: {:?}",
            f.name,
            f.help
        );
        // Prometheus naming: counters end in `_total`, histograms are in base units (seconds).
        match f.kind {
            Kind::Counter => assert!(f.name.ends_with("_total"), "{}", f.name),
            Kind::Histogram => assert!(f.name.ends_with("_seconds"), "{}", f.name),
            Kind::Gauge => assert!(!f.name.ends_with("_total"), "{}", f.name),
        }
    }
}

/// The clip in a loop as fast as it goes, with a crowd case every second or so
/// (dispatch_support's run configuration), plus the status endpoint.
fn config(dir: &Path, cases_url: &str, status_port: u16) -> std::path::PathBuf {
    crate::dispatch_support::write_run_config(
        dir,
        cases_url,
        true,
        &format!("\n[telemetry]\nmetrics_listen = \"127.0.0.1:{status_port}\""),
    )
}

/// The metric name of a sample line (`name{labels} value` or `name value`), `None` for comments.
fn sample_name(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    line.split(['{', ' ']).next()
}

/// Whether `family` has a sample in `text` (a histogram's as `_sum`, `_count`, `_bucket` too).
fn appears(text: &str, family: &str, kind: Kind) -> bool {
    text.lines().filter_map(sample_name).any(|n| {
        n == family
            || (kind == Kind::Histogram
                && ["_sum", "_count", "_bucket"]
                    .iter()
                    .any(|s| n.strip_suffix(s) == Some(family)))
    })
}

fn scrape(port: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// `promtool check metrics` with `text` on its stdin: exit status and stdout + stderr.
fn promtool_check(text: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): run scripts/setup (Debian package prometheus)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, said)
}

#[test]
fn promtool_finds_nothing_to_lint_in_metrics_of_a_real_run() {
    let _heavy = exclusive();
    let dir = TempDir::new("metrics");
    let receiver = TestReceiver::start(&dir.path("receiver.sqlite"), "127.0.0.1:0");
    let port = free_port();
    let path = config(&dir.0, &receiver.cases_url(), port);
    let child = spawn_run(&path, &dir.0, "metrics", 5.0);
    wait_running(&dir.0, "metrics");

    // Counters, gauges and summaries of every stage: frames analysed, cases stored and delivered.
    let wanted = [
        telemetry::FRAMES_ANALYSED,
        telemetry::FRAMES_GATED,
        telemetry::INFERENCE_SECONDS,
        telemetry::STAGE_SECONDS,
        telemetry::FRAME_LATENCY_SECONDS,
        telemetry::CAMERA_STATE,
        telemetry::EVENTS,
        telemetry::CASES_STORED,
        telemetry::DELIVERIES,
        telemetry::DELIVERY_SECONDS,
        telemetry::OUTBOX_CASES,
    ];
    let kind = |name: &str| FAMILIES.iter().find(|f| f.name == name).unwrap().kind;
    let mut text = String::new();
    let all_there = wait_until(Duration::from_secs(120), || {
        text = scrape(port);
        wanted.iter().all(|&w| appears(&text, w, kind(w))) && !received(&receiver.db).is_empty()
    });
    let missing: Vec<_> = wanted
        .iter()
        .filter(|&&w| !appears(&text, w, kind(w)))
        .collect();
    assert!(all_there, "families never appeared: {missing:?}\n{text}");

    let (status, said) = promtool_check(&text);
    assert!(
        status.success() && said.is_empty(),
        "promtool check metrics exited with {status}:\n{said}\n--- /metrics ---\n{text}"
    );

    // Each declared family that appears has its HELP line and the type it is declared with.
    let mut seen = 0;
    for f in FAMILIES {
        if !appears(&text, f.name, f.kind) {
            continue;
        }
        seen += 1;
        let help = format!("# HELP {} ", f.name);
        assert!(
            text.lines()
                .any(|l| l.strip_prefix(&help).is_some_and(|h| !h.trim().is_empty())),
            "{}: no HELP line\n{text}",
            f.name
        );
        let types: &[&str] = match f.kind {
            Kind::Counter => &["counter"],
            Kind::Gauge => &["gauge"],
            Kind::Histogram => &["summary", "histogram"],
        };
        assert!(
            types
                .iter()
                .any(|t| text.lines().any(|l| l == format!("# TYPE {} {t}", f.name))),
            "{}: not exported as {types:?}\n{text}",
            f.name
        );
    }
    assert!(seen >= wanted.len(), "{seen} families seen");

    // Nothing is exported under a name telemetry.rs does not declare.
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = l.split(' ').next().unwrap();
        assert!(
            FAMILIES.iter().any(|f| f.name == name),
            "{name} is exported but not declared in src/telemetry.rs"
        );
    }

    terminate(child, Duration::from_secs(30));
}
