//! Ingest stage: one GStreamer pipeline per camera, rendered from an editable gst-launch template
//! in `pipelines/`, decoding at the camera's analysis rate and scaling to the model's input size
//! inside GStreamer; each frame goes to the camera's mailbox of the inference pool. Under
//! overload a camera is held to the slower rate the next stage can serve
//! ([`FrameSink::overload_interval`], [`thinned_fps`]), on the running pipeline.

pub mod keyframes;
mod priority;
pub mod replay;
pub mod rtsp_server;
pub mod settings;
pub mod status;
mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::area::{Area, Camera};
pub use keyframes::KeyframeClock;
use settings::{IngestSettings, Pace};
use status::{CameraRegistry, CameraState, CameraStatus};
pub use template::{PipelineTemplate, TemplateError, TemplateValues};

/// One decoded, scaled RGB frame, held without copying the GStreamer buffer.
pub struct Frame {
    /// Index of the camera in the configuration.
    pub camera: usize,
    pub camera_id: Arc<str>,
    pub seq: u64,
    /// Seconds of stream time, increasing per camera (across loops of a file).
    pub stream_seconds: f64,
    pub captured_at: SystemTime,
    pub received: Instant,
    pub width: u32,
    pub height: u32,
    pub row_stride: usize,
    /// Width / height of the picture as the camera shows it (the frame itself is stretched).
    pub display_aspect: f64,
    /// The decoded buffer's presentation time in the stream (nanoseconds): the same as its
    /// access unit's on the live view, which aligns overlays by it.
    pub pts: Option<u64>,
    /// How late the appsink handed the frame over, in seconds past its time on the pipeline
    /// clock (decoding behind real time; a live source's own latency); 0 when on time or not
    /// known. `received` is the hand-over: add this for the time since capture.
    pub lag_seconds: f64,
    buffer: gst::MappedBuffer<gst::buffer::Readable>,
}

impl Frame {
    /// A frame of a decoded sample whose caps are `vi`; the display aspect from its pixel aspect
    /// ratio (the pipeline stretched the picture to the model's size).
    pub(crate) fn from_mapped(
        camera: usize,
        camera_id: Arc<str>,
        seq: u64,
        stream_seconds: f64,
        vi: &gst_video::VideoInfo,
        buffer: gst::MappedBuffer<gst::buffer::Readable>,
    ) -> Frame {
        let par = vi.par();
        Frame {
            camera,
            camera_id,
            seq,
            stream_seconds,
            captured_at: SystemTime::now(),
            received: Instant::now(),
            width: vi.width(),
            height: vi.height(),
            row_stride: vi.stride()[0] as usize,
            display_aspect: (vi.width() as f64 * par.numer() as f64)
                / (vi.height() as f64 * par.denom().max(1) as f64),
            pts: None,
            lag_seconds: 0.0,
            buffer,
        }
    }

    /// The same moment as `analysed`, decoded again at the camera's resolution (full-resolution
    /// evidence): its camera, sequence and times, another picture.
    pub fn decoded(
        analysed: &Frame,
        vi: &gst_video::VideoInfo,
        buffer: gst::MappedBuffer<gst::buffer::Readable>,
    ) -> Frame {
        let mut f = Frame::from_mapped(
            analysed.camera,
            analysed.camera_id.clone(),
            analysed.seq,
            analysed.stream_seconds,
            vi,
            buffer,
        );
        f.captured_at = analysed.captured_at;
        f.received = analysed.received;
        f.pts = analysed.pts;
        f.lag_seconds = analysed.lag_seconds;
        f
    }

    pub fn rgb(&self) -> &[u8] {
        self.buffer.as_slice()
    }

    /// Resizes the frame into `dst` (RGB, area interpolation) straight from its buffer, without
    /// copying it into a Mat first. Used by the stages that analyse a small copy (motion gate,
    /// fire baseline).
    pub fn resize_into(
        &self,
        dst: &mut opencv::core::Mat,
        width: i32,
        height: i32,
    ) -> opencv::Result<()> {
        use opencv::core::{CV_8UC3, Mat, Size};
        let rgb = self.rgb();
        let row = self.width as usize * 3;
        let needed = (self.height as usize).saturating_sub(1) * self.row_stride + row;
        if self.row_stride < row || rgb.len() < needed {
            return Err(opencv::Error::new(
                opencv::core::StsBadSize,
                format!(
                    "frame buffer of {} bytes is too small for {}x{} RGB with a stride of {}",
                    rgb.len(),
                    self.width,
                    self.height,
                    self.row_stride
                ),
            ));
        }
        // SAFETY: checked above that the buffer holds `height` rows of `row_stride` bytes; the
        // Mat header borrows it read-only and is dropped before this function returns.
        let view = unsafe {
            Mat::new_rows_cols_with_data_unsafe(
                self.height as i32,
                self.width as i32,
                CV_8UC3,
                rgb.as_ptr() as *mut std::ffi::c_void,
                self.row_stride,
            )
        }?;
        opencv::imgproc::resize(
            &view,
            dst,
            Size::new(width, height),
            0.0,
            0.0,
            opencv::imgproc::INTER_AREA,
        )
    }

