//! Replays recorded files as N cameras through the real pipeline (`run::run`, with the embedded
//! dispatch receiver) and measures it: every analysed frame is observed when the scenario stage
//! is done with it, CPU and peak RSS are read from the kernel, drops from the metrics, and the
//! delivered cases are scored against the ground truth.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::accuracy::{self, CrowdGroundTruth, Episode, GroundTruth, StateTruth, Tally};
use super::report::{self, CameraStream, Percentiles, PipelineResult};
use gridwatch::cases::Case;
use gridwatch::config::Config;
use gridwatch::infer::pool::FrameRecord;
use gridwatch::ingest::settings::Pace;
use gridwatch::learn::LabelsFile;
use gridwatch::run::{RunOptions, StopHandle};

/// Analysis rate of a stream the ground truth does not name.
pub const DEFAULT_BENCH_ANALYSIS_FPS: f64 = 2.0;
/// After the sources end, the embedded receiver on loopback needs well under a second per case.
pub const BENCH_DRAIN_TIMEOUT_SECONDS: f64 = 10.0;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no streams to replay")]
    NoStreams,
    #[error("{0}: not a file")]
    Missing(PathBuf),
    #[error(transparent)]
    Accuracy(#[from] accuracy::AccuracyError),
    #[error("bench configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Run(#[from] gridwatch::run::RunError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("receiver database: {0}")]
    Receiver(String),
    #[error(transparent)]
    Learn(Box<gridwatch::learn::LearnError>),
    #[error("{labels}: the labels are of {labelled}, not of the clip {clip}")]
    LabelsClip {
        labels: PathBuf,
        labelled: String,
        clip: String,
    },
}

/// How the cameras' analysis rates are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Each camera's group sets its rate: `analysis_fps`, else the ground truth's for its clip.
    #[default]
    Fixed,
    /// As gridwatch ships: no group rate, each camera at the highest need of its zones (the
    /// catalog's `analysis_fps`), each zone due at its own rate, the motion gate, keyframes-only
    /// decoding chosen from the stream.
    Zones,
    /// What the loop a user would write analyses: every camera at `analysis_fps` (the highest
    /// rate any scenario needs), every frame decoded, no motion gate.
    Naive,
}

/// The key-area workload's cameras: 9 units of 4; the first camera of each unit watches a
/// plaza (every zone of its clip's ground truth: crowd and parking), the other three a street
/// (its parking zones only).
pub const KEY_AREA_UNITS: usize = 9;
pub const KEY_AREA_CAMERAS_PER_UNIT: usize = 4;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Files, replayed as cameras in turn (camera i plays `streams[i % len]`).
    pub streams: Vec<PathBuf>,
    pub cameras: usize,
    pub pace: Pace,
    /// Analysed frames per second and camera; `None`: the ground truth's rate for its clips,
    /// `DEFAULT_BENCH_ANALYSIS_FPS` for others.
    pub analysis_fps: Option<f64>,
    pub workers: usize,
    pub intra_op_threads: usize,
    /// The model cards: one, or several (every ground-truth zone then names all of them).
    pub cards: Vec<PathBuf>,
    /// Stop after this long (files then loop); `None`: until every file ended once.
    pub duration_seconds: Option<f64>,
    /// `ground-truth.toml`; zones and episodes of its clips (and `<stem>.crowd-ground-truth.toml`
    /// next to a stream) make the accuracy section.
    pub ground_truth: Option<PathBuf>,
    /// Outbox and receiver database go here.
    pub work_dir: PathBuf,
    /// Prefix of the camera ids, so that metrics of several runs in one process stay apart.
    pub id_prefix: String,
    pub progress: bool,
    pub schedule: Schedule,
    /// Seconds at the start left out of the steady-state latency and drop counts
    /// (`PipelineResult::steady`): every camera's first frame arrives at once; 0: none.
    pub warmup_seconds: f64,
    /// How the cameras' streams are decoded (`[ingest]`).
    pub decode: DecodeOptions,
    /// Lay the cameras out as the key-area workload ([`KEY_AREA_UNITS`] units; plaza and street
    /// cameras; no learned zone states).
    pub key_area: bool,
}

