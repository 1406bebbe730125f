//! Decoding only what the analysis needs: a probe in front of each video decoder measures the
//! stream's keyframe interval and drops encoded units no analysed frame depends on, before they
//! cost a decode.
//! - **Keyframes only**: while the mode is on, every delta unit and every keyframe the analysis
//!   rate does not need is dropped, so only the keyframes that will be analysed are decoded. A
//!   camera whose analysis rate is at or below its stream's keyframe rate switches to it without
//!   a rebuild (the decoder simply stops receiving deltas); switching back waits for the next
//!   keyframe, so the decoder never gets a delta whose reference it did not see.
//! - **GOP tails**: a faster camera needs the frames of a group of pictures only up to its last
//!   analysis slot before the next keyframe (1 frame/s on a 2 s GOP: frames 0 to 1.0 s of each
//!   2 s), so the deltas after that slot are dropped until the next keyframe. Only for streams
//!   whose units arrive in presentation order (no B-frames: a dropped unit could be a reference
//!   of an earlier picture otherwise); a stream seen reordering is never trimmed again. Only a
//!   fixed GOP (the recent keyframe gaps agree) is trimmed, since the next keyframe must be
//!   foreseen: keyframes at scene cuts or a "smart" codec's varying GOP are decoded whole. A
//!   camera that lengthens its GOP costs the slots of one GOP; its gaps then disagree until the
//!   window holds only the new interval.
//! - **Shedding late units**: at realtime pace, a decoder that falls behind real time (the CPU
//!   is overloaded) would spend it on frames that are late already, and fall further behind. So
//!   a keyframe that reaches the decoder more than `[ingest] max_decode_lag_ms` late, beyond
//!   the stream's usual lateness (the least of the recent units', at least 0: an RTSP
//!   jitter buffer delays every unit alike, a replay's units come early), is not decoded, nor is
//!   the rest of its GOP; nor is the rest of a GOP once one of its deltas arrives that late (one
//!   GOP can take longer to decode than the lag allowed). Dropping costs nothing, so the decoder
//!   is back on time at the next keyframe, which is judged afresh. Per camera: only the cameras
//!   whose decoders fall behind shed, as much as they fall behind.
//! - **Shedding under overload**: at realtime pace, when a keyframe the analysis needs arrives
//!   in keyframes-only mode while the camera's previous frame still waits for the model
//!   (younger than half its age bound, see `Mailboxes::behind`), the keyframe is not decoded:
//!   its frame would only be dropped as superseded after a decode that takes CPU from the model.
//!   Per camera, so only the cameras whose frames wait shed. Not while decoding whole GOPs: one
//!   shed keyframe would cost every analysis slot of its group of pictures (measured: an
//!   overloaded worker then analysed 18 % fewer frames), while only the first would have been
//!   superseded. Off by default (`[ingest] shed_when_behind`): measured while the templates
//!   still chose the frames with `videorate`, which held each frame until the next arrived,
//!   so the frame found waiting was rarely the one this keyframe would replace.
//! - **The analysis rate**: of the pictures the decoder puts out, only the first at or after
//!   each analysis slot goes further (to scaling and conversion); at once, where
//!   `videorate` held each frame until the next one arrived (a whole analysis interval when only
//!   the needed keyframes are decoded: 5 s on a street camera).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::area::profile::Profile;
use crate::telemetry::DecodeSkipMetrics;

/// The keyframe gaps kept: the largest of the recent ones decides (a stream whose GOP varies,
/// e.g. with scene cuts, must have a keyframe in *every* analysis interval).
const GAPS_KEPT: usize = 8;
/// Gaps measured before the mode is chosen by itself.
const MIN_GAPS: usize = 2;
/// A gap longer than this is a pause of the source (a reconnect), not the stream's GOP.
const MAX_GAP_SECONDS: f64 = 60.0;
/// Delta units whose lateness at the decoder is kept: the least is the deltas' usual lateness.
/// 256 spans 10 s at 25 frames/s, long enough for a decoder behind real time to have caught up
/// once (a shed GOP costs nothing to skip).
const DELTA_LATENESS_KEPT: usize = 256;
/// Keyframes whose lateness is kept, apart from the deltas': on a slow or paced link a large
/// keyframe reaches the decoder later than the deltas, every time. 16 spans 32 s at a
/// keyframe every 2 s.
const KEYFRAME_LATENESS_KEPT: usize = 16;
/// A camera that has passed on no picture for this many analysis intervals decodes what comes,
/// late or not: shedding must never silence a camera.
const MAX_INTERVALS_WITHOUT_PICTURE: f64 = 3.0;
/// Gaps measured before GOP tails are trimmed: they must agree (a fixed GOP).
const MIN_REGULAR_GAPS: usize = 3;
/// Recent gaps that differ by more than this are an irregular GOP (keyframes at scene cuts, a
/// "smart" codec): its next keyframe cannot be foreseen, so no tail is trimmed.
const REGULAR_GAP_TOLERANCE_SECONDS: f64 = 0.06;

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
    /// Dropping the deltas after a GOP's last analysis slot (see the module doc).
    tails: Arc<AtomicBool>,
    /// Units were seen out of presentation order (B-frames): tails are never trimmed.
    reordered: Arc<AtomicBool>,
    /// The analysis rate (f64 bits; 0: every keyframe), for keyframes-only decoding.
    fps_bits: Arc<AtomicU64>,
    /// Counters of the dropped units, when the clock belongs to a named camera.
    skipped: Option<DecodeSkipMetrics>,
    /// When a needed keyframe is left undecoded under overload (see the module doc).
    shedding: Arc<Mutex<Shedding>>,
}

