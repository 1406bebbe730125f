//! Scenarios that the shipped COCO model cannot serve, end to end through the real pipeline
//! (GStreamer, onnxruntime, tracker, rules, cases, HTTP delivery to a receiver on loopback):
//! - exposed garbage, garbage overflow, street drying and waterlogging with a generated YOLOv8-layout model whose
//!   card maps its labels to `garbage`, `laundry` and `water` (proves the path, no accuracy);
//! - straw burning with the classical OpenCV fire/smoke baseline on a synthetic burning-field
//!   clip (flames, smoke, and a red car and an orange sign that must not count), and on the real
//!   vtest clip, where nothing burns.

use gridwatch::cases::Case;
use gridwatch::config::Config;
use gridwatch::infer::kinds::ObjectKind;
use gridwatch::run::{RunOptions, StopHandle};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver};

use crate::support::{TempDir, exclusive, repo};

/// Runs `gridwatch run` on the configuration `body` (cameras, model, extra sections; the
/// centre, unit, group, ingest and dispatch sections are added) and returns the cases the
/// receiver got.
pub(crate) fn run_cases(body: &str, dir: &TempDir) -> Vec<Case> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = dir.path("receiver.sqlite");
    let receiver = runtime
        .block_on(Receiver::bind("127.0.0.1:0", &db, None))
        .unwrap();
    let base = format!("http://{}", receiver.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(receiver.serve(async {
        let _ = stop_rx.await;
    }));
    let text = format!(
        r#"
[centre]
name = "test centre"
[[units]]
id = "jj"
name = "佳锦"
[[groups]]
id = "patrol"
name = "巡查编组"
unit = "jj"
analysis_fps = 2.0
[ingest]
pace = "fast"
[inference]
workers = 2
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{base}{CASES_PATH}"
{body}
"#
    );
    let config = Config::from_text(&text, "custom.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let summary = gridwatch::run::run(config, RunOptions::default(), StopHandle::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.outbox.pending, 0, "every case was delivered");
    let _ = stop_tx.send(());
    runtime.block_on(server).unwrap().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT body FROM received").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| serde_json::from_str::<Case>(&b.unwrap()).unwrap())
        .collect()
}

fn summary(cases: &[Case]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = cases
        .iter()
        .map(|c| {
            (
                c.camera.id.clone(),
                c.zone.id.clone(),
                c.scenario.id.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_custom_model_with_town_kinds_drives_garbage_laundry_and_water_cases() {
    let _heavy = exclusive();
    let dir = TempDir::new("custom-kinds");
    // The catalog's dwells (5-10 minutes) are shortened for this camera by per-camera
    // overrides; the street-drying zone's override is then undone by nothing (one case each).
    let body = format!(
        r#"
[model]
card = "{card}"
[[cameras]]
id = "lane-7"
name = "佳锦 lane 7"
unit = "jj"
group = "patrol"
uri = "{clip}"
[cameras.scenario_overrides.exposed_garbage]
dwell_seconds = 3.0
[cameras.scenario_overrides.street_drying]
dwell_seconds = 3.0
[cameras.scenario_overrides.waterlogging]
dwell_seconds = 3.0
[cameras.scenario_overrides.garbage_overflow]
dwell_seconds = 3.0
[[cameras.zones]]
id = "bin-corner"
polygon = [[0.0, 0.5], [0.4, 0.5], [0.4, 1.0], [0.0, 1.0]]
scenarios = ["exposed_garbage", "garbage_overflow"]
[[cameras.zones]]
id = "balconies"
polygon = [[0.3, 0.0], [0.7, 0.0], [0.7, 0.4], [0.3, 0.4]]
anchor = "centre"
scenarios = ["street_drying"]
[[cameras.zones]]
id = "road-dip"
polygon = [[0.5, 0.6], [1.0, 0.6], [1.0, 1.0], [0.5, 1.0]]
anchor = "overlap"
min_overlap_ratio = 0.8
scenarios = ["waterlogging"]
[[cameras.zones]]
id = "masked-corner"
polygon = [[0.0, 0.5], [0.4, 0.5], [0.4, 1.0], [0.0, 1.0]]
exclude = [[[0.0, 0.8], [0.4, 0.8], [0.4, 1.0], [0.0, 1.0]]]
scenarios = ["exposed_garbage"]
[[cameras.zones]]
id = "empty-kerb"
polygon = [[0.7, 0.0], [1.0, 0.0], [1.0, 0.4], [0.7, 0.4]]
scenarios = ["exposed_garbage", "street_drying", "waterlogging"]
"#,
        card = repo("tests/data/models/town-kinds-yolov8.toml").display(),
        clip = repo("sample-streams/bikes.mp4").display(),
    );
    let cases = run_cases(&body, &dir);
    let got = summary(&cases);
    let expect =
        |zone: &str, scenario: &str| ("lane-7".to_owned(), zone.to_owned(), scenario.to_owned());
    // One case per episode although every frame shows the objects for the whole 10 s clip;
    // the masked corner hides the bag's foot point; the empty kerb has nothing.
    assert_eq!(
        got,
        vec![
            expect("balconies", "street_drying"),
            expect("bin-corner", "exposed_garbage"),
            expect("bin-corner", "garbage_overflow"),
            expect("road-dip", "waterlogging"),
        ],
        "cases: {got:?}"
    );
    for c in &cases {
        let kind = match c.scenario.id.as_str() {
            "exposed_garbage" => ("garbage_bag", "城管", "0201", "暴露垃圾"),
            "garbage_overflow" => ("garbage_bag", "城管", "0202", "垃圾分类"),
            "street_drying" => ("hung_laundry", "城管", "0105", "乱晾晒"),
            "waterlogging" => ("standing_water", "水务", "0303", "道路积水"),
            other => panic!("unexpected scenario {other}"),
        };
        assert_eq!(c.objects.len(), 1, "{:?}", c.objects);
        assert_eq!(c.objects[0].label, kind.0);
        assert_eq!(c.department, kind.1);
        assert_eq!(c.scenario.category_code, kind.2);
        assert_eq!(c.scenario.category_minor, kind.3);
        assert!(
            c.snapshot.jpeg().is_some_and(|j| j.len() > 1000),
            "a snapshot is attached"
        );
    }
}

#[test]
fn the_fire_baseline_finds_flames_and_smoke_but_not_a_red_car_or_walking_people() {
    let _heavy = exclusive();
    let dir = TempDir::new("fire-baseline");
    let body = format!(
        r#"
[model]
card = "{card}"
[[cameras]]
id = "field"
name = "field by the canal"
unit = "jj"
group = "patrol"
uri = "{fire}"
[[cameras.zones]]
id = "field-flames"
polygon = [[0.2, 0.45], [0.45, 0.45], [0.45, 0.75], [0.2, 0.75]]
anchor = "centre"
scenarios = ["straw_burning"]
[[cameras.zones]]
id = "sky-above"
polygon = [[0.1, 0.0], [0.5, 0.0], [0.5, 0.45], [0.1, 0.45]]
anchor = "centre"
scenarios = ["straw_burning"]
[[cameras.zones]]
id = "road-and-sign"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
exclude = [[[0.2, 0.45], [0.45, 0.45], [0.45, 0.75], [0.2, 0.75]]]
anchor = "centre"
scenarios = ["straw_burning"]
[[cameras]]
id = "plaza"
name = "plaza"
unit = "jj"
group = "patrol"
uri = "{vtest}"
[[cameras.zones]]
id = "everywhere"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
anchor = "centre"
scenarios = ["straw_burning"]
"#,
        card = repo("models/nanodet-g-416-coco.toml").display(),
        fire = repo("tests/data/clips/synthetic-fire.mp4").display(),
        vtest = repo("sample-streams/vtest.mp4").display(),
    );
    let cases = run_cases(&body, &dir);
    let got = summary(&cases);
    let in_zone = |zone: &str| {
        cases
            .iter()
            .filter(|c| c.zone.id == zone)
            .collect::<Vec<_>>()
    };
    let flames = in_zone("field-flames");
    assert_eq!(flames.len(), 1, "one case for the burning field: {got:?}");
    assert!(
        flames[0]
            .objects
            .iter()
            .any(|o| o.kind == ObjectKind::Fire.as_str()),
        "{:?}",
        flames[0].objects
    );
    // The fire starts at 4 s; the case comes after the 5 s dwell, while it burns.
    let t = flames[0].episode.confirmed_media_seconds;
    assert!((9.0..24.0).contains(&t), "confirmed at {t} s");
    let plume = in_zone("sky-above");
    assert_eq!(plume.len(), 1, "one case for the smoke plume: {got:?}");
    assert!(
        plume[0]
            .objects
            .iter()
            .any(|o| o.kind == ObjectKind::Smoke.as_str()),
        "{:?}",
        plume[0].objects
    );
    assert!(
        in_zone("road-and-sign").is_empty(),
        "the red car and the orange sign: {got:?}"
    );
    let plaza: Vec<_> = in_zone("everywhere")
        .iter()
        .map(|c| (c.episode.confirmed_media_seconds, c.objects.clone()))
        .collect();
    assert!(plaza.is_empty(), "people walking in vtest: {plaza:?}");
    assert_eq!(flames[0].scenario.id, "straw_burning");
    assert_eq!(flames[0].department, "规保办");
}