    /// A frame from packed RGB bytes (benchmarks and tests; cameras use their GStreamer buffers).
    pub fn from_rgb(
        camera: usize,
        camera_id: Arc<str>,
        seq: u64,
        stream_seconds: f64,
        width: u32,
        height: u32,
        rgb: Vec<u8>,
    ) -> Option<Frame> {
        if rgb.len() != width as usize * height as usize * 3 {
            return None;
        }
        gst::init().ok()?;
        let buffer = gst::Buffer::from_mut_slice(rgb)
            .into_mapped_buffer_readable()
            .ok()?;
        Some(Frame {
            camera,
            camera_id,
            seq,
            stream_seconds,
            captured_at: SystemTime::now(),
            received: Instant::now(),
            width,
            height,
            row_stride: width as usize * 3,
            display_aspect: f64::from(width) / f64::from(height.max(1)),
            pts: None,
            lag_seconds: 0.0,
            buffer,
        })
    }
}

/// Asked before a decoded frame is scaled and converted: `true` when the frame would only
/// replace one of the camera's frames still waiting for the model, so it is dropped before it
/// costs more.
pub type BusyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where a camera's frames go: the next stage (the motion gate in front of the inference pool)
/// implements it; ingest knows nothing of what is downstream.
pub trait FrameSink: Send + 'static {
    fn push(&mut self, frame: Frame) -> Pushed;
    /// The camera will send no more frames.
    fn close(&mut self);
    /// Whether frames may be dropped early (see [`BusyCheck`]); `None`: never.
    fn busy_check(&self) -> Option<BusyCheck> {
        None
    }
    /// Asked at each keyframe a camera decoding keyframes only needs: `true` while the camera's
    /// previous frame still waits for the model, so the keyframe's frame would only be dropped
    /// as superseded; it is then left undecoded (see `keyframes`). `None`: never.
    fn behind_check(&self) -> Option<BusyCheck> {
        None
    }
    /// Under overload, the longest analysis interval in seconds the next stage can serve each
    /// camera (0: none); a faster camera is held to it and decodes no frame it would not take
    /// (see [`thinned_fps`]). `None`: never held.
    fn overload_interval(&self) -> Option<OverloadInterval> {
        None
    }
}

/// Asked once a second by each camera: see [`FrameSink::overload_interval`].
pub type OverloadInterval = Arc<dyn Fn() -> f64 + Send + Sync>;

/// A camera held under overload whose keyframes come at most this many held intervals apart
/// is held to its keyframe interval instead, and decodes keyframes only.
const HELD_KEYFRAME_INTERVALS: f64 = 2.0;

/// The rate a camera decodes and offers frames at: its profile's, held to one frame per
/// `overload_interval_seconds` under overload (0: not held). A held camera whose stream's
/// `keyframe_interval_seconds` is at most [`HELD_KEYFRAME_INTERVALS`] of that is held to the
/// keyframe interval, so it decodes keyframes only: a frame in the middle of a group of
/// pictures costs the decoding of every frame before it (up to 25 for one frame a second on a
/// 25 frames/s camera with a keyframe every 2 s), so under overload fewer frames of a camera,
/// each one decoded alone, leave the model more frames of all. A rate of 0 (every keyframe) is
/// held only to an interval longer than its keyframes'.
pub fn thinned_fps(
    profile_fps: f64,
    overload_interval_seconds: f64,
    keyframe_interval_seconds: Option<f64>,
) -> f64 {
    let t = overload_interval_seconds;
    if !(t > 0.0 && t.is_finite()) {
        return profile_fps;
    }
    let gap = keyframe_interval_seconds.filter(|&g| g.is_finite() && g > 0.0);
    if profile_fps <= 0.0 {
        // Every keyframe: held only once the interval is longer than the keyframes' (an
        // unknown keyframe interval could be the longer one).
        return match gap {
            Some(g) if t > g => 1.0 / t,
            _ => profile_fps,
        };
    }
    let snapped = gap.filter(|&g| g <= HELD_KEYFRAME_INTERVALS * t);
    profile_fps.min(1.0 / snapped.map_or(t, |g| g.max(t)))
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// Accepted, replacing an older frame of the camera that had not been taken (dropped).
    ReplacedOlder,
    /// Not analysed (e.g. nothing moved).
    Skipped,
    /// Not analysed: no zone was due at this frame (decoded for a faster zone of the camera).
    NotDue,
    /// The pipeline is stopping.
    Stopped,
    /// Cluster mode: the camera's group is no longer this node's (or its lease is uncertain);
    /// the frame is dropped until the supervisor stops the camera.
    Fenced,
}

/// Who gets the camera's encoded access units, before decoding (the template's
/// `appsink name=live` branch): the patrol wall's live view. Called on the pipeline's
/// streaming thread; it must not block.
pub trait EncodedSink: Send + Sync {
    fn push(&self, caps: &gst::CapsRef, buffer: gst::Buffer);
}

type SharedSink = Arc<Mutex<Box<dyn FrameSink>>>;

/// The kinds of source a camera uri can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Rtsp,
    Test,
}

impl SourceKind {
    pub fn of(uri: &str) -> Result<SourceKind, String> {
        let lower = uri.to_ascii_lowercase();
        if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
            Ok(SourceKind::Rtsp)
        } else if lower.starts_with("test:") {
            Ok(SourceKind::Test)
        } else if lower.starts_with("file://") || !lower.contains("://") {
            Ok(SourceKind::File)
        } else {
            Err(format!(
                "unsupported uri scheme in `{uri}` (use rtsp://, file:// or a path, or test:)"
            ))
        }
    }

    fn builtin_template(self) -> &'static str {
        match self {
            SourceKind::File => include_str!("../../pipelines/file.pipeline"),
            SourceKind::Rtsp => include_str!("../../pipelines/rtsp.pipeline"),
            SourceKind::Test => include_str!("../../pipelines/test.pipeline"),
        }
    }
}

