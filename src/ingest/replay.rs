//! A recorded file's frames, pulled one at a time on the caller's thread, through the same
//! pipeline template a file camera uses (rate reduced at the decoder, then scaled to the
//! model's size in GStreamer): for tools that look at a clip frame by frame (`gridwatch
//! detect`), not for the pipeline, whose cameras push frames from their own threads.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::template::{PipelineTemplate, TemplateValues};
use super::{DecoderChoice, Frame, IngestError, SourceKind};

/// The frames of one file at `fps`, in order; stops at the end of the file or its first error.
pub struct FileFrames {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    camera_id: std::sync::Arc<str>,
    seq: u64,
    error: Option<String>,
}

impl FileFrames {
    /// Opens `path`, analysed at `fps` frames per second, scaled to `width` × `height`.
    pub fn open(path: &Path, fps: f64, width: usize, height: usize) -> Result<Self, IngestError> {
        super::init()?;
        let name = path.display().to_string();
        let failed = |message: String| IngestError::Camera {
            camera: name.clone(),
            message,
        };
        let template =
            PipelineTemplate::parse(SourceKind::File.builtin_template()).map_err(|source| {
                IngestError::Template {
                    camera: name.clone(),
                    source,
                }
            })?;
        let description = template
            .render(&TemplateValues {
                location: &name,
                fps,
                width,
                height,
                sync: false,
                decode: &DecoderChoice::Software.launch_fragment(),
                decoder: &DecoderChoice::Software.after_parser(),
                ..Default::default()
            })
            .map_err(|source| IngestError::Template {
                camera: name.clone(),
                source,
            })?;
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| failed(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| failed("not a pipeline".into()))?;
        let sink = pipeline
            .by_name("frames")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| failed("the template has no appsink named `frames`".into()))?;
        // The rate is chosen at the decoder, as a camera's is (the template has no videorate).
        let clock = super::KeyframeClock::default();
        clock.set_fps(fps);
        pipeline.connect_deep_element_added(move |_, _, element| clock.watch(element));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| failed(format!("cannot play: {e}")))?;
        Ok(Self {
            pipeline,
            sink,
            camera_id: std::sync::Arc::from(name.as_str()),
            seq: 0,
            error: None,
        })
    }

    /// The next frame and its presentation time in seconds; `None` at the end of the file or
    /// when it cannot be decoded (the bus says why; the caller sees fewer frames).
    fn next_frame(&mut self) -> Option<(f64, Frame)> {
        let sample = self.pull()?;
        let vi = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
        let buffer = sample.buffer_owned()?;
        let pts = buffer.pts().map_or(0.0, |t| t.nseconds() as f64 / 1e9);
        self.seq += 1;
        let mapped = buffer.into_mapped_buffer_readable().ok()?;
        let frame = Frame::from_mapped(0, self.camera_id.clone(), self.seq, pts, &vi, mapped);
        Some((pts, frame))
    }
}

impl FileFrames {
    /// The next sample, waiting in short steps so that a pipeline error (a file that is not a
    /// video: the appsink then never sees end-of-stream) ends the stream instead of blocking.
    fn pull(&mut self) -> Option<gst::Sample> {
        let bus = self.pipeline.bus()?;
        loop {
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                return Some(sample);
            }
            if self.sink.is_eos() {
                return None;
            }
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    self.error = Some(e.error().to_string());
                    return None;
                }
            }
        }
    }

    /// Why the stream ended early, if a pipeline error ended it.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl Iterator for FileFrames {
    type Item = (f64, Frame);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

impl Drop for FileFrames {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
