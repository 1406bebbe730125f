//! `gridwatch detect`: the configured models on still images and clips, the way a user first
//! tries a model (and the way a held-out check looks at frames): detections as JSON, one object
//! per analysed frame, and an annotated JPEG of each. The frame reaches the models exactly as in
//! the pipeline: stretched to the largest model input (a clip through the file camera's own
//! GStreamer template; a still with OpenCV's bilinear resize), area-resized for a smaller model,
//! then each card's normalisation, decoder and thresholds, and the merge across models. Every
//! model runs, keeping every kind; with `--camera`, the models that camera runs, its zones drawn,
//! and each detection says which of them its foot point falls in.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use serde::Serialize;

use crate::area::Camera;
use crate::area::geometry;
use crate::cases::evidence;
use crate::config::Config;
use crate::infer::Detection;
use crate::infer::models::{CameraModels, ModelSet};
use crate::ingest::Frame;
use crate::ingest::replay::FileFrames;

/// File extensions read as still images; anything else is opened as a clip.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// The width of the annotated JPEGs.
pub const ANNOTATED_MAX_WIDTH_PIXELS: u32 = 1280;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("no camera `{0}` in the configuration")]
    UnknownCamera(String),
    #[error(transparent)]
    Model(#[from] crate::run::RunError),
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to look at and where the annotated frames go.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub inputs: Vec<PathBuf>,
    /// Annotated JPEGs are written here (created); none without it.
    pub out_dir: Option<PathBuf>,
    /// Frames per second analysed from a clip.
    pub fps: f64,
    /// At most this many frames per clip.
    pub max_frames: usize,
    /// Whose zones to draw and test (a camera id of the configuration).
    pub camera: Option<String>,
}

/// One analysed frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameResult {
    pub input: String,
    /// 1-based index among the analysed frames of the input (1 for a still).
    pub frame: u64,
    /// Presentation time in the clip; absent for a still.
    pub pts_seconds: Option<f64>,
    pub model: String,
    pub inference_ms: f64,
    pub detections: Vec<Found>,
    /// The annotated JPEG, when `--out` was given.
    pub annotated: Option<PathBuf>,
}

/// One detection, its box normalised to the frame (x1, y1, x2, y2 in 0..1).
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The id of the model that found it.
    pub model: String,
    pub label: String,
    pub kind: &'static str,
    pub class_id: u16,
    pub score: f32,
    pub bbox: [f32; 4],
    /// The zones of `--camera` that hold the detection's foot point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// Runs the configured models over every input; `emit` gets each frame's result as it is made.
