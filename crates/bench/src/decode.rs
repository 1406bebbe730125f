//! Decode cost per camera: the ingest pipeline exactly as a camera runs it (decode, rate
//! reduction, scale to the model's input, RGB into an appsink that is drained), on a file read as
//! fast as possible, in each decoding mode ([`DecodeMode`]): every frame with the decoder's own
//! frame threads, every frame on one thread, each GOP up to its last analysis slot, keyframes
//! only. Reports CPU seconds per second of video, i.e. the share of one core a live camera would
//! take.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;

use gridwatch::ingest::{DecoderChoice, KeyframeClock, PipelineTemplate, TemplateValues};

#[derive(Debug, thiserror::Error)]
pub enum DecodeBenchError {
    #[error("decode bench: {0}")]
    Gst(String),
    #[error("decode bench: {path}: {message}")]
    Clip { path: PathBuf, message: String },
}

/// How a camera's stream is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Every frame, the decoder's own frame threads (`[ingest] decoder_threads = 0`, and
    /// gridwatch before it set one thread).
    FrameThreads,
    /// Every frame on one thread (`decoder_threads = 1`, `skip_gop_tails = false`).
    Full,
    /// Each GOP up to its last analysis slot, one thread: gridwatch's default for a camera
    /// faster than its stream's keyframes.
    GopTails,
    /// Only the keyframes the rate needs, one thread.
    KeyframesOnly,
}

impl DecodeMode {
    pub const ALL: [DecodeMode; 4] = [
        DecodeMode::FrameThreads,
        DecodeMode::Full,
        DecodeMode::GopTails,
        DecodeMode::KeyframesOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DecodeMode::FrameThreads => "frame_threads",
            DecodeMode::Full => "full",
            DecodeMode::GopTails => "gop_tails",
            DecodeMode::KeyframesOnly => "keyframes_only",
        }
    }

    /// Sets up `element` (each one the pipeline adds) as a camera in this mode would.
    fn watch(self, clock: &KeyframeClock, element: &gst::Element) {
        let threads = match self {
            DecodeMode::FrameThreads => 0,
            _ => 1,
        };
        gridwatch::ingest::set_decoder_threads(element, threads);
        clock.watch(element);
    }

    fn clock(self, analysis_fps: f64) -> KeyframeClock {
        let clock = match self {
            DecodeMode::KeyframesOnly => KeyframeClock::only(),
            _ => KeyframeClock::default(),
        };
        clock.set_fps(analysis_fps);
        clock.set_tails(self == DecodeMode::GopTails);
        clock
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeRun {
    pub mode: &'static str,
    pub frames_out: u64,
    pub video_seconds: f64,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// CPU seconds per second of video: the share of one core a live camera takes.
    pub cpu_per_video_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    pub clip: String,
    pub analysis_fps: f64,
    pub repeats: usize,
    pub runs: Vec<DecodeRun>,
    /// Median CPU per video second, by mode.
    pub medians: BTreeMap<&'static str, f64>,
    /// Every frame on one thread.
    pub median_full: f64,
    pub median_keyframes: f64,
    /// Full / keyframes-only CPU per video second.
    pub ratio: f64,
}

/// One pass over the clip; returns (frames delivered, video seconds, CPU s, wall s).
pub(crate) fn run_once(
    clip: &Path,
    analysis_fps: f64,
    mode: DecodeMode,
) -> Result<DecodeRun, DecodeBenchError> {
    let template = PipelineTemplate::parse(include_str!("../../../pipelines/file.pipeline"))
        .map_err(|e| DecodeBenchError::Gst(e.to_string()))?;
    let description = template
        .render(&TemplateValues {
            location: &clip.display().to_string(),
            fps: analysis_fps,
            width: 416,
            height: 416,
            sync: false,
            decode: &DecoderChoice::Software.launch_fragment(),
            decoder: &DecoderChoice::Software.after_parser(),
            ..Default::default()
        })
        .map_err(|e| DecodeBenchError::Gst(e.to_string()))?;
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| DecodeBenchError::Gst(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| DecodeBenchError::Gst("not a pipeline".into()))?;
    let clock = mode.clock(analysis_fps);
    pipeline.connect_deep_element_added(move |_, _, e| mode.watch(&clock, e));
    let sink = pipeline
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| DecodeBenchError::Gst("no appsink".into()))?;
    let cpu0 = super::process_cpu_seconds();
    let wall0 = Instant::now();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| DecodeBenchError::Clip {
            path: clip.to_owned(),
            message: e.to_string(),
        })?;
    let mut frames = 0;
    while let Ok(sample) = sink.pull_sample() {
        // Touch the pixels as the pool would, so nothing is optimised away.
        if let Some(b) = sample.buffer() {
            std::hint::black_box(b.size());
        }
        frames += 1;
    }
    let video_seconds = pipeline
        .query_duration::<gst::ClockTime>()
        .map(|d| d.nseconds() as f64 / 1e9)
        .unwrap_or(0.0);
    let cpu_seconds = super::process_cpu_seconds() - cpu0;
    let wall_seconds = wall0.elapsed().as_secs_f64();
    let _ = pipeline.set_state(gst::State::Null);
    if video_seconds <= 0.0 {
        return Err(DecodeBenchError::Clip {
            path: clip.to_owned(),
            message: "unknown duration".into(),
        });
    }
    Ok(DecodeRun {
        mode: mode.name(),
        frames_out: frames,
        video_seconds,
        cpu_seconds,
        wall_seconds,
        cpu_per_video_second: cpu_seconds / video_seconds,
    })
}

/// Interleaves `repeats` runs of both modes after one discarded warm-up (plugin registry, caches).
pub fn run(
    clip: &Path,
    analysis_fps: f64,
    repeats: usize,
) -> Result<DecodeReport, DecodeBenchError> {
    gst::init().map_err(|e| DecodeBenchError::Gst(e.to_string()))?;
    if !clip.is_file() {
        return Err(DecodeBenchError::Clip {
            path: clip.to_owned(),
            message: "not found".into(),
        });
    }
    run_once(clip, analysis_fps, DecodeMode::Full)?;
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        for mode in DecodeMode::ALL {
            runs.push(run_once(clip, analysis_fps, mode)?);
        }
    }
    let medians: BTreeMap<&'static str, f64> = DecodeMode::ALL
        .iter()
        .map(|m| {
            let mut v: Vec<f64> = runs
                .iter()
                .filter(|r| r.mode == m.name())
                .map(|r| r.cpu_per_video_second)
                .collect();
            (m.name(), super::median(&mut v))
        })
        .collect();
    let (median_full, median_keyframes) = (
        medians[DecodeMode::Full.name()],
        medians[DecodeMode::KeyframesOnly.name()],
    );
    Ok(DecodeReport {
        clip: clip.display().to_string(),
        analysis_fps,
        repeats: repeats.max(1),
        runs,
        medians,
        median_full,
        median_keyframes,
        ratio: median_full / median_keyframes,
    })
}
