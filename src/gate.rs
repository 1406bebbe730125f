//! Gate stage: between a camera and the inference pool, decides which decoded frames are worth
//! a model pass (OpenCV MOG2 on a small grey copy of the frame, one background model per
//! camera). A camera with zones is decoded at the highest rate its zones need; each zone is due
//! at its own rate (its scenarios' need, or the camera's rate when a group or phase overrides
//! it), and a due zone is analysed only if something moved in it since its last pass, or its
//! periodic pass (`periodic_inference_seconds`) is due, so stationary scenarios (parked
//! vehicles, piled goods, garbage) are still evaluated. A frame passes when some zone is
//! analysed. A camera without zones: motion anywhere, or the periodic pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A zone was due, but nothing moved in it and its periodic pass was not due.
    Skip(f64),
    /// No zone was due at this frame (the camera is decoded for a faster zone).
    NotDue,
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

/// A zone as the gate schedules it: its box (normalised, the polygon's bounds: an object
/// standing in the zone overhangs its ground polygon) and the rate it is due at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneSchedule {
    pub bbox: [f64; 4],
    pub fps: f64,
}

impl ZoneSchedule {
    /// The schedules of camera `camera`'s zones under `profile`.
    pub fn of_camera(
        area: &crate::area::Area,
        camera: usize,
        profile: &crate::area::profile::Profile,
    ) -> Vec<ZoneSchedule> {
        area.cameras[camera]
            .zones
            .iter()
            .zip(area.zone_fps(camera, profile))
            .map(|(z, fps)| {
                let (xs, ys) = (
                    z.polygon.iter().map(|p| p[0]),
                    z.polygon.iter().map(|p| p[1]),
                );
                let bbox = [
                    xs.clone().fold(f64::INFINITY, f64::min),
                    ys.clone().fold(f64::INFINITY, f64::min),
                    xs.fold(f64::NEG_INFINITY, f64::max),
                    ys.fold(f64::NEG_INFINITY, f64::max),
                ];
                ZoneSchedule { bbox, fps }
            })
            .collect()
    }
}

/// A zone's state in the gate.
#[derive(Debug, Clone)]
struct ZoneWatch {
    schedule: ZoneSchedule,
    last_analysed_seconds: Option<f64>,
    /// Something moved in the zone since its last pass.
    moved: bool,
}