/// The local file a camera uri names, resolved against `base`, if it names one.
pub fn local_file(uri: &str, base: &Path) -> Option<PathBuf> {
    match SourceKind::of(uri) {
        Ok(SourceKind::File) => {
            let p = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
            Some(if p.is_absolute() { p } else { base.join(p) })
        }
        _ => None,
    }
}

/// How a camera's stream is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderChoice {
    /// decodebin picks by rank: hardware decoders (nvh264dec, vah264dec, …) win when installed.
    Auto,
    Software,
    /// A named decoder element after `parsebin`.
    Element(String),
}

impl DecoderChoice {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DecoderChoice::Auto),
            "software" => Ok(DecoderChoice::Software),
            e if !e.is_empty()
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                Ok(DecoderChoice::Element(e.to_owned()))
            }
            _ => Err(format!(
                "decoder must be \"auto\", \"software\" or an element name, got `{s}`"
            )),
        }
    }

    /// The `{decode}` part of a pipeline template.
    pub fn launch_fragment(&self) -> String {
        match self {
            DecoderChoice::Auto => "decodebin".into(),
            DecoderChoice::Software => "decodebin force-sw-decoders=true".into(),
            DecoderChoice::Element(e) => format!("parsebin ! {e}"),
        }
    }

    /// The `{decoder}` part of a template that parsed the stream already.
    pub fn after_parser(&self) -> String {
        match self {
            DecoderChoice::Auto => "decodebin".into(),
            DecoderChoice::Software => "decodebin force-sw-decoders=true".into(),
            DecoderChoice::Element(e) => e.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("camera {camera}: {source}")]
    Template {
        camera: String,
        #[source]
        source: TemplateError,
    },
    #[error("camera {camera}: cannot read pipeline template {path}: {source}")]
    ReadTemplate {
        camera: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("camera {camera}: {message}")]
    Camera { camera: String, message: String },
}

pub fn init() -> Result<(), IngestError> {
    gst::init().map_err(|e| IngestError::Init(e.to_string()))
}

/// What a camera thread needs, resolved from the configuration before any thread starts.
pub struct CameraPlan {
    pub index: usize,
    pub id: Arc<str>,
    area: Arc<Area>,
    template: PipelineTemplate,
    uri: String,
    location: String,
    decode: String,
    /// The decoder after a parser (`{decoder}`: the built-in templates parse once, then split
    /// the encoded stream between the decoder and the live view).
    decoder: String,
    /// Where the `live` branch's access units go; `None`: nowhere (the branch drops them).
    live: Option<Arc<dyn EncodedSink>>,
    protocols: &'static str,
    user: String,
    password: String,
    width: usize,
    height: usize,
    sync: bool,
    /// Files without `loop` end; everything else is restarted after an error or stall.
    pub finite: bool,
    pub looped: bool,
    stall_timeout: Duration,
    /// `[ingest] decoder_threads` (0: the decoder's choice).
    decoder_threads: u32,
    /// `[ingest] skip_gop_tails`.
    skip_gop_tails: bool,
    /// `[ingest] shed_when_behind`.
    shed_when_behind: bool,
    /// `[ingest] max_decode_lag_ms` in seconds, realtime only; `None`: never shed late.
    max_decode_lag_seconds: Option<f64>,
    /// `[ingest] pipeline_nice`.
    pipeline_nice: i32,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    rtsp_timeout: Duration,
    /// How long the camera waits before its first start (`[ingest] start_spread_seconds`).
    start_delay: Duration,
}

impl CameraPlan {
    pub fn new(
        area: &Arc<Area>,
        ingest: &IngestSettings,
        index: usize,
        width: usize,
        height: usize,
    ) -> Result<Self, IngestError> {
        let camera: &Camera = &area.cameras[index];
        let template_err = |source| IngestError::Template {
            camera: camera.id.clone(),
            source,
        };
        let kind =
            SourceKind::of(&camera.uri).map_err(|e| template_err(TemplateError::Render(e)))?;
        let text = match &camera.pipeline {
            Some(p) => {
                let path = area.resolve(p);
                std::fs::read_to_string(&path).map_err(|source| IngestError::ReadTemplate {
                    camera: camera.id.clone(),
                    path,
                    source,
                })?
            }
            None => kind.builtin_template().to_owned(),
        };
        let template = PipelineTemplate::parse(&text).map_err(template_err)?;
        let decoder =
            DecoderChoice::parse(&camera.decoder).map_err(|message| IngestError::Camera {
                camera: camera.id.clone(),
                message,
            })?;
        let plan = Self {
            index,
            id: Arc::from(camera.id.as_str()),
            area: area.clone(),
            template,
            uri: camera.uri.clone(),
            location: local_file(&camera.uri, &area.base_dir)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            decode: decoder.launch_fragment(),
            decoder: decoder.after_parser(),
            live: None,
            protocols: camera.rtsp_transport.protocols(),
            user: camera.username.clone().unwrap_or_default(),
            password: camera.password.clone().unwrap_or_default(),
            width,
            height,
            sync: ingest.pace == Pace::Realtime,
            finite: kind == SourceKind::File && !camera.r#loop,
            looped: kind == SourceKind::File && camera.r#loop,
            // Bounded conversions: no panic even for settings that were never validated.
            stall_timeout: ingest.stall_timeout(),
            decoder_threads: ingest.decoder_threads.min(settings::MAX_DECODER_THREADS),
            skip_gop_tails: ingest.skip_gop_tails,
            shed_when_behind: ingest.shed_when_behind,
            max_decode_lag_seconds: (ingest.pace == Pace::Realtime && ingest.max_decode_lag_ms > 0)
                .then(|| ingest.max_decode_lag_ms.min(settings::MAX_DECODE_LAG_MS) as f64 / 1e3),
            pipeline_nice: ingest.pipeline_nice.clamp(0, settings::MAX_PIPELINE_NICE),
            reconnect_initial: ingest.reconnect_initial(),
            reconnect_max: ingest.reconnect_max(),
            rtsp_timeout: ingest.rtsp_timeout(),
            start_delay: Duration::ZERO,
        };
        // Render once now so that a template that cannot render fails before any camera starts.
        plan.describe(crate::area::DEFAULT_ANALYSIS_FPS)
            .map_err(template_err)?;
        Ok(plan)
    }

