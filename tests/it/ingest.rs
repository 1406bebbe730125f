//! Ingest against real sources: a real RTSP server (gst-rtsp-server, in-process or as a separate
//! `gridwatch serve-rtsp` process that is killed and restarted), broken sources, keyframe-only
//! decoding, a resolution change mid-stream, cameras started spread out, keyframes shed under
//! overload, cameras held to a slower rate under overload, late units shed by a decoder behind
//! real time (and none by cameras on time).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridwatch::config::Config;
use gridwatch::ingest::status::{CameraRegistry, CameraState, CameraStatus};
use gridwatch::run::{RunOptions, RunSummary, StopHandle};

use crate::support::{TempDir, repo};

/// A key area with the given `[[cameras]]` blocks (all in one unit and group).
fn config(dir: &TempDir, analysis_fps: f64, cameras: &str, pace: &str) -> Config {
    config_with_rate(
        dir,
        &format!("analysis_fps = {analysis_fps}"),
        cameras,
        pace,
    )
}

/// As [`config`], the group's rate line given (empty: the zones decide).
fn config_with_rate(dir: &TempDir, rate_line: &str, cameras: &str, pace: &str) -> Config {
    let text = format!(
        r#"
[centre]
name = "test"
[[units]]
id = "u"
name = "unit"
[[groups]]
id = "g"
name = "group"
unit = "u"
{rate_line}
{cameras}
[model]
card = "{card}"
[inference]
workers = 2
[ingest]
pace = "{pace}"
stall_timeout_seconds = 3.0
reconnect_initial_seconds = 0.5
reconnect_max_seconds = 2.0
rtsp_timeout_seconds = 3.0
[cases]
outbox = "outbox.sqlite"
[telemetry]
metrics_listen = "127.0.0.1:{status_port}"
[dispatch]
url = "http://127.0.0.1:9/api/v1/cases"
"#,
        card = repo("models/nanodet-g-416-coco.toml").display(),
        status_port = free_port(),
    );
    Config::from_text(&text, "ingest-test.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"))
}

fn camera(id: &str, uri: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"{id}\"\nunit = \"u\"\ngroup = \"g\"\nuri = \"{uri}\"\n{extra}\n"
    )
}

/// Runs the pipeline on a thread; the registry shows the cameras while it runs.
struct Running {
    registry: CameraRegistry,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<RunSummary>>,
}

impl Running {
    fn start(config: Config) -> Self {
        let registry = CameraRegistry::default();
        let stop = StopHandle::default();
        let options = RunOptions {
            drain_timeout: Duration::from_millis(200),
            cameras: registry.clone(),
            ..RunOptions::default()
        };
        let s = stop.clone();
        let thread = std::thread::spawn(move || gridwatch::run::run(config, options, s).unwrap());
        Self {
            registry,
            stop,
            thread: Some(thread),
        }
    }

    fn cam(&self, id: &str) -> CameraStatus {
        self.registry
            .snapshot()
            .into_iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no camera {id}"))
    }

