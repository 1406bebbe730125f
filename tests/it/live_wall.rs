//! The patrol wall's live video in a real headless browser (Debian's chromium through
//! chromedriver): RTSP cameras from `gridwatch serve-rtsp` on loopback, one H.264 stream
//! played through Media Source Extensions (its `currentTime` advances, frames are decoded),
//! the detections drawn over it, an H.265 camera shown as stills with the reason, a tile
//! enlarged, the wall rotating to the next group, and a member of staff reporting a problem
//! by drawing a box: the case reaches the reference dispatch service once, with their name
//! and the box. A screenshot goes to `target/test-artifacts/live-wall.png`.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use gridwatch::config::Config;
use gridwatch::review::auth::Role;
use gridwatch::review::store::ReviewStore;
use gridwatch::run::{RunOptions, StopHandle};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver};

use crate::dispatch_support::free_port;
use crate::review_browser::{
    CHROMIUM, Driver, artifacts, chromium_session, find_program, wait_for,
};
use crate::support::{TempDir, repo};

const TOKEN: &str = "s3cret";
const PASSWORD: &str = "patrol-pass-1";

fn config_text(rtsp_port: u16, dispatch: &str, review_port: u16) -> String {
    let rtsp = format!("rtsp://127.0.0.1:{rtsp_port}");
    format!(
        r#"
[centre]
name = "live wall test centre"
[[units]]
id = "cbd"
name = "商业商务区"
[[groups]]
id = "patrol-a"
name = "巡查编组甲"
unit = "cbd"
analysis_fps = 2.0
[[groups]]
id = "patrol-b"
name = "巡查编组乙"
unit = "cbd"
analysis_fps = 1.0
[[cameras]]
id = "plaza"
name = "广场 H.264"
unit = "cbd"
group = "patrol-a"
uri = "{rtsp}/vtest"
[[cameras.zones]]
id = "square"
name = "广场"
polygon = [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras]]
id = "plaza-hevc"
name = "广场 H.265"
unit = "cbd"
group = "patrol-a"
uri = "{rtsp}/vtest-h265"
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras]]
id = "street"
name = "街道"
unit = "cbd"
group = "patrol-b"
uri = "{rtsp}/bikes"
[[cameras.zones]]
id = "kerb"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["nonmotor_parking"]
[model]
card = "{card}"
[inference]
workers = 1
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{dispatch}"
bearer_token = "{TOKEN}"
retry_initial_seconds = 0.2
[review]
listen = "127.0.0.1:{review_port}"
rotation_seconds = 3
"#,
        card = repo("models/nanodet-g-416-coco.toml").display(),
    )
}

async fn js(client: &Client, script: &str) -> serde_json::Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// The plaza tile's video: (currentTime, decoded frames, latency shown in ms).
async fn playback(client: &Client) -> Option<(f64, u64, Option<f64>)> {
    let v = js(
        client,
        "const t = document.querySelector(\"#wall-grid .tile[data-camera='plaza']\"); \
         const v = t && t.querySelector('video'); if (!v || v.hidden) return null; \
         return [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames, Number(t.dataset.latencyMs || 'NaN')]",
    )
    .await;
    let a = v.as_array()?;
    Some((a[0].as_f64()?, a[1].as_u64()?, a[2].as_f64()))
}

