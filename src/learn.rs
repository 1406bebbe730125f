//! `gridwatch learn`: trains a zone-state classifier from a labels file. The file names a clip,
//! the camera, zone (polygon) and state, and labelled times; each labelled frame is decoded the
//! way `gridwatch detect` decodes clips (the file camera's GStreamer template, stretched to the
//! model's input), the configured detector runs once, its feature map is pooled over the zone,
//! and [`crate::states::train`] fits, evaluates by time and checks the quality bar. The card goes
//! to the output folder. The labels may instead be those staff set on the console's wall
//! ([`LabelSource::Console`]): each kept with the analysed frame it was set on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::infer::Detector;
use crate::infer::card::ModelCard;
use crate::ingest::replay::FileFrames;
use crate::review::store::ReviewStore;
use crate::states::card::FeatureSource;
use crate::states::train::{self, Identity, Sample, TrainOptions, Trained};
use crate::states::{Pooling, StatesError, ZoneMask};

/// Frames per second decoded from the clip to find the labelled times.
pub const DEFAULT_DECODE_FPS: f64 = 2.0;
/// Rounding slack when matching a label's time to a frame's presentation time.
const LABEL_TIME_SLACK_SECONDS: f64 = 1e-6;

/// A labels file: one clip, one zone, one state, labelled times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsFile {
    /// The clip, relative to the labels file.
    pub clip: PathBuf,
    pub camera: String,
    pub zone: String,
    /// The scenario id the state stands for.
    pub state: String,
    /// Zone polygon, normalised 0..1 (x, y).
    pub polygon: Vec<[f64; 2]>,
    pub labels: Vec<Label>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub at_seconds: f64,
    pub present: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Labels {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Clip { path: PathBuf, message: String },
    #[error(
        "model card {0} has no [features] table: zone states need a model that outputs a feature map"
    )]
    NoFeatures(PathBuf),
    #[error(transparent)]
    Model(#[from] crate::run::RunError),
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    States(#[from] StatesError),
    #[error("console labels: {0}")]
    Console(String),
}

impl LabelsFile {
    /// Reads and checks a labels file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, LearnError> {
        let text = std::fs::read_to_string(path).map_err(|source| LearnError::Read {
            path: path.to_owned(),
            source,
        })?;
        let at_line = |line: usize, message: String| LearnError::Labels {
            path: path.to_owned(),
            line,
            message,
        };
        let mut file: LabelsFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1);
            at_line(line, e.message().to_owned())
        })?;
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1)
        };
        crate::area::geometry::validate_polygon(&file.polygon)
            .map_err(|m| at_line(line_of("polygon"), format!("polygon: {m}")))?;
        if let Some(bad) = file
            .labels
            .iter()
            .find(|l| !l.at_seconds.is_finite() || l.at_seconds < 0.0)
        {
            return Err(at_line(
                line_of("[[labels]]"),
                format!("at_seconds = {} must be finite and >= 0", bad.at_seconds),
            ));
        }
        file.path = path.to_owned();
        Ok(file)
    }

    pub fn clip_path(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.clip)
    }

    /// What the classifier is for, given the model and pooling.
    pub fn identity(&self, model: &ModelCard, pooling: Pooling) -> Result<Identity, LearnError> {
        Ok(Identity {
            camera: self.camera.clone(),
            zone: self.zone.clone(),
            state: self.state.clone(),
            polygon: self.polygon.clone(),
            pooling,
            features: feature_source(model)?,
        })
    }
}

/// The model card's `[features]` as a classifier card records it.
pub fn feature_source(model: &ModelCard) -> Result<FeatureSource, LearnError> {
    let spec = model
        .features
        .as_ref()
        .ok_or_else(|| LearnError::NoFeatures(model.path.clone()))?;
    let (grid_width, grid_height) = spec.grid(model.input_size());
    Ok(FeatureSource {
        model: model.id.clone(),
        sha256: model.sha256.trim().to_owned(),
        output: spec.output.clone(),
        grid_width,
        grid_height,
        channels: spec.channels,
    })
}

