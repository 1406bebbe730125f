//! Training a zone classifier from labelled frames: the labels are ordered by time, the earliest
//! part trains (standardisation, linfa-logistic's L2-regularised logistic regression, the
//! threshold, chosen on out-of-fold probabilities), the latest part is held out and gives precision and recall. A classifier below
//! the [`QualityBar`] is refused with the numbers; too few labels are refused before training.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use time::OffsetDateTime;

use super::StatesError;
use super::card::{ClassifierCard, FeatureSource, HeldOut, LabelCounts, Linear};
use super::classifier::probability;
use super::pool::Pooling;

/// Share of the labels (earliest first) that trains; the rest is held out.
pub const DEFAULT_TRAIN_FRACTION: f64 = 0.7;
/// Held-out precision a classifier must reach.
pub const DEFAULT_MIN_PRECISION: f64 = 0.8;
/// Held-out recall a classifier must reach.
pub const DEFAULT_MIN_RECALL: f64 = 0.6;
/// Labels of each class (present, absent) the training part needs.
pub const DEFAULT_MIN_LABELS_PER_CLASS: usize = 5;
/// Labels of each class the held-out part needs for precision and recall to mean something.
pub const DEFAULT_MIN_HELD_OUT_PER_CLASS: usize = 3;
/// L2 weight of linfa-logistic (its own default is 1.0); few labels, many features: keep it.
pub const DEFAULT_L2_ALPHA: f64 = 1.0;
/// Iterations of linfa-logistic's L-BFGS solver.
pub const SOLVER_MAX_ITERATIONS: u64 = 300;
/// Folds (runs of consecutive training labels) for the out-of-fold probabilities the
/// threshold is chosen on.
pub const THRESHOLD_FOLDS: usize = 5;
/// A feature whose spread over the training part is below this is left unscaled.
const MIN_FEATURE_STD: f64 = 1e-6;

/// The bar a trained classifier must pass on the held-out part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityBar {
    pub min_precision: f64,
    pub min_recall: f64,
    pub min_labels_per_class: usize,
    pub min_held_out_per_class: usize,
}

impl Default for QualityBar {
    fn default() -> Self {
        Self {
            min_precision: DEFAULT_MIN_PRECISION,
            min_recall: DEFAULT_MIN_RECALL,
            min_labels_per_class: DEFAULT_MIN_LABELS_PER_CLASS,
            min_held_out_per_class: DEFAULT_MIN_HELD_OUT_PER_CLASS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    pub train_fraction: f64,
    /// At most this many (earliest) labels train, whatever the fraction.
    pub max_train_labels: Option<usize>,
    pub l2_alpha: f64,
    pub bar: QualityBar,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            train_fraction: DEFAULT_TRAIN_FRACTION,
            max_train_labels: None,
            l2_alpha: DEFAULT_L2_ALPHA,
            bar: QualityBar::default(),
        }
    }
}

/// One labelled frame: when, whether the state holds, and its pooled features.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_seconds: f64,
    pub present: bool,
    pub features: Vec<f32>,
}

/// What the classifier is for; becomes the card's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub camera: String,
    pub zone: String,
    pub state: String,
    pub polygon: Vec<[f64; 2]>,
    pub pooling: Pooling,
    pub features: FeatureSource,
}

/// Confusion counts at the card's threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_positive: usize,
    pub false_positive: usize,
    pub false_negative: usize,
    pub true_negative: usize,
}

impl Confusion {
    /// Precision; 0 when nothing was called present.
    pub fn precision(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_positive)
    }

    /// Recall; 0 when nothing was present.
    pub fn recall(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_negative)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A trained classifier with its evaluation.
#[derive(Debug, Clone)]
pub struct Trained {
    pub card: ClassifierCard,
    pub train: Confusion,
    pub held_out: Confusion,
    /// Time of the last training label; held-out labels come after it.
    pub split_at_seconds: f64,
}

