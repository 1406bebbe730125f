//! Live view stage: each camera's encoded stream, taken from its own ingest pipeline before
//! decoding (the template's `appsink name=live` branch), passed through to the patrol wall as
//! fragmented MP4 (`fmp4`) by one hub per camera (`hub`), with the pipeline's detections
//! aligned to it by presentation time, and decoded at the camera's resolution only when a case
//! needs its picture (`snapshot`).
//!
//! Why fMP4 over a WebSocket to Media Source Extensions, not WebRTC: H.264 goes to the browser
//! byte for byte (no encoder, no RTP packetiser, no jitter buffer or ICE/DTLS per viewer), one
//! TCP connection per tile through the console's own port and sign-in, and a slow viewer is
//! handled by dropping whole fragments up to a keyframe, which MSE tolerates; WebRTC's
//! lower floor (no MSE buffering) is not needed for a sub-second wall on a LAN.

pub mod fmp4;
pub mod hub;
pub mod settings;
pub mod snapshot;

use std::sync::{Arc, RwLock};

use gstreamer as gst;

pub use hub::{Hub, JoinError, Joined, LiveMessage, LiveSource};
pub use settings::LiveSettings;

use crate::infer::Detection;
use crate::ingest::{EncodedSink, Frame};

/// The hubs of the configured cameras (by configuration index); cheap to clone.
#[derive(Clone, Default)]
pub struct LiveHubs {
    inner: Arc<RwLock<Vec<Option<Arc<Hub>>>>>,
    settings: LiveSettings,
}

impl std::fmt::Debug for LiveHubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHubs").finish_non_exhaustive()
    }
}

impl LiveHubs {
    pub fn new(settings: &LiveSettings) -> Self {
        Self {
            inner: Arc::default(),
            settings: settings.clone(),
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// The hub of camera `index` (id `camera`): created on first use, replaced when a reload
    /// put another camera at that index.
    pub fn hub_for(&self, index: usize, camera: &str) -> Arc<Hub> {
        let mut v = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if v.len() <= index {
            v.resize_with(index + 1, || None);
        }
        match &v[index] {
            Some(h) if h.camera() == camera => h.clone(),
            old => {
                if let Some(old) = old {
                    old.disconnect_all();
                }
                let hub = Arc::new(Hub::new(Arc::from(camera), self.settings.clone()));
                v[index] = Some(hub.clone());
                hub
            }
        }
    }

    /// What the camera's ingest pipeline hands its encoded access units to.
    pub fn sink(&self, index: usize, camera: &str) -> Arc<dyn EncodedSink> {
        self.hub_for(index, camera)
    }

    pub fn hub(&self, index: usize) -> Option<Arc<Hub>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
            .flatten()
    }

    /// The camera's frame presented at `frame`'s time, decoded at the camera's resolution
    /// from the cached stream; `None` when it is off, not cached (a raw source, a frame older
    /// than the cached groups) or does not decode (logged).
    pub fn full_resolution(&self, frame: &Frame) -> Option<Frame> {
        self.full_resolution_at(frame.camera, frame.pts.map(gst::ClockTime::from_nseconds))
            .map(|d| Frame::decoded(frame, &d.info, d.buffer))
    }

    /// The camera's latest frame, or the one presented at `pts`, decoded at full resolution.
    pub fn full_resolution_at(
        &self,
        camera: usize,
        pts: Option<gst::ClockTime>,
    ) -> Option<snapshot::Decoded> {
        if !self.settings.full_resolution_evidence {
            return None;
        }
        let hub = self.hub(camera)?;
        let (caps, units, target) = hub.group_of_pictures(pts)?;
        match snapshot::decode(&caps, &units, target) {
            Ok(d) => {
                crate::telemetry::full_resolution_evidence("decoded");
                Some(d)
            }
            Err(e) => {
                crate::telemetry::full_resolution_evidence("failed");
                tracing::warn!(camera = %hub.camera(), error = %e, "full-resolution evidence failed; the analysed frame is used");
                None
            }
        }
    }
}

impl EncodedSink for Hub {
    fn push(&self, caps: &gst::CapsRef, buffer: gst::Buffer) {
        Hub::push(self, caps, buffer);
    }
}

/// The objects of every analysed frame go to the viewers of its camera, stamped with the
/// frame's time on the live video's timeline.
impl crate::scenarios::FrameObserver for LiveHubs {
    fn ensure_cameras(&self, _cameras: usize) {}

    fn seen(&self, frame: &Frame, objects: &[Detection]) {
        let (Some(pts), Some(hub)) = (frame.pts, self.hub(frame.camera)) else {
            return;
        };
        hub.annotate(pts, |t| {
            let objects: Vec<_> = objects
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "label": &*d.label,
                        "kind": d.kind.as_str(),
                        "score": (d.score * 100.0).round() / 100.0,
                        "box": d.bbox,
                    })
                })
                .collect();
            serde_json::json!({"type": "objects", "t": t, "seq": frame.seq, "objects": objects})
                .to_string()
        });
    }
}