    /// Waits until `pred` holds for camera `id`, or panics after `timeout` with its status.
    fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&CameraStatus) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if self
                .registry
                .snapshot()
                .iter()
                .any(|c| c.id == id && pred(c))
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "camera {id}: not {what} within {timeout:?}: {:?}",
                self.cam(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(mut self) -> RunSummary {
        self.stop.stop();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn serve_rtsp_process(port: u16, files: &[&Path]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    cmd.args(["serve-rtsp", "--port", &port.to_string()])
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // It prints one line per mount once listening.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("serve-rtsp printed nothing").unwrap();
    assert!(first.starts_with("rtsp://"), "{first}");
    // Keep reading: a closed pipe would fail the server's next line (one per mount).
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_killed_rtsp_server_is_reconnected_and_other_cameras_never_stop() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("rtsp-kill");
    let port = free_port();
    let clip = repo("sample-streams/vtest.mp4");
    let mut server = serve_rtsp_process(port, &[&clip]);
    let cams = camera("live", &format!("rtsp://127.0.0.1:{port}/vtest"), "")
        + &camera(
            "file",
            &repo("sample-streams/bikes.mp4").display().to_string(),
            "loop = true",
        );
    let run = Running::start(config(&dir, 5.0, &cams, "realtime"));

    run.wait_for("live", Duration::from_secs(20), "streaming", |c| {
        c.state == CameraState::Streaming && c.frames >= 5
    });
    run.wait_for("file", Duration::from_secs(20), "streaming", |c| {
        c.frames >= 5
    });

    // A frozen server keeps the connection open but sends nothing: the watchdog's case.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(server.id() as i32, libc::SIGSTOP) };
    let silent = run.wait_for(
        "live",
        Duration::from_secs(15),
        "noticing the silence",
        |c| c.state != CameraState::Streaming,
    );
    eprintln!(
        "silent server noticed after {:.1} s: {:?}",
        silent.as_secs_f64(),
        run.cam("live").last_error
    );
    unsafe { libc::kill(server.id() as i32, libc::SIGCONT) };
    let frames_before = run.cam("live").frames;
    run.wait_for(
        "live",
        Duration::from_secs(15),
        "streaming after the freeze",
        |c| c.state == CameraState::Streaming && c.frames >= frames_before + 3,
    );

    server.kill().unwrap();
    server.wait().unwrap();
    let killed_at = Instant::now();
    let file_frames_at_kill = run.cam("file").frames;
    let lost = run.wait_for(
        "live",
        Duration::from_secs(15),
        "noticing the outage",
        |c| {
            matches!(
                c.state,
                CameraState::Stalled | CameraState::Backoff | CameraState::Connecting
            )
        },
    );
    eprintln!("outage noticed after {:.1} s", lost.as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));

    let mut server = serve_rtsp_process(port, &[&clip]);
    let restarted = Instant::now();
    let frames_before = run.cam("live").frames;
    // Bound: stall timeout (3 s) + the longest backoff (2 s) + connecting and the first keyframe.
    let back = run.wait_for("live", Duration::from_secs(15), "streaming again", |c| {
        c.state == CameraState::Streaming && c.frames >= frames_before + 3
    });
    eprintln!(
        "live camera streaming again {:.1} s after the server restarted",
        back.as_secs_f64()
    );
    let live = run.cam("live");
    assert!(live.reconnects >= 1, "{live:?}");
    let file = run.cam("file");
    assert_eq!(
        file.state,
        CameraState::Streaming,
        "the file camera never stopped: {file:?}"
    );
    let outage = killed_at.elapsed().as_secs_f64();
    assert!(
        file.frames as f64 >= file_frames_at_kill as f64 + 5.0 * outage * 0.4,
        "the file camera kept its rate (5 fps) through the {outage:.1} s outage: {} -> {}",
        file_frames_at_kill,
        file.frames
    );
    let _ = restarted;
    run.finish();
    server.kill().unwrap();
    let _ = server.wait();
}

#[test]
fn broken_sources_fail_clearly_and_healthy_ones_stream_h264_and_h265() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("rtsp-broken");
    let server = gridwatch::ingest::rtsp_server::serve(
        &[
            repo("sample-streams/vtest.mp4"),
            repo("sample-streams/vtest-h265.mp4"),
        ],
        "127.0.0.1",
        0,
    )
    .unwrap();
    let codecs: Vec<_> = server.mounts().iter().map(|m| m.codec).collect();
    assert_eq!(codecs, vec!["h264", "h265"]);
    let url = |i: usize| server.url(&server.mounts()[i]);
    std::fs::write(
        dir.path("garbage.mp4"),
        (0..200_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let full = std::fs::read(repo("sample-streams/vtest.mp4")).unwrap();
    std::fs::write(dir.path("truncated.mp4"), &full[..full.len() / 20]).unwrap();
    let closed = free_port();
    let cams = camera("h264", &url(0), "")
        + &camera("h265", &url(1), "")
        + &camera("h264-udp", &url(0), "rtsp_transport = \"udp\"")
        + &camera(
            "closed",
            &format!("rtsp://admin:hunter2@127.0.0.1:{closed}/ch1"),
            "",
        )
        + &camera("garbage", "garbage.mp4", "")
        + &camera("truncated", "truncated.mp4", "");
    let config = config(&dir, 5.0, &cams, "realtime");
    let status_url = format!(
        "http://{}/api/v1/cameras",
        config.telemetry.metrics_listen.clone().unwrap()
    );
    let run = Running::start(config);

    run.wait_for("h264", Duration::from_secs(20), "streaming H.264", |c| {
        c.state == CameraState::Streaming && c.frames >= 5
    });
    run.wait_for("h265", Duration::from_secs(20), "streaming H.265", |c| {
        c.state == CameraState::Streaming && c.frames >= 5
    });
    run.wait_for(
        "h264-udp",
        Duration::from_secs(20),
        "streaming over UDP",
        |c| c.state == CameraState::Streaming && c.frames >= 5,
    );
    run.wait_for("garbage", Duration::from_secs(10), "failed", |c| {
        c.state == CameraState::Failed
    });
    run.wait_for(
        "truncated",
        Duration::from_secs(20),
        "ended or failed",
        |c| matches!(c.state, CameraState::Ended | CameraState::Failed),
    );
    run.wait_for("closed", Duration::from_secs(10), "retrying", |c| {
        c.reconnects >= 2
    });

    let closed = run.cam("closed");
    let error = closed.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("connect") || error.contains("open"),
        "says what failed: {error}"
    );
    assert!(
        !error.contains("hunter2") && !closed.source.contains("hunter2"),
        "no password in status: {closed:?}"
    );
    assert!(
        closed.source.contains("127.0.0.1"),
        "says which source: {closed:?}"
    );
    assert!(run.cam("garbage").last_error.is_some());
    // Healthy cameras kept going while the others failed and retried.
    let before = (run.cam("h264").frames, run.cam("h265").frames);
    std::thread::sleep(Duration::from_secs(3));
    let after = (run.cam("h264").frames, run.cam("h265").frames);
    // 5 fps nominal; allow for a loaded CI machine, but not for a stopped camera.
    assert!(
        after.0 >= before.0 + 6 && after.1 >= before.1 + 6,
        "{before:?} -> {after:?}"
    );

    // The same states over the status endpoint, as monitoring sees them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed: serde_json::Value = rt
        .block_on(async { reqwest::get(&status_url).await?.json().await })
        .unwrap();
    let state_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of("h264").as_deref(), Some("streaming"), "{listed}");
    assert_eq!(state_of("garbage").as_deref(), Some("failed"), "{listed}");
    assert!(
        !listed.to_string().contains("hunter2"),
        "no password over HTTP"
    );
    let metrics = rt
        .block_on(async {
            reqwest::get(status_url.replace("/api/v1/cameras", "/metrics"))
                .await?
                .text()
                .await
        })
        .unwrap();
    assert!(
        metrics.contains("gridwatch_camera_state"),
        "camera state gauges exported"
    );
    run.finish();
}