/// Decodes the labelled frames, runs the detector once on each and pools its feature map with
/// every pooling in `poolings`: one sample list per pooling, in label order. A label with no
/// frame within half a decoded frame interval (past the clip's end) is an error.
pub fn extract(
    detector: &mut Detector,
    labels: &LabelsFile,
    poolings: &[Pooling],
    decode_fps: f64,
) -> Result<Vec<Vec<Sample>>, LearnError> {
    let source = feature_source(detector.card())?;
    let masks: Vec<ZoneMask> = poolings
        .iter()
        .map(|&p| ZoneMask::new(&labels.polygon, p, source.grid_width, source.grid_height))
        .collect();
    let clip = labels.clip_path();
    let (w, h) = detector.card().input_size();
    let mut frames = FileFrames::open(&clip, decode_fps, w, h)?;
    let found = pool_labelled_frames(detector, labels, &masks, &mut frames, decode_fps)?;
    let missing: Vec<String> = (0..found.len())
        .filter(|&i| found[i].is_none())
        .map(|i| format!("{} s", labels.labels[i].at_seconds))
        .collect();
    if !missing.is_empty() {
        let why = frames
            .error()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(LearnError::Clip {
            path: clip,
            message: format!(
                "no frame decoded for the labels at {}{why}",
                missing.join(", ")
            ),
        });
    }
    let pooled = found.into_iter().flatten().collect();
    Ok(samples_per_pooling(labels, pooled, poolings.len()))
}

