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

/// Zones of one camera, each due at its own rate: a crowd zone (1/s) on the left half where a
/// square moves all the time, a parking zone (a frame every 5 s) on the right half that is still
/// but for a square moving there from 30 s to 45 s.
#[test]
fn each_zone_is_analysed_at_its_own_rate_and_a_still_zone_only_periodically() {
    use gridwatch::gate::ZoneSchedule;
    let settings = GateSettings {
        periodic_inference_seconds: 10.0,
        ..GateSettings::default()
    };
    let zones = [
        ZoneSchedule {
            bbox: [0.0, 0.0, 0.45, 1.0],
            fps: 1.0,
        },
        ZoneSchedule {
            bbox: [0.55, 0.0, 1.0, 1.0],
            fps: 0.2,
        },
    ];
    let mut gate = MotionGate::with_zones(settings, &zones).unwrap();
    let mut analysed: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut decisions = Vec::new();
    // 60 s at 1 frame/s (the camera's rate: the faster zone's), with a little jitter.
    for i in 0..60u64 {
        let t = i as f64 + if i % 2 == 0 { 0.0 } else { 0.02 };
        // A square jumps every frame to the next of 18 places in the left zone (so that the
        // background model never learns it); another moves about the right zone 30..45 s.
        // (None in the first frame, from which the background model starts.)
        let k = i as usize % 18;
        let mut f = frame(i, t, None);
        if i > 0 {
            f = with_square(f, 62 * (k % 3), 70 * (k / 3));
        }
        if (30..45).contains(&i) {
            f = with_square(f, 250 + 50 * (i as usize % 3), 70 * (i as usize % 5));
        }
        let d = gate.decide(&f).unwrap();
        decisions.push((t, d));
        for (z, list) in analysed.iter_mut().enumerate() {
            if gate.zone_last_analysed(z) == Some(t) {
                list.push(t);
            }
        }
    }
    let settled = |v: &[f64], from: f64, to: f64| -> Vec<f64> {
        v.iter()
            .copied()
            .filter(|t| *t >= from && *t < to)
            .collect()
    };
    // The moving crowd zone: every frame.
    let crowd = settled(&analysed[0], 5.0, 60.0);
    assert_eq!(
        crowd.len(),
        55,
        "crowd zone every second: {:?}",
        analysed[0]
    );
    // The parking zone while still (10..30 s): only its periodic pass, every 10 s.
    let still = settled(&analysed[1], 10.0, 30.0);
    assert!(
        !still.is_empty() && still.windows(2).all(|w| (w[1] - w[0] - 10.0).abs() < 0.1),
        "still parking zone: periodic passes only: {:?}",
        analysed[1]
    );
    // While something moves in it (30..45 s): at its own rate, a frame every 5 s, never faster.
    let moving = settled(&analysed[1], 31.0, 46.0);
    assert!(
        moving.len() >= 3 && moving.windows(2).all(|w| (w[1] - w[0] - 5.0).abs() < 0.1),
        "moving parking zone: every 5 s: {:?}",
        analysed[1]
    );
    // Every frame passed (the crowd zone moves); none was "not due".
    assert!(
        decisions
            .iter()
            .filter(|(t, _)| *t >= 5.0)
            .all(|(_, d)| matches!(d, Decision::Motion(_))),
        "{decisions:?}"
    );
}

/// A camera whose only zone is slow: frames decoded between its due times are not analysed
/// ("not due"), and motion outside the zone does not make a pass.
#[test]
fn frames_between_a_zones_due_times_are_not_analysed() {
    use gridwatch::gate::ZoneSchedule;
    let zones = [ZoneSchedule {
        bbox: [0.6, 0.0, 1.0, 1.0],
        fps: 0.2,
    }];
    let mut gate = MotionGate::with_zones(GateSettings::default(), &zones).unwrap();
    let mut passed = Vec::new();
    let mut not_due = 0;
    let mut skipped = 0;
    for i in 0..40u64 {
        let t = i as f64;
        // Motion only on the left (outside the zone), all the time.
        let k = i as usize % 18;
        match gate
            .decide(&with_square(frame(i, t, None), 62 * (k % 3), 70 * (k / 3)))
            .unwrap()
        {
            Decision::NotDue => not_due += 1,
            Decision::Skip(_) => skipped += 1,
            d => passed.push((t, d)),
        }
    }
    let times: Vec<f64> = passed.iter().map(|(t, _)| *t).collect();
    // Per 10 s once settled: the periodic pass, 4 frames before the zone is due again, then 5
    // due but still.
    assert!(
        not_due >= 12 && skipped >= 12,
        "between due times {not_due}, due but still {skipped}, of 40: {passed:?}"
    );
    // Once the background is learnt, only periodic passes: the motion is outside the zone.
    assert!(
        passed
            .iter()
            .filter(|(t, _)| *t >= 10.0)
            .all(|(_, d)| matches!(d, Decision::Periodic(_))),
        "{passed:?}"
    );
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= 5.0 - 1e-9),
        "never faster than the zone's rate: {times:?}"
    );
}

/// `f` with a bright 60-pixel square at (`x0`, `y0`).
fn with_square(f: Frame, x0: usize, y0: usize) -> Frame {
    let mut rgb = f.rgb().to_vec();
    for y in y0..y0 + 60 {
        for x in x0..x0 + 60 {
            let i = (y * W as usize + x) * 3;
            rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
        }
    }
    Frame::from_rgb(0, Arc::from("cam"), f.seq, f.stream_seconds, W, H, rgb).unwrap()
}
