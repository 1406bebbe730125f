//! The inference pool against its limit: the bare model (`Session::run` alone, same threads)
//! versus the pool at full load in the same run, and the pool's latency from frame capture to
//! detections at 50 % and 200 % of its measured capacity (overload must drop frames, not queue).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;

use gridwatch::infer::card::ModelCard;
use gridwatch::infer::pool::{self, Mailboxes, PutOutcome};
use gridwatch::infer::{self, Thresholds};
use gridwatch::ingest::Frame;
use gridwatch::ingest::settings::Pace;

#[derive(Debug, thiserror::Error)]
pub enum ModelBenchError {
    #[error(transparent)]
    Infer(#[from] gridwatch::infer::InferError),
    #[error(transparent)]
    Card(#[from] gridwatch::infer::card::CardError),
    #[error("model bench: {0}")]
    Frames(String),
    #[error("model bench: {0}")]
    Options(String),
}

#[derive(Debug, Clone)]
pub struct ModelBenchOptions {
    pub card: PathBuf,
    pub clip: PathBuf,
    pub workers: usize,
    pub intra_op_threads: usize,
    pub seconds: f64,
    pub cameras: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub load: f64,
    pub offered_fps: f64,
    pub analysed_fps: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub dropped_superseded: u64,
    pub dropped_other: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelBenchReport {
    pub model: String,
    pub workers: usize,
    pub intra_op_threads: usize,
    pub seconds: f64,
    /// Medians of interleaved rounds.
    pub bare_fps: f64,
    pub pool_fps: f64,
    /// Pool throughput / bare model throughput.
    pub efficiency: f64,
    pub loads: Vec<LoadResult>,
}

/// Up to `max` frames of `clip`, scaled to the model's size in GStreamer, packed RGB.
pub fn load_frames(
    clip: &Path,
    width: usize,
    height: usize,
    max: usize,
) -> Result<Vec<Vec<u8>>, ModelBenchError> {
    gst::init().map_err(|e| ModelBenchError::Frames(e.to_string()))?;
    let location = clip.display().to_string().replace('"', "\\\"");
    let p = gst::parse::launch(&format!(
        "filesrc location=\"{location}\" ! decodebin ! videoscale ! video/x-raw,width={width},height={height} ! videoconvert ! video/x-raw,format=RGB ! appsink name=s sync=false max-buffers=4"
    ))
    .map_err(|e| ModelBenchError::Frames(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| ModelBenchError::Frames("not a pipeline".into()))?;
    let sink = p
        .by_name("s")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| ModelBenchError::Frames("no appsink".into()))?;
    p.set_state(gst::State::Playing)
        .map_err(|e| ModelBenchError::Frames(e.to_string()))?;
    let mut frames = Vec::new();
    while frames.len() < max {
        let Ok(sample) = sink.pull_sample() else {
            break;
        };
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            continue;
        };
        let info = gstreamer_video::VideoInfo::from_caps(caps)
            .map_err(|e| ModelBenchError::Frames(e.to_string()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| ModelBenchError::Frames(e.to_string()))?;
        let stride = info.stride()[0] as usize;
        let mut packed = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            packed.extend_from_slice(&map[y * stride..y * stride + width * 3]);
        }
        frames.push(packed);
    }
    let _ = p.set_state(gst::State::Null);
    if frames.is_empty() {
        return Err(ModelBenchError::Frames(format!(
            "no frames decoded from {}",
            clip.display()
        )));
    }
    Ok(frames)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

const ROUNDS: usize = 3;

/// The bare model's rate and what one pass costs in CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BareModel {
    pub fps: f64,
    /// Process CPU while the sessions ran, per pass.
    pub cpu_seconds_per_frame: f64,
}

/// `workers` threads, each running its own session on a prepared input and nothing else.
pub(crate) fn bare_model(
    env: &'static ort::environment::Environment,
    card: &Arc<ModelCard>,
    workers: usize,
    intra_op_threads: usize,
    thresholds: Thresholds,
    frame: &[u8],
    duration: Duration,
) -> Result<BareModel, ModelBenchError> {
    let (w, h) = card.input_size();
    let runs = Arc::new(AtomicU64::new(0));
    let mut detectors =
        pool::build_detectors(env, card.clone(), workers, intra_op_threads, thresholds)?;
    let mut scratch = Vec::new();
    for d in &mut detectors {
        d.detect(frame, w as u32, h as u32, w * 3, &mut scratch)?;
    }
    let cpu0 = super::process_cpu_seconds();
    let start = Instant::now();
    let threads: Vec<_> = detectors
        .into_iter()
        .map(|mut d| {
            let runs = runs.clone();
            std::thread::spawn(move || {
                while start.elapsed() < duration {
                    if d.run_model_only().is_ok() {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let (wall, runs) = (start.elapsed().as_secs_f64(), runs.load(Ordering::Relaxed));
    Ok(BareModel {
        fps: runs as f64 / wall,
        cpu_seconds_per_frame: (super::process_cpu_seconds() - cpu0) / runs.max(1) as f64,
    })
}

pub fn run(o: &ModelBenchOptions) -> Result<ModelBenchReport, ModelBenchError> {
    let env = infer::environment(&infer::runtime_library(None))?;
    let card = Arc::new(ModelCard::load(&o.card)?);
    let (w, h) = card.input_size();
    let frames = Arc::new(load_frames(&o.clip, w, h, 64)?);
    let thresholds = Thresholds {
        score: gridwatch::infer::settings::DEFAULT_SCORE_THRESHOLD,
        nms_iou: gridwatch::infer::settings::DEFAULT_NMS_IOU,
    };
    let duration = Duration::try_from_secs_f64(o.seconds.max(1.0))
        .map_err(|e| ModelBenchError::Options(format!("seconds = {}: {e}", o.seconds)))?;
    let workers = o.workers.max(1);

    // Bare model and full-load pool alternate, three rounds each, so that whatever else the
    // machine is doing weighs on both alike; medians are reported.
    let mut bare = Vec::new();
    let mut full = Vec::new();
    for _ in 0..ROUNDS {
        bare.push(
            bare_model(
                env,
                &card,
                workers,
                o.intra_op_threads,
                thresholds,
                &frames[0],
                duration,
            )?
            .fps,
        );
        full.push(
            drive_pool(
                env,
                &card,
                o,
                &frames,
                thresholds,
                duration,
                Pace::Fast,
                None,
            )?
            .analysed_fps,
        );
    }
    let (bare_fps, pool_fps) = (super::median(&mut bare), super::median(&mut full));

    let mut loads = Vec::new();
    for load in [0.5, 2.0] {
        let mut r = drive_pool(
            env,
            &card,
            o,
            &frames,
            thresholds,
            duration,
            Pace::Realtime,
            Some(load * pool_fps),
        )?;
        r.load = load;
        loads.push(r);
    }
    Ok(ModelBenchReport {
        model: card.id.clone(),
        workers,
        intra_op_threads: o.intra_op_threads,
        seconds: duration.as_secs_f64(),
        bare_fps,
        pool_fps,
        efficiency: pool_fps / bare_fps,
        loads,
    })
}

/// Runs the real pool with `o.cameras` feeders; `offered_fps` = None feeds as fast as accepted.
#[allow(clippy::too_many_arguments)]
fn drive_pool(
    env: &'static ort::environment::Environment,
    card: &Arc<ModelCard>,
    o: &ModelBenchOptions,
    frames: &Arc<Vec<Vec<u8>>>,
    thresholds: Thresholds,
    duration: Duration,
    pace: Pace,
    offered_fps: Option<f64>,
) -> Result<LoadResult, ModelBenchError> {
    let (w, h) = card.input_size();
    let cameras = o.cameras.max(1);
    let ids: Vec<Arc<str>> = (0..cameras)
        .map(|i| Arc::from(format!("bench-{i}")))
        .collect();
    let mailboxes = Mailboxes::new(
        ids.clone(),
        pace,
        Duration::from_millis(gridwatch::infer::settings::DEFAULT_MAX_FRAME_AGE_MS),
    );
    let detectors = pool::build_detectors(
        env,
        card.clone(),
        o.workers.max(1),
        o.intra_op_threads,
        thresholds,
    )?;
    let (tx, rx) = crossbeam_channel::bounded(64);
    let workers = pool::spawn_workers(mailboxes.clone(), detectors, tx);
    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let superseded = Arc::new(AtomicU64::new(0));
    let feeders: Vec<_> = (0..cameras)
        .map(|cam| {
            let (mailboxes, frames, stop, offered, superseded, id) = (
                mailboxes.clone(),
                frames.clone(),
                stop.clone(),
                offered.clone(),
                superseded.clone(),
                ids[cam].clone(),
            );
            // A rate that gives no representable interval feeds as fast as accepted.
            let interval = offered_fps
                .and_then(|f| Duration::try_from_secs_f64(cameras as f64 / f.max(0.001)).ok());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                let mut next = Instant::now() + Duration::from_millis(cam as u64 * 7);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(iv) = interval {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += iv;
                    }
                    let rgb = frames[(seq as usize + cam) % frames.len()].clone();
                    let Some(frame) =
                        Frame::from_rgb(cam, id.clone(), seq, seq as f64, w as u32, h as u32, rgb)
                    else {
                        break;
                    };
                    seq += 1;
                    offered.fetch_add(1, Ordering::Relaxed);
                    match mailboxes.put(frame) {
                        PutOutcome::ReplacedOlder => {
                            superseded.fetch_add(1, Ordering::Relaxed);
                        }
                        PutOutcome::Stopped => break,
                        PutOutcome::Queued => {}
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < duration {
        if let Ok(d) = rx.recv_timeout(Duration::from_millis(100)) {
            latencies.push(d.frame.received.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    mailboxes.stop();
    for f in feeders {
        let _ = f.join();
    }
    for t in workers {
        let _ = t.join();
    }
    let analysed = latencies.len() as u64;
    latencies.sort_by(f64::total_cmp);
    let offered = offered.load(Ordering::Relaxed);
    let superseded = superseded.load(Ordering::Relaxed);
    Ok(LoadResult {
        load: 1.0,
        offered_fps: offered as f64 / elapsed,
        analysed_fps: analysed as f64 / elapsed,
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        dropped_superseded: superseded,
        // Stale drops, and frames still in flight when the run ended.
        dropped_other: offered.saturating_sub(analysed + superseded),
    })
}
