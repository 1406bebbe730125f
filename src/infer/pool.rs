//! The inference worker pool: one mailbox of one frame per camera, N worker threads each owning
//! a `Detector`, serving the camera that has waited longest. Memory stays bounded: at most one
//! waiting and one in-flight frame per camera; a camera's frame stays in flight until its
//! detections are in the downstream channel, so each camera's detections arrive in frame order.
//! Under overload (realtime pace) the pool also says how slowly every camera must go so that the
//! workers take about what is offered ([`Thinning`]): ingest then never decodes the frames the
//! workers could not take.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::models::{CameraModels, ModelSet};
use super::{Detection, Detector, InferError, StageTimes};
use crate::ingest::Frame;
use crate::ingest::settings::Pace;
use crate::telemetry;

/// A frame with what the model found in it: the output of the inference stage.
pub struct Detections {
    pub frame: Frame,
    pub objects: Vec<Detection>,
    /// Seconds the frame waited in its mailbox.
    pub queue_seconds: f64,
    pub times: StageTimes,
    /// Dropped when the scenario stage is done with the frame: records the `rules` stage and the
    /// capture-to-decision latency, and reports the frame to a benchmark's observer if any.
    pub probe: Option<DoneProbe>,
}

/// What one analysed frame went through, for `gridwatch-bench`: when it arrived from its
/// pipeline, how long each stage took, and when the scenario stage was done with it.
#[derive(Debug, Clone)]
pub struct FrameRecord {
    pub camera: usize,
    pub seq: u64,
    pub stream_seconds: f64,
    /// When the appsink handed the frame over.
    pub received: std::time::Instant,
    /// How late the hand-over was behind the frame's time on the pipeline clock
    /// (`Frame::lag_seconds`): capture → decision is this plus `received` → `done_at`.
    pub ingest_lag_seconds: f64,
    pub queue_seconds: f64,
    pub times: StageTimes,
    /// When the worker handed the detections to the scenario channel.
    pub handed_at: std::time::Instant,
    /// When the scenario stage finished with the frame (rules evaluated, events emitted).
    pub done_at: std::time::Instant,
    pub objects: Vec<Detection>,
}

/// Times the end of a frame's way. It travels inside `Detections`, so it is dropped exactly
/// when the scenario engine is done with the frame, without a hook in that stage.
#[derive(Debug)]
pub struct DoneProbe {
    received: std::time::Instant,
    handed_at: std::time::Instant,
    /// Only when a benchmark observes the run.
    observed: Option<(FrameRecord, Sender<FrameRecord>)>,
}

impl Drop for DoneProbe {
    fn drop(&mut self) {
        let done_at = std::time::Instant::now();
        telemetry::stage_seconds(
            "rules",
            done_at.duration_since(self.handed_at).as_secs_f64(),
        );
        telemetry::frame_decided(done_at.duration_since(self.received).as_secs_f64());
        if let Some((mut r, observer)) = self.observed.take() {
            r.done_at = done_at;
            // The bench may have stopped listening; nothing else depends on this record.
            let _ = observer.send(r);
        }
    }
}

struct Slot {
    /// The frame waiting for a worker, and since when the camera has been waiting: the arrival
    /// of the frame that found the slot empty, kept when newer frames replace it.
    waiting: Option<(Frame, Instant)>,
    /// A worker holds the camera's [`Turn`]: its frame is being analysed or handed downstream.
    busy: bool,
    open: bool,
    /// The models the camera's frames go through.
    plan: Arc<CameraModels>,
    /// Frames offered in the current thinning window (see [`Thinning`]).
    offered: u32,
}

impl Slot {
    fn open() -> Self {
        Slot {
            waiting: None,
            busy: false,
            open: true,
            plan: Arc::default(),
            offered: 0,
        }
    }

    /// Counts a frame dropped before analysis, and once for each model it would have run.
    fn count_drop(&self, camera: &str, reason: telemetry::DropReason) {
        Self::count_drop_of(&self.plan, camera, reason);
    }

    fn count_drop_of(plan: &CameraModels, camera: &str, reason: telemetry::DropReason) {
        telemetry::frame_dropped(camera, reason);
        for m in &plan.models {
            telemetry::model_frame(camera, &m.id, reason.as_str(), None);
        }
    }
}

struct Slots {
    slots: Vec<Slot>,
    /// The rate every camera is held to under overload (see [`Thinning`]).
    thinning: Thinning,
    /// Camera ids by slot, for metric labels (grows when a reload adds cameras).
    camera_ids: Vec<Arc<str>>,
    stopping: bool,
    /// While a reload restarts cameras, every slot may be closed for a moment: the workers must
    /// not take that for the end of the run.
    held: usize,
}

/// Seconds over which the frames offered and taken are compared (see [`Thinning`]).
const THINNING_WINDOW_SECONDS: f64 = 3.0;
/// Frames offered per frame taken that thinning aims at: a few more than the workers take, so
/// they never wait for a frame while cameras are held back.
const THINNING_TARGET_RATIO: f64 = 1.2;
/// Windows in a row overloaded before cameras are first held: the start of a run (every camera
/// decoding its first frames at once) is a burst, not an overload.
const THINNING_ONSET_WINDOWS: u32 = 2;
/// Offered per taken above this: overloaded, the interval grows.
const THINNING_HIGH_RATIO: f64 = 1.4;
/// The workers waited for frames more than this share of the window: thinned more than
/// needed, the interval shrinks.
const THINNING_MAX_IDLE_SHARE: f64 = 0.05;
/// How much it shrinks then (some frames were still dropped: the offers came in bursts).
const THINNING_IDLE_STEP: f64 = 0.8;
/// The most the interval grows in one window.
const THINNING_MAX_STEP: f64 = 1.5;
/// The workers waited and every frame offered was taken: the interval shrinks this much.
const THINNING_SPARE_STEP: f64 = 0.6;
/// How often a worker waiting for a frame looks at the thinning window.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// Intervals below this are no thinning.
const MIN_THINNING_INTERVAL_SECONDS: f64 = 0.05;
/// The longest interval cameras are held to: a slow model still sees each camera this often.
const MAX_THINNING_INTERVAL_SECONDS: f64 = 60.0;

