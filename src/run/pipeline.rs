//! The frame path of a run as supervised stages. They start downstream first (cases,
//! scenarios, inference workers, then cameras), so that every consumer is ready before frames
//! flow, and end upstream first: cameras stop, and each later stage finishes what is queued
//! and ends when its input closes. A failure anywhere (a stage returning an error, a panic, a
//! delivery that cannot record) raises the run's one stop signal; the supervisor then ends
//! every stage in that order and the outbox drains.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::watch;

use super::cameras::CameraThreads;
use super::io::Io;
use super::{RunError, RunOptions, StopHandle};
use crate::area::kinds::ObjectKind;
use crate::cases::outbox::{Outbox, Purger};
use crate::cases::routing::Routing;
use crate::cases::{self, CaseError};
use crate::cluster::Ownership;
use crate::config::Config;
use crate::infer::card::ModelCard;
use crate::infer::models::{CameraModels, ModelSet};
use crate::infer::pool;
use crate::ingest::{self, CameraPlan};
use crate::scenarios::{self, ScenarioEngine};
use crate::telemetry;

/// How often the supervisor looks for a stop, a reload, a failed stage or cameras that ended.
const SUPERVISOR_TICK: Duration = Duration::from_millis(100);
/// How often held cases are checked against the review timeout.
const HELD_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a clean shutdown waits for the cluster controller to revoke its lease.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The loaded models: per inference worker a set of detectors (a session per model).
pub(super) struct Model {
    pub ids: Vec<Arc<str>>,
    /// The cards, for checking the learned zone states' classifier cards against.
    pub cards: Vec<Arc<ModelCard>>,
    /// Each model's object kinds, for choosing the models of each camera.
    pub kinds: Vec<Vec<ObjectKind>>,
    /// The size cameras are decoded at: the largest model input, per axis.
    pub frame_size: (usize, usize),
    pub sets: Vec<ModelSet>,
}

type ClusterTask = tokio::task::JoinHandle<()>;