/// One camera's background model and reused buffers: no allocation per frame.
pub struct MotionGate {
    settings: GateSettings,
    mog: Ptr<BackgroundSubtractorMOG2>,
    small: Mat,
    grey: Mat,
    mask: Mat,
    last_passed_seconds: Option<f64>,
    zones: Vec<ZoneWatch>,
    previous_seconds: Option<f64>,
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
            zones: Vec::new(),
            previous_seconds: None,
        })
    }

    /// A gate that schedules `zones` (see the module doc); none: the whole-frame gate.
    pub fn with_zones(settings: GateSettings, zones: &[ZoneSchedule]) -> Result<Self, GateError> {
        let mut gate = Self::new(settings)?;
        gate.set_zones(zones);
        Ok(gate)
    }

    /// New rates (a phase began, say); zones keep when they were last analysed.
    pub fn set_zones(&mut self, zones: &[ZoneSchedule]) {
        if zones.len() == self.zones.len() {
            for (w, z) in self.zones.iter_mut().zip(zones) {
                w.schedule = *z;
            }
            return;
        }
        self.zones = zones
            .iter()
            .map(|&schedule| ZoneWatch {
                schedule,
                last_analysed_seconds: None,
                moved: false,
            })
            .collect();
    }

    /// Stream time at which zone `zone` was last analysed (`None`: not yet, or no such zone).
    pub fn zone_last_analysed(&self, zone: usize) -> Option<f64> {
        self.zones.get(zone).and_then(|z| z.last_analysed_seconds)
    }

    /// Decides for one frame; the background model learns from every frame, passed or not.
    pub fn decide(&mut self, frame: &Frame) -> Result<Decision, GateError> {
        let ratio = self.foreground_ratio(frame)?;
        if self.zones.is_empty() {
            return Ok(self.decide_frame(frame.stream_seconds, ratio));
        }
        let t = frame.stream_seconds;
        // Half the gap between decoded frames: a zone due every 1 s on a camera decoded at
        // 1 fps is due at each frame even when stream times jitter.
        let slack = self
            .previous_seconds
            .map_or(0.0, |p| ((t - p) * 0.5).max(0.0));
        self.previous_seconds = Some(t);
        Ok(self.decide_zones(t, slack))
    }

    /// Each due zone: analysed when it moved since its last pass or its periodic pass is due.
    fn decide_zones(&mut self, t: f64, slack: f64) -> Decision {
        let (min_ratio, periodic) = (
            self.settings.min_foreground_ratio,
            self.settings.periodic_inference_seconds,
        );
        let (mut motion, mut periodic_pass, mut due_ratio): (Option<f64>, bool, Option<f64>) =
            (None, false, None);
        for i in 0..self.zones.len() {
            let r = self.zone_ratio(&self.zones[i].schedule.bbox);
            let z = &mut self.zones[i];
            z.moved |= r >= min_ratio;
            let since = z.last_analysed_seconds.map(|last| t - last);
            let interval = 1.0 / z.schedule.fps.max(crate::area::MIN_ANALYSIS_FPS);
            if since.is_some_and(|s| s < interval - slack) {
                continue;
            }
            due_ratio = Some(due_ratio.map_or(r, |d: f64| d.max(r)));
            if z.moved {
                motion = Some(motion.map_or(r, |m: f64| m.max(r)));
            } else if since.is_none_or(|s| s >= periodic) {
                periodic_pass = true;
            } else {
                continue;
            }
            z.last_analysed_seconds = Some(t);
            z.moved = false;
        }
        match (motion, periodic_pass, due_ratio) {
            (Some(r), _, _) => Decision::Motion(r),
            (None, true, r) => Decision::Periodic(r.unwrap_or(0.0)),
            (None, false, Some(r)) => Decision::Skip(r),
            (None, false, None) => Decision::NotDue,
        }
    }

    /// Share of the zone's box, on the last mask, that is foreground: counted over the mask's
    /// rows in place (no region-of-interest header per zone and frame).
    fn zone_ratio(&self, bbox: &[f64; 4]) -> f64 {
        let (w, h) = (
            self.mask.cols().max(0) as usize,
            self.mask.rows().max(0) as usize,
        );
        let Ok(bytes) = self.mask.data_bytes() else {
            return 0.0;
        };
        let px = |v: f64, n: usize| ((v.clamp(0.0, 1.0) * n as f64) as usize).min(n);
        let (x0, x1) = (
            px(bbox[0], w),
            px(bbox[2], w).max(px(bbox[0], w) + 1).min(w),
        );
        let (y0, y1) = (
            px(bbox[1], h),
            px(bbox[3], h).max(px(bbox[1], h) + 1).min(h),
        );
        if x0 >= x1 || y0 >= y1 || bytes.len() < w * h {
            return 0.0;
        }
        let moving: usize = (y0..y1)
            .map(|y| {
                bytes[y * w + x0..y * w + x1]
                    .iter()
                    .filter(|&&b| b != 0)
                    .count()
            })
            .sum();
        moving as f64 / ((x1 - x0) * (y1 - y0)) as f64
    }

    /// A camera without zones: motion anywhere in the frame, or the periodic pass.
    fn decide_frame(&mut self, t: f64, ratio: f64) -> Decision {
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
        decision
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

/// How often a camera's gate looks at its profile again (a phase may change its zones' rates).
const PROFILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A camera's way into the inference pool: through its motion gate (when enabled) into its mailbox.
pub struct GatedSink {
    camera: usize,
    camera_id: Arc<str>,
    gate: Option<MotionGate>,
    area: Arc<crate::area::Area>,
    next_profile_check: Instant,
    gated: telemetry::GateMetrics,
    mailboxes: Arc<Mailboxes>,
    /// Cluster mode: the ownership and the camera's group index; frames pass only while this
    /// node may analyse the group, so analysis stops at the next frame, not the next
    /// supervisor tick.
    /// `None` as the index: a group outside the ownership table, never this node's.
    fence: Option<(crate::cluster::Ownership, Option<usize>)>,
    /// Camera re-checks (视频核查): while one of this camera's is due, frames pass whatever
    /// the zones' schedule and motion say.
    rechecks: Option<crate::recheck::Rechecks>,
}

impl GatedSink {
    /// Frames pass while a re-check of this camera is due.
    pub fn with_rechecks(mut self, rechecks: crate::recheck::Rechecks) -> Self {
        self.rechecks = Some(rechecks);
        self
    }

    /// Camera `camera` of `area`, its zones scheduled at their rates.
    pub fn new(
        area: &Arc<crate::area::Area>,
        camera: usize,
        settings: &GateSettings,
        mailboxes: Arc<Mailboxes>,
    ) -> Result<Self, GateError> {
        let gate = if settings.enabled {
            let profile = area.profile_at(camera, time::OffsetDateTime::now_utc());
            let zones = ZoneSchedule::of_camera(area, camera, &profile);
            Some(MotionGate::with_zones(settings.clone(), &zones)?)
        } else {
            None
        };
        let camera_id: Arc<str> = Arc::from(area.cameras[camera].id.as_str());
        Ok(Self {
            camera,
            gated: telemetry::GateMetrics::new(&camera_id),
            camera_id,
            gate,
            area: area.clone(),
            next_profile_check: Instant::now() + PROFILE_CHECK_INTERVAL,
            mailboxes,
            fence: None,
            rechecks: None,
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
            if Instant::now() >= self.next_profile_check {
                self.next_profile_check = Instant::now() + PROFILE_CHECK_INTERVAL;
                let profile = self
                    .area
                    .profile_at(self.camera, time::OffsetDateTime::now_utc());
                gate.set_zones(&ZoneSchedule::of_camera(&self.area, self.camera, &profile));
            }
            let recheck = self
                .rechecks
                .as_ref()
                .is_some_and(|r| r.due(&self.camera_id));
            match gate.decide(&frame) {
                // The background model learned from the frame; a due re-check still needs it.
                Ok(Decision::Skip(_) | Decision::NotDue) if recheck => self.gated.periodic(),
                Ok(Decision::Skip(_)) => {
                    self.gated.skipped();
                    return Pushed::Skipped;
                }
                Ok(Decision::NotDue) => {
                    self.gated.not_due();
                    return Pushed::NotDue;
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

    fn busy_check(&self) -> Option<crate::ingest::BusyCheck> {
        let (mailboxes, camera) = (self.mailboxes.clone(), self.camera);
        Some(Arc::new(move || mailboxes.drop_if_waiting(camera)))
    }

    fn behind_check(&self) -> Option<crate::ingest::BusyCheck> {
        let (mailboxes, camera) = (self.mailboxes.clone(), self.camera);
        Some(Arc::new(move || mailboxes.behind(camera)))
    }

    fn overload_interval(&self) -> Option<crate::ingest::OverloadInterval> {
        let mailboxes = self.mailboxes.clone();
        Some(Arc::new(move || mailboxes.overload_interval_seconds()))
    }
}