/// [`fit`], then the quality bar: below it, an error with the numbers.
pub fn train(
    identity: Identity,
    samples: &[Sample],
    options: &TrainOptions,
) -> Result<Trained, StatesError> {
    let trained = fit(identity, samples, options)?;
    let (bar, h) = (&options.bar, &trained.card.held_out);
    if h.precision < bar.min_precision || h.recall < bar.min_recall {
        return Err(StatesError::BelowBar {
            state: trained.card.state.clone(),
            precision: h.precision,
            recall: h.recall,
            min_precision: bar.min_precision,
            min_recall: bar.min_recall,
            held_out_positive: trained.card.labels.held_out_positive,
            held_out_negative: trained.card.labels.held_out_negative,
        });
    }
    Ok(trained)
}

/// Trains on the earliest part of `samples` (by time) and evaluates on the rest, without the
/// precision/recall bar (label counts are still checked). For comparing poolings.
pub fn fit(
    identity: Identity,
    samples: &[Sample],
    options: &TrainOptions,
) -> Result<Trained, StatesError> {
    let mut ordered: Vec<&Sample> = samples.iter().collect();
    ordered.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
    let (train_part, held_part) = ordered.split_at(split_index(ordered.len(), options));
    let labels = count_labels(train_part, held_part);
    check_counts(&identity.state, &labels, &options.bar)?;
    let dims = identity.pooling.dims(identity.features.channels);
    check_dims(&identity.state, samples, dims)?;
    let linear = fit_linear(&identity.state, train_part, dims, options.l2_alpha)?;
    let train = confusion(&linear, train_part);
    let held_out = confusion(&linear, held_part);
    let split_at_seconds = train_part.last().map_or(0.0, |s| s.at_seconds);
    let card = ClassifierCard {
        camera: identity.camera,
        zone: identity.zone,
        state: identity.state,
        polygon: identity.polygon,
        trained_at: OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        features: identity.features,
        pooling: identity.pooling,
        linear,
        labels,
        held_out: HeldOut {
            precision: held_out.precision(),
            recall: held_out.recall(),
        },
    };
    Ok(Trained {
        card,
        train,
        held_out,
        split_at_seconds,
    })
}

/// Every sample has the pooling's number of features.
fn check_dims(state: &str, samples: &[Sample], dims: usize) -> Result<(), StatesError> {
    match samples.iter().find(|s| s.features.len() != dims) {
        Some(bad) => Err(training_error(
            state,
            format!(
                "a sample at {} s has {} features, expected {dims}",
                bad.at_seconds,
                bad.features.len()
            ),
        )),
        None => Ok(()),
    }
}

/// Standardisation, the logistic model and its threshold, all from the training part.
fn fit_linear(
    state: &str,
    train_part: &[&Sample],
    dims: usize,
    alpha: f64,
) -> Result<Linear, StatesError> {
    let (mean, std) = standardisation(train_part, dims);
    let (weights, bias) = logistic(state, train_part, &mean, &std, alpha)?;
    let mut linear = Linear {
        mean: mean.iter().map(|&v| v as f32).collect(),
        std: std.iter().map(|&v| v as f32).collect(),
        weights,
        bias,
        threshold: 0.5,
    };
    let scored = out_of_fold(state, train_part, &linear, alpha)?;
    linear.threshold = choose_threshold(&scored);
    Ok(linear)
}

/// How many of the time-ordered labels train.
fn split_index(n: usize, options: &TrainOptions) -> usize {
    let by_fraction = (n as f64 * options.train_fraction.clamp(0.0, 1.0)).round() as usize;
    by_fraction
        .min(options.max_train_labels.unwrap_or(usize::MAX))
        .min(n)
}

fn count_labels(train: &[&Sample], held: &[&Sample]) -> LabelCounts {
    let positives = |part: &[&Sample]| part.iter().filter(|s| s.present).count();
    LabelCounts {
        train_positive: positives(train),
        train_negative: train.len() - positives(train),
        held_out_positive: positives(held),
        held_out_negative: held.len() - positives(held),
    }
}