/// When a camera leaves the keyframes it needs undecoded under overload (see the module doc).
#[derive(Clone, Default)]
pub struct Shedding {
    /// Whether the analysis downstream is behind (keyframes only); `None`: never asked.
    pub behind: Option<super::BusyCheck>,
    /// The most a needed keyframe may reach the decoder late, beyond the stream's usual
    /// lateness, in seconds; later, its group of pictures is shed. `None`: never.
    pub max_lag_seconds: Option<f64>,
    /// A shed keyframe waits for its time on the pipeline clock, as the synchronising sink
    /// would have: a replayed file must not race ahead while its keyframes are shed.
    pub paced: bool,
    /// Told at each keyframe left undecoded (shed, or not needed at the rate): the camera is
    /// alive, it only sheds or skips (the stall watchdog).
    pub alive: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// A GOP's state in one decoder probe.
#[derive(Default)]
struct ProbeState {
    /// Dropping until the next keyframe, and why: a delta is dropped when its keyframe was
    /// (keyframes only), or once the GOP's last needed unit has passed (its tail).
    dropping: Option<Skip>,
    /// The next analysis slot, keyframes only.
    next_due: Option<f64>,
    /// The last keyframe's presentation time.
    keyframe_pts: Option<f64>,
    /// The last unit the decoder got in this GOP.
    last_kept_pts: Option<f64>,
    /// Where the analysis slots start: the decoder's first picture, again after a flush (a loop
    /// or a seek) or a jump back.
    anchor: Option<f64>,
    /// The next analysis slot a decoded picture may serve (see [`KeyframeClock::serves_slot`]).
    next_slot: Option<f64>,
    /// The last unit's presentation time (reordering shows as a step back).
    last_pts: Option<f64>,
    /// How late the recent keyframes and deltas reached the decoder; per pipeline, since a
    /// rebuilt pipeline has another clock base.
    keyframe_lateness: Lateness,
    delta_lateness: Lateness,
    /// When the last picture went on to the analysis.
    last_picture: Option<std::time::Instant>,
    /// The GOP before this one was shed late: on a stream with B-frames, the deltas that
    /// precede this keyframe in presentation may refer to its pictures.
    after_late_gop: bool,
    /// The analysis interval the next slots were laid at (see [`ProbeState::restep`]).
    step: Option<f64>,
}

/// The recent lateness of one kind of unit at the decoder, in seconds (a ring).
#[derive(Default)]
struct Lateness {
    recent: Vec<f64>,
    count: usize,
}

impl Lateness {
    fn record(&mut self, l: f64, kept: usize) {
        if self.recent.len() < kept {
            self.recent.push(l);
        } else {
            self.recent[self.count % kept] = l;
        }
        self.count += 1;
    }

    /// The least recent lateness, at least 0 (a replay's units come early while its decoder
    /// keeps up; late counts from on time).
    fn usual(&self) -> f64 {
        self.recent
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(0.0)
    }
}

/// A stream time in seconds.
fn seconds(t: gst::ClockTime) -> f64 {
    t.nseconds() as f64 / 1e9
}

impl ProbeState {
    /// Records how late a unit (a keyframe or not) reached the decoder, and says whether it is
    /// late by more than `max` beyond the usual lateness of its kind (a live source delays
    /// every unit alike: its network, its depayloader; a large keyframe more than the deltas).
    /// Never while no picture has gone on for [`MAX_INTERVALS_WITHOUT_PICTURE`] intervals of
    /// `interval` seconds: the camera decodes what comes until one does.
    fn late(
        &mut self,
        (lateness, keyframe): (Option<f64>, bool),
        max: Option<f64>,
        interval: f64,
    ) -> bool {
        let Some(l) = lateness.filter(|l| l.is_finite()) else {
            return false;
        };
        let (kind, kept) = if keyframe {
            (&mut self.keyframe_lateness, KEYFRAME_LATENESS_KEPT)
        } else {
            (&mut self.delta_lateness, DELTA_LATENESS_KEPT)
        };
        kind.record(l, kept);
        let silent = self.last_picture.is_some_and(|at| {
            at.elapsed().as_secs_f64() > MAX_INTERVALS_WITHOUT_PICTURE * interval
        });
        max.is_some_and(|max| !silent && l - kind.usual() > max)
    }

    /// The decoder put out a picture: the first one after a start or a flush anchors the slots.
    fn picture_out(&mut self, pts: Option<f64>) {
        if self.anchor.is_none() {
            self.anchor = pts;
        }
    }

