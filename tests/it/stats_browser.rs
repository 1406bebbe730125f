//! The statistics page in a real headless browser (Debian's chromium through chromedriver): a
//! generated week of cases (`gridwatch_bench::history`, written through the outbox's own
//! calls) and a camera's health samples in a real outbox database, the console served over
//! loopback; an account signs in, opens 统计通报, picks the period, and the page's figures, the
//! per-unit table, a unit's drill-down and the camera table match what the test counted from
//! the generated history itself. The three charts are drawn (their canvases hold coloured
//! pixels); the XLSX download answers. A screenshot goes to `target/test-artifacts/`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, Locator};
use gridwatch::cases::facts::CameraSample;
use gridwatch::cases::outbox::Outbox;
use gridwatch::config::Config;
use gridwatch::ingest::status::CameraRegistry;
use gridwatch::review::auth::Role;
use gridwatch::review::store::ReviewStore;
use gridwatch::review::{LatestFrames, ReviewHub, ReviewState};
use gridwatch_bench::history::{self, HistorySpec, Review};

use crate::dispatch_support::free_port;
use crate::review_browser::{
    CHROMIUM, Driver, artifacts, chromium_session, find_program, wait_for,
};
use crate::support::{TempDir, repo};

const PASSWORD: &str = "stats-pass-1";
const CASES: usize = 160;
const DAYS: u32 = 6;