/// The running stages, in pipeline order.
pub(super) struct Pipeline {
    stop: StopHandle,
    mailboxes: Arc<pool::Mailboxes>,
    cameras: CameraThreads,
    workers: Vec<JoinHandle<()>>,
    scenarios: Option<JoinHandle<()>>,
    cases: Option<JoinHandle<Result<u64, CaseError>>>,
    /// New rules for the scenario thread (reloads, cluster hand-overs).
    reloads: Option<Sender<scenarios::Reload>>,
    /// The case stage's routing, swapped by a reload.
    routing: Arc<arc_swap::ArcSwap<Routing>>,
    ownership: Option<Ownership>,
    /// Cluster mode: the etcd side, and the signal to leave the cluster.
    controller: Option<(watch::Sender<bool>, ClusterTask)>,
    /// The first failure seen while supervising.
    failure: Option<RunError>,
    /// Each model's object kinds (to choose the models of cameras a reload changes).
    model_kinds: Vec<Vec<ObjectKind>>,
    model_cards: Vec<Arc<ModelCard>>,
    /// Camera re-checks of handled cases (the gates, the scenario stage and status back share it).
    rechecks: crate::recheck::Rechecks,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        options: &RunOptions,
        model: &Model,
        ownership: Option<Ownership>,
        stop: StopHandle,
        rechecks: crate::recheck::Rechecks,
        live: Option<crate::live::LiveHubs>,
    ) -> Self {
        let ids = config
            .area
            .cameras
            .iter()
            .map(|c| Arc::from(c.id.as_str()))
            .collect();
        let mailboxes = pool::Mailboxes::new(
            ids,
            config.ingest.pace,
            Duration::from_millis(config.inference.max_frame_age_ms),
        );
        mailboxes.set_thinning(config.inference.thin_under_overload);
        let cameras = CameraThreads::new(
            options.cameras.clone(),
            mailboxes.clone(),
            model.frame_size,
            ownership.clone(),
            rechecks.clone(),
            live,
        );
        Self {
            stop,
            mailboxes,
            cameras,
            workers: Vec::new(),
            scenarios: None,
            cases: None,
            reloads: None,
            routing: Arc::new(arc_swap::ArcSwap::from_pointee(config.dispatch.routing())),
            ownership,
            controller: None,
            failure: None,
            model_kinds: Vec::new(),
            model_cards: Vec::new(),
            rechecks,
        }
    }

    /// Starts every stage, downstream first. On an error the stages already started keep
    /// running until [`Pipeline::shutdown`] ends them.
    pub fn start(
        &mut self,
        config: &Arc<Config>,
        options: &RunOptions,
        model: Model,
        plans: Vec<CameraPlan>,
        io: &Io,
    ) -> Result<(), RunError> {
        // Every camera's gate (its background model) before any thread starts.
        let sinks = plans
            .iter()
            .map(|p| {
                crate::gate::GatedSink::new(
                    &config.area,
                    p.index,
                    &config.gate,
                    self.mailboxes.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (det_tx, det_rx) =
            crossbeam_channel::bounded(config.inference.detections_queue_capacity);
        let (event_tx, event_rx) = crossbeam_channel::bounded(config.cases.event_queue_capacity);
        io.console.reports.connect(event_tx.clone());
        self.start_cases(config, io, event_rx)?;
        let (reload_tx, reload_rx) = crossbeam_channel::bounded(1);
        self.reloads = Some(reload_tx);
        let mut engine = ScenarioEngine::new(config.scenario_setup());
        engine.set_rechecks(self.rechecks.clone());
        let observer = (io.console.latest.clone(), io.console.live.clone());
        self.scenarios = Some(spawn_stage("scenarios", move || {
            scenarios::run(engine, det_rx, event_tx, &observer, reload_rx)
        })?);
        let workers = model.sets.len();
        let models = model.ids.iter().map(|i| &**i).collect::<Vec<_>>().join("+");
        self.model_kinds = model.kinds;
        self.model_cards = model.cards;
        self.set_plans(&self.plans(config));
        self.workers = pool::spawn_workers_observed(
            self.mailboxes.clone(),
            model.sets,
            det_tx,
            options.frame_observer.clone(),
        );
        self.start_cameras(config, options, plans, sinks, io);
        tracing::info!(cameras = self.cameras.count(), workers, models = %models, "pipeline running");
        Ok(())
    }

    /// The case stage: every event becomes a committed outbox row. An outbox that cannot be
    /// written stops the run rather than pretend (no case is reported as taken that was not
    /// stored).
    fn start_cases(
        &mut self,
        config: &Config,
        io: &Io,
        events: crossbeam_channel::Receiver<scenarios::Output>,
    ) -> Result<(), RunError> {
        let outbox = Outbox::open(&config.resolve(&config.cases.outbox))?;
        let mut triage = config.triage(
            io.console.suppressions.clone(),
            self.ownership.clone(),
            self.routing.clone(),
        );
        triage.live = Some(io.console.live.clone());
        let (wake, hub, stop) = (io.wake.clone(), io.console.hub.clone(), self.stop.clone());
        self.cases = Some(spawn_stage("cases", move || {
            let result = cases::run_triaged(
                outbox,
                events,
                &triage,
                || wake.notify_one(),
                || hub.notify("held"),
            );
            if let Err(e) = &result {
                tracing::error!(error = %e, "case stage failed; stopping the pipeline");
                stop.stop();
            }
            result
        })?);
        Ok(())
    }

    /// Single node: every camera now. Cluster mode: none yet; the etcd side claims groups and
    /// the supervisor starts their cameras.
    fn start_cameras(
        &mut self,
        config: &Config,
        options: &RunOptions,
        plans: Vec<CameraPlan>,
        sinks: Vec<crate::gate::GatedSink>,
        io: &Io,
    ) {
        let (Some(o), Some(settings)) = (&self.ownership, &config.cluster) else {
            let count = plans.len();
            for (i, (mut plan, sink)) in plans.into_iter().zip(sinks).enumerate() {
                plan.delay_start(config.ingest.start_delay(i, count));
                self.cameras.start(plan, sink);
            }
            return;
        };
        // Workers stay up while this node owns nothing (every slot closed).
        self.mailboxes.hold();
        for i in 0..config.area.cameras.len() {
            options
                .cameras
                .set_state(i, ingest::status::CameraState::Standby, None);
        }
        let controller =
            crate::cluster::Controller::new(settings.clone(), o.clone(), &config.area.centre.name);
        let (leave_tx, leave_rx) = watch::channel(false);
        self.controller = Some((leave_tx, io.spawn(controller.run(leave_rx))));
    }

    /// Runs until every camera has ended (files), a stop is requested or a stage fails:
    /// applies reloads, follows cluster ownership, and keeps the outbox: finished cases past
    /// `[cases] retention_days` are purged, held cases nobody reviewed in time go out.
    pub fn supervise(&mut self, config: &Arc<Config>, options: &RunOptions, io: &Io) {
        let mut current = config.clone();
        let mut held_checked = Instant::now();
        let mut outbox = match Outbox::open(&config.resolve(&config.cases.outbox)) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: cannot open the outbox; stopping the pipeline");
                self.fail(e.into());
                return;
            }
        };
        // Finished cases past the retention are deleted, a batch per tick at most.
        let mut purger = Purger::new(config.cases.retention_days);
        let mut sampled: Option<Instant> = None;
        loop {
            purger.tick(&mut outbox);
            if sampled.is_none_or(|t| t.elapsed() >= CAMERA_SAMPLE_INTERVAL) {
                sampled = Some(Instant::now());
                sample_cameras(&mut outbox, &options.cameras, current.cases.retention_days);
            }
            if held_checked.elapsed() >= HELD_CHECK_INTERVAL {
                held_checked = Instant::now();
                release_unreviewed(&mut outbox, &current, io);
            }
            if self.stop.is_stopped() {
                break;
            }
            if let Err(e) = self.step(&mut current, options) {
                tracing::error!(error = %e, "supervisor: stopping the pipeline");
                self.fail(e);
                break;
            }
            if let Some(stage) = self.died() {
                tracing::error!(
                    stage,
                    "a pipeline stage ended unexpectedly; stopping the pipeline"
                );
                self.fail(RunError::Panic(stage));
                break;
            }
            // Cluster mode runs until stopped: groups may come to this node at any time.
            if self.ownership.is_none() && self.cameras.all_finished() {
                break;
            }
            std::thread::sleep(SUPERVISOR_TICK);
        }
    }

    /// One supervisor tick's work: a reload if one was asked for, then cluster ownership.
    fn step(&mut self, current: &mut Arc<Config>, options: &RunOptions) -> Result<(), RunError> {
        let Some(reloads) = self.reloads.clone() else {
            return Ok(());
        };
        if options.reload.take() {
            match crate::reload::load(current, options.config_path.as_deref()) {
                Ok((next, plan)) => {
                    let next = Arc::new(next);
                    // Before (cameras kept) and after (cameras added) the cameras restart; a
                    // change of `[scenarios.models]` or of the zone states' cards alone
                    // restarts nothing.
                    let plans = self.plans(&next);
                    self.set_plans(&plans);
                    if !plan.is_empty() {
                        self.cameras.apply_reload(&next, &plan, &reloads)?;
                        self.set_plans(&plans);
                    } else {
                        tracing::info!("reload: no camera or rule changed");
                    }
                    self.routing.store(Arc::new(next.dispatch.routing()));
                    *current = next;
                }
                // The running configuration stays; the error names file, line and field.
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration")
                }
            }
        }
        self.cameras.follow_ownership(current, &reloads)
    }

    /// Each camera's models, from what its zones' scenarios need, and its learned zone states
    /// (the cards read now from `[states] cards_dir`), to its mailbox.
    fn set_plans(&self, plans: &[Arc<CameraModels>]) {
        for (i, plan) in plans.iter().enumerate() {
            self.mailboxes.set_plan(i, plan.clone());
        }
    }

    fn plans(&self, config: &Config) -> Vec<Arc<CameraModels>> {
        let (plans, problems) = config.camera_plans(&self.model_kinds, &self.model_cards);
        for p in problems {
            tracing::error!("{p}; that zone state stays off");
        }
        plans.into_iter().map(Arc::new).collect()
    }

    fn fail(&mut self, e: RunError) {
        self.failure.get_or_insert(e);
        self.stop.stop();
    }

    /// A stage thread that ended while cameras still run (a panic; stages end only when their
    /// input closes).
    fn died(&self) -> Option<&'static str> {
        // Once every camera has closed its mailbox (its source ended), the workers, then the
        // scenario and case stages, end by themselves, which can come a moment before the
        // camera threads are seen to finish.
        let sources_ended = self.cameras.all_finished() || self.mailboxes.drained();
        if sources_ended && self.ownership.is_none() {
            return None;
        }
        let ended = |t: Option<bool>| t.unwrap_or(false);
        if ended(self.cases.as_ref().map(JoinHandle::is_finished)) {
            Some("cases")
        } else if ended(self.scenarios.as_ref().map(JoinHandle::is_finished)) {
            Some("scenarios")
        } else if self.workers.iter().any(|w| w.is_finished()) {
            Some("inference worker")
        } else {
            None
        }
    }

    /// Ends every stage, upstream first, and returns how many cases the case stage stored,
    /// or the first failure. After a stop, frames still queued are dropped (they are not
    /// cases yet); every event already decided is still stored.
    pub fn shutdown(mut self, io: &Io) -> Result<u64, RunError> {
        if self.stop.is_stopped() {
            self.cameras.stop_all();
            self.mailboxes.stop();
        }
        let mut first = self.failure.take();
        let mut note = |r: Result<(), RunError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        note(self.cameras.join_all());
        self.reloads = None;
        if let Some(o) = &self.ownership {
            o.clear_analysing();
        }
        for t in self.workers.drain(..) {
            note(join_stage("inference worker", t));
        }
        if let Some(t) = self.scenarios.take() {
            note(join_stage("scenarios", t));
        }
        // No report after the last event: the case stage's input ends here.
        io.console.reports.close();
        let stored = match self.cases.take().map(|t| join_stage("cases", t)) {
            Some(Ok(Ok(n))) => n,
            Some(Ok(Err(e))) => {
                note(Err(e.into()));
                0
            }
            Some(Err(e)) => {
                note(Err(e));
                0
            }
            None => 0,
        };
        if let Some((leave, task)) = self.controller.take() {
            // Every case of this node's groups is committed: hand the groups over now rather
            // than after the lease's TTL.
            let _ = leave.send(true);
            io.wait(task, LEAVE_TIMEOUT);
        }
        first.map_or(Ok(stored), Err)
    }
}