    /// The rate changed without a rebuild (a camera held to a slower one under overload, or let
    /// go): the next slots move to the new interval `step` from the last slot served, so that a
    /// camera let go does not wait out a long held interval, nor does a held one offer at once.
    fn restep(&mut self, step: f64) {
        if let Some(old) = self.step.replace(step)
            && old != step
        {
            for next in [&mut self.next_due, &mut self.next_slot]
                .into_iter()
                .flatten()
            {
                *next += step - old;
            }
        }
    }

    /// A flush (a looped file starting over, a seek): slots and grids start again.
    fn flushed(&mut self) {
        self.anchor = None;
        self.next_due = None;
        self.next_slot = None;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    KeyframesOnly,
    GopTail,
    /// The camera's previous frame still waits for the model.
    Overload,
    /// The unit, or its GOP's keyframe or an earlier delta of its GOP, reached the decoder too
    /// late: the decoder is behind real time.
    Late,
}

impl Skip {
    /// Shed under overload (rather than not needed).
    fn shed(self) -> bool {
        matches!(self, Skip::Overload | Skip::Late)
    }
}

/// A slot this close to the next keyframe is served by that keyframe.
const SLOT_EPSILON_SECONDS: f64 = 0.001;

impl KeyframeClock {
    /// One camera's clock; its dropped units are counted under its id.
    pub fn for_camera(camera: &str) -> Self {
        Self {
            skipped: Some(DecodeSkipMetrics::new(camera)),
            ..Self::default()
        }
    }

    /// A clock whose mode is on from the start (`keyframes_only` asked for).
    pub fn only() -> Self {
        let clock = Self::default();
        clock.only.store(true, Ordering::Relaxed);
        clock
    }

    /// When to shed the keyframes the analysis needs (see the module doc).
    pub fn set_shedding(&self, shedding: Shedding) {
        *self.shedding.lock().unwrap_or_else(|p| p.into_inner()) = shedding;
    }