/// The `[ingest]` decoding settings of a replay, so that one run can compare them side by side.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// `[ingest] decoder_threads` (0: the decoder's own frame threads).
    pub decoder_threads: u32,
    /// `[ingest] skip_gop_tails`.
    pub skip_gop_tails: bool,
    /// `[ingest] start_spread_seconds`: 0 starts every replayed camera at once, so that their
    /// keyframes and analysis slots fall together; real cameras are out of phase.
    pub start_spread_seconds: f64,
    /// `[ingest] shed_when_behind`.
    pub shed_when_behind: bool,
    /// `[ingest] max_decode_lag_ms` (0: never shed a late GOP).
    pub max_decode_lag_ms: u64,
    /// `[ingest] pipeline_nice` (0: streaming threads as the process).
    pub pipeline_nice: i32,
    /// `[inference] thin_under_overload`.
    pub thin_under_overload: bool,
}

impl Default for DecodeOptions {
    /// gridwatch's defaults.
    fn default() -> Self {
        let d = gridwatch::ingest::settings::IngestSettings::default();
        Self {
            decoder_threads: d.decoder_threads,
            skip_gop_tails: d.skip_gop_tails,
            start_spread_seconds: d.start_spread_seconds,
            shed_when_behind: d.shed_when_behind,
            max_decode_lag_ms: d.max_decode_lag_ms,
            pipeline_nice: d.pipeline_nice,
            thin_under_overload: gridwatch::infer::settings::InferenceSettings::default()
                .thin_under_overload,
        }
    }
}

/// A replay's result and the raw per-frame observations (for the detection comparison).
pub struct Replay {
    pub result: PipelineResult,
    pub records: Vec<FrameRecord>,
    /// Per camera, the scenarios of its zones.
    pub camera_scenarios: Vec<Vec<String>>,
}

struct CameraSpec {
    id: String,
    /// Index of its unit (and group).
    unit: usize,
    clip: PathBuf,
    fps: f64,
    zones: Vec<accuracy::Zone>,
    episodes: Vec<Episode>,
    states: Vec<StateSpec>,
}

// Boxed: the learn error is large, and every replay result would carry its size.
impl From<gridwatch::learn::LearnError> for ReplayError {
    fn from(e: gridwatch::learn::LearnError) -> Self {
        Self::Learn(Box::new(e))
    }
}

/// A learned zone state of a camera: what the ground truth says and the labels it names.
struct StateSpec {
    truth: StateTruth,
    labels: LabelsFile,
}

/// The media duration of a file (GStreamer, prerolled), for the progress bar.
pub fn clip_seconds(path: &Path) -> Option<f64> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().ok()?;
    let location = path.display().to_string().replace('"', "\\\"");
    let p = gst::parse::launch(&format!(
        "filesrc location=\"{location}\" ! decodebin ! fakesink"
    ))
    .ok()?;
    p.set_state(gst::State::Paused).ok()?;
    let _ = p.state(gst::ClockTime::from_seconds(5));
    let d = p.query_duration::<gst::ClockTime>();
    let _ = p.set_state(gst::State::Null);
    d.map(|d| d.nseconds() as f64 / 1e9)
}

/// After `warmup_seconds`, samples every 250 ms until `stop` which share of the cameras the
/// pool holds to a slower rate under overload (`held_to_fps`); the mean share.
fn held_sampler(
    registry: &gridwatch::ingest::status::CameraRegistry,
    stop: &gridwatch::run::StopHandle,
    warmup_seconds: f64,
) -> std::thread::JoinHandle<f64> {
    let (registry, stop) = (registry.clone(), stop.clone());
    let start = Instant::now() + Duration::try_from_secs_f64(warmup_seconds).unwrap_or_default();
    std::thread::spawn(move || {
        let (mut held, mut seen) = (0usize, 0usize);
        while !stop.is_stopped() {
            std::thread::sleep(Duration::from_millis(250));
            if Instant::now() < start {
                continue;
            }
            let cameras = registry.snapshot();
            held += cameras.iter().filter(|c| c.held_to_fps.is_some()).count();
            seen += cameras.len();
        }
        if seen == 0 {
            0.0
        } else {
            held as f64 / seen as f64
        }
    })
}

/// Peak RSS so far (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so that each measured run has its own peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Sums a Prometheus counter over series whose `camera` label is one of `cameras`, grouped by
/// the value of `by` (empty string when the series has no such label).
pub fn counter_by(text: &str, name: &str, by: &str, cameras: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_owned())
            })
        };
        if !label("camera").is_some_and(|c| cameras.contains(&c)) {
            continue;
        }
        let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *out.entry(label(by).unwrap_or_default()).or_insert(0) += v;
    }
    out
}