/// Keyframes in a file, counted by GStreamer alone (demuxer + parser, no gridwatch code).
fn count_keyframes(path: &Path) -> usize {
    use gstreamer::prelude::*;
    gstreamer::init().unwrap();
    let p = gstreamer::parse::launch(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! appsink name=s sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gstreamer::Pipeline>()
    .unwrap();
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    p.set_state(gstreamer::State::Playing).unwrap();
    let mut keyframes = 0;
    while let Ok(s) = sink.pull_sample() {
        if !s
            .buffer()
            .unwrap()
            .flags()
            .contains(gstreamer::BufferFlags::DELTA_UNIT)
        {
            keyframes += 1;
        }
    }
    p.set_state(gstreamer::State::Null).unwrap();
    keyframes
}

#[test]
fn keyframes_only_mode_analyses_only_keyframes() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("keyframes");
    let clip = repo("sample-streams/vtest.mp4");
    let keyframes = count_keyframes(&clip);
    let cams = camera("kf", &clip.display().to_string(), "keyframes_only = true")
        + &camera("all", &clip.display().to_string(), "");
    let run = Running::start(config(&dir, 2.0, &cams, "fast"));
    run.wait_for("kf", Duration::from_secs(120), "ended", |c| {
        c.state == CameraState::Ended
    });
    run.wait_for("all", Duration::from_secs(120), "ended", |c| {
        c.state == CameraState::Ended
    });
    let (kf, all) = (
        run.cam("kf").frames as usize,
        run.cam("all").frames as usize,
    );
    eprintln!(
        "keyframes in file: {keyframes}; analysed keyframes-only: {kf}; analysed all (2 fps): {all}"
    );
    assert!(
        kf.abs_diff(keyframes) <= 1,
        "one analysed frame per keyframe: {kf} vs {keyframes}"
    );
    // The clip has a keyframe every 2 s: 2 fps analysis sees four times as many frames.
    assert!(
        all >= 3 * kf,
        "full decoding analyses frames between keyframes: {all} vs {kf}"
    );
    run.finish();
}

/// No rate and no keyframes-only set: a camera whose zones need less than the stream's keyframe
/// rate (parking, a frame every 5 s; vtest has a keyframe every 2 s) switches to keyframes-only
/// decoding by itself once it has measured the keyframe interval, and is analysed at its zone's
/// rate; a crowd camera (1 frame/s, faster than the keyframes) keeps decoding every frame.
#[test]
fn a_slow_zone_decodes_keyframes_only_by_itself_and_a_fast_one_does_not() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("keyframes-auto");
    let clip = repo("sample-streams/vtest.mp4").display().to_string();
    let zone = |scenario: &str| {
        format!(
            "loop = true\n[[cameras.zones]]\nid = \"z\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\nscenarios = [\"{scenario}\"]\n"
        )
    };
    let cams = camera("slow", &clip, &zone("illegal_parking"))
        + &camera("fast", &clip, &zone("crowd_gathering"));
    let config = config_with_rate(&dir, "", &cams, "realtime");
    let parking = config
        .catalog
        .entry("illegal_parking")
        .unwrap()
        .analysis_fps;
    let run = Running::start(config);
    let waited = run.wait_for("slow", Duration::from_secs(30), "keyframes-only", |c| {
        c.keyframes_only
    });
    let slow = run.cam("slow");
    assert_eq!(
        (slow.analysis_fps, slow.analysis_rate_from),
        (parking, "zones")
    );
    let gap = slow.keyframe_interval_seconds.expect("measured");
    assert!(
        (gap - 2.0).abs() < 0.05,
        "vtest's keyframes are 2 s apart: {gap}"
    );
    // It goes on streaming after the switch, at its zone's rate.
    let before = slow.frames;
    std::thread::sleep(Duration::from_secs(12));
    let slow = run.cam("slow");
    assert_eq!(slow.state, CameraState::Streaming, "{slow:?}");
    let new = slow.frames - before;
    assert!(
        (1..=4).contains(&new),
        "about one frame per {} s in 12 s after the switch ({waited:?}): {new}",
        1.0 / parking
    );
    let fast = run.cam("fast");
    assert!(
        !fast.keyframes_only && fast.keyframe_interval_seconds.is_some(),
        "1 frame/s needs the frames between keyframes: {fast:?}"
    );
    run.finish();
}

