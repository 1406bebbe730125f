//! `gridwatch-bench`: measures the gridwatch pipeline on recorded streams (see BENCHMARKS.md).
//! A tool apart from the product: it drives the pipeline library from outside, as a user's
//! program would, and the `gridwatch` binary does not contain it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use gridwatch_bench::{replay, suite};

#[derive(Parser)]
#[command(
    name = "gridwatch-bench",
    version,
    about = "Measure the gridwatch pipeline on recorded streams: speed, latency, accuracy"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// The repository root: models, sample streams and the Python peer.
fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchPace {
    Fast,
    Realtime,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// The real pipeline on recorded streams as N cameras, side by side with its limits, the
    /// Python peer and a scaling sweep; writes report.json and report.html.
    Run(BenchRunArgs),
    /// The inference pool against the bare model, and its latency at 50 % and 200 % load.
    Model {
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/nanodet-g-416-coco.toml"))]
        card: PathBuf,
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sample-streams/vtest.mp4"))]
        clip: PathBuf,
        /// Worker threads (each with its own session); 0 = one per core.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        #[arg(long, default_value_t = 1)]
        intra_op_threads: usize,
        #[arg(long, default_value_t = 10.0, value_parser = gridwatch::config::seconds_in(MAX_BENCH_SECONDS))]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        cameras: usize,
    },
    /// What the patrol wall's live video costs a node: its CPU with no viewer, with V viewers
    /// per camera and with none again; one stalled viewer's cost; delivery latency.
    Live {
        #[arg(long, default_value_t = 9)]
        cameras: usize,
        #[arg(long, default_value_t = 8)]
        viewers: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 30.0, value_parser = gridwatch::config::seconds_in(MAX_BENCH_SECONDS))]
        seconds: f64,
        /// Seconds one viewer stays stalled (the kernel's socket buffers fill first).
        #[arg(long, default_value_t = 120.0, value_parser = gridwatch::config::seconds_in(MAX_BENCH_SECONDS))]
        stalled_seconds: f64,
        /// H.264 files served as the cameras (default: the sample clips vtest and bikes).
        #[arg(long, num_args = 1..)]
        streams: Vec<PathBuf>,
        /// The node's binary (default: `gridwatch` beside this one).
        #[arg(long)]
        gridwatch: Option<PathBuf>,
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/nanodet-g-416-coco.toml"))]
        card: PathBuf,
        /// Output folder (the node's configuration, outbox and log; report.json).
        #[arg(long)]
        out: PathBuf,
    },
    /// CPU per camera of the ingest pipeline in each decoding mode (every frame with frame
    /// threads, every frame on one thread, GOPs up to their last analysis slot, keyframes only).
    Decode {
        /// An H.264/H.265 file (scripts/make-bench-clips makes a 1080p one).
        #[arg(long)]
        clip: PathBuf,
        #[arg(long, default_value_t = 2.0, value_parser = gridwatch::area::profile::parse_analysis_fps)]
        analysis_fps: f64,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// A stored case history with known outcomes, to time the statistics on: N cases over the
    /// last D days in the key area of the embedded configuration (its units, camera groups,
    /// cameras and catalog), both shifts, every fate (reviewed or not, rejected, dispatched,
    /// handled on time or late, self-resolved, reopened); then one report over all of it.
    History {
        #[arg(long, default_value_t = 10_000)]
        cases: usize,
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// The outbox file to make (it must not exist).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Cases written through the outbox's functions, each a synced transaction (a few ms);
        /// the rest are copies of them made in SQL, times shifted back by whole days.
        #[arg(long, default_value_t = gridwatch_bench::history::DEFAULT_BASE_CASES)]
        base_cases: usize,
    },
}

/// A benchmark's durations: at most a day.
const MAX_BENCH_SECONDS: f64 = 86_400.0;