fn toml_str(s: &str) -> String {
    // A TOML basic string: the same escapes as JSON for what paths and names contain.
    serde_json::to_string(s).unwrap_or_default()
}

/// The scenario catalog of the bench: the ground truth's evaluation catalog (short dwell times
/// for short clips) plus the shipped crowd scenario when a crowd ground truth is scored.
fn bench_catalog(gt_catalog: &Path, with_crowd: bool) -> Result<String, ReplayError> {
    let text = std::fs::read_to_string(gt_catalog).map_err(|source| ReplayError::Io {
        what: gt_catalog.display().to_string(),
        source,
    })?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| ReplayError::Config(e.to_string()))?;
    if with_crowd {
        let shipped: toml::Table = toml::from_str(include_str!("../../../config/scenarios.toml"))
            .map_err(|e| ReplayError::Config(e.to_string()))?;
        let crowd = shipped
            .get("scenarios")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .find(|s| s.get("id").and_then(|i| i.as_str()) == Some("crowd_gathering"))
            })
            .cloned()
            .ok_or_else(|| {
                ReplayError::Config("no crowd_gathering in the shipped catalog".into())
            })?;
        let code = crowd
            .get("category_code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        if let (Some(codes), Some(entry)) = (
            table.get_mut("codes").and_then(|c| c.as_table_mut()),
            shipped.get("codes").and_then(|c| c.get(&code)).cloned(),
        ) {
            codes.insert(code, entry);
        }
        if let Some(list) = table.get_mut("scenarios").and_then(|s| s.as_array_mut())
            && !list
                .iter()
                .any(|s| s.get("id").and_then(|i| i.as_str()) == Some("crowd_gathering"))
        {
            list.push(crowd);
        }
    }
    toml::to_string(&table).map_err(|e| ReplayError::Config(e.to_string()))
}

