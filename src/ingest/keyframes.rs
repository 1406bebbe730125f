//! Keyframes-only decoding, on request or chosen by itself: a probe in front of each video
//! decoder measures the stream's keyframe interval and, while the mode is on, drops every delta
//! unit and every keyframe the analysis rate does not need, so only the keyframes that will be
//! analysed are decoded. A camera whose analysis rate is at or below its stream's keyframe rate
//! switches to it without a rebuild (the decoder simply stops receiving deltas); switching back
//! waits for the next keyframe, so the decoder never gets a delta whose reference it did not see.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::area::profile::Profile;

/// The keyframe gaps kept: the largest of the recent ones decides (a stream whose GOP varies,
/// e.g. with scene cuts, must have a keyframe in *every* analysis interval).
const GAPS_KEPT: usize = 8;
/// Gaps measured before the mode is chosen by itself.
const MIN_GAPS: usize = 2;
/// A gap longer than this is a pause of the source (a reconnect), not the stream's GOP.
const MAX_GAP_SECONDS: f64 = 60.0;

#[derive(Default)]
struct Gaps {
    last_pts: Option<f64>,
    recent: [f64; GAPS_KEPT],
    count: usize,
}

/// One camera's keyframe clock and mode, shared by its pipelines' decoder probes; kept across
/// rebuilds, so a reconnect does not forget what was measured.
#[derive(Clone, Default)]
pub struct KeyframeClock {
    gaps: Arc<Mutex<Gaps>>,
    only: Arc<AtomicBool>,
    /// The analysis rate (f64 bits; 0: every keyframe), for keyframes-only decoding.
    fps_bits: Arc<AtomicU64>,
}

impl KeyframeClock {
    /// A clock whose mode is on from the start (`keyframes_only` asked for).
    pub fn only() -> Self {
        let clock = Self::default();
        clock.only.store(true, Ordering::Relaxed);
        clock
    }

    /// The largest recent keyframe interval, in stream seconds, once enough are measured.
    pub fn interval_seconds(&self) -> Option<f64> {
        let g = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.count.min(GAPS_KEPT);
        (n >= MIN_GAPS).then(|| g.recent[..n].iter().copied().fold(0.0, f64::max))
    }

    /// Keyframes-only under `profile`: as configured, else on when every analysis interval
    /// holds a keyframe (the rate is at or below the stream's keyframe rate).
    pub fn choose(&self, profile: &Profile) -> bool {
        profile.keyframes_only.unwrap_or_else(|| {
            self.interval_seconds()
                .is_some_and(|gap| profile.analysis_fps * gap <= 1.0 + 1e-9)
        })
    }

    /// The rate keyframes are decoded at in keyframes-only mode.
    pub fn set_fps(&self, fps: f64) {
        self.fps_bits.store(fps.to_bits(), Ordering::Relaxed);
    }

    fn fps(&self) -> f64 {
        f64::from_bits(self.fps_bits.load(Ordering::Relaxed))
    }

    pub fn is_only(&self) -> bool {
        self.only.load(Ordering::Relaxed)
    }

    /// Sets the mode; takes effect at the next buffer (switching off: at the next keyframe).
    pub fn set_only(&self, on: bool) {
        self.only.store(on, Ordering::Relaxed);
    }

    /// Keyframes-only: whether the keyframe at `pts` serves the next analysis slot (within half
    /// a keyframe interval of it); advances the slot when it does.
    fn due(&self, pts: Option<f64>, next_due: &Mutex<Option<f64>>) -> bool {
        let fps = self.fps();
        let (Some(t), true) = (pts, fps > 0.0) else {
            return true;
        };
        let step = 1.0 / fps;
        let half_gap = self.interval_seconds().unwrap_or(0.0) * 0.5;
        let mut next = next_due.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_some_and(|n| t < n - half_gap) {
            return false;
        }
        // The next slot follows this one; after a jump (loop, reconnect) it starts over here.
        *next = Some(match *next {
            Some(n) if (t - n).abs() < step => n + step,
            _ => t + step,
        });
        true
    }

    fn keyframe(&self, pts_seconds: Option<f64>) {
        let Some(t) = pts_seconds else { return };
        let mut g = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = g.last_pts {
            let gap = t - last;
            // Backwards (a loop or a seek) or a pause: start over from this keyframe.
            if gap > 0.0 && gap <= MAX_GAP_SECONDS {
                let i = g.count % GAPS_KEPT;
                g.recent[i] = gap;
                g.count += 1;
            }
        }
        g.last_pts = Some(t);
    }

    /// Installs the probe on `element` if it is a video decoder.
    pub fn watch(&self, element: &gst::Element) {
        let is_video_decoder = element
            .factory()
            .is_some_and(|f| f.klass().contains("Decoder") && f.klass().contains("Video"));
        if !is_video_decoder {
            return;
        }
        let Some(pad) = element.static_pad("sink") else {
            return;
        };
        let clock = self.clone();
        // Dropping since the last keyframe: a delta is dropped when its keyframe was.
        let dropping = AtomicBool::new(false);
        let next_due = Mutex::new(None::<f64>);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                let pts = buffer.pts().map(|t| t.nseconds() as f64 / 1e9);
                clock.keyframe(pts);
                let wanted = !clock.is_only() || clock.due(pts, &next_due);
                dropping.store(!wanted, Ordering::Relaxed);
                if wanted {
                    return gst::PadProbeReturn::Ok;
                }
                drop(info.data.take());
                return gst::PadProbeReturn::Handled;
            }
            if clock.is_only() {
                dropping.store(true, Ordering::Relaxed);
            }
            if !dropping.load(Ordering::Relaxed) {
                return gst::PadProbeReturn::Ok;
            }
            // Take the buffer and report it handled: `Drop` here makes GStreamer unref it twice.
            drop(info.data.take());
            gst::PadProbeReturn::Handled
        });
    }
}

/// Drops every non-keyframe before a video decoder, so only keyframes are decoded.
pub fn keyframes_only_probe(element: &gst::Element) {
    KeyframeClock::only().watch(element);
}
