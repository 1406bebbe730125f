//! The whole pipeline on a recorded clip, as fast as it goes, against a real receiver over
//! loopback: the crowd episodes found independently (sample-streams/vtest.crowd-ground-truth.toml,
//! computed in Python) arrive as cases exactly once, each with a decodable JPEG, and the outbox
//! is empty afterwards.

use gridwatch::cases::Case;
use gridwatch::cases::outbox::Outbox;
use gridwatch::config::Config;
use gridwatch::run::{RunOptions, StopHandle};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver, StoredCase};
use serde::Deserialize;

use crate::support::{TempDir, repo};

#[derive(Deserialize)]
struct GroundTruth {
    zone: Vec<[f64; 2]>,
    min_persons: usize,
    min_duration_seconds: f64,
    clear_seconds: f64,
    score_threshold: f32,
    episodes: Vec<Episode>,
}

#[derive(Deserialize)]
struct Episode {
    start_seconds: f64,
    end_seconds: f64,
}

/// Detections near the threshold differ slightly between runs of the two implementations.
const TOLERANCE_SECONDS: f64 = 4.0;

#[test]
fn crowd_cases_reach_the_receiver_exactly_once() {
    let _exclusive = crate::support::exclusive();
    let gt: GroundTruth = toml::from_str(
        &std::fs::read_to_string(repo("sample-streams/vtest.crowd-ground-truth.toml")).unwrap(),
    )
    .unwrap();
    let dir = TempDir::new("e2e");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime
        .block_on(Receiver::bind(
            "127.0.0.1:0",
            &dir.path("receiver.sqlite"),
            Some("s3cret".into()),
        ))
        .unwrap();
    let base = format!("http://{}", receiver.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(receiver.serve(async {
        let _ = stop_rx.await;
    }));

    let zone = format!("{:?}", gt.zone);
    let text = format!(
        r#"
[centre]
name = "test centre"
[[units]]
id = "cbd"
name = "商业商务区"
[[groups]]
id = "cbd-patrol"
name = "巡查编组"
unit = "cbd"
analysis_fps = 2.0
[[cameras]]
id = "vtest"
name = "vtest"
unit = "cbd"
group = "cbd-patrol"
uri = "{clip}"
[[cameras.zones]]
id = "all"
polygon = {zone}
scenarios = ["crowd_gathering"]
[model]
card = "{card}"
[inference]
workers = 2
[ingest]
pace = "fast"
[scenarios.crowd_gathering]
min_persons = {min_persons}
min_duration_seconds = {min_duration}
clear_seconds = {clear}
score_threshold = {score}
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{base}{CASES_PATH}"
bearer_token = "s3cret"
[reports]
dir = "reports"
formats = ["json"]
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
        min_persons = gt.min_persons,
        min_duration = gt.min_duration_seconds,
        clear = gt.clear_seconds,
        score = gt.score_threshold,
    );
    let config = Config::from_text(&text, "e2e.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let started = time::OffsetDateTime::now_utc();
    let summary =
        gridwatch::run::run(config.clone(), RunOptions::default(), StopHandle::default()).unwrap();
    run_left_statistics(&config, started, summary.cases_stored);

    // What the receiver stored, over HTTP.
    let client = reqwest::Client::new();
    let listed: Vec<StoredCase> = runtime
        .block_on(async {
            client
                .get(format!("{base}{CASES_PATH}"))
                .bearer_auth("s3cret")
                .send()
                .await?
                .json()
                .await
        })
        .unwrap();
    assert_eq!(
        summary.cases_stored as usize,
        listed.len(),
        "every stored case was delivered"
    );
    assert_eq!(summary.outbox.pending, 0, "nothing left undelivered");
    assert_eq!(summary.outbox.delivered as usize, listed.len());
    for c in &listed {
        assert_eq!(c.deliveries, 1, "case {} was POSTed more than once", c.id);
        assert_eq!(c.scenario, "crowd_gathering");
    }

    // The full cases from the receiver's own store (the bodies as received).
    let conn = rusqlite::Connection::open(dir.path("receiver.sqlite")).unwrap();
    let mut stmt = conn.prepare("SELECT body, snapshot FROM received").unwrap();
    let cases: Vec<(Case, Vec<u8>)> = stmt
        .query_map([], |r| {
            Ok((
                serde_json::from_str::<Case>(&r.get::<_, String>(0)?).unwrap(),
                r.get(1)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    // Each ground-truth episode is found by exactly one case, and no case is outside them.
    let mut matched = vec![0; gt.episodes.len()];
    for (case, jpeg) in &cases {
        let t = case.episode.confirmed_media_seconds;
        let hit = gt.episodes.iter().position(|e| {
            t >= e.start_seconds + gt.min_duration_seconds - TOLERANCE_SECONDS
                && t <= e.end_seconds + TOLERANCE_SECONDS
        });
        let Some(i) = hit else {
            panic!("case at {t:.1} s matches no ground-truth episode")
        };
        matched[i] += 1;
        assert!(
            case.objects.len() >= gt.min_persons,
            "case lists its persons: {}",
            case.objects.len()
        );
        assert_eq!(case.id.get_version_num(), 7, "ids are UUIDv7");
        assert_eq!(case.unit.name, "商业商务区");
        let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
            .expect("snapshot is a JPEG");
        assert_eq!(
            (img.width(), img.height()),
            (case.snapshot.width, case.snapshot.height)
        );
        assert_eq!(
            case.snapshot.jpeg().as_deref(),
            Some(jpeg.as_slice()),
            "inline snapshot equals the stored one"
        );
    }
    assert_eq!(
        matched,
        vec![1; gt.episodes.len()],
        "one case per ground-truth episode"
    );

    // The sender's outbox agrees.
    let counts = Outbox::open(&dir.path("outbox.sqlite"))
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(
        (counts.pending, counts.dead, counts.delivered as usize),
        (0, 0, cases.len())
    );

    let _ = stop_tx.send(());
    runtime.block_on(server).unwrap().unwrap();
}

/// What the run left for statistics: every case's facts read from its real JSON (unit,
/// scenario, camera), the camera's health sampled, and the due reports written at start.
fn run_left_statistics(config: &Config, started: time::OffsetDateTime, stored: u64) {
    use gridwatch::stats::{self, Context, Dimension, Lang, Query};
    let outbox = config.resolve(&config.cases.outbox);
    let now = time::OffsetDateTime::now_utc();
    let ctx = Context::new(&config.area, &config.cases.deadlines, now);
    let query = Query {
        from_ms: stats::unix_ms(started) - 1_000,
        to_ms: stats::unix_ms(now) + 1_000,
        group_by: vec![Dimension::Unit, Dimension::Scenario, Dimension::Camera],
        lang: Lang::Zh,
    };
    let conn = stats::open(&outbox).unwrap();
    let report = stats::compute(&conn, &query, &ctx).unwrap();
    assert_eq!(report.total.discovered, stored);
    assert_eq!(report.total.dispatched, stored, "every case was delivered");
    let rows = |d: usize| -> Vec<(String, String, u64)> {
        report.breakdowns[d]
            .rows
            .iter()
            .map(|r| (r.key.clone(), r.name.clone(), r.figures.discovered))
            .collect()
    };
    assert_eq!(
        rows(0),
        vec![("cbd".to_owned(), "商业商务区".to_owned(), stored)]
    );
    assert_eq!(
        rows(1)
            .iter()
            .map(|r| (r.0.as_str(), r.2))
            .collect::<Vec<_>>(),
        vec![("crowd_gathering", stored)]
    );
    assert_eq!(
        rows(2)
            .iter()
            .map(|r| (r.0.as_str(), r.2))
            .collect::<Vec<_>>(),
        vec![("vtest", stored)]
    );
    assert_eq!(report.cameras.len(), 1, "the camera's health was sampled");
    let reports: Vec<String> =
        std::fs::read_dir(config.resolve(config.reports.dir.as_ref().unwrap()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert!(
        reports
            .iter()
            .any(|f| f.starts_with("gridwatch-daily-") && f.ends_with(".json")),
        "{reports:?}"
    );
}