/// Runs the pipeline over the streams and measures it.
pub fn run(o: &ReplayOptions) -> Result<Replay, ReplayError> {
    let duration = o
        .duration_seconds
        .map(|d| {
            Duration::try_from_secs_f64(d)
                .map_err(|e| ReplayError::Config(format!("duration_seconds = {d}: {e}")))
        })
        .transpose()?;
    if o.streams.is_empty() || o.cameras == 0 {
        return Err(ReplayError::NoStreams);
    }
    for s in &o.streams {
        if !s.is_file() {
            return Err(ReplayError::Missing(s.clone()));
        }
    }
    std::fs::create_dir_all(&o.work_dir).map_err(|source| ReplayError::Io {
        what: o.work_dir.display().to_string(),
        source,
    })?;
    let gt = o
        .ground_truth
        .as_deref()
        .map(GroundTruth::load)
        .transpose()?;
    let gt_dir = o
        .ground_truth
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default();

    // Cameras, their zones and episodes.
    let mut crowd: Option<CrowdGroundTruth> = None;
    let mut specs = Vec::new();
    for i in 0..o.cameras {
        let clip = o.streams[i % o.streams.len()].clone();
        let name = clip
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = clip
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A clip made from an annotated one (`scripts/make-bench-clips`: `<stem>-1080p.mp4`)
        // has its annotations: same pictures, same times.
        let source_stem = stem.strip_suffix("-1080p").unwrap_or(&stem).to_owned();
        let source_name = name.replacen(&stem, &source_stem, 1);
        let annotated = gt.as_ref().and_then(|g| {
            g.clips
                .iter()
                .find(|c| c.clip == name || c.clip == source_name)
        });
        let (mut zones, mut episodes) = annotated
            .map(|c| (c.zones.clone(), c.episodes.clone()))
            .unwrap_or_default();
        let fps = o
            .analysis_fps
            .or(annotated.map(|c| c.analysis_fps))
            .unwrap_or(DEFAULT_BENCH_ANALYSIS_FPS);
        let crowd_file = [
            clip.with_file_name(format!("{stem}.crowd-ground-truth.toml")),
            gt_dir.join(format!("{source_stem}.crowd-ground-truth.toml")),
        ]
        .into_iter()
        .find(|p| p.is_file());
        let street = o.key_area && i % KEY_AREA_CAMERAS_PER_UNIT != 0;
        if let (true, Some(crowd_file), false) = (gt.is_some(), crowd_file, street) {
            let c = CrowdGroundTruth::load(&crowd_file)?;
            zones.push(accuracy::Zone {
                id: "crowd".into(),
                name: "crowd (whole picture)".into(),
                polygon: c.zone.clone(),
                scenarios: vec!["crowd_gathering".into()],
            });
            episodes.extend(c.episodes_in("crowd"));
            crowd.get_or_insert(c);
        }
        let states = match annotated {
            Some(c) if !o.key_area => state_specs(c, &gt_dir, &source_name, &mut zones)?,
            _ => Vec::new(),
        };
        if street {
            zones.retain(|z| !z.scenarios.iter().any(|s| s == "crowd_gathering"));
            episodes.retain(|e| zones.iter().any(|z| z.id == e.zone));
        }
        let unit = if o.key_area {
            (i / KEY_AREA_CAMERAS_PER_UNIT) % KEY_AREA_UNITS
        } else {
            i
        };
        specs.push(CameraSpec {
            id: format!("{}{stem}-{i}", o.id_prefix),
            unit,
            clip,
            fps,
            zones,
            episodes,
            states,
        });
    }

    // The configuration, as a person would write it.
    let mut text =
        String::from("[centre]\nname = \"bench\"\n[[units]]\nid = \"bench\"\nname = \"bench\"\n");
    write_groups(&mut text, &specs, o);
    for s in &specs {
        let _ = write!(
            text,
            "[[cameras]]\nid = {id}\nname = {id}\nunit = \"bench\"\ngroup = \"g{unit}\"\nuri = {uri}\nloop = {looped}\n",
            unit = s.unit,
            id = toml_str(&s.id),
            uri = toml_str(&s.clip.display().to_string()),
            looped = o.duration_seconds.is_some(),
        );
        for z in &s.zones {
            let _ = write!(
                text,
                "[[cameras.zones]]\nid = {}\nname = {}\npolygon = {:?}\nscenarios = {:?}\n",
                toml_str(&z.id),
                toml_str(&z.name),
                z.polygon,
                z.scenarios
            );
            if o.cards.len() > 1 {
                let _ = writeln!(text, "models = {:?}", model_ids(&o.cards));
            }
        }
    }
    for card in &o.cards {
        let _ = writeln!(
            text,
            "[[models]]\ncard = {}",
            toml_str(&card.display().to_string())
        );
    }
    let _ = write!(
        text,
        "[inference]\nworkers = {}\nintra_op_threads = {}\nthin_under_overload = {}\n[ingest]\npace = \"{}\"\ndecoder_threads = {}\nskip_gop_tails = {}\nstart_spread_seconds = {:?}\nshed_when_behind = {}\nmax_decode_lag_ms = {}\npipeline_nice = {}\n",
        o.workers,
        o.intra_op_threads,
        o.decode.thin_under_overload,
        match o.pace {
            Pace::Fast => "fast",
            Pace::Realtime => "realtime",
        },
        o.decode.decoder_threads,
        // The naive schedule decodes every frame, as the loop a user writes does.
        o.decode.skip_gop_tails && o.schedule != Schedule::Naive,
        o.decode.start_spread_seconds,
        o.decode.shed_when_behind,
        o.decode.max_decode_lag_ms,
        o.decode.pipeline_nice,
    );
    if let Some(g) = &gt {
        let catalog = bench_catalog(&gt_dir.join(&g.catalog), crowd.is_some())?;
        let path = o.work_dir.join("bench-catalog.toml");
        std::fs::write(&path, catalog).map_err(|source| ReplayError::Io {
            what: path.display().to_string(),
            source,
        })?;
        let _ = write!(
            text,
            "[scenarios]\ncatalog = {}\n",
            toml_str(&path.display().to_string())
        );
    }
    if o.schedule == Schedule::Naive {
        text.push_str("[gate]\nenabled = false\n");
    }
    if let Some(c) = &crowd {
        let _ = write!(
            text,
            "[scenarios.crowd_gathering]\nmin_persons = {}\nmin_duration_seconds = {}\nclear_seconds = {}\nscore_threshold = {}\n",
            c.min_persons, c.min_duration_seconds, c.clear_seconds, c.score_threshold
        );
    }
    let tag = format!("{}{}", o.id_prefix, std::process::id());
    let receiver_db = o.work_dir.join(format!("receiver-{tag}.sqlite"));
    let outbox = o.work_dir.join(format!("outbox-{tag}.sqlite"));
    for p in [&receiver_db, &outbox] {
        let _ = std::fs::remove_file(p);
    }
    let _ = write!(
        text,
        "[cases]\noutbox = {}\n[dispatch.embedded_receiver]\nlisten = \"127.0.0.1:0\"\ndatabase = {}\n",
        toml_str(&outbox.display().to_string()),
        toml_str(&receiver_db.display().to_string()),
    );
    let config_path = o.work_dir.join("bench-config.toml");
    let _ = std::fs::write(&config_path, &text);
    let load = |text: &str| {
        Config::from_text(text, &config_path.display().to_string(), &o.work_dir)
            .map_err(|e| ReplayError::Config(e.to_string()))
    };
    let mut config = load(&text)?;
    if specs.iter().any(|s| !s.states.is_empty()) {
        // Trained with the configuration's model, then loaded as a deployment loads its cards.
        let cards_dir = o.work_dir.join(format!("zone-states-{tag}"));
        train_states(&config, &specs, &o.work_dir, &cards_dir)?;
        let _ = write!(
            text,
            "[states]\ncards_dir = {}\n",
            toml_str(&cards_dir.display().to_string())
        );
        let _ = std::fs::write(&config_path, &text);
        config = load(&text)?;
    }
    let catalog = config.catalog.clone();
    if o.schedule == Schedule::Zones {
        // The rate each camera runs at now (what its zones need), for the report.
        let now = time::OffsetDateTime::now_utc();
        for (i, s) in specs.iter_mut().enumerate() {
            s.fps = config.area.profile_at(i, now).analysis_fps;
        }
    }

    // Observation: every analysed frame, and a progress bar in stream seconds.
    let durations: HashMap<PathBuf, f64> = specs
        .iter()
        .map(|s| (s.clip.clone(), clip_seconds(&s.clip).unwrap_or(0.0)))
        .collect();
    let total_seconds: f64 = specs
        .iter()
        .map(|s| o.duration_seconds.unwrap_or(durations[&s.clip]))
        .sum();
    let bar = if o.progress {
        indicatif::ProgressBar::new(total_seconds.max(1.0).round() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} stream-s ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} camera(s)", specs.len()));
    let (obs_tx, obs_rx) = crossbeam_channel::unbounded::<FrameRecord>();
    let collector = {
        let bar = bar.clone();
        let cameras = specs.len();
        let realtime = o.duration_seconds.is_some();
        std::thread::spawn(move || {
            let mut records = Vec::new();
            let mut latest = vec![0.0f64; cameras];
            let start = Instant::now();
            for r in obs_rx {
                latest[r.camera] = r.stream_seconds;
                if realtime {
                    bar.set_position(start.elapsed().as_secs() * cameras as u64);
                } else {
                    bar.set_position(latest.iter().sum::<f64>() as u64);
                }
                records.push(r);
            }
            records
        })
    };

    let handle = gridwatch::telemetry::prometheus();
    let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    let stop = StopHandle::default();
    let timer = duration.map(|d| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Past the clock's range: no end but the stop.
            let end = Instant::now().checked_add(d);
            while end.is_none_or(|end| Instant::now() < end) && !stop.is_stopped() {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.stop();
        })
    });
    #[allow(clippy::disallowed_methods)] // a constant, in range
    let drain_timeout = Duration::from_secs_f64(BENCH_DRAIN_TIMEOUT_SECONDS);
    let options = RunOptions {
        drain_timeout,
        frame_observer: Some(obs_tx),
        ..RunOptions::default()
    };
    let registry = options.cameras.clone();
    reset_peak_rss();
    let cpu0 = super::process_cpu_seconds();
    let wall0 = Instant::now();
    // The metrics as they stand when the warm-up ends, to count the steady state's drops.
    let at_warmup = (o.warmup_seconds > 0.0).then(|| {
        let (handle, stop) = (handle, stop.clone());
        let warmup = Duration::try_from_secs_f64(o.warmup_seconds).unwrap_or_default();
        std::thread::spawn(move || {
            let end = Instant::now() + warmup;
            while Instant::now() < end && !stop.is_stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            handle.map(|h| h.render()).unwrap_or_default()
        })
    });
    let held = (o.warmup_seconds > 0.0).then(|| held_sampler(&registry, &stop, o.warmup_seconds));
    let run_result = gridwatch::run::run(config, options, stop.clone());
    let wall_seconds = wall0.elapsed().as_secs_f64();
    let cpu_seconds = super::process_cpu_seconds() - cpu0;
    let peak_rss = peak_rss_mib();
    stop.stop();
    if let Some(t) = timer {
        let _ = t.join();
    }
    let records = collector.join().unwrap_or_default();
    let at_warmup = at_warmup.and_then(|t| t.join().ok());
    let held_share = held.and_then(|t| t.join().ok()).unwrap_or(0.0);
    bar.finish_and_clear();
    run_result?;

    let metrics = handle.map(|h| h.render()).unwrap_or_default();
    let frames_dropped = counter_by(
        &metrics,
        gridwatch::telemetry::FRAMES_DROPPED,
        "reason",
        &ids,
    );
    let units_not_decoded = counter_by(
        &metrics,
        gridwatch::telemetry::UNITS_NOT_DECODED,
        "reason",
        &ids,
    );
    let frames_analysed_metric =
        counter_by(&metrics, gridwatch::telemetry::FRAMES_ANALYSED, "", &ids)
            .values()
            .sum();
    let statuses = registry.snapshot();
    let frames_decoded = statuses.iter().map(|c| c.frames).sum();
    let frames_skipped_no_motion = statuses.iter().map(|c| c.skipped_no_motion).sum();

    // Latencies and stages.
    let latencies: Vec<f64> = records
        .iter()
        .map(|r| r.done_at.duration_since(r.received).as_secs_f64())
        .collect();
    let steady = at_warmup.map(|before| {
        let warmed = wall0 + Duration::try_from_secs_f64(o.warmup_seconds).unwrap_or_default();
        let after: Vec<f64> = records
            .iter()
            .filter(|r| r.received >= warmed)
            .map(|r| r.done_at.duration_since(r.received).as_secs_f64())
            .collect();
        let from_capture: Vec<f64> = records
            .iter()
            .filter(|r| r.received >= warmed)
            .map(|r| r.ingest_lag_seconds + r.done_at.duration_since(r.received).as_secs_f64())
            .collect();
        let before_text = before;
        let before = counter_by(
            &before_text,
            gridwatch::telemetry::FRAMES_DROPPED,
            "reason",
            &ids,
        );
        let shed_before = counter_by(
            &before_text,
            gridwatch::telemetry::UNITS_NOT_DECODED,
            "reason",
            &ids,
        );
        let since = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>, reason: &str| {
            let now = now.get(reason).copied().unwrap_or(0);
            now - then.get(reason).copied().unwrap_or(0).min(now)
        };
        let last_done = records.iter().map(|r| r.done_at).max();
        let span = last_done.map_or(0.0, |l| l.saturating_duration_since(warmed).as_secs_f64());
        report::Steady {
            warmup_seconds: o.warmup_seconds,
            held_share,
            analysed_fps: if span > 0.0 {
                after.len() as f64 / span
            } else {
                0.0
            },
            latency: Percentiles::of_seconds(&after),
            stale_drops: since(&frames_dropped, &before, "stale"),
            superseded_drops: since(&frames_dropped, &before, "superseded"),
            shed_units: since(&units_not_decoded, &shed_before, "overload"),
            late_units: since(&units_not_decoded, &shed_before, "late"),
            capture_latency: Percentiles::of_seconds(&from_capture),
        }
    });
    let mut stages = BTreeMap::new();
    let stage = |f: &dyn Fn(&FrameRecord) -> f64| {
        Percentiles::of_seconds(&records.iter().map(f).collect::<Vec<_>>())
    };
    stages.insert("queue".into(), stage(&|r| r.queue_seconds));
    stages.insert("preprocess".into(), stage(&|r| r.times.preprocess_seconds));
    stages.insert("inference".into(), stage(&|r| r.times.inference_seconds));
    stages.insert(
        "postprocess".into(),
        stage(&|r| r.times.postprocess_seconds),
    );
    stages.insert(
        "rules".into(),
        stage(&|r| r.done_at.duration_since(r.handed_at).as_secs_f64()),
    );
    let first = records.iter().map(|r| r.received).min();
    let last = records.iter().map(|r| r.done_at).max();
    let active_seconds = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let frames_analysed = records.len() as u64;
    let per_second = |n: u64| {
        if active_seconds > 0.0 {
            n as f64 / active_seconds
        } else {
            0.0
        }
    };

    // Accuracy from the cases the embedded receiver stored.
    let cases = received_cases(&receiver_db)?;
    let mut tally = Tally::new();
    let mut details = Vec::new();
    if let Some(g) = &gt {
        for s in &specs {
            details.extend(score_states(
                &catalog,
                s,
                &cases,
                g.tolerance_seconds,
                &mut tally,
            ));
        }
        for s in specs.iter().filter(|s| !s.episodes.is_empty()) {
            let mine: Vec<Case> = cases
                .iter()
                .filter(|c| {
                    c.camera.id == s.id
                        && !s.states.iter().any(|st| st.truth.scenario == c.scenario.id)
                })
                .cloned()
                .collect();
            details.extend(accuracy::score(
                &s.episodes,
                &s.id,
                g.match_iou,
                g.tolerance_seconds,
                &mine,
                &mut tally,
            ));
        }
    }

    let result = PipelineResult {
        cameras: specs.len(),
        pace: match o.pace {
            Pace::Fast => "fast".into(),
            Pace::Realtime => "realtime".into(),
        },
        workers: o.workers,
        intra_op_threads: o.intra_op_threads,
        decoder_threads: o.decode.decoder_threads,
        skip_gop_tails: o.decode.skip_gop_tails && o.schedule != Schedule::Naive,
        start_spread_seconds: o.decode.start_spread_seconds,
        shed_when_behind: o.decode.shed_when_behind,
        max_decode_lag_ms: o.decode.max_decode_lag_ms,
        pipeline_nice: o.decode.pipeline_nice,
        thin_under_overload: o.decode.thin_under_overload,
        streams: specs
            .iter()
            .map(|s| CameraStream {
                id: s.id.clone(),
                clip: s.clip.display().to_string(),
                analysis_fps: s.fps,
            })
            .collect(),
        wall_seconds,
        active_seconds,
        frames_decoded,
        frames_analysed,
        frames_analysed_metric,
        units_not_decoded,
        frames_skipped_no_motion,
        frames_dropped,
        analysed_fps: per_second(frames_analysed),
        analysed_per_cpu_second: if cpu_seconds > 0.0 {
            frames_analysed as f64 / cpu_seconds
        } else {
            0.0
        },
        decoded_fps: per_second(frames_decoded),
        cpu_seconds,
        peak_rss_mib: peak_rss,
        latency: Percentiles::of_seconds(&latencies),
        latency_histogram: report::histogram(&latencies),
        stages,
        cases: cases.len(),
        accuracy: accuracy::summarize(&tally),
        accuracy_details: details,
        steady,
    };
    let camera_scenarios = specs
        .iter()
        .map(|s| {
            let mut v: Vec<String> = s.zones.iter().flat_map(|z| z.scenarios.clone()).collect();
            v.sort();
            v.dedup();
            v
        })
        .collect();
    Ok(Replay {
        result,
        records,
        camera_scenarios,
    })
}