/// The counter of encoded units a camera kept from its decoder, for `reason`, from the process's
/// Prometheus recorder (what `/metrics` serves while the run lasts), read as the bench reads it.
fn units_not_decoded(camera: &str, reason: &str) -> u64 {
    let text = gridwatch::telemetry::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    gridwatch_bench::replay::counter_by(
        &text,
        gridwatch::telemetry::UNITS_NOT_DECODED,
        "reason",
        &[camera.to_owned()],
    )
    .get(reason)
    .copied()
    .unwrap_or(0)
}

/// A camera at 1 frame/s on vtest (a keyframe every 2 s, no B-frames) decodes each GOP only up to
/// its slot one second after the keyframe, yet is analysed at every slot: as many frames as a
/// camera that decodes everything (`keyframes_only = false`), with the GOP tails counted.
#[test]
fn a_gop_is_decoded_only_up_to_its_last_analysis_slot() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("gop-tails");
    let clip = repo("sample-streams/vtest.mp4");
    let keyframes = count_keyframes(&clip);
    let uri = clip.display().to_string();
    let cams = camera("tails", &uri, "") + &camera("whole", &uri, "keyframes_only = false");
    let run = Running::start(config(&dir, 1.0, &cams, "fast"));
    for id in ["tails", "whole"] {
        run.wait_for(id, Duration::from_secs(120), "ended", |c| {
            c.state == CameraState::Ended
        });
    }
    let (tails, whole) = (run.cam("tails"), run.cam("whole"));
    let skipped = units_not_decoded("tails", "gop_tail");
    let skipped_whole = units_not_decoded("whole", "gop_tail");
    eprintln!(
        "vtest: {keyframes} keyframes; analysed {} (trimmed) vs {} (whole); {skipped} tail units not decoded",
        tails.frames, whole.frames
    );
    assert!(
        tails.frames.abs_diff(whole.frames) <= 1 && whole.frames >= 75,
        "every slot of 79.5 s at 1 frame/s analysed: {} vs {}",
        tails.frames,
        whole.frames
    );
    // 9 of each GOP's 19 deltas, once the first keyframe gaps are measured.
    let gops = keyframes as u64;
    assert!(
        skipped >= 9 * (gops - 4) && skipped <= 9 * gops,
        "{skipped} tail units of {gops} GOPs"
    );
    assert_eq!(
        skipped_whole, 0,
        "keyframes_only = false decodes every unit"
    );
    assert!(tails.keyframe_interval_seconds.is_some());
    run.finish();
}

#[test]
fn a_resolution_change_mid_stream_keeps_frames_flowing() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("resize");
    // Two H.264 segments, 320x240 then 640x360, in one MPEG-TS file.
    for (name, w, h, offset) in [("a.ts", 320, 240, 0u64), ("b.ts", 640, 360, 2_000_000_000)] {
        let status = Command::new("gst-launch-1.0")
            .args([
                "-q",
                "videotestsrc",
                "num-buffers=20",
                "pattern=ball",
                &format!("timestamp-offset={offset}"),
                "!",
            ])
            .arg(format!("video/x-raw,width={w},height={h},framerate=10/1"))
            .args([
                "!",
                "x264enc",
                "key-int-max=10",
                "!",
                "h264parse",
                "!",
                "mpegtsmux",
                "!",
                "filesink",
            ])
            .arg(format!("location={}", dir.path(name).display()))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut joined = std::fs::read(dir.path("a.ts")).unwrap();
    joined.extend(std::fs::read(dir.path("b.ts")).unwrap());
    std::fs::write(dir.path("change.ts"), joined).unwrap();

    let run = Running::start(config(
        &dir,
        10.0,
        &camera("resize", "change.ts", ""),
        "fast",
    ));
    run.wait_for("resize", Duration::from_secs(30), "ended", |c| {
        matches!(c.state, CameraState::Ended | CameraState::Failed)
    });
    let c = run.cam("resize");
    assert_eq!(c.state, CameraState::Ended, "{c:?}");
    // Both segments were analysed: well over the 20 frames of the first.
    assert!(c.frames >= 35, "{c:?}");
    run.finish();
}

