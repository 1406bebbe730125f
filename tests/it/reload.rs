//! Configuration reload on SIGHUP, through the real binary: a running `gridwatch run` re-reads
//! its file; an added camera starts, an edited zone threshold takes effect (a case arrives), and
//! the camera that was not edited keeps streaming without a restart. A broken file, or a change
//! that needs a restart, is refused with its reason and the running configuration stays.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::dispatch_support::{
    TOKEN, TestReceiver, free_port, gridwatch, received, terminate, wait_running, wait_until,
};
use crate::support::{TempDir, exclusive, repo};

fn config(status_port: u16, cases_url: &str, crowd_override: &str, extra_camera: &str) -> String {
    format!(
        r#"
[centre]
name = "reload test"
[[units]]
id = "hm"
name = "和睦"
[[groups]]
id = "g"
name = "巡查编组"
unit = "hm"
analysis_fps = 1.0
[[cameras]]
id = "plaza"
name = "plaza"
unit = "hm"
group = "g"
uri = "{vtest}"
loop = true
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
{crowd_override}
{extra_camera}
[model]
card = "{card}"
[inference]
workers = 1
[ingest]
pace = "realtime"
[scenarios.crowd_gathering]
min_persons = 60
min_duration_seconds = 1.0
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{cases_url}"
bearer_token = "{TOKEN}"
[telemetry]
metrics_listen = "127.0.0.1:{status_port}"
"#,
        vtest = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    )
}

fn cameras(port: u16) -> Vec<Value> {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/api/v1/cameras"))
        .and_then(|r| r.json::<Value>())
        .ok()
        .and_then(|v| {
            v.as_array()
                .cloned()
                .or_else(|| v["cameras"].as_array().cloned())
        })
        .unwrap_or_default()
}

fn camera(port: u16, id: &str) -> Option<Value> {
    cameras(port).into_iter().find(|c| c["id"] == id)
}

fn hup(pid: u32) {
    // SAFETY: kill(2) with a child's pid and a signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn log_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|l| l.contains(needle))
}

#[test]
fn sighup_adds_a_camera_and_applies_thresholds_without_restarting_the_others() {
    let _heavy = exclusive();
    let dir = TempDir::new("reload");
    let receiver = TestReceiver::start(&dir.path("receiver.sqlite"), "127.0.0.1:0");
    let port = free_port();
    let path = dir.path("run.toml");
    std::fs::write(&path, config(port, &receiver.cases_url(), "", "")).unwrap();
    let log = dir.path("reload.log");
    let child = gridwatch()
        .env(
            "RUST_LOG",
            "warn,gridwatch::run=info,gridwatch::reload=info",
        )
        .args(["run", "--config"])
        .arg(&path)
        .args(["--drain-timeout-seconds", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_running(&dir.0, "reload");
    assert!(
        wait_until(Duration::from_secs(30), || camera(port, "plaza")
            .is_some_and(
                |c| c["state"] == "streaming" && c["frames"].as_u64() > Some(2)
            )),
        "plaza never streamed: {:?}",
        cameras(port)
    );
    let before = camera(port, "plaza").unwrap();
    assert!(
        received(&receiver.db).is_empty(),
        "60 persons never gather in vtest"
    );

    // A camera appears and plaza's zone gets a low threshold: cases must follow.
    let bikes = format!(
        "[[cameras]]\nid = \"bikes\"\nname = \"bikes\"\nunit = \"hm\"\ngroup = \"g\"\nuri = \"{}\"\nloop = true\n",
        repo("sample-streams/bikes.mp4").display()
    );
    let low = "[cameras.scenario_overrides.crowd_gathering]\nmin_persons = 1\nmin_duration_seconds = 1.0\n";
    std::fs::write(&path, config(port, &receiver.cases_url(), low, &bikes)).unwrap();
    hup(pid);
    assert!(
        wait_until(Duration::from_secs(40), || camera(port, "bikes")
            .is_some_and(|c| c["state"] == "streaming")),
        "the added camera never streamed: {:?}",
        cameras(port)
    );
    assert!(
        wait_until(Duration::from_secs(40), || !received(&receiver.db)
            .is_empty()),
        "the new threshold never produced a case"
    );
    let after = camera(port, "plaza").unwrap();
    assert_eq!(
        (&after["state_since"], &after["reconnects"], &after["state"]),
        (
            &before["state_since"],
            &before["reconnects"],
            &before["state"]
        ),
        "plaza was not restarted"
    );
    assert!(after["frames"].as_u64() > before["frames"].as_u64());

    // A broken file: refused with its line; everything keeps running.
    std::fs::write(
        &path,
        config(port, &receiver.cases_url(), low, &bikes).replace("loop = true", "lop = true"),
    )
    .unwrap();
    hup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || log_has(&log, "reload failed")),
        "no reload error logged"
    );
    assert!(
        log_has(&log, "field `cameras[0].lop`"),
        "the error names the field: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // A change that needs a restart: refused whole, nothing applied.
    std::fs::write(
        &path,
        config(port, &receiver.cases_url(), low, &bikes).replace("workers = 1", "workers = 2"),
    )
    .unwrap();
    hup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || log_has(
            &log,
            "[inference] changed"
        )),
        "no restart-needed message"
    );
    let frames = camera(port, "plaza").unwrap()["frames"].as_u64();
    assert!(
        wait_until(Duration::from_secs(10), || camera(port, "plaza")
            .is_some_and(
                |c| c["frames"].as_u64() > frames && c["state"] == "streaming"
            )),
        "plaza stopped after a refused reload"
    );
    let out = terminate(child, Duration::from_secs(30));
    assert!(out.contains("camera bikes"), "{out}");
}
