//! Gate stage: between a camera and the inference pool, skips frames in which nothing moves
//! (OpenCV MOG2 on a small grey copy of the frame, one background model per camera), but always
//! lets a frame through every `periodic_inference_seconds`, so stationary scenarios (parked
//! vehicles, piled goods, garbage) are still evaluated.

use std::sync::Arc;

use opencv::core::{Mat, Ptr};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::video::{BackgroundSubtractorMOG2, create_background_subtractor_mog2};

use crate::infer::pool::{Mailboxes, PutOutcome};
use crate::ingest::{Frame, FrameSink, Pushed};
use crate::telemetry;

/// Why a frame passed or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Enough of the frame changed (foreground share).
    Motion(f64),
    /// Nothing moved, but the periodic inference is due.
    Periodic(f64),
    Skip(f64),
}

pub const DEFAULT_MIN_FOREGROUND_RATIO: f64 = 0.002;
pub const DEFAULT_PERIODIC_INFERENCE_SECONDS: f64 = 10.0;
pub const DEFAULT_GATE_WIDTH_PIXELS: u32 = 104;
/// A periodic pass less often than daily is a typo (and `inf` would panic in `Duration`).
pub const MAX_PERIODIC_INFERENCE_SECONDS: f64 = 86_400.0;
/// The background model's grey frame: narrower sees nothing, wider costs more than it tells.
pub const MIN_GATE_WIDTH_PIXELS: u32 = 16;
pub const MAX_GATE_WIDTH_PIXELS: u32 = 4096;

/// The `[gate]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {
    /// Skip inference on frames where nothing moves.
    pub enabled: bool,
    /// Share of the (small, grey) frame that must change to count as motion.
    pub min_foreground_ratio: f64,
    /// Analyse a frame at least this often even without motion (stationary scenarios).
    pub periodic_inference_seconds: f64,
    /// Width of the grey frame the background model sees.
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

impl GateSettings {
    /// Range checks: (field below `gate`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.min_foreground_ratio) {
            out.push((
                "min_foreground_ratio".into(),
                format!("must be in [0, 1], got {}", self.min_foreground_ratio),
            ));
        }
        let p = self.periodic_inference_seconds;
        if !(p > 0.0 && p <= MAX_PERIODIC_INFERENCE_SECONDS) {
            out.push((
                "periodic_inference_seconds".into(),
                format!(
                    "must be a number of seconds in (0, {MAX_PERIODIC_INFERENCE_SECONDS}], got {p}"
                ),
            ));
        }
        let w = self.analysis_width_pixels;
        if !(MIN_GATE_WIDTH_PIXELS..=MAX_GATE_WIDTH_PIXELS).contains(&w) {
            out.push((
                "analysis_width_pixels".into(),
                format!("must be in [{MIN_GATE_WIDTH_PIXELS}, {MAX_GATE_WIDTH_PIXELS}], got {w}"),
            ));
        }
        out
    }
}

