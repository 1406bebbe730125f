//! Metrics and logs: the one place that names every counter, gauge and histogram (with its HELP
//! text and unit in [`FAMILIES`]), and sets up `tracing` output. Metrics are exported in
//! Prometheus text format.

use std::sync::OnceLock;

use metrics::{KeyName, SharedString, Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The `[telemetry]` section.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Serve Prometheus `/metrics` and `/healthz` on this address, e.g. "127.0.0.1:9464".
    pub metrics_listen: Option<String>,
}

impl TelemetrySettings {
    /// Format checks: (field below `telemetry`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        match &self.metrics_listen {
            Some(l) if l.parse::<std::net::SocketAddr>().is_err() => vec![(
                "metrics_listen".into(),
                format!("not an address:port: `{l}`"),
            )],
            _ => Vec::new(),
        }
    }
}

pub const FRAMES_ANALYSED: &str = "gridwatch_frames_analysed_total";
pub const FRAMES_DROPPED: &str = "gridwatch_frames_dropped_total";
pub const INFERENCE_SECONDS: &str = "gridwatch_inference_seconds";
pub const MODEL_FRAMES: &str = "gridwatch_model_frames_total";
pub const MODEL_INFERENCE_SECONDS: &str = "gridwatch_model_inference_seconds";
pub const CAMERA_RESTARTS: &str = "gridwatch_camera_restarts_total";
pub const CAMERA_STATE: &str = "gridwatch_camera_state";
pub const CAMERA_STATE_CHANGES: &str = "gridwatch_camera_state_changes_total";
pub const CAMERA_FRAME_AGE_SECONDS: &str = "gridwatch_camera_last_frame_age_seconds";
pub const FRAMES_GATED: &str = "gridwatch_frames_gated_total";
pub const UNITS_NOT_DECODED: &str = "gridwatch_encoded_units_not_decoded_total";
pub const STAGE_SECONDS: &str = "gridwatch_stage_seconds";
pub const EVENTS: &str = "gridwatch_events_total";
pub const FIRE_BASELINE_ERRORS: &str = "gridwatch_fire_baseline_errors_total";
pub const CASES_STORED: &str = "gridwatch_cases_stored_total";
pub const DELIVERIES: &str = "gridwatch_deliveries_total";
/// Case statuses the platforms reported back (first receipt of each event).
pub const PLATFORM_STATUSES: &str = "gridwatch_platform_statuses_total";
/// Status polls and webhook calls that failed or were refused.
pub const PLATFORM_STATUS_ERRORS: &str = "gridwatch_platform_status_errors_total";
/// Update deliveries (verified, reopened, reminder, …) by target, kind and outcome.
pub const UPDATE_DELIVERIES: &str = "gridwatch_update_deliveries_total";
/// Camera re-checks decided (passed, failed) and updates queued by the 103060 clock.
pub const VERIFICATIONS: &str = "gridwatch_verifications_total";
pub const DEADLINE_UPDATES: &str = "gridwatch_deadline_updates_total";
/// Cases stored that no dispatch target's routes take (kept in the outbox as `unrouted`).
pub const CASES_UNROUTED: &str = "gridwatch_cases_unrouted_total";
/// Object suppressions learned from repeated rejections of one object at one place.
pub const OBJECT_SUPPRESSIONS_LEARNED: &str = "gridwatch_review_object_suppressions_learned_total";
/// Events whose case could not be rendered (kept in the outbox's `unrendered` table).
pub const CASES_UNRENDERED: &str = "gridwatch_cases_unrendered_total";
pub const DELIVERY_RETRIES: &str = "gridwatch_delivery_retries_total";
pub const DELIVERY_SECONDS: &str = "gridwatch_delivery_request_seconds";
pub const OUTBOX_PENDING: &str = "gridwatch_outbox_pending";
pub const OUTBOX_OLDEST_PENDING_AGE_SECONDS: &str = "gridwatch_outbox_oldest_pending_age_seconds";
pub const OUTBOX_DEAD_LETTERS: &str = "gridwatch_outbox_dead_letters";
/// Delivered and rejected cases deleted after `[cases] retention_days`.
pub const OUTBOX_PURGED: &str = "gridwatch_outbox_purged_cases_total";
pub const CAMERA_SAMPLES_FAILED: &str = "gridwatch_camera_samples_failed_total";
pub const REPORTS_WRITTEN: &str = "gridwatch_reports_written_total";
pub const REPORTS_FAILED: &str = "gridwatch_reports_failed_total";
/// 0 closed, 1 open, 2 half-open.
pub const DISPATCH_BREAKER_STATE: &str = "gridwatch_dispatch_breaker_state";
pub const DISPATCH_BREAKER_OPENS: &str = "gridwatch_dispatch_breaker_opens_total";
/// Appsink hand-over → the scenario stage done with the frame.
pub const FRAME_LATENCY_SECONDS: &str = "gridwatch_frame_latency_seconds";
/// How late frames reach the appsink behind their time on the pipeline clock.
pub const INGEST_LAG_SECONDS: &str = "gridwatch_ingest_lag_seconds";
/// Cases in the outbox by scenario and delivery state (`pending`, `delivered`, `dead`), read from
/// the outbox when `/metrics` is scraped.
pub const OUTBOX_CASES: &str = "gridwatch_outbox_cases";
/// Cases waiting for a reviewer.
pub const REVIEW_QUEUE_DEPTH: &str = "gridwatch_review_queue_depth";
/// Under overload, the analysis interval every camera is held to (0: none).
pub const OVERLOAD_INTERVAL_SECONDS: &str = "gridwatch_overload_analysis_interval_seconds";
/// Reviewers' decisions, by `decision` (confirmed, rejected).
pub const REVIEW_DECISIONS: &str = "gridwatch_review_decisions_total";
/// Events dropped because a reviewer suppressed their camera + zone + scenario.
pub const EVENTS_SUPPRESSED: &str = "gridwatch_events_suppressed_total";
/// Held cases dispatched unreviewed after `review_timeout_minutes`.
pub const REVIEW_RELEASED: &str = "gridwatch_review_released_unreviewed_total";
/// Events below their scenario's `review_score`: counted, never stored.
pub const REVIEW_BELOW_THRESHOLD: &str = "gridwatch_review_below_threshold_total";
/// Cluster mode: camera groups this node owns (holds the etcd key of).
pub const CLUSTER_GROUPS_OWNED: &str = "gridwatch_cluster_groups_owned";
/// Cluster mode: live nodes in the member list (this node's view).
pub const CLUSTER_NODES: &str = "gridwatch_cluster_nodes";
/// 1 while this node's lease is valid (with the fence margin), else 0.
pub const CLUSTER_LEASE_VALID: &str = "gridwatch_cluster_lease_valid";
/// Groups this node started analysing.
pub const CLUSTER_GROUPS_ACQUIRED: &str = "gridwatch_cluster_groups_acquired_total";
/// Groups this node gave up, by `reason` (rebalance, lease_lost, key_lost, shutdown).
pub const CLUSTER_GROUPS_RELEASED: &str = "gridwatch_cluster_groups_released_total";
/// Times this node's lease could not be renewed in time (it stopped analysing everything).
pub const CLUSTER_LEASE_LOST: &str = "gridwatch_cluster_lease_lost_total";
/// etcd requests that failed or timed out, by `op`; retried on the next tick.
pub const CLUSTER_ETCD_ERRORS: &str = "gridwatch_cluster_etcd_errors_total";
/// Events decided after the group left this node: not committed (its new owner analyses it).
pub const CLUSTER_FENCED_EVENTS: &str = "gridwatch_cluster_fenced_events_total";