/// A sink whose camera always has a frame waiting for the model: it counts what reaches it.
struct AlwaysBusy(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl gridwatch::ingest::FrameSink for AlwaysBusy {
    fn push(&mut self, _frame: gridwatch::ingest::Frame) -> gridwatch::ingest::Pushed {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gridwatch::ingest::Pushed::Accepted
    }
    fn close(&mut self) {}
    fn busy_check(&self) -> Option<gridwatch::ingest::BusyCheck> {
        Some(std::sync::Arc::new(|| true))
    }
}

/// While the camera's previous frame still waits for the model, a decoded frame is dropped
/// before it is scaled and converted (counted as dropped, never pushed; the first frame passes,
/// as the sink's preroll), a real-time replay keeps its pace while it drops (bikes.mp4, 10 s,
/// still streams after 4 s and takes its 10 s), and the stall watchdog (3 s here) does not
/// take dropping for a dead camera.
#[test]
fn a_frame_that_would_supersede_a_waiting_one_is_dropped_before_conversion_at_the_cameras_pace() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("busy-drop");
    gridwatch::ingest::init().expect("GStreamer");
    let clip = repo("sample-streams/bikes.mp4").display().to_string();
    let config = config(&dir, 4.0, &camera("busy", &clip, ""), "realtime");
    let registry = CameraRegistry::default();
    let index = registry.add(gridwatch::ingest::initial_status(&config.area, 0));
    let plan = gridwatch::ingest::CameraPlan::new(&config.area, &config.ingest, index, 416, 416)
        .unwrap_or_else(|e| panic!("{e}"));
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let thread = gridwatch::ingest::spawn_camera(
        plan,
        Box::new(AlwaysBusy(pushed.clone())),
        registry.clone(),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(4));
    let status = registry.snapshot().remove(0);
    assert_eq!(
        status.state,
        CameraState::Streaming,
        "paced, not raced to the end: {status:?}"
    );
    assert!(
        status.dropped >= 8,
        "4 frames/s for 4 s dropped: {status:?}"
    );
    thread.join().unwrap();
    let status = registry.snapshot().remove(0);
    assert_eq!(status.state, CameraState::Ended, "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the 10 s clip took its time: {:?}",
        started.elapsed()
    );
    // Only the preroll frame, which the sink needs before the pipeline plays.
    assert_eq!(
        pushed.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "nothing but the first frame reached the sink"
    );
    assert!(
        status.dropped >= 35,
        "about 40 frames at 4/s, all dropped: {status:?}"
    );
}

/// Writes an H.264 MP4 of `frames` frames of GStreamer's moving ball at 10 frames/s, with
/// `x264` settings such as the keyframe interval.
fn encode_ball_clip(
    path: &std::path::Path,
    frames: u32,
    (width, height): (u32, u32),
    x264: &[&str],
) {
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            &format!("num-buffers={frames}"),
            "pattern=ball",
            "!",
        ])
        .arg(format!(
            "video/x-raw,width={width},height={height},framerate=10/1"
        ))
        .args(["!", "x264enc"])
        .args(x264)
        .args(["!", "h264parse", "!", "mp4mux", "!", "filesink"])
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success(), "encoding {}", path.display());
}

/// A looped 6 s file decoded keyframes only (a keyframe a second, analysed every 2 s) keeps
/// its analysis slots across each loop: the probe's slot grid starts over when the file does,
/// instead of waiting for the stream time it had reached (no frame, then a stall).
#[test]
fn a_looped_file_decoded_keyframes_only_keeps_its_slots_across_loops() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("loop-keyframes");
    // 6 s at 10 frames/s, a keyframe a second.
    encode_ball_clip(
        &dir.path("six.mp4"),
        60,
        (320, 240),
        &["key-int-max=10", "bframes=0"],
    );
    let cams = camera("looped", "six.mp4", "loop = true\nkeyframes_only = true");
    let run = Running::start(config(&dir, 0.5, &cams, "realtime"));
    // Three loops: 3 slots each.
    std::thread::sleep(Duration::from_secs(18));
    let c = run.cam("looped");
    eprintln!(
        "looped file, keyframes only: {} frames, {} stalls",
        c.frames, c.stalls
    );
    assert_eq!(c.stalls, 0, "{c:?}");
    assert!(c.frames >= 7, "slots in every loop: {c:?}");
    run.finish();
}

