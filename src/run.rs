//! The `gridwatch run` job: wires the stages together with their threads and bounded queues,
//! runs until every finite source has ended or a stop is requested, then drains the outbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::cases::outbox::{Outbox, OutboxCounts, OutboxError};
use crate::cases::{self, CaseError};
use crate::config::Config;
use crate::dispatch::server::{CASES_PATH, Receiver, ReceiverError};
use crate::dispatch::{Delivery, DispatchError, Phase};
use crate::infer::card::ModelCard;
use crate::infer::{self, InferError, Thresholds, pool};
use crate::ingest::status::CameraRegistry;
use crate::ingest::{self, CameraPlan, IngestError};
use crate::scenarios::{self, ScenarioEngine};
use crate::telemetry;

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
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs_f64(DEFAULT_DRAIN_TIMEOUT_SECONDS),
            cameras: CameraRegistry::default(),
            readiness: crate::status::Readiness::default(),
            frame_observer: None,
            config_path: None,
            reload: ReloadHandle::default(),
            node_id: None,
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

/// How often the supervisor looks for a stop, a reload or cameras that ended.
const SUPERVISOR_TICK: Duration = Duration::from_millis(100);

/// How often held cases are checked against the review timeout.
const HELD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a clean shutdown waits for the cluster controller to revoke its lease.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reload waits for the scenario thread to take the new rules.
const RELOAD_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload request (SIGHUP, or a caller), taken by the run's supervisor.
#[derive(Debug, Clone, Default)]
pub struct ReloadHandle(Arc<AtomicBool>);

impl ReloadHandle {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// One camera's ingest thread and its own stop flag.
struct CameraThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The running camera threads, by camera index.
struct CameraThreads {
    running: Vec<CameraThread>,
    registry: CameraRegistry,
    mailboxes: Arc<pool::Mailboxes>,
    model_size: (usize, usize),
    /// Cluster mode: a camera runs only while this node owns its group.
    cluster: Option<crate::cluster::Ownership>,
    /// Cameras a reload removed (their slots stay, never restarted).
    retired: std::collections::HashSet<usize>,
}

impl CameraThreads {
    fn start(&mut self, plan: CameraPlan, sink: crate::gate::GatedSink) {
        let index = plan.index;
        let stop = Arc::new(AtomicBool::new(false));
        let thread =
            ingest::spawn_camera(plan, Box::new(sink), self.registry.clone(), stop.clone());
        while self.running.len() <= index {
            // Cluster mode starts cameras in any order: slots below stay empty.
            self.running.push(CameraThread {
                stop: Arc::new(AtomicBool::new(true)),
                thread: None,
            });
        }
        self.running[index] = CameraThread {
            stop,
            thread: Some(thread),
        };
    }

    /// Camera `index` has a thread (running, or ended by itself like a finished file).
    fn started(&self, index: usize) -> bool {
        self.running.get(index).is_some_and(|c| c.thread.is_some())
    }

    /// A fresh plan, gate and mailbox slot for camera `i`, then its thread.
    fn launch(&mut self, config: &Arc<Config>, i: usize) -> Result<(), RunError> {
        let (w, h) = self.model_size;
        let plan = CameraPlan::new(config, i, w, h)?;
        let mut sink =
            crate::gate::GatedSink::new(i, plan.id.clone(), &config.gate, self.mailboxes.clone())?;
        if let Some(o) = &self.cluster {
            sink = sink.fenced(o.clone(), &config.cameras[i].group);
        }
        self.mailboxes.reopen(i);
        self.start(plan, sink);
        Ok(())
    }

