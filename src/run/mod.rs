//! The `gridwatch run` job: loads the models, starts the I/O side ([`io`]: servers, delivery,
//! signals), then the frame path as supervised stages ([`pipeline`]), and reads as that
//! sequence. Whatever ends the run (sources ended, a stop, a failed stage), every stage ends in
//! order and the outbox drains under the deadline.

mod cameras;
mod io;
mod pipeline;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cases::CaseError;
use crate::cases::outbox::{Outbox, OutboxCounts, OutboxError};
use crate::config::Config;
use crate::dispatch::DispatchError;
use crate::infer::card::ModelCard;
use crate::infer::{self, InferError, Thresholds, pool};
use crate::ingest::status::CameraRegistry;
use crate::ingest::{self, CameraPlan, IngestError};
use gridwatch_dispatch_ref::ReceiverError;
use io::Io;
use pipeline::{Model, Pipeline};

/// After the sources end, how long delivery may keep retrying before the job exits (what is
/// still pending stays in the outbox for the next run).
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: f64 = 30.0;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Card(#[from] crate::infer::card::CardError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Cases(#[from] CaseError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("metrics endpoint: cannot listen on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gate(#[from] crate::gate::GateError),
    #[error(transparent)]
    Review(#[from] crate::review::ReviewError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("a pipeline thread panicked: {0}")]
    Panic(&'static str),
}

/// Knobs of one run that are not part of the key area's configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub drain_timeout: Duration,
    /// Camera states; pass a clone in to watch them from outside the run.
    pub cameras: CameraRegistry,
    /// What `/readyz` reports; pass a clone in to watch it from outside the run.
    pub readiness: crate::status::Readiness,
    /// Benchmarks: every analysed frame's timings and detections, sent once the scenario stage
    /// is done with it.
    pub frame_observer: Option<crossbeam_channel::Sender<pool::FrameRecord>>,
    /// The file the configuration came from: SIGHUP re-reads it (none: reload is refused).
    pub config_path: Option<std::path::PathBuf>,
    /// Reload requests; SIGHUP makes one.
    pub reload: ReloadHandle,
    /// Cluster mode: this node's name (`--node-id`).
    pub node_id: Option<String>,
    /// The console's "train" button (the binary wires in `learn::ConsoleTrainer`).
    pub trainer: Option<Arc<dyn crate::review::ZoneTrainer>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            // A constant in range: the conversion cannot fail.
            drain_timeout: Duration::try_from_secs_f64(DEFAULT_DRAIN_TIMEOUT_SECONDS)
                .unwrap_or(Duration::from_secs(30)),
            cameras: CameraRegistry::default(),
            readiness: crate::status::Readiness::default(),
            frame_observer: None,
            config_path: None,
            reload: ReloadHandle::default(),
            node_id: None,
            trainer: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub cases_stored: u64,
    pub outbox: OutboxCounts,
    /// Where the embedded receiver listened, if one ran.
    pub receiver_url: Option<String>,
}

/// How long a reload waits for the scenario thread to take the new rules.
const RELOAD_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload request (SIGHUP, or a caller), taken by the run's supervisor.
#[derive(Debug, Clone, Default)]
pub struct ReloadHandle(Arc<AtomicBool>);

impl ReloadHandle {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// A reload was asked for and not yet taken.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// A stop request, shared by signal handlers and callers.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs the whole pipeline for `config` until every finite source has ended, a stop is
/// requested or a stage fails; then every stage ends in order and the outbox drains.
pub fn run(config: Config, options: RunOptions, stop: StopHandle) -> Result<RunSummary, RunError> {
    let config = Arc::new(config);
    ingest::init()?;
    let ownership = cluster_ownership(&config, &options)?;
    // Inference first: a missing runtime or a wrong model should fail before any camera starts.
    let model = load_models(&config)?;
    let plans = camera_plans(&config, &options, model.frame_size)?;
    options.readiness.model_loaded();
    if let Some(o) = &ownership {
        options.readiness.set_cluster(o.clone());
    }
    let outbox = io::open_outbox(&config, &options)?;
    let rechecks = rechecks(&config, &outbox)?;
    let io = Io::start(&config, &options, &outbox, &ownership, &stop, &rechecks)?;

    let live = (config.live.enabled || config.live.full_resolution_evidence)
        .then(|| io.console.live.clone());
    let mut pipeline = Pipeline::new(
        &config,
        &options,
        &model,
        ownership,
        stop.clone(),
        rechecks,
        live,
    );
    if let Err(e) = pipeline.start(&config, &options, model, plans, &io) {
        tracing::error!(error = %e, "the pipeline could not start; stopping what did");
        stop.stop();
        let _ = pipeline.shutdown(&io);
        let _ = io.drain(true, options.drain_timeout);
        return Err(e);
    }
    io.print_welcome(&config);
    let reporter = Reporter::start(&config, &outbox);
    pipeline.supervise(&config, &options, &io);
    drop(reporter);
    // Whatever ended the run, every stage ends in order and the outbox drains.
    let stages = pipeline.shutdown(&io);
    let receiver_url = io.receiver_url.clone();
    let drained = io.drain(stop.is_stopped(), options.drain_timeout);
    let cases_stored = stages?;
    drained?;
    let outbox = Outbox::open(&outbox)?.counts()?;
    tracing::info!(
        cases_stored,
        delivered = outbox.delivered,
        pending = outbox.pending,
        dead_letters = outbox.dead,
        awaiting_review = outbox.awaiting_review,
        "run finished"
    );
    Ok(RunSummary {
        cases_stored,
        outbox,
        receiver_url,
    })
}

/// The camera re-checks, with the rounds a previous run left open (they survive a restart).
fn rechecks(
    config: &Config,
    outbox: &std::path::Path,
) -> Result<crate::recheck::Rechecks, RunError> {
    let v = &config.cases.verification;
    let rechecks = crate::recheck::Rechecks::new(crate::recheck::Policy {
        checks: v.checks,
        window: Duration::try_from_secs_f64(v.window_seconds).unwrap_or_default(),
        clear_checks: v.clear_checks,
    });
    if v.enabled {
        for r in Outbox::open(outbox)?.open_verifications()? {
            rechecks.add(r);
        }
    }
    Ok(rechecks)
}

/// Cluster mode: this node's view of group ownership (none on a single node).
fn cluster_ownership(
    config: &Config,
    options: &RunOptions,
) -> Result<Option<crate::cluster::Ownership>, RunError> {
    let Some(settings) = &config.cluster else {
        return Ok(None);
    };
    let node = crate::cluster::node_id(options.node_id.as_deref(), settings)?;
    tracing::info!(node = %node, groups = config.area.groups.len(), "cluster mode: camera groups are divided among the nodes through etcd");
    Ok(Some(crate::cluster::Ownership::new(
        node,
        config.area.group_ids(),
    )))
}

/// onnxruntime, the model cards, and one set of detectors (a session per model) per
/// inference worker. Cameras are decoded at the largest input of the models (per axis), so no
/// model ever gets an upscaled frame.
fn load_models(config: &Config) -> Result<Model, RunError> {
    let env = runtime_environment(config)?;
    let cards = model_cards(config)?;
    let workers = match config.inference.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let sets = pool::build_model_sets(
        env,
        &cards,
        workers,
        config.inference.intra_op_threads,
        config.inference.cross_model_iou,
    )?;
    let frame_size = cards.iter().fold((0, 0), |(w, h), (card, _)| {
        let (cw, ch) = card.input_size();
        (w.max(cw), h.max(ch))
    });
    let kinds = cards
        .iter()
        .map(|(card, _)| {
            let mut k = card.class_kinds.clone();
            k.sort_unstable();
            k.dedup();
            k
        })
        .collect();
    Ok(Model {
        ids: config.model_ids(),
        cards: cards.iter().map(|(c, _)| c.clone()).collect(),
        kinds,
        frame_size,
        sets,
    })
}

/// Every configured model's card with its thresholds, in the configuration's order.
fn model_cards(config: &Config) -> Result<Vec<(Arc<ModelCard>, Thresholds)>, RunError> {
    config
        .models
        .iter()
        .map(|m| {
            let card = Arc::new(ModelCard::load(&config.resolve(m.chosen_card()))?);
            let thresholds = Thresholds {
                score: m.score_threshold,
                nms_iou: m.nms_iou,
            };
            Ok((card, thresholds))
        })
        .collect()
}

fn runtime_environment(
    config: &Config,
) -> Result<&'static ort::environment::Environment, RunError> {
    let library = infer::runtime_library(
        config
            .inference
            .onnxruntime_library
            .as_deref()
            .map(|p| config.resolve(p))
            .as_deref(),
    );
    Ok(infer::environment_with(
        &library,
        config.inference.execution_provider,
    )?)
}

/// Every camera's plan (its pipeline template rendered once, so a bad one fails now), and
/// its entry in the camera registry.
fn camera_plans(
    config: &Config,
    options: &RunOptions,
    (width, height): (usize, usize),
) -> Result<Vec<CameraPlan>, RunError> {
    let plans = (0..config.area.cameras.len())
        .map(|i| CameraPlan::new(&config.area, &config.ingest, i, width, height))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..plans.len() {
        options.cameras.add(ingest::initial_status(&config.area, i));
    }
    Ok(plans)
}

/// The checks of `gridwatch check` that need the runtime: onnxruntime loads, and each model's
/// input and output names match its card.
pub fn check_runtime(config: &Config) -> Result<(), RunError> {
    detectors(config, 1).map(drop)
}

/// One detector of each configured model with its thresholds, outside the pool (`gridwatch
/// detect`, `check`), in the configuration's order.
pub fn detectors(
    config: &Config,
    intra_op_threads: usize,
) -> Result<Vec<infer::Detector>, RunError> {
    let env = runtime_environment(config)?;
    model_cards(config)?
        .into_iter()
        .map(|(card, t)| Ok(infer::Detector::new(env, card, intra_op_threads, t)?))
        .collect()
}

/// The `[reports]` writer: a thread that looks every [`REPORT_CHECK_INTERVAL`] for a report due
/// and not yet in the folder (`stats::schedule`). Ends, and is joined, when dropped. Reports
/// follow the configuration the run started with.
struct Reporter {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the reporter looks for a due report.
pub const REPORT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

impl Reporter {
    fn start(config: &Arc<Config>, outbox: &std::path::Path) -> Option<Reporter> {
        let dir = config.resolve(config.reports.dir.as_ref()?);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (config, outbox, flag) = (config.clone(), outbox.to_path_buf(), done.clone());
        let thread = std::thread::Builder::new()
            .name("reports".into())
            .spawn(move || report_loop(&config, &dir, &outbox, &flag))
            .map_err(|e| tracing::error!(error = %e, "reports: cannot start the writer; no scheduled reports"))
            .ok()?;
        Some(Reporter {
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report_loop(
    config: &Config,
    dir: &std::path::Path,
    outbox: &std::path::Path,
    done: &std::sync::atomic::AtomicBool,
) {
    let mut next = std::time::Instant::now();
    // The first look happens even when the run ends at once: due reports are written at start.
    loop {
        if std::time::Instant::now() >= next {
            next += REPORT_CHECK_INTERVAL;
            let now = time::OffsetDateTime::now_utc();
            let ctx = crate::stats::Context::new(&config.area, &config.cases.deadlines, now);
            match crate::stats::schedule::write_due(&config.reports, dir, outbox, &ctx, now) {
                Ok(written) => {
                    for path in written {
                        crate::telemetry::report_written();
                        tracing::info!(path = %path.display(), "reports: written");
                    }
                }
                Err(e) => {
                    crate::telemetry::report_failed();
                    tracing::warn!(error = %e, "reports: a scheduled report could not be written; retried in a minute");
                }
            }
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