/// Holding every camera to one analysed frame per interval while the workers cannot take all
/// the frames offered (realtime pace): a frame they would not take is then never decoded,
/// scaled or converted, so the CPU it would have cost goes to the model, and throughput at 2x
/// load stays at capacity. Each camera analyses at its own rate or at this interval, whichever
/// is slower: the cameras above the fair share are held back, as the longest-waiting-first
/// order serves them anyway. Adjusted every [`THINNING_WINDOW_SECONDS`]: shrunk when the
/// workers waited for frames (more than [`THINNING_MAX_IDLE_SHARE`] of their time), else grown
/// while more than [`THINNING_HIGH_RATIO`] frames are offered (put, or dropped as superseded
/// before conversion) per frame taken, towards [`THINNING_TARGET_RATIO`]; first set after
/// [`THINNING_ONSET_WINDOWS`] such windows in a row.
struct Thinning {
    since: Instant,
    offered: u64,
    taken: u64,
    /// Seconds the workers waited for a frame, all together.
    idle_seconds: f64,
    /// Workers running (their idle time is shared among them).
    workers: usize,
    /// Windows in a row that were overloaded (see [`THINNING_ONSET_WINDOWS`]).
    overloaded_windows: u32,
    interval_seconds: f64,
}

impl Thinning {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            offered: 0,
            taken: 0,
            idle_seconds: 0.0,
            workers: 0,
            overloaded_windows: 0,
            interval_seconds: 0.0,
        }
    }

    /// At the end of a window, the next interval from what was offered and taken, with the
    /// cameras that offered any frame (for a first interval): (before, after) when it changed.
    fn tick(&mut self, slots: &mut [Slot]) -> Option<(f64, f64)> {
        let window = self.since.elapsed().as_secs_f64();
        if window < THINNING_WINDOW_SECONDS {
            return None;
        }
        let offering = slots
            .iter_mut()
            .map(|s| std::mem::take(&mut s.offered))
            .filter(|&n| n > 0)
            .count();
        let w = Window {
            seconds: window,
            offered: self.offered,
            taken: self.taken,
            offering,
            idle_share: self.idle_seconds / (window * self.workers.max(1) as f64),
        };
        *self = Self {
            interval_seconds: self.interval_seconds,
            workers: self.workers,
            overloaded_windows: self.overloaded_windows,
            ..Self::new()
        };
        if w.taken == 0 && w.idle_share <= THINNING_MAX_IDLE_SHARE {
            // Nothing analysed, yet no worker waited (a model pass longer than the window).
            return None;
        }
        let now = self.interval_seconds;
        tracing::debug!(window = ?w, interval_seconds = now, "thinning window");
        let next = self.next_interval(&w);
        let next = if next < MIN_THINNING_INTERVAL_SECONDS {
            0.0
        } else {
            next.min(MAX_THINNING_INTERVAL_SECONDS)
        };
        self.interval_seconds = next;
        (next != now).then_some((now, next))
    }

    /// The interval after window `w` (unclamped).
    fn next_interval(&mut self, w: &Window) -> f64 {
        let (now, ratio) = (
            self.interval_seconds,
            w.offered as f64 / w.taken.max(1) as f64,
        );
        let overloaded = w.idle_share <= THINNING_MAX_IDLE_SHARE && ratio > THINNING_HIGH_RATIO;
        self.overloaded_windows = if overloaded {
            self.overloaded_windows + 1
        } else {
            0
        };
        if w.idle_share > THINNING_MAX_IDLE_SHARE {
            // The workers waited for frames: cameras are held back more than needed.
            let step = if w.offered <= w.taken {
                THINNING_SPARE_STEP
            } else {
                THINNING_IDLE_STEP
            };
            return now * step;
        }
        if !overloaded || (now == 0.0 && self.overloaded_windows < THINNING_ONSET_WINDOWS) {
            // Not overloaded, or not yet for long enough: a burst (cameras starting) passes.
            return now;
        }
        // A first interval from the cameras' mean interval between offers. Damped: cameras
        // follow within a second, those already slower do not change, and the workers take more
        // once fewer frames are decoded.
        let from = now.max(w.seconds * w.offering as f64 / w.offered as f64);
        from * (ratio / THINNING_TARGET_RATIO)
            .sqrt()
            .min(THINNING_MAX_STEP)
    }
}

/// What one thinning window saw.
#[derive(Debug)]
struct Window {
    seconds: f64,
    offered: u64,
    taken: u64,
    /// Cameras that offered a frame.
    offering: usize,
    /// The share of the workers' time spent waiting for a frame.
    idle_share: f64,
}

impl Slots {
    /// Camera `camera` offered a frame (put, or dropped before conversion as superseded).
    fn offered(&mut self, camera: usize) {
        self.thinning.offered += 1;
        if let Some(s) = self.slots.get_mut(camera) {
            s.offered += 1;
        }
    }
}

/// Logs and exports a new thinning interval (outside the mailboxes' lock).
fn thinning_changed((before, after): (f64, f64)) {
    telemetry::overload_interval(after);
    if after == 0.0 {
        tracing::info!("overload over: every camera analyses at its own rate again");
    } else if before == 0.0 {
        tracing::info!(
            interval_seconds = after,
            "overload: the model cannot take every frame offered; cameras held to at most one analysed frame per interval, the rest not decoded"
        );
    } else {
        tracing::debug!(
            interval_seconds = after,
            "overload: thinning interval changed"
        );
    }
}

/// Per-camera mailboxes between the ingest threads and the workers.
///
/// Each camera has one slot: at most one frame waiting and one in flight (taken by a worker and
/// not yet handed downstream). Workers serve the camera that has been waiting longest, skipping
/// cameras whose previous frame is still in flight; a camera's next frame is given out only when
/// the worker's [`Turn`] ends, after the result of the previous one is in the detections
/// channel, so the results of one camera leave the pool in the order of their frames.
pub struct Mailboxes {
    state: Mutex<Slots>,
    work: Condvar,
    space: Condvar,
    pace: Pace,
    max_frame_age: std::time::Duration,
    /// Cameras are told [`Mailboxes::overload_interval_seconds`] (see [`Thinning`]).
    thin: std::sync::atomic::AtomicBool,
}