/// One camera's background model and reused buffers: no allocation per frame.
pub struct MotionGate {
    settings: GateSettings,
    mog: Ptr<BackgroundSubtractorMOG2>,
    small: Mat,
    grey: Mat,
    mask: Mat,
    last_passed_seconds: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
#[error("motion gate: {0}")]
pub struct GateError(#[from] opencv::Error);

impl MotionGate {
    pub fn new(settings: GateSettings) -> Result<Self, GateError> {
        // OpenCV's defaults (history 500, threshold 16) without shadow detection, which costs
        // time and only matters for masks we never look at.
        let mog = create_background_subtractor_mog2(500, 16.0, false)?;
        Ok(Self {
            settings,
            mog,
            small: Mat::default(),
            grey: Mat::default(),
            mask: Mat::default(),
            last_passed_seconds: None,
        })
    }

    /// Decides for one frame; the background model learns from every frame, passed or not.
    pub fn decide(&mut self, frame: &Frame) -> Result<Decision, GateError> {
        let ratio = self.foreground_ratio(frame)?;
        let t = frame.stream_seconds;
        let due = self
            .last_passed_seconds
            .is_none_or(|last| t - last >= self.settings.periodic_inference_seconds);
        let decision = if ratio >= self.settings.min_foreground_ratio {
            Decision::Motion(ratio)
        } else if due {
            Decision::Periodic(ratio)
        } else {
            Decision::Skip(ratio)
        };
        if !matches!(decision, Decision::Skip(_)) {
            self.last_passed_seconds = Some(t);
        }
        Ok(decision)
    }

    fn foreground_ratio(&mut self, frame: &Frame) -> Result<f64, GateError> {
        let (w, h) = (frame.width as i32, frame.height as i32);
        let sw = self
            .settings
            .analysis_width_pixels
            .clamp(MIN_GATE_WIDTH_PIXELS, MAX_GATE_WIDTH_PIXELS) as i32;
        let sh = ((sw as f64) * h as f64 / w.max(1) as f64).round().max(1.0) as i32;
        frame.resize_into(&mut self.small, sw, sh)?;
        imgproc::cvt_color(&self.small, &mut self.grey, imgproc::COLOR_RGB2GRAY, 0)?;
        BackgroundSubtractorMOG2Trait::apply(&mut self.mog, &self.grey, &mut self.mask, -1.0)?;
        let moving = opencv::core::count_non_zero(&self.mask)?;
        Ok(f64::from(moving) / f64::from((sw * sh).max(1)))
    }
}

/// A camera's way into the inference pool: through its motion gate (when enabled) into its mailbox.
pub struct GatedSink {
    camera: usize,
    camera_id: Arc<str>,
    gate: Option<MotionGate>,
    gated: telemetry::GateMetrics,
    mailboxes: Arc<Mailboxes>,
    /// Cluster mode: the ownership and the camera's group index; frames pass only while this
    /// node may analyse the group, so analysis stops at the next frame, not the next
    /// supervisor tick.
    /// `None` as the index: a group outside the ownership table, never this node's.
    fence: Option<(crate::cluster::Ownership, Option<usize>)>,
}

impl GatedSink {
    pub fn new(
        camera: usize,
        camera_id: Arc<str>,
        settings: &GateSettings,
        mailboxes: Arc<Mailboxes>,
    ) -> Result<Self, GateError> {
        let gate = if settings.enabled {
            Some(MotionGate::new(settings.clone())?)
        } else {
            None
        };
        Ok(Self {
            camera,
            gated: telemetry::GateMetrics::new(&camera_id),
            camera_id,
            gate,
            mailboxes,
            fence: None,
        })
    }
}

impl GatedSink {
    /// Frames pass only while `ownership` lets this node analyse `group`.
    pub fn fenced(mut self, ownership: crate::cluster::Ownership, group: &str) -> Self {
        let group = ownership.group_index(group);
        self.fence = Some((ownership, group));
        self
    }
}

impl FrameSink for GatedSink {
    fn push(&mut self, frame: Frame) -> Pushed {
        if let Some((ownership, group)) = &self.fence
            && !group.is_some_and(|g| ownership.may_analyse_index(g))
        {
            telemetry::frame_dropped(&self.camera_id, telemetry::DropReason::Fenced);
            return Pushed::Fenced;
        }
        if let Some(gate) = self.gate.as_mut() {
            match gate.decide(&frame) {
                Ok(Decision::Skip(_)) => {
                    self.gated.skipped();
                    return Pushed::Skipped;
                }
                Ok(Decision::Motion(_)) => self.gated.motion(),
                Ok(Decision::Periodic(_)) => self.gated.periodic(),
                // A gate failure must not hide the camera: analyse the frame.
                Err(e) => {
                    tracing::warn!(camera = %self.camera_id, error = %e, "motion gate failed; frame passed")
                }
            }
        }
        match self.mailboxes.put(frame) {
            PutOutcome::Queued => Pushed::Accepted,
            PutOutcome::ReplacedOlder => Pushed::ReplacedOlder,
            PutOutcome::Stopped => Pushed::Stopped,
        }
    }

    fn close(&mut self) {
        self.mailboxes.close(self.camera);
    }
}
