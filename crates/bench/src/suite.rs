//! `gridwatch-bench run`: the pipeline on replayed streams, side by side in the same run with
//! its limits (decode only, bare model), the Python peer, and the scaling sweep; writes
//! `report.json` and `report.html`.

use std::path::PathBuf;
use std::time::Instant;

use super::report::{
    BenchReport, KeyArea, Limits, Machine, Percentiles, REPORT_SCHEMA, Scaling, ScalingStep,
};
use super::{baseline, decode, replay};
use gridwatch::infer::card::ModelCard;
use gridwatch::ingest::settings::Pace;

/// Scaling: analysed frames per second and camera, and the latency bound a step must meet.
pub const SCALING_ANALYSIS_FPS: f64 = 1.0;
pub const SCALING_P99_BOUND_MS: f64 = 1000.0;
pub const DEFAULT_SCALING_STEP_SECONDS: f64 = 30.0;
/// The start of a scaling step (or a key-area run) left out of "sustained": every camera's first
/// frame arrives at once and every session's first run allocates; a quarter of the step at most.
pub const WARMUP_SECONDS: f64 = 15.0;
/// How long each bare-model measurement runs.
pub const MODEL_LIMIT_SECONDS: f64 = 5.0;

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(transparent)]
    Baseline(#[from] baseline::BaselineError),
    #[error(transparent)]
    Decode(#[from] decode::DecodeBenchError),
    #[error(transparent)]
    Model(#[from] super::model::ModelBenchError),
    #[error(transparent)]
    Card(#[from] gridwatch::infer::card::CardError),
    #[error("no model card given")]
    NoCard,
    #[error("the Python peer runs one model: --baseline takes one --card")]
    PeerWithSeveralModels,
    #[error(transparent)]
    Infer(#[from] gridwatch::infer::InferError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The main run (its `work_dir` is replaced by a temporary folder).
    pub replay: replay::ReplayOptions,
    pub limits: bool,
    pub baseline: bool,
    /// Camera counts of the scaling sweep; empty: no sweep.
    pub scaling: Vec<usize>,
    pub scaling_step_seconds: f64,
    pub out_dir: PathBuf,
    /// The command line, recorded in the report.
    pub command: String,
    pub python: PathBuf,
    pub peer_script: PathBuf,
}

fn io(what: &std::path::Path) -> impl FnOnce(std::io::Error) -> SuiteError + '_ {
    move |source| SuiteError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Decode-only: every camera's own pipeline with nothing after its appsink, all at once.
fn decode_limit(
    streams: &[(PathBuf, f64)],
    options: replay::DecodeOptions,
) -> Result<(f64, f64, u64), decode::DecodeBenchError> {
    // The run's own decoding (`--decoder-threads`, `--decode-gop-tails`).
    let mode = match (options.skip_gop_tails, options.decoder_threads) {
        (true, _) => decode::DecodeMode::GopTails,
        (false, 0) => decode::DecodeMode::FrameThreads,
        (false, _) => decode::DecodeMode::Full,
    };
    let cpu0 = super::process_cpu_seconds();
    let wall0 = Instant::now();
    let threads: Vec<_> = streams
        .iter()
        .cloned()
        .map(|(clip, fps)| std::thread::spawn(move || decode::run_once(&clip, fps, mode)))
        .collect();
    let mut frames = 0;
    for t in threads {
        let run = t
            .join()
            .map_err(|_| decode::DecodeBenchError::Gst("decode thread panicked".into()))??;
        frames += run.frames_out;
    }
    let wall = wall0.elapsed().as_secs_f64();
    Ok((
        frames as f64 / wall,
        super::process_cpu_seconds() - cpu0,
        frames,
    ))
}

/// The pipeline's limits on the same streams and threads: decoding alone, and the bare model,
/// measured on both sides of the decode-only run with the faster kept. A bare model measured
/// once reads low whenever the machine slows for those seconds, and then flatters the pipeline
/// (runs above what decoding + the model allow were seen that way).
fn limits(
    card: &ModelCard,
    gridwatch: &super::report::PipelineResult,
    decode: replay::DecodeOptions,
) -> Result<Limits, SuiteError> {
    let streams: Vec<(PathBuf, f64)> = gridwatch
        .streams
        .iter()
        .map(|s| (PathBuf::from(&s.clip), s.analysis_fps))
        .collect();
    let env = gridwatch::infer::environment(&gridwatch::infer::runtime_library(None))?;
    let card = std::sync::Arc::new(card.clone());
    let (w, h) = card.input_size();
    let frame = super::model::load_frames(&streams[0].0, w, h, 1)?;
    #[allow(clippy::disallowed_methods)] // a constant, in range
    let model_limit = std::time::Duration::from_secs_f64(MODEL_LIMIT_SECONDS);
    let bare = || {
        super::model::bare_model(
            env,
            &card,
            gridwatch.workers.max(1),
            gridwatch.intra_op_threads.max(1),
            gridwatch::infer::Thresholds {
                score: gridwatch::infer::settings::DEFAULT_SCORE_THRESHOLD,
                nms_iou: gridwatch::infer::settings::DEFAULT_NMS_IOU,
            },
            &frame[0],
            model_limit,
        )
    };
    let before = bare()?;
    let decoded = decode_limit(&streams, decode)?;
    let after = bare()?;
    let faster = if after.fps > before.fps {
        after
    } else {
        before
    };
    Ok(Limits::new(
        decoded,
        faster,
        (before.fps, after.fps),
        gridwatch,
    ))
}

pub fn run(o: &SuiteOptions) -> Result<BenchReport, SuiteError> {
    std::fs::create_dir_all(&o.out_dir).map_err(io(&o.out_dir))?;
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let machine = Machine::probe();
    let work = std::env::temp_dir().join(format!(
        "gridwatch-bench-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = run_in(o, &work, started_at, machine);
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;
    let json = o.out_dir.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(io(&json))?;
    let html = o.out_dir.join("report.html");
    std::fs::write(&html, super::html::render(&report)).map_err(io(&html))?;
    Ok(report)
}

fn run_in(
    o: &SuiteOptions,
    work: &std::path::Path,
    started_at: String,
    machine: Machine,
) -> Result<BenchReport, SuiteError> {
    // The limits and the peer measure the first model alone.
    let first = o.replay.cards.first().ok_or(SuiteError::NoCard)?;
    let card = ModelCard::load(first)?;
    if o.baseline && o.replay.cards.len() > 1 {
        return Err(SuiteError::PeerWithSeveralModels);
    }
    let mut main = o.replay.clone();
    main.work_dir = work.join("main");

    // The pipeline first: its ingest also warms GStreamer's plugin registry for what follows.
    tracing::info!(
        cameras = main.cameras,
        "bench: gridwatch on the replayed streams"
    );
    let replay = replay::run(&main)?;
    let gridwatch = replay.result.clone();

    let limits = if o.limits {
        tracing::info!("bench: limits (bare model, decode only, bare model again)");
        Some(limits(&card, &gridwatch, o.replay.decode)?)
    } else {
        None
    };

    let baseline = if o.baseline {
        tracing::info!("bench: the Python peer on the same streams");
        let dir = work.join("baseline");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Some(baseline::run(
            &o.python,
            &o.peer_script,
            (&gridwatch, None),
            &replay.records,
            &dir,
            main.duration_seconds,
        )?)
    } else {
        None
    };

    let scaling = if o.scaling.is_empty() {
        None
    } else {
        let mut steps = Vec::new();
        for &n in &o.scaling {
            tracing::info!(
                cameras = n,
                seconds = o.scaling_step_seconds,
                "bench: scaling step"
            );
            // The key-area workload scales as itself (zones from the ground truth, each camera
            // at its zones' needs); otherwise every camera at one rate, without zones.
            let step = replay::ReplayOptions {
                cameras: n,
                pace: Pace::Realtime,
                analysis_fps: Some(SCALING_ANALYSIS_FPS),
                duration_seconds: Some(o.scaling_step_seconds),
                ground_truth: if o.replay.key_area {
                    o.replay.ground_truth.clone()
                } else {
                    None
                },
                work_dir: work.join(format!("scaling-{n}")),
                id_prefix: format!("s{n}-"),
                progress: false,
                warmup_seconds: WARMUP_SECONDS.min(o.scaling_step_seconds / 4.0),
                ..o.replay.clone()
            };
            let r = replay::run(&step)?.result;
            let stale = r.frames_dropped.get("stale").copied().unwrap_or(0);
            let superseded = r.frames_dropped.get("superseded").copied().unwrap_or(0);
            // From capture: a decoder behind real time delays a frame before its hand-over.
            let late = r.units_not_decoded.get("late").copied().unwrap_or(0);
            let (steady_stale, steady_p99, steady_late, held) =
                r.steady
                    .as_ref()
                    .map_or((stale, r.latency.p99_ms, late, 0.0), |s| {
                        (
                            s.stale_drops,
                            s.capture_latency.p99_ms,
                            s.late_units,
                            s.held_share,
                        )
                    });
            steps.push(ScalingStep {
                cameras: n,
                duration_seconds: r.wall_seconds,
                frames_analysed: r.frames_analysed,
                analysed_fps: r.analysed_fps,
                stale_drops: stale,
                superseded_drops: superseded,
                shed_keyframes: r.units_not_decoded.get("overload").copied().unwrap_or(0),
                late_units: late,
                // A shed keyframe, like a superseded frame, is one the camera's waiting frame
                // stood for; both are reported, neither breaks a sustained load.
                // A unit shed late is a frame the load kept from the analysis; a camera held
                // to a slower rate, frames of its own rate.
                sustained: steady_stale == 0
                    && steady_late == 0
                    && held == 0.0
                    && steady_p99 < SCALING_P99_BOUND_MS,
                steady: r.steady.clone(),
                latency: r.latency,
                cpu_seconds: r.cpu_seconds,
                cpu_share_of_machine: r.cpu_seconds / (r.wall_seconds * machine.cpus as f64),
                peak_rss_mib: r.peak_rss_mib,
            });
        }
        let mut sorted: Vec<&ScalingStep> = steps.iter().collect();
        sorted.sort_by_key(|s| s.cameras);
        let largest_sustained = sorted
            .iter()
            .take_while(|s| s.sustained)
            .last()
            .map_or(0, |s| s.cameras);
        Some(Scaling {
            // Key area: the mean of the cameras' rates (what each step offers per camera).
            analysis_fps: if o.replay.key_area {
                mean_rate(&gridwatch)
            } else {
                SCALING_ANALYSIS_FPS
            },
            p99_bound_ms: SCALING_P99_BOUND_MS,
            steps,
            largest_sustained,
        })
    };

    let key_area = if o.replay.key_area {
        Some(key_area(o, work, &replay)?)
    } else {
        None
    };

    Ok(BenchReport {
        schema: REPORT_SCHEMA.into(),
        started_at,
        command: o.command.clone(),
        machine,
        model: crate::replay::model_ids(&o.replay.cards).join("+"),
        gridwatch,
        limits,
        baseline,
        scaling,
        key_area,
    })
}

fn mean_rate(r: &super::report::PipelineResult) -> f64 {
    let n = r.streams.len().max(1) as f64;
    r.streams.iter().map(|s| s.analysis_fps).sum::<f64>() / n
}

/// The key-area comparison: gridwatch's run (`main`) against the loop a user would write on the
/// first unit's cameras (their cost per camera does not depend on the zones: every camera at
/// one rate, every frame decoded), and what that loop's frames find under the same rules.
fn key_area(
    o: &SuiteOptions,
    work: &std::path::Path,
    main: &replay::Replay,
) -> Result<KeyArea, SuiteError> {
    let g = &main.result;
    let first = g
        .streams
        .first()
        .map(|s| PathBuf::from(&s.clip))
        .unwrap_or_default();
    let media = o
        .replay
        .duration_seconds
        .or_else(|| replay::clip_seconds(&first))
        .unwrap_or(0.0)
        .max(1e-9);
    let per_camera_hour = |cpu: f64, cameras: usize| cpu / (cameras.max(1) as f64 * media) * 3600.0;
    let naive_fps = g.streams.iter().map(|s| s.analysis_fps).fold(0.0, f64::max);
    let unit = g.cameras.min(replay::KEY_AREA_CAMERAS_PER_UNIT);

    tracing::info!(
        cameras = unit,
        fps = naive_fps,
        "bench: the naive schedule's episodes"
    );
    let naive = replay::run(&replay::ReplayOptions {
        cameras: unit,
        pace: Pace::Fast,
        analysis_fps: Some(naive_fps),
        schedule: replay::Schedule::Naive,
        // Every episode of the clip is within reach: played once, whatever the main run did.
        duration_seconds: None,
        work_dir: work.join("naive"),
        id_prefix: "naive-".into(),
        ..o.replay.clone()
    })?;

    tracing::info!(
        cameras = unit,
        "bench: the Python peer (1 thread, every frame decoded)"
    );
    let dir = work.join("key-area-peer");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let clips: Vec<(String, f64)> = g.streams[..unit]
        .iter()
        .map(|s| (s.clip.clone(), naive_fps))
        .collect();
    let peer = baseline::run(
        &o.python,
        &o.peer_script,
        (g, Some(&clips)),
        &[],
        &dir,
        o.replay.duration_seconds,
    )?;

    // Decision latency in the steady state, as "sustained" is judged.
    let warmed = main.records.iter().map(|r| r.received).min().map(|start| {
        start + std::time::Duration::try_from_secs_f64(o.replay.warmup_seconds).unwrap_or_default()
    });
    let mut by_scenario: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in main
        .records
        .iter()
        .filter(|r| warmed.is_none_or(|w| r.received >= w))
    {
        for s in main.camera_scenarios.get(r.camera).into_iter().flatten() {
            by_scenario
                .entry(s.clone())
                .or_default()
                .push(r.ingest_lag_seconds + r.done_at.duration_since(r.received).as_secs_f64());
        }
    }
    let plaza = main
        .camera_scenarios
        .iter()
        .filter(|s| s.iter().any(|x| x == "crowd_gathering"))
        .count();
    let gridwatch_cost = per_camera_hour(g.cpu_seconds, g.cameras);
    let peer_cost = per_camera_hour(peer.cpu_seconds, unit);
    Ok(KeyArea {
        cameras: g.cameras,
        units: g
            .cameras
            .div_ceil(replay::KEY_AREA_CAMERAS_PER_UNIT)
            .min(replay::KEY_AREA_UNITS),
        plaza_cameras: plaza,
        street_cameras: g.cameras - plaza,
        media_seconds_per_camera: media,
        gridwatch_cpu_seconds_per_camera_hour: gridwatch_cost,
        naive_analysis_fps: naive_fps,
        peer_cameras: unit,
        peer_cpu_seconds_per_camera_hour: peer_cost,
        cpu_ratio: if peer_cost > 0.0 {
            gridwatch_cost / peer_cost
        } else {
            0.0
        },
        decision_latency_by_scenario: by_scenario
            .into_iter()
            .map(|(k, v)| (k, Percentiles::of_seconds(&v)))
            .collect(),
        naive_schedule_cameras: unit,
        naive_schedule_accuracy: naive.result.accuracy,
    })
}
