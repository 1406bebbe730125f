//! One hub per camera: the camera's encoded access units arrive once (from its own ingest
//! pipeline, so there is one upstream connection however many people watch) and go to every
//! viewer as fMP4 fragments through a bounded queue each. A viewer whose queue is full is cut
//! to the next keyframe: it never holds more than its queue, and never slows the camera or the
//! other viewers. The hub also keeps the last two groups of pictures (bounded in bytes), for a
//! viewer that joins (it starts at once, from the last keyframe) and for full-resolution
//! evidence ([`Hub::group_of_pictures`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use gstreamer as gst;
use tokio::sync::mpsc;

use super::fmp4::{self, Sample, TIMESCALE, Track};
use super::settings::LiveSettings;
use crate::telemetry;

/// Presentation times of this many recent access units are kept for aligning overlays.
const TIMES_KEPT: usize = 512;
/// Frame duration assumed before two frames have been seen (25 fps).
const DEFAULT_DURATION_TICKS: u32 = TIMESCALE / 25;

/// What a viewer is sent, in order.
#[derive(Clone)]
pub enum LiveMessage {
    /// A new stream (first, or after the camera restarted with other parameters): the
    /// browser resets its source buffer.
    Init { mime: Arc<str>, segment: Bytes },
    /// One access unit: `moof` + `mdat` header, then the camera's bytes untouched.
    Fragment(Arc<Fragment>),
    /// Metadata as JSON (objects, open cases, the source's state).
    Text(Arc<str>),
}

pub struct Fragment {
    pub header: Bytes,
    pub payload: Bytes,
    pub keyframe: bool,
    /// Presentation time on the fragment's timeline (what `video.currentTime` shows).
    pub media_seconds: f64,
    /// When the access unit reached gridwatch (for the latency the wall shows).
    pub received_unix_ms: u64,
}

/// What a camera's stream can be on the wall.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LiveSource {
    /// No encoded access unit yet (camera connecting, a raw test source, or a template
    /// without the `live` branch).
    Waiting,
    Video {
        mime: String,
        width: u16,
        height: u16,
    },
    /// The stream cannot be played by the browser: analysed stills, and why.
    Stills { reason: String },
}

struct Unit {
    buffer: gst::Buffer,
    pts: Option<gst::ClockTime>,
    sample: Sample,
    received_unix_ms: u64,
    fragment: Option<Arc<Fragment>>,
}

struct Viewer {
    id: u64,
    tx: mpsc::Sender<LiveMessage>,
    /// Cut: waits for the next keyframe (its queue was full).
    skipping: bool,
}

/// Decode times that never go back, across loops of a file and reconnects.
#[derive(Default)]
struct MediaClock {
    offset: i128,
    last: Option<(i128, u32)>,
}

impl MediaClock {
    /// Decode ticks and duration of an access unit with `dts` and `duration` (nanoseconds).
    fn stamp(&mut self, dts_ns: u64, duration_ns: Option<u64>) -> (u64, u32) {
        let raw = i128::from(dts_ns) * i128::from(TIMESCALE) / 1_000_000_000;
        let mut t = raw + self.offset;
        let mut duration = duration_ns
            .map(|d| (i128::from(d) * i128::from(TIMESCALE) / 1_000_000_000) as u32)
            .filter(|d| *d > 0);
        if let Some((last, last_duration)) = self.last {
            if t <= last {
                // The source restarted (a loop, a reconnect): continue after the last unit.
                self.offset += last + i128::from(last_duration) - t;
                t = last + i128::from(last_duration);
            } else if duration.is_none() {
                duration = u32::try_from(t - last).ok();
            }
        }
        let duration = duration.unwrap_or(DEFAULT_DURATION_TICKS);
        self.last = Some((t, duration));
        (u64::try_from(t.max(0)).unwrap_or(0), duration)
    }
}

#[derive(Default)]
struct State {
    caps: Option<gst::Caps>,
    track: Option<(Track, Arc<str>, Bytes)>,
    source: Option<LiveSource>,
    clock: MediaClock,
    sequence: u32,
    /// The last groups of pictures, oldest first, each starting at a keyframe.
    gops: VecDeque<Vec<Unit>>,
    cached_bytes: usize,
    /// Raw presentation time (ns) → media seconds, for aligning overlays.
    times: VecDeque<(u64, f64)>,
    viewers: Vec<Viewer>,
    next_viewer: u64,
}

/// One camera's live stream.
pub struct Hub {
    camera: Arc<str>,
    settings: LiveSettings,
    state: Mutex<State>,
}