    /// Cluster mode: starts the cameras of groups this node now owns (their scenario state
    /// reset first, as a new owner knows nothing of the old one's tracks) and stops those of
    /// groups it no longer owns or whose lease is no longer certain; then tells the
    /// controller which groups are analysed here.
    fn follow_ownership(
        &mut self,
        config: &Arc<Config>,
        scenarios: &crossbeam_channel::Sender<scenarios::Reload>,
    ) -> Result<(), RunError> {
        let Some(ownership) = self.cluster.clone() else {
            return Ok(());
        };
        let mut to_stop = Vec::new();
        let mut to_start = Vec::new();
        for (i, cam) in config.cameras.iter().enumerate() {
            let want = !self.retired.contains(&i) && ownership.may_analyse(&cam.group);
            match (want, self.started(i)) {
                (true, false) => to_start.push(i),
                (false, true) => to_stop.push(i),
                _ => {}
            }
        }
        // Stop flags first so that the pipelines tear down side by side, then wait for each.
        for &i in &to_stop {
            self.running[i].stop.store(true, Ordering::SeqCst);
        }
        for &i in &to_stop {
            self.stop_one(i)?;
            self.registry
                .set_state(i, ingest::status::CameraState::Standby, None);
            tracing::info!(camera = %config.cameras[i].id, group = %config.cameras[i].group, "cluster: camera stopped");
        }
        // Marked analysed before ownership is checked again: with the controller's
        // "fence, then look at this mark on a later pass", one of the two always sees the
        // other, so a group is never handed over while its cameras are starting.
        for &i in &to_start {
            ownership.set_analysing(&config.cameras[i].group, true);
        }
        to_start.retain(|&i| ownership.may_analyse(&config.cameras[i].group));
        if !to_start.is_empty() {
            let (applied_tx, applied_rx) = crossbeam_channel::bounded(1);
            let sent = scenarios.send(scenarios::Reload {
                config: config.clone(),
                cameras: to_start.clone(),
                applied: applied_tx,
            });
            if sent.is_err() || applied_rx.recv_timeout(RELOAD_APPLY_TIMEOUT).is_err() {
                tracing::warn!("cluster: the scenario thread did not confirm the reset");
            }
        }
        for &i in &to_start {
            match self.launch(config, i) {
                Ok(()) => {
                    tracing::info!(camera = %config.cameras[i].id, group = %config.cameras[i].group, "cluster: camera started")
                }
                // One bad camera must not take the others down; retried on the next tick.
                Err(e) => {
                    tracing::error!(camera = %config.cameras[i].id, error = %e, "cluster: camera not started")
                }
            }
        }
        let running: std::collections::HashSet<&str> = config
            .cameras
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.started(i))
            .map(|(_, c)| c.group.as_str())
            .collect();
        for g in &config.groups {
            ownership.set_analysing(&g.id, running.contains(g.id.as_str()));
        }
        Ok(())
    }

    fn stop_all(&self) {
        for c in &self.running {
            c.stop.store(true, Ordering::SeqCst);
        }
    }

    fn all_finished(&self) -> bool {
        self.running
            .iter()
            .all(|c| c.thread.as_ref().is_none_or(|t| t.is_finished()))
    }

    /// Stops camera `index` and waits for its thread (its slot closes).
    fn stop_one(&mut self, index: usize) -> Result<(), RunError> {
        let Some(c) = self.running.get_mut(index) else {
            return Ok(());
        };
        c.stop.store(true, Ordering::SeqCst);
        if let Some(t) = c.thread.take() {
            t.join().map_err(|_| RunError::Panic("camera"))?;
        }
        Ok(())
    }

    fn join_all(&mut self) -> Result<(), RunError> {
        for c in &mut self.running {
            if let Some(t) = c.thread.take() {
                t.join().map_err(|_| RunError::Panic("camera"))?;
            }
        }
        Ok(())
    }

    /// Applies a reload: stops the retired and edited cameras, gives the scenario thread its
    /// new rules, then starts the edited and added cameras. The other cameras never stop.
    fn apply_reload(
        &mut self,
        config: &Arc<Config>,
        plan: &crate::reload::ReloadPlan,
        scenarios: &crossbeam_channel::Sender<scenarios::Reload>,
    ) -> Result<(), RunError> {
        tracing::info!(restart = ?plan.restart, added = ?plan.added, retired = ?plan.retired, rules = ?plan.rules_changed, "reload: applying");
        // Every slot may be closed for a moment (a one-camera run restarting its camera).
        self.mailboxes.hold();
        let result = self.apply_reload_held(config, plan, scenarios);
        self.mailboxes.unhold();
        result
    }

