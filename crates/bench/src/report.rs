//! The report of `gridwatch-bench run` (written as `report.json`, read back by the HTML report
//! and the tests), and the statistics it is made of: percentiles and a latency histogram.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::accuracy::ScenarioAccuracy;

/// Upper bounds (ms) of the latency histogram's buckets; the last bucket takes the rest.
pub const HISTOGRAM_BOUNDS_MS: [f64; 16] = [
    5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 2000.0,
    5000.0, 10000.0,
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From samples in seconds (nearest-rank percentiles of the sorted samples).
    pub fn of_seconds(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut s: Vec<f64> = samples.iter().map(|v| v * 1000.0).collect();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1];
        Self {
            count: s.len(),
            mean_ms: s.iter().sum::<f64>() / s.len() as f64,
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: s[s.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound in ms; `None` for the last, open bucket.
    pub upper_ms: Option<f64>,
    pub count: u64,
}

pub fn histogram(samples_seconds: &[f64]) -> Vec<Bucket> {
    let mut counts = vec![0u64; HISTOGRAM_BOUNDS_MS.len() + 1];
    for s in samples_seconds {
        let ms = s * 1000.0;
        let i = HISTOGRAM_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(HISTOGRAM_BOUNDS_MS.len());
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bucket {
            upper_ms: HISTOGRAM_BOUNDS_MS.get(i).copied(),
            count,
        })
        .collect()
}

/// One camera of a replay: which clip it plays, at what rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraStream {
    pub id: String,
    pub clip: String,
    pub analysis_fps: f64,
}

/// What one run of the real pipeline over the replayed streams did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineResult {
    pub cameras: usize,
    /// `fast` (as fast as inference takes frames) or `realtime` (sources at their own pace).
    pub pace: String,
    pub workers: usize,
    pub intra_op_threads: usize,
    /// `[ingest] decoder_threads` of the run (0: the decoder's own frame threads).
    #[serde(default)]
    pub decoder_threads: u32,
    /// `[ingest] skip_gop_tails` of the run.
    #[serde(default)]
    pub skip_gop_tails: bool,
    /// `[ingest] start_spread_seconds` of the run (0: every camera started at once).
    #[serde(default)]
    pub start_spread_seconds: f64,
    /// `[ingest] shed_when_behind` of the run.
    #[serde(default)]
    pub shed_when_behind: bool,
    /// `[ingest] max_decode_lag_ms` of the run (0: never shed late).
    #[serde(default)]
    pub max_decode_lag_ms: u64,
    /// `[ingest] pipeline_nice` of the run.
    #[serde(default)]
    pub pipeline_nice: i32,
    /// `[inference] thin_under_overload` of the run (reports from before it: false, as they ran).
    #[serde(default)]
    pub thin_under_overload: bool,
    pub streams: Vec<CameraStream>,
    /// The whole `run` call: model loading, pipelines, frames, delivery drain.
    pub wall_seconds: f64,
    /// First frame handed over by a pipeline → last decision: the span throughput is taken over.
    pub active_seconds: f64,
    /// Frames the pipelines delivered at the analysis rate (before the motion gate).
    pub frames_decoded: u64,
    /// Frames the scenario stage evaluated (observed one by one).
    pub frames_analysed: u64,
    /// `gridwatch_frames_analysed_total` over this run's cameras (must equal `frames_analysed`).
    pub frames_analysed_metric: u64,
    /// Encoded units kept from the decoders, by reason (`keyframes_only`, `gop_tail`).
    #[serde(default)]
    pub units_not_decoded: BTreeMap<String, u64>,
    /// Kept from inference by the motion gate (nothing moved).
    pub frames_skipped_no_motion: u64,
    /// Dropped by reason (`superseded`, `stale`, `inference_error`), from the metrics.
    pub frames_dropped: BTreeMap<String, u64>,
    /// Analysed frames per second of `active_seconds`.
    pub analysed_fps: f64,
    /// Analysed frames per CPU-second of the whole process over the run.
    pub analysed_per_cpu_second: f64,
    /// Decoded (analysis-rate) frames per second of `active_seconds`.
    pub decoded_fps: f64,
    /// User + system CPU of the process during the run (all threads, GStreamer included).
    pub cpu_seconds: f64,
    /// Peak resident memory during the run (VmHWM, reset before it where the kernel allows).
    pub peak_rss_mib: f64,
    /// Pipeline hand-over (appsink) → scenario stage done with the frame.
    pub latency: Percentiles,
    pub latency_histogram: Vec<Bucket>,
    /// `queue` (mailbox wait, motion gate included), `preprocess`, `inference`, `postprocess`,
    /// `rules` (hand-over to the scenario thread → rules evaluated, channel wait included).
    pub stages: BTreeMap<String, Percentiles>,
    pub cases: usize,
    pub accuracy: Vec<ScenarioAccuracy>,
    /// One line per case and per missed episode.
    pub accuracy_details: Vec<String>,
    /// After the warm-up (`ReplayOptions::warmup_seconds`), when one was set.
    #[serde(default)]
    pub steady: Option<Steady>,
}