/// A viewer's side: its queue and what the stream is.
pub struct Joined {
    pub id: u64,
    pub rx: mpsc::Receiver<LiveMessage>,
    pub source: LiveSource,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("camera {camera} already has {max} viewers")]
    TooMany { camera: String, max: usize },
}

impl Hub {
    pub fn new(camera: Arc<str>, settings: LiveSettings) -> Self {
        Self {
            camera,
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn camera(&self) -> &str {
        &self.camera
    }

    pub fn source(&self) -> LiveSource {
        self.lock().source.clone().unwrap_or(LiveSource::Waiting)
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// One access unit of the camera's stream (its ingest thread calls this).
    pub fn push(&self, caps: &gst::CapsRef, buffer: gst::Buffer) {
        let mut s = self.lock();
        if s.caps.as_ref().is_none_or(|c| c.as_ref() != caps) {
            self.set_caps(&mut s, caps);
        }
        let Some(dts) = buffer.dts().or(buffer.pts()) else {
            return;
        };
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let (decode_ticks, duration_ticks) = s
            .clock
            .stamp(dts.nseconds(), buffer.duration().map(|d| d.nseconds()));
        let composition_offset_ticks = buffer.pts().map_or(0, |pts| {
            (i128::from(pts.nseconds()) - i128::from(dts.nseconds())) * i128::from(TIMESCALE)
                / 1_000_000_000
        }) as i64;
        s.sequence = s.sequence.wrapping_add(1).max(1);
        let sample = Sample {
            sequence: s.sequence,
            decode_ticks,
            duration_ticks,
            composition_offset_ticks,
            size: u32::try_from(buffer.size()).unwrap_or(u32::MAX),
            keyframe,
        };
        if let Some(pts) = buffer.pts() {
            let seconds =
                (decode_ticks as f64 + composition_offset_ticks as f64) / f64::from(TIMESCALE);
            if s.times.len() == TIMES_KEPT {
                s.times.pop_front();
            }
            s.times.push_back((pts.nseconds(), seconds));
        }
        let unit = Unit {
            pts: buffer.pts(),
            buffer,
            sample,
            received_unix_ms: unix_ms(SystemTime::now()),
            fragment: None,
        };
        let playable = s.track.is_some();
        match self.cache(&mut s, unit) {
            _ if !playable || s.viewers.is_empty() => {}
            None => self.broadcast_last(&mut s),
            Some(uncached) => {
                if let Some(f) = self.fragment(true, &uncached) {
                    send_all(&self.camera, &mut s.viewers, &f);
                }
            }
        }
    }

    /// New caps: a new track (H.264) or stills (anything else); viewers are told.
    fn set_caps(&self, s: &mut State, caps: &gst::CapsRef) {
        s.caps = Some(caps.to_owned());
        s.gops.clear();
        s.cached_bytes = 0;
        s.track = None;
        let source = if !self.settings.enabled {
            LiveSource::Stills {
                reason: "live video is off ([live] enabled = false)".into(),
            }
        } else {
            match Track::from_caps(caps).and_then(|t| Ok((t.init_segment()?, t))) {
                Ok((segment, track)) => {
                    let mime: Arc<str> = Arc::from(track.mime());
                    let source = LiveSource::Video {
                        mime: mime.to_string(),
                        width: track.width(),
                        height: track.height(),
                    };
                    s.track = Some((track, mime, segment));
                    source
                }
                Err(e) => LiveSource::Stills {
                    reason: stills_reason(caps, &e),
                },
            }
        };
        tracing::info!(camera = %self.camera, source = ?source, "live stream");
        s.source = Some(source.clone());
        let text: Arc<str> = Arc::from(source_message(&source).as_str());
        let init = s
            .track
            .as_ref()
            .map(|(_, mime, segment)| LiveMessage::Init {
                mime: mime.clone(),
                segment: segment.clone(),
            });
        // The new stream starts at its first keyframe for everyone; a viewer whose queue
        // cannot take the reset is dropped (its browser reconnects).
        s.viewers.retain_mut(|v| {
            v.skipping = true;
            let sent = v.tx.try_send(LiveMessage::Text(text.clone())).is_ok()
                && init
                    .as_ref()
                    .is_none_or(|m| v.tx.try_send(m.clone()).is_ok());
            if !sent {
                telemetry::live_viewer_dropped(&self.camera, "reset");
            }
            sent
        });
    }

    /// Keeps the unit in the last two groups of pictures, within the byte budget; gives it
    /// back when it cannot be kept (before the first keyframe, or a group larger than the
    /// budget: nothing is cached until the next keyframe).
    fn cache(&self, s: &mut State, unit: Unit) -> Option<Unit> {
        let size = unit.buffer.size();
        let budget = self.settings.cache_bytes();
        if unit.sample.keyframe {
            s.gops.push_back(Vec::new());
        }
        while s.gops.len() > 2 || (s.cached_bytes + size > budget && s.gops.len() > 1) {
            if let Some(old) = s.gops.pop_front() {
                s.cached_bytes -= old.iter().map(|u| u.buffer.size()).sum::<usize>();
            }
        }
        if s.gops.is_empty() {
            return Some(unit);
        }
        if s.cached_bytes + size > budget {
            s.gops.clear();
            s.cached_bytes = 0;
            return Some(unit);
        }
        s.cached_bytes += size;
        if let Some(gop) = s.gops.back_mut() {
            gop.push(unit);
        }
        None
    }

    fn fragment(&self, playable: bool, unit: &Unit) -> Option<Arc<Fragment>> {
        if !playable {
            return None;
        }
        let header = match fmp4::fragment_header(&unit.sample) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(camera = %self.camera, error = %e, "live fragment could not be written");
                return None;
            }
        };
        let payload = match unit.buffer.clone().into_mapped_buffer_readable() {
            Ok(m) => Bytes::from_owner(m),
            Err(_) => return None,
        };
        Some(Arc::new(Fragment {
            header,
            payload,
            keyframe: unit.sample.keyframe,
            media_seconds: (unit.sample.decode_ticks as f64
                + unit.sample.composition_offset_ticks as f64)
                / f64::from(TIMESCALE),
            received_unix_ms: unit.received_unix_ms,
        }))
    }

    /// Sends the unit just cached to every viewer.
    fn broadcast_last(&self, s: &mut State) {
        let Some(unit) = s.gops.back_mut().and_then(|g| g.last_mut()) else {
            return;
        };
        let fragment = match &unit.fragment {
            Some(f) => f.clone(),
            None => {
                let Some(f) = self.fragment(true, unit) else {
                    return;
                };
                unit.fragment = Some(f.clone());
                f
            }
        };
        send_all(&self.camera, &mut s.viewers, &fragment);
    }

    /// A new viewer: the stream's state, then (for video) the init segment and the current
    /// group of pictures, so the picture appears at once.
    pub fn join(&self) -> Result<Joined, JoinError> {
        let mut s = self.lock();
        self.forget_closed(&mut s);
        if s.viewers.len() >= self.settings.max_viewers_per_camera {
            return Err(JoinError::TooMany {
                camera: self.camera.to_string(),
                max: self.settings.max_viewers_per_camera,
            });
        }
        let (tx, rx) = mpsc::channel(self.settings.viewer_queue_frames + 2);
        let id = s.next_viewer;
        s.next_viewer += 1;
        let mut skipping = false;
        if let Some((_, mime, segment)) = &s.track {
            let _ = tx.try_send(LiveMessage::Init {
                mime: mime.clone(),
                segment: segment.clone(),
            });
            let playable = true;
            let mut fragments = Vec::new();
            if let Some(gop) = s.gops.back_mut() {
                for unit in gop.iter_mut() {
                    if unit.fragment.is_none() {
                        unit.fragment = self.fragment(playable, unit);
                    }
                    fragments.extend(unit.fragment.clone());
                }
            }
            if fragments.len() <= self.settings.viewer_queue_frames {
                for f in fragments {
                    let _ = tx.try_send(LiveMessage::Fragment(f));
                }
            } else {
                skipping = true;
            }
        }
        s.viewers.push(Viewer { id, tx, skipping });
        telemetry::live_viewers(&self.camera, s.viewers.len());
        Ok(Joined {
            id,
            rx,
            source: s.source.clone().unwrap_or(LiveSource::Waiting),
        })
    }

    /// Forgets viewers gone without a word (a WebSocket upgrade that never finished, a closed
    /// socket on a camera that sends no video, so `send_all` never notices).
    fn forget_closed(&self, s: &mut State) {
        let before = s.viewers.len();
        s.viewers.retain(|v| !v.tx.is_closed());
        if s.viewers.len() != before {
            telemetry::live_viewers(&self.camera, s.viewers.len());
        }
    }

    /// Ends every viewer's stream (their sockets close; the tiles reconnect): the camera at
    /// this place was replaced by a reload and this hub gets nothing any more.
    pub fn disconnect_all(&self) {
        let mut s = self.lock();
        s.viewers.clear();
        telemetry::live_viewers(&self.camera, 0);
    }

    pub fn leave(&self, id: u64) {
        let mut s = self.lock();
        s.viewers.retain(|v| v.id != id);
        telemetry::live_viewers(&self.camera, s.viewers.len());
    }

    /// Metadata for the viewers of the frame presented at `pts` (raw stream nanoseconds):
    /// `make` gets the frame's media time and writes the JSON. Nothing is built without
    /// viewers, or for a frame no longer known.
    pub fn annotate(&self, pts_ns: u64, make: impl FnOnce(f64) -> String) {
        let seconds = {
            let s = self.lock();
            if s.viewers.is_empty() {
                return;
            }
            match nearest(s.times.iter().rev(), pts_ns, |(p, _)| *p) {
                Some(&(_, seconds)) => seconds,
                None => return,
            }
        };
        // The JSON is built without the lock: the camera's streaming thread takes it per unit.
        let text: Arc<str> = Arc::from(make(seconds).as_str());
        let mut s = self.lock();
        self.forget_closed(&mut s);
        for v in &mut s.viewers {
            if v.tx.try_send(LiveMessage::Text(text.clone())).is_err() {
                telemetry::live_messages_dropped(&self.camera, "metadata");
            }
        }
    }

    /// The cached group of pictures that holds the frame presented at `pts` (raw stream
    /// nanoseconds), or the latest one: the caps, the units from its keyframe on, and the
    /// presentation time to pick (the last unit's for `None`). `None` when nothing is cached.
    pub fn group_of_pictures(
        &self,
        pts: Option<gst::ClockTime>,
    ) -> Option<(gst::Caps, Vec<gst::Buffer>, Option<gst::ClockTime>)> {
        let s = self.lock();
        let caps = s.caps.clone()?;
        let (gop, target) = match pts {
            None => {
                let gop = s.gops.back()?;
                (gop, gop.iter().filter_map(|u| u.pts).max())
            }
            Some(p) => {
                let units = s.gops.iter().flat_map(|g| g.iter().filter_map(|u| u.pts));
                let found = nearest(units, p.nseconds(), |t| t.nseconds())?;
                let gop = s
                    .gops
                    .iter()
                    .find(|g| g.iter().any(|u| u.pts == Some(found)))?;
                (gop, Some(found))
            }
        };
        if gop.is_empty() {
            return None;
        }
        Some((caps, gop.iter().map(|u| u.buffer.clone()).collect(), target))
    }
}

/// A decoded frame's time may be re-stamped by the analysis branch (its rate converter puts
/// frames on the analysis grid): the access unit nearest to it, within this, is that frame.
const PTS_MATCH_NS: u64 = 30_000_000;

/// The item whose time is nearest to `pts_ns`, if within [`PTS_MATCH_NS`].
fn nearest<T>(items: impl Iterator<Item = T>, pts_ns: u64, time: impl Fn(&T) -> u64) -> Option<T> {
    items
        .map(|i| (time(&i).abs_diff(pts_ns), i))
        .filter(|(d, _)| *d <= PTS_MATCH_NS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, i)| i)
}

