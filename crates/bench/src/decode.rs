//! Decode cost per camera: the ingest pipeline exactly as a camera runs it (decode, rate
//! reduction, scale to the model's input, RGB into an appsink that is drained), on a file read as
//! fast as possible, with full decoding and with keyframes-only decoding. Reports CPU seconds per
//! second of video, i.e. the share of one core a live camera would take.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;

use gridwatch::ingest::{DecoderChoice, PipelineTemplate, TemplateValues};

#[derive(Debug, thiserror::Error)]
pub enum DecodeBenchError {
    #[error("decode bench: {0}")]
    Gst(String),
    #[error("decode bench: {path}: {message}")]
    Clip { path: PathBuf, message: String },
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
    pub median_full: f64,
    pub median_keyframes: f64,
    /// Full / keyframes-only CPU per video second.
    pub ratio: f64,
}

/// One pass over the clip; returns (frames delivered, video seconds, CPU s, wall s).
pub(crate) fn run_once(
    clip: &Path,
    analysis_fps: f64,
    keyframes_only: bool,
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
    if keyframes_only {
        pipeline.connect_deep_element_added(|_, _, e| gridwatch::ingest::keyframes_only_probe(e));
    }
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
        mode: if keyframes_only {
            "keyframes_only"
        } else {
            "full"
        },
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
    run_once(clip, analysis_fps, false)?;
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        runs.push(run_once(clip, analysis_fps, false)?);
        runs.push(run_once(clip, analysis_fps, true)?);
    }
    let mut full: Vec<f64> = runs
        .iter()
        .filter(|r| r.mode == "full")
        .map(|r| r.cpu_per_video_second)
        .collect();
    let mut kf: Vec<f64> = runs
        .iter()
        .filter(|r| r.mode == "keyframes_only")
        .map(|r| r.cpu_per_video_second)
        .collect();
    let (median_full, median_keyframes) = (super::median(&mut full), super::median(&mut kf));
    Ok(DecodeReport {
        clip: clip.display().to_string(),
        analysis_fps,
        repeats: repeats.max(1),
        runs,
        median_full,
        median_keyframes,
        ratio: median_full / median_keyframes,
    })
}
