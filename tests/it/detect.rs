//! `gridwatch detect`: the configured model on stills and clips. A still's detections are
//! checked against the independent Python reference (scripts/reference_detections.py, the same
//! files the decoder test reads); a clip's frames come in order with their zones; bad input is
//! an error naming the file.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::support::{TempDir, repo};

#[derive(Deserialize)]
struct Reference {
    score_threshold: f32,
    nms_iou: f32,
    detections: Vec<RefDet>,
}

#[derive(Deserialize)]
struct RefDet {
    label: String,
    score: f32,
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

/// Scores this close to the threshold may fall either side (float differences).
const BORDERLINE: f32 = 0.01;

fn detect(args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("detect")
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

#[test]
fn detect_on_stills_agrees_with_the_python_reference_and_writes_annotated_frames() {
    let config = gridwatch::config::Config::embedded_default().unwrap();
    let out = TempDir::new("detect-stills");
    let stems = ["vtest-416-a", "vtest-416-b", "bikes-416"];
    let frames: Vec<String> = stems
        .iter()
        .map(|s| format!("tests/data/frames/{s}.png"))
        .collect();
    let mut args: Vec<&str> = frames.iter().map(String::as_str).collect();
    let out_dir = out.0.display().to_string();
    args.extend(["--out", &out_dir]);
    let (ok, results, stderr) = detect(&args);
    assert!(ok, "{stderr}");
    assert_eq!(results.len(), stems.len(), "{stderr}");
    let mut matched = 0;
    for (stem, r) in stems.iter().zip(&results) {
        let reference: Reference = serde_json::from_str(
            &std::fs::read_to_string(repo(&format!("tests/data/reference/{stem}.nanodet.json")))
                .unwrap(),
        )
        .unwrap();
        // The reference was made with the shipped configuration's thresholds.
        assert_eq!(reference.score_threshold, config.models[0].score_threshold);
        assert_eq!(reference.nms_iou, config.models[0].nms_iou);
        let ours: Vec<(String, f32, [f32; 4])> = r["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let b: Vec<f32> = serde_json::from_value(d["bbox"].clone()).unwrap();
                (
                    d["label"].as_str().unwrap().to_owned(),
                    d["score"].as_f64().unwrap() as f32,
                    [b[0] * 416.0, b[1] * 416.0, b[2] * 416.0, b[3] * 416.0],
                )
            })
            .collect();
        let mut used = vec![false; ours.len()];
        for rd in &reference.detections {
            let rb = [rd.x1, rd.y1, rd.x2, rd.y2];
            let hit = (0..ours.len())
                .filter(|&i| !used[i] && ours[i].0 == rd.label)
                .max_by(|&a, &b| iou(ours[a].2, rb).total_cmp(&iou(ours[b].2, rb)));
            match hit {
                Some(i) if iou(ours[i].2, rb) > 0.95 => {
                    used[i] = true;
                    assert!((ours[i].1 - rd.score).abs() < 0.01, "{stem}: {}", rd.label);
                    matched += 1;
                }
                _ => assert!(
                    rd.score < reference.score_threshold + BORDERLINE,
                    "{stem}: reference {} {:.3} at {rb:?} not found in {ours:?}",
                    rd.label,
                    rd.score
                ),
            }
        }
        for (i, d) in ours.iter().enumerate() {
            assert!(
                used[i] || d.1 < reference.score_threshold + BORDERLINE,
                "{stem}: extra detection {d:?}"
            );
        }
        // The annotated frame is a JPEG of the model's height at the still's aspect (square).
        let path = r["annotated"].as_str().expect("annotated path");
        let img = image::open(path).unwrap();
        assert_eq!((img.width(), img.height()), (416, 416), "{path}");
        assert_eq!(r["pts_seconds"], Value::Null);
        assert_eq!(r["model"], "nanodet-g-416-coco");
    }
    assert!(matched >= 10, "only {matched} reference detections matched");
}

/// Even-odd test, written here independently of the library's geometry.
fn inside(polygon: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut c = false;
    let n = polygon.len();
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[(i + n - 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            c = !c;
        }
    }
    c
}

#[test]
fn detect_on_a_clip_reports_frames_in_order_with_the_cameras_zones() {
    let config = gridwatch::config::Config::embedded_default().unwrap();
    let camera = config
        .area
        .cameras
        .iter()
        .find(|c| c.uri.ends_with("vtest.mp4"))
        .expect("the default has a vtest camera");
    let (ok, results, stderr) = detect(&[
        "sample-streams/vtest.mp4",
        "--fps",
        "1",
        "--max-frames",
        "3",
        "--camera",
        &camera.id,
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(results.len(), 3, "{stderr}");
    let pts: Vec<f64> = results
        .iter()
        .map(|r| r["pts_seconds"].as_f64().unwrap())
        .collect();
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "{pts:?}");
    let numbers: Vec<u64> = results
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    let mut in_a_zone = 0;
    for d in results
        .iter()
        .flat_map(|r| r["detections"].as_array().unwrap())
    {
        let b: Vec<f64> = serde_json::from_value(d["bbox"].clone()).unwrap();
        let foot = [(b[0] + b[2]) / 2.0, b[3]];
        let expected: Vec<&str> = camera
            .zones
            .iter()
            .filter(|z| inside(&z.polygon, foot))
            .map(|z| z.id.as_str())
            .collect();
        let said: Vec<&str> = d
            .get("zones")
            .and_then(Value::as_array)
            .map(|z| z.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(said, expected, "{d}");
        in_a_zone += usize::from(!said.is_empty());
    }
    assert!(in_a_zone > 0, "some person of vtest stands in a zone");
}

#[test]
fn detect_names_the_file_it_cannot_read() {
    let dir = TempDir::new("detect-bad");
    let not_video = dir.path("notes.mp4");
    std::fs::write(&not_video, "not a video").unwrap();
    for (input, says) in [
        (dir.path("missing.png"), "missing.png"),
        (dir.path("missing.mp4"), "no such file"),
        (not_video.clone(), "no frame could be decoded"),
    ] {
        let (ok, results, stderr) = detect(&[input.to_str().unwrap()]);
        assert!(!ok && results.is_empty(), "{input:?}: {stderr}");
        assert!(stderr.contains(says), "{input:?}: {stderr}");
    }
    let (ok, _, stderr) = detect(&["sample-streams/vtest.mp4", "--camera", "nope"]);
    assert!(!ok && stderr.contains("no camera `nope`"), "{stderr}");
}