/// A run after its warm-up: the start-up burst (every camera's first frame at once) left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Steady {
    pub warmup_seconds: f64,
    pub latency: Percentiles,
    pub stale_drops: u64,
    pub superseded_drops: u64,
    /// Needed keyframes shed while the camera's frame still waited (`reason="overload"`).
    #[serde(default)]
    pub shed_units: u64,
    /// Encoded units shed because their keyframe reached the decoder late (`reason="late"`).
    #[serde(default)]
    pub late_units: u64,
    /// Capture → decision: how late the appsink handed each frame over behind its time on the
    /// pipeline clock, plus `latency` (hand-over → decision).
    #[serde(default)]
    pub capture_latency: Percentiles,
    /// Frames analysed per second after the warm-up (handed over after it, until the last
    /// decision): the throughput once every camera runs.
    #[serde(default)]
    pub analysed_fps: f64,
    /// The mean share of the cameras held to a slower rate than their own under overload
    /// (`[inference] thin_under_overload`), sampled every 250 ms after the warm-up: a load with
    /// any camera held is not sustained.
    #[serde(default)]
    pub held_share: f64,
}

/// Decode-only and bare-model throughput of the same streams on the same threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Every camera's own file pipeline (decode → rate → scale → RGB → appsink, nothing after),
    /// all cameras at once, as fast as possible: analysis-rate frames per second.
    pub decode_fps: f64,
    pub decode_cpu_seconds: f64,
    pub decode_frames: u64,
    /// `workers` sessions running the model on a prepared input and nothing else.
    pub model_fps: f64,
    /// gridwatch decoded fps / decode limit.
    pub decode_efficiency: f64,
    /// gridwatch analysed fps / model limit.
    pub model_efficiency: f64,
    /// CPU per analysis-rate frame of the decode-only pipelines (decoding the units the
    /// analysis needs, scaling, conversion).
    #[serde(default)]
    pub decode_cpu_ms_per_frame: f64,
    /// CPU per pass of the bare model.
    #[serde(default)]
    pub model_cpu_ms_per_frame: f64,
    /// The analysed rate the machine's cores would reach doing nothing but the decoding the
    /// analysis needs and the bare model's passes: cores / (decode + model CPU per frame).
    #[serde(default)]
    pub decode_and_model_fps: f64,
    /// gridwatch analysed fps / `decode_and_model_fps`: what the rest of the pipeline costs.
    #[serde(default)]
    pub decode_and_model_efficiency: f64,
    /// The most a pipeline that must decode these streams on the same cores can reach of the
    /// bare model: model CPU / (decode + model CPU) per frame, with nothing else costing.
    #[serde(default)]
    pub decoding_ceiling: f64,
    /// The bare model measured before and after the decode-only run (frames/s); `model_fps`
    /// is the faster.
    #[serde(default)]
    pub model_fps_runs: Vec<f64>,
}

impl Limits {
    /// From the decode-only run (analysis-rate fps, CPU seconds, frames), the bare model, and
    /// the pipeline's own run.
    pub(crate) fn new(
        (decode_fps, decode_cpu_seconds, decode_frames): (f64, f64, u64),
        bare: crate::model::BareModel,
        (bare_before, bare_after): (f64, f64),
        gridwatch: &PipelineResult,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let decode_cpu = decode_cpu_seconds / decode_frames.max(1) as f64;
        let decode_and_model_fps = ratio(cores, decode_cpu + bare.cpu_seconds_per_frame);
        Self {
            decode_fps,
            decode_cpu_seconds,
            decode_frames,
            model_fps: bare.fps,
            decode_efficiency: ratio(gridwatch.decoded_fps, decode_fps),
            model_efficiency: ratio(gridwatch.analysed_fps, bare.fps),
            decode_cpu_ms_per_frame: decode_cpu * 1000.0,
            model_cpu_ms_per_frame: bare.cpu_seconds_per_frame * 1000.0,
            decode_and_model_fps,
            decode_and_model_efficiency: ratio(gridwatch.analysed_fps, decode_and_model_fps),
            decoding_ceiling: ratio(
                bare.cpu_seconds_per_frame,
                decode_cpu + bare.cpu_seconds_per_frame,
            ),
            model_fps_runs: vec![bare_before, bare_after],
        }
    }
}

/// `a / b`, or 0 (unmeasured) when `b` is not a positive rate: a limit run that measured
/// nothing must not put an infinity (null in JSON) into the report.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && b.is_finite() { a / b } else { 0.0 }
}

/// Detections of gridwatch and the Python peer compared on the frames both analysed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Agreement {
    /// Frames analysed by both (same camera, same media time).
    pub frames_compared: usize,
    pub gridwatch_detections: usize,
    pub baseline_detections: usize,
    /// Pairs matched greedily (same class, IoU ≥ 0.5, highest IoU first).
    pub matched: usize,
    /// matched / max(gridwatch, baseline) detections.
    pub matched_fraction: f64,
    pub mean_abs_score_delta: f64,
    pub max_abs_score_delta: f64,
    pub mean_matched_iou: f64,
}

