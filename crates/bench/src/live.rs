//! `gridwatch-bench live`: what the patrol wall's live video costs a node. A real
//! `gridwatch run` (child process) analyses N RTSP cameras served by `gridwatch serve-rtsp`;
//! this process opens V WebSocket viewers per camera, as the wall does, and reads everything.
//! The node's CPU (from /proc, its process only) is compared side by side in one run: no
//! viewer, V viewers per camera, no viewer again (the noise). Then one viewer stops reading
//! (its socket buffers fill) while the others go on: the node's memory and the others' frame
//! rate show whether a stalled viewer costs anything. Delivery latency is measured at the
//! viewer: when a unit arrived here minus when it reached the node (same clock, loopback).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub cameras: usize,
    pub viewers: usize,
    pub seconds: f64,
    /// How long one viewer stays stalled (long enough for the kernel's socket buffers to fill).
    pub stalled_seconds: f64,
    /// The clips served as cameras (camera i plays clip i modulo their number).
    pub streams: Vec<PathBuf>,
    /// The `gridwatch` binary (the node).
    pub gridwatch: PathBuf,
    pub card: PathBuf,
    pub out: PathBuf,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    /// The node's CPU, percent of one core.
    pub node_cpu_percent: f64,
    pub node_rss_mib_max: f64,
    /// Fragments (access units) per second per viewer, mean.
    pub fragments_per_second_per_viewer: f64,
    pub viewers: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LiveReport {
    pub cameras: usize,
    pub viewers_per_camera: usize,
    pub phases: Vec<Phase>,
    /// (viewers − mean of the two idle phases) / (cameras × viewers), percent of one core.
    pub cpu_percent_per_camera_per_viewer: f64,
    /// Half the difference of the two idle phases, as the same per-stream figure.
    pub noise_percent_per_camera_per_viewer: f64,
    pub delivery_latency_ms_p50: f64,
    pub delivery_latency_ms_p95: f64,
    pub delivery_latency_ms_max: f64,
    /// RSS growth while one viewer stalled, MiB.
    pub stalled_rss_growth_mib: f64,
    /// Frame rate of the other viewers while one stalled, relative to before.
    pub others_rate_while_stalled: f64,
    pub viewer_cuts: f64,
    /// Viewers the node disconnected (a socket that took no message for 10 s).
    pub viewers_dropped_slow: f64,
    /// What one case's full-resolution evidence costs, per served clip.
    pub evidence: Vec<EvidenceCost>,
}

/// Decoding a cached group of pictures for a case picture, worst case (its last frame).
#[derive(Debug, Default, Clone, Serialize)]
pub struct EvidenceCost {
    pub clip: String,
    pub width: u32,
    pub height: u32,
    pub units_decoded: usize,
    pub decode_ms_median: f64,
    pub decode_ms_max: f64,
}

/// Times the evidence decode on the clip's second group of pictures, in this process.
pub fn evidence_cost(clip: &Path, repeats: usize) -> anyhow::Result<EvidenceCost> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init()?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! parsebin ! appsink name=out sync=false caps=\"video/x-h264,stream-format=avc,alignment=au\"",
        clip.display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("out")
        .context("appsink")?
        .downcast::<gstreamer_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("not an appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let hub =
        gridwatch::live::Hub::new(Arc::from("bench"), gridwatch::live::LiveSettings::default());
    let mut keyframes = 0;
    while let Ok(sample) = sink.pull_sample() {
        let (Some(caps), Some(buffer)) = (sample.caps(), sample.buffer_owned()) else {
            continue;
        };
        if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            keyframes += 1;
            // The second group is complete once the third starts.
            if keyframes == 3 {
                break;
            }
        }
        hub.push(caps, buffer);
    }
    pipeline.set_state(gst::State::Null)?;
    let (caps, units, target) = hub.group_of_pictures(None).context("nothing cached")?;
    let mut times = Vec::new();
    let mut size = (0, 0);
    for _ in 0..repeats {
        let t = Instant::now();
        let d = gridwatch::live::snapshot::decode(&caps, &units, target)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = (d.info.width(), d.info.height());
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    Ok(EvidenceCost {
        clip: clip.display().to_string(),
        width: size.0,
        height: size.1,
        units_decoded: units.len(),
        decode_ms_median: crate::median(&mut times),
        decode_ms_max: max,
    })
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM lets the node shut down cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// CPU seconds (user + system) of process `pid`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name in parentheses: fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn config(o: &LiveOptions, rtsp: u16, console: u16, receiver: u16, metrics: u16) -> String {
    let mut text = format!(
        "[centre]\nname = \"live bench\"\n[[units]]\nid = \"u\"\nname = \"unit\"\n\
         [[groups]]\nid = \"g\"\nname = \"group\"\nunit = \"u\"\nanalysis_fps = 1.0\n\
         [model]\ncard = \"{card}\"\n[inference]\nworkers = 1\n\
         [cases]\noutbox = \"outbox.sqlite\"\n\
         [dispatch.embedded_receiver]\nlisten = \"127.0.0.1:{receiver}\"\ndatabase = \"receiver.sqlite\"\n\
         [review]\nlisten = \"127.0.0.1:{console}\"\n\
         [telemetry]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n",
        card = o.card.display()
    );
    for i in 0..o.cameras {
        let clip = mount(&o.streams[i % o.streams.len()]);
        text += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nname = \"cam{i}\"\nunit = \"u\"\ngroup = \"g\"\nuri = \"rtsp://127.0.0.1:{rtsp}/{clip}\"\n\
             [[cameras.zones]]\nid = \"all\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\nscenarios = [\"crowd_gathering\"]\n"
        );
    }
    text
}