/// Refuses, naming each shortfall, a split with too few labels of a class on either side.
fn check_counts(state: &str, labels: &LabelCounts, bar: &QualityBar) -> Result<(), StatesError> {
    let (min, min_held) = (bar.min_labels_per_class, bar.min_held_out_per_class);
    let missing: Vec<String> = [
        (
            labels.train_positive,
            min,
            "present labels in the training part",
        ),
        (
            labels.train_negative,
            min,
            "absent labels in the training part",
        ),
        (
            labels.held_out_positive,
            min_held,
            "present labels in the held-out part",
        ),
        (
            labels.held_out_negative,
            min_held,
            "absent labels in the held-out part",
        ),
    ]
    .iter()
    .filter(|(have, need, _)| have < need)
    .map(|(have, need, what)| format!("{} more {what} (have {have})", need - have))
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StatesError::TooFewLabels {
            state: state.to_owned(),
            missing: missing.join(", "),
            min,
            min_held_out: min_held,
        })
    }
}

/// Per-feature mean and standard deviation over the training part (std floored).
fn standardisation(train: &[&Sample], dims: usize) -> (Vec<f64>, Vec<f64>) {
    let n = train.len().max(1) as f64;
    let mut mean = vec![0.0; dims];
    for s in train {
        mean.iter_mut()
            .zip(&s.features)
            .for_each(|(m, &x)| *m += f64::from(x) / n);
    }
    let mut var = vec![0.0; dims];
    for s in train {
        for ((v, &x), m) in var.iter_mut().zip(&s.features).zip(&mean) {
            *v += (f64::from(x) - m).powi(2) / n;
        }
    }
    let std = var
        .into_iter()
        .map(|v| v.sqrt().max(MIN_FEATURE_STD))
        .collect();
    (mean, std)
}

/// linfa-logistic on the standardised training part; (weights, bias) for "present".
fn logistic(
    state: &str,
    train: &[&Sample],
    mean: &[f64],
    std: &[f64],
    alpha: f64,
) -> Result<(Vec<f32>, f32), StatesError> {
    let dims = mean.len();
    let records = Array2::from_shape_fn((train.len(), dims), |(i, j)| {
        (f64::from(train[i].features[j]) - mean[j]) / std[j]
    });
    let targets: Array1<bool> = train.iter().map(|s| s.present).collect();
    let dataset = Dataset::new(records, targets);
    let model = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(SOLVER_MAX_ITERATIONS)
        .fit(&dataset)
        .map_err(|e| training_error(state, e.to_string()))?;
    // linfa-logistic's probability is that of its "positive" class, the more frequent label
    // (first seen on a tie): turn the model round when that is "absent".
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    let weights = model.params().iter().map(|&w| (sign * w) as f32).collect();
    Ok((weights, (sign * model.intercept()) as f32))
}

fn training_error(state: &str, message: String) -> StatesError {
    StatesError::Training {
        state: state.to_owned(),
        message,
    }
}

/// Each training sample's probability from a model that did not see it: the training part cut
/// into `THRESHOLD_FOLDS` runs of consecutive labels, each scored by a model fitted on the
/// others (standardised like the final one). A fold whose complement lacks a class keeps the
/// final model's probability. In-sample probabilities of a separable training part say nothing
/// about where the threshold should be; these do.
fn out_of_fold(
    state: &str,
    train: &[&Sample],
    linear: &Linear,
    alpha: f64,
) -> Result<Vec<(f32, bool)>, StatesError> {
    let mean: Vec<f64> = linear.mean.iter().map(|&v| f64::from(v)).collect();
    let std: Vec<f64> = linear.std.iter().map(|&v| f64::from(v)).collect();
    let n = train.len();
    let mut scored: Vec<(f32, bool)> = train
        .iter()
        .map(|s| (probability(linear, &s.features), s.present))
        .collect();
    for fold in 0..THRESHOLD_FOLDS {
        let range = fold * n / THRESHOLD_FOLDS..(fold + 1) * n / THRESHOLD_FOLDS;
        let rest: Vec<&Sample> = train
            .iter()
            .enumerate()
            .filter(|(i, _)| !range.contains(i))
            .map(|(_, s)| *s)
            .collect();
        if range.is_empty() || !rest.iter().any(|s| s.present) || rest.iter().all(|s| s.present) {
            continue;
        }
        let (weights, bias) = logistic(state, &rest, &mean, &std, alpha)?;
        let model = Linear {
            weights,
            bias,
            ..linear.clone()
        };
        for i in range {
            scored[i].0 = probability(&model, &train[i].features);
        }
    }
    Ok(scored)
}