#[derive(clap::Args)]
struct BenchRunArgs {
    /// Cameras (camera i replays stream i modulo the number of streams); default: one per stream.
    #[arg(long)]
    cameras: Option<usize>,
    #[arg(long, value_enum, default_value_t = BenchPace::Fast)]
    pace: BenchPace,
    /// A folder (its .mp4 files) or files; default: sample-streams/.
    #[arg(long, num_args = 1..)]
    streams: Vec<PathBuf>,
    /// Analysed frames per second and camera (default: the ground truth's, else 2).
    #[arg(long, value_parser = gridwatch::area::profile::parse_analysis_fps)]
    analysis_fps: Option<f64>,
    /// Stop after this many seconds, looping the files (default: play each file once).
    #[arg(long, value_parser = gridwatch::config::seconds_in(MAX_BENCH_SECONDS))]
    duration_seconds: Option<f64>,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 1)]
    intra_op_threads: usize,
    /// A model card; repeat for several models on every camera (e.g. NanoDet and SSD).
    #[arg(long = "card", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/nanodet-g-416-coco.toml"))]
    cards: Vec<PathBuf>,
    /// By-eye ground truth; `none` to skip the accuracy section.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sample-streams/ground-truth.toml"))]
    ground_truth: PathBuf,
    /// Also run the Python peer (benches/baseline/peer.py) on the same streams.
    #[arg(long)]
    baseline: bool,
    /// The key-area workload: 9 units × 4 cameras (--cameras, default 36) replaying the 1080p
    /// clips of scripts/make-bench-clips (default --streams) at real-time pace, each camera at
    /// its zones' needs, against the loop a user would write (every camera at the highest
    /// scenario rate, every frame decoded, 1 onnxruntime thread) and what its frames find.
    #[arg(long)]
    key_area: bool,
    /// Threads per software decoder (`[ingest] decoder_threads`; 0: the decoder's own frame
    /// threads).
    #[arg(long, default_value_t = gridwatch::ingest::settings::DEFAULT_DECODER_THREADS,
          value_parser = clap::value_parser!(u32).range(0..=gridwatch::ingest::settings::MAX_DECODER_THREADS as i64))]
    decoder_threads: u32,
    /// Decode every frame of each GOP (`[ingest] skip_gop_tails = false`), to compare.
    #[arg(long)]
    decode_gop_tails: bool,
    /// Start camera i of n i/n of this many seconds late (`[ingest] start_spread_seconds`), so
    /// that the replays run out of phase as real cameras do; 0: all at once.
    #[arg(long, default_value_t = gridwatch::ingest::settings::DEFAULT_START_SPREAD_SECONDS,
          value_parser = gridwatch::config::seconds_in(gridwatch::ingest::settings::MAX_START_SPREAD_SECONDS))]
    start_spread_seconds: f64,
    /// Shed needed keyframes while a camera's frame still waits (`[ingest] shed_when_behind =
    /// true`, off by default: see README), to compare.
    #[arg(long)]
    shed: bool,
    /// Shed a needed keyframe's GOP when it reaches the decoder more than this many ms late
    /// (`[ingest] max_decode_lag_ms`; 0: never), to compare.
    #[arg(long, default_value_t = gridwatch::ingest::settings::DEFAULT_MAX_DECODE_LAG_MS,
          value_parser = clap::value_parser!(u64).range(0..=gridwatch::ingest::settings::MAX_DECODE_LAG_MS))]
    max_decode_lag_ms: u64,
    /// Niceness of the camera pipelines' streaming threads (`[ingest] pipeline_nice`; 0: as
    /// the process), to compare.
    #[arg(long, default_value_t = gridwatch::ingest::settings::DEFAULT_PIPELINE_NICE,
          value_parser = clap::value_parser!(i32).range(0..=gridwatch::ingest::settings::MAX_PIPELINE_NICE as i64))]
    pipeline_nice: i32,
    /// Never hold cameras to a slower rate under overload (`[inference] thin_under_overload =
    /// false`), to compare.
    #[arg(long)]
    no_thinning: bool,
    /// Skip the decode-only and bare-model limits.
    #[arg(long)]
    no_limits: bool,
    /// Scaling sweep: camera counts, e.g. 1,2,4,8,16,32 (1 analysed frame/s each, real time).
    #[arg(long, value_delimiter = ',')]
    scaling: Vec<usize>,
    /// Seconds per scaling step.
    #[arg(long, default_value_t = gridwatch_bench::suite::DEFAULT_SCALING_STEP_SECONDS, value_parser = gridwatch::config::seconds_in(MAX_BENCH_SECONDS))]
    scaling_step_seconds: f64,
    /// Python with opencv-python-headless and onnxruntime (scripts/setup makes .venv).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python"))]
    python: PathBuf,
    /// Output folder, e.g. benches/runs/2026-11-28-tag/.
    #[arg(long)]
    out: PathBuf,
}