    fn shedding(&self) -> Shedding {
        self.shedding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether to shed a keyframe that reached the decoder `lateness` seconds late, if the
    /// analysis needs it (`wanted`; see the module doc).
    fn shed(
        &self,
        st: &mut ProbeState,
        (lateness, shedding): (Option<f64>, &Shedding),
        wanted: bool,
    ) -> Option<Skip> {
        let late = st.late((lateness, true), shedding.max_lag_seconds, self.interval());
        if !wanted {
            return None;
        }
        if late {
            return Some(Skip::Late);
        }
        let behind = self.is_only() && shedding.behind.as_ref().is_some_and(|behind| behind());
        behind.then_some(Skip::Overload)
    }

    /// The largest recent keyframe interval, in stream seconds, once enough are measured.
    pub fn interval_seconds(&self) -> Option<f64> {
        let g = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.count.min(GAPS_KEPT);
        (n >= MIN_GAPS).then(|| g.recent[..n].iter().copied().fold(0.0, f64::max))
    }

    /// The keyframe interval of a fixed GOP: the recent gaps, enough of them, all within
    /// [`REGULAR_GAP_TOLERANCE_SECONDS`] of one another.
    fn regular_interval_seconds(&self) -> Option<f64> {
        let g = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        let recent = &g.recent[..g.count.min(GAPS_KEPT)];
        let max = recent.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = recent.iter().copied().fold(f64::INFINITY, f64::min);
        (recent.len() >= MIN_REGULAR_GAPS && max - min <= REGULAR_GAP_TOLERANCE_SECONDS)
            .then_some(max)
    }

    /// Keyframes-only at `fps` (a profile's rate, or slower under overload): as `configured`
    /// (a profile's `keyframes_only`), else on when every analysis interval holds a keyframe
    /// (the rate is at or below the stream's keyframe rate).
    pub fn choose(&self, configured: Option<bool>, fps: f64) -> bool {
        configured.unwrap_or_else(|| {
            self.interval_seconds()
                .is_some_and(|gap| fps * gap <= 1.0 + 1e-9)
        })
    }

    /// Whether GOP tails may be trimmed under `profile`, when `allowed` (`[ingest]
    /// skip_gop_tails`): not when keyframes-only is configured either way (`keyframes_only =
    /// false` asks for every frame). It takes effect once the interval is measured, while
    /// keyframes-only is off, for a stream that never reordered ([`Self::skips_tails`]).
    pub fn tails_allowed(profile: &Profile, allowed: bool) -> bool {
        allowed && profile.keyframes_only.is_none() && profile.analysis_fps > 0.0
    }

    /// Trimming GOP tails now.
    pub fn skips_tails(&self) -> bool {
        self.tails_on() && self.regular_interval_seconds().is_some()
    }

    /// Allowed, not in keyframes-only mode, and no reordering seen (the interval aside).
    fn tails_on(&self) -> bool {
        self.tails.load(Ordering::Relaxed)
            && !self.is_only()
            && !self.reordered.load(Ordering::Relaxed)
    }

    /// Allows tail trimming (see [`Self::tails_allowed`]); on at once (only deltas are
    /// dropped), off at the next keyframe.
    pub fn set_tails(&self, allowed: bool) {
        self.tails.store(allowed, Ordering::Relaxed);
    }

    /// The rate keyframes are decoded at in keyframes-only mode.
    pub fn set_fps(&self, fps: f64) {
        // As the pipeline template renders it (`{fps}`, in thousandths).
        let fps = (fps * 1000.0).round() / 1000.0;
        self.fps_bits.store(fps.to_bits(), Ordering::Relaxed);
    }

    fn fps(&self) -> f64 {
        f64::from_bits(self.fps_bits.load(Ordering::Relaxed))
    }

    /// The analysis interval in seconds (at rate 0, every keyframe: the keyframe interval).
    fn interval(&self) -> f64 {
        let fps = self.fps();
        if fps > 0.0 && fps.is_finite() {
            1.0 / fps
        } else {
            self.interval_seconds().unwrap_or(1.0)
        }
    }

    pub fn is_only(&self) -> bool {
        self.only.load(Ordering::Relaxed)
    }

    /// Sets the mode; takes effect at the next buffer (switching off: at the next keyframe).
    pub fn set_only(&self, on: bool) {
        self.only.store(on, Ordering::Relaxed);
    }

    /// Moves `st`'s next slots to the rate now in force (see [`ProbeState::restep`]).
    fn restep(&self, st: &mut ProbeState) {
        let fps = self.fps();
        if fps > 0.0 && fps.is_finite() {
            st.restep(1.0 / fps);
        }
    }

    /// Keyframes-only: whether the keyframe at `pts` serves the next analysis slot (within half
    /// a keyframe interval of it); advances the slot when it does.
    fn due(&self, pts: Option<f64>, st: &mut ProbeState) -> bool {
        let fps = self.fps();
        let (Some(t), true) = (pts, fps > 0.0) else {
            return true;
        };
        let step = 1.0 / fps;
        self.restep(st);
        let next = &mut st.next_due;
        let half_gap = self.interval_seconds().unwrap_or(0.0) * 0.5;
        // Between two slots: the last due keyframe was at or after `n - step`. Further back is
        // a jump back (a file's loop, a camera's clock reset): the grid starts over below.
        if next.is_some_and(|n| t < n - half_gap && t >= n - step - half_gap - SLOT_EPSILON_SECONDS)
        {
            return false;
        }
        // The next slot follows this one; after a jump (loop, reconnect) it starts over here.
        *next = Some(match *next {
            Some(n) if (t - n).abs() < step => n + step,
            _ => t + step,
        });
        true
    }

    /// Whether the decoded picture at `pts` serves the next analysis slot: the first picture at
    /// or after the slot (as `videorate drop-only` chose, and the loop a user writes); advances
    /// the slot. Every picture does in keyframes-only mode (the probe before the decoder chose
    /// them) and at rate 0. The grid runs from the anchor, the decoder's first picture, as
    /// [`Self::last_slot`]'s does; a jump back starts it over. Chosen here, at the decoder,
    /// rather than by `videorate`, which holds each frame until the next one arrives: a whole
    /// analysis interval when only the needed keyframes are decoded.
    fn serves_slot(&self, st: &mut ProbeState, pts: Option<f64>) -> bool {
        let fps = self.fps();
        let (Some(t), true, false) = (pts, fps > 0.0 && fps.is_finite(), self.is_only()) else {
            st.next_slot = None;
            st.last_picture = Some(std::time::Instant::now());
            return true;
        };
        let step = 1.0 / fps;
        self.restep(st);
        if let Some(next) = st.next_slot {
            if t < next - step - SLOT_EPSILON_SECONDS {
                // Back before the slot last served: a clock reset; the grid starts here.
                st.anchor = Some(t);
            } else if t < next - SLOT_EPSILON_SECONDS {
                return false;
            }
        }
        let anchor = *st.anchor.get_or_insert(t);
        let served = ((t + SLOT_EPSILON_SECONDS - anchor) / step)
            .floor()
            .max(0.0);
        st.next_slot = Some(anchor + (served + 1.0) * step);
        st.last_picture = Some(std::time::Instant::now());
        true
    }

    /// The last analysis slot of the GOP that starts at `keyframe`: the last time of the grid
    /// from `anchor` before the next keyframe is due (the keyframe itself when none is). `None`
    /// when nothing may be trimmed.
    fn last_slot(&self, keyframe: f64, anchor: f64) -> Option<f64> {
        let fps = self.fps();
        if !(self.tails_on() && fps > 0.0 && fps.is_finite()) {
            return None;
        }
        let gap = self.regular_interval_seconds()?;
        let step = 1.0 / fps;
        let slots = ((keyframe + gap - SLOT_EPSILON_SECONDS - anchor) / step).floor();
        Some((anchor + slots * step).max(keyframe))
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
        // Image decoders too: an MJPEG camera's frames (jpegdec is "Codec/Decoder/Image").
        let is_video_decoder = element.factory().is_some_and(|f| {
            let klass = f.klass();
            klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"))
        });
        if !is_video_decoder {
            return;
        }
        let Some(pad) = element.static_pad("sink") else {
            return;
        };
        let clock = self.clone();
        // The pipeline the decoder plays in, found once (weak: the probe lives in it).
        let top = super::top_level(element).downgrade();
        let state = Arc::new(Mutex::new(ProbeState::default()));
        if let Some(src) = element.static_pad("src") {
            let state = state.clone();
            let clock = clock.clone();
            let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH;
            src.add_probe(kinds, move |_, info| {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => {
                        let pts = b.pts().map(seconds);
                        st.picture_out(pts);
                        if !clock.serves_slot(&mut st, pts) {
                            // Taken and reported handled: `Drop` would unref it twice.
                            drop(info.data.take());
                            return gst::PadProbeReturn::Handled;
                        }
                    }
                    Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::FlushStop => {
                        st.flushed();
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            });
        }
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let shedding = clock.shedding();
            let lateness = shedding
                .max_lag_seconds
                .and(top.upgrade())
                .and_then(|top| super::lateness_seconds(&top, pad, buffer));
            let (keep, shed) = {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                let keep = clock.keep(&mut st, buffer, (lateness, &shedding));
                (keep, st.dropping.is_some_and(Skip::shed))
            };
            if keep {
                return gst::PadProbeReturn::Ok;
            }
            // A keyframe left undecoded (shed, or not needed at the rate, which may be held
            // for up to a minute under overload): the source is alive.
            if let (true, Some(alive)) = (keyframe, &shedding.alive) {
                alive();
            }
            if shed && shedding.paced {
                super::wait_for_running_time(pad, buffer);
            }
            // Take the buffer and report it handled: `Drop` here makes GStreamer unref it twice.
            drop(info.data.take());
            gst::PadProbeReturn::Handled
        });
    }

