//! The YOLOv5, YOLOv8 and YOLOX decoders, run through `Detector` and the real onnxruntime on tiny
//! generated models (scripts/make-test-models.py: a constant output tensor in each layout) and
//! compared with the script's independent numpy decoding (tests/data/models/*.reference.json).
//! Also: cards whose labels do not fit the output are errors at decode time, not panics.

use std::sync::Arc;

use gridwatch::infer::card::ModelCard;
use gridwatch::infer::kinds::ObjectKind;
use gridwatch::infer::{Detection, Detector, Thresholds};

use crate::decoder::check_against_reference;
use crate::support::{TempDir, ort_env, repo};

const SIZE: u32 = 64;

/// Runs one generated model on a black frame; every reference detection must match and nothing
/// else may appear.
fn check(name: &str) {
    let reference = format!("tests/data/models/{name}.reference.json");
    let expected = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(repo(&reference)).unwrap(),
    )
    .unwrap()["detections"]
        .as_array()
        .unwrap()
        .len();
    let black = vec![0u8; (SIZE * SIZE * 3) as usize];
    let matched = check_against_reference(
        &format!("tests/data/models/{name}.toml"),
        &black,
        SIZE,
        SIZE,
        &reference,
    );
    eprintln!("{name}: {matched} of {expected} reference detections matched");
    assert_eq!(matched, expected, "{name}");
}

#[test]
fn yolov5_matches_reference() {
    check("yolov5-test");
}

#[test]
fn yolov8_matches_reference() {
    check("yolov8-test");
}

#[test]
fn yolox_raw_grid_outputs_match_reference() {
    check("yolox-raw-test");
}

#[test]
fn yolox_decoded_in_graph_matches_reference() {
    check("yolox-decoded-test");
}

fn detector(card: &std::path::Path) -> Detector {
    let card = Arc::new(ModelCard::load(card).unwrap());
    Detector::new(
        ort_env(),
        card,
        1,
        Thresholds {
            score: 0.25,
            nms_iou: 0.45,
        },
    )
    .unwrap()
}

#[test]
fn custom_label_names_reach_scenarios_as_kinds() {
    let mut d = detector(&repo("tests/data/models/yolov8-test.toml"));
    let mut out: Vec<Detection> = Vec::new();
    let black = vec![0u8; (SIZE * SIZE * 3) as usize];
    d.detect(&black, SIZE, SIZE, SIZE as usize * 3, &mut out)
        .unwrap();
    let persons: Vec<&str> = out
        .iter()
        .filter(|d| d.kind == ObjectKind::Person)
        .map(|d| &*d.label)
        .collect();
    assert_eq!(persons, ["pedestrian", "pedestrian"]);
    assert!(out.iter().any(|d| d.kind == ObjectKind::Fire));
}

#[test]
fn labels_that_do_not_fit_the_output_are_an_error() {
    for name in [
        "yolov5-test",
        "yolov8-test",
        "yolox-raw-test",
        "yolox-decoded-test",
    ] {
        let dir = TempDir::new("yolo-labels");
        for ext in ["onnx", "toml"] {
            std::fs::copy(
                repo(&format!("tests/data/models/{name}.{ext}")),
                dir.path(&format!("{name}.{ext}")),
            )
            .unwrap();
        }
        // One label more than the model has classes.
        let labels = std::fs::read_to_string(repo("tests/data/models/test-labels.txt")).unwrap();
        std::fs::write(dir.path("test-labels.txt"), format!("{labels}extra\n")).unwrap();
        let mut d = detector(&dir.path(&format!("{name}.toml")));
        let mut out = Vec::new();
        let black = vec![0u8; (SIZE * SIZE * 3) as usize];
        let err = d
            .detect(&black, SIZE, SIZE, SIZE as usize * 3, &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("7 classes"), "{name}: {err}");
    }
}