fn bench_run(a: BenchRunArgs) -> anyhow::Result<ExitCode> {
    let mut streams = Vec::new();
    let given = match (a.streams.is_empty(), a.key_area) {
        (false, _) => a.streams,
        (true, false) => vec![repo().join("sample-streams")],
        (true, true) => {
            let clip = repo().join("target/bench-clips/vtest-1080p.mp4");
            anyhow::ensure!(
                clip.is_file(),
                "{} is missing: run scripts/make-bench-clips",
                clip.display()
            );
            vec![clip]
        }
    };
    for s in given {
        if s.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&s)
                .with_context(|| format!("reading {}", s.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
                .collect();
            files.sort();
            streams.extend(files);
        } else {
            streams.push(s);
        }
    }
    let streams: Vec<PathBuf> = streams
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    let repo = repo();
    let options = suite::SuiteOptions {
        replay: replay::ReplayOptions {
            cameras: a.cameras.unwrap_or(if a.key_area {
                gridwatch_bench::replay::KEY_AREA_UNITS
                    * gridwatch_bench::replay::KEY_AREA_CAMERAS_PER_UNIT
            } else {
                streams.len()
            }),
            streams,
            // The key area is measured as it runs: sources at their own pace.
            pace: match (a.pace, a.key_area) {
                (_, true) | (BenchPace::Realtime, _) => gridwatch::ingest::settings::Pace::Realtime,
                (BenchPace::Fast, false) => gridwatch::ingest::settings::Pace::Fast,
            },
            schedule: if a.key_area {
                gridwatch_bench::replay::Schedule::Zones
            } else {
                gridwatch_bench::replay::Schedule::Fixed
            },
            key_area: a.key_area,
            decode: replay::DecodeOptions {
                decoder_threads: a.decoder_threads,
                skip_gop_tails: !a.decode_gop_tails,
                start_spread_seconds: a.start_spread_seconds,
                shed_when_behind: a.shed,
                max_decode_lag_ms: a.max_decode_lag_ms,
                pipeline_nice: a.pipeline_nice,
                thin_under_overload: !a.no_thinning,
            },
            // The key area is judged in its steady state (see BENCHMARKS.md).
            warmup_seconds: if a.key_area {
                gridwatch_bench::suite::WARMUP_SECONDS
            } else {
                0.0
            },
            analysis_fps: a.analysis_fps,
            workers: a.workers.max(1),
            intra_op_threads: a.intra_op_threads.max(1),
            // Relative to where the command was given, not to the bench's work folder.
            cards: a
                .cards
                .into_iter()
                .map(|c| std::path::absolute(&c).unwrap_or(c))
                .collect(),
            duration_seconds: a.duration_seconds,
            ground_truth: (a.ground_truth.as_os_str() != "none")
                .then(|| std::path::absolute(&a.ground_truth).unwrap_or(a.ground_truth)),
            work_dir: std::env::temp_dir(),
            id_prefix: String::new(),
            progress: true,
        },
        limits: !a.no_limits,
        baseline: a.baseline,
        scaling: a.scaling,
        scaling_step_seconds: a.scaling_step_seconds,
        out_dir: a.out.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        python: a.python,
        peer_script: gridwatch_bench::baseline::default_paths(&repo).1,
    };
    let r = suite::run(&options)?;
    let g = &r.gridwatch;
    eprintln!(
        "gridwatch: {} cameras, {} frames analysed, {:.2}/s ({:.2} per CPU-s), latency p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms, CPU {:.1} s, peak RSS {:.0} MiB, dropped {:?}",
        g.cameras,
        g.frames_analysed,
        g.analysed_fps,
        g.analysed_per_cpu_second,
        g.latency.p50_ms,
        g.latency.p95_ms,
        g.latency.p99_ms,
        g.cpu_seconds,
        g.peak_rss_mib,
        g.frames_dropped
    );
    if let Some(l) = &r.limits {
        eprintln!(
            "limits: decode only {:.1} fps (gridwatch {:.0} %), bare model {:.2} fps (faster of {:.2?}; gridwatch {:.0} %), \
             decoding + bare model {:.2} fps ({:.1} + {:.1} ms CPU per frame; gridwatch {:.0} %); \
             with this decoding on the same cores at most {:.0} % of the bare model",
            l.decode_fps,
            l.decode_efficiency * 100.0,
            l.model_fps,
            l.model_fps_runs,
            l.model_efficiency * 100.0,
            l.decode_and_model_fps,
            l.decode_cpu_ms_per_frame,
            l.model_cpu_ms_per_frame,
            l.decode_and_model_efficiency * 100.0,
            l.decoding_ceiling * 100.0,
        );
    }
    if let Some(b) = &r.baseline {
        eprintln!(
            "python peer: {:.2} analysed/s, p50 {:.0} ms p99 {:.0} ms; gridwatch/peer throughput {:.2}, latency p50 {:.2}; detections matched {:.1} % on {} frames",
            b.analysed_fps,
            b.latency.p50_ms,
            b.latency.p99_ms,
            b.throughput_ratio,
            b.latency_p50_ratio,
            b.agreement.matched_fraction * 100.0,
            b.agreement.frames_compared
        );
    }
    if let Some(s) = &r.scaling {
        eprintln!("scaling: largest sustained {} cameras", s.largest_sustained);
    }
    for a in &g.accuracy {
        eprintln!(
            "accuracy {}: {} episodes, {} found, {} missed, {} false; precision {:.2} recall {:.2}",
            a.scenario, a.episodes, a.found, a.missed, a.false_cases, a.precision, a.recall
        );
    }
    if let Some(k) = &r.key_area {
        eprintln!(
            "key area: {} cameras ({} plaza, {} street); CPU-s per camera-hour: gridwatch {:.0}, naive loop {:.0} at {} fps ({} cameras, 1 thread): ratio {:.2}",
            k.cameras,
            k.plaza_cameras,
            k.street_cameras,
            k.gridwatch_cpu_seconds_per_camera_hour,
            k.peer_cpu_seconds_per_camera_hour,
            k.naive_analysis_fps,
            k.peer_cameras,
            k.cpu_ratio
        );
        for (s, p) in &k.decision_latency_by_scenario {
            eprintln!(
                "key area: {s} decision latency p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms",
                p.p50_ms, p.p95_ms, p.p99_ms
            );
        }
        for a in &k.naive_schedule_accuracy {
            eprintln!(
                "key area: the naive schedule ({} cameras) {}: {} of {} episodes, {} false",
                k.naive_schedule_cameras, a.scenario, a.found, a.episodes, a.false_cases
            );
        }
    }
    eprintln!(
        "report: {} and {}",
        a.out.join("report.json").display(),
        a.out.join("report.html").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gridwatch::telemetry::init_logging(false);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Model {
            card,
            clip,
            workers,
            intra_op_threads,
            seconds,
            cameras,
        } => {
            let workers = if workers == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                workers
            };
            let options = gridwatch_bench::model::ModelBenchOptions {
                card,
                clip,
                workers,
                intra_op_threads,
                seconds,
                cameras,
            };
            let report = gridwatch_bench::model::run(&options)?;
            eprintln!(
                "bare model {:.1} fps, pool {:.1} fps, efficiency {:.1} %",
                report.bare_fps,
                report.pool_fps,
                report.efficiency * 100.0
            );
            for l in &report.loads {
                eprintln!(
                    "load {:>4.0} %: offered {:.1} fps, analysed {:.1} fps, latency p50 {:.0} ms p99 {:.0} ms max {:.0} ms, dropped superseded {} other {}",
                    l.load * 100.0,
                    l.offered_fps,
                    l.analysed_fps,
                    l.latency_p50_ms,
                    l.latency_p99_ms,
                    l.latency_max_ms,
                    l.dropped_superseded,
                    l.dropped_other
                );
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Run(args) => bench_run(args),
        BenchCommand::Live {
            cameras,
            viewers,
            seconds,
            stalled_seconds,
            streams,
            gridwatch,
            card,
            out,
        } => {
            let streams = if streams.is_empty() {
                vec![
                    repo().join("sample-streams/vtest.mp4"),
                    repo().join("sample-streams/bikes.mp4"),
                ]
            } else {
                streams
            };
            let gridwatch = match gridwatch {
                Some(g) => g,
                None => std::env::current_exe()?.with_file_name("gridwatch"),
            };
            let options = gridwatch_bench::live::LiveOptions {
                cameras,
                viewers,
                seconds,
                stalled_seconds,
                streams,
                gridwatch,
                card,
                out: out.clone(),
            };
            let report = gridwatch_bench::live::run(&options)?;
            eprintln!("{}", gridwatch_bench::live::markdown(&report));
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(out.join("report.json"), &json)?;
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::History {
            cases,
            days,
            out,
            seed,
            base_cases,
        } => history(cases, days, &out, seed, base_cases),
        BenchCommand::Decode {
            clip,
            analysis_fps,
            repeats,
        } => {
            let report = gridwatch_bench::decode::run(&clip, analysis_fps, repeats)?;
            for r in &report.runs {
                eprintln!(
                    "{:<15} frames {:>5}  video {:>6.1} s  cpu {:>6.2} s  wall {:>6.2} s  cpu/video-s {:.3}",
                    r.mode,
                    r.frames_out,
                    r.video_seconds,
                    r.cpu_seconds,
                    r.wall_seconds,
                    r.cpu_per_video_second
                );
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `gridwatch-bench history`: the file, what it holds, and a report over all of it, timed.
fn history(
    cases: usize,
    days: u32,
    out: &std::path::Path,
    seed: u64,
    base_cases: usize,
) -> anyhow::Result<ExitCode> {
    use gridwatch::stats::{self, Context as StatsContext, Dimension, Lang, Query};
    use gridwatch_bench::history::{self as h, Review};
    anyhow::ensure!(
        cases > 0 && days > 0,
        "--cases and --days must be at least 1"
    );
    anyhow::ensure!(
        !out.exists(),
        "{} exists: a history is written into a new file",
        out.display()
    );
    let config = gridwatch::config::Config::embedded_default()?;
    let now = time::OffsetDateTime::now_utc();
    let now_ms = stats::unix_ms(now) / 1000 * 1000;
    let spec = h::HistorySpec::from_config(&config, cases, days, seed, now_ms);
    let bulk = h::generate_bulk(out, &spec, base_cases)?;
    let base = &bulk.base;
    let count = |f: &dyn Fn(&h::GeneratedCase) -> bool| base.iter().filter(|c| f(c)).count();
    eprintln!(
        "{}: {} cases over {} days: {} through the outbox in {:.1} s ({} days), {} copies in SQL in {:.1} s",
        out.display(),
        base.len() + bulk.copied,
        days,
        base.len(),
        bulk.base_seconds,
        bulk.plan.base_days,
        bulk.copied,
        bulk.copy_seconds
    );
    eprintln!(
        "base: {} held, {} confirmed, {} rejected, {} awaiting, {} unattended, {} dispatched, {} dead letters, {} handled, {} self-resolved, {} reopened, {} by staff",
        count(&|c| c.held),
        count(&|c| c.review == Review::Confirmed),
        count(&|c| c.review == Review::Rejected),
        count(&|c| c.review == Review::Awaiting),
        count(&|c| c.review == Review::Unattended),
        count(&|c| c.delivered_ms.is_some()),
        count(&|c| c.dead_lettered),
        count(&|c| c.handled_ms.is_some()),
        count(&|c| c.self_resolved_ms.is_some()),
        count(&|c| c.reopened),
        count(&|c| c.reported_by_staff),
    );
    // One report over everything, as `gridwatch report` makes it.
    let ctx = StatsContext::new(&config.area, &config.cases.deadlines, now);
    let query = Query {
        from_ms: 0,
        to_ms: now_ms + 1,
        group_by: Dimension::ALL.to_vec(),
        lang: Lang::Zh,
    };
    let started = std::time::Instant::now();
    let conn = stats::open(out)?;
    let (report, lines) = stats::report_with_cases(&conn, &query, &ctx)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "report over all of it (every breakdown and {} case lines) in {seconds:.2} s",
        lines.len()
    );
    let summary = serde_json::json!({
        "file": out.display().to_string(),
        "bytes": std::fs::metadata(out)?.len(),
        "cases": base.len() + bulk.copied,
        "days": days,
        "seed": seed,
        "base_cases": base.len(),
        "base_days": bulk.plan.base_days,
        "copied": bulk.copied,
        "base_seconds": bulk.base_seconds,
        "copy_seconds": bulk.copy_seconds,
        "report_seconds": seconds,
        "figures": report.total,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