/// The camera groups: one per camera (its rate), or in the key-area workload one per unit; the
/// schedule decides the rate lines.
fn write_groups(text: &mut String, specs: &[CameraSpec], o: &ReplayOptions) {
    let mut written = std::collections::BTreeSet::new();
    for s in specs {
        if !written.insert(s.unit) {
            continue;
        }
        let _ = write!(
            text,
            "[[groups]]\nid = \"g{u}\"\nname = \"g{u}\"\nunit = \"bench\"\n",
            u = s.unit
        );
        match o.schedule {
            Schedule::Fixed => {
                let _ = writeln!(text, "analysis_fps = {}", s.fps);
            }
            Schedule::Zones => {}
            Schedule::Naive => {
                let _ = writeln!(text, "analysis_fps = {}\nkeyframes_only = false", s.fps);
            }
        }
    }
}

/// The learned zone states of an annotated clip, each with its zone added to `zones`.
fn state_specs(
    clip: &accuracy::Clip,
    gt_dir: &Path,
    clip_name: &str,
    zones: &mut Vec<accuracy::Zone>,
) -> Result<Vec<StateSpec>, ReplayError> {
    clip.states
        .iter()
        .map(|truth| {
            let path = gt_dir.join(&truth.labels);
            let labels = LabelsFile::load(&path)?;
            if labels.clip.file_name() != Some(std::ffi::OsStr::new(clip_name)) {
                return Err(ReplayError::LabelsClip {
                    labels: path,
                    labelled: labels.clip.display().to_string(),
                    clip: clip_name.into(),
                });
            }
            zones.push(accuracy::Zone {
                id: labels.zone.clone(),
                name: format!("{} ({})", labels.zone, truth.labels),
                polygon: labels.polygon.clone(),
                scenarios: vec![truth.scenario.clone()],
            });
            Ok(StateSpec {
                truth: truth.clone(),
                labels,
            })
        })
        .collect()
}