#[test]
fn cameras_start_spread_over_the_configured_time() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("start-spread");
    let uri = repo("sample-streams/vtest.mp4").display().to_string();
    let cams: String = (0..3).map(|i| camera(&format!("s{i}"), &uri, "")).collect();
    let mut config = config(&dir, 1.0, &cams, "realtime");
    // 3 cameras over 12 s: the second starts 4 s late, the third 8 s.
    config.ingest.start_spread_seconds = 12.0;
    let start = Instant::now();
    let run = Running::start(config);
    run.wait_for("s0", Duration::from_secs(60), "streaming", |c| c.frames > 0);
    let waiting = run.cam("s2");
    assert_eq!(waiting.frames, 0, "the third camera has not started yet");
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("start spread")),
        "the status says why it waits: {waiting:?}"
    );
    let mut first_frame = Vec::new();
    for id in ["s0", "s1", "s2"] {
        run.wait_for(id, Duration::from_secs(60), "streaming", |c| c.frames > 0);
        first_frame.push(start.elapsed());
    }
    eprintln!("first frames after {first_frame:?}");
    // 4 s apart (connecting and the first decoded frame add some noise, alike for each).
    for pair in first_frame.windows(2) {
        let gap = pair[1].saturating_sub(pair[0]);
        assert!(
            (Duration::from_secs(3)..Duration::from_secs(7)).contains(&gap),
            "starts 4 s apart: {first_frame:?}"
        );
    }
    let started = run.cam("s2");
    assert_eq!(started.last_error, None, "the wait is over: {started:?}");
    run.finish();
}

/// `ids` cameras on `uri` (with `extra` camera lines) at `fps`, all on one worker (more than it
/// analyses), with the config `tune`d.
fn on_one_worker(
    dir: &TempDir,
    ids: &[String],
    (uri, extra): (&str, &str),
    fps: f64,
    tune: impl FnOnce(&mut Config),
) -> Running {
    let cams: String = ids.iter().map(|id| camera(id, uri, extra)).collect();
    let mut config = config(dir, fps, &cams, "realtime");
    config.inference.workers = 1;
    tune(&mut config);
    Running::start(config)
}

/// The metrics text and each camera's analysed frames, once checked that no camera stalled and
/// every one kept being analysed (at least 5 frames).
fn every_camera_analysed(
    run: &Running,
    ids: &[String],
) -> (String, std::collections::BTreeMap<String, u64>) {
    let text = gridwatch::telemetry::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    let analysed = gridwatch_bench::replay::counter_by(
        &text,
        gridwatch::telemetry::FRAMES_ANALYSED,
        "camera",
        ids,
    );
    let stalls: Vec<u64> = ids.iter().map(|id| run.cam(id).stalls).collect();
    eprintln!("analysed {analysed:?}; stalls {stalls:?}");
    assert!(
        stalls.iter().all(|&s| s == 0),
        "no camera stalled: {stalls:?}"
    );
    assert!(
        ids.iter()
            .all(|id| analysed.get(id).is_some_and(|&n| n >= 5)),
        "every camera keeps being analysed: {analysed:?}"
    );
    (text, analysed)
}

/// Eight cameras at 5 frames/s on one worker (about twice what it analyses), decoding keyframes
/// only (an all-intra clip: every frame a keyframe): a needed keyframe that arrives while the
/// camera's previous frame still waits for the model is not decoded (counted), never so many
/// that a camera stops being analysed or is taken for stalled; with `shed_when_behind = false`
/// nothing is shed.
#[test]
fn an_overloaded_pool_sheds_keyframes_before_decoding_and_every_camera_stays_analysed() {
    let _exclusive = crate::support::exclusive();
    let clip_dir = TempDir::new("shed-clip");
    let clip = clip_dir.path("intra.mp4");
    // 20 s at 10 frames/s, every frame a keyframe.
    encode_ball_clip(
        &clip,
        200,
        (640, 360),
        &["key-int-max=1", "speed-preset=veryfast"],
    );
    let uri = clip.display().to_string();
    for shed in [false, true] {
        let dir = TempDir::new("shed");
        let ids: Vec<String> = (0..8).map(|i| format!("shed-{shed}-{i}")).collect();
        let run = on_one_worker(&dir, &ids, (&uri, "keyframes_only = true"), 5.0, |c| {
            c.ingest.shed_when_behind = shed
        });
        std::thread::sleep(Duration::from_secs(16));
        let shed_units: u64 = ids.iter().map(|id| units_not_decoded(id, "overload")).sum();
        eprintln!("shed_when_behind = {shed}: {shed_units} units shed");
        every_camera_analysed(&run, &ids);
        if shed {
            assert!(shed_units >= 20, "{shed_units} keyframes shed");
        } else {
            assert_eq!(shed_units, 0);
        }
        run.finish();
    }
}