    fn apply_reload_held(
        &mut self,
        config: &Arc<Config>,
        plan: &crate::reload::ReloadPlan,
        scenarios: &crossbeam_channel::Sender<scenarios::Reload>,
    ) -> Result<(), RunError> {
        for &i in plan.retired.iter().chain(&plan.restart) {
            self.stop_one(i)?;
        }
        self.retired.extend(plan.retired.iter().copied());
        for &i in &plan.added {
            let slot = self
                .mailboxes
                .add_camera(Arc::from(config.cameras[i].id.as_str()));
            let registered = self.registry.add(ingest::initial_status(config, i));
            if slot != i || registered != i {
                // Indices are kept in step by construction; if not, starting it would mix up
                // cameras, so it is left out loudly.
                tracing::error!(camera = %config.cameras[i].id, slot, registered, index = i, "reload: camera index mismatch; camera not started");
                continue;
            }
        }
        let (applied_tx, applied_rx) = crossbeam_channel::bounded(1);
        let sent = scenarios.send(scenarios::Reload {
            config: config.clone(),
            cameras: plan.rules_changed.clone(),
            applied: applied_tx,
        });
        if sent.is_err() || applied_rx.recv_timeout(RELOAD_APPLY_TIMEOUT).is_err() {
            tracing::warn!("reload: the scenario thread did not confirm the new rules");
        }
        for &i in plan.restart.iter().chain(&plan.added) {
            let id = config.cameras[i].id.as_str();
            if self
                .cluster
                .as_ref()
                .is_some_and(|o| !o.may_analyse(&config.cameras[i].group))
            {
                // Another node's group: `follow_ownership` starts it if it comes here.
                continue;
            }
            match self.launch(config, i) {
                Ok(()) => tracing::info!(camera = %id, "reload: camera started"),
                // One bad camera must not take the others down: it stays stopped.
                Err(e) => tracing::error!(camera = %id, error = %e, "reload: camera not started"),
            }
        }
        Ok(())
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

/// Runs the whole pipeline for `config`.
pub fn run(config: Config, options: RunOptions, stop: StopHandle) -> Result<RunSummary, RunError> {
    let config = Arc::new(config);
    ingest::init()?;
    let ownership = match &config.cluster {
        Some(settings) => {
            let node = crate::cluster::node_id(options.node_id.as_deref(), settings)?;
            tracing::info!(node = %node, groups = config.groups.len(), "cluster mode: camera groups are divided among the nodes through etcd");
            Some(crate::cluster::Ownership::new(
                node,
                crate::cluster::group_ids(&config),
            ))
        }
        None => None,
    };

    // Inference first: a missing runtime or a wrong model should fail before any camera starts.
    let library = infer::runtime_library(
        config
            .inference
            .onnxruntime_library
            .as_deref()
            .map(|p| config.resolve(p))
            .as_deref(),
    );
    let env = infer::environment_with(&library, config.inference.execution_provider)?;
    let card = Arc::new(ModelCard::load(&config.resolve(&config.model.card))?);
    let workers = match config.inference.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let thresholds = Thresholds {
        score: config.model.score_threshold,
        nms_iou: config.model.nms_iou,
    };
    let detectors = pool::build_detectors(
        env,
        card.clone(),
        workers,
        config.inference.intra_op_threads,
        thresholds,
    )?;
    let (model_w, model_h) = card.input_size();
    let plans = config
        .cameras
        .iter()
        .enumerate()
        .map(|(i, _)| CameraPlan::new(&config, i, model_w, model_h))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..config.cameras.len() {
        options.cameras.add(ingest::initial_status(&config, i));
    }

    options.readiness.model_loaded();
    if let Some(o) = &ownership {
        options.readiness.set_cluster(o.clone());
    }
    let outbox_path = config.resolve(&config.cases.outbox);
    options.readiness.set_outbox(outbox_path.clone());
    let case_outbox = Outbox::open(&outbox_path)?;
    let mut held_outbox = Outbox::open(&outbox_path)?;
    if config.review.is_none() {
        // Cases held by an earlier run with the console: nobody can review them now.
        let released = held_outbox.release_held(i64::MAX)?;
        if !released.is_empty() {
            tracing::warn!(
                cases = released.len(),
                "no [review] section: held cases go out unreviewed"
            );
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gridwatch-io")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;

    // The embedded receiver and the metrics endpoint live until the run returns.
    let (server_stop_tx, server_stop_rx) = watch::channel(false);
    let server_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut receiver_url = None;
    let mut dispatch_url = config.dispatch.url.clone();
    if let Some(r) = &config.dispatch.embedded_receiver {
        let receiver = runtime.block_on(Receiver::bind(
            &r.listen,
            &config.resolve(&r.database),
            config.dispatch.bearer_token.clone(),
        ))?;
        let base = format!("http://{}", receiver.local_addr());
        if dispatch_url.is_none() {
            dispatch_url = Some(format!("{base}{CASES_PATH}"));
        }
        tracing::info!(url = %format!("{base}/"), "dispatch receiver running: open this URL to see the cases");
        receiver_url = Some(format!("{base}/"));
        let shutdown = server_stopped(server_stop_rx.clone());
        runtime.spawn(async move {
            if let Err(e) = receiver.serve(shutdown).await {
                tracing::error!(error = %e, "dispatch receiver stopped");
            }
        });
    }
    if let Some(addr) = &config.telemetry.metrics_listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| RunError::Metrics {
                addr: addr.clone(),
                source,
            })?;
        let mut app = crate::status::router_with_readiness(
            options.cameras.clone(),
            options.readiness.clone(),
        )
        .merge(crate::dispatch::status_routes(outbox_path.clone()));
        if let Some(o) = &ownership {
            app = app.merge(crate::cluster::status_routes(o.clone()));
        }
        let shutdown = server_stopped(server_stop_rx.clone());
        tracing::info!(url = %format!("http://{}/api/v1/cameras", listener.local_addr().map_err(|source| RunError::Metrics { addr: addr.clone(), source })?), "status endpoint (also /metrics)");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
    }

    let wake = Arc::new(Notify::new());
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    // Validation guarantees a url or an embedded receiver.
    let dispatch_url = dispatch_url.unwrap_or_default();
    let delivery_tasks = spawn_deliveries(
        &runtime,
        &config,
        &outbox_path,
        dispatch_url,
        &wake,
        phase_rx,
        &stop,
    )?;

    // The review console: held cases, the patrol wall, suppressions for the case stage.
    let review_config = crate::config::SharedConfig::new(config.clone());
    let review_hub = crate::review::ReviewHub::default();
    let suppressions = crate::review::Suppressions::default();
    let latest_frames = match &config.review {
        Some(_) => crate::review::LatestFrames::new(config.cameras.len()),
        // No console: no slots, so the scenario thread never copies a frame.
        None => crate::review::LatestFrames::default(),
    };
    if let Some(settings) = &config.review {
        let store = Arc::new(crate::review::store::ReviewStore::open(&outbox_path)?);
        if let Some(password) = crate::review::bootstrap_admin(&store, settings)? {
            // Shown once, on the console's first start; `gridwatch review add-user` changes it.
            eprintln!(
                "review console: created account `admin` with password {password} (shown once; set {} before the first start to choose it)",
                settings.admin_password_env
            );
        }
        for s in store.active_suppressions()? {
            suppressions.add(s);
        }
        let state = crate::review::ReviewState {
            store,
            config: review_config.clone(),
            cameras: options.cameras.clone(),
            latest: latest_frames.clone(),
            suppressions: suppressions.clone(),
            hub: review_hub.clone(),
            wake: Some(wake.clone()),
            cluster: ownership.clone(),
        };
        let server =
            runtime.block_on(crate::review::ReviewServer::bind(&settings.listen, state))?;
        tracing::info!(url = %format!("http://{}/", server.local_addr()), "review console running: open this URL to review held cases");
        let shutdown = server_stopped(server_stop_rx.clone());
        runtime.spawn(async move {
            if let Err(e) = server.serve(shutdown).await {
                tracing::error!(error = %e, "review console stopped");
            }
        });
    }
    let triage = crate::review::Triage {
        tiers: crate::review::Tiers::new(config.review.clone()),
        suppressions,
        fence: ownership.clone(),
    };

    // Stages, upstream last so that every consumer is ready before frames flow.
    let camera_ids = config
        .cameras
        .iter()
        .map(|c| Arc::from(c.id.as_str()))
        .collect();
    let mailboxes = pool::Mailboxes::new(
        camera_ids,
        config.ingest.pace,
        Duration::from_millis(config.inference.max_frame_age_ms),
    );
    // Every camera's gate (its background model) before any thread starts.
    let sinks = plans
        .iter()
        .map(|plan| {
            crate::gate::GatedSink::new(
                plan.index,
                plan.id.clone(),
                &config.gate,
                mailboxes.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (det_tx, det_rx) =
        crossbeam_channel::bounded(config.inference.detections_queue_capacity.max(1));
    let (event_tx, event_rx) = crossbeam_channel::bounded(config.cases.event_queue_capacity.max(1));

    let case_thread = {
        let wake = wake.clone();
        let stop = stop.clone();
        let hub = review_hub.clone();
        std::thread::Builder::new()
            .name("cases".into())
            .spawn(move || {
                let result = cases::run_triaged(
                    case_outbox,
                    event_rx,
                    &triage,
                    || wake.notify_one(),
                    || hub.notify("held"),
                );
                if let Err(e) = &result {
                    // No new case can be stored: stop taking frames rather than pretend.
                    tracing::error!(error = %e, "case stage failed; stopping the pipeline");
                    stop.stop();
                }
                result
            })
            .map_err(RunError::Runtime)?
    };
    let engine = ScenarioEngine::new(config.clone());
    let (reload_tx, reload_rx) = crossbeam_channel::bounded::<scenarios::Reload>(1);
    let scenario_thread = {
        let latest = latest_frames.clone();
        std::thread::Builder::new()
            .name("scenarios".into())
            .spawn(move || scenarios::run(engine, det_rx, event_tx, latest, reload_rx))
            .map_err(RunError::Runtime)?
    };
    let worker_threads = pool::spawn_workers_observed(
        mailboxes.clone(),
        detectors,
        det_tx,
        options.frame_observer.clone(),
    );

    let ingest_stop = Arc::new(AtomicBool::new(false));
    let mut cameras = CameraThreads {
        running: Vec::new(),
        registry: options.cameras.clone(),
        mailboxes: mailboxes.clone(),
        model_size: (model_w, model_h),
        cluster: ownership.clone(),
        retired: Default::default(),
    };
    // Cluster mode: the etcd side claims groups; the supervisor starts their cameras.
    let (leave_tx, leave_rx) = watch::channel(false);
    let controller = match (&ownership, &config.cluster) {
        (Some(o), Some(settings)) => {
            // Workers stay up while this node owns nothing (every slot closed).
            mailboxes.hold();
            for i in 0..config.cameras.len() {
                options
                    .cameras
                    .set_state(i, ingest::status::CameraState::Standby, None);
            }
            let c =
                crate::cluster::Controller::new(settings.clone(), o.clone(), &config.centre.name);
            Some(runtime.spawn(c.run(leave_rx)))
        }
        _ => {
            for (plan, sink) in plans.into_iter().zip(sinks) {
                cameras.start(plan, sink);
            }
            None
        }
    };
    tracing::info!(cameras = cameras.running.len(), workers, model = %card.id, "pipeline running");

    // Signals: stop taking frames; what was already decided is still stored and delivered.
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested: finishing in-flight work");
            stop.stop();
        });
    }
    #[cfg(unix)]
    {
        let reload = options.reload.clone();
        runtime.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                reload.request();
            }
        });
    }
    let stopper = {
        let stop = stop.clone();
        let ingest_stop = ingest_stop.clone();
        let mailboxes = mailboxes.clone();
        let watcher_done = Arc::new(AtomicBool::new(false));
        let done = watcher_done.clone();
        let handle = std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if stop.is_stopped() {
                    ingest_stop.store(true, Ordering::SeqCst);
                    mailboxes.stop();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        (watcher_done, handle)
    };

    // Supervise the cameras until every one has ended (files) or a stop: apply reloads, and
    // send out held cases nobody reviewed in time.
    let mut current = config.clone();
    let mut held_checked = Instant::now();
    // `[cases] retention_days`: finished cases past it are deleted, a batch per tick at most.
    let mut purger = crate::cases::outbox::Purger::new(config.cases.retention_days);
    loop {
        purger.tick(&mut held_outbox);
        if let Some(r) = &config.review
            && held_checked.elapsed() >= HELD_CHECK_INTERVAL
        {
            held_checked = Instant::now();
            let timeout_ms = (r.review_timeout_minutes * 60_000.0) as i64;
            let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
            match held_outbox.release_held(now_ms as i64 - timeout_ms) {
                Ok(ids) if !ids.is_empty() => {
                    for id in &ids {
                        tracing::warn!(case = %id, timeout_minutes = r.review_timeout_minutes, "held case not reviewed in time: dispatched unreviewed");
                    }
                    telemetry::review_released(ids.len() as u64);
                    wake.notify_one();
                    review_hub.notify("released");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot release held cases"),
            }
        }
        if ingest_stop.load(Ordering::SeqCst) {
            if let Some(o) = &ownership {
                o.drain();
            }
            cameras.stop_all();
            break;
        }
        if options.reload.take() {
            match crate::reload::load(&current, options.config_path.as_deref()) {
                Ok((next, plan)) if plan.is_empty() => {
                    tracing::info!("reload: nothing changed");
                    current = Arc::new(next);
                }
                Ok((next, plan)) => {
                    let next = Arc::new(next);
                    cameras.apply_reload(&next, &plan, &reload_tx)?;
                    review_config.set(next.clone());
                    current = next;
                }
                // The running configuration stays; the error names file, line and field.
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration")
                }
            }
        }
        cameras.follow_ownership(&current, &reload_tx)?;
        // Cluster mode runs until stopped: groups may come to this node at any time.
        if ownership.is_none() && cameras.all_finished() {
            break;
        }
        std::thread::sleep(SUPERVISOR_TICK);
    }
    drop(reload_tx);
    cameras.join_all()?;
    if let Some(o) = &ownership {
        o.clear_analysing();
    }
    for t in worker_threads {
        t.join().map_err(|_| RunError::Panic("inference worker"))?;
    }
    scenario_thread
        .join()
        .map_err(|_| RunError::Panic("scenarios"))?;
    let case_result = case_thread.join().map_err(|_| RunError::Panic("cases"))?;
    if let Some(controller) = controller {
        // Every case of this node's groups is committed: hand the groups over now rather
        // than after the lease's TTL.
        let _ = leave_tx.send(true);
        let _ = runtime.block_on(async { tokio::time::timeout(LEAVE_TIMEOUT, controller).await });
    }
    stopper.0.store(true, Ordering::SeqCst);
    let _ = stopper.1.join();

    let drain_for = if stop.is_stopped() {
        options.drain_timeout.min(Duration::from_secs(5))
    } else {
        options.drain_timeout
    };
    let _ = phase_tx.send(Phase::Drain {
        deadline: Instant::now() + drain_for,
    });
    wake.notify_one();
    // Every target drains under the same deadline, side by side.
    let mut first_error = None;
    for task in delivery_tasks {
        let result = runtime
            .block_on(task)
            .map_err(|e| RunError::Dispatch(DispatchError::Join(e.to_string())))
            .and_then(|r| r.map_err(RunError::from));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let outbox = Outbox::open(&outbox_path)?.counts()?;
    // Open event streams would hold the console's graceful shutdown: end them first.
    review_hub.close();
    let _ = server_stop_tx.send(true);
    runtime.shutdown_timeout(Duration::from_secs(2));

    let cases_stored = case_result?;
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

/// One delivery task per dispatch target, each with its own outbox connection, client, breaker
/// and backoff, so that one target's outage never delays another's cases. `wake` (the case
/// stage and the console notify it once per stored or confirmed case) is relayed to every
/// task. A task whose outbox fails (disk full, I/O) stops the pipeline.
fn spawn_deliveries(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    outbox_path: &std::path::Path,
    primary_url: String,
    wake: &Arc<Notify>,
    phase: watch::Receiver<Phase>,
    stop: &StopHandle,
) -> Result<Vec<tokio::task::JoinHandle<Result<OutboxCounts, DispatchError>>>, RunError> {
    let mut wakes = Vec::new();
    let mut tasks = Vec::new();
    for settings in config.dispatch.per_target() {
        let url = settings.url.clone().unwrap_or_else(|| primary_url.clone());
        let delivery = Delivery::new(settings, url, Outbox::open(outbox_path)?)?;
        let target_wake = Arc::new(Notify::new());
        wakes.push(target_wake.clone());
        let stop = stop.clone();
        let target = delivery.target().to_owned();
        let run = delivery.run(target_wake, phase.clone());
        tasks.push(runtime.spawn(async move {
            // A panicking task would otherwise leave this target's cases unsent, unnoticed.
            let result = match futures_util::FutureExt::catch_unwind(
                std::panic::AssertUnwindSafe(run),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(DispatchError::Join(format!(
                    "the delivery task of target {target} panicked"
                ))),
            };
            if let Err(e) = &result {
                // The outbox cannot record deliveries (disk full, I/O error): stop taking frames.
                tracing::error!(target = %target, error = %e, "delivery failed; stopping the pipeline");
                stop.stop();
            }
            result
        }));
    }
    let wake = wake.clone();
    runtime.spawn(async move {
        loop {
            wake.notified().await;
            for w in &wakes {
                w.notify_one();
            }
        }
    });
    Outbox::open(outbox_path)?.adopt_legacy(config.dispatch.primary_id())?;
    // Deliveries stored for a target this configuration no longer has are kept, not sent.
    let configured: Vec<String> = config
        .dispatch
        .per_target()
        .into_iter()
        .map(|s| s.primary_id().to_owned())
        .collect();
    for (target, stats) in Outbox::open(outbox_path)?.target_stats(None)? {
        if stats.pending > 0 && !configured.contains(&target) {
            tracing::warn!(target = %target, pending = stats.pending, "deliveries to a dispatch target that is not configured: they stay in the outbox until it is configured again");
        }
    }
    for gap in config.unrouted() {
        tracing::warn!(gap = %gap, "routing gap: such cases are stored but go to no dispatch target");
    }
    Ok(tasks)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The checks of `gridwatch check` that need the runtime: onnxruntime loads, and the model's
/// input and output names match its card.
pub fn check_runtime(config: &Config) -> Result<(), RunError> {
    let library = infer::runtime_library(
        config
            .inference
            .onnxruntime_library
            .as_deref()
            .map(|p| config.resolve(p))
            .as_deref(),
    );
    let env = infer::environment_with(&library, config.inference.execution_provider)?;
    let card = Arc::new(ModelCard::load(&config.resolve(&config.model.card))?);
    let thresholds = Thresholds {
        score: config.model.score_threshold,
        nms_iou: config.model.nms_iou,
    };
    infer::Detector::new(env, card, 1, thresholds)?;
    Ok(())
}
