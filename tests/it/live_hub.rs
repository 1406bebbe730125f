//! The live view's hub and fMP4 muxer over real GStreamer: the access units of the sample clip
//! go through a hub to a viewer; what the viewer received, written to a file, is demuxed and
//! decoded by GStreamer frame for frame. A viewer that stops reading holds no more than its
//! queue and, once it reads again, resumes at a keyframe. Full-resolution evidence decodes
//! the cached group of pictures at the camera's size.

use std::sync::Arc;

use gridwatch::live::settings::LiveSettings;
use gridwatch::live::{Hub, LiveMessage, LiveSource};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::support::{TempDir, repo};

/// The clip's encoded access units as the ingest template's `live` branch hands them over.
fn access_units(clip: &str, limit: usize) -> Vec<gst::Sample> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! parsebin ! appsink name=out sync=false caps=\"video/x-h264,stream-format=avc,alignment=au\"",
        repo(clip).display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while out.len() < limit {
        match sink.pull_sample() {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

fn push_all(hub: &Hub, samples: &[gst::Sample]) {
    for s in samples {
        hub.push(s.caps().unwrap(), s.buffer_owned().unwrap());
    }
}

fn keyframe(s: &gst::Sample) -> bool {
    !s.buffer()
        .unwrap()
        .flags()
        .contains(gst::BufferFlags::DELTA_UNIT)
}

/// Frames GStreamer decodes from an MP4 file.
fn decoded_frames(path: &std::path::Path) -> usize {
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! appsink name=out sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut n = 0;
    while sink.pull_sample().is_ok() {
        n += 1;
    }
    let bus = pipeline.bus().unwrap();
    let error = bus.pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        error.is_none(),
        "the muxed stream decodes without error: {error:?}"
    );
    n
}

#[test]
fn a_viewer_receives_the_clip_as_fragmented_mp4_that_decodes_frame_for_frame() {
    let samples = access_units("sample-streams/vtest.mp4", 150);
    assert!(samples.len() >= 100);
    let settings = LiveSettings {
        viewer_queue_frames: 1_000,
        ..LiveSettings::default()
    };
    let hub = Hub::new(Arc::from("vtest"), settings);
    // The first unit sets the stream up; a viewer joining then gets the init segment.
    push_all(&hub, &samples[..1]);
    assert!(
        matches!(hub.source(), LiveSource::Video { ref mime, .. } if mime.starts_with("video/mp4; codecs=\"avc1.")),
        "{:?}",
        hub.source()
    );
    let mut joined = hub.join().unwrap();
    push_all(&hub, &samples[1..]);
    let mut file = Vec::new();
    let (mut inits, mut fragments) = (0, 0);
    while let Ok(m) = joined.rx.try_recv() {
        match m {
            LiveMessage::Init { segment, .. } => {
                inits += 1;
                file.extend_from_slice(&segment);
            }
            LiveMessage::Fragment(f) => {
                fragments += 1;
                file.extend_from_slice(&f.header);
                file.extend_from_slice(&f.payload);
            }
            LiveMessage::Text(_) => {}
        }
    }
    assert_eq!(inits, 1);
    // The joining viewer got the first unit from the cache, then every later one.
    assert_eq!(fragments, samples.len());
    let dir = TempDir::new("live-fmp4");
    let path = dir.path("viewer.mp4");
    std::fs::write(&path, &file).unwrap();
    assert_eq!(
        decoded_frames(&path),
        samples.len(),
        "every access unit decodes"
    );
}

/// Viewers whose end went away without leaving (a socket upgrade that never finished) do not
/// keep their places on a camera that sends no video, where no fragment would notice them.
#[test]
fn viewers_gone_without_leaving_free_their_places_on_a_camera_without_video() {
    let settings = LiveSettings {
        max_viewers_per_camera: 2,
        ..LiveSettings::default()
    };
    let hub = Hub::new(Arc::from("no-video"), settings);
    let kept = hub.join().unwrap();
    drop(hub.join().unwrap());
    assert!(hub.join().is_ok(), "the dropped viewer's place is free");
    let _third = hub.join();
    assert!(hub.join().is_err(), "two live viewers are the most");
    drop(kept);
}

#[test]
fn a_stalled_viewer_holds_only_its_queue_and_resumes_at_a_keyframe() {
    let samples = access_units("sample-streams/vtest.mp4", 400);
    let queue = 20;
    let settings = LiveSettings {
        viewer_queue_frames: queue,
        ..LiveSettings::default()
    };
    let hub = Hub::new(Arc::from("vtest"), settings);
    push_all(&hub, &samples[..1]);
    let mut stalled = hub.join().unwrap();
    let mut reading = hub.join().unwrap();
    let mut read = 0;
    for s in &samples[1..] {
        hub.push(s.caps().unwrap(), s.buffer_owned().unwrap());
        while let Ok(m) = reading.rx.try_recv() {
            read += usize::from(matches!(m, LiveMessage::Fragment(_)));
        }
    }
    // The other viewer was never held up.
    assert_eq!(read, samples.len());
    let mut held = Vec::new();
    while let Ok(m) = stalled.rx.try_recv() {
        held.push(m);
    }
    assert!(held.len() <= queue + 2, "held {} messages", held.len());
    // Reading again: a delta unit is not sent to a cut viewer; the next keyframe is.
    let delta = samples.iter().find(|s| !keyframe(s)).unwrap();
    push_all(&hub, std::slice::from_ref(delta));
    assert!(
        stalled.rx.try_recv().is_err(),
        "a delta unit is not sent to a cut viewer"
    );
    let key = samples.iter().find(|s| keyframe(s)).unwrap();
    push_all(&hub, std::slice::from_ref(key));
    match stalled.rx.try_recv() {
        Ok(LiveMessage::Fragment(f)) => assert!(f.keyframe, "resumes at a keyframe"),
        _ => panic!("the cut viewer gets the next keyframe"),
    }
}

#[test]
fn full_resolution_evidence_decodes_the_cached_group_at_the_camera_size() {
    let samples = access_units("sample-streams/vtest.mp4", 60);
    let hub = Hub::new(Arc::from("vtest"), LiveSettings::default());
    push_all(&hub, &samples);
    let target = samples[40].buffer().unwrap().pts();
    let (caps, units, pts) = hub.group_of_pictures(target).expect("cached");
    assert_eq!(pts, target);
    let d = gridwatch::live::snapshot::decode(&caps, &units, pts).unwrap();
    assert_eq!(
        (d.info.width(), d.info.height()),
        (768, 576),
        "vtest's own size"
    );
    assert_eq!(d.pts, target, "the frame asked for");
}
