//! The camera threads of a run: one GStreamer pipeline per camera, started, stopped and
//! restarted as files end, reloads edit cameras, and (in cluster mode) groups change owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{RELOAD_APPLY_TIMEOUT, RunError};
use crate::config::Config;
use crate::infer::pool;
use crate::ingest::status::CameraRegistry;
use crate::ingest::{self, CameraPlan};
use crate::scenarios;

/// One camera's ingest thread and its own stop flag.
pub(super) struct CameraThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The running camera threads, by camera index.
pub(super) struct CameraThreads {
    running: Vec<CameraThread>,
    registry: CameraRegistry,
    mailboxes: Arc<pool::Mailboxes>,
    model_size: (usize, usize),
    /// Cluster mode: a camera runs only while this node owns its group.
    cluster: Option<crate::cluster::Ownership>,
    /// Cameras a reload removed (their slots stay, never restarted).
    retired: std::collections::HashSet<usize>,
    /// Every camera's gate lets frames through while one of its re-checks is due.
    rechecks: crate::recheck::Rechecks,
    /// Where each camera's encoded stream goes (the live wall); `None`: live view off.
    live: Option<crate::live::LiveHubs>,
}

impl CameraThreads {
    pub(super) fn new(
        registry: CameraRegistry,
        mailboxes: Arc<pool::Mailboxes>,
        model_size: (usize, usize),
        cluster: Option<crate::cluster::Ownership>,
        rechecks: crate::recheck::Rechecks,
        live: Option<crate::live::LiveHubs>,
    ) -> Self {
        Self {
            running: Vec::new(),
            registry,
            mailboxes,
            model_size,
            cluster,
            retired: Default::default(),
            rechecks,
            live,
        }
    }

    /// How many cameras have a thread slot.
    pub(super) fn count(&self) -> usize {
        self.running.len()
    }

    pub(super) fn start(&mut self, mut plan: CameraPlan, sink: crate::gate::GatedSink) {
        let index = plan.index;
        if let Some(live) = &self.live {
            plan.set_live(live.sink(index, &plan.id));
        }
        let sink = sink.with_rechecks(self.rechecks.clone());
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
        let plan = CameraPlan::new(&config.area, &config.ingest, i, w, h)?;
        let mut sink =
            crate::gate::GatedSink::new(&config.area, i, &config.gate, self.mailboxes.clone())?;
        if let Some(o) = &self.cluster {
            sink = sink.fenced(o.clone(), &config.area.cameras[i].group);
        }
        self.mailboxes.reopen(i);
        self.start(plan, sink);
        Ok(())
    }

    /// Cluster mode: starts the cameras of groups this node now owns (their scenario state
    /// reset first, as a new owner knows nothing of the old one's tracks) and stops those of
    /// groups it no longer owns or whose lease is no longer certain; then tells the
    /// controller which groups are analysed here.
    pub(super) fn follow_ownership(
        &mut self,
        config: &Arc<Config>,
        scenarios: &crossbeam_channel::Sender<scenarios::Reload>,
    ) -> Result<(), RunError> {
        let Some(ownership) = self.cluster.clone() else {
            return Ok(());
        };
        let mut to_stop = Vec::new();
        let mut to_start = Vec::new();
        for (i, cam) in config.area.cameras.iter().enumerate() {
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
            tracing::info!(camera = %config.area.cameras[i].id, group = %config.area.cameras[i].group, "cluster: camera stopped");
        }
        // Marked analysed before ownership is checked again: with the controller's
        // "fence, then look at this mark on a later pass", one of the two always sees the
        // other, so a group is never handed over while its cameras are starting.
        for &i in &to_start {
            ownership.set_analysing(&config.area.cameras[i].group, true);
        }
        to_start.retain(|&i| ownership.may_analyse(&config.area.cameras[i].group));
        if !to_start.is_empty() {
            let (applied_tx, applied_rx) = crossbeam_channel::bounded(1);
            let sent = scenarios.send(scenarios::Reload {
                setup: config.scenario_setup(),
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
                    tracing::info!(camera = %config.area.cameras[i].id, group = %config.area.cameras[i].group, "cluster: camera started")
                }
                // One bad camera must not take the others down; retried on the next tick.
                Err(e) => {
                    tracing::error!(camera = %config.area.cameras[i].id, error = %e, "cluster: camera not started")
                }
            }
        }
        let running: std::collections::HashSet<&str> = config
            .area
            .cameras
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.started(i))
            .map(|(_, c)| c.group.as_str())
            .collect();
        for g in &config.area.groups {
            ownership.set_analysing(&g.id, running.contains(g.id.as_str()));
        }
        Ok(())
    }

    pub(super) fn stop_all(&self) {
        for c in &self.running {
            c.stop.store(true, Ordering::SeqCst);
        }
    }

    pub(super) fn all_finished(&self) -> bool {
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

    pub(super) fn join_all(&mut self) -> Result<(), RunError> {
        for c in &mut self.running {
            if let Some(t) = c.thread.take() {
                t.join().map_err(|_| RunError::Panic("camera"))?;
            }
        }
        Ok(())
    }

    /// Applies a reload: stops the retired and edited cameras, gives the scenario thread its
    /// new rules, then starts the edited and added cameras. The other cameras never stop.
    pub(super) fn apply_reload(
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
                .add_camera(Arc::from(config.area.cameras[i].id.as_str()));
            let registered = self.registry.add(ingest::initial_status(&config.area, i));
            if slot != i || registered != i {
                // Indices are kept in step by construction; if not, starting it would mix up
                // cameras, so it is left out loudly.
                tracing::error!(camera = %config.area.cameras[i].id, slot, registered, index = i, "reload: camera index mismatch; camera not started");
                continue;
            }
        }
        let (applied_tx, applied_rx) = crossbeam_channel::bounded(1);
        let sent = scenarios.send(scenarios::Reload {
            setup: config.scenario_setup(),
            cameras: plan.rules_changed.clone(),
            applied: applied_tx,
        });
        if sent.is_err() || applied_rx.recv_timeout(RELOAD_APPLY_TIMEOUT).is_err() {
            tracing::warn!("reload: the scenario thread did not confirm the new rules");
        }
        for &i in plan.restart.iter().chain(&plan.added) {
            let id = config.area.cameras[i].id.as_str();
            if self
                .cluster
                .as_ref()
                .is_some_and(|o| !o.may_analyse(&config.area.cameras[i].group))
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
