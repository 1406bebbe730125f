//! The review console in a real headless browser (Debian's chromium driven through chromedriver
//! by fantoccini) over a real run: GStreamer replays the sample clip at real-time pace, the
//! shipped model finds the crowd, the case stage holds the cases for review (tiers set so), the
//! console serves them over HTTP, and delivery posts confirmed cases to a real receiver on
//! loopback. The reviewer signs in, waits for the flagged frames to arrive over server-sent
//! events, confirms one with the keyboard (it reaches the receiver) and rejects another (it
//! never does). Screenshots of the queue and the wall go to `target/test-artifacts/`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use gridwatch::cases::outbox::Outbox;
use gridwatch::config::Config;
use gridwatch::review::auth::Role;
use gridwatch::review::store::ReviewStore;
use gridwatch::run::{RunOptions, StopHandle};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver};

use crate::dispatch_support::free_port;
use crate::support::{TempDir, repo};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "s3cret";
const PASSWORD: &str = "patrol-pass-1";
/// The first crowd episode of the clip is confirmed 9 s into it; start-up on a busy machine
/// takes a few more.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Kills chromedriver however the test ends.
pub(crate) struct Driver(pub(crate) Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless chromium session through the chromedriver listening on `driver_port`, with its
/// own profile folder, at `window` ("1400,1000"), with any `extra` switches.
pub(crate) async fn chromium_session(
    driver_port: u16,
    profile: &Path,
    window: &str,
    extra: &[&str],
) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--window-size={window}"));
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
        serde_json::json!({ "goog:chromeOptions": { "binary": CHROMIUM, "args": args } }),
    )
    .unwrap();
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session")
}

pub(crate) fn artifacts() -> PathBuf {
    let dir = repo("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn press(client: &Client, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    client.perform_actions(keys).await.unwrap();
}

async fn queue_ids(client: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for li in client
        .find_all(Locator::Css("#queue-list li"))
        .await
        .unwrap_or_default()
    {
        if let Ok(Some(id)) = li.attr("data-id").await {
            ids.push(id);
        }
    }
    ids
}

async fn selected_id(client: &Client) -> Option<String> {
    let li = client
        .find(Locator::Css("#queue-list li.selected"))
        .await
        .ok()?;
    li.attr("data-id").await.ok().flatten()
}

fn outbox_state(path: &Path, id: &str) -> Option<String> {
    Outbox::open(path)
        .ok()?
        .list(None, 1000)
        .ok()?
        .into_iter()
        .find(|e| e.id == id)
        .map(|e| e.state)
}

fn config_text(dir: &Path, dispatch: &str, review_port: u16) -> String {
    let _ = dir;
    format!(
        r#"
[centre]
name = "browser test centre"
[[units]]
id = "cbd"
name = "商业商务区"
[[groups]]
id = "cbd-patrol"
name = "商业商务区巡查编组"
unit = "cbd"
analysis_fps = 2.0
[[cameras]]
id = "vtest"
name = "商务区广场 1 号"
unit = "cbd"
group = "cbd-patrol"
uri = "{clip}"
loop = true
# Two zones over the square: each crowd episode becomes two held cases, one to confirm and one
# to reject.
[[cameras.zones]]
id = "plaza"
name = "广场"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras.zones]]
id = "square"
name = "步行区"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[model]
card = "{card}"
[inference]
workers = 1
[ingest]
pace = "realtime"
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{dispatch}"
bearer_token = "{TOKEN}"
retry_initial_seconds = 0.2
[dispatch.status]
feed_url = "{feed}"
poll_seconds = 0.5
[review]
listen = "127.0.0.1:{review_port}"
# Every crowd case waits for a reviewer.
auto_dispatch_score = 1.0
review_score = 0.0
rotation_seconds = 5
[states]
cards_dir = "cards"
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
        feed = dispatch.replace("/api/v1/cases", "/api/v1/status-events"),
    )
}