/// Per label, the pooled vectors (one per mask) of the decoded frame nearest its time, if one
/// lies within half a frame interval. The detector runs only on frames a label wants.
fn pool_labelled_frames(
    detector: &mut Detector,
    labels: &LabelsFile,
    masks: &[ZoneMask],
    frames: &mut FileFrames,
    decode_fps: f64,
) -> Result<Vec<Option<Vec<Vec<f32>>>>, LearnError> {
    let mut found: Vec<Option<Vec<Vec<f32>>>> = vec![None; labels.labels.len()];
    let tolerance = 0.5 / decode_fps + LABEL_TIME_SLACK_SECONDS;
    let mut detections = Vec::new();
    for (pts, frame) in frames.by_ref() {
        let wanted: Vec<usize> = (0..labels.labels.len())
            .filter(|&i| {
                found[i].is_none() && (labels.labels[i].at_seconds - pts).abs() <= tolerance
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let (w, h, stride) = (frame.width, frame.height, frame.row_stride);
        detector.detect(frame.rgb(), w, h, stride, &mut detections)?;
        let map = detector
            .features()
            .ok_or_else(|| LearnError::NoFeatures(detector.card().path.clone()))?;
        let pooled: Vec<Vec<f32>> = masks
            .iter()
            .map(|m| {
                let mut v = Vec::new();
                m.pool(&map, &mut v);
                v
            })
            .collect();
        wanted
            .into_iter()
            .for_each(|i| found[i] = Some(pooled.clone()));
    }
    Ok(found)
}

fn samples_per_pooling(
    labels: &LabelsFile,
    pooled: Vec<Vec<Vec<f32>>>,
    n: usize,
) -> Vec<Vec<Sample>> {
    (0..n)
        .map(|p| {
            labels
                .labels
                .iter()
                .zip(&pooled)
                .map(|(l, v)| Sample {
                    at_seconds: l.at_seconds,
                    present: l.present,
                    features: v[p].clone(),
                })
                .collect()
        })
        .collect()
}

/// Where the labels come from.
#[derive(Debug, Clone)]
pub enum LabelSource {
    /// A labels file: a clip and labelled times.
    File(PathBuf),
    /// The labels staff set on the console's wall ("this zone shows X" / "clear"), stored with
    /// their frames in the outbox database.
    Console {
        camera: String,
        zone: String,
        state: String,
    },
}

/// What `gridwatch learn` does.
#[derive(Debug, Clone)]
pub struct LearnOptions {
    pub source: LabelSource,
    pub out_dir: PathBuf,
    pub pooling: Pooling,
    pub train: TrainOptions,
    pub decode_fps: f64,
}

/// The trained classifier (already saved) and, for every pooling, the evaluation without the
/// bar (`Err` where even that failed, e.g. too few labels).
pub struct Learned {
    pub card_path: PathBuf,
    pub trained: Trained,
    pub comparison: Vec<(Pooling, Result<Trained, StatesError>)>,
}

/// A labelled zone: what the card is for, and one sample list per pooling of [`Pooling::ALL`].
struct Labelled {
    camera: String,
    zone: String,
    state: String,
    polygon: Vec<[f64; 2]>,
    samples: Vec<Vec<Sample>>,
}

impl Labelled {
    fn identity(&self, model: &ModelCard, pooling: Pooling) -> Result<Identity, LearnError> {
        Ok(Identity {
            camera: self.camera.clone(),
            zone: self.zone.clone(),
            state: self.state.clone(),
            polygon: self.polygon.clone(),
            pooling,
            features: feature_source(model)?,
        })
    }
}

/// Extracts, trains with `options.pooling`, applies the bar, saves the card.
pub fn run(config: &Config, options: &LearnOptions) -> Result<Learned, LearnError> {
    // The first configured model whose card exposes a feature map.
    let detectors = crate::run::detectors(config, 1)?;
    let first_card = config
        .models
        .first()
        .map(|m| config.resolve(m.chosen_card()));
    let mut detector = detectors
        .into_iter()
        .find(|d| d.card().features.is_some())
        .ok_or_else(|| LearnError::NoFeatures(first_card.unwrap_or_default()))?;
    let labelled = match &options.source {
        LabelSource::File(path) => from_file(&mut detector, path, options.decode_fps)?,
        LabelSource::Console {
            camera,
            zone,
            state,
        } => from_console(config, &mut detector, camera, zone, state)?,
    };
    let model = detector.card();
    let comparison: Vec<(Pooling, Result<Trained, StatesError>)> = Pooling::ALL
        .iter()
        .zip(&labelled.samples)
        .map(|(&p, s)| {
            Ok((
                p,
                train::fit(labelled.identity(model, p)?, s, &options.train),
            ))
        })
        .collect::<Result<_, LearnError>>()?;
    let chosen = Pooling::ALL
        .iter()
        .position(|&p| p == options.pooling)
        .unwrap_or(0);
    let trained = train::train(
        labelled.identity(model, options.pooling)?,
        &labelled.samples[chosen],
        &options.train,
    )?;
    let card_path = trained.card.save(&options.out_dir)?;
    Ok(Learned {
        card_path,
        trained,
        comparison,
    })
}

fn from_file(
    detector: &mut Detector,
    path: &Path,
    decode_fps: f64,
) -> Result<Labelled, LearnError> {
    let labels = LabelsFile::load(path)?;
    let samples = extract(detector, &labels, &Pooling::ALL, decode_fps)?;
    Ok(Labelled {
        camera: labels.camera,
        zone: labels.zone,
        state: labels.state,
        polygon: labels.polygon,
        samples,
    })
}

/// The console's labels of one zone and state, oldest first; each stored frame through the
/// detector, its feature map pooled over the configured zone. Label times count from the first.
fn from_console(
    config: &Config,
    detector: &mut Detector,
    camera: &str,
    zone: &str,
    state: &str,
) -> Result<Labelled, LearnError> {
    let console = |m: String| LearnError::Console(m);
    let polygon = config
        .area
        .cameras
        .iter()
        .find(|c| c.id == camera)
        .and_then(|c| c.zones.iter().find(|z| z.id == zone))
        .map(|z| z.polygon.clone())
        .ok_or_else(|| {
            console(format!(
                "no zone {zone} of camera {camera} in the configuration"
            ))
        })?;
    let store = ReviewStore::open(&config.resolve(&config.cases.outbox))
        .map_err(|e| console(e.to_string()))?;
    let labels = store
        .zone_labels(camera, zone, state)
        .map_err(|e| console(e.to_string()))?;
    let source = feature_source(detector.card())?;
    let masks: Vec<ZoneMask> = Pooling::ALL
        .iter()
        .map(|&p| ZoneMask::new(&polygon, p, source.grid_width, source.grid_height))
        .collect();
    let (w, h) = detector.card().input_size();
    let t0 = labels.first().map_or(0, |l| l.labelled_at_ms);
    let mut samples = vec![Vec::with_capacity(labels.len()); masks.len()];
    let mut detections = Vec::new();
    for l in &labels {
        let rgb = stored_frame(&l.frame, w, h)
            .map_err(|e| console(format!("the frame of label {}: {e}", l.id)))?;
        detector.detect(&rgb, w as u32, h as u32, w * 3, &mut detections)?;
        let map = detector
            .features()
            .ok_or_else(|| LearnError::NoFeatures(detector.card().path.clone()))?;
        for (mask, out) in masks.iter().zip(&mut samples) {
            let mut features = Vec::new();
            mask.pool(&map, &mut features);
            out.push(Sample {
                at_seconds: (l.labelled_at_ms - t0) as f64 / 1000.0,
                present: l.present,
                features,
            });
        }
    }
    Ok(Labelled {
        camera: camera.to_owned(),
        zone: zone.to_owned(),
        state: state.to_owned(),
        polygon,
        samples,
    })
}

/// A label's stored frame (PNG from the wall, JPEG from a reviewed case) as packed RGB at the
/// model's input size (stretched if the frame was kept at another size).
fn stored_frame(frame: &[u8], w: usize, h: usize) -> Result<Vec<u8>, image::ImageError> {
    let img = image::load_from_memory(frame)?.to_rgb8();
    let (w, h) = (w as u32, h as u32);
    let img = if img.dimensions() == (w, h) {
        img
    } else {
        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
    };
    Ok(img.into_raw())
}

/// The lines `gridwatch learn` prints: the card, its numbers, then every pooling's.
pub fn report(learned: &Learned) -> Vec<String> {
    let t = &learned.trained;
    let l = t.card.labels;
    let mut lines = vec![
        format!("card: {}", learned.card_path.display()),
        format!(
            "labels: train {} present / {} absent (up to {} s), held out {} present / {} absent",
            l.train_positive,
            l.train_negative,
            t.split_at_seconds,
            l.held_out_positive,
            l.held_out_negative
        ),
    ];
    for (pooling, result) in &learned.comparison {
        lines.push(match result {
            Ok(r) => format!(
                "{:<15} held-out precision {:.3} recall {:.3} (tp {} fp {} fn {} tn {}), threshold {:.3}",
                pooling.name(),
                r.held_out.precision(),
                r.held_out.recall(),
                r.held_out.true_positive,
                r.held_out.false_positive,
                r.held_out.false_negative,
                r.held_out.true_negative,
                r.card.linear.threshold
            ),
            Err(e) => format!("{:<15} {e}", pooling.name()),
        });
    }
    lines.push(format!(
        "chosen: {} (passes the quality bar)",
        t.card.pooling.name()
    ));
    lines
}

/// The console's "train" button: [`run`] on the console's labels of a zone, the card saved to
/// `[states] cards_dir`, then a reload so the running pipeline scores with it. Re-reads the
/// configuration file (zones may have changed since the start) where there is one.
pub struct ConsoleTrainer {
    pub config: std::sync::Arc<Config>,
    pub config_path: Option<PathBuf>,
    pub reload: crate::run::ReloadHandle,
    pub train: TrainOptions,
}

impl crate::review::ZoneTrainer for ConsoleTrainer {
    fn train(&self, camera: &str, zone: &str, state: &str) -> Result<Vec<String>, String> {
        let config = match &self.config_path {
            Some(path) => std::sync::Arc::new(Config::load(path).map_err(|e| e.to_string())?),
            None => self.config.clone(),
        };
        let cards_dir = config.states.cards_dir.as_ref().ok_or_else(|| {
            "no `[states] cards_dir` in the configuration: a card would not be loaded".to_owned()
        })?;
        let options = LearnOptions {
            source: LabelSource::Console {
                camera: camera.to_owned(),
                zone: zone.to_owned(),
                state: state.to_owned(),
            },
            out_dir: config.resolve(cards_dir),
            pooling: Pooling::default(),
            train: self.train,
            decode_fps: DEFAULT_DECODE_FPS,
        };
        let learned = run(&config, &options).map_err(|e| e.to_string())?;
        tracing::info!(camera, zone, state, card = %learned.card_path.display(), "zone state trained from the console; reloading");
        self.reload.request();
        Ok(report(&learned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<LabelsFile, LearnError> {
        let path = std::env::temp_dir().join(format!(
            "gridwatch-labels-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        let loaded = LabelsFile::load(&path);
        std::fs::remove_file(&path).ok();
        loaded
    }

    const HEAD: &str = "clip = \"c.mp4\"\ncamera = \"c\"\nzone = \"z\"\nstate = \"s\"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]\n";

    #[test]
    fn a_malformed_label_is_reported_with_its_line() {
        let text = format!(
            "{HEAD}[[labels]]\nat_seconds = 1.0\npresent = true\n\n[[labels]]\nat_seconds = 2.0\npresent = \"yes\"\n"
        );
        let err = load_text("bad", &text).unwrap_err().to_string();
        assert!(err.contains(".toml:12:"), "{err}");
        let ok = load_text(
            "good",
            &format!("{HEAD}[[labels]]\nat_seconds = 1.0\npresent = true\n"),
        )
        .unwrap();
        assert_eq!(ok.labels.len(), 1);
        assert!(ok.clip_path().ends_with("c.mp4"));
    }

    #[test]
    fn a_degenerate_polygon_is_refused_at_its_line() {
        let text = format!("{HEAD}[[labels]]\nat_seconds = 1.0\npresent = true\n")
            .replace("[0.5, 0.9]", "[0.5, 0.1]");
        let err = load_text("flat", &text).unwrap_err().to_string();
        assert!(err.contains(".toml:5: polygon"), "{err}");
    }
}