/// Live-wall viewers dropped by the server, by camera and `reason` (reset: the stream's format
/// changed under them).
pub const LIVE_VIEWERS_DROPPED: &str = "gridwatch_live_viewers_dropped_total";
/// Live-wall viewers connected now, by camera.
pub const LIVE_VIEWERS: &str = "gridwatch_live_viewers";
/// Live-wall messages not sent to a viewer whose queue was full, by camera and `what`.
pub const LIVE_MESSAGES_DROPPED: &str = "gridwatch_live_messages_dropped_total";
/// Times a slow live viewer was cut forward to the next keyframe, by camera.
pub const LIVE_VIEWER_CUTS: &str = "gridwatch_live_viewer_cuts_total";
/// Case evidence at full resolution, by `outcome` (decoded, failed, unavailable).
pub const FULL_RESOLUTION_EVIDENCE: &str = "gridwatch_full_resolution_evidence_total";
/// Cases reported by staff from the live wall, by scenario.
pub const STAFF_REPORTS: &str = "gridwatch_staff_reports_total";

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Exported as a Prometheus summary (quantiles, `_sum`, `_count`).
    Histogram,
}

/// One metric family: its name, kind, unit and the `# HELP` text Prometheus shows.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// `None` for gauges that encode a state (0/1, an enumeration).
    pub unit: Option<Unit>,
    pub help: &'static str,
}