/// The Python peer (`benches/baseline/peer.py`) on the same streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub command: String,
    pub opencv: String,
    pub onnxruntime: String,
    pub threads: usize,
    pub frames_decoded: u64,
    pub frames_analysed: u64,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub analysed_fps: f64,
    pub analysed_per_cpu_second: f64,
    /// Decoded frame available → detections.
    pub latency: Percentiles,
    pub latency_histogram: Vec<Bucket>,
    pub stage_seconds_total: BTreeMap<String, f64>,
    /// gridwatch analysed fps / baseline analysed fps.
    pub throughput_ratio: f64,
    /// gridwatch p50 / baseline p50 latency (and p99).
    pub latency_p50_ratio: f64,
    pub latency_p99_ratio: f64,
    pub agreement: Agreement,
}

/// One step of the scaling sweep (N cameras, 1 analysed frame/s each, real-time pace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingStep {
    pub cameras: usize,
    pub duration_seconds: f64,
    pub frames_analysed: u64,
    pub analysed_fps: f64,
    pub stale_drops: u64,
    pub superseded_drops: u64,
    /// Needed keyframes shed while the camera's frame still waited (`reason="overload"`).
    #[serde(default)]
    pub shed_keyframes: u64,
    /// Encoded units shed because their keyframe reached the decoder late (`reason="late"`).
    #[serde(default)]
    pub late_units: u64,
    pub latency: Percentiles,
    pub cpu_seconds: f64,
    pub cpu_share_of_machine: f64,
    pub peak_rss_mib: f64,
    /// No stale drops, no unit shed late, and p99 capture → decision under the bound (after the
    /// warm-up, when one was set).
    pub sustained: bool,
    #[serde(default)]
    pub steady: Option<Steady>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scaling {
    pub analysis_fps: f64,
    pub p99_bound_ms: f64,
    pub steps: Vec<ScalingStep>,
    /// Largest camera count sustained (with every smaller count sustained too); 0 if none.
    pub largest_sustained: usize,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema: String,
    pub started_at: String,
    pub command: String,
    pub machine: Machine,
    pub model: String,
    pub gridwatch: PipelineResult,
    pub limits: Option<Limits>,
    pub baseline: Option<Baseline>,
    pub scaling: Option<Scaling>,
    /// `--key-area`: the key-area workload against the loop a user would write.
    #[serde(default)]
    pub key_area: Option<KeyArea>,
}

/// The key-area workload (`gridwatch-bench run --key-area`): gridwatch as shipped (each camera
/// at its zones' needs) against the loop a user would write (every camera at the highest rate
/// any scenario needs, every frame decoded, one onnxruntime thread).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyArea {
    pub cameras: usize,
    pub units: usize,
    /// Plaza cameras (crowd and parking zones) and street cameras (parking zones).
    pub plaza_cameras: usize,
    pub street_cameras: usize,
    /// Media seconds each camera played.
    pub media_seconds_per_camera: f64,
    /// Process CPU-seconds of gridwatch per camera and hour of video.
    pub gridwatch_cpu_seconds_per_camera_hour: f64,
    /// The naive loop's one rate (the highest `analysis_fps` of the workload's scenarios).
    pub naive_analysis_fps: f64,
    /// Cameras the Python peer played (its cost per camera does not depend on the zones).
    pub peer_cameras: usize,
    pub peer_cpu_seconds_per_camera_hour: f64,
    /// gridwatch / peer CPU-seconds per camera-hour.
    pub cpu_ratio: f64,
    /// Capture → decision (the frame's ingest lag + hand-over → decision; hand-over → decision
    /// in reports before 2026-12-03's f84d4c1), over the frames of the cameras with each
    /// scenario.
    pub decision_latency_by_scenario: BTreeMap<String, Percentiles>,
    /// What the naive loop's frames find: the same rules on every camera at the naive rate,
    /// every frame decoded, no motion gate (gridwatch run with that schedule on the first unit).
    pub naive_schedule_cameras: usize,
    pub naive_schedule_accuracy: Vec<ScenarioAccuracy>,
}

pub const REPORT_SCHEMA: &str = "gridwatch.bench.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub os: String,
    /// 1-minute load average when the run started (other work on the machine).
    pub load_average_at_start: f64,
    /// The CPU's vector and int8 dot-product flags (what onnxruntime's kernels pick from).
    #[serde(default)]
    pub cpu_flags: Vec<String>,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|s| s.trim_matches('"').to_owned())
            .unwrap_or_default();
        let load_average_at_start = read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        const FLAGS: [&str; 8] = [
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512_vnni",
            "avx_vnni",
            "amx_int8",
        ];
        let present: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags"))
            .and_then(|l| l.split(':').nth(1))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib,
            os,
            load_average_at_start,
            cpu_flags: FLAGS
                .iter()
                .filter(|f| present.contains(f))
                .map(|f| (*f).to_owned())
                .collect(),
        }
    }
}
