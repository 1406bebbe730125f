//! `gridwatch serve-rtsp`: recorded files served as live RTSP cameras (gst-rtsp-server), looped
//! forever, for demos, tests and benchmarks. Each file is read at real-time pace by its own
//! feeder pipeline (no decoding) and pushed into the served media with live timestamps, so a
//! client sees one endless live stream, as from a real camera, across loops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum RtspServeError {
    #[error("serve-rtsp: {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("serve-rtsp: cannot listen on {address}:{port}: {message}")]
    Bind {
        address: String,
        port: u16,
        message: String,
    },
    #[error("serve-rtsp: {0}")]
    Gst(String),
}

/// One served file.
#[derive(Debug, Clone)]
pub struct Mount {
    pub path: PathBuf,
    /// Mount point, e.g. `/vtest`.
    pub mount: String,
    pub codec: &'static str,
}

/// A running server; stops when dropped.
pub struct RtspServer {
    port: u16,
    address: String,
    mounts: Vec<Mount>,
    main_loop: glib::MainLoop,
    server_thread: Option<JoinHandle<()>>,
    feeders: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl RtspServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    pub fn url(&self, mount: &Mount) -> String {
        format!("rtsp://{}:{}{}", self.address, self.port, mount.mount)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.main_loop.quit();
        if let Some(t) = self.server_thread.take() {
            let _ = t.join();
        }
        for t in self.feeders.drain(..) {
            let _ = t.join();
        }
    }
}

/// The served media's current appsrc (one per shared media, replaced when clients come back).
#[derive(Default)]
struct Outlet {
    src: Option<gst_app::AppSrc>,
    /// A new media must start at a keyframe or its decoder waits (and complains).
    need_keyframe: bool,
}

/// Serves `files` on `address:port` (port 0 = any free port).
pub fn serve(files: &[PathBuf], address: &str, port: u16) -> Result<RtspServer, RtspServeError> {
    gst::init().map_err(|e| RtspServeError::Gst(e.to_string()))?;
    let server = rtsp::RTSPServer::new();
    server.set_address(address);
    server.set_service(&port.to_string());
    let mount_points = server
        .mount_points()
        .ok_or_else(|| RtspServeError::Gst("server has no mount points".into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut mounts = Vec::new();
    let mut feeders = Vec::new();
    let mut used = std::collections::HashSet::new();
    for path in files {
        let (reader, sink, caps) = open_reader(path)?;
        let structure = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let (codec, parse, pay) = match structure.as_str() {
            "video/x-h264" => ("h264", "h264parse", "rtph264pay"),
            "video/x-h265" => ("h265", "h265parse", "rtph265pay"),
            other => {
                return Err(RtspServeError::File {
                    path: path.clone(),
                    message: format!("unsupported stream `{other}` (H.264 or H.265 needed)"),
                });
            }
        };
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("stream")
            .to_owned();
        let mut mount = format!("/{stem}");
        let mut n = 2;
        while !used.insert(mount.clone()) {
            mount = format!("/{stem}-{n}");
            n += 1;
        }
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( appsrc name=src is-live=true format=time do-timestamp=true ! {parse} ! {pay} name=pay0 pt=96 config-interval=-1 )"
        ));
        factory.set_shared(true);
        let outlet = Arc::new(Mutex::new(Outlet::default()));
        {
            let outlet = outlet.clone();
            let caps = caps.clone();
            factory.connect_media_configure(move |_, media| {
                let bin = media.element();
                let Some(src) = bin
                    .downcast_ref::<gst::Bin>()
                    .and_then(|b| b.by_name("src"))
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                else {
                    return;
                };
                src.set_caps(Some(&caps));
                src.set_max_bytes(4 * 1024 * 1024);
                *outlet.lock().unwrap_or_else(|p| p.into_inner()) = Outlet {
                    src: Some(src),
                    need_keyframe: true,
                };
            });
        }
        mount_points.add_factory(&mount, factory);
        feeders.push(spawn_feeder(
            path.clone(),
            reader,
            sink,
            outlet,
            stop.clone(),
        ));
        mounts.push(Mount {
            path: path.clone(),
            mount,
            codec,
        });
    }

    let context = glib::MainContext::new();
    let main_loop = glib::MainLoop::new(Some(&context), false);
    let source = server
        .attach(Some(&context))
        .map_err(|e| RtspServeError::Bind {
            address: address.to_owned(),
            port,
            message: e.to_string(),
        })?;
    let bound = server.bound_port();
    if bound <= 0 {
        return Err(RtspServeError::Bind {
            address: address.to_owned(),
            port,
            message: "no port bound".into(),
        });
    }
    let server_thread = {
        let main_loop = main_loop.clone();
        std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || {
                let _ = context.with_thread_default(|| main_loop.run());
                // The source lives in our own context, not the default one `SourceId::remove` uses.
                if let Some(s) = context.find_source_by_id(&source) {
                    s.destroy();
                }
                drop(server);
            })
            .map_err(|e| RtspServeError::Gst(e.to_string()))?
    };
    Ok(RtspServer {
        port: bound as u16,
        address: address.to_owned(),
        mounts,
        main_loop,
        server_thread: Some(server_thread),
        feeders,
        stop,
    })
}

