//! The `[[models]]` (or single `[model]`) and `[inference]` sections: which model cards, their
//! score and NMS thresholds, how detections of several models are merged, and the worker pool
//! (workers, onnxruntime threads, frame age bound, execution provider).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.35;
pub const DEFAULT_NMS_IOU: f32 = 0.6;
pub const DEFAULT_MAX_FRAME_AGE_MS: u64 = 1000;
pub const DEFAULT_DETECTIONS_QUEUE_CAPACITY: usize = 16;
pub const DEFAULT_INTRA_OP_THREADS: usize = 1;
/// Two models' boxes of one kind overlapping this much are one object (the higher score kept).
pub const DEFAULT_CROSS_MODEL_IOU: f32 = 0.5;
/// More workers or threads than this is a typo on any machine we serve.
pub const MAX_THREADS: usize = 1024;
/// A frame older than an hour is never worth analysing.
pub const MAX_FRAME_AGE_MS: u64 = 3_600_000;
/// Bounded queues stay small: a bigger one only hides a stalled consumer.
pub const MAX_QUEUE_CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The name zones and `[scenarios.models]` use; default: the card's file stem.
    #[serde(default)]
    pub id: Option<String>,
    /// Path of the model card (TOML).
    pub card: PathBuf,
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
    /// An INT8 card of the same model (same classes and outputs), used instead of `card` where
    /// [`ModelSettings::int8`] says.
    #[serde(default)]
    pub int8_card: Option<PathBuf>,
    /// When `int8_card` is used: `auto` on CPUs with int8 dot-product instructions (x86 VNNI,
    /// Arm dotprod), where onnxruntime's INT8 kernels keep accuracy and gain most; `always`;
    /// `never`.
    #[serde(default)]
    pub int8: Int8Choice,
}

/// When a model's INT8 card is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Int8Choice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether this CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI on x86-64,
/// dotprod on aarch64). Without them onnxruntime's u8s8 kernels may saturate (its
/// quantization documentation) and gain less.
pub fn cpu_has_int8_dot_product() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

// The card has no default, so `[model]` cannot default as a whole: two field defaults remain.
fn default_score_threshold() -> f32 {
    DEFAULT_SCORE_THRESHOLD
}
fn default_nms_iou() -> f32 {
    DEFAULT_NMS_IOU
}

impl ModelSettings {
    /// The card this machine runs: `int8_card` when [`Int8Choice`] picks it, else `card`.
    pub fn chosen_card(&self) -> &std::path::Path {
        match (&self.int8_card, self.int8) {
            (Some(int8), Int8Choice::Always) => int8,
            (Some(int8), Int8Choice::Auto) if cpu_has_int8_dot_product() => int8,
            _ => &self.card,
        }
    }

    /// The configured id, else the card's file stem (known without reading the card).
    pub fn resolved_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            self.card
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// Range checks: (field below `model`, message) pairs. The card file itself is checked by
    /// loading it.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.score_threshold) {
            out.push((
                "score_threshold".into(),
                format!("must be a score in [0, 1], got {}", self.score_threshold),
            ));
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            out.push((
                "nms_iou".into(),
                format!("must be in [0, 1], got {}", self.nms_iou),
            ));
        }
        let id = self.resolved_id();
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '+') {
            out.push((
                if self.id.is_some() { "id" } else { "card" }.into(),
                format!("a model id must be a non-empty word without spaces or `+`, got `{id}`"),
            ));
        }
        out
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSettings {
    /// Worker threads, each with its own onnxruntime session; 0 = one per core.
    pub workers: usize,
    /// onnxruntime intra-op threads per session.
    pub intra_op_threads: usize,
    pub detections_queue_capacity: usize,
    /// Path of libonnxruntime; default: ORT_DYLIB_PATH, then third_party/onnxruntime.
    pub onnxruntime_library: Option<PathBuf>,
    /// A frame older than this when a worker picks it is dropped (`stale`): bounded latency.
    pub max_frame_age_ms: u64,
    pub execution_provider: ExecutionProvider,
    /// A camera running several models: boxes of one kind from different models overlapping
    /// at least this much (IoU) are merged into the one with the higher score.
    pub cross_model_iou: f32,
    /// Under overload (realtime pace), hold every camera to the analysis interval the workers
    /// can serve, so the frames they could not take are never decoded (see `pool::Thinning`).
    pub thin_under_overload: bool,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            intra_op_threads: DEFAULT_INTRA_OP_THREADS,
            detections_queue_capacity: DEFAULT_DETECTIONS_QUEUE_CAPACITY,
            onnxruntime_library: None,
            max_frame_age_ms: DEFAULT_MAX_FRAME_AGE_MS,
            execution_provider: ExecutionProvider::Cpu,
            cross_model_iou: DEFAULT_CROSS_MODEL_IOU,
            thin_under_overload: true,
        }
    }
}

