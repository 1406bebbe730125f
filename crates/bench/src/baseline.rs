//! The peer a user would write instead (`benches/baseline/peer.py`: OpenCV VideoCapture +
//! onnxruntime, same model and pre/post-processing), run on the same streams, and the comparison
//! of its detections with gridwatch's on the frames both analysed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::report::{self, Agreement, Baseline, Percentiles, PipelineResult};
use gridwatch::infer::pool::FrameRecord;
use gridwatch::track::iou;

/// Two detections are the same object when they have the same class and overlap this much.
pub const AGREEMENT_IOU: f32 = 0.5;
/// Frames of the two programs are the same frame when their media times differ by less than
/// this (well under one frame period of any sample clip).
pub const SAME_FRAME_SECONDS: f64 = 0.005;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("the Python baseline could not start ({python}): {source}; run scripts/setup")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("the Python baseline failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("the Python baseline's report {path}: {message}")]
    Report { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
struct PeerReport {
    opencv: String,
    onnxruntime: String,
    threads: usize,
    frames_decoded: u64,
    frames_analysed: u64,
    wall_seconds: f64,
    cpu_seconds_loop: f64,
    max_rss_kib: f64,
    stage_seconds_total: BTreeMap<String, f64>,
    frames: Vec<PeerFrame>,
}

#[derive(Debug, Deserialize)]
struct PeerFrame {
    camera: usize,
    pts: f64,
    latency_seconds: f64,
    detections: Vec<PeerDetection>,
}

#[derive(Debug, Deserialize)]
struct PeerDetection {
    class_id: u16,
    score: f32,
    bbox: [f32; 4],
}

/// One detection, for the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Det {
    pub class_id: u16,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Greedy matching of one frame's detections: same class, IoU ≥ `AGREEMENT_IOU`, best pairs
/// first. Returns (matched pairs' |Δscore| and IoU).
pub fn match_frame(a: &[Det], b: &[Det]) -> Vec<(f32, f32)> {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            if x.class_id == y.class_id {
                let o = iou(&x.bbox, &y.bbox);
                if o >= AGREEMENT_IOU {
                    pairs.push((o, i, j));
                }
            }
        }
    }
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0));
    let (mut used_a, mut used_b) = (vec![false; a.len()], vec![false; b.len()]);
    let mut out = Vec::new();
    for (o, i, j) in pairs {
        if !used_a[i] && !used_b[j] {
            used_a[i] = true;
            used_b[j] = true;
            out.push(((a[i].score - b[j].score).abs(), o));
        }
    }
    out
}

/// One analysed frame's detections: (camera, media seconds, detections).
pub type FrameDets = (usize, f64, Vec<Det>);

/// Compares per frame: `ours` and `theirs` keyed by (camera, media seconds).
pub fn agreement(ours: &[FrameDets], theirs: &[FrameDets]) -> Agreement {
    let mut by_camera: HashMap<usize, Vec<&FrameDets>> = HashMap::new();
    for t in theirs {
        by_camera.entry(t.0).or_default().push(t);
    }
    let mut a = Agreement::default();
    let (mut delta_sum, mut iou_sum) = (0.0f64, 0.0f64);
    for (camera, t, dets) in ours {
        let Some(other) = by_camera.get(camera).and_then(|v| {
            v.iter()
                .find(|x| (x.1 - t).abs() < SAME_FRAME_SECONDS)
                .copied()
        }) else {
            continue;
        };
        a.frames_compared += 1;
        a.gridwatch_detections += dets.len();
        a.baseline_detections += other.2.len();
        for (d, o) in match_frame(dets, &other.2) {
            a.matched += 1;
            delta_sum += f64::from(d);
            iou_sum += f64::from(o);
            a.max_abs_score_delta = a.max_abs_score_delta.max(f64::from(d));
        }
    }
    let most = a.gridwatch_detections.max(a.baseline_detections);
    a.matched_fraction = if most == 0 {
        1.0
    } else {
        a.matched as f64 / most as f64
    };
    if a.matched > 0 {
        a.mean_abs_score_delta = delta_sum / a.matched as f64;
        a.mean_matched_iou = iou_sum / a.matched as f64;
    }
    a
}