/// Trains every camera's zone states into `cards_dir` with `gridwatch learn`, each on its
/// earliest labels, as that camera (the labels file copied with the bench's camera id).
fn train_states(
    config: &Config,
    specs: &[CameraSpec],
    work_dir: &Path,
    cards_dir: &Path,
) -> Result<(), ReplayError> {
    for spec in specs {
        for st in &spec.states {
            let copy = work_dir.join(format!("{}-{}.labels.toml", spec.id, st.labels.zone));
            let text =
                std::fs::read_to_string(&st.labels.path).map_err(|source| ReplayError::Io {
                    what: st.labels.path.display().to_string(),
                    source,
                })?;
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| ReplayError::Config(e.to_string()))?;
            table.insert("camera".into(), spec.id.clone().into());
            table.insert("clip".into(), spec.clip.display().to_string().into());
            let text = toml::to_string(&table).map_err(|e| ReplayError::Config(e.to_string()))?;
            std::fs::write(&copy, text).map_err(|source| ReplayError::Io {
                what: copy.display().to_string(),
                source,
            })?;
            let options = gridwatch::learn::LearnOptions {
                source: gridwatch::learn::LabelSource::File(copy),
                out_dir: cards_dir.to_owned(),
                pooling: gridwatch::states::Pooling::default(),
                train: gridwatch::states::TrainOptions {
                    max_train_labels: Some(st.truth.train_labels),
                    ..Default::default()
                },
                decode_fps: gridwatch::learn::DEFAULT_DECODE_FPS,
            };
            gridwatch::learn::run(config, &options)?;
        }
    }
    Ok(())
}