/// What happened to a frame handed to `Mailboxes::put`.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Queued,
    /// Queued, replacing an older frame of the same camera that no worker had taken.
    ReplacedOlder,
    Stopped,
}

/// A worker's turn with one camera, from [`Mailboxes::take`] until the worker has handed the
/// frame's result downstream (or given the frame up). While it lasts no worker gets the
/// camera's next frame. Dropping it releases the camera, also when the worker panics.
#[must_use = "the camera stays busy until its turn is dropped"]
struct Turn<'a> {
    mailboxes: &'a Mailboxes,
    camera: usize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.mailboxes.release(self.camera);
    }
}

impl Mailboxes {
    /// `max_frame_age` bounds latency at realtime pace; replays (fast pace) never drop.
    pub fn new(
        camera_ids: Vec<Arc<str>>,
        pace: Pace,
        max_frame_age: std::time::Duration,
    ) -> Arc<Self> {
        let slots = camera_ids.iter().map(|_| Slot::open()).collect();
        Arc::new(Self {
            state: Mutex::new(Slots {
                slots,
                thinning: Thinning::new(),
                camera_ids,
                stopping: false,
                held: 0,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            pace,
            max_frame_age,
            thin: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// A slot for a camera added by a reload; returns its index.
    pub fn add_camera(&self, id: Arc<str>) -> usize {
        let mut st = self.lock();
        st.slots.push(Slot::open());
        st.camera_ids.push(id);
        st.slots.len() - 1
    }

    /// The models a camera's next frames go through (set at start and by reloads).
    pub fn set_plan(&self, camera: usize, plan: Arc<CameraModels>) {
        if let Some(s) = self.lock().slots.get_mut(camera) {
            s.plan = plan;
        }
    }

    /// Opens a camera's slot again (a reload restarted it).
    pub fn reopen(&self, camera: usize) {
        if let Some(s) = self.lock().slots.get_mut(camera) {
            s.open = true;
        }
    }

    /// Keeps the workers alive while cameras restart; undo with [`Mailboxes::unhold`].
    pub fn hold(&self) {
        self.lock().held += 1;
    }

    pub fn unhold(&self) {
        let mut st = self.lock();
        st.held = st.held.saturating_sub(1);
        drop(st);
        self.work.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panicking worker must not take the whole pool down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers a frame. Realtime pace replaces a waiting frame (counted as dropped, `superseded`);
    /// the camera keeps its place in the queue. Fast pace waits until the camera's mailbox is
    /// empty, so replays lose nothing.
    pub fn put(&self, frame: Frame) -> PutOutcome {
        let cam = frame.camera;
        let mut st = self.lock();
        if cam >= st.slots.len() {
            // No slot (cannot happen: cameras get theirs before they start); never panic.
            return PutOutcome::Stopped;
        }
        if self.pace == Pace::Fast {
            while st.slots[cam].waiting.is_some() && !st.stopping {
                st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        if st.stopping {
            return PutOutcome::Stopped;
        }
        if self.thins() {
            st.offered(cam);
        }
        let slot = &mut st.slots[cam];
        let replaced = match &mut slot.waiting {
            Some((waiting, _since)) => Some(std::mem::replace(waiting, frame)),
            None => {
                let since = frame.received;
                slot.waiting = Some((frame, since));
                None
            }
        };
        let Some(older) = replaced else {
            drop(st);
            self.work.notify_one();
            return PutOutcome::Queued;
        };
        let plan = st.slots[cam].plan.clone();
        drop(st);
        self.work.notify_one();
        Slot::count_drop_of(&plan, &older.camera_id, telemetry::DropReason::Superseded);
        PutOutcome::ReplacedOlder
    }

    /// Realtime pace: whether camera `camera`'s next frame would only replace its frame still
    /// waiting for a worker, while that one is younger than half of `max_frame_age` (an older
    /// one is better replaced, so latency stays bounded). Counted as a `superseded` drop for
    /// each model of the plan, so ingest may drop the frame before scaling and converting it.
    pub fn drop_if_waiting(&self, camera: usize) -> bool {
        let mut st = self.lock();
        if !self.young_frame_waits(&st, camera) {
            return false;
        }
        if self.thins() {
            st.offered(camera);
        }
        let (plan, id) = (st.slots[camera].plan.clone(), st.camera_ids[camera].clone());
        drop(st);
        Slot::count_drop_of(&plan, &id, telemetry::DropReason::Superseded);
        true
    }

    /// Realtime pace: whether camera `camera` is behind, its frame still waiting for a worker
    /// while younger than half of `max_frame_age`, as [`Mailboxes::drop_if_waiting`] asks but
    /// counting nothing. With `[ingest] shed_when_behind`, a camera decoding keyframes only then
    /// leaves its next needed keyframe undecoded (see `ingest::keyframes`). Fast pace (replays
    /// paced by the camera's mailbox): never.
    pub fn behind(&self, camera: usize) -> bool {
        self.young_frame_waits(&self.lock(), camera)
    }

    fn young_frame_waits(&self, st: &Slots, camera: usize) -> bool {
        self.pace == Pace::Realtime
            && st
                .slots
                .get(camera)
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|(waiting, _)| waiting.received.elapsed() < self.max_frame_age / 2)
    }

    /// Under overload, the longest analysis interval, in seconds, of every camera (see
    /// [`Thinning`]); 0: no overload, or thinning is off (`[inference] thin_under_overload`),
    /// or fast pace.
    pub fn overload_interval_seconds(&self) -> f64 {
        if !self.thins() {
            return 0.0;
        }
        self.lock().thinning.interval_seconds
    }

    /// Realtime pace, thinning on.
    fn thins(&self) -> bool {
        self.pace == Pace::Realtime && self.thin.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the cameras are held to [`Mailboxes::overload_interval_seconds`] (on unless
    /// `[inference] thin_under_overload = false`).
    pub fn set_thinning(&self, on: bool) {
        self.thin.store(on, std::sync::atomic::Ordering::Relaxed);
        telemetry::overload_interval(0.0);
    }

    /// A frame was given to a worker (`taken`), or a worker found none: counted for thinning
    /// and, at the end of a window, the interval before and after when it changed.
    fn tick(&self, st: &mut Slots, taken: bool) -> Option<(f64, f64)> {
        if !self.thins() {
            return None;
        }
        st.thinning.taken += u64::from(taken);
        let Slots {
            thinning, slots, ..
        } = st;
        thinning.tick(slots)
    }

    /// The camera will send no more frames (its source ended).
    pub fn close(&self, camera: usize) {
        if let Some(s) = self.lock().slots.get_mut(camera) {
            s.open = false;
        }
        self.work.notify_all();
    }

    /// Every camera has closed its slot and no frame waits or is in flight: the workers end
    /// (or have ended) because there is no more work, not because they failed.
    pub fn drained(&self) -> bool {
        let st = self.lock();
        st.held == 0
            && st
                .slots
                .iter()
                .all(|s| !s.open && s.waiting.is_none() && !s.busy)
    }

    /// Stops the pool: producers return at once, workers exit after their current frame.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.work.notify_all();
        self.space.notify_all();
    }

    /// The waiting frame of the camera that has waited longest among those with no frame in
    /// flight, with that camera's turn; `None` when stopping or when every camera is closed and
    /// drained. At realtime pace a frame older than `max_frame_age` is dropped (`stale`) instead.
    fn take(&self) -> Option<(Frame, Arc<CameraModels>, Turn<'_>)> {
        let mut st = self.lock();
        loop {
            if st.stopping {
                return None;
            }
            let pick = st
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy)
                .filter_map(|(i, s)| s.waiting.as_ref().map(|&(_, since)| (i, since)))
                .min_by_key(|&(_, since)| since)
                .map(|(i, _)| i);
            if let Some((frame, _since)) = pick.and_then(|i| st.slots[i].waiting.take()) {
                let cam = frame.camera;
                if self.pace == Pace::Realtime && frame.received.elapsed() > self.max_frame_age {
                    // Older than the latency bound: analysing it would only delay the next one.
                    let id = st.camera_ids[cam].clone();
                    st.slots[cam].count_drop(&id, telemetry::DropReason::Stale);
                    self.space.notify_all();
                    continue;
                }
                st.slots[cam].busy = true;
                let plan = st.slots[cam].plan.clone();
                let thinned = self.tick(&mut st, true);
                drop(st);
                self.space.notify_all();
                if let Some(change) = thinned {
                    thinning_changed(change);
                }
                return Some((
                    frame,
                    plan,
                    Turn {
                        mailboxes: self,
                        camera: cam,
                    },
                ));
            }
            if st.held == 0
                && st
                    .slots
                    .iter()
                    .all(|s| !s.open && s.waiting.is_none() && !s.busy)
            {
                return None;
            }
            let idle = Instant::now();
            // Timed: with no frame at all the interval must still be let go.
            st = self
                .work
                .wait_timeout(st, IDLE_TICK)
                .map_or_else(|p| p.into_inner().0, |(st, _)| st);
            st.thinning.idle_seconds += idle.elapsed().as_secs_f64();
            if let Some(change) = self.tick(&mut st, false) {
                drop(st);
                thinning_changed(change);
                st = self.lock();
            }
        }
    }

    fn release(&self, camera: usize) {
        if let Some(s) = self.lock().slots.get_mut(camera) {
            s.busy = false;
        }
        // Another worker may be waiting for this camera's next frame, or for the end.
        self.work.notify_all();
    }
}

/// What a worker does with a frame: [`ModelSet`] runs the camera's models, a bare [`Detector`]
/// its one model. The seam lets the pool's tests drive the real workers and mailboxes with a
/// cheap stand-in.
pub trait Analyse: Send + 'static {
    /// Fills `objects` (cleared first) with what the frame shows to the models of `plan`.
    fn analyse(
        &mut self,
        frame: &Frame,
        plan: &CameraModels,
        objects: &mut Vec<Detection>,
    ) -> Result<StageTimes, InferError>;
}

impl Analyse for ModelSet {
    fn analyse(
        &mut self,
        frame: &Frame,
        plan: &CameraModels,
        objects: &mut Vec<Detection>,
    ) -> Result<StageTimes, InferError> {
        ModelSet::analyse(self, frame, plan, objects)
    }
}

impl Analyse for Detector {
    fn analyse(
        &mut self,
        frame: &Frame,
        _plan: &CameraModels,
        objects: &mut Vec<Detection>,
    ) -> Result<StageTimes, InferError> {
        self.detect(
            frame.rgb(),
            frame.width,
            frame.height,
            frame.row_stride,
            objects,
        )
    }
}

/// Counts a worker out of the pool's thinning when it ends.
struct Leaving<'a>(&'a Mailboxes);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.thinning.workers = st.thinning.workers.saturating_sub(1);
    }
}

/// Starts `detectors.len()` workers. They exit when the mailboxes are drained or stopped, or
/// when the downstream channel closes; the sender is dropped with the last of them.
pub fn spawn_workers<A: Analyse>(
    mailboxes: Arc<Mailboxes>,
    detectors: Vec<A>,
    out: Sender<Detections>,
) -> Vec<JoinHandle<()>> {
    spawn_workers_observed(mailboxes, detectors, out, None)
}

/// `spawn_workers`, with every analysed frame also reported to `observer` (benchmarks) once the
/// scenario stage is done with it.
pub fn spawn_workers_observed<A: Analyse>(
    mailboxes: Arc<Mailboxes>,
    detectors: Vec<A>,
    out: Sender<Detections>,
    observer: Option<Sender<FrameRecord>>,
) -> Vec<JoinHandle<()>> {
    detectors
        .into_iter()
        .enumerate()
        .map(|(worker, mut detector)| {
            let mailboxes = mailboxes.clone();
            let out = out.clone();
            let observer = observer.clone();
            std::thread::Builder::new()
                .name(format!("infer-{worker}"))
                .spawn(move || {
                    work(worker, &mailboxes, &mut detector, &out, observer.as_ref());
                    tracing::debug!(worker, "inference worker finished");
                })
                .expect("spawning a thread only fails when the OS is out of resources")
        })
        .collect()
}

/// One worker's loop: take the longest-waiting camera's frame, analyse it, hand the detections
/// downstream, and only then end the camera's turn.
fn work<A: Analyse>(
    worker: usize,
    mailboxes: &Mailboxes,
    detector: &mut A,
    out: &Sender<Detections>,
    observer: Option<&Sender<FrameRecord>>,
) {
    // Reused across frames; handed downstream only by value of a fresh Vec with the same
    // capacity, so steady state allocates one small Vec per frame.
    let mut objects = Vec::with_capacity(64);
    // Each camera's counters, registered on its first frame at this worker.
    let mut counters: std::collections::HashMap<Arc<str>, telemetry::CameraFrameMetrics> =
        std::collections::HashMap::new();
    let stages = telemetry::WorkerStageMetrics::default();
    mailboxes.lock().thinning.workers += 1;
    // However the loop ends (also by a panic in the model): the idle time is shared by the rest.
    let _leaving = Leaving(mailboxes);
    while let Some((frame, plan, turn)) = mailboxes.take() {
        let queue_seconds = frame.received.elapsed().as_secs_f64();
        let times = match detector.analyse(&frame, &plan, &mut objects) {
            Ok(times) => times,
            Err(e) => {
                telemetry::frame_dropped(&frame.camera_id, telemetry::DropReason::InferenceError);
                tracing::warn!(worker, camera = %frame.camera_id, error = %e, "inference failed; frame dropped");
                continue;
            }
        };
        counters
            .entry(frame.camera_id.clone())
            .or_insert_with(|| telemetry::CameraFrameMetrics::new(&frame.camera_id))
            .analysed(times.inference_seconds);
        stages.record(
            queue_seconds,
            times.preprocess_seconds,
            times.inference_seconds,
            times.postprocess_seconds,
        );
        let objects = std::mem::replace(&mut objects, Vec::with_capacity(64));
        let now = Instant::now();
        let probe = Some(DoneProbe {
            received: frame.received,
            handed_at: now,
            observed: observer.map(|o| {
                (
                    FrameRecord {
                        camera: frame.camera,
                        seq: frame.seq,
                        stream_seconds: frame.stream_seconds,
                        received: frame.received,
                        ingest_lag_seconds: frame.lag_seconds,
                        queue_seconds,
                        times,
                        handed_at: now,
                        done_at: now,
                        objects: objects.clone(),
                    },
                    o.clone(),
                )
            }),
        });
        let sent = out.send(Detections {
            frame,
            objects,
            queue_seconds,
            times,
            probe,
        });
        // Only now may a worker take this camera's next frame: its detections cannot overtake
        // these in the channel.
        drop(turn);
        if sent.is_err() {
            break;
        }
    }
}

/// Builds `count` model sets (one session per model each): every worker runs every model.
pub fn build_model_sets(
    env: &ort::environment::Environment,
    models: &[(Arc<super::card::ModelCard>, super::Thresholds)],
    count: usize,
    intra_op_threads: usize,
    merge_iou: f32,
) -> Result<Vec<ModelSet>, InferError> {
    (0..count)
        .map(|_| {
            let detectors = models
                .iter()
                .map(|(card, t)| Detector::new(env, card.clone(), intra_op_threads, *t))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ModelSet::new(detectors, merge_iou))
        })
        .collect()
}

/// Builds `count` detectors (one session each) from the same card.
pub fn build_detectors(
    env: &ort::environment::Environment,
    card: Arc<super::card::ModelCard>,
    count: usize,
    intra_op_threads: usize,
    thresholds: super::Thresholds,
) -> Result<Vec<Detector>, InferError> {
    (0..count)
        .map(|_| Detector::new(env, card.clone(), intra_op_threads, thresholds))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    fn ids(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("cam-{i}"))).collect()
    }

