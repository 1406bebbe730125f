//! The NanoDet decoder on the real model against detections computed independently in Python
//! (scripts/reference_detections.py: onnxruntime + numpy) on committed frames, and the shared
//! comparison the other decoder tests (decoders_*.rs) use.

use std::sync::Arc;

use gridwatch::infer::card::ModelCard;
use gridwatch::infer::nms::iou;
use gridwatch::infer::{Detection, Detector, Thresholds};
use serde::Deserialize;

use crate::support::{ort_env, repo};

#[derive(Deserialize)]
struct Reference {
    score_threshold: f32,
    nms_iou: f32,
    detections: Vec<RefDet>,
}

#[derive(Deserialize)]
struct RefDet {
    class_id: u16,
    label: String,
    /// The object kind the card's `[kinds]` table gives the label (read by the Python script).
    kind: Option<String>,
    score: f32,
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

/// Scores this close to the threshold may legitimately fall either side (float differences).
const BORDERLINE: f32 = 0.01;

fn check_frame(stem: &str) {
    let img = image::open(repo(&format!("tests/data/frames/{stem}.png")))
        .unwrap()
        .to_rgb8();
    let (w, h) = img.dimensions();
    let matched = check_against_reference(
        "models/nanodet-g-416-coco.toml",
        img.as_raw(),
        w,
        h,
        &format!("tests/data/reference/{stem}.nanodet.json"),
    );
    eprintln!("{stem}: {matched} detections matched the reference");
}

/// Runs the card's model through `Detector` on a packed RGB frame and compares the detections
/// with the reference JSON (boxes in input pixels): every reference detection must be found
/// (same class, label and kind, IoU > 0.95, score within 0.01) and nothing else may be, except
/// scores within `BORDERLINE` of the threshold. Returns the number matched.
pub fn check_against_reference(
    card: &str,
    rgb: &[u8],
    w: u32,
    h: u32,
    reference_file: &str,
) -> usize {
    let stem = reference_file;
    let card = Arc::new(ModelCard::load(&repo(card)).unwrap());
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(repo(reference_file)).unwrap()).unwrap();
    let mut detector = Detector::new(
        ort_env(),
        card,
        1,
        Thresholds {
            score: reference.score_threshold,
            nms_iou: reference.nms_iou,
        },
    )
    .unwrap();
    let mut ours: Vec<Detection> = Vec::new();
    detector
        .detect(rgb, w, h, w as usize * 3, &mut ours)
        .unwrap();
    assert!(
        !reference.detections.is_empty(),
        "reference for {stem} is empty"
    );
    let mut matched = 0;

    let to_px = |d: &Detection| {
        [
            d.bbox[0] * w as f32,
            d.bbox[1] * h as f32,
            d.bbox[2] * w as f32,
            d.bbox[3] * h as f32,
        ]
    };
    let mut used = vec![false; ours.len()];
    for r in &reference.detections {
        let rb = [r.x1, r.y1, r.x2, r.y2];
        let hit = ours
            .iter()
            .enumerate()
            .filter(|(i, d)| !used[*i] && d.class_id == r.class_id)
            .map(|(i, d)| (i, iou(&to_px(d), &rb), d))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match hit {
            Some((i, overlap, d)) if overlap > 0.95 => {
                used[i] = true;
                assert!(
                    (d.score - r.score).abs() < 0.01,
                    "{stem}: {} score {} vs reference {}",
                    r.label,
                    d.score,
                    r.score
                );
                assert_eq!(&*d.label, r.label);
                if let Some(kind) = &r.kind {
                    assert_eq!(d.kind.as_str(), kind, "{stem}: kind of {}", r.label);
                }
                matched += 1;
            }
            _ => assert!(
                r.score < reference.score_threshold + BORDERLINE,
                "{stem}: reference {} {:.3} at {:?} not found in {:?}",
                r.label,
                r.score,
                rb,
                ours.iter()
                    .map(|d| (d.label.to_string(), d.score, to_px(d)))
                    .collect::<Vec<_>>()
            ),
        }
    }
    for (i, d) in ours.iter().enumerate() {
        assert!(
            used[i] || d.score < reference.score_threshold + BORDERLINE,
            "{stem}: extra detection {} {:.3} at {:?}",
            d.label,
            d.score,
            to_px(d)
        );
    }
    matched
}