    /// Whether the decoder gets `buffer`, reaching it `lateness` seconds late, under
    /// `shedding`; counts what it does not get.
    fn keep(
        &self,
        st: &mut ProbeState,
        buffer: &gst::BufferRef,
        (lateness, shedding): (Option<f64>, &Shedding),
    ) -> bool {
        let pts = buffer.pts().map(seconds);
        let delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if let (true, Some(t), Some(last)) = (delta, pts, st.last_pts)
            && t < last
        {
            self.reordered.store(true, Ordering::Relaxed);
        }
        st.last_pts = pts.or(st.last_pts);
        if !delta {
            self.keyframe(pts);
            if pts.is_some() {
                st.keyframe_pts = pts;
                st.last_kept_pts = pts;
            }
            st.after_late_gop = st.dropping == Some(Skip::Late);
            // Before the slot is kept aside: a late keyframe gives it back at the new rate.
            self.restep(st);
            let slot_before = st.next_due;
            let wanted = !self.is_only() || self.due(pts, st);
            let shed = self.shed(st, (lateness, shedding), wanted);
            if shed == Some(Skip::Late) {
                // Nothing stands in for a late keyframe: the next one takes its slot.
                st.next_due = slot_before;
            }
            st.dropping = match (wanted, shed) {
                (false, _) => Some(Skip::KeyframesOnly),
                (true, shed) => shed,
            };
            if let Some(why) = st.dropping {
                self.count(why);
            }
            return st.dropping.is_none();
        }
        if self.is_only() {
            st.dropping = Some(Skip::KeyframesOnly);
        }
        if let Some(why) = st.dropping {
            self.count(why);
            return false;
        }
        // A decoder that fell behind within the GOP (one GOP can take longer to decode than the
        // lag allowed): the rest of the GOP goes; the next keyframe is judged afresh.
        if st.late((lateness, false), shedding.max_lag_seconds, self.interval()) {
            st.dropping = Some(Skip::Late);
            self.count(Skip::Late);
            return false;
        }
        // B-frames shown before this GOP's keyframe may refer to the shed GOP's pictures.
        let leading = matches!((pts, st.keyframe_pts), (Some(t), Some(k)) if t < k);
        if st.after_late_gop && leading && self.reordered.load(Ordering::Relaxed) {
            self.count(Skip::Late);
            return false;
        }
        // Past the tail once a unit at or after the last slot was kept (the slot's picture).
        let past_tail = match (st.last_kept_pts, st.keyframe_pts, st.anchor) {
            (Some(kept), Some(k), Some(a)) => self.last_slot(k, a).is_some_and(|s| kept >= s),
            _ => false,
        };
        if past_tail {
            st.dropping = Some(Skip::GopTail);
            self.count(Skip::GopTail);
            return false;
        }
        st.last_kept_pts = pts.or(st.last_kept_pts);
        true
    }