    /// A 2×2 frame of `camera` that arrived at `received`.
    fn frame(camera: usize, seq: u64, received: Instant) -> Frame {
        let mut f = Frame::from_rgb(
            camera,
            Arc::from(format!("cam-{camera}")),
            seq,
            seq as f64,
            2,
            2,
            vec![0; 12],
        )
        .expect("a 2×2 RGB frame");
        f.received = received;
        f
    }

    fn ago(seconds: u64) -> Instant {
        Instant::now()
            .checked_sub(Duration::from_secs(seconds))
            .expect("the monotonic clock has run that long")
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Counts `gridwatch_frames_dropped_total` by (camera, reason), on the thread it is
    /// installed on (`metrics::with_local_recorder`).
    #[derive(Default)]
    struct Drops(Arc<Mutex<HashMap<(String, String), u64>>>);

    struct DropCounter {
        key: (String, String),
        counts: Arc<Mutex<HashMap<(String, String), u64>>>,
    }

    impl metrics::CounterFn for DropCounter {
        fn increment(&self, value: u64) {
            *self
                .counts
                .lock()
                .unwrap()
                .entry(self.key.clone())
                .or_default() += value;
        }

        fn absolute(&self, value: u64) {
            self.counts.lock().unwrap().insert(self.key.clone(), value);
        }
    }

    impl metrics::Recorder for Drops {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            // Per frame: (camera, reason); per model: (camera, "model:outcome").
            let reason = match key.name() {
                telemetry::FRAMES_DROPPED => label("reason"),
                telemetry::MODEL_FRAMES => format!("{}:{}", label("model"), label("outcome")),
                _ => return metrics::Counter::noop(),
            };
            metrics::Counter::from_arc(Arc::new(DropCounter {
                key: (label("camera"), reason),
                counts: self.0.clone(),
            }))
        }

        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    impl Drops {
        fn of(&self, camera: &str, reason: &str) -> u64 {
            let counts = self.0.lock().unwrap();
            counts
                .get(&(camera.to_owned(), reason.to_owned()))
                .copied()
                .unwrap_or(0)
        }
    }

    /// Stands in for the model: takes a little, varying time, fails on every frame whose
    /// sequence number is 3 modulo 7, and counts two workers analysing one camera at once.
    struct StandIn {
        analysing: Arc<Vec<AtomicBool>>,
        overlaps: Arc<AtomicU64>,
        /// Frames that came with another camera's plan.
        wrong_plans: Arc<AtomicU64>,
    }

    impl Analyse for StandIn {
        fn analyse(
            &mut self,
            frame: &Frame,
            plan: &CameraModels,
            objects: &mut Vec<Detection>,
        ) -> Result<StageTimes, InferError> {
            objects.clear();
            if *plan != plan_of(frame.camera) {
                self.wrong_plans.fetch_add(1, Ordering::SeqCst);
            }
            let flag = &self.analysing[frame.camera];
            if flag.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            for _ in 0..fastrand::usize(0..4) {
                std::thread::yield_now();
            }
            flag.store(false, Ordering::SeqCst);
            if frame.seq % 7 == 3 {
                return Err(InferError::Run {
                    model: "stand-in".into(),
                    message: "every seventh frame fails".into(),
                });
            }
            Ok(StageTimes::default())
        }
    }

    fn fails(seq: u64) -> bool {
        seq % 7 == 3
    }

    /// Even cameras run two models, odd ones one.
    fn plan_of(camera: usize) -> CameraModels {
        let ids: Vec<Arc<str>> = ["a", "b"][..2 - camera % 2]
            .iter()
            .map(|&m| Arc::from(m))
            .collect();
        CameraModels::all(&ids)
    }

    struct PoolRun {
        /// Sequence numbers of each camera's detections, in the order they arrived.
        arrived: Vec<Vec<u64>>,
        superseded: u64,
        overlaps: u64,
        wrong_plans: u64,
    }

    /// `frames` frames of each of `cameras` cameras (one producer thread each) through
    /// `workers` real workers with the stand-in, into a detections channel of capacity 1 read
    /// by a consumer that sometimes dawdles, so workers often wait to hand their results over.
    fn run_pool(pace: Pace, cameras: usize, workers: usize, frames: u64) -> PoolRun {
        let mailboxes = Mailboxes::new(ids(cameras), pace, secs(3600));
        let analysing: Arc<Vec<AtomicBool>> =
            Arc::new((0..cameras).map(|_| AtomicBool::new(false)).collect());
        let overlaps = Arc::new(AtomicU64::new(0));
        let wrong_plans = Arc::new(AtomicU64::new(0));
        for cam in 0..cameras {
            mailboxes.set_plan(cam, Arc::new(plan_of(cam)));
        }
        let stand_ins = (0..workers)
            .map(|_| StandIn {
                analysing: analysing.clone(),
                overlaps: overlaps.clone(),
                wrong_plans: wrong_plans.clone(),
            })
            .collect();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let workers = spawn_workers(mailboxes.clone(), stand_ins, tx);
        let producers: Vec<_> = (0..cameras)
            .map(|cam| {
                let mailboxes = mailboxes.clone();
                std::thread::spawn(move || {
                    let mut superseded = 0;
                    for seq in 0..frames {
                        if mailboxes.put(frame(cam, seq, Instant::now()))
                            == PutOutcome::ReplacedOlder
                        {
                            superseded += 1;
                        }
                        if fastrand::u8(..) < 32 {
                            std::thread::yield_now();
                        }
                    }
                    mailboxes.close(cam);
                    superseded
                })
            })
            .collect();
        let mut arrived = vec![Vec::new(); cameras];
        // Ends when the last worker, done with every closed camera, drops its sender. The
        // timeout only turns a hang into a failure.
        loop {
            match rx.recv_timeout(secs(120)) {
                Ok(d) => arrived[d.frame.camera].push(d.frame.seq),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    panic!("the pool stopped delivering: {arrived:?}")
                }
            }
            if fastrand::u8(..) < 64 {
                std::thread::yield_now();
            }
        }
        let superseded = producers.into_iter().map(|p| p.join().unwrap()).sum();
        for w in workers {
            w.join().unwrap();
        }
        PoolRun {
            arrived,
            superseded,
            overlaps: overlaps.load(Ordering::SeqCst),
            wrong_plans: wrong_plans.load(Ordering::SeqCst),
        }
    }

