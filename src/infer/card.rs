//! Model cards: a TOML file beside each ONNX model stating its file, checksum, input tensor,
//! output names and decoder, labels with their object kinds, license and provenance. Loading
//! verifies the checksum, the labels against the `[kinds]` table and the decoder's parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::kinds::{ObjectKind, class_kinds};
use super::ssd;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub id: String,
    /// ONNX file, relative to the card's folder.
    pub file: PathBuf,
    pub sha256: String,
    /// Label file (one per line), relative to the card's folder.
    pub labels: PathBuf,
    pub license: String,
    pub provenance: String,
    pub input: InputSpec,
    pub decoder: DecoderSpec,
    /// An intermediate feature map the ONNX file also outputs (zone states pool it); optional.
    #[serde(default)]
    pub features: Option<FeatureSpec>,
    /// Label → object kind (`"dining table" = "table"`); labels not named here are `other`.
    pub kinds: BTreeMap<String, ObjectKind>,
    #[serde(skip)]
    pub dir: PathBuf,
    /// The card file itself (filled by [`ModelCard::load`]).
    #[serde(skip)]
    pub path: PathBuf,
    /// The kind of each class id, from `labels` and `kinds` (filled by [`ModelCard::load`]).
    #[serde(skip)]
    pub class_kinds: Vec<ObjectKind>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// [batch, channels, height, width] for NCHW; [batch, height, width, channels] for NHWC.
    pub shape: [usize; 4],
    pub layout: Layout,
    pub colour_order: ColourOrder,
    pub resize: Resize,
    /// Per channel, in `colour_order`: value = (pixel - mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// `[features]`: an extra output of the model holding an intermediate feature map, read from the
/// same run as the detections. Its grid is the input size divided by `stride_pixels`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The ONNX output name.
    pub output: String,
    /// [batch, channels, height, width] for NCHW; [batch, height, width, channels] for NHWC.
    pub layout: Layout,
    /// Input pixels per feature cell along each side.
    pub stride_pixels: usize,
    pub channels: usize,
}

/// Most channels a feature map may have: bounds the buffer a card can ask for.
pub const MAX_FEATURE_CHANNELS: usize = 4096;

impl FeatureSpec {
    /// The output's shape as the ONNX file must have it, for a model input of (width, height).
    pub fn shape(&self, (width, height): (usize, usize)) -> [usize; 4] {
        let (w, h) = (
            width / self.stride_pixels.max(1),
            height / self.stride_pixels.max(1),
        );
        match self.layout {
            Layout::Nchw => [1, self.channels, h, w],
            Layout::Nhwc => [1, h, w, self.channels],
        }
    }

    /// The map's (width, height) in cells, for a model input of (width, height).
    pub fn grid(&self, input: (usize, usize)) -> (usize, usize) {
        let shape = self.shape(input);
        match self.layout {
            Layout::Nchw => (shape[3], shape[2]),
            Layout::Nhwc => (shape[2], shape[1]),
        }
    }