impl Family {
    const fn counter(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind: Kind::Counter,
            unit: Some(Unit::Count),
            help,
        }
    }

    const fn gauge(name: &'static str, unit: Option<Unit>, help: &'static str) -> Self {
        Family {
            name,
            kind: Kind::Gauge,
            unit,
            help,
        }
    }

    /// Every histogram measures seconds.
    const fn histogram(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind: Kind::Histogram,
            unit: Some(Unit::Seconds),
            help,
        }
    }
}

/// Every family above, described to the recorder once when it is installed ([`prometheus`]).
pub const FAMILIES: &[Family] = &[
    Family::counter(
        REPORTS_WRITTEN,
        "Scheduled report files written ([reports] dir).",
    ),
    Family::counter(
        REPORTS_FAILED,
        "Scheduled report runs that failed (retried a minute later).",
    ),
    Family::counter(
        CAMERA_SAMPLES_FAILED,
        "Times the supervisor could not store the cameras' health samples (reports' uptime, stalls, reconnects).",
    ),
    Family::counter(
        OUTBOX_PURGED,
        "Finished cases (delivered to every target, or rejected) deleted from the outbox after [cases] retention_days.",
    ),
    Family::counter(
        FRAMES_ANALYSED,
        "Frames the detection model analysed, by camera.",
    ),
    Family::counter(
        FRAMES_DROPPED,
        "Frames dropped before analysis, by camera and reason (superseded, stale, inference_error, fenced).",
    ),
    Family::histogram(
        INFERENCE_SECONDS,
        "Model inference time per analysed frame (every model the camera runs).",
    ),
    Family::counter(
        MODEL_FRAMES,
        "Frames per model a camera runs, by camera, model and outcome (analysed, superseded, stale, inference_error).",
    ),
    Family::histogram(
        MODEL_INFERENCE_SECONDS,
        "Inference time of one model on one frame, by model.",
    ),
    Family::counter(
        CAMERA_RESTARTS,
        "Camera pipeline restarts, by camera and cause (error, stall).",
    ),
    Family::gauge(
        CAMERA_STATE,
        None,
        "1 for the camera's current ingest state, 0 for a state it left, by camera and state.",
    ),
    Family::counter(
        CAMERA_STATE_CHANGES,
        "Camera ingest state changes, by camera and the state entered (to).",
    ),
    Family::gauge(
        CAMERA_FRAME_AGE_SECONDS,
        Some(Unit::Seconds),
        "Time since the camera's last decoded frame, by camera (refreshed when /metrics is scraped).",
    ),
    Family::counter(
        UNITS_NOT_DECODED,
        "Encoded units dropped before the decoder, by camera and reason (keyframes_only, gop_tail: no analysed frame needs them; overload: a needed keyframe not decoded while the camera's frame still waits for the model; late: a needed keyframe and its group of pictures, or the rest of a group once a delta, reached the decoder later than `[ingest] max_decode_lag_ms` beyond the usual).",
    ),
    Family::counter(
        FRAMES_GATED,
        "Motion gate decisions, by camera and decision (motion, periodic, skipped_no_motion, not_due: no zone due at this frame).",
    ),
    Family::histogram(
        STAGE_SECONDS,
        "Time per analysed frame in a stage (queue, preprocess, inference, postprocess, rules).",
    ),
    Family::counter(EVENTS, "Scenario events fired by the rules, by scenario."),
    Family::counter(
        FIRE_BASELINE_ERRORS,
        "Frames on which the classical fire/smoke detector failed, by camera.",
    ),
    Family::counter(CASES_STORED, "Cases written to the outbox, by scenario."),
    Family::counter(
        DELIVERIES,
        "Delivery attempts, by target and outcome (delivered, dead_letter, retry).",
    ),
    Family::counter(
        PLATFORM_STATUSES,
        "Case statuses reported back by a platform (each event once), by target and status.",
    ),
    Family::counter(
        PLATFORM_STATUS_ERRORS,
        "Status polls that failed and webhook calls refused (bad signature, stale, malformed), by target and reason.",
    ),
    Family::counter(
        UPDATE_DELIVERIES,
        "Case update delivery attempts, by target, kind and outcome (delivered, dead_letter, retry).",
    ),
    Family::counter(
        VERIFICATIONS,
        "Camera re-checks after the platform reported a case handled, by outcome (passed, failed).",
    ),
    Family::counter(
        DEADLINE_UPDATES,
        "103060 reminders and escalations queued, by kind.",
    ),
    Family::counter(
        OBJECT_SUPPRESSIONS_LEARNED,
        "Objects suppressed at their place after repeated rejections there ([review] object_suppression_after_rejections), by scenario.",
    ),
    Family::counter(
        CASES_UNRENDERED,
        "Events whose case could not be rendered (evidence or JSON failed), kept with the reason in the outbox's unrendered table, by scenario.",
    ),
    Family::counter(
        CASES_UNROUTED,
        "Cases stored that no dispatch target's routes take (kept as unrouted), by scenario.",
    ),
    Family::counter(
        DELIVERY_RETRIES,
        "Delivery attempts that will be retried, by target.",
    ),
    Family::histogram(
        DELIVERY_SECONDS,
        "Duration of one delivery request, by target.",
    ),
    Family::gauge(
        OUTBOX_PENDING,
        Some(Unit::Count),
        "Deliveries still owed to the target (outbox depth), by target.",
    ),
    Family::gauge(
        OUTBOX_OLDEST_PENDING_AGE_SECONDS,
        Some(Unit::Seconds),
        "Age of the target's oldest undelivered case (0 when none), by target.",
    ),
    Family::gauge(
        OUTBOX_DEAD_LETTERS,
        Some(Unit::Count),
        "Cases the target will not get (dead letters), by target.",
    ),
    Family::gauge(
        DISPATCH_BREAKER_STATE,
        None,
        "The target's circuit breaker: 0 closed, 1 open, 2 half-open.",
    ),
    Family::counter(
        DISPATCH_BREAKER_OPENS,
        "Times the target's circuit breaker opened, by target.",
    ),
    Family::histogram(
        FRAME_LATENCY_SECONDS,
        "Appsink hand-over to rules evaluated, per analysed frame.",
    ),
    Family::histogram(
        INGEST_LAG_SECONDS,
        "How late each frame reached the appsink behind its time on the pipeline clock: decoding behind real time, and a live source's own latency (an RTSP jitter buffer); 0 for a replay's frame on time.",
    ),
    Family::gauge(
        OUTBOX_CASES,
        Some(Unit::Count),
        "Cases in the outbox, by scenario and delivery state (pending, delivered, dead); read when /metrics is scraped.",
    ),
    Family::gauge(
        OVERLOAD_INTERVAL_SECONDS,
        Some(Unit::Seconds),
        "Under overload, the longest analysis interval of every camera: a camera analysing more often decodes and offers frames only at this interval, so the frames the model cannot take are not decoded (0: no overload).",
    ),
    Family::gauge(
        REVIEW_QUEUE_DEPTH,
        Some(Unit::Count),
        "Cases waiting for a reviewer.",
    ),
    Family::counter(
        REVIEW_DECISIONS,
        "Reviewers' decisions, by decision (confirmed, rejected).",
    ),
    Family::counter(
        EVENTS_SUPPRESSED,
        "Events dropped because a reviewer suppressed their camera, zone and scenario, by scenario.",
    ),
    Family::counter(
        REVIEW_RELEASED,
        "Held cases dispatched unreviewed after review_timeout_minutes.",
    ),
    Family::counter(
        REVIEW_BELOW_THRESHOLD,
        "Events below their scenario's review_score: counted, not stored, by scenario.",
    ),
    Family::gauge(
        CLUSTER_GROUPS_OWNED,
        Some(Unit::Count),
        "Cluster mode: camera groups this node owns.",
    ),
    Family::gauge(
        CLUSTER_NODES,
        Some(Unit::Count),
        "Cluster mode: live nodes in the member list, as this node sees it.",
    ),
    Family::gauge(
        CLUSTER_LEASE_VALID,
        None,
        "Cluster mode: 1 while this node's lease is valid (with the fence margin), else 0.",
    ),
    Family::counter(
        CLUSTER_GROUPS_ACQUIRED,
        "Cluster mode: groups this node started analysing, by group.",
    ),
    Family::counter(
        CLUSTER_GROUPS_RELEASED,
        "Cluster mode: groups this node gave up, by group and reason (rebalance, lease_lost, key_lost, shutdown).",
    ),
    Family::counter(
        CLUSTER_LEASE_LOST,
        "Cluster mode: times this node's lease could not be renewed in time.",
    ),
    Family::counter(
        CLUSTER_ETCD_ERRORS,
        "Cluster mode: etcd requests that failed or timed out, by op.",
    ),
    Family::counter(
        CLUSTER_FENCED_EVENTS,
        "Cluster mode: events decided after their group left this node, not committed, by scenario.",
    ),
    Family::counter(
        LIVE_VIEWERS_DROPPED,
        "Live-wall viewers dropped by the server, by camera and reason.",
    ),
    Family::gauge(
        LIVE_VIEWERS,
        None,
        "Live-wall viewers connected now, by camera.",
    ),
    Family::counter(
        LIVE_MESSAGES_DROPPED,
        "Live-wall messages not sent to a viewer whose queue was full, by camera and what.",
    ),
    Family::counter(
        LIVE_VIEWER_CUTS,
        "Times a slow live viewer was cut forward to the next keyframe, by camera.",
    ),
    Family::counter(
        FULL_RESOLUTION_EVIDENCE,
        "Case evidence decoded at full resolution, by outcome (decoded, failed, unavailable).",
    ),
    Family::counter(
        STAFF_REPORTS,
        "Cases reported by staff from the live wall, by scenario.",
    ),
];