    #[test]
    fn replays_reach_downstream_complete_and_in_frame_order_per_camera() {
        let run = run_pool(Pace::Fast, 4, 8, 400);
        let expected: Vec<u64> = (0..400).filter(|&s| !fails(s)).collect();
        for (cam, seqs) in run.arrived.iter().enumerate() {
            assert_eq!(seqs, &expected, "camera {cam}");
        }
        assert_eq!(run.superseded, 0);
        assert_eq!(
            run.overlaps, 0,
            "a camera was analysed by two workers at once"
        );
        assert_eq!(
            run.wrong_plans, 0,
            "a frame went through another camera's models"
        );
    }

    #[test]
    fn live_frames_reach_downstream_in_frame_order_per_camera() {
        let (cameras, frames) = (4, 400);
        let run = run_pool(Pace::Realtime, cameras, 8, frames);
        let mut delivered = 0;
        for (cam, seqs) in run.arrived.iter().enumerate() {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "camera {cam} out of order: {seqs:?}"
            );
            // The last frame of a camera is never superseded (nor stale: the bound is an hour).
            assert_eq!(seqs.last(), Some(&(frames - 1)), "camera {cam}");
            delivered += seqs.len() as u64;
        }
        assert_eq!(
            run.wrong_plans, 0,
            "a frame went through another camera's models"
        );
        // Every frame was delivered, superseded, or failed in the stand-in.
        let total = cameras as u64 * frames;
        let may_fail = cameras as u64 * (0..frames).filter(|&s| fails(s)).count() as u64;
        assert!(
            delivered + run.superseded <= total && total <= delivered + run.superseded + may_fail,
            "{delivered} delivered, {} superseded of {total}",
            run.superseded
        );
        assert_eq!(
            run.overlaps, 0,
            "a camera was analysed by two workers at once"
        );
    }

    #[test]
    fn drops_are_counted_per_model_of_the_cameras_plan() {
        let drops = Drops::default();
        metrics::with_local_recorder(&drops, || {
            let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(5));
            for cam in 0..2 {
                mb.set_plan(cam, Arc::new(plan_of(cam)));
            }
            let t = Instant::now();
            mb.put(frame(0, 0, t));
            mb.put(frame(0, 1, t));
            mb.put(frame(0, 2, t));
            mb.put(frame(1, 0, t));
            mb.put(frame(1, 1, t));
            let (f, plan, turn) = mb.take().unwrap();
            assert_eq!((f.camera, &*plan), (0, &plan_of(0)));
            drop(turn);
            let (f, plan, turn) = mb.take().unwrap();
            assert_eq!((f.camera, &*plan), (1, &plan_of(1)));
            drop(turn);
            // Too old when a worker gets to it.
            mb.put(frame(0, 3, ago(10)));
            mb.close(0);
            mb.close(1);
            assert!(mb.take().is_none());
        });
        assert_eq!(drops.of("cam-0", "superseded"), 2);
        assert_eq!(drops.of("cam-0", "a:superseded"), 2);
        assert_eq!(drops.of("cam-0", "b:superseded"), 2);
        assert_eq!(drops.of("cam-1", "a:superseded"), 1);
        assert_eq!(
            drops.of("cam-1", "b:superseded"),
            0,
            "camera 1 does not run b"
        );
        assert_eq!(drops.of("cam-0", "stale"), 1);
        assert_eq!(drops.of("cam-0", "a:stale"), 1);
        assert_eq!(drops.of("cam-0", "b:stale"), 1);
    }

    #[test]
    fn a_newer_frame_supersedes_the_waiting_one_and_is_counted() {
        let drops = Drops::default();
        metrics::with_local_recorder(&drops, || {
            let mb = Mailboxes::new(ids(1), Pace::Realtime, secs(3600));
            let t = ago(10);
            assert_eq!(mb.put(frame(0, 0, t)), PutOutcome::Queued);
            assert_eq!(mb.put(frame(0, 1, t + secs(1))), PutOutcome::ReplacedOlder);
            assert_eq!(mb.put(frame(0, 2, t + secs(2))), PutOutcome::ReplacedOlder);
            let (f, _, turn) = mb.take().unwrap();
            assert_eq!(f.seq, 2, "the newest frame is analysed");
            // One frame may wait while another of the camera is in flight: it replaces nothing.
            assert_eq!(mb.put(frame(0, 3, t + secs(3))), PutOutcome::Queued);
            drop(turn);
            assert_eq!(mb.take().map(|(f, _, _)| f.seq), Some(3));
        });
        assert_eq!(drops.of("cam-0", "superseded"), 2);
        assert_eq!(drops.of("cam-0", "stale"), 0);
    }

    #[test]
    fn a_frame_that_would_replace_a_young_waiting_one_is_dropped_early_and_counted() {
        let drops = Drops::default();
        metrics::with_local_recorder(&drops, || {
            let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(10));
            for cam in 0..2 {
                mb.set_plan(cam, Arc::new(plan_of(cam)));
            }
            assert!(!mb.drop_if_waiting(0), "nothing waits");
            mb.put(frame(0, 0, Instant::now()));
            assert!(
                mb.drop_if_waiting(0),
                "a young frame waits: drop the next one"
            );
            assert!(!mb.drop_if_waiting(1), "another camera's slot is its own");
            let (f, _, turn) = mb.take().unwrap();
            assert_eq!(f.seq, 0);
            assert!(!mb.drop_if_waiting(0), "in flight, none waiting");
            drop(turn);
            // A waiting frame older than half the bound is better replaced by a fresh one.
            mb.put(frame(0, 1, ago(6)));
            assert!(!mb.drop_if_waiting(0));
        });
        assert_eq!(drops.of("cam-0", "superseded"), 1);
        assert_eq!(drops.of("cam-0", "a:superseded"), 1);
        assert_eq!(drops.of("cam-0", "b:superseded"), 1);
        assert_eq!(drops.of("cam-1", "superseded"), 0);
        // Replays lose nothing.
        let mb = Mailboxes::new(ids(1), Pace::Fast, secs(10));
        mb.put(frame(0, 0, Instant::now()));
        assert!(!mb.drop_if_waiting(0));
    }

    #[test]
    fn a_frame_older_than_the_bound_is_dropped_as_stale_and_counted() {
        let drops = Drops::default();
        metrics::with_local_recorder(&drops, || {
            let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(60));
            mb.put(frame(0, 7, ago(120)));
            mb.put(frame(1, 3, Instant::now()));
            let (f, _, turn) = mb.take().unwrap();
            assert_eq!((f.camera, f.seq), (1, 3), "the stale frame is skipped");
            mb.close(0);
            mb.close(1);
            drop(turn);
            assert!(
                mb.take().is_none(),
                "nothing is left once the stale frame is gone"
            );
        });
        assert_eq!(drops.of("cam-0", "stale"), 1);
        assert_eq!(drops.of("cam-1", "stale"), 0);
        assert_eq!(drops.of("cam-0", "superseded"), 0);
    }

    #[test]
    fn a_camera_is_behind_while_its_young_frame_waits_and_replays_never_are() {
        let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(20));
        assert!(!mb.behind(0), "nothing waits");
        mb.put(frame(0, 0, ago(5)));
        assert!(mb.behind(0), "a frame of 5 s waits (bound 20 s)");
        assert!(!mb.behind(1), "only the camera whose frame waits");
        mb.put(frame(0, 1, ago(15)));
        assert!(
            !mb.behind(0),
            "the waiting frame is past half the bound: better replaced"
        );
        mb.put(frame(0, 2, Instant::now()));
        drop(mb.take());
        assert!(!mb.behind(0), "taken");
        assert!(!mb.behind(7), "no such camera");
        let replay = Mailboxes::new(ids(1), Pace::Fast, secs(20));
        replay.put(frame(0, 0, Instant::now()));
        assert!(!replay.behind(0));
    }

    #[test]
    fn replays_never_drop_stale_frames() {
        let drops = Drops::default();
        metrics::with_local_recorder(&drops, || {
            let mb = Mailboxes::new(ids(1), Pace::Fast, secs(60));
            mb.put(frame(0, 7, ago(120)));
            assert_eq!(mb.take().map(|(f, _, _)| f.seq), Some(7));
        });
        assert_eq!(drops.of("cam-0", "stale"), 0);
    }

    #[test]
    fn the_camera_waiting_longest_is_served_first_and_keeps_its_place_when_its_frame_is_replaced() {
        let mb = Mailboxes::new(ids(3), Pace::Realtime, secs(3600));
        let t = ago(100);
        mb.put(frame(1, 0, t + secs(1)));
        mb.put(frame(0, 0, t + secs(2)));
        mb.put(frame(2, 0, t + secs(3)));
        // Camera 1 has been waiting since t + 1 s; a newer frame does not send it to the back.
        mb.put(frame(1, 1, t + secs(4)));
        let served: Vec<(usize, u64)> = (0..3)
            .map(|_| mb.take().map(|(f, _, _turn)| (f.camera, f.seq)).unwrap())
            .collect();
        assert_eq!(served, vec![(1, 1), (0, 0), (2, 0)]);
    }

    #[test]
    fn cameras_sending_at_one_rate_to_a_saturated_pool_are_served_in_turn() {
        // Before every pick each camera has sent a newer frame, camera c always c ms after
        // camera 0: serving the oldest frame would serve camera 0 alone.
        let mb = Mailboxes::new(ids(4), Pace::Realtime, secs(3600));
        let t = ago(1000);
        let mut served = Vec::new();
        for step in 0..40u64 {
            for cam in 0..4 {
                mb.put(frame(
                    cam,
                    step,
                    t + secs(step) + Duration::from_millis(cam as u64),
                ));
            }
            let (f, _, _turn) = mb.take().unwrap();
            served.push(f.camera);
        }
        for round in served.chunks(4) {
            let mut round = round.to_vec();
            round.sort_unstable();
            assert_eq!(round, vec![0, 1, 2, 3], "served: {served:?}");
        }
    }

    #[test]
    fn a_camera_with_a_frame_in_flight_is_skipped_until_its_turn_ends() {
        let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(3600));
        let t = ago(100);
        mb.put(frame(0, 0, t));
        let (first, _, turn) = mb.take().unwrap();
        assert_eq!((first.camera, first.seq), (0, 0));
        // Camera 0's next frame waits longer than camera 1's, but camera 0 is still in flight.
        mb.put(frame(0, 1, t + secs(1)));
        mb.put(frame(1, 0, t + secs(2)));
        let (other, _, other_turn) = mb.take().unwrap();
        assert_eq!((other.camera, other.seq), (1, 0));
        drop(turn);
        let (next, _, _turn) = mb.take().unwrap();
        assert_eq!((next.camera, next.seq), (0, 1));
        drop(other_turn);
    }

    /// One thinning window of four cameras: camera c offers `offers[c]` frames, then a worker
    /// takes one frame of each, the window (4 s) ending before the last take, the workers
    /// having waited for frames `idle` of it; the interval after it.
    fn thinning_window(mb: &Mailboxes, offers: [u64; 4], idle: f64) -> f64 {
        for (cam, &n) in offers.iter().enumerate() {
            for seq in 0..n {
                mb.put(frame(cam, seq, Instant::now()));
            }
        }
        for last in [false, false, false, true] {
            if last {
                let mut st = mb.lock();
                st.thinning.since = ago(4);
                st.thinning.idle_seconds = idle * 4.0;
            }
            let (_frame, _plan, _turn) = mb.take().unwrap();
        }
        mb.overload_interval_seconds()
    }

    #[test]
    fn cameras_are_held_to_an_interval_while_more_is_offered_than_taken_and_let_go_after() {
        let mb = Mailboxes::new(ids(4), Pace::Realtime, secs(3600));
        assert_eq!(mb.overload_interval_seconds(), 0.0);
        // Three frames offered per frame taken, the workers never waiting: one window is a burst
        // (cameras starting); from the second, held, longer each window while it lasts.
        assert_eq!(thinning_window(&mb, [3; 4], 0.0), 0.0);
        let first = thinning_window(&mb, [3; 4], 0.0);
        let second = thinning_window(&mb, [3; 4], 0.0);
        assert!(first > 0.0 && second > first, "{first} then {second}");
        // About the aimed-at surplus (5 offered per 4 taken), or every frame taken while the
        // workers never wait: the interval stays.
        assert_eq!(thinning_window(&mb, [2, 1, 1, 1], 0.0), second);
        assert_eq!(thinning_window(&mb, [1; 4], 0.0), second);
        // Frames dropped, yet the workers waited a fifth of the time (offers in bursts): held
        // back too much.
        let bursty = thinning_window(&mb, [3; 4], 0.2);
        assert!(bursty < second, "{bursty} after {second}");
        // The workers wait and every frame offered is taken: let go within windows.
        let mut intervals = vec![bursty];
        while *intervals.last().unwrap() > 0.0 && intervals.len() < 20 {
            intervals.push(thinning_window(&mb, [1; 4], 0.5));
        }
        assert!(
            intervals.windows(2).all(|w| w[1] < w[0]) && *intervals.last().unwrap() == 0.0,
            "{intervals:?}"
        );
    }

    #[test]
    fn replays_and_a_pool_told_not_to_thin_hold_no_camera() {
        let off = Mailboxes::new(ids(4), Pace::Realtime, secs(3600));
        off.set_thinning(false);
        for _ in 0..3 {
            assert_eq!(thinning_window(&off, [3; 4], 0.0), 0.0);
        }
        // Not even computed (nor logged, nor exported).
        assert_eq!(off.lock().thinning.interval_seconds, 0.0);
        // Replays: a camera waits for its mailbox to empty, so offer one frame each.
        let replay = Mailboxes::new(ids(4), Pace::Fast, secs(3600));
        assert_eq!(thinning_window(&replay, [1; 4], 0.0), 0.0);
        assert_eq!(replay.lock().thinning.offered, 0);
    }

    #[test]
    fn a_held_pool_that_gets_no_frame_at_all_lets_its_cameras_go() {
        let mb = Mailboxes::new(ids(2), Pace::Realtime, secs(3600));
        {
            let mut st = mb.lock();
            st.thinning.interval_seconds = 10.0;
            st.thinning.since = ago(4);
        }
        // A worker waits for a frame that never comes: its timed wait ends the window, idle.
        let waiting = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.take().map(|(frame, _, _turn)| frame.seq))
        };
        let start = Instant::now();
        while mb.overload_interval_seconds() == 10.0 && start.elapsed() < secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let after = mb.overload_interval_seconds();
        mb.stop();
        assert_eq!(waiting.join().unwrap(), None);
        assert!(after < 10.0, "still held to {after} s with no frame");
    }
}