/// The mount `serve-rtsp` gives a file: its stem.
fn mount(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One viewer's counters.
#[derive(Default)]
struct Counters {
    fragments: AtomicU64,
}

struct Viewers {
    counters: Vec<Arc<Counters>>,
    latencies: Arc<std::sync::Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
}

impl Viewers {
    fn fragments(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.fragments.load(Ordering::Relaxed))
            .sum()
    }
}

/// Opens `per_camera` reading viewers on each camera.
async fn open_viewers(
    base: &str,
    token: &str,
    cameras: usize,
    per_camera: usize,
) -> anyhow::Result<Viewers> {
    let v = Viewers {
        counters: Vec::new(),
        latencies: Arc::default(),
        stop: Arc::default(),
    };
    let mut counters = Vec::new();
    for cam in 0..cameras {
        for _ in 0..per_camera {
            let c = Arc::new(Counters::default());
            counters.push(c.clone());
            let ws = connect(base, token, cam).await?;
            let (lat, stop) = (v.latencies.clone(), v.stop.clone());
            tokio::spawn(async move {
                let (_, mut read) = ws.split();
                // After an `init` text comes the init segment; then each unit is a header and
                // its payload, two binary messages: units are counted by their headers.
                let mut next = Binary::Header;
                while let Some(Ok(m)) = read.next().await {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match m {
                        Message::Binary(_) => {
                            next = match next {
                                Binary::Init => Binary::Header,
                                Binary::Header => {
                                    c.fragments.fetch_add(1, Ordering::Relaxed);
                                    Binary::Payload
                                }
                                Binary::Payload => Binary::Header,
                            }
                        }
                        Message::Text(t) => {
                            let j: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                            match j["type"].as_str() {
                                Some("clock") => {
                                    if let Some(r) = j["received_unix_ms"].as_f64() {
                                        lat.lock()
                                            .unwrap_or_else(|p| p.into_inner())
                                            .push(now_ms() - r);
                                    }
                                }
                                Some("init") => next = Binary::Init,
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    }
    Ok(Viewers { counters, ..v })
}

#[derive(Clone, Copy)]
enum Binary {
    Init,
    Header,
    Payload,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, token: &str, cam: usize) -> anyhow::Result<Socket> {
    let (ws, _) = tokio_tungstenite::connect_async(request(base, token, cam)?).await?;
    Ok(ws)
}

fn request(
    base: &str,
    token: &str,
    cam: usize,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let mut req = format!("ws://{base}/api/v1/review/wall/cam{cam}/live").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// A viewer that connects and then never reads: a small receive buffer, so that the node
/// meets a full socket within seconds, as with a browser tab that froze.
async fn connect_stalled(base: &str, token: &str, cam: usize) -> anyhow::Result<impl Sized> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(STALLED_RECV_BUFFER_BYTES)?;
    let stream = socket.connect(base.parse()?).await?;
    let (ws, _) = tokio_tungstenite::client_async(request(base, token, cam)?, stream).await?;
    Ok(ws)
}

const STALLED_RECV_BUFFER_BYTES: u32 = 4096;
const EVIDENCE_REPEATS: usize = 5;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The node's CPU and peak RSS over `seconds`, and the viewers' fragments meanwhile.
async fn measure(
    pid: u32,
    name: &str,
    seconds: f64,
    viewers: Option<&Viewers>,
) -> anyhow::Result<Phase> {
    let (c0, f0, t0) = (
        cpu_seconds(pid)?,
        viewers.map_or(0, Viewers::fragments),
        Instant::now(),
    );
    let mut rss: f64 = rss_mib(pid);
    while t0.elapsed().as_secs_f64() < seconds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = rss.max(rss_mib(pid));
    }
    let dt = t0.elapsed().as_secs_f64();
    let n = viewers.map_or(0, |v| v.counters.len());
    let frags = viewers.map_or(0, Viewers::fragments) - f0;
    Ok(Phase {
        name: name.into(),
        seconds: dt,
        node_cpu_percent: (cpu_seconds(pid)? - c0) / dt * 100.0,
        node_rss_mib_max: rss,
        fragments_per_second_per_viewer: if n == 0 {
            0.0
        } else {
            frags as f64 / dt / n as f64
        },
        viewers: n,
    })
}

/// Whether process `pid` still runs (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn wait_all_live(base: &str, token: &str, cameras: usize, pid: u32) -> anyhow::Result<()> {
    let http = reqwest_lite(base, token);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        anyhow::ensure!(
            alive(pid),
            "the node exited: see node.log in the output folder"
        );
        if let Ok(wall) = http().await {
            let live = wall["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["cameras"].as_array().cloned().unwrap_or_default())
                .filter(|c| c["live"]["mode"] == "video")
                .count();
            if live == cameras {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cameras did not all go live within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// GET /api/v1/review/wall over a plain socket (the bench has no HTTP client of its own).
fn reqwest_lite(
    base: &str,
    token: &str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<serde_json::Value>>>>
{
    let (base, token) = (base.to_owned(), token.to_owned());
    move || {
        let (base, token) = (base.clone(), token.clone());
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&base).await?;
            s.write_all(format!("GET /api/v1/review/wall HTTP/1.0\r\nHost: {base}\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes()).await?;
            let mut body = Vec::new();
            s.read_to_end(&mut body).await?;
            let text = String::from_utf8_lossy(&body);
            let json = text.split_once("\r\n\r\n").context("no body")?.1;
            Ok(serde_json::from_str(json)?)
        })
    }
}

fn metric_sum(metrics: u16, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics)) else {
        return f64::NAN;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the whole measurement.
pub fn run(o: &LiveOptions) -> anyhow::Result<LiveReport> {
    std::fs::create_dir_all(&o.out)?;
    anyhow::ensure!(!o.streams.is_empty(), "no stream to serve");
    let (rtsp, console, receiver, metrics) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let mut server = Command::new(&o.gridwatch)
        .args(["serve-rtsp", "--port", &rtsp.to_string()])
        .args(&o.streams)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("gridwatch serve-rtsp")?;
    let mut lines = std::io::BufReader::new(server.stdout.take().context("stdout")?).lines();
    lines.next().context("serve-rtsp printed nothing")??;
    std::thread::spawn(move || lines.for_each(drop));
    let _server = Kill(server);

    let cfg = o.out.join("live-bench.toml");
    std::fs::write(&cfg, config(o, rtsp, console, receiver, metrics))?;
    let store = gridwatch::review::store::ReviewStore::open(&o.out.join("outbox.sqlite"))?;
    let user = store.set_user(
        "bench",
        gridwatch::review::auth::Role::Admin,
        "bench-password-1",
    )?;
    let token = store.new_api_token(&user)?;
    drop(store);
    let log = std::fs::File::create(o.out.join("node.log"))?;
    let node = Command::new(&o.gridwatch)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("GRIDWATCH_ADMIN_PASSWORD", "bench-admin-password")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("gridwatch run")?;
    let pid = node.id();
    let _node = Kill(node);
    let base = format!("127.0.0.1:{console}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        wait_all_live(&base, &token, o.cameras, pid).await?;
        // Warm-up: the model's first runs and the cameras' first seconds.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut report = LiveReport {
            cameras: o.cameras,
            viewers_per_camera: o.viewers,
            ..LiveReport::default()
        };
        report
            .phases
            .push(measure(pid, "no viewer", o.seconds, None).await?);
        let viewers = open_viewers(&base, &token, o.cameras, o.viewers).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        viewers.latencies.lock().unwrap().clear();
        let watched = measure(pid, "viewers", o.seconds, Some(&viewers)).await?;
        let mut lat = std::mem::take(&mut *viewers.latencies.lock().unwrap());
        report.delivery_latency_ms_p50 = percentile(&mut lat, 0.5);
        report.delivery_latency_ms_p95 = percentile(&mut lat, 0.95);
        report.delivery_latency_ms_max = lat.iter().copied().fold(0.0, f64::max);
        // One more viewer on camera 0 that never reads.
        let stalled = connect_stalled(&base, &token, 0).await?;
        let before_rss = rss_mib(pid);
        let during = measure(
            pid,
            "viewers + 1 stalled",
            o.stalled_seconds,
            Some(&viewers),
        )
        .await?;
        report.stalled_rss_growth_mib = during.node_rss_mib_max - before_rss;
        report.others_rate_while_stalled =
            during.fragments_per_second_per_viewer / watched.fragments_per_second_per_viewer;
        drop(stalled);
        viewers.stop.store(true, Ordering::Relaxed);
        drop(viewers);
        report.viewer_cuts = metric_sum(metrics, "gridwatch_live_viewer_cuts_total") + 0.0;
        report.viewers_dropped_slow =
            metric_sum(metrics, "gridwatch_live_viewers_dropped_total") + 0.0;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle2 = measure(pid, "no viewer again", o.seconds, None).await?;
        let idle = (report.phases[0].node_cpu_percent + idle2.node_cpu_percent) / 2.0;
        let streams = (o.cameras * o.viewers) as f64;
        report.cpu_percent_per_camera_per_viewer = (watched.node_cpu_percent - idle) / streams;
        report.noise_percent_per_camera_per_viewer =
            (report.phases[0].node_cpu_percent - idle2.node_cpu_percent).abs() / 2.0 / streams;
        report.phases.extend([watched, during, idle2]);
        Ok::<_, anyhow::Error>(report)
    })
    .and_then(|mut report| {
        // After the node is measured: this decode runs in the bench's own process.
        for clip in &o.streams {
            report.evidence.push(evidence_cost(clip, EVIDENCE_REPEATS)?);
        }
        Ok(report)
    })
}

/// The report as Markdown, for BENCHMARKS.md.
pub fn markdown(r: &LiveReport) -> String {
    let mut s = format!(
        "{} cameras × {} viewers each\n\n| phase | node CPU (% of a core) | node RSS max (MiB) | fragments/s per viewer |\n|---|---:|---:|---:|\n",
        r.cameras, r.viewers_per_camera
    );
    for p in &r.phases {
        s += &format!(
            "| {} | {:.1} | {:.0} | {:.1} |\n",
            p.name, p.node_cpu_percent, p.node_rss_mib_max, p.fragments_per_second_per_viewer
        );
    }
    s += &format!(
        "\nCPU per camera per viewer: {:.2} % of a core (idle-phase noise ±{:.2}); delivery latency (node → viewer) p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; one stalled viewer: RSS +{:.1} MiB, the others at {:.2}× their rate; viewer cuts: {}, viewers disconnected as too slow: {}\n",
        r.cpu_percent_per_camera_per_viewer,
        r.noise_percent_per_camera_per_viewer,
        r.delivery_latency_ms_p50,
        r.delivery_latency_ms_p95,
        r.delivery_latency_ms_max,
        r.stalled_rss_growth_mib,
        r.others_rate_while_stalled,
        r.viewer_cuts,
        r.viewers_dropped_slow
    );
    for e in &r.evidence {
        s += &format!(
            "\nFull-resolution evidence, {}: {}×{}, {} units decoded for the last frame of a group: median {:.0} ms, max {:.0} ms\n",
            e.clip, e.width, e.height, e.units_decoded, e.decode_ms_median, e.decode_ms_max
        );
    }
    s
}