pub(crate) fn config_text(port: u16) -> String {
    let mut text = String::from("[centre]\nname = \"统计测试中心\"\nutc_offset = \"+08:00\"\n");
    for (unit, name) in [("cbd", "商业商务区"), ("hemu", "和睦"), ("beisong", "北崧")] {
        text += &format!(
            "[[units]]\nid = \"{unit}\"\nname = \"{name}\"\n[[groups]]\nid = \"{unit}-patrol\"\nname = \"{name}巡查编组\"\nunit = \"{unit}\"\n\
             [[cameras]]\nid = \"{unit}-cam\"\nname = \"{name} 1 号\"\nunit = \"{unit}\"\ngroup = \"{unit}-patrol\"\nuri = \"test:\"\n\
             [[cameras.zones]]\nid = \"street\"\nname = \"街面\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n\
             scenarios = [\"crowd_gathering\", \"nonmotor_parking\", \"street_vending\"]\n"
        );
    }
    text += &format!(
        "[model]\ncard = \"{}\"\n[cases]\noutbox = \"outbox.sqlite\"\n[dispatch]\nurl = \"http://127.0.0.1:9/api/v1/cases\"\n\
         [review]\nlisten = \"127.0.0.1:{port}\"\n",
        repo("models/nanodet-g-416-coco.toml").display()
    );
    text
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            vec![serde_json::json!(css)],
        )
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Coloured (non-transparent) pixels of the chart's canvas: drawn, not an empty box.
async fn drawn_pixels(client: &Client, chart: &str) -> u64 {
    let script =
        "const c = document.querySelector(arguments[0] + ' canvas'); if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;";
    client
        .execute(script, vec![serde_json::json!(chart)])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[test]
fn the_statistics_page_shows_the_generated_history_with_its_charts() {
    let (Some(chromedriver), true) = (find_program("chromedriver"), Path::new(CHROMIUM).is_file())
    else {
        panic!(
            "the browser test needs Debian's chromium ({CHROMIUM}) and chromedriver: run ./scripts/setup"
        );
    };
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("stats-browser");
    let port = free_port();
    let config = Arc::new(
        Config::from_text(&config_text(port), "stats.toml", &dir.0)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let outbox_path = config.resolve(&config.cases.outbox);

    // The history, and what it holds, counted here.
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let spec = HistorySpec::from_config(&config, CASES, DAYS, 7, now_ms);
    let cases = history::generate(&outbox_path, &spec).unwrap();
    let rejected = cases
        .iter()
        .filter(|c| c.review == Review::Rejected)
        .count();
    let dispatched = cases.iter().filter(|c| c.delivered_ms.is_some()).count();
    let per_unit = |unit: &str| cases.iter().filter(|c| c.unit == unit).count();
    assert!(per_unit("cbd") > 0 && per_unit("hemu") > 0 && per_unit("beisong") > 0);

    // One camera's health: 10 samples a minute apart, 7 streaming, 2 stalls, a restart.
    let mut outbox = Outbox::open(&outbox_path).unwrap();
    let states = [
        "streaming",
        "streaming",
        "stalled",
        "streaming",
        "backoff",
        "streaming",
        "streaming",
        "connecting",
        "streaming",
        "streaming",
    ];
    let (stalls, reconnects) = (
        [0, 0, 1, 1, 1, 2, 2, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 0, 1, 1],
    );
    for i in 0..10 {
        let sample = CameraSample {
            camera: "hemu-cam",
            state: states[i],
            reconnects: reconnects[i],
            stalls: stalls[i],
        };
        outbox
            .record_camera_samples(now_ms - 3_600_000 + i as i64 * 60_000, &[sample])
            .unwrap();
    }
    drop(outbox);

    // The console alone (no pipeline: the figures come from the stored facts).
    let store = Arc::new(ReviewStore::open(&outbox_path).unwrap());
    store.set_user("chief", Role::Reviewer, PASSWORD).unwrap();
    let cameras = CameraRegistry::default();
    for i in 0..config.area.cameras.len() {
        cameras.add(gridwatch::ingest::initial_status(&config.area, i));
    }
    let state = ReviewState {
        store,
        config: Arc::new(arc_swap::ArcSwap::from_pointee(config.console_config())),
        cameras,
        latest: LatestFrames::new(config.area.cameras.len()),
        suppressions: Default::default(),
        hub: ReviewHub::default(),
        wake: None,
        cluster: None,
        trainer: None,
        live: gridwatch::live::LiveHubs::default(),
        reports: gridwatch::cases::ReportInbox::default(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .unwrap();
    let server =
        runtime.spawn(async move { axum::serve(listener, gridwatch::review::router(state)).await });

    let driver_port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let from = (now.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap())
        - time::Duration::days(i64::from(DAYS) + 1))
    .date();
    let to = now
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap())
        .date();
    runtime.block_on(async {
        wait_for("chromedriver to listen", Duration::from_secs(30), || async {
            TcpStream::connect(("127.0.0.1", driver_port)).is_ok().then_some(())
        })
        .await;
        let client =
            chromium_session(driver_port, &dir.path("chromium-profile"), "1400,1600", &[]).await;
        client.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
        client.find(Locator::Css("#login-name")).await.unwrap().send_keys("chief").await.unwrap();
        client.find(Locator::Css("#login-password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        client.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
        wait_for("the statistics tab", Duration::from_secs(10), || async {
            client.find(Locator::Css("#tab-stats")).await.ok()?.is_displayed().await.ok()?.then_some(())
        })
        .await;
        client.find(Locator::Css("#tab-stats")).await.unwrap().click().await.unwrap();

        // A custom period holding the whole history, grouped by unit.
        client
            .execute(
                "const s = document.getElementById('s-period'); s.value = 'custom'; s.dispatchEvent(new Event('change'));
                 document.getElementById('s-from').value = arguments[0]; document.getElementById('s-to').value = arguments[1];
                 document.getElementById('s-group').value = 'unit'; document.getElementById('s-go').click();",
                vec![serde_json::json!(from.to_string()), serde_json::json!(to.to_string())],
            )
            .await
            .unwrap();
        let card = |figure: &'static str| {
            let client = client.clone();
            async move {
                client
                    .execute(
                        "const c = document.querySelector('.s-card[data-figure=\"' + arguments[0] + '\"]'); return c ? c.dataset.value : null",
                        vec![serde_json::json!(figure)],
                    )
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }
        };
        let shown = wait_for("the figures of the whole history", Duration::from_secs(20), || async {
            let v = card("discovered").await?;
            (v == CASES.to_string()).then_some(v)
        })
        .await;
        assert_eq!(shown, CASES.to_string());
        assert_eq!(card("rejected").await.as_deref(), Some(rejected.to_string().as_str()));
        assert_eq!(card("dispatched").await.as_deref(), Some(dispatched.to_string().as_str()));

        // The table by unit, and one unit's cases.
        for unit in ["cbd", "hemu", "beisong"] {
            let cell = text_of(&client, &format!("#s-table-body tr[data-key='{unit}'] td[data-figure='discovered']")).await;
            assert_eq!(cell, per_unit(unit).to_string(), "unit {unit}");
        }
        client.find(Locator::Css("#s-table-body tr[data-key='hemu']")).await.unwrap().click().await.unwrap();
        let listed = wait_for("hemu's cases", Duration::from_secs(10), || async {
            let n = client.execute("return document.querySelectorAll('#s-cases-body tr').length", vec![]).await.ok()?.as_u64()?;
            (n > 0).then_some(n)
        })
        .await;
        assert_eq!(listed as usize, per_unit("hemu"));

        // The camera health row: 7 of 10 samples streaming; stalls 0→1→2; reconnects 1, then
        // a restart (counters from 0) and 1 more.
        let row = "#s-cameras-body tr[data-camera='hemu-cam'] td";
        let cells = client
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0])).map((td) => td.textContent)",
                vec![serde_json::json!(row)],
            )
            .await
            .unwrap();
        assert_eq!(cells, serde_json::json!(["和睦 1 号", "70.0%", "2", "2"]));

        // The charts are drawn.
        for chart in ["#s-chart-trend", "#s-chart-units", "#s-chart-heat"] {
            let pixels = wait_for(chart, Duration::from_secs(10), || async {
                let n = drawn_pixels(&client, chart).await;
                (n > 1000).then_some(n)
            })
            .await;
            assert!(pixels > 1000, "{chart}: {pixels} drawn pixels");
        }
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("stats-page.png"), png).unwrap();

        // The XLSX download of the same choice answers with a workbook.
        let xlsx = client
            .execute_async(
                "const done = arguments[0]; fetch(document.getElementById('s-xlsx').href)
                   .then(async (r) => done([r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength]));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(xlsx[0], 200);
        assert!(xlsx[1].as_str().unwrap_or_default().contains("spreadsheetml"), "{xlsx}");
        assert!(xlsx[2].as_u64().unwrap_or(0) > 5000, "{xlsx}");
        client.close().await.unwrap();
    });
    server.abort();
}
