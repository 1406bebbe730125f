//! Zone states: whether a *state of a place* holds (water on the road, garbage piled, laundry
//! hung, a group on the plaza), learned from labelled frames rather than counted from objects.
//! Sits between [`crate::infer`] and the scenario rules: the detector's card exposes an
//! intermediate feature map ([`crate::infer::FeatureMap`], same run as the detections), each
//! zone pools it over its polygon ([`pool`]), and a small logistic-regression classifier per
//! (camera, zone, state) scores the pooled vector ([`ZoneClassifier`]). Classifiers are trained
//! with linfa-logistic ([`train`]) and kept as TOML cards ([`card`]) bound to the sha256 of the
//! model file whose features they were trained on.
//!
//! A worker holds a `Vec<ZoneClassifier>` per camera and, after each `Detector::detect`, calls
//! `classifier.score(&map)` with `detector.features()`: one pass over the zone's cells and one
//! dot product, no allocation.

pub mod card;
pub mod classifier;
pub mod pool;
pub mod scorer;
pub mod train;

use std::path::PathBuf;

pub use card::ClassifierCard;
pub use classifier::ZoneClassifier;
pub use pool::{Pooling, ZoneMask};
pub use scorer::{LoadedCard, StateScorer, StatesSettings};
pub use train::{QualityBar, Sample, TrainOptions, Trained};

#[derive(Debug, thiserror::Error)]
pub enum StatesError {
    #[error("classifier card {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("classifier card {path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "classifier card {card} was trained on features of a model file with sha256 {card_sha256}, but the loaded model {model_file} has sha256 {model_sha256}; retrain it (`gridwatch learn`) for this model"
    )]
    ModelMismatch {
        card: PathBuf,
        card_sha256: String,
        model_file: PathBuf,
        model_sha256: String,
    },
    #[error("classifier card {card}: {message}")]
    Invalid { card: PathBuf, message: String },
    #[error(
        "feature map is {got_w}x{got_h}x{got_c}, the classifier was built for {want_w}x{want_h}x{want_c}"
    )]
    MapSize {
        got_w: usize,
        got_h: usize,
        got_c: usize,
        want_w: usize,
        want_h: usize,
        want_c: usize,
    },
    #[error(
        "too few labels to train `{state}`: {missing}; each class needs at least {min} in the training part and {min_held_out} in the held-out part"
    )]
    TooFewLabels {
        state: String,
        missing: String,
        min: usize,
        min_held_out: usize,
    },
    #[error(
        "classifier for `{state}` refused: held-out precision {precision:.3} (bar {min_precision:.2}), recall {recall:.3} (bar {min_recall:.2}) on {held_out_positive} present / {held_out_negative} absent labels"
    )]
    BelowBar {
        state: String,
        precision: f64,
        recall: f64,
        min_precision: f64,
        min_recall: f64,
        held_out_positive: usize,
        held_out_negative: usize,
    },
    #[error("training `{state}` failed: {message}")]
    Training { state: String, message: String },
}
