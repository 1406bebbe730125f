//! Helpers of the delivery and fault tests: valid cases with real JPEGs, a receiver on its own
//! runtime, the receiver's and the outbox's contents read straight from SQLite, and `gridwatch`
//! subprocesses over the sample clip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridwatch::cases::{
    CASE_SCHEMA, CASE_SOURCE, Case, CaseCamera, CaseEpisode, CaseObject, CaseScenario,
    CaseSnapshot, CaseZone, Named,
};
use gridwatch_dispatch_ref::Receiver;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::repo;

pub const TOKEN: &str = "s3cret-token";

/// A small real JPEG.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn image(bytes: &[u8], w: u32, h: u32) -> CaseSnapshot {
    use base64::Engine as _;
    CaseSnapshot {
        content_type: "image/jpeg".into(),
        width: w,
        height: h,
        data_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        part: None,
    }
}

/// A valid v1 case confirmed `minutes_ago` minutes ago, in `unit`.
pub fn case(minutes_ago: i64, unit: &str) -> Case {
    let confirmed_at = OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    // The shipped catalog's crowd scenario (a fixture: the receiver's tests use it).
    let crowd = gridwatch::scenarios::info("crowd_gathering").expect("shipped");
    let level = crowd.level;
    Case {
        schema: CASE_SCHEMA.into(),
        id: Uuid::now_v7(),
        source: CASE_SOURCE.into(),
        scenario: CaseScenario {
            id: crowd.id.into(),
            name_zh: crowd.name_zh.into(),
            name_en: crowd.name_en.into(),
            category_code: crowd.category_code.into(),
            category_major: crowd.category_major.into(),
            category_minor: crowd.category_minor.into(),
        },
        department: crowd.department.into(),
        workstation: crowd.workstation.into(),
        handling_level: level,
        deadline_minutes: level.deadline_minutes(),
        deadline_at: gridwatch::cases::deadline(confirmed_at, level),
        unit: Named {
            id: unit.into(),
            name: unit.into(),
        },
        group: Named {
            id: "g".into(),
            name: "巡查编组".into(),
        },
        camera: CaseCamera {
            id: "cam-1".into(),
            name: "东门".into(),
            gb28181_device_id: Some("34020000001320000001".into()),
            gb28181_channel_id: None,
        },
        location: "东门广场".into(),
        lat: Some(31.0),
        lon: Some(121.2),
        zone: CaseZone {
            id: "all".into(),
            name: "all".into(),
            polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
        },
        first_seen_at: confirmed_at - time::Duration::seconds(5),
        confirmed_at,
        confidence: 0.8,
        objects: vec![CaseObject {
            kind: "person".into(),
            label: "person".into(),
            score: 0.8,
            bbox: [0.1, 0.1, 0.2, 0.4],
        }],
        episode: CaseEpisode {
            started_media_seconds: 1.0,
            confirmed_media_seconds: 6.0,
            frame_seq: 12,
        },
        snapshot: image(&jpeg(64, 36), 64, 36),
        crop: Some(image(&jpeg(16, 24), 16, 24)),
        reported_by: None,
    }
}

/// A receiver served on its own runtime until dropped.
pub struct TestReceiver {
    pub base: String,
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestReceiver {
    pub fn start(db: &Path, addr: &str) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let db_path = db.to_owned();
        let addr = addr.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let r = Receiver::bind(&addr, &db_path, Some(TOKEN.into()))
                    .await
                    .unwrap();
                addr_tx.send(r.local_addr()).unwrap();
                r.serve(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        TestReceiver {
            base: format!("http://{addr}"),
            db: db.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn cases_url(&self) -> String {
        format!("{}{}", self.base, gridwatch_dispatch_ref::CASES_PATH)
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the receiver stored: id → POSTs with that key.
pub fn received(db: &Path) -> HashMap<String, i64> {
    if !db.exists() {
        return HashMap::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare("SELECT id, deliveries FROM received").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every case committed to the outbox at `path`, with its state.
pub fn committed(path: &Path) -> HashMap<String, String> {
    if !path.exists() {
        return HashMap::new();
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    // A run that has just started may not have created its tables yet: nothing committed then.
    let Ok(mut stmt) =
        conn.prepare("SELECT c.id, o.state FROM cases c JOIN outbox o ON o.case_id = c.id")
    else {
        return HashMap::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A free loopback port (bound then released; the tests use it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `gridwatch run` configuration over the sample clip with thresholds that give about 8 crowd
/// episodes per pass of the clip (from vtest.persons.csv), a case every second or so at fast pace; `dispatch_extra` goes into `[dispatch]`.
pub fn write_run_config(dir: &Path, url: &str, looped: bool, dispatch_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[centre]
name = "fault test"
[[units]]
id = "cbd"
name = "商业商务区"
[[groups]]
id = "g"
name = "巡查编组"
unit = "cbd"
analysis_fps = 2.0
[[cameras]]
id = "vtest"
name = "vtest"
unit = "cbd"
group = "g"
uri = "{clip}"
loop = {looped}
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[model]
card = "{card}"
[inference]
workers = 1
[ingest]
pace = "fast"
[scenarios.crowd_gathering]
min_persons = 7
min_duration_seconds = 0.5
clear_seconds = 0.5
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{url}"
bearer_token = "{TOKEN}"
{dispatch_extra}
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn gridwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    c.env(
        "RUST_LOG",
        "warn,gridwatch::dispatch=info,gridwatch::run=info",
    );
    c
}

/// `gridwatch run` in the background, its log in `dir/<tag>.log`.
pub fn spawn_run(config: &Path, dir: &Path, tag: &str, drain_seconds: f64) -> Child {
    let log = std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap();
    gridwatch()
        .args(["run", "--config"])
        .arg(config)
        .args(["--drain-timeout-seconds", &drain_seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until the run logged that its pipeline (and so its signal handling) is running.
pub fn wait_running(dir: &Path, tag: &str) {
    let log = dir.join(format!("{tag}.log"));
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("pipeline running"))),
        "{tag}: the pipeline did not start"
    );
}

/// SIGTERM, then wait (bounded) for the exit; returns stdout.
pub fn terminate(mut child: Child, within: Duration) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert!(status.success(), "gridwatch exited with {status}: {out}");
            return out;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("gridwatch did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for a run over a finite clip to end by itself; returns stdout.
pub fn terminate_after_exit(mut child: Child, within: Duration) -> String {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("gridwatch did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "gridwatch exited with {status}: {out}");
    out
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