/// Gives the installed recorder every family's HELP text and unit (what `describe_counter!` and
/// its siblings do, over the table).
fn describe_families() {
    metrics::with_recorder(|recorder| {
        for f in FAMILIES {
            let name = KeyName::from_const_str(f.name);
            let help = SharedString::const_str(f.help);
            match f.kind {
                Kind::Counter => recorder.describe_counter(name, f.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, f.unit, help),
                Kind::Histogram => recorder.describe_histogram(name, f.unit, help),
            }
        }
    });
}

#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// A newer frame of the same camera arrived before a worker took this one.
    Superseded,
    /// Older than `max_frame_age_ms` when a worker got to it.
    Stale,
    InferenceError,
    /// Cluster mode: the camera's group left this node; its frames stop at the gate.
    Fenced,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Superseded => "superseded",
            DropReason::Stale => "stale",
            DropReason::InferenceError => "inference_error",
            DropReason::Fenced => "fenced",
        }
    }
}

/// A camera's analysed-frame counter, registered once: the hot path then only increments
/// (building the label strings per frame would allocate on every analysed frame).
#[derive(Clone)]
pub struct CameraFrameMetrics {
    analysed: metrics::Counter,
    inference: metrics::Histogram,
}

impl CameraFrameMetrics {
    pub fn new(camera: &str) -> Self {
        Self {
            analysed: counter!(FRAMES_ANALYSED, "camera" => camera.to_owned()),
            inference: histogram!(INFERENCE_SECONDS),
        }
    }