    /// Waits `delay` before the camera's first start (a node's start spread over its cameras).
    pub fn delay_start(&mut self, delay: Duration) {
        self.start_delay = delay;
    }

    /// Sends the camera's encoded stream to `sink` (the live view).
    pub fn set_live(&mut self, sink: Arc<dyn EncodedSink>) {
        self.live = Some(sink);
    }

    /// The pipeline description at `fps`.
    pub fn describe(&self, fps: f64) -> Result<String, TemplateError> {
        self.template.render(&TemplateValues {
            uri: &self.uri,
            location: &self.location,
            fps,
            width: self.width,
            height: self.height,
            sync: self.sync,
            decode: &self.decode,
            decoder: &self.decoder,
            protocols: self.protocols,
            timeout_us: self.rtsp_timeout.as_micros() as u64,
            user: &self.user,
            password: &self.password,
        })
    }

    /// Removes the camera's secrets from a message (GStreamer errors may quote the uri).
    fn redact(&self, message: &str) -> String {
        let mut out = message.to_owned();
        let url_password = reqwest::Url::parse(&self.uri)
            .ok()
            .and_then(|u| u.password().map(str::to_owned));
        for secret in [Some(self.password.clone()), url_password]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() {
                out = out.replace(&secret, "***");
            }
        }
        out
    }

    /// The watchdog never fires faster than three analysis intervals. Keyframes only: five
    /// intervals of the slower of the analysis rate and the keyframes (10 s until measured),
    /// because a decoder's frame threads (`decoder_threads` 0) and a custom template's
    /// `videorate` each hold one frame until the next one arrives, so a frame may leave the
    /// pipeline two intervals after it entered.
    fn stall_timeout_at(&self, fps: f64, keyframes: &KeyframeClock) -> Duration {
        let analysis = 1.0 / fps.max(0.01);
        let intervals = if keyframes.is_only() {
            5.0 * analysis.max(keyframes.interval_seconds().unwrap_or(10.0).min(100.0))
        } else {
            3.0 * analysis
        };
        // At most 500 s (rates below 0.01 fps count as 0.01; NaN too).
        self.stall_timeout
            .max(Duration::try_from_secs_f64(intervals).unwrap_or(self.stall_timeout))
    }
}

/// The status entry a camera starts with.
pub fn initial_status(area: &Area, index: usize) -> CameraStatus {
    let c = &area.cameras[index];
    CameraStatus::connecting(
        (&c.id, &c.name),
        (&c.unit, &c.group),
        &status::redact(&c.uri),
    )
}

/// How one pipeline run ended.
enum RunEnd {
    Finished,
    Failed(String),
    Stalled(Duration),
    /// The profile changed (rate, keyframes-only, active hours): rebuild without backoff.
    Reconfigure,
    Stopped,
}

/// Exponential backoff with full jitter: uniform in [0, min(max, initial · 2^attempt)], at least 100 ms.
pub fn reconnect_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let cap = initial.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
    // Finite and non-negative for any two Durations; only a `max` near `Duration::MAX` can
    // overflow the conversion back, and then `max` itself is the delay.
    Duration::try_from_secs_f64((fastrand::f64() * cap.min(max.as_secs_f64())).max(0.1))
        .unwrap_or(max)
}

/// Runs a camera until its source ends (finite files) or `stop` is set: connecting → streaming,
/// and on error or stall → backoff → connecting again. Closes the camera's mailbox on the way out.
pub fn spawn_camera(
    plan: CameraPlan,
    sink: Box<dyn FrameSink>,
    registry: CameraRegistry,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("cam-{}", plan.id))
        .spawn(move || {
            let sink: SharedSink = Arc::new(Mutex::new(sink));
            camera_loop(&plan, &sink, &registry, &stop);
            sink.lock().unwrap_or_else(|p| p.into_inner()).close();
        })
        .expect("spawning a thread only fails when the OS is out of resources")
}