/// A pipeline that demuxes and parses `path` at real-time pace, prerolled so its caps are known.
fn open_reader(
    path: &Path,
) -> Result<(gst::Pipeline, gst_app::AppSink, gst::Caps), RtspServeError> {
    let file_err = |message: String| RtspServeError::File {
        path: path.to_owned(),
        message,
    };
    if !path.is_file() {
        return Err(file_err("no such file".into()));
    }
    let location = path
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let description = format!(
        "filesrc location=\"{location}\" ! parsebin ! appsink name=out sync=true max-buffers=8 drop=false"
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| file_err(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| file_err("not a pipeline".into()))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| file_err("no appsink".into()))?;
    pipeline
        .set_state(gst::State::Paused)
        .map_err(|e| file_err(format!("cannot open: {e}")))?;
    let preroll = sink
        .try_pull_preroll(gst::ClockTime::from_seconds(10))
        .ok_or_else(|| {
            let _ = pipeline.set_state(gst::State::Null);
            file_err("no video stream could be read".into())
        })?;
    let caps = preroll
        .caps_owned()
        .ok_or_else(|| file_err("stream has no caps".into()))?;
    Ok((pipeline, sink, caps))
}

fn spawn_feeder(
    path: PathBuf,
    reader: gst::Pipeline,
    sink: gst_app::AppSink,
    outlet: Arc<Mutex<Outlet>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        if reader.set_state(gst::State::Playing).is_err() {
            tracing::error!(file = %path.display(), "serve-rtsp: cannot play file");
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
                if sink.is_eos() {
                    // Loop: back to the start; the served stream's timestamps continue.
                    if reader
                        .seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        )
                        .is_err()
                    {
                        tracing::error!(file = %path.display(), "serve-rtsp: cannot loop file");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                continue;
            };
            let Some(buffer) = sample.buffer_owned() else {
                continue;
            };
            let mut out = outlet.lock().unwrap_or_else(|p| p.into_inner());
            let Some(src) = out.src.clone() else { continue };
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            if out.need_keyframe && !keyframe {
                continue;
            }
            out.need_keyframe = false;
            let mut buffer = buffer;
            {
                // Live timestamps come from appsrc (do-timestamp); the file's would jump at each loop.
                let b = buffer.make_mut();
                b.set_pts(gst::ClockTime::NONE);
                b.set_dts(gst::ClockTime::NONE);
            }
            if src.push_buffer(buffer).is_err() {
                // The media went away (last client left); a new one gets a new appsrc.
                out.src = None;
            }
        }
        let _ = reader.set_state(gst::State::Null);
    })
}
