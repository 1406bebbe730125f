//! Per-camera health as the rest of the system sees it: the state machine's current state, last
//! frame time, reconnects and drops. Camera threads write it; the status endpoint and metrics
//! read it. Every state change is logged once, with the reason.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::telemetry;

/// The per-camera state machine: connecting → streaming → stalled → backoff → connecting; files
/// end; schedules make a camera inactive outside its active hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    Connecting,
    Streaming,
    Stalled,
    Backoff,
    /// Outside the group's active hours: the pipeline is stopped on purpose.
    Inactive,
    /// A finite file reached its end.
    Ended,
    /// A finite file could not be read; it is not retried.
    Failed,
    Stopped,
    /// Cluster mode: its group is owned by another node (or by none while nodes hand over).
    Standby,
}

impl CameraState {
    pub const ALL: [CameraState; 9] = [
        CameraState::Connecting,
        CameraState::Streaming,
        CameraState::Stalled,
        CameraState::Backoff,
        CameraState::Inactive,
        CameraState::Ended,
        CameraState::Failed,
        CameraState::Stopped,
        CameraState::Standby,
    ];

    /// Whether a pipeline runs (or is being built) in this state: the only states in which a
    /// camera decodes, and so can be held under overload.
    pub fn runs_a_pipeline(self) -> bool {
        matches!(
            self,
            CameraState::Connecting | CameraState::Streaming | CameraState::Stalled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Backoff => "backoff",
            CameraState::Inactive => "inactive",
            CameraState::Ended => "ended",
            CameraState::Failed => "failed",
            CameraState::Stopped => "stopped",
            CameraState::Standby => "standby",
        }
    }
}

/// What the status endpoint reports for one camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub group: String,
    /// The source, with any password removed.
    pub source: String,
    pub state: CameraState,
    #[serde(with = "time::serde::rfc3339")]
    pub state_since: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_frame_at: Option<time::OffsetDateTime>,
    pub frames: u64,
    /// Frames replaced in the camera's mailbox before inference took them (realtime pace).
    pub dropped: u64,
    /// Frames the motion gate kept from inference (nothing moved).
    pub skipped_no_motion: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub last_error: Option<String>,
    /// Width × height of the analysed frames.
    pub frame_size: Option<(u32, u32)>,
    /// How late the last frame reached the analysis behind its time on the pipeline clock, in
    /// seconds: decoding behind real time, and a live source's own delays (network, depayloading).
    pub lag_seconds: f64,
    pub analysis_fps: f64,
    /// `zones` (the highest need of the camera's zones) or `override` (a group's or phase's rate).
    pub analysis_rate_from: &'static str,
    /// Decoding keyframes only now (configured, or chosen from the stream's keyframe rate).
    pub keyframes_only: bool,
    /// The largest recent gap between the stream's keyframes, once measured.
    pub keyframe_interval_seconds: Option<f64>,
    /// Decoding each GOP only up to its last analysis slot now (`[ingest] skip_gop_tails`).
    pub skips_gop_tails: bool,
    /// Under overload, the slower rate the camera is held to (`[inference]
    /// thin_under_overload`); `None`: it analyses at `analysis_fps`.
    pub held_to_fps: Option<f64>,
    pub phase: Option<String>,
}

impl CameraStatus {
    /// A camera about to connect: nothing seen yet. `source` with any password removed.
    pub fn connecting((id, name): (&str, &str), (unit, group): (&str, &str), source: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            unit: unit.to_owned(),
            group: group.to_owned(),
            source: source.to_owned(),
            state: CameraState::Connecting,
            state_since: time::OffsetDateTime::now_utc(),
            last_frame_at: None,
            frames: 0,
            dropped: 0,
            skipped_no_motion: 0,
            reconnects: 0,
            stalls: 0,
            last_error: None,
            frame_size: None,
            lag_seconds: 0.0,
            analysis_fps: 0.0,
            analysis_rate_from: "override",
            keyframes_only: false,
            keyframe_interval_seconds: None,
            skips_gop_tails: false,
            held_to_fps: None,
            phase: None,
        }
    }
}

struct Entry {
    status: CameraStatus,
    last_frame: Option<Instant>,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct CameraRegistry {
    inner: Arc<Mutex<Vec<Entry>>>,
}

impl std::fmt::Debug for CameraRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraRegistry")
            .field("cameras", &self.lock().len())
            .finish()
    }
}