/// Returns the number of frames analysed.
pub fn run(
    config: &Config,
    options: &DetectOptions,
    mut emit: impl FnMut(&FrameResult),
) -> Result<u64, DetectError> {
    let camera = match &options.camera {
        Some(id) => Some(
            config
                .area
                .cameras
                .iter()
                .find(|c| &c.id == id)
                .ok_or_else(|| DetectError::UnknownCamera(id.clone()))?,
        ),
        None => None,
    };
    if let Some(dir) = &options.out_dir {
        std::fs::create_dir_all(dir).map_err(|source| DetectError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    let detectors = crate::run::detectors(config, 1)?;
    let (w, h) = detectors.iter().fold((0, 0), |(w, h), d| {
        let (dw, dh) = d.card().input_size();
        (w.max(dw), h.max(dh))
    });
    let ids = config.model_ids();
    let plan = match camera {
        Some(c) => camera_plan(config, c, &detectors)?,
        None => CameraModels::all(&ids),
    };
    let mut models = Models {
        set: ModelSet::new(detectors, config.inference.cross_model_iou),
        plan,
        ids,
    };
    let mut found = Vec::new();
    let mut analysed = 0;
    for input in &options.inputs {
        let mut look = |n: u64, pts: Option<f64>, frame: &Frame| -> Result<(), DetectError> {
            let result = look_at(
                &mut models,
                input,
                n,
                pts,
                frame,
                camera,
                options,
                &mut found,
            )?;
            analysed += 1;
            emit(&result);
            Ok(())
        };
        if is_image(input) {
            look(1, None, &still(input, (w, h))?)?;
        } else {
            if !input.is_file() {
                return Err(DetectError::Input {
                    path: input.clone(),
                    message: "no such file".into(),
                });
            }
            let mut frames = FileFrames::open(input, options.fps, w, h)?;
            let mut n = 0;
            for (pts, frame) in frames.by_ref().take(options.max_frames) {
                n += 1;
                look(n, Some(pts), &frame)?;
            }
            if n == 0 {
                let why = frames.error().unwrap_or("not a video GStreamer can read?");
                return Err(DetectError::Input {
                    path: input.clone(),
                    message: format!("no frame could be decoded ({why})"),
                });
            }
        }
    }
    Ok(analysed)
}

/// What `--camera` runs in the pipeline: its models and its learned zone states.
fn camera_plan(
    config: &Config,
    camera: &Camera,
    detectors: &[crate::infer::Detector],
) -> Result<CameraModels, DetectError> {
    let kinds = config
        .models_kinds()
        .map_err(|message| DetectError::Input {
            path: config.source_name.clone().into(),
            message,
        })?;
    let cards: Vec<_> = detectors
        .iter()
        .map(|d| std::sync::Arc::new(d.card().clone()))
        .collect();
    let (plans, problems) = config.camera_plans(&kinds, &cards);
    for p in problems {
        eprintln!("warning: {p}");
    }
    let i = config.area.cameras.iter().position(|x| x.id == camera.id);
    Ok(i.and_then(|i| plans.into_iter().nth(i)).unwrap_or_default())
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A still image stretched to the model's input size, keeping its display aspect.
fn still(path: &Path, (width, height): (usize, usize)) -> Result<Frame, DetectError> {
    let bad = |message: String| DetectError::Input {
        path: path.to_owned(),
        message,
    };
    let rgb = image::open(path).map_err(|e| bad(e.to_string()))?.to_rgb8();
    let (sw, sh) = rgb.dimensions();
    let src = Mat::new_rows_cols_with_data(sh as i32, (sw * 3) as i32, rgb.as_raw())
        .and_then(|m| m.reshape(3, sh as i32).map(|r| r.clone_pointee()))
        .map_err(|e| bad(e.to_string()))?;
    let mut scaled = Mat::default();
    imgproc::resize(
        &src,
        &mut scaled,
        Size::new(width as i32, height as i32),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )
    .map_err(|e| bad(e.to_string()))?;
    let bytes = scaled
        .data_bytes()
        .map_err(|e| bad(e.to_string()))?
        .to_vec();
    let name = path.display().to_string();
    let mut frame = Frame::from_rgb(
        0,
        name.as_str().into(),
        1,
        0.0,
        width as u32,
        height as u32,
        bytes,
    )
    .ok_or_else(|| bad("GStreamer could not be initialised".into()))?;
    frame.display_aspect = f64::from(sw) / f64::from(sh.max(1));
    Ok(frame)
}

/// The models `detect` runs on each frame.
struct Models {
    set: ModelSet,
    plan: CameraModels,
    ids: Vec<std::sync::Arc<str>>,
}

#[allow(clippy::too_many_arguments)]
fn look_at(
    models: &mut Models,
    input: &Path,
    n: u64,
    pts: Option<f64>,
    frame: &Frame,
    camera: Option<&Camera>,
    options: &DetectOptions,
    found: &mut Vec<Detection>,
) -> Result<FrameResult, DetectError> {
    let times = models.set.analyse(frame, &models.plan, found)?;
    let zones: Vec<(&str, &[[f64; 2]])> = camera
        .map(|c| {
            c.zones
                .iter()
                .map(|z| (z.id.as_str(), z.polygon.as_slice()))
                .collect()
        })
        .unwrap_or_default();
    let annotated = match &options.out_dir {
        Some(dir) => {
            let polygons: Vec<&[[f64; 2]]> = zones.iter().map(|(_, p)| *p).collect();
            let jpeg =
                evidence::annotate(frame, &polygons, found, ANNOTATED_MAX_WIDTH_PIXELS)?.jpeg;
            let stem = input
                .file_stem()
                .map_or_else(|| "frame".into(), |s| s.to_string_lossy());
            let path = dir.join(format!("{stem}-{n:06}.jpg"));
            std::fs::write(&path, jpeg).map_err(|source| DetectError::Write {
                path: path.clone(),
                source,
            })?;
            Some(path)
        }
        None => None,
    };
    Ok(FrameResult {
        input: input.display().to_string(),
        frame: n,
        pts_seconds: pts,
        model: models.plan.label(),
        inference_ms: (times.preprocess_seconds
            + times.inference_seconds
            + times.postprocess_seconds)
            * 1e3,
        detections: found
            .iter()
            .zip(models.set.origins())
            .map(|(d, &m)| Found {
                model: models
                    .ids
                    .get(usize::from(m))
                    .map_or("zone-state", |i| i)
                    .to_owned(),
                label: d.label.to_string(),
                kind: d.kind.as_str(),
                class_id: d.class_id,
                score: d.score,
                bbox: d.bbox,
                zones: zones
                    .iter()
                    .filter(|(_, p)| geometry::contains(p, d.foot_point()))
                    .map(|(id, _)| (*id).to_owned())
                    .collect(),
            })
            .collect(),
        annotated,
    })
}
