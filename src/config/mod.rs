//! Typed configuration of the key area (command centre, management units, camera groups,
//! cameras, zones) and of every stage; loading reports every problem with file, line and field.

pub mod cluster;
mod locate;
pub mod overrides;
pub mod profile;
pub mod review;
pub mod routing;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::infer::card::ModelCard;
use crate::infer::kinds::ObjectKind;
use crate::scenarios::catalog::Catalog;
use locate::SourceMap;
pub use routing::{DispatchTarget, PRIMARY_TARGET_ID, Route};

/// The default configuration compiled into the binary: the sample streams as cameras of the
/// key area, the shipped model, and a local dispatch receiver.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");
/// Relative paths in the embedded default resolve against the source tree's `config/`.
pub const EMBEDDED_DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

pub const DEFAULT_ANALYSIS_FPS: f64 = 2.0;
pub const DEFAULT_STALL_TIMEOUT_SECONDS: f64 = 10.0;
pub const DEFAULT_MIN_FOREGROUND_RATIO: f64 = 0.002;
pub const DEFAULT_PERIODIC_INFERENCE_SECONDS: f64 = 10.0;
pub const DEFAULT_GATE_WIDTH_PIXELS: u32 = 104;
pub const DEFAULT_MAX_FRAME_AGE_MS: u64 = 1000;
pub const DEFAULT_RECONNECT_INITIAL_SECONDS: f64 = 1.0;
pub const DEFAULT_RECONNECT_MAX_SECONDS: f64 = 60.0;
pub const DEFAULT_RTSP_TIMEOUT_SECONDS: f64 = 5.0;
pub const DEFAULT_UTC_OFFSET: &str = "+08:00";
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.35;
pub const DEFAULT_NMS_IOU: f32 = 0.6;
pub const DEFAULT_EVENT_QUEUE_CAPACITY: usize = 64;
pub const DEFAULT_DETECTIONS_QUEUE_CAPACITY: usize = 16;
pub const DEFAULT_CROWD_MIN_PERSONS: usize = 6;
pub const DEFAULT_CROWD_MIN_DURATION_SECONDS: f64 = 5.0;
pub const DEFAULT_CROWD_CLEAR_SECONDS: f64 = 3.0;
pub const DEFAULT_CROWD_SCORE_THRESHOLD: f32 = 0.4;
pub const DEFAULT_DISPATCH_TIMEOUT_SECONDS: f64 = 10.0;
pub const DEFAULT_RETRY_INITIAL_SECONDS: f64 = 1.0;
pub const DEFAULT_RETRY_MAX_SECONDS: f64 = 60.0;
pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_OPEN_SECONDS: f64 = 30.0;
pub const DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS: u32 = 960;
/// `[cases] retention_days` when absent.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// The longest `[cases] retention_days` (ten years); 0 turns the purge off.
pub const MAX_RETENTION_DAYS: u32 = 3650;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub centre: CommandCentre,
    #[serde(default)]
    pub units: Vec<Unit>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub cameras: Vec<Camera>,
    pub model: ModelSettings,
    #[serde(default)]
    pub inference: InferenceSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    #[serde(default)]
    pub gate: GateSettings,
    #[serde(default)]
    pub scenarios: ScenarioSettings,
    /// The per-camera multi-object tracker the dwell rules use.
    #[serde(default)]
    pub tracker: crate::track::TrackerSettings,
    #[serde(default)]
    pub cases: CaseSettings,
    pub dispatch: DispatchSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The review console and confidence tiers; absent: every case is dispatched unattended.
    #[serde(default)]
    pub review: Option<review::ReviewSettings>,
    /// Several nodes sharing this configuration, camera groups owned through etcd; absent:
    /// one node analyses every camera.
    #[serde(default)]
    pub cluster: Option<cluster::ClusterSettings>,
    /// Folder the relative paths in this file resolve against (the file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this configuration came from, for messages.
    #[serde(skip)]
    pub source_name: String,
    /// The scenario catalog: `scenarios.catalog`, or the shipped one.
    #[serde(skip)]
    pub catalog: std::sync::Arc<Catalog>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCentre {
    pub name: String,
    /// Local time of the key area, for active hours and phases (Shanghai: "+08:00").
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub id: String,
    pub name: String,
    /// e.g. "business_district", "village", "residential".
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub unit: String,
    /// Frames analysed per second for every camera of the group.
    #[serde(default = "default_analysis_fps")]
    pub analysis_fps: f64,
    /// Decode keyframes only (decoder skips the rest): for slow scenarios, far cheaper.
    #[serde(default)]
    pub keyframes_only: bool,
    /// Local-time windows when the group is analysed, e.g. ["08:00-20:00"] (day shift) or
    /// ["20:00-08:00"] (night shift); empty = always.
    #[serde(default)]
    pub active_hours: Vec<String>,
    /// Named phases with date ranges (launch, intensive, long-term) overriding the profile.
    #[serde(default)]
    pub phases: Vec<GroupPhase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPhase {
    pub name: String,
    /// First day of the phase (local date).
    pub from: toml::value::Datetime,
    /// Last day of the phase, inclusive; open-ended when absent.
    #[serde(default)]
    pub to: Option<toml::value::Datetime>,
    #[serde(default)]
    pub analysis_fps: Option<f64>,
    #[serde(default)]
    pub keyframes_only: Option<bool>,
    #[serde(default)]
    pub active_hours: Option<Vec<String>>,
    /// Overrides of scenario thresholds during the phase.
    #[serde(default)]
    pub crowd_min_persons: Option<usize>,
    #[serde(default)]
    pub crowd_min_duration_seconds: Option<f64>,
    /// Threshold overrides per scenario id while the phase runs (see `overrides`).
    #[serde(default)]
    pub scenario_overrides: overrides::ScenarioOverrides,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub group: String,
    /// `rtsp://…`, `file:///…`, a path (relative to this file), or `test:` for a test pattern.
    pub uri: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub gb28181_device_id: Option<String>,
    #[serde(default)]
    pub gb28181_channel_id: Option<String>,
    /// Replay a file source from the start when it ends.
    #[serde(default)]
    pub r#loop: bool,
    /// A gst-launch template file overriding the one chosen from the uri scheme.
    #[serde(default)]
    pub pipeline: Option<PathBuf>,
    /// RTSP credentials, when not in the uri (kept out of logs).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// "auto" (hardware decoders when present), "software", or a decoder element name.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// Overrides the group's keyframes-only setting for this camera.
    #[serde(default)]
    pub keyframes_only: Option<bool>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Threshold overrides per scenario id for this camera, e.g.
    /// `[cameras.scenario_overrides.illegal_parking] dwell_seconds = 60.0`.
    #[serde(default)]
    pub scenario_overrides: overrides::ScenarioOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    Udp,
    /// UDP first, TCP when UDP gets nothing.
    Auto,
}

impl RtspTransport {
    /// rtspsrc's `protocols` flags.
    pub fn protocols(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
            RtspTransport::Auto => "udp+tcp",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Polygon vertices in normalised frame coordinates (0..1, origin top-left).
    pub polygon: Vec<[f64; 2]>,
    /// Scenario ids evaluated in this zone.
    pub scenarios: Vec<String>,
    /// Raises the minimum score of every scenario's objects in this zone.
    #[serde(default)]
    pub min_score: Option<f32>,
    /// Restricts the scenarios' object kinds in this zone (e.g. only `car` for parking).
    #[serde(default)]
    pub kinds: Option<Vec<ObjectKind>>,
    /// Masks cut out of the polygon (a private forecourt, a tree, the on-screen clock).
    #[serde(default)]
    pub exclude: Vec<Vec<[f64; 2]>>,
    /// Which part of a box must be in the zone: `bottom_centre` (where it stands, the
    /// default), `centre`, or `overlap` (at least `min_overlap_ratio` of the box).
    #[serde(default)]
    pub anchor: crate::scenarios::geometry::Anchor,
    #[serde(default = "default_min_overlap_ratio")]
    pub min_overlap_ratio: f64,
    /// Labels for routing cases to dispatch targets (e.g. `border` for a zone on the boundary
    /// with the neighbouring town); see `[[dispatch.targets.routes]] zone_tags`.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_min_overlap_ratio() -> f64 {
    crate::scenarios::geometry::DEFAULT_MIN_OVERLAP_RATIO
}

impl Zone {
    /// The zone as the rules test boxes against it.
    pub fn shape(&self) -> crate::scenarios::geometry::ZoneShape {
        crate::scenarios::geometry::ZoneShape {
            include: self.polygon.clone(),
            exclude: self.exclude.clone(),
            anchor: self.anchor,
            min_overlap_ratio: self.min_overlap_ratio,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Path of the model card (TOML).
    pub card: PathBuf,
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Worker threads, each with its own onnxruntime session; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// onnxruntime intra-op threads per session.
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    #[serde(default = "default_detections_queue_capacity")]
    pub detections_queue_capacity: usize,
    /// Path of libonnxruntime; default: ORT_DYLIB_PATH, then third_party/onnxruntime.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// A frame older than this when a worker picks it is dropped (`stale`): bounded latency.
    #[serde(default = "default_max_frame_age_ms")]
    pub max_frame_age_ms: u64,
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            intra_op_threads: 1,
            detections_queue_capacity: DEFAULT_DETECTIONS_QUEUE_CAPACITY,
            onnxruntime_library: None,
            max_frame_age_ms: DEFAULT_MAX_FRAME_AGE_MS,
            execution_provider: ExecutionProvider::Cpu,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSettings {
    /// Skip inference on frames where nothing moves.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Share of the (small, grey) frame that must change to count as motion.
    #[serde(default = "default_min_foreground_ratio")]
    pub min_foreground_ratio: f64,
    /// Analyse a frame at least this often even without motion (stationary scenarios).
    #[serde(default = "default_periodic_inference_seconds")]
    pub periodic_inference_seconds: f64,
    /// Width of the grey frame the background model sees.
    #[serde(default = "default_gate_width")]
    pub analysis_width_pixels: u32,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_foreground_ratio: DEFAULT_MIN_FOREGROUND_RATIO,
            periodic_inference_seconds: DEFAULT_PERIODIC_INFERENCE_SECONDS,
            analysis_width_pixels: DEFAULT_GATE_WIDTH_PIXELS,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_min_foreground_ratio() -> f64 {
    DEFAULT_MIN_FOREGROUND_RATIO
}
fn default_periodic_inference_seconds() -> f64 {
    DEFAULT_PERIODIC_INFERENCE_SECONDS
}
fn default_gate_width() -> u32 {
    DEFAULT_GATE_WIDTH_PIXELS
}
fn default_max_frame_age_ms() -> u64 {
    DEFAULT_MAX_FRAME_AGE_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    /// Needs the `cuda` cargo feature and an onnxruntime build with CUDA.
    Cuda,
    /// Needs the `tensorrt` cargo feature and an onnxruntime build with TensorRT.
    Tensorrt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Live cameras and demos: sources run at their own speed; a frame that arrives while the
    /// previous one of that camera still waits replaces it (counted as dropped).
    #[default]
    Realtime,
    /// Replays and tests: files are read as fast as inference takes them; no frame is dropped.
    Fast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    #[serde(default)]
    pub pace: Pace,
    /// No frame for this long restarts that camera (never less than 3 analysis intervals).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_seconds: f64,
    /// First reconnect delay; doubles per failed attempt (full jitter) up to the max.
    #[serde(default = "default_reconnect_initial")]
    pub reconnect_initial_seconds: f64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_seconds: f64,
    /// RTSP connection and receive timeout.
    #[serde(default = "default_rtsp_timeout")]
    pub rtsp_timeout_seconds: f64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            pace: Pace::default(),
            stall_timeout_seconds: DEFAULT_STALL_TIMEOUT_SECONDS,
            reconnect_initial_seconds: DEFAULT_RECONNECT_INITIAL_SECONDS,
            reconnect_max_seconds: DEFAULT_RECONNECT_MAX_SECONDS,
            rtsp_timeout_seconds: DEFAULT_RTSP_TIMEOUT_SECONDS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSettings {
    #[serde(default)]
    pub crowd_gathering: CrowdSettings,
    /// The classical fire/smoke detector that serves straw burning without a fire model.
    #[serde(default)]
    pub fire_baseline: crate::scenarios::fire::FireBaselineSettings,
    /// A scenario catalog replacing the shipped `config/scenarios.toml`.
    #[serde(default)]
    pub catalog: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdSettings {
    #[serde(default = "default_crowd_min_persons")]
    pub min_persons: usize,
    #[serde(default = "default_crowd_min_duration")]
    pub min_duration_seconds: f64,
    /// The episode ends after the count stays below `min_persons` this long.
    #[serde(default = "default_crowd_clear")]
    pub clear_seconds: f64,
    #[serde(default = "default_crowd_score")]
    pub score_threshold: f32,
}

impl CrowdSettings {
    /// Range checks, also applied to overrides and phase shorthands: (field, message) pairs.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.min_persons == 0 {
            out.push(("min_persons", "must be at least 1".into()));
        }
        if !(self.min_duration_seconds >= 0.0 && self.min_duration_seconds.is_finite()) {
            out.push((
                "min_duration_seconds",
                "must be a non-negative number".into(),
            ));
        }
        if !(self.clear_seconds >= 0.0 && self.clear_seconds.is_finite()) {
            out.push(("clear_seconds", "must be a non-negative number".into()));
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            out.push(("score_threshold", "must be within 0..1".into()));
        }
        out
    }
}

impl Default for CrowdSettings {
    fn default() -> Self {
        Self {
            min_persons: DEFAULT_CROWD_MIN_PERSONS,
            min_duration_seconds: DEFAULT_CROWD_MIN_DURATION_SECONDS,
            clear_seconds: DEFAULT_CROWD_CLEAR_SECONDS,
            score_threshold: DEFAULT_CROWD_SCORE_THRESHOLD,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSettings {
    /// SQLite file holding cases and the delivery outbox.
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    #[serde(default = "default_event_queue_capacity")]
    pub event_queue_capacity: usize,
    #[serde(default = "default_snapshot_width")]
    pub snapshot_max_width_pixels: u32,
    /// Days a finished case (delivered to every target, or rejected by a reviewer) stays in the
    /// outbox before it is deleted with its snapshot and deliveries; absent: 30; 0: kept
    /// forever. Pending, held, dead-lettered and unrouted cases are never deleted.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for CaseSettings {
    fn default() -> Self {
        Self {
            outbox: default_outbox(),
            event_queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
            snapshot_max_width_pixels: DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    /// This endpoint's id as a delivery target (outbox rows, metrics, logs); default `primary`.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// The dispatch API endpoint cases are POSTed to; defaults to the embedded receiver's.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default = "default_dispatch_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_retry_initial")]
    pub retry_initial_seconds: f64,
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: f64,
    /// Start a dispatch receiver in the same process (demo and single-machine use).
    #[serde(default)]
    pub embedded_receiver: Option<EmbeddedReceiver>,
    /// Consecutive failed deliveries (5xx, timeouts, refused connections) that open the circuit
    /// breaker: the whole endpoint is left alone for `breaker_open_seconds`, then probed once.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failure_threshold: u32,
    #[serde(default = "default_breaker_open")]
    pub breaker_open_seconds: f64,
    /// Images inline in the JSON (base64) or as parts of a multipart/form-data request.
    #[serde(default)]
    pub image_upload: ImageUpload,
    /// Renames top-level fields of the case JSON for a platform with other names,
    /// e.g. `confirmed_at = "reportTime"`.
    #[serde(default)]
    pub field_map: std::collections::BTreeMap<String, String>,
    /// Which cases this endpoint takes (same rules as a target's); none: every case.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// More endpoints (another town's command centre), each with its own routes.
    #[serde(default)]
    pub targets: Vec<DispatchTarget>,
}

/// How case images travel to the dispatch API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageUpload {
    /// `data_base64` inside the JSON body.
    #[default]
    Inline,
    /// A `case` part (JSON, images referenced by `part`) plus one `image/jpeg` part per image.
    Multipart,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Serve Prometheus `/metrics` and `/healthz` on this address, e.g. "127.0.0.1:9464".
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedReceiver {
    /// Address to listen on, e.g. "127.0.0.1:8765".
    pub listen: String,
    /// SQLite file of the receiver.
    pub database: PathBuf,
}

fn default_analysis_fps() -> f64 {
    DEFAULT_ANALYSIS_FPS
}
fn default_score_threshold() -> f32 {
    DEFAULT_SCORE_THRESHOLD
}
fn default_nms_iou() -> f32 {
    DEFAULT_NMS_IOU
}
fn one() -> usize {
    1
}
fn default_detections_queue_capacity() -> usize {
    DEFAULT_DETECTIONS_QUEUE_CAPACITY
}
fn default_stall_timeout() -> f64 {
    DEFAULT_STALL_TIMEOUT_SECONDS
}
fn default_reconnect_initial() -> f64 {
    DEFAULT_RECONNECT_INITIAL_SECONDS
}
fn default_reconnect_max() -> f64 {
    DEFAULT_RECONNECT_MAX_SECONDS
}
fn default_rtsp_timeout() -> f64 {
    DEFAULT_RTSP_TIMEOUT_SECONDS
}
fn default_utc_offset() -> String {
    DEFAULT_UTC_OFFSET.to_owned()
}
fn default_decoder() -> String {
    "auto".to_owned()
}
fn default_crowd_min_persons() -> usize {
    DEFAULT_CROWD_MIN_PERSONS
}
fn default_crowd_min_duration() -> f64 {
    DEFAULT_CROWD_MIN_DURATION_SECONDS
}
fn default_crowd_clear() -> f64 {
    DEFAULT_CROWD_CLEAR_SECONDS
}
fn default_crowd_score() -> f32 {
    DEFAULT_CROWD_SCORE_THRESHOLD
}
fn default_outbox() -> PathBuf {
    PathBuf::from("var/gridwatch.sqlite")
}
fn default_event_queue_capacity() -> usize {
    DEFAULT_EVENT_QUEUE_CAPACITY
}
fn default_snapshot_width() -> u32 {
    DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS
}
fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}
fn default_dispatch_timeout() -> f64 {
    DEFAULT_DISPATCH_TIMEOUT_SECONDS
}
fn default_retry_initial() -> f64 {
    DEFAULT_RETRY_INITIAL_SECONDS
}
fn default_retry_max() -> f64 {
    DEFAULT_RETRY_MAX_SECONDS
}
fn default_breaker_failures() -> u32 {
    DEFAULT_BREAKER_FAILURE_THRESHOLD
}
fn default_breaker_open() -> f64 {
    DEFAULT_BREAKER_OPEN_SECONDS
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `cameras[1].unit`; empty when the problem is not tied to a field.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// How deep a load goes: `Check` also opens model files and hashes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Structure,
    Check,
}

/// The configuration as readers that outlive a reload see it (the review console): the
/// current `Arc<Config>`, swapped whole by a reload.
#[derive(Debug, Clone)]
pub struct SharedConfig(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Config>>>);

impl SharedConfig {
    pub fn new(config: std::sync::Arc<Config>) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(config)))
    }

    /// The configuration in force now.
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, config: std::sync::Arc<Config>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

impl Config {
    /// Loads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_text(&text, &path.display().to_string(), &base)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::from_text(
            EMBEDDED_DEFAULT,
            "<embedded config/default.toml>",
            Path::new(EMBEDDED_DEFAULT_DIR),
        )
    }

    /// Parses, then validates; collects all problems rather than stopping at the first.
    pub fn from_text(text: &str, name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let map = SourceMap::new(text);
        let mut problems = Vec::new();
        let parsed = parse_collecting(text, name, &map, &mut problems);
        if let Some(mut config) = parsed {
            config.base_dir = base_dir.to_path_buf();
            config.source_name = name.to_owned();
            let catalog_path = config.scenarios.catalog.as_ref().map(|p| config.resolve(p));
            match Catalog::load_or_embedded(catalog_path.as_deref()) {
                Ok(c) => config.catalog = std::sync::Arc::new(c),
                Err(e) => problems.push(problem_at_field(
                    name,
                    &map,
                    "scenarios.catalog",
                    e.to_string(),
                )),
            }
            for (field, message) in config.validate() {
                problems.push(problem_at_field(name, &map, &field, message));
            }
            if problems.is_empty() {
                return Ok(config);
            }
        }
        problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError::Invalid(problems))
    }

    /// Resolves a path from this file against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn camera_group(&self, camera: &Camera) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == camera.group)
    }

    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.id == id)
    }

    /// Semantic checks; returns (field path, message) pairs.
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |field: String, msg: String| out.push((field, msg));

        unique_ids(self.units.iter().map(|u| u.id.as_str()), "units", &mut err);
        unique_ids(
            self.groups.iter().map(|g| g.id.as_str()),
            "groups",
            &mut err,
        );
        unique_ids(
            self.cameras.iter().map(|c| c.id.as_str()),
            "cameras",
            &mut err,
        );
        let units: HashSet<&str> = self.units.iter().map(|u| u.id.as_str()).collect();
        let groups: HashMap<&str, &Group> =
            self.groups.iter().map(|g| (g.id.as_str(), g)).collect();

        for (i, g) in self.groups.iter().enumerate() {
            if !units.contains(g.unit.as_str()) {
                err(
                    format!("groups[{i}].unit"),
                    format!("unknown management unit `{}`", g.unit),
                );
            }
            if !(g.analysis_fps > 0.0 && g.analysis_fps <= 60.0) {
                err(
                    format!("groups[{i}].analysis_fps"),
                    format!("must be in (0, 60], got {}", g.analysis_fps),
                );
            }
            for (k, w) in g.active_hours.iter().enumerate() {
                if let Err(e) = profile::HoursWindow::parse(w) {
                    err(format!("groups[{i}].active_hours[{k}]"), e);
                }
            }
            for (k, p) in g.phases.iter().enumerate() {
                for (field, msg) in profile::validate_phase(p) {
                    err(format!("groups[{i}].phases[{k}].{field}"), msg);
                }
            }
        }
        for (field, msg) in self.validate_overrides() {
            err(field, msg);
        }
        for (field, msg) in self.scenarios.fire_baseline.validate() {
            err(format!("scenarios.fire_baseline.{field}"), msg);
        }
        for (field, msg) in self.tracker.validate() {
            err(format!("tracker.{field}"), msg);
        }
        if let Some(r) = &self.review {
            for (field, msg) in r.validate(&self.catalog) {
                err(format!("review.{field}"), msg);
            }
        }
        if let Some(c) = &self.cluster {
            for (field, msg) in c.validate() {
                err(format!("cluster.{field}"), msg);
            }
        }
        if self.cameras.is_empty() {
            err("cameras".into(), "no cameras configured".into());
        }
        for (i, c) in self.cameras.iter().enumerate() {
            if !units.contains(c.unit.as_str()) {
                err(
                    format!("cameras[{i}].unit"),
                    format!("unknown management unit `{}`", c.unit),
                );
            }
            match groups.get(c.group.as_str()) {
                None => err(
                    format!("cameras[{i}].group"),
                    format!("unknown camera group `{}`", c.group),
                ),
                Some(g) if g.unit != c.unit && units.contains(c.unit.as_str()) => err(
                    format!("cameras[{i}].group"),
                    format!(
                        "group `{}` belongs to unit `{}`, not to the camera's unit `{}`",
                        g.id, g.unit, c.unit
                    ),
                ),
                Some(_) => {}
            }
            if let Some(path) = crate::ingest::local_file(&c.uri, &self.base_dir)
                && !path.is_file()
            {
                err(
                    format!("cameras[{i}].uri"),
                    format!("file not found: {}", path.display()),
                );
            }
            if let Err(e) = crate::ingest::SourceKind::of(&c.uri) {
                err(format!("cameras[{i}].uri"), e);
            }
            if let Err(e) = crate::ingest::DecoderChoice::parse(&c.decoder) {
                err(format!("cameras[{i}].decoder"), e);
            }
            if let Some(p) = &c.pipeline
                && !self.resolve(p).is_file()
            {
                err(
                    format!("cameras[{i}].pipeline"),
                    format!("template not found: {}", self.resolve(p).display()),
                );
            }
            if let (Some(lat), Some(lon)) = (c.lat, c.lon)
                && !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
            {
                err(
                    format!("cameras[{i}].lat"),
                    format!("lat/lon out of range: {lat}, {lon}"),
                );
            }
            unique_ids(
                c.zones.iter().map(|z| z.id.as_str()),
                &format!("cameras[{i}].zones"),
                &mut err,
            );
            for (j, z) in c.zones.iter().enumerate() {
                if z.min_score.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    err(
                        format!("cameras[{i}].zones[{j}].min_score"),
                        "must be within 0..1".into(),
                    );
                }
                let field = format!("cameras[{i}].zones[{j}].polygon");
                if let Err(e) = crate::scenarios::geometry::validate_polygon(&z.polygon) {
                    err(field, e);
                }
                for (k, mask) in z.exclude.iter().enumerate() {
                    if let Err(e) = crate::scenarios::geometry::validate_polygon(mask) {
                        err(format!("cameras[{i}].zones[{j}].exclude[{k}]"), e);
                    }
                }
                if !(z.min_overlap_ratio > 0.0 && z.min_overlap_ratio <= 1.0) {
                    err(
                        format!("cameras[{i}].zones[{j}].min_overlap_ratio"),
                        format!("must be in (0, 1], got {}", z.min_overlap_ratio),
                    );
                }
                for (k, s) in z.scenarios.iter().enumerate() {
                    if !self.catalog.scenarios.is_empty() && self.catalog.entry(s).is_none() {
                        err(
                            format!("cameras[{i}].zones[{j}].scenarios[{k}]"),
                            format!(
                                "unknown scenario `{s}` (known: {})",
                                self.catalog.ids().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
            }
        }

        let card_path = self.resolve(&self.model.card);
        if !card_path.is_file() {
            err(
                "model.card".into(),
                format!("model card not found: {}", card_path.display()),
            );
        } else if let Err(e) = ModelCard::load(&card_path) {
            err("model.card".into(), e.to_string());
        }
        if !(0.0..=1.0).contains(&self.model.score_threshold) {
            err("model.score_threshold".into(), "must be within 0..1".into());
        }
        if !(0.0..=1.0).contains(&self.model.nms_iou) {
            err("model.nms_iou".into(), "must be within 0..1".into());
        }
        if self.inference.intra_op_threads == 0 {
            err(
                "inference.intra_op_threads".into(),
                "must be at least 1".into(),
            );
        }
        if profile::parse_utc_offset(&self.centre.utc_offset).is_none() {
            err(
                "centre.utc_offset".into(),
                format!(
                    "expected \"+HH:MM\" or \"-HH:MM\", got `{}`",
                    self.centre.utc_offset
                ),
            );
        }
        if self.ingest.reconnect_initial_seconds <= 0.0
            || self.ingest.reconnect_max_seconds < self.ingest.reconnect_initial_seconds
        {
            err(
                "ingest.reconnect_max_seconds".into(),
                "need 0 < reconnect_initial_seconds <= reconnect_max_seconds".into(),
            );
        }
        if self.ingest.stall_timeout_seconds <= 0.0 {
            err(
                "ingest.stall_timeout_seconds".into(),
                "must be positive".into(),
            );
        }
        if self.cases.retention_days > MAX_RETENTION_DAYS {
            err(
                "cases.retention_days".into(),
                format!(
                    "must be within 0..={MAX_RETENTION_DAYS} (0: keep cases forever), got {}",
                    self.cases.retention_days
                ),
            );
        }
        for (field, msg) in self.scenarios.crowd_gathering.validate() {
            err(format!("scenarios.crowd_gathering.{field}"), msg);
        }
        match (&self.dispatch.url, &self.dispatch.embedded_receiver) {
            (None, None) => err(
                "dispatch".into(),
                "set `url` (the dispatch API) or `embedded_receiver`".into(),
            ),
            (Some(url), _) => {
                if let Err(e) = reqwest::Url::parse(url) {
                    err("dispatch.url".into(), format!("not a URL: {e}"));
                }
            }
            _ => {}
        }
        if let Some(r) = &self.dispatch.embedded_receiver
            && r.listen.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                "dispatch.embedded_receiver.listen".into(),
                format!("not an address:port: `{}`", r.listen),
            );
        }
        if let Some(l) = &self.telemetry.metrics_listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                "telemetry.metrics_listen".into(),
                format!("not an address:port: `{l}`"),
            );
        }
        if self.dispatch.retry_initial_seconds <= 0.0
            || self.dispatch.retry_max_seconds < self.dispatch.retry_initial_seconds
        {
            err(
                "dispatch.retry_max_seconds".into(),
                "need 0 < retry_initial_seconds <= retry_max_seconds".into(),
            );
        }
        if self.dispatch.breaker_failure_threshold == 0 || self.dispatch.breaker_open_seconds <= 0.0
        {
            err(
                "dispatch.breaker_failure_threshold".into(),
                "need breaker_failure_threshold >= 1 and breaker_open_seconds > 0".into(),
            );
        }
        if let Err(e) = crate::dispatch::FieldMap::new(&self.dispatch.field_map) {
            err("dispatch.field_map".into(), e.to_string());
        }
        for (field, v) in [
            ("timeout_seconds", self.dispatch.timeout_seconds),
            ("retry_initial_seconds", self.dispatch.retry_initial_seconds),
            ("retry_max_seconds", self.dispatch.retry_max_seconds),
            ("breaker_open_seconds", self.dispatch.breaker_open_seconds),
        ] {
            if let Some(msg) = routing::out_of_bounds_seconds(v) {
                err(format!("dispatch.{field}"), msg);
            }
        }
        for (field, msg) in self.validate_routing() {
            err(field, msg);
        }
        out
    }
}

