//! Full-resolution evidence: a case's picture decoded from the camera's own stream at the
//! camera's resolution, not the analysed frame scaled down for the model. The hub keeps the
//! last groups of pictures encoded; only when a case is made is the group that holds the
//! case's frame decoded (a short GStreamer pipeline: appsrc → decodebin → RGB), so the cost is
//! paid per case, never per frame.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

/// A decode that takes longer than this is abandoned (the analysed frame is used instead).
const DECODE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot build the decoding pipeline: {0}")]
    Pipeline(String),
    #[error("the cached frames did not decode: {0}")]
    Decode(String),
}

/// One decoded RGB frame at the stream's resolution.
pub struct Decoded {
    pub info: gst_video::VideoInfo,
    pub buffer: gst::MappedBuffer<gst::buffer::Readable>,
    pub pts: Option<gst::ClockTime>,
}

/// Decodes `units` (a group of pictures from its keyframe, with their `caps`) and returns the
/// frame presented at `target`, or the last one before it.
pub fn decode(
    caps: &gst::Caps,
    units: &[gst::Buffer],
    target: Option<gst::ClockTime>,
) -> Result<Decoded, SnapshotError> {
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=out sync=false",
    )
    .map_err(|e| SnapshotError::Pipeline(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| SnapshotError::Pipeline("not a pipeline".into()))?;
    let result = run(&pipeline, caps, units, target);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(
    pipeline: &gst::Pipeline,
    caps: &gst::Caps,
    units: &[gst::Buffer],
    target: Option<gst::ClockTime>,
) -> Result<Decoded, SnapshotError> {
    let element = |name: &str| {
        pipeline
            .by_name(name)
            .ok_or_else(|| SnapshotError::Pipeline(format!("no element {name}")))
    };
    let src = element("src")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| SnapshotError::Pipeline("src is not an appsrc".into()))?;
    let sink = element("out")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| SnapshotError::Pipeline("out is not an appsink".into()))?;
    src.set_caps(Some(caps));
    src.set_max_bytes(0);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    for unit in units {
        src.push_buffer(unit.clone())
            .map_err(|e| SnapshotError::Decode(format!("{e:?}")))?;
    }
    let _ = src.end_of_stream();
    let mut best: Option<gst::Sample> = None;
    // One deadline for the whole decode (it runs on the case thread), and no frame decoded
    // past the target: the decoder gives frames in presentation order, so none after it fits.
    let deadline = std::time::Instant::now() + DECODE_TIMEOUT;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_nseconds(
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .as_nanos() as u64,
    )) {
        let pts = sample.buffer().and_then(|b| b.pts());
        if let (Some(t), Some(p)) = (target, pts)
            && p > t
            && best.is_some()
        {
            break;
        }
        let fits = match (target, pts) {
            (Some(t), Some(p)) => p <= t,
            _ => true,
        };
        let better = best
            .as_ref()
            .and_then(|b| b.buffer().and_then(|b| b.pts()))
            .is_none_or(|b| pts.is_some_and(|p| p >= b));
        if fits && better {
            best = Some(sample);
        }
    }
    let Some(sample) = best else {
        let why = pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
            .map(|m| match m.view() {
                gst::MessageView::Error(e) => e.error().to_string(),
                _ => String::new(),
            })
            .unwrap_or_else(|| "no frame came out".into());
        return Err(SnapshotError::Decode(why));
    };
    let caps = sample
        .caps()
        .ok_or_else(|| SnapshotError::Decode("decoded frame without caps".into()))?;
    let info =
        gst_video::VideoInfo::from_caps(caps).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let buffer = sample
        .buffer_owned()
        .ok_or_else(|| SnapshotError::Decode("decoded sample without buffer".into()))?;
    let pts = buffer.pts();
    let buffer = buffer
        .into_mapped_buffer_readable()
        .map_err(|_| SnapshotError::Decode("decoded frame cannot be mapped".into()))?;
    Ok(Decoded { info, buffer, pts })
}