fn camera_loop(plan: &CameraPlan, sink: &SharedSink, registry: &CameraRegistry, stop: &AtomicBool) {
    let cam = plan.index;
    let mut clock = StreamClock::default();
    let keyframes = KeyframeClock::for_camera(&plan.id);
    let overload = sink
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .overload_interval();
    let mut failures: u32 = 0;
    if !plan.start_delay.is_zero() {
        let why = format!(
            "starting in {:.2} s (start spread)",
            plan.start_delay.as_secs_f64()
        );
        registry.set_state(cam, CameraState::Connecting, Some(&why));
        sleep_unless_stopped(plan.start_delay, stop);
        registry.clear_reason(cam);
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            registry.set_state(cam, CameraState::Stopped, None);
            return;
        }
        let profile = plan.area.profile_at(cam, time::OffsetDateTime::now_utc());
        // An inactive camera offers nothing: not held.
        let held = overload
            .as_ref()
            .filter(|_| profile.active)
            .map_or(0.0, |f| f());
        let fps = thinned_fps(profile.analysis_fps, held, keyframes.interval_seconds());
        keyframes.set_only(keyframes.choose(profile.keyframes_only, fps));
        keyframes.set_tails(KeyframeClock::tails_allowed(&profile, plan.skip_gop_tails));
        keyframes.set_fps(fps);
        registry.set_profile(cam, (&profile, fps), &keyframes);
        if !profile.active {
            // Outside active hours: no pipeline, no decoding; look again in a second (the loop
            // head handles a stop).
            registry.set_state(cam, CameraState::Inactive, None);
            sleep_unless_stopped(Duration::from_secs(1), stop);
            continue;
        }
        registry.set_state(cam, CameraState::Connecting, None);
        let description = match plan.describe(profile.analysis_fps) {
            Ok(d) => d,
            Err(e) => {
                registry.set_state(cam, CameraState::Failed, Some(&e.to_string()));
                return;
            }
        };
        let frames_before = clock.seq;
        let end = run_pipeline_once(
            plan,
            &description,
            (&profile, &keyframes, overload.as_ref()),
            sink,
            registry,
            stop,
            &mut clock,
        );
        if clock.seq > frames_before {
            // It streamed: the next failure starts the backoff from the beginning.
            failures = 0;
        }
        let reason = match end {
            RunEnd::Finished => {
                registry.set_state(cam, CameraState::Ended, None);
                return;
            }
            RunEnd::Stopped => {
                registry.set_state(cam, CameraState::Stopped, None);
                return;
            }
            RunEnd::Reconfigure => continue,
            RunEnd::Failed(e) if plan.finite => {
                registry.set_state(cam, CameraState::Failed, Some(&plan.redact(&e)));
                return;
            }
            RunEnd::Failed(e) => {
                crate::telemetry::camera_restart(&plan.id, "error");
                plan.redact(&e)
            }
            RunEnd::Stalled(after) => {
                crate::telemetry::camera_restart(&plan.id, "stall");
                let reason = format!("no frame for {:.1} s", after.as_secs_f64());
                registry.set_state(cam, CameraState::Stalled, Some(&reason));
                reason
            }
        };
        let delay = reconnect_delay(failures, plan.reconnect_initial, plan.reconnect_max);
        failures = failures.saturating_add(1);
        registry.set_state(
            cam,
            CameraState::Backoff,
            Some(&format!(
                "{reason}; retrying in {:.1} s",
                delay.as_secs_f64()
            )),
        );
        if sleep_unless_stopped(delay, stop) {
            registry.set_state(cam, CameraState::Stopped, None);
            return;
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    stop.load(Ordering::Relaxed)
}

/// Keeps stream time increasing across restarts and loops of a file.
#[derive(Default)]
struct StreamClock {
    offset: f64,
    last: f64,
    seq: u64,
}

impl StreamClock {
    fn stamp(&mut self, pts_seconds: f64) -> f64 {
        let mut t = pts_seconds + self.offset;
        if t < self.last {
            // The source restarted (loop or reconnect): continue from where it was.
            self.offset += self.last - t + 0.001;
            t = self.last + 0.001;
        }
        self.last = t;
        t
    }
}

/// Liveness shared between the streaming thread and the watchdog.
struct Liveness {
    last_frame: Mutex<Instant>,
    /// The appsink callback is waiting for the camera's mailbox (fast pace): not a stall.
    waiting_downstream: AtomicBool,
}

impl Liveness {
    fn touch(&self) {
        *self.last_frame.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    fn since(&self) -> Duration {
        self.last_frame
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// The most upstream of the scalers and colour converters that lead to the appsink (through
/// caps filters only): the built-in templates' `videoscale`. `None` when the template has none.
fn first_converter(appsink: &gst::Element) -> Option<gst::Element> {
    let named = |e: &gst::Element, names: &[&str]| {
        e.factory()
            .is_some_and(|f| names.contains(&f.name().as_str()))
    };
    let mut found = None;
    let mut element = appsink.clone();
    // A template with more than a few elements between rate and sink is not one of ours.
    for _ in 0..16 {
        let Some(upstream) = element
            .static_pad("sink")
            .and_then(|p| p.peer())
            .and_then(|p| p.parent_element())
        else {
            break;
        };
        if named(
            &upstream,
            &["videoscale", "videoconvert", "videoconvertscale"],
        ) {
            found = Some(upstream.clone());
        } else if !named(&upstream, &["capsfilter"]) {
            break;
        }
        element = upstream;
    }
    found
}

/// Drops a decoded frame before it is scaled and converted while the camera's previous frame
/// still waits for the model (counted as dropped; the camera is alive, so the watchdog is
/// told). `paced`: a replay at the camera's own pace, where the dropped frame still takes its
/// time.
fn drop_when_busy(
    element: &gst::Element,
    busy: BusyCheck,
    (registry, camera, liveness): (CameraRegistry, usize, Arc<Liveness>),
    paced: bool,
) {
    let Some(pad) = element.static_pad("sink") else {
        return;
    };
    let converter = element.downgrade();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        // Until the pipeline plays, a frame is its preroll: the sink needs it to start the clock
        // (`busy` counts a drop, so it is asked only when the frame may go).
        let playing = converter
            .upgrade()
            .is_some_and(|e| e.current_state() == gst::State::Playing);
        if !playing || !busy() {
            return gst::PadProbeReturn::Ok;
        }
        registry.dropped(camera);
        liveness.touch();
        if paced && let Some(buffer) = info.buffer() {
            wait_for_running_time(pad, buffer);
        }
        drop(info.data.take());
        gst::PadProbeReturn::Handled
    });
}

/// `buffer`'s time on the pipeline clock (when a synchronising sink would show it), and that
/// clock; `None` before the pipeline has a clock or for a buffer without a time.
fn clock_time_of(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<(gst::Clock, gst::ClockTime)> {
    let pts = buffer.pts()?;
    let element = pad.parent_element()?;
    let (clock, base) = (element.clock()?, element.base_time()?);
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?;
    // A timestamp from the stream near the end of the clock's range must not overflow.
    let at = segment
        .to_running_time(pts)
        .and_then(|running| base.checked_add(running))?;
    Some((clock, at))
}

/// Waits until `buffer`'s time on the pipeline clock, as a synchronising sink would. A replay
/// paced by its sink (`sync=true`) must pace the frames dropped before the sink too: without
/// it the file races ahead while its frames are dropped, and the next ones find the camera
/// busy again.
pub(super) fn wait_for_running_time(pad: &gst::Pad, buffer: &gst::BufferRef) {
    if let Some((clock, at)) = clock_time_of(pad, buffer) {
        let _ = clock.new_single_shot_id(at).wait();
    }
}

/// The outermost bin `element` is in (the pipeline), or `element` itself.
pub(super) fn top_level(element: &gst::Element) -> gst::Element {
    let mut top = element.clone();
    while let Some(parent) = top.parent().and_then(|p| p.downcast::<gst::Element>().ok()) {
        top = parent;
    }
    top
}

/// How late `buffer` reaches `pad`, in seconds past its time on the pipeline clock (negative:
/// early, as a replay's units are while its decoder keeps up). On a live source it includes
/// the source's own delays (the network, depayloading: about 0.1 s over RTSP on loopback).
/// `None` unless `top`, the pipeline, is playing: after a flushing seek (a looped file starting
/// over) the pipeline prerolls again and only then takes a new base time, so until then every
/// unit would look late by the time played before the seek.
pub(super) fn lateness_seconds(
    top: &gst::Element,
    pad: &gst::Pad,
    buffer: &gst::BufferRef,
) -> Option<f64> {
    if top.current_state() != gst::State::Playing || top.pending_state() != gst::State::VoidPending
    {
        return None;
    }
    let (clock, at) = clock_time_of(pad, buffer)?;
    let now = clock.time();
    Some((now.nseconds() as f64 - at.nseconds() as f64) / 1e9)
}

fn run_pipeline_once(
    plan: &CameraPlan,
    description: &str,
    rate: CameraRate,
    frame_sink: &SharedSink,
    registry: &CameraRegistry,
    stop: &AtomicBool,
    clock: &mut StreamClock,
) -> RunEnd {
    let pipeline = match gst::parse::launch(description) {
        Ok(e) => match e.downcast::<gst::Pipeline>() {
            Ok(p) => p,
            Err(_) => return RunEnd::Failed("template does not describe a pipeline".into()),
        },
        Err(e) => return RunEnd::Failed(format!("invalid pipeline description: {e}")),
    };
    let Some(sink) = pipeline
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    else {
        return RunEnd::Failed("the pipeline template has no `appsink name=frames`".into());
    };
    let liveness = Arc::new(Liveness {
        last_frame: Mutex::new(Instant::now()),
        waiting_downstream: AtomicBool::new(false),
    });
    if let Some(branch) = pipeline
        .by_name("live")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    {
        connect_live(&branch, plan.live.clone());
    }
    {
        let keyframes = rate.1.clone();
        let (busy, behind) = {
            let sink = frame_sink.lock().unwrap_or_else(|p| p.into_inner());
            (sink.busy_check(), sink.behind_check())
        };
        let alive = liveness.clone();
        keyframes.set_shedding(keyframes::Shedding {
            behind: behind.filter(|_| plan.shed_when_behind),
            max_lag_seconds: plan.max_decode_lag_seconds,
            paced: plan.sync,
            // A shed keyframe: the camera is alive, it only sheds.
            alive: Some(Arc::new(move || alive.touch())),
        });
        priority::yield_decoding(&pipeline, plan.pipeline_nice);
        if let Some(busy) = busy
            && let Some(converter) = first_converter(sink.upcast_ref())
        {
            let alive = (registry.clone(), plan.index, liveness.clone());
            drop_when_busy(&converter, busy, alive, plan.sync);
        }
        // Decoders written in the template exist already; decodebin adds its own later.
        let threads = plan.decoder_threads;
        for element in pipeline.iterate_recurse().into_iter().flatten() {
            set_decoder_threads(&element, threads);
            keyframes.watch(&element);
        }
        pipeline.connect_deep_element_added(move |_, _, element| {
            set_decoder_threads(element, threads);
            keyframes.watch(element);
        });
    }
    let shared_clock = Arc::new(Mutex::new(std::mem::take(clock)));
    {
        let frame_sink = frame_sink.clone();
        let registry = registry.clone();
        let liveness = liveness.clone();
        let shared_clock = shared_clock.clone();
        let camera = plan.index;
        let camera_id = plan.id.clone();
        let mut info: Option<(gst::Caps, gst_video::VideoInfo)> = None;
        let mut streaming = false;
        // Weak: the callback lives in the pipeline.
        let top = pipeline.upcast_ref::<gst::Element>().downgrade();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                    if info.as_ref().is_none_or(|(c, _)| c.as_ref() != caps) {
                        // New caps (first frame, or the source changed resolution mid-stream).
                        let vi = gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?;
                        info = Some((caps.to_owned(), vi));
                    }
                    let vi = &info.as_ref().ok_or(gst::FlowError::NotNegotiated)?.1;
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    let lag = (top.upgrade().zip(sink.static_pad("sink")))
                        .and_then(|(top, pad)| lateness_seconds(&top, &pad, &buffer))
                        .map_or(0.0, |l| l.max(0.0));
                    crate::telemetry::frame_lag(lag);
                    let pts_ns = buffer.pts().map(|t| t.nseconds());
                    let pts = pts_ns.map_or(0.0, |t| t as f64 / 1e9);
                    let mapped = buffer
                        .into_mapped_buffer_readable()
                        .map_err(|_| gst::FlowError::Error)?;
                    let (stream_seconds, seq) = {
                        let mut c = shared_clock.lock().unwrap_or_else(|p| p.into_inner());
                        c.seq += 1;
                        (c.stamp(pts), c.seq)
                    };
                    liveness.touch();
                    registry.frame(camera, (vi.width(), vi.height()), lag);
                    if !streaming {
                        streaming = true;
                        registry.set_state(camera, CameraState::Streaming, None);
                    }
                    let mut frame = Frame::from_mapped(
                        camera,
                        camera_id.clone(),
                        seq,
                        stream_seconds,
                        vi,
                        mapped,
                    );
                    frame.pts = pts_ns;
                    frame.lag_seconds = lag;
                    liveness.waiting_downstream.store(true, Ordering::Relaxed);
                    let outcome = frame_sink
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(frame);
                    liveness.waiting_downstream.store(false, Ordering::Relaxed);
                    liveness.touch();
                    match outcome {
                        Pushed::Stopped => Err(gst::FlowError::Flushing),
                        Pushed::ReplacedOlder => {
                            registry.dropped(camera);
                            Ok(gst::FlowSuccess::Ok)
                        }
                        Pushed::Skipped => {
                            registry.skipped(camera);
                            Ok(gst::FlowSuccess::Ok)
                        }
                        Pushed::NotDue => Ok(gst::FlowSuccess::Ok),
                        Pushed::Fenced => {
                            registry.dropped(camera);
                            Ok(gst::FlowSuccess::Ok)
                        }
                        Pushed::Accepted => Ok(gst::FlowSuccess::Ok),
                    }
                })
                .build(),
        );
    }

    let end = drive(plan, &pipeline, rate, (registry, stop), &liveness);
    let _ = pipeline.set_state(gst::State::Null);
    *clock = std::mem::take(&mut *shared_clock.lock().unwrap_or_else(|p| p.into_inner()));
    end
}