fn unique_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    list: &str,
    err: &mut impl FnMut(String, String),
) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if id.trim().is_empty() {
            err(format!("{list}[{i}].id"), "id must not be empty".into());
        } else if !seen.insert(id) {
            err(format!("{list}[{i}].id"), format!("duplicate id `{id}`"));
        }
    }
}

fn problem_at_field(file: &str, map: &SourceMap, field: &str, message: String) -> ConfigProblem {
    let (line, column) = map.span_of(field).map_or((1, 1), |s| map.line_col(s.start));
    ConfigProblem {
        file: file.to_owned(),
        line,
        column,
        field: field.to_owned(),
        message,
    }
}

/// Deserialises `text`; on an unknown field, records it, comments the offending lines out and
/// tries again, so that one typo does not hide the problems behind it.
fn parse_collecting(
    text: &str,
    name: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Config> {
    const MAX_ROUNDS: usize = 64;
    let mut current = text.to_owned();
    for _ in 0..MAX_ROUNDS {
        match toml::from_str::<Config>(&current) {
            Ok(c) => return Some(c),
            Err(e) => {
                let span = e.span();
                // Offsets refer to `current`, whose commented lines are one byte longer than in
                // the original: locate in `current` (line numbers are the same in both).
                let here = SourceMap::new(&current);
                let map = if current.len() == text.len() {
                    map
                } else {
                    &here
                };
                let (line, column) = span.clone().map_or((1, 1), |s| map.line_col(s.start));
                let located = span.as_ref().and_then(|s| map.path_at(s.start));
                let message = e.message().trim().to_owned();
                problems.push(ConfigProblem {
                    file: name.to_owned(),
                    line,
                    column,
                    field: located.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
                    message: message.clone(),
                });
                let recoverable = message.starts_with("unknown field");
                match (recoverable, located) {
                    (true, Some((_, whole))) => current = comment_out(&current, whole),
                    _ => return None,
                }
            }
        }
    }
    None
}

/// Turns the lines covering `span` into comments; line numbers stay the same.
fn comment_out(text: &str, span: std::ops::Range<usize>) -> String {
    let first = text[..span.start.min(text.len())].matches('\n').count();
    let last = text[..span.end.min(text.len())]
        .trim_end_matches('\n')
        .matches('\n')
        .count();
    text.split('\n')
        .enumerate()
        .map(|(i, l)| {
            if (first..=last).contains(&i) {
                format!("#{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
