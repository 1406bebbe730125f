//! Several models per deployment: `[[models]]` and its errors (file, line, field), which models
//! each camera runs, and the real NanoDet and SSD models run as one set on a decoded frame:
//! NanoDet in a set is NanoDet alone, SSD fed from the larger frame sees what it sees at its own
//! size, and one object seen by both models comes out once.

use std::path::Path;
use std::sync::Arc;

use gridwatch::config::Config;
use gridwatch::infer::card::ModelCard;
use gridwatch::infer::kinds::{KindSet, ObjectKind};
use gridwatch::infer::models::{CameraModels, ModelSet};
use gridwatch::infer::nms::iou;
use gridwatch::infer::{Detection, Detector, Thresholds};
use gridwatch::ingest::Frame;

use crate::support::{line_of, ort_env, repo};

const NANODET: &str = "models/nanodet-g-416-coco.toml";
const SSD: &str = "models/ssd-mobilenetv2-oidv4-300.toml";

/// A key area with two cameras (a street with a non-motor zone, a plaza with a crowd zone)
/// and the models section `models` (TOML), zone extras `street_zone`.
fn config_text(models: &str, street_zone: &str) -> String {
    format!(
        r#"[centre]
name = "c"
[[units]]
id = "u"
name = "u"
[[groups]]
id = "g"
name = "g"
unit = "u"
[[cameras]]
id = "street"
name = "street"
unit = "u"
group = "g"
uri = "test:"
[[cameras.zones]]
id = "pavement"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
scenarios = ["nonmotor_parking"]
{street_zone}
[[cameras]]
id = "plaza"
name = "plaza"
unit = "u"
group = "g"
uri = "test:"
[[cameras.zones]]
id = "square"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
scenarios = ["crowd_gathering"]
{models}
[dispatch]
url = "http://127.0.0.1:9/api"
"#
    )
}

fn two_models() -> String {
    format!(
        "[[models]]\ncard = \"{}\"\n[[models]]\nid = \"ssd\"\ncard = \"{}\"\nscore_threshold = 0.3\n",
        repo(NANODET).display(),
        repo(SSD).display()
    )
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_text(text, "models.toml", Path::new("/")).map_err(|e| e.to_string())
}

/// The error names `field` at the line holding `marker`.
fn assert_refused(text: &str, marker: &str, field: &str, message: &str) {
    let err = load(text).expect_err("the configuration should be refused");
    let line = line_of(text, marker);
    let found = err
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no `{message}` in:\n{err}"));
    assert!(
        found.contains(&format!("models.toml:{line}:")) && found.contains(&format!("`{field}`")),
        "expected line {line} and field {field}: {found}"
    );
}

#[test]
fn model_and_models_together_are_refused() {
    let text = config_text(
        &format!(
            "[model]\ncard = \"{}\"\n{}",
            repo(NANODET).display(),
            two_models()
        ),
        "",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("`[model]` and `[[models]]` together"), "{err}");
}

#[test]
fn a_second_model_with_the_same_id_is_refused_at_its_card() {
    let card = repo(NANODET).display().to_string();
    let text = config_text(
        &format!("[[models]]\ncard = \"{card}\"\n[[models]]\ncard = \"{card}\"\nnms_iou = 0.5\n"),
        "",
    );
    let err = load(&text).unwrap_err();
    assert!(err.contains("`models[1].card`"), "{err}");
    assert!(err.contains("used twice"), "{err}");
}

#[test]
fn unknown_model_names_are_refused_where_they_are_written() {
    let text = config_text(&two_models(), "models = [\"ssd\", \"yolo\"]");
    assert_refused(
        &text,
        "models = [\"ssd\", \"yolo\"]",
        "cameras[0].zones[0].models[1]",
        "unknown model `yolo`",
    );
    let text = config_text(
        &format!(
            "{}[scenarios.models]\nnonmotor_parking = [\"sdd\"]\n",
            two_models()
        ),
        "",
    );
    assert_refused(
        &text,
        "nonmotor_parking = [\"sdd\"]",
        "scenarios.models.nonmotor_parking[0]",
        "unknown model `sdd`",
    );
}

