//! A learned zone state end to end on real frames: `gridwatch learn` trains the vtest path's
//! state from at most 30 labels set by eye (sample-streams/vtest.states.toml), the card goes to
//! the deployment's `[states] cards_dir`, and `gridwatch run` on the clip (GStreamer, the
//! detector's feature map, the classifier in the worker, tracker, zone rule, cases, delivery
//! over loopback) raises the state's cases; without the card the scenario stays inactive and
//! nothing is raised. A card trained for another model file is refused at start.

use gridwatch::config::Config;
use gridwatch::learn::{self, LabelSource, LearnOptions};
use gridwatch::states::{Pooling, TrainOptions};

use crate::scenarios_custom::run_cases;
use crate::support::{TempDir, exclusive, repo};

/// A town catalog with the state as a scenario: a stretch of path occupied for 3 s.
const CATALOG: &str = r#"
[codes]
"T-01" = { major = "市容秩序", minor = "通道占用" }
[[scenarios]]
id = "path_occupied"
name_zh = "通道占用"
name_en = "Path occupied"
category_code = "T-01"
department = "城管"
workstation = "村居工作站"
level = "simple"
rule = "zone_count"
kinds = []
thresholds = { dwell_seconds = 3.0, clear_seconds = 4.0, cooldown_seconds = 0.0 }
"#;

fn body(dir: &TempDir) -> String {
    std::fs::write(dir.path("catalog.toml"), CATALOG).unwrap();
    format!(
        r#"
[[cameras]]
id = "vtest"
name = "vtest"
unit = "jj"
group = "patrol"
uri = "{clip}"
[[cameras.zones]]
id = "left-path"
polygon = [[0.0, 0.31], [0.42, 0.30], [0.42, 0.53], [0.0, 0.47]]
scenarios = ["path_occupied"]
[model]
card = "{card}"
[scenarios]
catalog = "catalog.toml"
[states]
cards_dir = "cards"
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    )
}

#[test]
fn a_state_learned_from_30_labels_raises_its_cases_and_without_its_card_nothing_runs() {
    let _one = exclusive();
    let dir = TempDir::new("zone-states");
    let body = body(&dir);

    // Without a card the catalog's scenario has no kind any model provides: inactive.
    let cases = run_cases(&body, &dir);
    assert!(cases.is_empty(), "no card, no case: {}", cases.len());

    let text = format!(
        "[centre]\nname = \"c\"\n[[units]]\nid = \"jj\"\nname = \"j\"\n[[groups]]\nid = \"patrol\"\nname = \"p\"\nunit = \"jj\"\n[dispatch]\nurl = \"http://127.0.0.1:9/\"\n{body}"
    );
    std::fs::write(dir.path("learn.toml"), &text).unwrap();
    let waits = check(&dir);
    assert!(
        waits.contains("warning: scenario `path_occupied` in camera vtest zone left-path waits for a model with its kinds, or for a learned zone state: at least 5 present and 5 absent labelled frames"),
        "{waits}"
    );
    let config = Config::from_text(&text, "learn.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let learned = learn::run(
        &config,
        &LearnOptions {
            source: LabelSource::File(repo("sample-streams/vtest.states.toml")),
            out_dir: dir.path("cards"),
            pooling: Pooling::ZoneCells2x2,
            train: TrainOptions {
                max_train_labels: Some(30),
                ..Default::default()
            },
            decode_fps: learn::DEFAULT_DECODE_FPS,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(learned.card_path.starts_with(dir.path("cards")));
    let served = check(&dir);
    assert!(
        served.contains("note: scenario `path_occupied` runs in camera vtest zone left-path on its learned zone state"),
        "{served}"
    );
    assert!(
        served.contains("note: learned zone state `path_occupied` of camera vtest zone left-path: held-out precision"),
        "{served}"
    );
    // The zone drawn again: the card still pools the old outline, and `check` says so.
    let redrawn = text.replace(
        "polygon = [[0.0, 0.31], [0.42, 0.30], [0.42, 0.53], [0.0, 0.47]]",
        "polygon = [[0.0, 0.31], [0.5, 0.30], [0.5, 0.53], [0.0, 0.47]]",
    );
    assert_ne!(redrawn, text);
    std::fs::write(dir.path("learn.toml"), &redrawn).unwrap();
    let stale = check(&dir);
    assert!(
        stale.contains("zone left-path was redrawn since the card was trained"),
        "{stale}"
    );
    std::fs::write(dir.path("learn.toml"), &text).unwrap();

    // `detect --camera` runs the camera's zone states too: the state shows on a second where
    // the labels say someone is on the path (20 s), not where nobody is (12 s).
    let found = detect_states(&dir, &[12.0, 20.0]);
    assert_eq!(found, [false, true], "state detections at 12 s and 20 s");

    std::fs::remove_file(dir.path("outbox.sqlite")).ok();
    std::fs::remove_file(dir.path("receiver.sqlite")).ok();
    let cases = run_cases(&body, &dir);
    assert!(!cases.is_empty(), "the learned state raised no case");
    for c in &cases {
        assert_eq!(
            (c.scenario.id.as_str(), c.zone.id.as_str()),
            ("path_occupied", "left-path")
        );
        assert!(
            c.objects.iter().all(|o| o.label == "state:path_occupied"),
            "only the state's detections count: {:?}",
            c.objects
        );
        assert!(
            c.confidence >= 0.5,
            "at or above the classifier's threshold"
        );
    }
    // By the labels (by eye) the path is occupied over 6-8 s, 16-43 s (a 3 s gap at 34-36 s,
    // under the 4 s clear time) and 49-78 s: three episodes, one case each, no flicker; and
    // each case is confirmed while someone is on the path (within 2 s of a present label).
    let labels = learn::LabelsFile::load(&repo("sample-streams/vtest.states.toml")).unwrap();
    let starts: Vec<f64> = cases
        .iter()
        .map(|c| c.episode.confirmed_media_seconds)
        .collect();
    eprintln!("zone-state cases confirmed at {starts:?} s");
    assert!(cases.len() <= 3, "{} cases: {starts:?}", cases.len());
    for t in starts {
        assert!(
            labels
                .labels
                .iter()
                .any(|l| l.present && (l.at_seconds - t).abs() <= 2.0),
            "a case confirmed at {t} s, with nobody on the path by the labels"
        );
    }
}

/// `gridwatch check` on the test's configuration: what it prints.
fn check(dir: &TempDir) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(dir.path("learn.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether `gridwatch detect --camera vtest` reports the state at each of `seconds` of the clip
/// (analysed at 1 fps).
fn detect_states(dir: &TempDir, seconds: &[f64]) -> Vec<bool> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args([
            "detect",
            "--camera",
            "vtest",
            "--fps",
            "1",
            "--max-frames",
            "25",
            "--config",
        ])
        .arg(dir.path("learn.toml"))
        .arg(repo("sample-streams/vtest.mp4"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    seconds
        .iter()
        .map(|t| {
            let frame = frames
                .iter()
                .find(|f| (f["pts_seconds"].as_f64().unwrap() - t).abs() < 0.01)
                .unwrap_or_else(|| panic!("no frame at {t} s"));
            frame["detections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["label"] == "state:path_occupied" && d["model"] == "zone-state")
        })
        .collect()
}
