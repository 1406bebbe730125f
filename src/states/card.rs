//! Classifier cards: one TOML file per (camera, zone, state) holding everything needed to score
//! a frame (zone polygon, pooling, standardisation, weights, threshold) and to judge the
//! classifier (label counts, held-out precision and recall, when it was trained), bound to the
//! sha256 of the model file whose features it was trained on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StatesError;
use super::pool::Pooling;
use crate::infer::card::ModelCard;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierCard {
    pub camera: String,
    pub zone: String,
    /// The scenario id the state stands for (`crowd_gathering`, `waterlogging`, ...).
    pub state: String,
    /// The zone polygon the features were pooled over, normalised 0..1 (x, y).
    pub polygon: Vec<[f64; 2]>,
    #[serde(with = "time::serde::rfc3339")]
    pub trained_at: OffsetDateTime,
    pub features: FeatureSource,
    pub pooling: Pooling,
    pub linear: Linear,
    pub labels: LabelCounts,
    pub held_out: HeldOut,
}

/// The model output the classifier reads, and the map's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSource {
    /// The model card's id.
    pub model: String,
    /// sha256 of the ONNX file the features came from.
    pub sha256: String,
    /// The ONNX output name.
    pub output: String,
    pub grid_width: usize,
    pub grid_height: usize,
    pub channels: usize,
}

/// The linear model on standardised features: p = sigmoid(Σ wᵢ (xᵢ − meanᵢ) / stdᵢ + bias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// The state is present when p ≥ threshold (chosen on the training part).
    pub threshold: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCounts {
    pub train_positive: usize,
    pub train_negative: usize,
    pub held_out_positive: usize,
    pub held_out_negative: usize,
}

/// Quality on the held-out (latest) part of the labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOut {
    pub precision: f64,
    pub recall: f64,
}

impl ClassifierCard {
    /// Reads a card and checks it against the loaded model: same file (sha256), and the card's
    /// feature output and map size are the model card's `[features]`.
    pub fn load(path: &Path, model: &ModelCard) -> Result<Self, StatesError> {
        let text = std::fs::read_to_string(path).map_err(|source| StatesError::Io {
            path: path.to_owned(),
            source,
        })?;
        let card: ClassifierCard = toml::from_str(&text).map_err(|e| StatesError::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1),
            message: e.message().to_owned(),
        })?;
        card.check_model(path, model)?;
        card.validate().map_err(|message| StatesError::Invalid {
            card: path.to_owned(),
            message,
        })?;
        Ok(card)
    }

    /// Writes the card as `<dir>/<camera>.<zone>.<state>.toml`; returns that path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, StatesError> {
        let path = dir.join(self.file_name());
        let io = |source| StatesError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = toml::to_string(self).map_err(|e| StatesError::Invalid {
            card: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(io)?;
        Ok(path)
    }

    pub fn file_name(&self) -> String {
        format!("{}.{}.{}.toml", self.camera, self.zone, self.state)
    }

    fn check_model(&self, path: &Path, model: &ModelCard) -> Result<(), StatesError> {
        if !self
            .features
            .sha256
            .eq_ignore_ascii_case(model.sha256.trim())
        {
            return Err(StatesError::ModelMismatch {
                card: path.to_owned(),
                card_sha256: self.features.sha256.clone(),
                model_file: model.model_path(),
                model_sha256: model.sha256.trim().to_owned(),
            });
        }
        let invalid = |message: String| StatesError::Invalid {
            card: path.to_owned(),
            message,
        };
        let Some(spec) = &model.features else {
            return Err(invalid(format!(
                "model card {} has no [features] table",
                model.path.display()
            )));
        };
        let grid = spec.grid(model.input_size());
        let f = &self.features;
        if f.output != spec.output
            || (f.grid_width, f.grid_height) != grid
            || f.channels != spec.channels
        {
            return Err(invalid(format!(
                "trained on `{}` {}x{}x{}, the model card's [features] is `{}` {}x{}x{}",
                f.output,
                f.grid_width,
                f.grid_height,
                f.channels,
                spec.output,
                grid.0,
                grid.1,
                spec.channels
            )));
        }
        Ok(())
    }

    /// Lengths agree with the pooling, values are finite, std is positive, the polygon is valid.
    pub fn validate(&self) -> Result<(), String> {
        crate::area::geometry::validate_polygon(&self.polygon)
            .map_err(|e| format!("polygon: {e}"))?;
        let dims = self.pooling.dims(self.features.channels);
        let l = &self.linear;
        for (name, v) in [("mean", &l.mean), ("std", &l.std), ("weights", &l.weights)] {
            if v.len() != dims {
                return Err(format!(
                    "linear.{name} has {} values, pooling {} of {} channels needs {dims}",
                    v.len(),
                    self.pooling.name(),
                    self.features.channels
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("linear.{name} has a value that is not finite"));
            }
        }
        if l.std.iter().any(|s| *s <= 0.0) {
            return Err("linear.std must be positive".into());
        }
        if !l.bias.is_finite() || !(0.0..=1.0).contains(&l.threshold) {
            return Err("linear.bias must be finite and linear.threshold within 0..=1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::train::{Sample, TrainOptions, fit};
    use super::*;

    fn nanodet() -> ModelCard {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        ModelCard::load(&dir.join("models/nanodet-g-416-coco.toml")).unwrap()
    }

    fn trained_card(model: &ModelCard) -> ClassifierCard {
        let spec = model.features.clone().unwrap();
        let identity = super::super::train::Identity {
            camera: "cam".into(),
            zone: "plaza".into(),
            state: "crowd_gathering".into(),
            polygon: vec![[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]],
            pooling: Pooling::ZoneMean,
            features: FeatureSource {
                model: model.id.clone(),
                sha256: model.sha256.clone(),
                output: spec.output,
                grid_width: 26,
                grid_height: 26,
                channels: spec.channels,
            },
        };
        let samples: Vec<Sample> = (0..30)
            .map(|i| Sample {
                at_seconds: f64::from(i),
                present: i % 3 == 0,
                features: (0..128)
                    .map(|k| ((i * 7 + k) % 11) as f32 + if i % 3 == 0 { 5.0 } else { 0.0 })
                    .collect(),
            })
            .collect();
        fit(identity, &samples, &TrainOptions::default())
            .unwrap()
            .card
    }

    #[test]
    fn a_card_round_trips_through_toml() {
        let model = nanodet();
        let card = trained_card(&model);
        let dir =
            std::env::temp_dir().join(format!("gridwatch-states-card-{}", std::process::id()));
        let path = card.save(&dir).unwrap();
        assert!(path.ends_with("cam.plaza.crowd_gathering.toml"));
        let back = ClassifierCard::load(&path, &model).unwrap();
        assert_eq!(back, card);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_card_for_another_model_file_is_refused_naming_both() {
        let model = nanodet();
        let mut card = trained_card(&model);
        card.features.sha256 = "00ff".into();
        let dir = std::env::temp_dir().join(format!("gridwatch-states-sha-{}", std::process::id()));
        let path = card.save(&dir).unwrap();
        let err = ClassifierCard::load(&path, &model).unwrap_err().to_string();
        assert!(err.contains("00ff") && err.contains(&model.sha256), "{err}");
        assert!(err.contains("nanodet-g-416_coco-features.onnx"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