/// The threshold with the best F1 over (probability, present) pairs: midpoints between
/// consecutive probabilities and 0.5; on ties, the one nearest 0.5.
fn choose_threshold(scored: &[(f32, bool)]) -> f32 {
    let mut probs: Vec<f32> = scored.iter().map(|s| s.0).collect();
    probs.sort_by(f32::total_cmp);
    let candidates = probs.windows(2).map(|w| (w[0] + w[1]) / 2.0).chain([0.5]);
    let f1 = |t: f32| {
        let tp = scored.iter().filter(|(p, y)| *p >= t && *y).count();
        let called = scored.iter().filter(|(p, _)| *p >= t).count();
        let present = scored.iter().filter(|(_, y)| *y).count();
        let (p, r) = (ratio(tp, called), ratio(tp, present));
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    };
    candidates
        .map(|t| (f1(t), t))
        .fold((f64::MIN, 0.5_f32), |best, (score, t)| {
            let nearer = (t - 0.5).abs() < (best.1 - 0.5).abs();
            if score > best.0 || (score == best.0 && nearer) {
                (score, t)
            } else {
                best
            }
        })
        .1
}

fn confusion(linear: &Linear, part: &[&Sample]) -> Confusion {
    let mut c = Confusion::default();
    for s in part {
        let called = probability(linear, &s.features) >= linear.threshold;
        match (called, s.present) {
            (true, true) => c.true_positive += 1,
            (true, false) => c.false_positive += 1,
            (false, true) => c.false_negative += 1,
            (false, false) => c.true_negative += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn identity(channels: usize) -> Identity {
        Identity {
            camera: "cam".into(),
            zone: "plaza".into(),
            state: "crowd_gathering".into(),
            polygon: vec![[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]],
            pooling: Pooling::ZoneMean,
            features: FeatureSource {
                model: "m".into(),
                sha256: "ab".into(),
                output: "f".into(),
                grid_width: 2,
                grid_height: 2,
                channels,
            },
        }
    }

    /// `n` samples a second apart; feature 0 carries the label when `informative`.
    fn samples(n: usize, informative: bool, seed: u64) -> Vec<Sample> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|i| {
                let present = rng.bool();
                let signal = if informative && present { 2.0 } else { 0.0 };
                let features = (0..4)
                    .map(|k| rng.f32() + if k == 0 { signal } else { 0.0 })
                    .collect();
                Sample {
                    at_seconds: i as f64,
                    present,
                    features,
                }
            })
            .collect()
    }

    #[test]
    fn a_separable_state_trains_and_passes_the_bar() {
        let trained = train(identity(4), &samples(60, true, 7), &TrainOptions::default()).unwrap();
        assert_eq!(trained.card.held_out.precision, 1.0);
        assert_eq!(trained.card.held_out.recall, 1.0);
        let l = trained.card.labels;
        assert_eq!(
            l.train_positive + l.train_negative,
            42,
            "70 % of 60, the earliest"
        );
        assert!(trained.split_at_seconds < 42.0);
        assert!(
            trained.card.linear.weights[0] > 0.0,
            "present has the positive weight"
        );
    }

    #[test]
    fn labels_unrelated_to_the_features_are_refused_with_the_numbers() {
        let err = train(
            identity(4),
            &samples(80, false, 11),
            &TrainOptions::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StatesError::BelowBar { .. }), "{text}");
        assert!(
            text.contains("precision") && text.contains("bar 0.80"),
            "{text}"
        );
    }

    #[test]
    fn too_few_labels_say_which_class_is_short() {
        let mut few = samples(20, true, 3);
        few.iter_mut().for_each(|s| s.present = false);
        few[0].present = true;
        let err = train(identity(4), &few, &TrainOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 more present labels in the training part (have 1)"),
            "{err}"
        );
        assert!(
            err.contains("3 more present labels in the held-out part (have 0)"),
            "{err}"
        );
    }
}