#[test]
fn the_single_model_form_is_one_model_named_by_its_card() {
    let text = config_text(
        &format!("[model]\ncard = \"{}\"\n", repo(NANODET).display()),
        "",
    );
    let c = load(&text).unwrap();
    assert_eq!(c.model_ids(), vec![Arc::<str>::from("nanodet-g-416-coco")]);
    let kinds = c.models_kinds().unwrap();
    for s in c.camera_models(&kinds) {
        assert_eq!(s.plan.label(), "nanodet-g-416-coco");
        assert_eq!(
            s.plan.models[0].kinds,
            KindSet::ALL,
            "one model keeps every kind"
        );
    }
}

#[test]
fn cameras_run_the_first_model_of_each_kind_unless_a_zone_or_scenario_names_others() {
    // Nothing named: NanoDet comes first and has every kind both scenarios need.
    let c = load(&config_text(&two_models(), "")).unwrap();
    let kinds = c.models_kinds().unwrap();
    let plans: Vec<String> = c
        .camera_models(&kinds)
        .iter()
        .map(|s| s.plan.label())
        .collect();
    assert_eq!(plans, ["nanodet-g-416-coco", "nanodet-g-416-coco"]);

    // The scenario names both: only the street camera, which has that scenario, runs SSD, and
    // SSD contributes only the kinds the scenario needs that it has (bicycles; no motorcycles).
    let named = format!(
        "{}[scenarios.models]\nnonmotor_parking = [\"nanodet-g-416-coco\", \"ssd\"]\n",
        two_models()
    );
    let c = load(&config_text(&named, "")).unwrap();
    let sel = c.camera_models(&kinds);
    assert_eq!(sel[0].plan.label(), "nanodet-g-416-coco+ssd");
    assert_eq!(sel[1].plan.label(), "nanodet-g-416-coco");
    let ssd = &sel[0].plan.models[1];
    assert!(ssd.kinds.contains(ObjectKind::Bicycle));
    assert!(!ssd.kinds.contains(ObjectKind::Person) && !ssd.kinds.contains(ObjectKind::Car));
    assert_eq!(
        sel[0].plan.models[0].kinds,
        KindSet::ALL,
        "the first model keeps all"
    );

    // A zone's list wins over the scenario's: this zone runs SSD alone.
    let c = load(&config_text(&named, "models = [\"ssd\"]")).unwrap();
    let sel = c.camera_models(&kinds);
    assert_eq!(sel[0].plan.label(), "ssd");
    assert_eq!(sel[0].plan.models[0].kinds, KindSet::ALL);
}

#[test]
fn check_notes_what_each_camera_runs_and_a_model_nobody_runs() {
    let c = load(&config_text(&two_models(), "")).unwrap();
    let report = c.check_report().join("\n");
    assert!(
        report.contains("note: camera street runs nanodet-g-416-coco"),
        "{report}"
    );
    assert!(
        report.contains("warning: model `ssd` is configured but no camera runs it"),
        "{report}"
    );
    let c = load(&config_text(&two_models(), "models = [\"ssd\"]")).unwrap();
    let report = c.check_report().join("\n");
    assert!(!report.contains("no camera runs it"), "{report}");
}

fn frame_of(png: &str) -> Frame {
    let img = image::open(repo(png)).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    Frame::from_rgb(0, "bikes".into(), 1, 0.0, w, h, img.into_raw()).unwrap()
}

fn detector(card: &str, score: f32) -> Detector {
    let card = Arc::new(ModelCard::load(&repo(card)).unwrap());
    let t = Thresholds {
        score,
        nms_iou: 0.6,
    };
    Detector::new(ort_env(), card, 1, t).unwrap()
}

fn set() -> ModelSet {
    ModelSet::new(vec![detector(NANODET, 0.35), detector(SSD, 0.3)], 0.5)
}

fn ids() -> Vec<Arc<str>> {
    vec!["nanodet".into(), "ssd".into()]
}

fn only(plan: &CameraModels, index: usize) -> CameraModels {
    CameraModels::of(
        plan.models
            .iter()
            .filter(|u| u.index == index)
            .cloned()
            .collect(),
    )
}