#[test]
fn nanodet_matches_reference_on_vtest_frame_a() {
    check_frame("vtest-416-a");
}

#[test]
fn nanodet_matches_reference_on_vtest_frame_b() {
    check_frame("vtest-416-b");
}

#[test]
fn nanodet_matches_reference_on_bikes_frame() {
    check_frame("bikes-416");
}

#[test]
fn a_model_file_that_does_not_match_its_card_is_refused() {
    let dir = crate::support::TempDir::new("card");
    let text = std::fs::read_to_string(repo("models/nanodet-g-416-coco.toml")).unwrap();
    // Same card, but pointing at the other model file: the checksum no longer matches.
    std::fs::copy(
        repo("models/ssd_mobilenetv2_oidv4_300.onnx"),
        dir.path("nanodet-g-416_coco-features.onnx"),
    )
    .unwrap();
    std::fs::copy(
        repo("models/coco80_labels.txt"),
        dir.path("coco80_labels.txt"),
    )
    .unwrap();
    std::fs::write(dir.path("card.toml"), &text).unwrap();
    let err = ModelCard::load(&dir.path("card.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256"), "{err}");

    // Right checksum, wrong input name: the session check refuses it.
    std::fs::copy(
        repo("models/nanodet-g-416_coco-features.onnx"),
        dir.path("nanodet-g-416_coco-features.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.path("card.toml"),
        text.replace("name = \"input_1:0\"", "name = \"images\""),
    )
    .unwrap();
    let card = Arc::new(ModelCard::load(&dir.path("card.toml")).unwrap());
    let err = Detector::new(
        ort_env(),
        card,
        1,
        Thresholds {
            score: 0.35,
            nms_iou: 0.6,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("images") && err.contains("input_1:0"), "{err}");
}

#[test]
fn nanodet_feature_map_has_the_card_dims_and_varies_over_a_real_frame() {
    let card = Arc::new(ModelCard::load(&repo("models/nanodet-g-416-coco.toml")).unwrap());
    let mut detector = Detector::new(
        ort_env(),
        card,
        1,
        Thresholds {
            score: 0.35,
            nms_iou: 0.6,
        },
    )
    .unwrap();
    assert!(detector.features().is_none(), "no map before the first run");
    let img = image::open(repo("tests/data/frames/vtest-416-a.png"))
        .unwrap()
        .to_rgb8();
    let mut found = Vec::new();
    detector
        .detect(img.as_raw(), 416, 416, 416 * 3, &mut found)
        .unwrap();
    let map = detector.features().expect("the card has [features]");
    assert_eq!((map.width, map.height, map.channels), (26, 26, 128));
    assert_eq!(map.data.len(), 26 * 26 * 128);
    // Not constant, over cells (channel 0) and over channels (cell 0).
    let column: Vec<f32> = (0..26 * 26).map(|i| map.data[i * 128]).collect();
    let spread = |v: &[f32]| {
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        hi - lo
    };
    assert!(
        spread(&column) > 0.01,
        "channel 0 is constant over the cells"
    );
    assert!(
        spread(map.cell(0, 0)) > 0.01,
        "cell 0 is constant over the channels"
    );
    assert!(map.data.iter().all(|v| v.is_finite()));

    // A camera without learned states skips the copy: no stale map is offered.
    detector.keep_features(false);
    detector
        .detect(img.as_raw(), 416, 416, 416 * 3, &mut found)
        .unwrap();
    assert!(detector.features().is_none(), "not copied, not offered");
    detector.keep_features(true);
    detector
        .detect(img.as_raw(), 416, 416, 416 * 3, &mut found)
        .unwrap();
    assert!(detector.features().is_some());
}