#[test]
fn the_wall_plays_rtsp_cameras_live_and_staff_report_what_they_see() {
    let (Some(chromedriver), true) = (
        find_program("chromedriver"),
        std::path::Path::new(CHROMIUM).is_file(),
    ) else {
        panic!(
            "the browser test needs Debian's chromium ({CHROMIUM}) and chromedriver: run ./scripts/setup"
        );
    };
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("live-wall");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rtsp_port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _rtsp = Kill(crate::ingest::serve_rtsp_process(
        rtsp_port,
        &[
            &repo("sample-streams/vtest.mp4"),
            &repo("sample-streams/vtest-h265.mp4"),
            &repo("sample-streams/bikes.mp4"),
        ],
    ));

    let receiver = runtime
        .block_on(Receiver::bind(
            "127.0.0.1:0",
            &dir.path("receiver.sqlite"),
            Some(TOKEN.into()),
        ))
        .unwrap();
    let receiver_base = format!("http://{}", receiver.local_addr());
    let (receiver_stop, receiver_stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver_task = runtime.spawn(receiver.serve(async {
        let _ = receiver_stopped.await;
    }));

    let review_port = free_port();
    let text = config_text(
        rtsp_port,
        &format!("{receiver_base}{CASES_PATH}"),
        review_port,
    );
    let config = Config::from_text(&text, "live.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let outbox_path = config.resolve(&config.cases.outbox);
    let accounts = ReviewStore::open(&outbox_path).unwrap();
    accounts
        .set_user("patrol", Role::Reviewer, PASSWORD)
        .unwrap();
    let stop = StopHandle::default();
    let run_thread = {
        let stop = stop.clone();
        let options = RunOptions {
            drain_timeout: Duration::from_secs(10),
            ..RunOptions::default()
        };
        std::thread::spawn(move || gridwatch::run::run(config, options, stop))
    };
    struct StopOnDrop(StopHandle);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let stop_guard = StopOnDrop(stop.clone());

    let driver_port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let console = format!("http://127.0.0.1:{review_port}/");

    let reported = runtime.block_on(async {
        wait_for("chromedriver and the console to listen", Duration::from_secs(30), || async {
            (TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", review_port)).is_ok())
            .then_some(())
        })
        .await;
        let client = chromium_session(
            driver_port,
            &dir.path("chromium-profile"),
            "1400,1000",
            &["--autoplay-policy=no-user-gesture-required"],
        )
        .await;

        client.goto(&console).await.unwrap();
        client.find(Locator::Css("#login-name")).await.unwrap().send_keys("patrol").await.unwrap();
        client.find(Locator::Css("#login-password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        wait_for("the console after sign-in", Duration::from_secs(10), || async {
            js(&client, "return !document.getElementById('app').hidden").await.as_bool().filter(|b| *b)
        })
        .await;
        // The wall, 4 tiles, rotation held while the tiles are checked.
        js(&client, "localStorage.setItem('gw-wall-layout', '4'); document.getElementById('wall-rotate').checked = false").await;
        client.find(Locator::Css("#tab-wall")).await.unwrap().click().await.unwrap();

        // The H.264 camera plays: currentTime advances, frames are decoded.
        let (t0, f0, _) = wait_for("the plaza's video to play", Duration::from_secs(60), || async {
            playback(&client).await.filter(|(t, f, _)| *t > 0.0 && *f > 0)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (t1, f1, latency_ms) = playback(&client).await.expect("still playing");
        assert!(t1 > t0 + 1.0, "currentTime advances: {t0} → {t1}");
        assert!(f1 > f0 + 10, "frames are decoded: {f0} → {f1}");
        let latency_ms = latency_ms.expect("the tile shows its latency");
        eprintln!("live wall: plaza {f1} frames decoded, latency shown {latency_ms:.0} ms");
        assert!(latency_ms.is_finite() && latency_ms < 5_000.0, "latency {latency_ms} ms");

        // The detections of the analysed frames are drawn over the video.
        let drawn = wait_for("detections drawn on the plaza tile", Duration::from_secs(30), || async {
            js(&client, "const t = document.querySelector(\"#wall-grid .tile[data-camera='plaza']\"); return t && t.dataset.objectsShown ? Number(t.dataset.objectsShown) : null")
                .await
                .as_u64()
                .filter(|n| *n > 0)
        })
        .await;
        assert!(drawn > 0);

        // H.265: stills, and the tile says why.
        let hevc = wait_for("the H.265 camera shown as stills", Duration::from_secs(30), || async {
            let v = js(&client, "const t = document.querySelector(\"#wall-grid .tile[data-camera='plaza-hevc']\"); return t && t.dataset.mode === 'stills' ? t.querySelector('.badge').textContent : null").await;
            v.as_str().map(str::to_owned)
        })
        .await;
        assert!(hevc.contains("H.265"), "{hevc}");

        // Click to enlarge; Esc goes back.
        client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .screen")).await.unwrap().click().await.unwrap();
        assert_eq!(js(&client, "return document.querySelectorAll('#wall-grid .tile.enlarged').length").await, 1);
        std::fs::write(artifacts().join("live-wall-enlarged.png"), client.screenshot().await.unwrap()).unwrap();
        client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .screen")).await.unwrap().click().await.unwrap();
        assert_eq!(js(&client, "return document.querySelectorAll('#wall-grid .tile.enlarged').length").await, 0);

        // A staff report: draw a box on the live picture, pick the scenario, add a note.
        client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .report-draw")).await.unwrap().click().await.unwrap();
        let screen = client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .screen")).await.unwrap();
        let (_, _, w, h) = screen.rectangle().await.unwrap();
        // Offsets from the element's centre: a box over the middle of the lower half.
        let drag = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement { element: screen.clone(), duration: None, x: -0.2 * w, y: 0.1 * h })
            .then(PointerAction::Down { button: fantoccini::actions::MOUSE_BUTTON_LEFT })
            .then(PointerAction::MoveToElement { element: screen.clone(), duration: Some(Duration::from_millis(200)), x: 0.1 * w, y: 0.35 * h })
            .then(PointerAction::Up { button: fantoccini::actions::MOUSE_BUTTON_LEFT });
        client.perform_actions(drag).await.unwrap();
        client.release_actions().await.unwrap();
        js(&client, "const t = document.querySelector(\"#wall-grid .tile[data-camera='plaza']\"); t.querySelector('.report-scenario').value = 'crowd_gathering'").await;
        client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .report-note")).await.unwrap().send_keys("广场人员聚集，请核实").await.unwrap();
        assert_eq!(js(&client, "return document.querySelectorAll('#wall-grid .tile.enlarged').length").await, 0, "drawing does not enlarge");
        client.find(Locator::Css("#wall-grid .tile[data-camera='plaza'] .report-send")).await.unwrap().click().await.unwrap();
        let id = wait_for("the report accepted", Duration::from_secs(20), || async {
            js(&client, "return document.querySelector(\"#wall-grid .tile[data-camera='plaza']\").dataset.reported || null").await.as_str().map(str::to_owned)
        })
        .await;
        std::fs::write(artifacts().join("live-wall.png"), client.screenshot().await.unwrap()).unwrap();

        // The open case is marked on the tile (its zone), from the live socket's case list.
        wait_for("the open case marked on the tile", Duration::from_secs(20), || async {
            js(&client, "const t = document.querySelector(\"#wall-grid .tile[data-camera='plaza']\"); return Number(t.dataset.openCases || '0')").await.as_u64().filter(|n| *n > 0)
        })
        .await;

        // Rotation: on again, the wall moves on to the next group.
        let before = client.find(Locator::Css("#wall-group")).await.unwrap().text().await.unwrap();
        js(&client, "document.getElementById('wall-rotate').checked = true").await;
        let after = wait_for("the wall to rotate", Duration::from_secs(20), || async {
            let now = client.find(Locator::Css("#wall-group")).await.ok()?.text().await.ok()?;
            (now != before).then_some(now)
        })
        .await;
        assert!(after.contains("巡查编组乙"), "{before} → {after}");
        let _ = client.close().await;
        id
    });

    // The report at the reference dispatch service: once, with the user and the box.
    let http = reqwest::blocking::Client::new();
    let case = (0..100)
        .find_map(|_| {
            let r = http
                .get(format!("{receiver_base}{CASES_PATH}/{reported}"))
                .bearer_auth(TOKEN)
                .send()
                .ok()?;
            if r.status() == 200 {
                return r.json::<serde_json::Value>().ok();
            }
            std::thread::sleep(Duration::from_millis(200));
            None
        })
        .expect("the reported case reaches the dispatch service");
    assert_eq!(case["reported_by"], "patrol", "{case}");
    assert_eq!(case["deliveries"], 1, "delivered once: {case}");
    let conn = rusqlite::Connection::open(dir.path("receiver.sqlite")).unwrap();
    let (n, body): (i64, String) = conn
        .query_row(
            "SELECT COUNT(*), MAX(body) FROM received WHERE json_extract(body, '$.reported_by.user') = 'patrol'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, 1, "one staff report, one case");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reported_by"]["note"], "广场人员聚集，请核实");
    assert_eq!(body["scenario"]["id"], "crowd_gathering");
    let b: Vec<f64> = serde_json::from_value(body["objects"][0]["bbox"].clone()).unwrap();
    // Drawn from 0.3 to 0.6 across and 0.6 to 0.85 down (± a few pixels).
    for (got, want) in b.iter().zip([0.3, 0.6, 0.6, 0.85]) {
        assert!((got - want).abs() < 0.03, "box {b:?}");
    }
    let audit = ReviewStore::open(&outbox_path)
        .unwrap()
        .audit_log(100)
        .unwrap();
    assert!(
        audit.iter().any(|a| a.action == "report"
            && a.user == "patrol"
            && a.case_id.as_deref() == Some(reported.as_str())),
        "the report is in the audit log: {audit:?}"
    );

    drop(stop_guard);
    let summary = run_thread.join().unwrap().expect("the run ends cleanly");
    assert!(summary.cases_stored >= 1);
    let _ = receiver_stop.send(());
    runtime.block_on(receiver_task).unwrap().unwrap();
}