    pub fn analysed(&self, inference_seconds: f64) {
        self.analysed.increment(1);
        self.inference.record(inference_seconds);
    }
}

/// One model's analysed frames on one camera, registered once (see [`CameraFrameMetrics`]).
#[derive(Clone)]
pub struct ModelFrameMetrics {
    analysed: metrics::Counter,
    inference: metrics::Histogram,
}

impl ModelFrameMetrics {
    pub fn new(camera: &str, model: &str) -> Self {
        Self {
            analysed: counter!(MODEL_FRAMES, "camera" => camera.to_owned(), "model" => model.to_owned(), "outcome" => "analysed"),
            inference: histogram!(MODEL_INFERENCE_SECONDS, "model" => model.to_owned()),
        }
    }

    pub fn analysed(&self, inference_seconds: f64) {
        self.analysed.increment(1);
        self.inference.record(inference_seconds);
    }
}

/// The motion gate's decisions on one camera, registered once (see [`CameraFrameMetrics`]).
#[derive(Clone)]
pub struct GateMetrics {
    motion: metrics::Counter,
    periodic: metrics::Counter,
    skipped: metrics::Counter,
    not_due: metrics::Counter,
}

impl GateMetrics {
    pub fn new(camera: &str) -> Self {
        let decision = |d: &'static str| counter!(FRAMES_GATED, "camera" => camera.to_owned(), "decision" => d);
        Self {
            motion: decision("motion"),
            periodic: decision("periodic"),
            skipped: decision("skipped_no_motion"),
            not_due: decision("not_due"),
        }
    }