#[test]
fn nanodet_in_a_set_finds_exactly_what_it_finds_alone() {
    let frame = frame_of("tests/data/frames/bikes-416.png");
    let mut alone = Vec::new();
    detector(NANODET, 0.35)
        .detect(
            frame.rgb(),
            frame.width,
            frame.height,
            frame.row_stride,
            &mut alone,
        )
        .unwrap();
    let mut in_set = Vec::new();
    let mut models = set();
    models
        .analyse(&frame, &only(&CameraModels::all(&ids()), 0), &mut in_set)
        .unwrap();
    assert!(!alone.is_empty());
    assert_eq!(in_set, alone);
}

#[test]
fn ssd_fed_from_the_416_frame_sees_what_it_sees_at_300() {
    // The same picture decoded at 300×300 (by GStreamer) and at 416×416 (area-resized to 300
    // by the set): the resizers differ, so boxes and scores agree within a tolerance.
    let small = frame_of("tests/data/frames/bikes-300.png");
    let mut reference = Vec::new();
    detector(SSD, 0.3)
        .detect(
            small.rgb(),
            small.width,
            small.height,
            small.row_stride,
            &mut reference,
        )
        .unwrap();
    let mut got = Vec::new();
    let mut models = set();
    let frame = frame_of("tests/data/frames/bikes-416.png");
    models
        .analyse(&frame, &only(&CameraModels::all(&ids()), 1), &mut got)
        .unwrap();
    let matched = reference
        .iter()
        .filter(|r| {
            got.iter().any(|g| {
                g.class_id == r.class_id
                    && iou(&g.bbox, &r.bbox) >= 0.8
                    && (g.score - r.score).abs() <= 0.1
            })
        })
        .count();
    assert!(
        matched >= 2 && matched * 10 >= reference.len() * 7,
        "{matched} of {} matched: {got:?} vs {reference:?}",
        reference.len()
    );
}

#[test]
fn an_object_both_models_see_comes_out_once() {
    let frame = frame_of("tests/data/frames/bikes-416.png");
    let mut models = set();
    let plan = CameraModels::all(&ids());
    let mut each = [Vec::new(), Vec::new()];
    for (i, out) in each.iter_mut().enumerate() {
        models.analyse(&frame, &only(&plan, i), out).unwrap();
    }
    let mut merged: Vec<Detection> = Vec::new();
    models.analyse(&frame, &plan, &mut merged).unwrap();
    let origins = models.origins().to_vec();
    assert_eq!(origins.len(), merged.len());
    // Some object was seen by both: fewer than the two lists together.
    assert!(
        merged.len() < each[0].len() + each[1].len(),
        "nothing merged: {merged:?}"
    );
    for (a, (da, ma)) in merged.iter().zip(&origins).enumerate() {
        for (db, mb) in merged.iter().zip(&origins).skip(a + 1) {
            assert!(
                ma == mb || da.kind != db.kind || iou(&da.bbox, &db.bbox) < 0.5,
                "a duplicate across models survived: {da:?} / {db:?}"
            );
        }
    }
    // Every survivor is one of its model's own detections.
    for (d, m) in merged.iter().zip(&origins) {
        assert!(each[usize::from(*m)].contains(d), "{d:?} from model {m}");
    }
}

#[test]
fn the_shipped_two_model_configuration_passes_check_and_says_what_each_camera_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(repo("config/nanodet-ssd.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("note: camera cbd-plaza-01 runs nanodet\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: camera sjt-street-01 runs nanodet+ssd\n"),
        "{stdout}"
    );
}

#[test]
fn more_models_than_the_bound_are_refused() {
    let many: String = (0..=gridwatch::config::models::MAX_MODELS)
        .map(|i| {
            format!(
                "[[models]]\nid = \"m{i}\"\ncard = \"{}\"\n",
                repo(NANODET).display()
            )
        })
        .collect();
    let err = load(&config_text(&many, "")).unwrap_err();
    assert!(
        err.contains("`models`") && err.contains("at most 16"),
        "{err}"
    );
}