/// Scores the camera's zone states on the labels after their training part: the episodes the
/// labels make under the scenario's dwell and clear times, against the state's cases.
fn score_states(
    catalog: &gridwatch::scenarios::catalog::Catalog,
    spec: &CameraSpec,
    cases: &[Case],
    tolerance_seconds: f64,
    tally: &mut Tally,
) -> Vec<String> {
    let mut lines = Vec::new();
    for st in &spec.states {
        let Some(entry) = catalog.entry(&st.truth.scenario) else {
            continue;
        };
        let mut labels: Vec<(f64, bool)> = st
            .labels
            .labels
            .iter()
            .map(|l| (l.at_seconds, l.present))
            .collect();
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(from_seconds, _)) = labels.get(st.truth.train_labels) else {
            continue;
        };
        let th = &entry.thresholds;
        let episodes = accuracy::state_episodes(
            &labels,
            &st.truth.scenario,
            &st.labels.zone,
            th.dwell_seconds,
            th.clear_seconds,
        );
        let mine: Vec<Case> = cases
            .iter()
            .filter(|c| {
                c.camera.id == spec.id
                    && c.scenario.id == st.truth.scenario
                    && c.zone.id == st.labels.zone
            })
            .cloned()
            .collect();
        let (episodes, mine) =
            accuracy::held_out(&episodes, &mine, from_seconds, tolerance_seconds);
        lines.push(format!(
            "{}: {} scored from {from_seconds:.1} s (the earlier labels trained its classifier)",
            spec.id, st.truth.scenario
        ));
        lines.extend(accuracy::score(
            &episodes,
            &spec.id,
            1.0,
            tolerance_seconds,
            &mine,
            tally,
        ));
    }
    lines
}

fn received_cases(db: &Path) -> Result<Vec<Case>, ReplayError> {
    if !db.is_file() {
        return Ok(Vec::new());
    }
    let conn = rusqlite::Connection::open(db).map_err(|e| ReplayError::Receiver(e.to_string()))?;
    let mut stmt = conn
        .prepare("SELECT body FROM received")
        .map_err(|e| ReplayError::Receiver(e.to_string()))?;
    let bodies = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| ReplayError::Receiver(e.to_string()))?;
    let mut cases = Vec::new();
    for b in bodies {
        let b = b.map_err(|e| ReplayError::Receiver(e.to_string()))?;
        cases.push(serde_json::from_str(&b).map_err(|e| ReplayError::Receiver(e.to_string()))?);
    }
    Ok(cases)
}

/// The ids the configuration gives the cards (their file stems).
pub fn model_ids(cards: &[PathBuf]) -> Vec<String> {
    cards
        .iter()
        .map(|c| {
            c.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}