/// Twelve cameras at 5 frames/s on one worker (about three times what it analyses), on a clip
/// with a keyframe every 0.5 s: with `thin_under_overload` the pool holds them to the interval
/// it can serve, so they decode keyframes only (slower than the keyframe rate) and fewer of
/// their decoded frames are dropped unanalysed; every camera stays analysed and none stalls.
/// Without it, none is held and none decodes keyframes only (5 frames/s needs the deltas).
#[test]
fn an_overloaded_pool_holds_cameras_to_what_it_can_take_so_they_decode_keyframes_only() {
    let _exclusive = crate::support::exclusive();
    let clip_dir = TempDir::new("thin-clip");
    let clip = clip_dir.path("gop5.mp4");
    // 30 s at 10 frames/s, a keyframe every 5 frames.
    encode_ball_clip(
        &clip,
        300,
        (640, 360),
        &["key-int-max=5", "speed-preset=veryfast", "bframes=0"],
    );
    let uri = clip.display().to_string();
    let mut dropped_per_analysed = Vec::new();
    for thin in [false, true] {
        let dir = TempDir::new("thin");
        let ids: Vec<String> = (0..12).map(|i| format!("thin-{thin}-{i}")).collect();
        let run = on_one_worker(&dir, &ids, (&uri, ""), 5.0, |c| {
            c.inference.thin_under_overload = thin
        });
        let (mut held, mut only) = (None::<f64>, false);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(18) {
            for c in run
                .registry
                .snapshot()
                .iter()
                .filter(|c| ids.contains(&c.id))
            {
                if let Some(f) = c.held_to_fps {
                    held = Some(held.map_or(f, |h| h.min(f)));
                }
                only |= c.keyframes_only;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (text, analysed) = every_camera_analysed(&run, &ids);
        let dropped: u64 = ids
            .iter()
            .flat_map(|id| {
                gridwatch_bench::replay::counter_by(
                    &text,
                    gridwatch::telemetry::FRAMES_DROPPED,
                    "reason",
                    std::slice::from_ref(id),
                )
                .into_values()
            })
            .sum();
        let not_decoded: u64 = ids
            .iter()
            .map(|id| units_not_decoded(id, "keyframes_only"))
            .sum();
        let total: u64 = analysed.values().sum();
        eprintln!(
            "thin_under_overload = {thin}: held to {held:?} frames/s at the slowest, keyframes only {only}; \
             analysed {total}; dropped {dropped}; {not_decoded} units not decoded (keyframes only)"
        );
        if thin {
            assert!(
                held.is_some_and(|f| f < 5.0) && only,
                "held to {held:?}, keyframes only {only}"
            );
            assert!(not_decoded > 0, "deltas not decoded while held");
        } else {
            assert!(
                held.is_none() && !only,
                "held {held:?}, keyframes only {only}"
            );
            assert_eq!(not_decoded, 0);
        }
        dropped_per_analysed.push(dropped as f64 / total.max(1) as f64);
        run.finish();
    }
    assert!(
        dropped_per_analysed[1] < dropped_per_analysed[0],
        "frames dropped per analysed frame, without and with thinning: {dropped_per_analysed:?}"
    );
}

/// The replay template with a decoder that takes 300 ms per picture it passes on (an
/// `identity` that sleeps after it): slower than 5 frames/s whatever the machine, so the camera
/// falls behind real time. Dropped units cost nothing, as they do with a real decoder.
const SLOW_DECODER_TEMPLATE: &str = "filesrc location=\"{location}\" ! parsebin ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=1000000000 ! {decoder} ! identity sleep-time=300000 ! videoscale ! video/x-raw,width={width},height={height} ! videoconvert ! video/x-raw,format=RGB ! appsink name=frames max-buffers=1 drop=false sync={sync} emit-signals=false";

/// The largest `lag_seconds` camera `id` shows while polled for `d`, and its frames then.
fn watch_lag(run: &Running, id: &str, d: Duration) -> (f64, u64) {
    let start = Instant::now();
    let mut max = 0.0f64;
    while start.elapsed() < d {
        max = max.max(run.cam(id).lag_seconds);
        std::thread::sleep(Duration::from_millis(50));
    }
    (max, run.cam(id).frames)
}

/// A decoder slower than real time falls further and further behind with `max_decode_lag_ms =
/// 0`. With 1000 ms it leaves the rest of a GOP undecoded once a unit reaches it more than a
/// second late, so its frames stay within about that of real time, it keeps being analysed,
/// and it is never taken for stalled.
#[test]
fn a_decoder_behind_real_time_sheds_late_units_and_stays_near_real_time() {
    let _exclusive = crate::support::exclusive();
    let uri = repo("sample-streams/vtest.mp4").display().to_string();
    for max_lag_ms in [0, 1000] {
        let dir = TempDir::new("late");
        let template = dir.path("slow.pipeline");
        std::fs::write(&template, SLOW_DECODER_TEMPLATE).unwrap();
        let id = format!("late-{max_lag_ms}");
        let extra = format!("pipeline = \"{}\"", template.display());
        let mut config = config(&dir, 5.0, &camera(&id, &uri, &extra), "realtime");
        config.ingest.max_decode_lag_ms = max_lag_ms;
        let run = Running::start(config);
        run.wait_for(&id, Duration::from_secs(20), "streaming", |c| c.frames >= 1);
        let before = run.cam(&id).frames;
        let (max_lag, frames) = watch_lag(&run, &id, Duration::from_secs(12));
        let late = units_not_decoded(&id, "late");
        let cam = run.cam(&id);
        eprintln!(
            "max_decode_lag_ms = {max_lag_ms}: lag up to {max_lag:.2} s, {} frames in 12 s, {late} units shed late, {} stalls",
            frames - before,
            cam.stalls
        );
        if max_lag_ms == 0 {
            assert!(max_lag > 3.0, "unbounded, it falls behind: {max_lag:.2} s");
            assert_eq!(late, 0);
        } else {
            // The lag allowed, and the 300 ms a picture takes after the decoder's check.
            assert!(max_lag < 2.0, "within about a second: {max_lag:.2} s");
            assert!(late >= 20, "{late} units shed late");
            assert!(frames >= before + 4, "still analysed: {before} -> {frames}");
            assert_eq!(cam.stalls, 0, "{cam:?}");
        }
        run.finish();
    }
}

/// Name and niceness of this process's threads, from /proc (field 19 of each thread's stat).
fn thread_nices() -> Vec<(String, i64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            // After the name in parentheses: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')')? + 2..];
            Some((name.to_owned(), rest.split(' ').nth(16)?.parse().ok()?))
        })
        .collect()
}

