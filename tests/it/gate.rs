//! The motion gate on real OpenCV MOG2: a still scene reaches the model only at the periodic
//! interval; movement passes at once.

use std::sync::Arc;

use gridwatch::gate::GateSettings;
use gridwatch::gate::{Decision, MotionGate};
use gridwatch::ingest::Frame;

const W: u32 = 416;
const H: u32 = 416;

/// A textured still background with an optional bright square at `square_x`.
fn frame(seq: u64, t: f64, square_x: Option<usize>) -> Frame {
    let mut rgb: Vec<u8> = (0..(W * H) as usize)
        .flat_map(|i| {
            let v = ((i % W as usize) / 8 * 13 + (i / W as usize) / 8 * 7) as u8;
            [v, v / 2, 255 - v]
        })
        .collect();
    if let Some(x0) = square_x {
        for y in 150..230 {
            for x in x0..x0 + 80 {
                let i = (y * W as usize + x) * 3;
                rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
    }
    Frame::from_rgb(0, Arc::from("cam"), seq, t, W, H, rgb).unwrap()
}

#[test]
fn still_scenes_pass_only_periodically_and_motion_passes_at_once() {
    let settings = GateSettings {
        periodic_inference_seconds: 10.0,
        ..GateSettings::default()
    };
    let mut gate = MotionGate::new(settings).unwrap();
    // 40 s of a still scene at 2 frames/s (the background model learns it on the way).
    let mut passed = Vec::new();
    for i in 0..80u64 {
        let t = i as f64 * 0.5;
        match gate.decide(&frame(i, t, None)).unwrap() {
            Decision::Skip(_) => {}
            d => passed.push((t, d)),
        }
    }
    let times: Vec<f64> = passed.iter().map(|(t, _)| *t).collect();
    // The first frames pass while the background model has nothing learnt (motion everywhere);
    // after that only the periodic pass, every 10 s.
    let settled: Vec<f64> = times.iter().copied().filter(|t| *t >= 5.0).collect();
    assert!(!settled.is_empty(), "periodic passes happen: {times:?}");
    for pair in settled.windows(2) {
        assert!(
            (pair[1] - pair[0] - 10.0).abs() < 0.01,
            "one pass per 10 s once settled: {times:?}"
        );
    }
    assert!(
        passed
            .iter()
            .filter(|(t, _)| *t >= 5.0)
            .all(|(_, d)| matches!(d, Decision::Periodic(_))),
        "{passed:?}"
    );
    let skipped = 80 - passed.len();
    assert!(
        skipped >= 65,
        "most still frames are skipped: {skipped} of 80"
    );

    // Something moves: it passes on the next frame, whatever the periodic timer says.
    let d1 = gate.decide(&frame(80, 40.5, Some(100))).unwrap();
    let d2 = gate.decide(&frame(81, 41.0, Some(200))).unwrap();
    assert!(
        matches!(d1, Decision::Motion(_)) && matches!(d2, Decision::Motion(_)),
        "{d1:?} {d2:?}"
    );
}