/// Held cases nobody confirmed or rejected in time go out unreviewed (audited).
fn release_unreviewed(outbox: &mut Outbox, config: &Config, io: &Io) {
    let Some(r) = &config.review else { return };
    let timeout_ms = (r.review_timeout_minutes * 60_000.0) as i64;
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    match outbox.release_held(now_ms - timeout_ms) {
        Ok(ids) if !ids.is_empty() => {
            for id in &ids {
                tracing::warn!(case = %id, timeout_minutes = r.review_timeout_minutes, "held case not reviewed in time: dispatched unreviewed");
            }
            telemetry::review_released(ids.len() as u64);
            io.wake.notify_one();
            io.console.hub.notify("released");
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot release held cases"),
    }
}

fn spawn_stage<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, RunError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(RunError::Runtime)
}

fn join_stage<T>(name: &'static str, t: JoinHandle<T>) -> Result<T, RunError> {
    t.join().map_err(|_| RunError::Panic(name))
}

/// How often the supervisor stores each camera's health (reports' uptime, stalls, reconnects).
pub const CAMERA_SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

/// Stores every camera's state and counters now; samples past the retention go. A failure is
/// logged and counted, never fatal: health history is for reports, cases come first.
fn sample_cameras(
    outbox: &mut Outbox,
    cameras: &crate::ingest::status::CameraRegistry,
    retention_days: u32,
) {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let statuses = cameras.snapshot();
    let samples: Vec<_> = statuses
        .iter()
        .map(|c| crate::cases::facts::CameraSample {
            camera: &c.id,
            state: c.state.as_str(),
            reconnects: c.reconnects,
            stalls: c.stalls,
        })
        .collect();
    let mut result = outbox.record_camera_samples(now_ms, &samples);
    if result.is_ok() && retention_days > 0 {
        let before_ms = now_ms - i64::from(retention_days) * 86_400_000;
        result = outbox.purge_camera_samples(before_ms).map(|_| ());
    }
    if let Err(e) = result {
        crate::telemetry::camera_samples_failed();
        tracing::warn!(error = %e, "supervisor: cannot store the cameras' health samples");
    }
}