/// Live RTSP cameras on time shed nothing late: their usual lateness (network, depayloading)
/// is not counted against them, and their status shows it as lag; a replayed file shows
/// none. Each camera's decoding thread, and only that, runs at `[ingest] pipeline_nice`.
#[test]
fn live_cameras_on_time_shed_nothing_late_and_streaming_threads_run_at_the_set_niceness() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("on-time");
    let port = free_port();
    let clip = repo("sample-streams/vtest.mp4");
    let mut server = serve_rtsp_process(port, &[&clip]);
    let rtsp = format!("rtsp://127.0.0.1:{port}/vtest");
    let cams = camera("ontime-rtsp-1", &rtsp, "")
        + &camera("ontime-rtsp-2", &rtsp, "")
        + &camera("ontime-file", &clip.display().to_string(), "");
    let ids = ["ontime-rtsp-1", "ontime-rtsp-2", "ontime-file"];
    let mut config = config(&dir, 2.0, &cams, "realtime");
    // A niceness no other test uses, and barely below the process's: tests that run beside this
    // one (not all take the exclusive lock) must not starve its decoders into real lateness.
    config.ingest.pipeline_nice = 1;
    let run = Running::start(config);
    for id in ids {
        run.wait_for(id, Duration::from_secs(20), "streaming", |c| c.frames >= 2);
    }
    let nices = thread_nices();
    std::thread::sleep(Duration::from_secs(10));
    let lag: Vec<f64> = ids.iter().map(|id| run.cam(id).lag_seconds).collect();
    let frames: Vec<u64> = ids.iter().map(|id| run.cam(id).frames).collect();
    let late: Vec<u64> = ids.iter().map(|id| units_not_decoded(id, "late")).collect();
    eprintln!("on time: lag {lag:?} s, frames {frames:?}, units shed late {late:?}");
    assert_eq!(late, [0, 0, 0], "nothing shed late");
    assert!(
        frames.iter().all(|&f| f >= 15),
        "2 frames/s for 10 s: {frames:?}"
    );
    assert!(
        lag[..2].iter().all(|&l| (0.0..1.0).contains(&l)),
        "RTSP: its own delays: {lag:?}"
    );
    assert!(lag[2] < 0.1, "a replay on time: {lag:?}");
    // GStreamer names a task's thread after its pad: the queue in front of each decoder.
    let niced: Vec<&str> = nices
        .iter()
        .filter(|(_, n)| *n == 1)
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        niced.len(),
        3,
        "one decoding thread per camera at nice 1, no other: {nices:?}"
    );
    assert!(niced.iter().all(|n| n.starts_with("queue")), "{nices:?}");
    run.finish();
    server.kill().unwrap();
    let _ = server.wait();
}