    pub fn motion(&self) {
        self.motion.increment(1);
    }

    pub fn periodic(&self) {
        self.periodic.increment(1);
    }

    pub fn skipped(&self) {
        self.skipped.increment(1);
    }

    pub fn not_due(&self) {
        self.not_due.increment(1);
    }
}

/// A camera's encoded units kept from its decoder, registered once (the probe runs per unit).
#[derive(Clone)]
pub struct DecodeSkipMetrics {
    pub keyframes_only: metrics::Counter,
    pub gop_tail: metrics::Counter,
    pub overload: metrics::Counter,
    pub late: metrics::Counter,
}

impl DecodeSkipMetrics {
    pub fn new(camera: &str) -> Self {
        let reason = |r: &'static str| counter!(UNITS_NOT_DECODED, "camera" => camera.to_owned(), "reason" => r);
        Self {
            keyframes_only: reason("keyframes_only"),
            gop_tail: reason("gop_tail"),
            overload: reason("overload"),
            late: reason("late"),
        }
    }
}

/// One model's part in a frame: `outcome` is `analysed` (with its inference time) or a
/// [`DropReason`]'s name. A frame dropped before analysis counts once per model it would have run.
pub fn model_frame(
    camera: &str,
    model: &str,
    outcome: &'static str,
    inference_seconds: Option<f64>,
) {
    counter!(MODEL_FRAMES, "camera" => camera.to_owned(), "model" => model.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(s) = inference_seconds {
        histogram!(MODEL_INFERENCE_SECONDS, "model" => model.to_owned()).record(s);
    }
}

pub fn frame_dropped(camera: &str, reason: DropReason) {
    counter!(FRAMES_DROPPED, "camera" => camera.to_owned(), "reason" => reason.as_str())
        .increment(1);
}

/// Capture (appsink hand-over) to decision (rules evaluated) of one analysed frame.
pub fn frame_decided(seconds: f64) {
    histogram!(FRAME_LATENCY_SECONDS).record(seconds);
}

/// How late a frame reached the appsink (see [`INGEST_LAG_SECONDS`]).
pub fn frame_lag(seconds: f64) {
    histogram!(INGEST_LAG_SECONDS).record(seconds);
}

/// One gauge per (scenario, delivery state).
pub fn outbox_cases(scenario: &str, state: &str, count: u64) {
    metrics::gauge!(OUTBOX_CASES, "scenario" => scenario.to_owned(), "state" => state.to_owned())
        .set(count as f64);
}

/// Time spent per frame in a stage: `queue`, `preprocess`, `inference`, `postprocess`, `rules`
/// (hand-over to the scenario thread → rules evaluated).
pub fn stage_seconds(stage: &'static str, seconds: f64) {
    histogram!(STAGE_SECONDS, "stage" => stage).record(seconds);
}

/// The worker's per-frame stages, registered once (see [`CameraFrameMetrics`]).
#[derive(Clone)]
pub struct WorkerStageMetrics {
    queue: metrics::Histogram,
    preprocess: metrics::Histogram,
    inference: metrics::Histogram,
    postprocess: metrics::Histogram,
}

impl Default for WorkerStageMetrics {
    fn default() -> Self {
        let stage = |s: &'static str| histogram!(STAGE_SECONDS, "stage" => s);
        Self {
            queue: stage("queue"),
            preprocess: stage("preprocess"),
            inference: stage("inference"),
            postprocess: stage("postprocess"),
        }
    }
}

impl WorkerStageMetrics {
    pub fn record(&self, queue: f64, preprocess: f64, inference: f64, postprocess: f64) {
        self.queue.record(queue);
        self.preprocess.record(preprocess);
        self.inference.record(inference);
        self.postprocess.record(postprocess);
    }
}

pub fn camera_restart(camera: &str, cause: &'static str) {
    counter!(CAMERA_RESTARTS, "camera" => camera.to_owned(), "cause" => cause).increment(1);
}

/// One gauge per (camera, state): 1 for the current state, 0 for the one it left.
pub fn camera_state(camera: &str, from: &'static str, to: &'static str) {
    metrics::gauge!(CAMERA_STATE, "camera" => camera.to_owned(), "state" => from).set(0.0);
    metrics::gauge!(CAMERA_STATE, "camera" => camera.to_owned(), "state" => to).set(1.0);
    counter!(CAMERA_STATE_CHANGES, "camera" => camera.to_owned(), "to" => to).increment(1);
}

pub fn camera_frame_age(camera: &str, seconds: f64) {
    metrics::gauge!(CAMERA_FRAME_AGE_SECONDS, "camera" => camera.to_owned()).set(seconds);
}

pub fn event(scenario: &'static str) {
    counter!(EVENTS, "scenario" => scenario).increment(1);
}

/// The classical fire/smoke detector failed on a frame (the frame's model detections still count).
pub fn fire_baseline_error(camera: &str) {
    counter!(FIRE_BASELINE_ERRORS, "camera" => camera.to_owned()).increment(1);
}

pub fn review_released(cases: u64) {
    counter!(REVIEW_RELEASED).increment(cases);
}

pub fn case_stored(scenario: &str) {
    counter!(CASES_STORED, "scenario" => scenario.to_owned()).increment(1);
}

/// One delivery attempt to `target` and how it ended: `delivered`, `dead_letter`, `retry`.
pub fn delivery(target: &str, outcome: &'static str) {
    counter!(DELIVERIES, "target" => target.to_owned(), "outcome" => outcome).increment(1);
}

pub fn platform_status(target: &str, status: &'static str) {
    counter!(PLATFORM_STATUSES, "target" => target.to_owned(), "status" => status).increment(1);
}

pub fn platform_status_error(target: &str, reason: &'static str) {
    counter!(PLATFORM_STATUS_ERRORS, "target" => target.to_owned(), "reason" => reason)
        .increment(1);
}

pub fn update_delivery(target: &str, kind: &str, outcome: &'static str) {
    counter!(UPDATE_DELIVERIES, "target" => target.to_owned(), "kind" => kind.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn verification(outcome: &'static str) {
    counter!(VERIFICATIONS, "outcome" => outcome).increment(1);
}

pub fn deadline_updates(kind: &'static str, n: usize) {
    counter!(DEADLINE_UPDATES, "kind" => kind).increment(n as u64);
}

pub fn delivery_retry(target: &str) {
    counter!(DELIVERY_RETRIES, "target" => target.to_owned()).increment(1);
}

pub fn delivery_seconds(target: &str, seconds: f64) {
    histogram!(DELIVERY_SECONDS, "target" => target.to_owned()).record(seconds);
}

/// A target's outbox depth (deliveries still owed), the age of its oldest undelivered case,
/// and its dead letters.
pub fn outbox_state(
    target: &str,
    pending: u64,
    dead_letters: u64,
    oldest_pending_age_seconds: f64,
) {
    metrics::gauge!(OUTBOX_PENDING, "target" => target.to_owned()).set(pending as f64);
    metrics::gauge!(OUTBOX_DEAD_LETTERS, "target" => target.to_owned()).set(dead_letters as f64);
    metrics::gauge!(OUTBOX_OLDEST_PENDING_AGE_SECONDS, "target" => target.to_owned())
        .set(oldest_pending_age_seconds);
}

pub fn report_written() {
    counter!(REPORTS_WRITTEN).increment(1);
}

pub fn report_failed() {
    counter!(REPORTS_FAILED).increment(1);
}

pub fn camera_samples_failed() {
    counter!(CAMERA_SAMPLES_FAILED).increment(1);
}

pub fn outbox_purged(cases: u64) {
    counter!(OUTBOX_PURGED).increment(cases);
}

pub fn breaker_state(target: &str, state: u8) {
    metrics::gauge!(DISPATCH_BREAKER_STATE, "target" => target.to_owned()).set(f64::from(state));
}

pub fn breaker_opened(target: &str) {
    counter!(DISPATCH_BREAKER_OPENS, "target" => target.to_owned()).increment(1);
}

/// A case stored that no dispatch target takes (a gap in the routing rules).
pub fn case_unrouted(scenario: &str) {
    counter!(CASES_UNROUTED, "scenario" => scenario.to_owned()).increment(1);
}

/// An object suppressed at its place, learned from repeated rejections.
pub fn object_suppression_learned(scenario: &str) {
    counter!(OBJECT_SUPPRESSIONS_LEARNED, "scenario" => scenario.to_owned()).increment(1);
}

/// An event kept without its case because rendering it failed.
pub fn case_unrendered(scenario: &str) {
    counter!(CASES_UNRENDERED, "scenario" => scenario.to_owned()).increment(1);
}

pub fn overload_interval(seconds: f64) {
    metrics::gauge!(OVERLOAD_INTERVAL_SECONDS).set(seconds);
}

pub fn review_queue_depth(depth: u64) {
    metrics::gauge!(REVIEW_QUEUE_DEPTH).set(depth as f64);
}

pub fn review_decision(decision: &'static str) {
    counter!(REVIEW_DECISIONS, "decision" => decision).increment(1);
}

pub fn event_suppressed(scenario: &str) {
    counter!(EVENTS_SUPPRESSED, "scenario" => scenario.to_owned()).increment(1);
}

pub fn review_below_threshold(scenario: &str) {
    counter!(REVIEW_BELOW_THRESHOLD, "scenario" => scenario.to_owned()).increment(1);
}

pub fn live_viewer_dropped(camera: &str, reason: &'static str) {
    counter!(LIVE_VIEWERS_DROPPED, "camera" => camera.to_owned(), "reason" => reason).increment(1);
}

pub fn live_viewers(camera: &str, viewers: usize) {
    gauge!(LIVE_VIEWERS, "camera" => camera.to_owned()).set(viewers as f64);
}

pub fn live_messages_dropped(camera: &str, what: &'static str) {
    counter!(LIVE_MESSAGES_DROPPED, "camera" => camera.to_owned(), "what" => what).increment(1);
}

pub fn live_viewer_cut(camera: &str) {
    counter!(LIVE_VIEWER_CUTS, "camera" => camera.to_owned()).increment(1);
}

pub fn full_resolution_evidence(outcome: &'static str) {
    counter!(FULL_RESOLUTION_EVIDENCE, "outcome" => outcome).increment(1);
}

pub fn staff_report(scenario: &str) {
    counter!(STAFF_REPORTS, "scenario" => scenario.to_owned()).increment(1);
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

pub fn cluster_state(groups_owned: usize, nodes: usize, lease_valid: bool) {
    gauge!(CLUSTER_GROUPS_OWNED).set(groups_owned as f64);
    gauge!(CLUSTER_NODES).set(nodes as f64);
    gauge!(CLUSTER_LEASE_VALID).set(if lease_valid { 1.0 } else { 0.0 });
}

pub fn cluster_group_acquired(group: &str) {
    counter!(CLUSTER_GROUPS_ACQUIRED, "group" => group.to_owned()).increment(1);
}

pub fn cluster_group_released(group: &str, reason: &'static str) {
    counter!(CLUSTER_GROUPS_RELEASED, "group" => group.to_owned(), "reason" => reason).increment(1);
}

pub fn cluster_lease_lost() {
    counter!(CLUSTER_LEASE_LOST).increment(1);
}

pub fn cluster_etcd_error(op: &'static str) {
    counter!(CLUSTER_ETCD_ERRORS, "op" => op).increment(1);
}

pub fn cluster_fenced_event(scenario: &str) {
    counter!(CLUSTER_FENCED_EVENTS, "scenario" => scenario.to_owned()).increment(1);
}

/// Installs the Prometheus recorder once per process and describes every family to it (the
/// `# HELP` lines); `None` if another recorder is installed.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe_families();
            Some(handle)
        })
        .as_ref()
}

/// Human-readable logs by default, JSON lines with `json = true`; levels from RUST_LOG.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