    /// The grid is whole cells of the input, the channel count non-zero and bounded.
    fn validate(&self, (width, height): (usize, usize)) -> Result<(), String> {
        let s = self.stride_pixels;
        if s == 0 || width % s != 0 || height % s != 0 {
            return Err(format!(
                "features.stride_pixels = {s} must divide the input size {width}x{height}"
            ));
        }
        if self.channels == 0 || self.channels > MAX_FEATURE_CHANNELS {
            return Err(format!(
                "features.channels = {} must be within 1..={MAX_FEATURE_CHANNELS}",
                self.channels
            ));
        }
        if self.output.trim().is_empty() {
            return Err("features.output must name an ONNX output".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColourOrder {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Plain resize to the input size, no letterbox.
    Stretch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecoderSpec {
    Nanodet {
        strides: Vec<u32>,
        /// Bins per side minus one (GFL distribution).
        reg_max: usize,
        score_outputs: Vec<String>,
        box_outputs: Vec<String>,
    },
    /// MediaPipe/TensorFlow SSD: box encodings relative to generated anchors, class logits with
    /// class 0 = background.
    MediapipeSsd {
        boxes_output: String,
        scores_output: String,
        num_anchors: usize,
        /// Divisors of the (y, x, h, w) encodings.
        box_scale: [f32; 4],
        anchors: SsdAnchors,
    },
    /// Ultralytics YOLOv5 export: [1, N, 5 + C] rows of cx, cy, w, h (input pixels), objectness,
    /// class scores (sigmoid applied); score = objectness × class score.
    Yolov5 { output: String },
    /// Ultralytics YOLOv8/YOLO11 export: [1, 4 + C, N] (cx, cy, w, h in input pixels, then class
    /// scores; no objectness).
    Yolov8 { output: String },
    /// YOLOX export: [1, N, 5 + C] like YOLOv5; unless `decoded_in_graph`, boxes are raw grid
    /// offsets: cx = (x + col) × stride, w = exp(w) × stride, cells per stride row-major.
    Yolox {
        output: String,
        strides: Vec<u32>,
        decoded_in_graph: bool,
    },
}

/// MediaPipe's SSD anchor scheme (`SsdAnchorsCalculatorOptions`), one layer per stride.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsdAnchors {
    pub min_scale: f32,
    pub max_scale: f32,
    pub strides: Vec<u32>,
    pub aspect_ratios: Vec<f32>,
    /// The first layer has 3 anchors only: (ratio 1, scale 0.1), (2, s0), (0.5, s0).
    pub reduce_boxes_in_lowest_layer: bool,
    /// Aspect ratio of the extra anchor at scale sqrt(s_i × s_i+1); 0 = none.
    pub interpolated_scale_aspect_ratio: f32,
    /// Anchor centre within its cell, (x, y).
    #[serde(default = "half_offset")]
    pub offset: [f32; 2],
}

fn half_offset() -> [f32; 2] {
    [0.5, 0.5]
}

impl DecoderSpec {
    pub fn output_names(&self) -> Vec<&str> {
        match self {
            DecoderSpec::Nanodet {
                score_outputs,
                box_outputs,
                ..
            } => score_outputs
                .iter()
                .chain(box_outputs)
                .map(String::as_str)
                .collect(),
            DecoderSpec::MediapipeSsd {
                boxes_output,
                scores_output,
                ..
            } => {
                vec![boxes_output.as_str(), scores_output.as_str()]
            }
            DecoderSpec::Yolov5 { output }
            | DecoderSpec::Yolov8 { output }
            | DecoderSpec::Yolox { output, .. } => vec![output.as_str()],
        }
    }

    /// The `kind` name in the card.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DecoderSpec::Nanodet { .. } => "nanodet",
            DecoderSpec::MediapipeSsd { .. } => "mediapipe_ssd",
            DecoderSpec::Yolov5 { .. } => "yolov5",
            DecoderSpec::Yolov8 { .. } => "yolov8",
            DecoderSpec::Yolox { .. } => "yolox",
        }
    }

    /// Checks what the decoder needs of its parameters, given the input (width, height).
    fn validate(&self, input: (usize, usize)) -> Result<(), String> {
        let strides_ok = |strides: &[u32]| {
            if strides.is_empty() || strides.contains(&0) {
                Err("decoder.strides must be non-empty and non-zero".to_owned())
            } else {
                Ok(())
            }
        };
        match self {
            DecoderSpec::Nanodet {
                strides,
                reg_max,
                score_outputs,
                box_outputs,
            } => {
                strides_ok(strides)?;
                if strides.len() > super::nanodet::MAX_LEVELS {
                    return Err(format!(
                        "decoder.strides: at most {} levels",
                        super::nanodet::MAX_LEVELS
                    ));
                }
                if score_outputs.len() != strides.len() || box_outputs.len() != strides.len() {
                    return Err(format!(
                        "decoder: {} strides but {} score_outputs and {} box_outputs",
                        strides.len(),
                        score_outputs.len(),
                        box_outputs.len()
                    ));
                }
                if *reg_max == 0 || *reg_max > 64 {
                    return Err("decoder.reg_max must be within 1..=64".into());
                }
            }
            DecoderSpec::MediapipeSsd {
                num_anchors,
                box_scale,
                anchors,
                ..
            } => {
                if box_scale.iter().any(|s| !s.is_finite() || *s == 0.0) {
                    return Err("decoder.box_scale must be finite and non-zero".into());
                }
                strides_ok(&anchors.strides)?;
                let generated = ssd::generate_anchors(anchors, input.0, input.1)?.len();
                if generated != *num_anchors {
                    return Err(format!(
                        "decoder.anchors generate {generated} anchors, decoder.num_anchors says {num_anchors}"
                    ));
                }
            }
            DecoderSpec::Yolov5 { .. } | DecoderSpec::Yolov8 { .. } => {}
            DecoderSpec::Yolox { strides, .. } => strides_ok(strides)?,
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("model card {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model card {path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("model card {card}: file {file} not found")]
    MissingFile { card: PathBuf, file: PathBuf },
    #[error(
        "model card {card}: sha256 of {file} is {actual}, the card says {expected}; the model file is not the one the card describes"
    )]
    Checksum {
        card: PathBuf,
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model card {card}: {message}")]
    Invalid { card: PathBuf, message: String },
}

impl ModelCard {
    /// Reads the card, checks that its files exist and the model's sha256 matches.
    pub fn load(path: &Path) -> Result<ModelCard, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut card: ModelCard = toml::from_str(&text).map_err(|e| CardError::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1),
            message: e.message().to_owned(),
        })?;
        card.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        card.path = path.to_owned();
        for file in [card.model_path(), card.labels_path()] {
            if !file.is_file() {
                return Err(CardError::MissingFile {
                    card: path.to_owned(),
                    file,
                });
            }
        }
        let bytes = std::fs::read(card.model_path()).map_err(|source| CardError::Read {
            path: card.model_path(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(card.sha256.trim()) {
            return Err(CardError::Checksum {
                card: path.to_owned(),
                file: card.model_path(),
                expected: card.sha256.clone(),
                actual,
            });
        }
        if card.input.shape[0] != 1 {
            return Err(CardError::Invalid {
                card: path.to_owned(),
                message: "only batch size 1 is supported".into(),
            });
        }
        if card.input.std.contains(&0.0) {
            return Err(CardError::Invalid {
                card: path.to_owned(),
                message: "input.std must not contain 0".into(),
            });
        }
        let invalid = |message: String| CardError::Invalid {
            card: path.to_owned(),
            message,
        };
        if card.input.shape.contains(&0) {
            return Err(invalid("input.shape must not contain 0".into()));
        }
        card.decoder.validate(card.input_size()).map_err(invalid)?;
        if let Some(features) = &card.features {
            features.validate(card.input_size()).map_err(invalid)?;
        }
        let labels = card.load_labels()?;
        if labels.is_empty() {
            return Err(invalid(format!(
                "label file {} is empty",
                card.labels_path().display()
            )));
        }
        card.class_kinds = class_kinds(&labels, &card.kinds).map_err(|unknown| {
            invalid(format!(
                "[kinds] names labels that {} does not have: {}",
                card.labels.display(),
                unknown.join(", ")
            ))
        })?;
        Ok(card)
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    pub fn labels_path(&self) -> PathBuf {
        self.dir.join(&self.labels)
    }

    /// Model input (width, height) in pixels.
    pub fn input_size(&self) -> (usize, usize) {
        let s = self.input.shape;
        match self.input.layout {
            Layout::Nchw => (s[3], s[2]),
            Layout::Nhwc => (s[2], s[1]),
        }
    }

    pub fn load_labels(&self) -> Result<Vec<Arc<str>>, CardError> {
        let text =
            std::fs::read_to_string(self.labels_path()).map_err(|source| CardError::Read {
                path: self.labels_path(),
                source,
            })?;
        Ok(text.lines().map(|l| Arc::from(l.trim())).collect())
    }
}
