//! The MediaPipe SSD decoder (shipped model `models/ssd-mobilenetv2-oidv4-300`) on the real model
//! against detections computed independently in Python (scripts/reference_ssd_detections.py:
//! anchors, decoding and NMS in numpy from models/PROVENANCE.md) on committed 300×300 frames, and
//! the crowd rule counting that model's "Person" through its object kind.

use std::sync::Arc;

use gridwatch::infer::card::ModelCard;
use gridwatch::infer::kinds::ObjectKind;
use gridwatch::infer::{Detection, Detector, Thresholds};
use gridwatch::scenarios::crowd::CrowdRule;
use gridwatch::scenarios::settings::CrowdSettings;

use crate::decoder::check_against_reference;
use crate::support::{ort_env, repo};

const CARD: &str = "models/ssd-mobilenetv2-oidv4-300.toml";

fn frame(stem: &str) -> (Vec<u8>, u32, u32) {
    let img = image::open(repo(&format!("tests/data/frames/{stem}.png")))
        .unwrap()
        .to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn check(stem: &str) -> usize {
    let (rgb, w, h) = frame(stem);
    let matched = check_against_reference(
        CARD,
        &rgb,
        w,
        h,
        &format!("tests/data/reference/{stem}.ssd.json"),
    );
    eprintln!("{stem}: {matched} SSD detections matched the reference");
    matched
}

#[test]
fn ssd_matches_reference_on_vtest_frame() {
    assert!(check("vtest-300-a") >= 10);
}

#[test]
fn ssd_matches_reference_on_bikes_frame() {
    assert!(check("bikes-300") >= 2);
}

#[test]
fn the_crowd_rule_counts_ssd_persons_by_kind_not_label() {
    let card = Arc::new(ModelCard::load(&repo(CARD)).unwrap());
    let mut detector = Detector::new(
        ort_env(),
        card,
        1,
        Thresholds {
            score: 0.3,
            nms_iou: 0.5,
        },
    )
    .unwrap();
    let (rgb, w, h) = frame("vtest-300-a");
    let mut dets: Vec<Detection> = Vec::new();
    detector
        .detect(&rgb, w, h, w as usize * 3, &mut dets)
        .unwrap();
    // Open Images spells it "Person"; the card maps it to the person kind.
    let persons = dets.iter().filter(|d| &*d.label == "Person").count();
    assert!(persons >= 5, "{dets:?}");
    assert!(
        dets.iter()
            .all(|d| (&*d.label == "Person") == (d.kind == ObjectKind::Person))
    );
    let rule = CrowdRule::new(CrowdSettings {
        min_persons: 3,
        score_threshold: 0.3,
        ..CrowdSettings::default()
    });
    let whole_frame = gridwatch::area::geometry::ZoneShape::polygon(vec![
        [-0.1, -0.1],
        [1.1, -0.1],
        [1.1, 1.1],
        [-0.1, 1.1],
    ]);
    assert_eq!(rule.persons_in(&whole_frame, &dets).count(), persons);
}
