//! Model cards: a TOML file beside each ONNX model stating its file, checksum, input tensor,
//! output names and decoder, labels, license and provenance. Loading verifies the checksum.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

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
    #[serde(skip)]
    pub dir: PathBuf,
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
    MediapipeSsd {
        boxes_output: String,
        scores_output: String,
        num_anchors: usize,
        box_scale: [f32; 4],
    },
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
        }
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