impl CameraRegistry {
    pub fn add(&self, status: CameraStatus) -> usize {
        let mut v = self.lock();
        v.push(Entry {
            status,
            last_frame: None,
        });
        v.len() - 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the reason shown with the state (a wait that is over, not an error).
    pub fn clear_reason(&self, camera: usize) {
        if let Some(e) = self.lock().get_mut(camera) {
            e.status.last_error = None;
        }
    }

    /// Moves a camera to `state`, logging the change (not repeats) with its reason; a repeat
    /// only updates the reason.
    pub fn set_state(&self, camera: usize, state: CameraState, reason: Option<&str>) {
        let mut v = self.lock();
        let Some(e) = v.get_mut(camera) else { return };
        if e.status.state == state {
            if let Some(r) = reason {
                e.status.last_error = Some(r.to_owned());
            }
            return;
        }
        let from = e.status.state;
        e.status.state = state;
        e.status.state_since = time::OffsetDateTime::now_utc();
        if !state.runs_a_pipeline() {
            // Nothing decodes, so nothing is held; the next start sets it again.
            e.status.held_to_fps = None;
        }
        match state {
            CameraState::Connecting if from == CameraState::Backoff => e.status.reconnects += 1,
            CameraState::Stalled => e.status.stalls += 1,
            _ => {}
        }
        if let Some(r) = reason {
            e.status.last_error = Some(r.to_owned());
        }
        telemetry::camera_state(&e.status.id, from.as_str(), state.as_str());
        let id = e.status.id.clone();
        let source = e.status.source.clone();
        drop(v);
        match (state, reason) {
            (CameraState::Stalled | CameraState::Backoff | CameraState::Failed, Some(r)) => {
                tracing::warn!(camera = %id, source = %source, from = from.as_str(), to = state.as_str(), reason = %r, "camera state")
            }
            _ => {
                tracing::info!(camera = %id, source = %source, from = from.as_str(), to = state.as_str(), "camera state")
            }
        }
    }

    /// A frame of `width` × `height` reached the analysis `lag_seconds` late.
    pub fn frame(&self, camera: usize, (width, height): (u32, u32), lag_seconds: f64) {
        let mut v = self.lock();
        if let Some(e) = v.get_mut(camera) {
            e.last_frame = Some(Instant::now());
            e.status.last_frame_at = Some(time::OffsetDateTime::from(SystemTime::now()));
            e.status.frames += 1;
            e.status.frame_size = Some((width, height));
            e.status.lag_seconds = lag_seconds;
        }
    }

    pub fn dropped(&self, camera: usize) {
        if let Some(e) = self.lock().get_mut(camera) {
            e.status.dropped += 1;
        }
    }

    pub fn skipped(&self, camera: usize) {
        if let Some(e) = self.lock().get_mut(camera) {
            e.status.skipped_no_motion += 1;
        }
    }

    /// The camera's profile, and the rate it is held to (`fps`, when slower under overload).
    pub fn set_profile(
        &self,
        camera: usize,
        (profile, fps): (&crate::area::profile::Profile, f64),
        keyframes: &super::KeyframeClock,
    ) {
        let mut v = self.lock();
        if let Some(e) = v.get_mut(camera) {
            e.status.analysis_fps = profile.analysis_fps;
            e.status.held_to_fps = (fps != profile.analysis_fps).then_some(fps);
            e.status.analysis_rate_from = match profile.rate {
                crate::area::profile::RateSource::Zones => "zones",
                crate::area::profile::RateSource::Override => "override",
            };
            e.status.keyframes_only = keyframes.is_only();
            e.status.keyframe_interval_seconds = keyframes.interval_seconds();
            e.status.skips_gop_tails = keyframes.skips_tails();
            e.status.phase = profile.phase.clone();
        }
    }

    /// Seconds since the camera's last frame, if it had one.
    pub fn last_frame_age_seconds(&self, camera: usize) -> Option<f64> {
        self.lock()
            .get(camera)
            .and_then(|e| e.last_frame)
            .map(|t| t.elapsed().as_secs_f64())
    }

    pub fn state(&self, camera: usize) -> Option<CameraState> {
        self.lock().get(camera).map(|e| e.status.state)
    }

    pub fn snapshot(&self) -> Vec<CameraStatus> {
        self.lock().iter().map(|e| e.status.clone()).collect()
    }

    /// Refreshes the gauges that depend on time passing (frame age).
    pub fn export_gauges(&self) {
        for e in self.lock().iter() {
            if let Some(t) = e.last_frame {
                telemetry::camera_frame_age(&e.status.id, t.elapsed().as_secs_f64());
            }
        }
    }
}

/// The uri with any password replaced, for logs and status.
pub fn redact(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str) -> CameraStatus {
        CameraStatus {
            state: CameraState::Streaming,
            analysis_fps: 1.0,
            held_to_fps: Some(0.25),
            ..CameraStatus::connecting((id, id), ("u", "g"), "a.mp4")
        }
    }

    #[test]
    fn a_camera_whose_pipeline_stops_is_no_longer_shown_held() {
        let registry = CameraRegistry::default();
        for (state, still_held) in [
            (CameraState::Stalled, true),
            (CameraState::Connecting, true),
            (CameraState::Ended, false),
            (CameraState::Backoff, false),
            (CameraState::Inactive, false),
            (CameraState::Standby, false),
            (CameraState::Stopped, false),
            (CameraState::Failed, false),
        ] {
            let camera = registry.add(held(state.as_str()));
            registry.set_state(camera, state, None);
            let status = &registry.snapshot()[camera];
            assert_eq!(status.held_to_fps.is_some(), still_held, "{state:?}");
        }
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact("rtsp://admin:hunter2@10.0.0.5:554/ch1"),
            "rtsp://admin:***@10.0.0.5:554/ch1"
        );
        assert_eq!(super::redact("rtsp://10.0.0.5/ch1"), "rtsp://10.0.0.5/ch1");
        assert_eq!(super::redact("../a.mp4"), "../a.mp4");
    }
}