/// Where the peer lives in the repository, and the interpreter of the project's venv.
pub fn default_paths(repo: &Path) -> (PathBuf, PathBuf) {
    (
        repo.join(".venv/bin/python"),
        repo.join("benches/baseline/peer.py"),
    )
}

/// onnxruntime intra-op threads of the peer: one, as a fair peer runs (a second thread mostly
/// spins: it costs CPU the comparison would charge to the peer's decoding).
pub const PEER_INTRA_OP_THREADS: usize = 1;

/// Runs the peer on `clips` (clip, analysis rate; by default the cameras of `ours`, same clips,
/// same rates) with [`PEER_INTRA_OP_THREADS`] and compares. `max_seconds`: media time per clip
/// (for looped, time-limited replays).
pub fn run(
    python: &Path,
    script: &Path,
    (ours, clips): (&PipelineResult, Option<&[(String, f64)]>),
    records: &[FrameRecord],
    work_dir: &Path,
    max_seconds: Option<f64>,
) -> Result<Baseline, BaselineError> {
    let out = work_dir.join("baseline.json");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script);
    let same: Vec<(String, f64)> = ours
        .streams
        .iter()
        .map(|s| (s.clip.clone(), s.analysis_fps))
        .collect();
    for (clip, fps) in clips.unwrap_or(&same) {
        cmd.arg("--clip").arg(format!("{clip}:{fps}"));
    }
    cmd.arg("--threads").arg(PEER_INTRA_OP_THREADS.to_string());
    if let Some(m) = max_seconds {
        cmd.arg("--max-seconds").arg(m.to_string());
    }
    cmd.arg("--out").arg(&out);
    let command = format!("{cmd:?}");
    let output = cmd.output().map_err(|source| BaselineError::Spawn {
        python: python.display().to_string(),
        source,
    })?;
    if !output.status.success() {
        return Err(BaselineError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let err = |message: String| BaselineError::Report {
        path: out.clone(),
        message,
    };
    let peer: PeerReport =
        serde_json::from_str(&std::fs::read_to_string(&out).map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;

    let latencies: Vec<f64> = peer.frames.iter().map(|f| f.latency_seconds).collect();
    let latency = Percentiles::of_seconds(&latencies);
    let analysed_fps = if peer.wall_seconds > 0.0 {
        peer.frames_analysed as f64 / peer.wall_seconds
    } else {
        0.0
    };
    let theirs: Vec<FrameDets> = peer
        .frames
        .iter()
        .map(|f| {
            (
                f.camera,
                f.pts,
                f.detections
                    .iter()
                    .map(|d| Det {
                        class_id: d.class_id,
                        score: d.score,
                        bbox: d.bbox,
                    })
                    .collect(),
            )
        })
        .collect();
    // gridwatch's stream time continues across loops; the peer reads each clip once.
    let ours_dets: Vec<FrameDets> = records
        .iter()
        .map(|r| {
            (
                r.camera,
                r.stream_seconds,
                r.objects
                    .iter()
                    .map(|d| Det {
                        class_id: d.class_id,
                        score: d.score,
                        bbox: d.bbox,
                    })
                    .collect(),
            )
        })
        .collect();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(Baseline {
        command,
        opencv: peer.opencv,
        onnxruntime: peer.onnxruntime,
        threads: peer.threads,
        frames_decoded: peer.frames_decoded,
        frames_analysed: peer.frames_analysed,
        wall_seconds: peer.wall_seconds,
        cpu_seconds: peer.cpu_seconds_loop,
        peak_rss_mib: peer.max_rss_kib / 1024.0,
        analysed_fps,
        analysed_per_cpu_second: ratio(peer.frames_analysed as f64, peer.cpu_seconds_loop),
        throughput_ratio: ratio(ours.analysed_fps, analysed_fps),
        latency_p50_ratio: ratio(ours.latency.p50_ms, latency.p50_ms),
        latency_p99_ratio: ratio(ours.latency.p99_ms, latency.p99_ms),
        latency_histogram: report::histogram(&latencies),
        latency,
        stage_seconds_total: peer.stage_seconds_total,
        agreement: agreement(&ours_dets, &theirs),
    })
}