    fn count(&self, why: Skip) {
        match (&self.skipped, why) {
            (Some(m), Skip::KeyframesOnly) => m.keyframes_only.increment(1),
            (Some(m), Skip::GopTail) => m.gop_tail.increment(1),
            (Some(m), Skip::Overload) => m.overload.increment(1),
            (Some(m), Skip::Late) => m.late.increment(1),
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encoded unit at `pts` seconds, 0.1 s long.
    fn unit(pts: f64, key: bool) -> gst::Buffer {
        let mut b = gst::Buffer::new();
        {
            let b = b.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds((pts * 1e9).round() as u64));
            b.set_duration(gst::ClockTime::from_mseconds(100));
            if !key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        b
    }

    /// Feeds units (pts, keyframe) in decode order; the presentation times the decoder gets.
    fn feed(clock: &KeyframeClock, units: &[(f64, bool)]) -> Vec<f64> {
        feed_late(clock, units, |_| None)
    }

    /// As [`feed`], each unit at `pts` reaching the decoder `lateness(pts)` seconds late.
    fn feed_late(
        clock: &KeyframeClock,
        units: &[(f64, bool)],
        lateness: impl Fn(f64) -> Option<f64>,
    ) -> Vec<f64> {
        gst::init().expect("GStreamer initialises");
        let mut st = ProbeState::default();
        let mut kept = Vec::new();
        for &(t, key) in units {
            if clock.keep(&mut st, &unit(t, key), (lateness(t), &clock.shedding())) {
                // A stream without reordering: each unit the decoder gets comes out as a picture.
                st.picture_out(Some(t));
                kept.push(t);
            }
        }
        kept
    }

    /// The pictures that go on to the analysis, of those the decoder gets from `units`.
    fn analysed(clock: &KeyframeClock, units: &[(f64, bool)]) -> Vec<f64> {
        gst::init().expect("GStreamer initialises");
        let mut st = ProbeState::default();
        let mut out = Vec::new();
        for &(t, key) in units {
            if clock.keep(&mut st, &unit(t, key), (None, &clock.shedding())) {
                st.picture_out(Some(t));
                if clock.serves_slot(&mut st, Some(t)) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// `seconds` of a 10 frames/s stream without B-frames, a keyframe every `gop` frames.
    fn stream(seconds: usize, gop: usize) -> Vec<(f64, bool)> {
        (0..seconds * 10)
            .map(|i| (i as f64 / 10.0, i % gop == 0))
            .collect()
    }

    fn clock(fps: f64) -> KeyframeClock {
        let c = KeyframeClock::default();
        c.set_fps(fps);
        c.set_tails(true);
        c
    }

    fn near(kept: &[f64], t: f64) -> bool {
        kept.iter().any(|k| (k - t).abs() < 1e-6)
    }

    #[test]
    fn behind_a_needed_keyframe_is_shed_in_keyframes_only_mode_and_never_a_whole_gop() {
        // Keyframes only (0.25 frame/s, a slot every 4 s: keyframes 0, 4, 8 s of 0, 2, … 10 s).
        let k = KeyframeClock::only();
        k.set_fps(0.25);
        let behind = Arc::new(AtomicBool::new(true));
        let flag = behind.clone();
        k.set_shedding(Shedding {
            behind: Some(Arc::new(move || flag.load(Ordering::Relaxed))),
            ..Shedding::default()
        });
        assert_eq!(feed(&k, &stream(12, 20)), Vec::<f64>::new(), "all shed");
        behind.store(false, Ordering::Relaxed);
        assert_eq!(feed(&k, &stream(12, 20)), vec![0.0, 4.0, 8.0], "caught up");
        // Decoding GOPs (1 frame/s on a 2 s GOP, two slots each): behind or not, nothing is shed.
        let c = clock(1.0);
        c.set_shedding(Shedding {
            behind: Some(Arc::new(|| true)),
            ..Shedding::default()
        });
        let kept = feed(&c, &stream(10, 20));
        for gop in [0.0, 2.0, 4.0, 6.0, 8.0] {
            assert!(near(&kept, gop), "GOP at {gop} s decoded: {kept:?}");
        }
    }

    /// A clock decoding every frame at 1 frame/s that sheds units more than 1 s late.
    fn shedding_late() -> KeyframeClock {
        let c = KeyframeClock::default();
        c.set_fps(1.0);
        c.set_shedding(Shedding {
            max_lag_seconds: Some(1.0),
            ..Shedding::default()
        });
        c
    }

    #[test]
    fn a_gop_whose_keyframe_reaches_the_decoder_late_is_shed_whole() {
        // An RTSP camera: every unit 0.2 s late (its jitter buffer), the GOP at 6 s 1.5 s late.
        let kept = feed_late(&shedding_late(), &stream(10, 20), |t| {
            Some(if (6.0..8.0).contains(&t) { 1.5 } else { 0.2 })
        });
        assert_eq!(kept.len(), 80, "{kept:?}");
        assert!(!kept.iter().any(|t| (6.0..8.0).contains(t)), "{kept:?}");
        assert!(near(&kept, 5.9) && near(&kept, 8.0), "{kept:?}");
    }

    #[test]
    fn a_decoder_falling_behind_within_a_gop_drops_the_rest_of_it() {
        // Each unit of the GOP at 4 s comes 0.3 s later than the one before (a starved decoder).
        let kept = feed_late(&shedding_late(), &stream(10, 20), |t| {
            Some(if (4.0..6.0).contains(&t) {
                (t - 4.0) * 3.0
            } else {
                0.0
            })
        });
        // Up to 4.3 s (0.9 s late) decoded; from 4.4 s (1.2 s late) to the next keyframe not.
        assert!(
            near(&kept, 4.3) && !near(&kept, 4.4) && !near(&kept, 5.9),
            "{kept:?}"
        );
        assert!(near(&kept, 6.0) && near(&kept, 9.9), "{kept:?}");
    }

    #[test]
    fn a_stream_always_late_by_the_same_is_not_shed_and_a_replay_is_judged_from_on_time() {
        // A long jitter buffer (3 s on every unit) is the stream's usual lateness.
        let always = feed_late(&shedding_late(), &stream(10, 20), |_| Some(3.0));
        assert_eq!(always.len(), 100);
        // A replay reads ahead (units 0.8 s early): late counts from on time, not from early.
        let replay = feed_late(&shedding_late(), &stream(10, 20), |t| {
            Some(match t {
                t if (4.0..6.0).contains(&t) => 0.9,
                t if (6.0..8.0).contains(&t) => 1.2,
                _ => -0.8,
            })
        });
        assert!(near(&replay, 5.9) && !near(&replay, 6.0), "{replay:?}");
        assert!(near(&replay, 8.0), "{replay:?}");
        // Not realtime (no bound): nothing is shed however late.
        let off = KeyframeClock::default();
        assert_eq!(feed_late(&off, &stream(10, 20), |_| Some(30.0)).len(), 100);
    }

    #[test]
    fn keyframes_only_sheds_a_late_keyframe_it_needs_and_decodes_the_next() {
        let k = KeyframeClock::only();
        k.set_fps(0.25);
        k.set_shedding(Shedding {
            max_lag_seconds: Some(1.0),
            ..Shedding::default()
        });
        // The slot at 4 s is served late by the next keyframe, 6 s; then 8 s serves its own.
        let kept = feed_late(&k, &stream(12, 20), |t| {
            Some(if t == 4.0 { 2.0 } else { 0.0 })
        });
        assert_eq!(kept, vec![0.0, 6.0, 8.0]);
    }

    #[test]
    fn a_camera_that_passed_on_no_picture_for_three_intervals_decodes_late_units_anyway() {
        gst::init().expect("GStreamer initialises");
        let c = shedding_late();
        let mut st = ProbeState::default();
        let late = |t: f64| if t < 2.0 { 0.0 } else { 5.0 };
        let mut kept = 0;
        for (t, key) in stream(4, 20) {
            if t == 2.0 {
                // Silent for longer than 3 intervals of 1 s.
                st.last_picture =
                    std::time::Instant::now().checked_sub(std::time::Duration::from_secs(10));
            }
            if c.keep(&mut st, &unit(t, key), (Some(late(t)), &c.shedding())) && t >= 2.0 {
                kept += 1;
            }
        }
        assert_eq!(kept, 20, "the GOP at 2 s decoded though 5 s late");
    }

    #[test]
    fn after_a_late_gop_the_b_frames_shown_before_the_next_keyframe_are_not_decoded() {
        // An open GOP in decode order: I2.0 B1.8 B1.9 P2.3 B2.1 B2.2: B1.8 and B1.9 refer to the
        // GOP before, which is shed late from its third unit on (a reordering seen before it).
        let mut units = vec![(0.0, true), (0.2, false), (0.1, false)];
        units.extend((3..18).map(|i| (i as f64 / 10.0, false)));
        units.push((2.0, true));
        units.extend([
            (1.8, false),
            (1.9, false),
            (2.3, false),
            (2.1, false),
            (2.2, false),
        ]);
        let kept = feed_late(&shedding_late(), &units, |t| {
            Some(if (0.25..1.75).contains(&t) { 3.0 } else { 0.0 })
        });
        assert!(near(&kept, 2.0) && near(&kept, 2.3), "{kept:?}");
        assert!(!near(&kept, 1.8) && !near(&kept, 1.9), "{kept:?}");
    }

    #[test]
    fn the_first_picture_at_or_after_each_slot_goes_on_at_once() {
        // 4 frames/s analysed at 3/s: slots 0, 1/3, 2/3, 1, …; the pictures 0, 0.5, 0.75, 1.0,
        // 1.5, 1.75, …
        let units: Vec<(f64, bool)> = (0..12).map(|i| (i as f64 * 0.25, i % 4 == 0)).collect();
        let c = KeyframeClock::default();
        c.set_fps(3.0);
        assert_eq!(
            analysed(&c, &units),
            vec![0.0, 0.5, 0.75, 1.0, 1.5, 1.75, 2.0, 2.5, 2.75]
        );
        // 10 frames/s at 2/s: every fifth picture; slower than the rate: every picture.
        let c = KeyframeClock::default();
        c.set_fps(2.0);
        let two = analysed(&c, &stream(3, 20));
        assert_eq!(two.len(), 6, "{two:?}");
        assert!(
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
                .iter()
                .all(|&t| near(&two, t))
        );
        let c = KeyframeClock::default();
        c.set_fps(20.0);
        assert_eq!(analysed(&c, &stream(3, 20)).len(), 30);
    }

    #[test]
    fn keyframes_only_passes_every_keyframe_it_decoded_and_a_jump_back_restarts_the_slots() {
        let k = KeyframeClock::only();
        k.set_fps(0.25);
        // The due keyframes 0, 4 and 8 s all go on, though 4 s is a second before its slot.
        assert_eq!(analysed(&k, &stream(12, 20)), vec![0.0, 4.0, 8.0]);
        // A clock reset without a flush: the grid starts over at the jump.
        let c = KeyframeClock::default();
        c.set_fps(1.0);
        let mut twice = stream(3, 20);
        twice.extend(stream(3, 20));
        assert_eq!(analysed(&c, &twice), vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn a_rate_changed_without_a_rebuild_moves_the_next_slot_from_the_last_one_served() {
        gst::init().expect("GStreamer initialises");
        // Keyframes only, a keyframe every second: a slot every 4 s; let go to one a second at
        // 8.5 s (the next slot is 9 s, not 12 s); held again at 14.5 s (the next is 18 s).
        let k = KeyframeClock::only();
        k.set_fps(0.25);
        let mut st = ProbeState::default();
        let mut kept = Vec::new();
        for &(t, key) in &stream(24, 10) {
            if t == 8.5 {
                k.set_fps(1.0);
            }
            if t == 14.5 {
                k.set_fps(0.25);
            }
            if k.keep(&mut st, &unit(t, key), (None, &k.shedding())) {
                kept.push(t);
            }
        }
        let slots = [0.0, 4.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 18.0, 22.0];
        assert_eq!(kept, slots);
    }

    #[test]
    fn keyframes_only_starts_its_slots_over_when_the_stream_jumps_back() {
        // A looped 12 s file without a flush in between (a camera's clock reset looks alike).
        let k = KeyframeClock::only();
        k.set_fps(0.25);
        let mut twice = stream(12, 20);
        twice.extend(stream(12, 20));
        assert_eq!(feed(&k, &twice), vec![0.0, 4.0, 8.0, 0.0, 4.0, 8.0]);
    }

    #[test]
    fn a_gop_is_decoded_up_to_its_last_analysis_slot_once_the_interval_is_measured() {
        let c = clock(1.0);
        let kept = feed(&c, &stream(10, 20));
        // Keyframes at 0, 2, 4 and 6 s measure the interval; the GOPs before are decoded whole.
        for t in [0.5, 1.5, 1.9, 2.5, 3.9, 5.9] {
            assert!(near(&kept, t), "{t} kept before the interval is known");
        }
        // From then on each GOP up to its slot one second after the keyframe.
        for k in [6.0, 8.0] {
            for i in 0..=10 {
                assert!(near(&kept, k + i as f64 / 10.0), "{k}+{i}/10 kept");
            }
            for i in 11..20 {
                assert!(!near(&kept, k + i as f64 / 10.0), "{k}+{i}/10 dropped");
            }
        }
        // Every analysis slot still has its frame.
        for slot in 0..10 {
            assert!(near(&kept, slot as f64), "slot {slot}");
        }
        assert!(c.skips_tails());
    }

    #[test]
    fn two_frames_a_second_keep_three_quarters_of_a_two_second_gop() {
        let kept = feed(&clock(2.0), &stream(10, 20));
        let gop: Vec<f64> = kept
            .iter()
            .copied()
            .filter(|t| (6.0..8.0).contains(t))
            .collect();
        assert_eq!(gop.len(), 16, "6.0 to 7.5: {gop:?}");
        for slot in [6.0, 6.5, 7.0, 7.5] {
            assert!(near(&gop, slot));
        }
    }

    /// A montage's GOPs (bikes.mp4: keyframes at its shot cuts) are not foreseeable: decoded whole.
    #[test]
    fn irregular_gops_are_decoded_whole() {
        let keys = [0, 30, 76, 126, 137, 187, 242];
        let units: Vec<(f64, bool)> = (0..250)
            .map(|i| (i as f64 * 0.04, keys.contains(&i)))
            .collect();
        let c = clock(4.0);
        assert_eq!(feed(&c, &units).len(), units.len());
        assert!(!c.skips_tails());
    }

    /// A GOP that is no multiple of the interval (2.5 s at 1 frame/s): the slots run on from the
    /// first picture, not from each GOP's, and each keeps its frame.
    #[test]
    fn slots_run_from_the_first_keyframe_across_gops() {
        let c = clock(1.0);
        let kept = feed(&c, &stream(20, 25));
        assert!(kept.len() < 200, "{}", kept.len());
        for slot in 0..20 {
            assert!(near(&kept, slot as f64), "slot {slot}");
        }
        // The GOP from 12.5 s: its slots 13 and 14, nothing after 14.0 until 15.0.
        assert!(near(&kept, 14.0) && !near(&kept, 14.1) && !near(&kept, 14.9));
    }

    #[test]
    fn a_stream_with_b_frames_is_never_trimmed() {
        // Decode order I0 P3 B1 B2 P6 B4 B5 …: a P unit is a reference of the B units before it.
        let mut units = Vec::new();
        for gop in 0..5 {
            let k = gop * 20;
            units.push((k as f64 / 10.0, true));
            for i in (3..20).step_by(3) {
                units.push(((k + i) as f64 / 10.0, false));
                units.push(((k + i - 2) as f64 / 10.0, false));
                units.push(((k + i - 1) as f64 / 10.0, false));
            }
        }
        let c = clock(1.0);
        let kept = feed(&c, &units);
        assert_eq!(kept.len(), units.len());
        assert!(!c.skips_tails());
    }

    #[test]
    fn not_allowed_or_keyframes_only_decides_instead() {
        let off = KeyframeClock::default();
        off.set_fps(1.0);
        assert_eq!(feed(&off, &stream(10, 20)).len(), 100);
        let only = KeyframeClock::only();
        only.set_fps(1.0);
        only.set_tails(true);
        assert_eq!(feed(&only, &stream(10, 20)), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
    }
}