#[test]
fn a_reviewer_confirms_and_rejects_flagged_frames_in_a_real_browser() {
    let (Some(chromedriver), true) = (find_program("chromedriver"), Path::new(CHROMIUM).is_file())
    else {
        panic!(
            "the browser test needs Debian's chromium ({CHROMIUM}) and chromedriver on PATH: run ./scripts/setup"
        );
    };
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("review-browser");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // The dispatch receiver, on loopback.
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

    // The run, with a reviewer account made beforehand.
    let review_port = free_port();
    let text = config_text(&dir.0, &format!("{receiver_base}{CASES_PATH}"), review_port);
    let config = Config::from_text(&text, "browser.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let outbox_path = config.resolve(&config.cases.outbox);
    let accounts = ReviewStore::open(&outbox_path).unwrap();
    accounts
        .set_user("patrol", Role::Reviewer, PASSWORD)
        .unwrap();
    accounts.set_user("chief", Role::Admin, PASSWORD).unwrap();
    let stop = StopHandle::default();
    let run_thread = {
        let stop = stop.clone();
        let mut options = RunOptions {
            drain_timeout: Duration::from_secs(10),
            ..RunOptions::default()
        };
        // The admin's "train" button, wired as the binary wires it.
        options.trainer = Some(std::sync::Arc::new(gridwatch::learn::ConsoleTrainer {
            config: std::sync::Arc::new(config.clone()),
            config_path: None,
            reload: options.reload.clone(),
            train: gridwatch::states::TrainOptions::default(),
        }));
        std::thread::spawn(move || gridwatch::run::run(config, options, stop))
    };
    // Whatever happens below, the run stops.
    struct StopOnDrop(StopHandle);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let stop_guard = StopOnDrop(stop.clone());

    let driver_port = free_port();
    let driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let console = format!("http://127.0.0.1:{review_port}/");
    let test_started = Instant::now();

    let (confirmed, rejected) = runtime.block_on(async {
        wait_for("chromedriver and the console to listen", Duration::from_secs(30), || async {
            (TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", review_port)).is_ok())
            .then_some(())
        })
        .await;
        let client =
            chromium_session(driver_port, &dir.path("chromium-profile"), "1400,1000", &[]).await;

        // Sign in.
        client.goto(&console).await.unwrap();
        client.find(Locator::Css("#login-name")).await.unwrap().send_keys("patrol").await.unwrap();
        client.find(Locator::Css("#login-password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();

        // The flagged frames arrive (pushed over server-sent events; nothing reloads the page).
        let ids = wait_for("two held cases in the queue", ARRIVAL_TIMEOUT, || async {
            let ids = queue_ids(&client).await;
            (ids.len() >= 2).then_some(ids)
        })
        .await;
        let live: String = client
            .execute("return document.getElementById('live').className", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(live.contains("on"), "the event stream is connected: {live}");
        wait_for("the snapshot to load", Duration::from_secs(10), || async {
            let v = client
                .execute("const i = document.getElementById('detail-img'); return i.complete && i.naturalWidth > 0", vec![])
                .await
                .ok()?;
            v.as_bool().filter(|b| *b)
        })
        .await;
        let shot = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("review-queue.png"), shot).unwrap();

        // Confirm the selected one with the keyboard.
        let first = selected_id(&client).await.expect("an item is selected");
        assert_eq!(first, ids[0], "the oldest item is selected first");
        press(&client, 'c').await;
        wait_for("the confirmed case to leave the queue", Duration::from_secs(10), || async {
            (!queue_ids(&client).await.contains(&first)).then_some(())
        })
        .await;
        let http = reqwest::Client::new();
        wait_for("the confirmed case at the receiver", Duration::from_secs(20), || async {
            let r = http
                .get(format!("{receiver_base}{CASES_PATH}/{first}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;

        // Reject the next one (now selected), with the keyboard too.
        let second = wait_for("the next item to be selected", Duration::from_secs(10), || async {
            selected_id(&client).await.filter(|id| *id != first)
        })
        .await;
        // With a suppression of that camera + zone + scenario for 30 minutes.
        client
            .execute("document.getElementById('detail-suppress').value = '30'", vec![])
            .await
            .unwrap();
        press(&client, 'x').await;
        wait_for("the rejection to be recorded", Duration::from_secs(10), || async {
            (outbox_state(&outbox_path, &second).as_deref() == Some("rejected")).then_some(())
        })
        .await;
        let msg = client.find(Locator::Css("#detail-msg")).await.unwrap().text().await.unwrap();
        assert!(!msg.is_empty(), "the reviewer sees what happened");

        // The history view lists the suppression in force.
        press(&client, '3').await;
        let row = wait_for("the suppression listed", Duration::from_secs(10), || async {
            let row = client.find(Locator::Css("#suppressions-body tr.zone")).await.ok()?;
            row.text().await.ok()
        })
        .await;
        assert!(row.contains("vtest"), "{row}");

        // The platform moves the confirmed case to 派遣 and 处置: the history shows its status
        // and the camera's verification (核查), and the case's platform panel its timeline.
        wait_for("the confirmed case delivered", Duration::from_secs(30), || async {
            (outbox_state(&outbox_path, &first).as_deref() == Some("delivered")).then_some(())
        })
        .await;
        let http = reqwest::Client::new();
        for status in ["dispatched", "handling"] {
            let r = http
                .post(format!("{receiver_base}/api/v1/cases/{first}/status"))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({ "status": status }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{status}: {}", r.status());
        }
        let (status, verification) = wait_for("the platform status in the history", Duration::from_secs(20), || async {
            client.execute("loadHistory()", vec![]).await.ok()?;
            let row = format!("#history-body tr[data-id='{first}']");
            let s = client.find(Locator::Css(&format!("{row} .platform-status"))).await.ok()?.text().await.ok()?;
            let v = client.find(Locator::Css(&format!("{row} .verification"))).await.ok()?.text().await.ok()?;
            // Once 处置 is heard, a verification round exists (核查中, then 核查通过 or, the crowd
            // still there, 核查不通过 and the platform's 派遣 again).
            (v != "—").then_some((s, v))
        })
        .await;
        assert!(["核查中", "核查通过", "核查不通过"].contains(&verification.as_str()), "{status} / {verification}");
        client
            .find(Locator::Css(&format!("#history-body tr[data-id='{first}'] td")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let rows = wait_for("the case's platform timeline", Duration::from_secs(10), || async {
            let n = client
                .execute("return document.querySelectorAll('#cp-statuses tr.status-row').length", vec![])
                .await
                .ok()?
                .as_u64()?;
            (n >= 3).then_some(n)
        })
        .await;
        assert!(rows >= 3, "立案, 派遣, 处置");
        let shot = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("review-platform.png"), shot).unwrap();
        // "Clear" on the rejected case's kept frame, from the history. The table is redrawn
        // when cases change, so the button is found and clicked in one script, until it is.
        let click = format!(
            "const b = document.querySelector(\"#history-body tr[data-id='{second}'] .labeller .label-clear\"); if (b) b.click(); return !!b"
        );
        wait_for("the history's label button", Duration::from_secs(10), || async {
            client.execute(&click, vec![]).await.ok()?.as_bool().filter(|b| *b)
        })
        .await;
        let store = ReviewStore::open(&outbox_path).unwrap();
        wait_for("the history label stored", Duration::from_secs(10), || async {
            ["square", "plaza"]
                .iter()
                .flat_map(|z| store.zone_labels("vtest", z, "crowd_gathering").unwrap())
                .any(|l| l.case_id.as_deref() == Some(second.as_str()))
                .then_some(())
        })
        .await;

        // The patrol wall: the camera's latest analysed frame and its health.
        press(&client, '2').await;
        wait_for("a frame on the wall", Duration::from_secs(15), || async {
            let v = client
                .execute(
                    "const i = document.querySelector('#wall-grid img'); return !!i && i.complete && i.naturalWidth > 0",
                    vec![],
                )
                .await
                .ok()?;
            v.as_bool().filter(|b| *b)
        })
        .await;
        let health = client.find(Locator::Css("#wall-grid .health")).await.unwrap().text().await.unwrap();
        assert!(!health.is_empty());
        // "This zone shows it": a zone-state label on the frame the wall shows.
        client
            .find(Locator::Css("#wall-grid .labeller[data-zone='square'] .label-present"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let said = wait_for("the label acknowledged", Duration::from_secs(10), || async {
            let t = client
                .find(Locator::Css("#wall-grid .labeller[data-zone='square'] .label-said"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (!t.is_empty()).then_some(t)
        })
        .await;
        assert_eq!(said, "已标注：有");
        // The wall's label is of `square`; the rejected case's may be of either zone.
        let labels: Vec<_> = ["square", "plaza"]
            .iter()
            .flat_map(|z| store.zone_labels("vtest", z, "crowd_gathering").unwrap())
            .collect();
        let (from_wall, from_history): (Vec<_>, Vec<_>) =
            labels.iter().partition(|l| l.case_id.is_none());
        assert_eq!(from_wall.len(), 1);
        assert!(from_wall[0].present && from_wall[0].user == "patrol");
        assert!(image::load_from_memory(&from_wall[0].frame).is_ok(), "the frame is kept");
        assert_eq!(from_history.len(), 1);
        assert_eq!(from_history[0].case_id.as_deref(), Some(second.as_str()));
        assert!(!from_history[0].present);
        assert!(image::load_from_memory(&from_history[0].frame).is_ok());
        let shot = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("review-wall.png"), shot).unwrap();

        // The admin trains the zone state from the console: one wall label is too few, and
        // the page says so with what is missing.
        client.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
        for (field, value) in [("#login-name", "chief"), ("#login-password", PASSWORD)] {
            let input = wait_for("the sign-in form", Duration::from_secs(10), || async {
                let input = client.find(Locator::Css(field)).await.ok()?;
                input.is_displayed().await.ok()?.then_some(input)
            })
            .await;
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
        client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        wait_for("the admin tab", Duration::from_secs(10), || async {
            let tab = client.find(Locator::Css("#tab-admin")).await.ok()?;
            tab.is_displayed().await.ok()?.then_some(())
        })
        .await;
        press(&client, '5').await;
        wait_for("the trainer's zones", Duration::from_secs(10), || async {
            let v = client
                .execute("return document.querySelectorAll('#train-zone option').length", vec![])
                .await
                .ok()?;
            (v.as_u64()? > 0).then_some(())
        })
        .await;
        client
            .execute("document.getElementById('train-zone').value = 'square'; document.getElementById('train-zone').onchange();", vec![])
            .await
            .unwrap();
        client.find(Locator::Css("#train-go")).await.unwrap().click().await.unwrap();
        let said = wait_for("the trainer's answer", Duration::from_secs(60), || async {
            let t = client.find(Locator::Css("#train-out")).await.ok()?.text().await.ok()?;
            t.starts_with("未训练").then_some(t)
        })
        .await;
        assert!(said.contains("422") && said.contains("label"), "{said}");

        // Simplified Chinese by default; English on request.
        let tab = client.find(Locator::Css("#tab-queue")).await.unwrap();
        assert_eq!(tab.text().await.unwrap(), "审核队列");
        client.find(Locator::Css("#lang")).await.unwrap().click().await.unwrap();
        assert_eq!(tab.text().await.unwrap(), "Review queue");
        client.close().await.unwrap();
        (first, second)
    });
    drop(driver);

    // Stop the run (delivery drains), then check what the receiver holds.
    drop(stop_guard);
    let summary = run_thread.join().unwrap().unwrap();
    assert!(summary.cases_stored >= 2);
    let http = reqwest::blocking::Client::new();
    let get = |id: &str| {
        http.get(format!("{receiver_base}{CASES_PATH}/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get(&confirmed), 200, "the confirmed case was dispatched");
    assert_eq!(
        get(&rejected),
        404,
        "the rejected case never reached the receiver"
    );
    assert_eq!(
        outbox_state(&outbox_path, &confirmed).as_deref(),
        Some("delivered")
    );
    assert_eq!(
        outbox_state(&outbox_path, &rejected).as_deref(),
        Some("rejected")
    );
    // Whatever else the clip raised meanwhile is still held, not sent.
    let listed: Vec<serde_json::Value> = http
        .get(format!("{receiver_base}{CASES_PATH}"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.len(), 1, "only the confirmed case was dispatched");
    eprintln!(
        "browser flow took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );

    let _ = receiver_stop.send(());
    runtime.block_on(receiver_task).unwrap().unwrap();
}