/// Sets the threads of a software video decoder (one with libav's `max-threads`); hardware
/// decoders and other elements are left as they are.
pub fn set_decoder_threads(element: &gst::Element, threads: u32) {
    let is_video_decoder = element
        .factory()
        .is_some_and(|f| f.klass().contains("Decoder") && f.klass().contains("Video"));
    let Some(spec) = element.find_property("max-threads") else {
        return;
    };
    if is_video_decoder && spec.value_type() == i32::static_type() {
        element.set_property("max-threads", i32::try_from(threads).unwrap_or(0));
    }
}

/// Hands each access unit of the `live` branch to the live view (a reference, no copy).
/// Without a live view the units are pulled and dropped: an appsink holding an unpulled
/// sample never lets the end of a file through.
fn connect_live(branch: &gst_app::AppSink, live: Option<Arc<dyn EncodedSink>>) {
    branch.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let (Some(live), Some(caps), Some(buffer)) =
                    (&live, sample.caps(), sample.buffer_owned())
                {
                    live.push(caps, buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The rate a running pipeline follows, changed without a rebuild.
struct Followed {
    fps: f64,
    tails: bool,
    stall_timeout: Duration,
}

impl Followed {
    /// Follows the profile `now` held to the overload interval `held` (seconds, 0: none): the
    /// keyframes-only mode, GOP trimming, the rate the decoder's slots run at and the stall
    /// timeout, `since` the last frame.
    fn follow(
        &mut self,
        plan: &CameraPlan,
        (now, held): (&crate::area::profile::Profile, f64),
        keyframes: &KeyframeClock,
        since: Duration,
    ) {
        let fps = thinned_fps(now.analysis_fps, held, keyframes.interval_seconds());
        let only = keyframes.choose(now.keyframes_only, fps);
        // A phase or shift may allow or forbid trimming at the same rate (no rebuild).
        keyframes.set_tails(KeyframeClock::tails_allowed(now, plan.skip_gop_tails));
        if keyframes.skips_tails() != self.tails {
            self.tails = keyframes.skips_tails();
            tracing::info!(camera = %plan.id, skip_gop_tails = self.tails, keyframe_interval_seconds = keyframes.interval_seconds(), analysis_fps = now.analysis_fps, "decoding each GOP up to its last analysis slot switched");
        }
        if only == keyframes.is_only() && fps == self.fps {
            return;
        }
        if fps != self.fps {
            // Held under overload (or let go): thousands of cameras may switch, so not at info.
            tracing::debug!(camera = %plan.id, analysis_fps = now.analysis_fps, held_to_fps = fps, "overload: camera held to a slower rate");
        } else {
            tracing::info!(camera = %plan.id, keyframes_only = only, keyframe_interval_seconds = keyframes.interval_seconds(), analysis_fps = now.analysis_fps, "keyframes-only decoding switched");
        }
        // No rebuild: the decoder probe drops (or again passes) the delta units, and chooses
        // the pictures at the new rate.
        keyframes.set_only(only);
        keyframes.set_fps(fps);
        self.fps = fps;
        // Held longer: the longer timeout at once. Let go: a full timeout from now at most (it had
        // no frame for a while), never later than the timeout it had, so that changes of rate
        // cannot put a dead camera's stall off for ever.
        let timeout = plan.stall_timeout_at(fps, keyframes);
        self.stall_timeout = if timeout >= self.stall_timeout {
            timeout
        } else {
            timeout.max((since + timeout).min(self.stall_timeout))
        };
    }
}

/// What sets a camera's rate: its profile (as the pipeline was built for), its keyframe clock,
/// and the overload interval it is held to.
type CameraRate<'a> = (
    &'a crate::area::profile::Profile,
    &'a KeyframeClock,
    Option<&'a OverloadInterval>,
);

/// Watches the bus (end of stream, errors), the stall watchdog, the profile and the overload
/// interval (and the keyframes-only mode they choose) and the stop flag.
fn drive(
    plan: &CameraPlan,
    pipeline: &gst::Pipeline,
    (profile, keyframes, overload): CameraRate,
    (registry, stop): (&CameraRegistry, &AtomicBool),
    liveness: &Liveness,
) -> RunEnd {
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        // The bus usually says why; prefer that message.
        let detail = pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
            .map(|m| match m.view() {
                gst::MessageView::Error(err) => format!(
                    "{} ({})",
                    err.error(),
                    err.debug().map(|d| d.to_string()).unwrap_or_default()
                ),
                _ => String::new(),
            });
        return RunEnd::Failed(detail.unwrap_or_else(|| format!("cannot start pipeline: {e}")));
    }
    let Some(bus) = pipeline.bus() else {
        return RunEnd::Failed("pipeline has no bus".into());
    };
    let mut rate = Followed {
        fps: profile.analysis_fps,
        tails: keyframes.skips_tails(),
        stall_timeout: plan.stall_timeout_at(profile.analysis_fps, keyframes),
    };
    // The overload interval at once: a camera (re)starting under overload is held from the start.
    let mut next_profile_check = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return RunEnd::Stopped;
        }
        let since = liveness.since();
        if since > rate.stall_timeout && !liveness.waiting_downstream.load(Ordering::Relaxed) {
            return RunEnd::Stalled(since);
        }
        if Instant::now() >= next_profile_check {
            next_profile_check = Instant::now() + Duration::from_secs(1);
            let now = plan
                .area
                .profile_at(plan.index, time::OffsetDateTime::now_utc());
            if now.analysis_fps != profile.analysis_fps || !now.active {
                tracing::info!(camera = %plan.id, phase = ?now.phase, analysis_fps = now.analysis_fps, active = now.active, "camera profile changed; rebuilding its pipeline");
                return RunEnd::Reconfigure;
            }
            let held = overload.map_or(0.0, |f| f());
            rate.follow(plan, (&now, held), keyframes, since);
            registry.set_profile(plan.index, (&now, rate.fps), keyframes);
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) if plan.looped => {
                if let Err(e) = pipeline.seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                    gst::ClockTime::ZERO,
                ) {
                    return RunEnd::Failed(format!("cannot loop the file: {e}"));
                }
            }
            MessageView::Eos(_) if plan.finite => return RunEnd::Finished,
            // A live source never ends on its own: the camera or its server went away.
            MessageView::Eos(_) => {
                return RunEnd::Failed("the source ended the stream (EOS)".into());
            }
            MessageView::Error(err) => {
                let debug = err.debug().map(|d| d.to_string()).unwrap_or_default();
                let element = err.src().map(|s| s.name().to_string()).unwrap_or_default();
                return RunEnd::Failed(format!("{element}: {} ({debug})", err.error()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thinned_fps;

    #[test]
    fn a_camera_is_held_only_when_the_overload_interval_is_slower_than_its_rate_and_then_to_its_keyframes()
     {
        // No overload (or a broken interval): its own rate.
        assert_eq!(thinned_fps(1.0, 0.0, Some(2.0)), 1.0);
        assert_eq!(thinned_fps(1.0, f64::NAN, None), 1.0);
        assert_eq!(thinned_fps(1.0, f64::INFINITY, None), 1.0);
        // Faster than one frame per 4 s: held to it; slower: its own.
        assert_eq!(thinned_fps(1.0, 4.0, None), 0.25);
        assert_eq!(thinned_fps(0.1, 4.0, None), 0.1);
        // Every keyframe (rate 0): held only to an interval longer than the keyframes'.
        assert_eq!(thinned_fps(0.0, 4.0, Some(2.0)), 0.25);
        assert_eq!(thinned_fps(0.0, 1.5, Some(2.0)), 0.0);
        assert_eq!(thinned_fps(0.0, 0.5, Some(2.0)), 0.0);
        assert_eq!(thinned_fps(0.0, 4.0, None), 0.0);
        // Keyframes every 2 s, held to one frame per 1.25 s: every keyframe, no frame between.
        assert_eq!(thinned_fps(1.0, 1.25, Some(2.0)), 0.5);
        // Keyframes further apart than two held intervals: held to the interval itself.
        assert_eq!(thinned_fps(1.0, 1.25, Some(3.0)), 0.8);
        // Held longer than the keyframe interval: the held interval.
        assert_eq!(thinned_fps(1.0, 4.0, Some(2.0)), 0.25);
        // Not held (its own rate is slower): its own, whatever the keyframes.
        assert_eq!(thinned_fps(0.2, 1.25, Some(2.0)), 0.2);
    }
}