/// Sends a fragment to every viewer; a full queue cuts the viewer to the next keyframe, a
/// closed one removes it.
fn send_all(camera: &str, viewers: &mut Vec<Viewer>, f: &Arc<Fragment>) {
    viewers.retain_mut(|v| {
        if v.skipping && !f.keyframe {
            return true;
        }
        match v.tx.try_send(LiveMessage::Fragment(f.clone())) {
            Ok(()) => {
                v.skipping = false;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !v.skipping {
                    telemetry::live_viewer_cut(camera);
                    tracing::debug!(
                        camera,
                        viewer = v.id,
                        "live viewer fell behind: cut to the next keyframe"
                    );
                }
                v.skipping = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

fn stills_reason(caps: &gst::CapsRef, e: &fmp4::Fmp4Error) -> String {
    let name = caps
        .structure(0)
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    match name.as_str() {
        "video/x-h265" => "H.265: browsers without hardware HEVC cannot play it; the wall shows analysed stills (no transcode on this node)".into(),
        "video/x-h264" => format!("H.264 in a form the wall cannot pass through: {e}"),
        other => format!("{other}: only H.264 is played live; the wall shows analysed stills"),
    }
}

/// The JSON a viewer gets about the stream's state.
pub fn source_message(source: &LiveSource) -> String {
    serde_json::json!({"type": "source", "source": source}).to_string()
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
