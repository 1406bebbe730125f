//! The inference worker pool: one mailbox of one frame per camera, N worker threads each owning
//! a `Detector`, serving the camera whose frame has waited longest. Memory stays bounded: at
//! most one waiting and one in-flight frame per camera.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

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

/// What one analysed frame went through, for `gridwatch bench`: when it arrived from its
/// pipeline, how long each stage took, and when the scenario stage was done with it.
#[derive(Debug, Clone)]
pub struct FrameRecord {
    pub camera: usize,
    pub seq: u64,
    pub stream_seconds: f64,
    /// When the appsink handed the frame over (the bench's "capture" for replayed files).
    pub received: std::time::Instant,
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

#[derive(Default)]
struct Slot {
    frame: Option<Frame>,
    busy: bool,
    open: bool,
}

struct Slots {
    slots: Vec<Slot>,
    /// Camera ids by slot, for metric labels (grows when a reload adds cameras).
    camera_ids: Vec<Arc<str>>,
    stopping: bool,
    /// While a reload restarts cameras, every slot may be closed for a moment: the workers must
    /// not take that for the end of the run.
    held: usize,
}

/// Per-camera mailboxes between the ingest threads and the workers.
pub struct Mailboxes {
    state: Mutex<Slots>,
    work: Condvar,
    space: Condvar,
    pace: Pace,
    max_frame_age: std::time::Duration,
}

/// What happened to a frame handed to `Mailboxes::put`.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Queued,
    /// Queued, replacing an older frame of the same camera that no worker had taken.
    ReplacedOlder,
    Stopped,
}

impl Mailboxes {
    /// `max_frame_age` bounds latency at realtime pace; replays (fast pace) never drop.
    pub fn new(
        camera_ids: Vec<Arc<str>>,
        pace: Pace,
        max_frame_age: std::time::Duration,
    ) -> Arc<Self> {
        let slots = camera_ids
            .iter()
            .map(|_| Slot {
                open: true,
                ..Slot::default()
            })
            .collect();
        Arc::new(Self {
            state: Mutex::new(Slots {
                slots,
                camera_ids,
                stopping: false,
                held: 0,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            pace,
            max_frame_age,
        })
    }

    /// A slot for a camera added by a reload; returns its index.
    pub fn add_camera(&self, id: Arc<str>) -> usize {
        let mut st = self.lock();
        st.slots.push(Slot {
            open: true,
            ..Slot::default()
        });
        st.camera_ids.push(id);
        st.slots.len() - 1
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
    /// fast pace waits until the camera's mailbox is empty, so replays lose nothing.
    pub fn put(&self, frame: Frame) -> PutOutcome {
        let cam = frame.camera;
        let mut st = self.lock();
        if cam >= st.slots.len() {
            // No slot (cannot happen: cameras get theirs before they start); never panic.
            return PutOutcome::Stopped;
        }
        if self.pace == Pace::Fast {
            while st.slots[cam].frame.is_some() && !st.stopping {
                st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        if st.stopping {
            return PutOutcome::Stopped;
        }
        let replaced = st.slots[cam].frame.replace(frame).is_some();
        let id = st.camera_ids[cam].clone();
        drop(st);
        self.work.notify_one();
        if replaced {
            telemetry::frame_dropped(&id, telemetry::DropReason::Superseded);
            PutOutcome::ReplacedOlder
        } else {
            PutOutcome::Queued
        }
    }

    /// The camera will send no more frames (its source ended).
    pub fn close(&self, camera: usize) {
        if let Some(s) = self.lock().slots.get_mut(camera) {
            s.open = false;
        }
        self.work.notify_all();
    }

    /// Stops the pool: producers return at once, workers exit after their current frame.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.work.notify_all();
        self.space.notify_all();
    }

    /// The oldest waiting frame of a camera not already being processed; `None` when stopping or
    /// when every camera is closed and drained.
    fn take(&self) -> Option<Frame> {
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
                .filter_map(|(i, s)| s.frame.as_ref().map(|f| (i, f.received)))
                .min_by_key(|&(_, received)| received)
                .map(|(i, _)| i);
            if let Some(i) = pick {
                let frame = st.slots[i].frame.take();
                let stale = self.pace == Pace::Realtime
                    && frame
                        .as_ref()
                        .is_some_and(|f| f.received.elapsed() > self.max_frame_age);
                if stale {
                    // Older than the latency bound: analysing it would only delay the next one.
                    telemetry::frame_dropped(&st.camera_ids[i], telemetry::DropReason::Stale);
                    self.space.notify_all();
                    continue;
                }
                st.slots[i].busy = true;
                drop(st);
                self.space.notify_all();
                return frame;
            }
            if st.held == 0
                && st
                    .slots
                    .iter()
                    .all(|s| !s.open && s.frame.is_none() && !s.busy)
            {
                return None;
            }
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
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

/// Starts `detectors.len()` workers. They exit when the mailboxes are drained or stopped, or
/// when the downstream channel closes; the sender is dropped with the last of them.
pub fn spawn_workers(
    mailboxes: Arc<Mailboxes>,
    detectors: Vec<Detector>,
    out: Sender<Detections>,
) -> Vec<JoinHandle<()>> {
    spawn_workers_observed(mailboxes, detectors, out, None)
}

/// `spawn_workers`, with every analysed frame also reported to `observer` (benchmarks) once the
/// scenario stage is done with it.
pub fn spawn_workers_observed(
    mailboxes: Arc<Mailboxes>,
    detectors: Vec<Detector>,
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
                    // Reused across frames; handed downstream only by value of a fresh Vec with
                    // the same capacity, so steady state allocates one small Vec per frame.
                    let mut objects = Vec::with_capacity(64);
                    while let Some(frame) = mailboxes.take() {
                        let camera = frame.camera;
                        let queue_seconds = frame.received.elapsed().as_secs_f64();
                        let result = detector.detect(frame.rgb(), frame.width, frame.height, frame.row_stride, &mut objects);
                        mailboxes.release(camera);
                        match result {
                            Ok(times) => {
                                telemetry::frame_analysed(&frame.camera_id, times.inference_seconds);
                                telemetry::stage_seconds("queue", queue_seconds);
                                telemetry::stage_seconds("preprocess", times.preprocess_seconds);
                                telemetry::stage_seconds("inference", times.inference_seconds);
                                telemetry::stage_seconds("postprocess", times.postprocess_seconds);
                                let objects = std::mem::replace(&mut objects, Vec::with_capacity(64));
                                let now = std::time::Instant::now();
                                let probe = Some(DoneProbe {
                                    received: frame.received,
                                    handed_at: now,
                                    observed: observer.as_ref().map(|o| {
                                        (
                                            FrameRecord {
                                                camera,
                                                seq: frame.seq,
                                                stream_seconds: frame.stream_seconds,
                                                received: frame.received,
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
                                if out.send(Detections { frame, objects, queue_seconds, times, probe }).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                telemetry::frame_dropped(&frame.camera_id, telemetry::DropReason::InferenceError);
                                tracing::warn!(worker, camera = %frame.camera_id, error = %e, "inference failed; frame dropped");
                            }
                        }
                    }
                    tracing::debug!(worker, "inference worker finished");
                })
                .expect("spawning a thread only fails when the OS is out of resources")
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
