//! Ingest stage: one GStreamer pipeline per camera, rendered from an editable gst-launch template
//! in `pipelines/`, decoding at the camera's analysis rate and scaling to the model's input size
//! inside GStreamer; each frame goes to the camera's mailbox of the inference pool.

mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::config::{Camera, Config, Pace};
use crate::infer::pool::{Mailboxes, PutOutcome};
use crate::telemetry;
pub use template::{PipelineTemplate, TemplateError};

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
    buffer: gst::MappedBuffer<gst::buffer::Readable>,
}

impl Frame {
    pub fn rgb(&self) -> &[u8] {
        self.buffer.as_slice()
    }
}

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
}

pub fn init() -> Result<(), IngestError> {
    gst::init().map_err(|e| IngestError::Init(e.to_string()))
}

/// What a camera thread needs, resolved from the configuration before any thread starts.
pub struct CameraPlan {
    pub index: usize,
    pub id: Arc<str>,
    pub description: String,
    /// Files without `loop` end; everything else is restarted after an error or stall.
    pub finite: bool,
    pub looped: bool,
    pub stall_timeout: Duration,
    pub reconnect_delay: Duration,
}

impl CameraPlan {
    pub fn new(
        config: &Config,
        index: usize,
        camera: &Camera,
        width: usize,
        height: usize,
    ) -> Result<Self, IngestError> {
        let kind = SourceKind::of(&camera.uri).map_err(|e| IngestError::Template {
            camera: camera.id.clone(),
            source: TemplateError::Render(e),
        })?;
        let text = match &camera.pipeline {
            Some(p) => {
                let path = config.resolve(p);
                std::fs::read_to_string(&path).map_err(|source| IngestError::ReadTemplate {
                    camera: camera.id.clone(),
                    path,
                    source,
                })?
            }
            None => kind.builtin_template().to_owned(),
        };
        let fps = config
            .camera_group(camera)
            .map_or(crate::config::DEFAULT_ANALYSIS_FPS, |g| g.analysis_fps);
        let location = local_file(&camera.uri, &config.base_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let sync = config.ingest.pace == Pace::Realtime;
        let description = PipelineTemplate::parse(&text)
            .and_then(|t| t.render(&camera.uri, &location, fps, width, height, sync))
            .map_err(|source| IngestError::Template {
                camera: camera.id.clone(),
                source,
            })?;
        Ok(Self {
            index,
            id: Arc::from(camera.id.as_str()),
            description,
            finite: kind == SourceKind::File && !camera.r#loop,
            looped: kind == SourceKind::File && camera.r#loop,
            stall_timeout: Duration::from_secs_f64(config.ingest.stall_timeout_seconds.max(0.1)),
            reconnect_delay: Duration::from_secs_f64(
                config.ingest.reconnect_delay_seconds.max(0.0),
            ),
        })
    }
}

/// How one pipeline run ended.
enum RunEnd {
    Finished,
    Failed(String),
    Stalled,
    Stopped,
}

/// Runs a camera until its source ends (finite files) or `stop` is set, restarting the pipeline
/// after errors and stalls. Closes the camera's mailbox on the way out.
pub fn spawn_camera(
    plan: CameraPlan,
    mailboxes: Arc<Mailboxes>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("cam-{}", plan.id))
        .spawn(move || {
            let mut clock = StreamClock::default();
            let mut attempt: u32 = 0;
            loop {
                tracing::info!(camera = %plan.id, attempt, state = "connecting", "camera state");
                let end = run_pipeline_once(&plan, &mailboxes, &stop, &mut clock);
                match end {
                    RunEnd::Finished => {
                        tracing::info!(camera = %plan.id, state = "ended", frames = clock.seq, "camera state");
                        break;
                    }
                    RunEnd::Stopped => break,
                    RunEnd::Failed(e) if plan.finite => {
                        tracing::error!(camera = %plan.id, error = %e, state = "failed", "camera source failed; a finite file is not retried");
                        break;
                    }
                    RunEnd::Failed(e) => {
                        telemetry::camera_restart(&plan.id, "error");
                        tracing::warn!(camera = %plan.id, error = %e, state = "backoff", "camera pipeline failed; restarting");
                    }
                    RunEnd::Stalled => {
                        telemetry::camera_restart(&plan.id, "stall");
                        tracing::warn!(camera = %plan.id, stall_timeout_seconds = plan.stall_timeout.as_secs_f64(), state = "stalled", "no frame within the stall timeout; restarting");
                    }
                }
                attempt += 1;
                if sleep_unless_stopped(plan.reconnect_delay, &stop) {
                    break;
                }
            }
            mailboxes.close(plan.index);
        })
        .expect("spawning a thread only fails when the OS is out of resources")
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

fn run_pipeline_once(
    plan: &CameraPlan,
    mailboxes: &Arc<Mailboxes>,
    stop: &Arc<AtomicBool>,
    clock: &mut StreamClock,
) -> RunEnd {
    let pipeline = match gst::parse::launch(&plan.description) {
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
    let last_frame = Arc::new(std::sync::Mutex::new(Instant::now()));
    let shared_clock = Arc::new(std::sync::Mutex::new(std::mem::take(clock)));
    {
        let mailboxes = mailboxes.clone();
        let last_frame = last_frame.clone();
        let shared_clock = shared_clock.clone();
        let camera = plan.index;
        let camera_id = plan.id.clone();
        let mut info: Option<(gst::Caps, gst_video::VideoInfo)> = None;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                    if info.as_ref().is_none_or(|(c, _)| c.as_ref() != caps) {
                        let vi = gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?;
                        info = Some((caps.to_owned(), vi));
                    }
                    let vi = &info.as_ref().expect("set above").1;
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    let pts = buffer.pts().map_or(0.0, |t| t.nseconds() as f64 / 1e9);
                    let mapped = buffer
                        .into_mapped_buffer_readable()
                        .map_err(|_| gst::FlowError::Error)?;
                    let par = vi.par();
                    let display_aspect = (vi.width() as f64 * par.numer() as f64)
                        / (vi.height() as f64 * par.denom().max(1) as f64);
                    let (stream_seconds, seq) = {
                        let mut c = shared_clock.lock().unwrap_or_else(|p| p.into_inner());
                        c.seq += 1;
                        (c.stamp(pts), c.seq)
                    };
                    *last_frame.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    let frame = Frame {
                        camera,
                        camera_id: camera_id.clone(),
                        seq,
                        stream_seconds,
                        captured_at: SystemTime::now(),
                        received: Instant::now(),
                        width: vi.width(),
                        height: vi.height(),
                        row_stride: vi.stride()[0] as usize,
                        display_aspect,
                        buffer: mapped,
                    };
                    match mailboxes.put(frame) {
                        PutOutcome::Stopped => Err(gst::FlowError::Flushing),
                        _ => Ok(gst::FlowSuccess::Ok),
                    }
                })
                .build(),
        );
    }

    let end = drive(plan, &pipeline, stop, &last_frame);
    let _ = pipeline.set_state(gst::State::Null);
    *clock = std::mem::take(&mut *shared_clock.lock().unwrap_or_else(|p| p.into_inner()));
    end
}

/// Watches the bus: end of stream, errors, the stall watchdog and the stop flag.
fn drive(
    plan: &CameraPlan,
    pipeline: &gst::Pipeline,
    stop: &AtomicBool,
    last_frame: &std::sync::Mutex<Instant>,
) -> RunEnd {
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        return RunEnd::Failed(format!("cannot start pipeline: {e}"));
    }
    let Some(bus) = pipeline.bus() else {
        return RunEnd::Failed("pipeline has no bus".into());
    };
    let mut streaming = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return RunEnd::Stopped;
        }
        let since = last_frame
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if since > plan.stall_timeout {
            return RunEnd::Stalled;
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
            MessageView::Eos(_) => return RunEnd::Finished,
            MessageView::Error(err) => {
                let debug = err.debug().map(|d| d.to_string()).unwrap_or_default();
                return RunEnd::Failed(format!("{} ({debug})", err.error()));
            }
            MessageView::StateChanged(s)
                if !streaming
                    && msg.src() == Some(pipeline.upcast_ref())
                    && s.current() == gst::State::Playing =>
            {
                streaming = true;
                tracing::info!(camera = %plan.id, state = "streaming", "camera state");
            }
            _ => {}
        }
    }
}