impl InferenceSettings {
    /// A frame older than this when a worker picks it is dropped (at most
    /// [`MAX_FRAME_AGE_MS`], whatever is configured).
    pub fn max_frame_age(&self) -> Duration {
        Duration::from_millis(self.max_frame_age_ms.clamp(1, MAX_FRAME_AGE_MS))
    }

    /// Range checks: (field below `inference`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.workers > MAX_THREADS {
            out.push((
                "workers".into(),
                format!(
                    "must be in [0, {MAX_THREADS}] (0: one per core), got {}",
                    self.workers
                ),
            ));
        }
        if !(1..=MAX_THREADS).contains(&self.intra_op_threads) {
            out.push((
                "intra_op_threads".into(),
                format!(
                    "must be in [1, {MAX_THREADS}], got {}",
                    self.intra_op_threads
                ),
            ));
        }
        if !(1..=MAX_QUEUE_CAPACITY).contains(&self.detections_queue_capacity) {
            out.push((
                "detections_queue_capacity".into(),
                format!(
                    "must be in [1, {MAX_QUEUE_CAPACITY}], got {}",
                    self.detections_queue_capacity
                ),
            ));
        }
        if !(1..=MAX_FRAME_AGE_MS).contains(&self.max_frame_age_ms) {
            out.push((
                "max_frame_age_ms".into(),
                format!(
                    "must be a number of milliseconds in [1, {MAX_FRAME_AGE_MS}], got {}",
                    self.max_frame_age_ms
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.cross_model_iou) {
            out.push((
                "cross_model_iou".into(),
                format!("must be in [0, 1], got {}", self.cross_model_iou),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(int8: Option<&str>, choice: Int8Choice) -> ModelSettings {
        ModelSettings {
            id: None,
            card: PathBuf::from("fp32.toml"),
            score_threshold: DEFAULT_SCORE_THRESHOLD,
            nms_iou: DEFAULT_NMS_IOU,
            int8_card: int8.map(PathBuf::from),
            int8: choice,
        }
    }

    #[test]
    fn the_int8_card_is_chosen_by_the_setting_and_on_auto_by_the_cpu() {
        let fp32 = std::path::Path::new("fp32.toml");
        let int8 = std::path::Path::new("int8.toml");
        assert_eq!(model(None, Int8Choice::Always).chosen_card(), fp32);
        assert_eq!(
            model(Some("int8.toml"), Int8Choice::Always).chosen_card(),
            int8
        );
        assert_eq!(
            model(Some("int8.toml"), Int8Choice::Never).chosen_card(),
            fp32
        );
        let auto = if cpu_has_int8_dot_product() {
            int8
        } else {
            fp32
        };
        assert_eq!(
            model(Some("int8.toml"), Int8Choice::Auto).chosen_card(),
            auto
        );
        // The id stays the fp32 card's whichever runs: metrics and zones do not change.
        assert_eq!(
            model(Some("int8.toml"), Int8Choice::Always).resolved_id(),
            "fp32"
        );
    }
}
