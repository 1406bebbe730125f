//! Learned zone states at run time: the classifier cards of a deployment (a folder, read at
//! start and on SIGHUP) and, for each card, the scorer the inference worker calls after the
//! model whose feature map it reads. A state that holds becomes a detection: the zone's box, the
//! state's object kind (the scenario's first kind), the label `state:<scenario>` and a
//! confidence of 0.5 at the classifier's threshold rising to 1 at certainty. From there the
//! scenario rules treat it as any object: dwell, clear, cooldown, one case per episode.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{ClassifierCard, StatesError, ZoneClassifier};
use crate::area::geometry;
use crate::area::kinds::{ObjectKind, state_label};
use crate::infer::card::ModelCard;
use crate::infer::models::ZoneScorer;
use crate::infer::{Detection, FeatureMap};

/// The class id of zone-state detections (no model class has it).
pub const STATE_CLASS_ID: u16 = u16::MAX;

/// The `[states]` section: where the deployment's classifier cards are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatesSettings {
    /// A folder of classifier cards (`gridwatch learn --out`); absent: no learned states.
    pub cards_dir: Option<PathBuf>,
}

/// A card that loaded, with the index of the model whose features it reads.
#[derive(Debug, Clone)]
pub struct LoadedCard {
    pub path: PathBuf,
    pub model: usize,
    pub card: ClassifierCard,
}

/// Every `*.toml` card in `dir` (sorted by name), each checked against the deployment's models
/// with a `[features]` table (`models` in the deployment's order); cards that fail come back
/// with their error, the others load. A missing folder is no cards.
pub fn load_cards(dir: &Path, models: &[Arc<ModelCard>]) -> (Vec<LoadedCard>, Vec<StatesError>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (Vec::new(), Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let (mut loaded, mut errors) = (Vec::new(), Vec::new());
    for path in paths {
        match load_one(&path, models) {
            Ok(l) => loaded.push(l),
            Err(e) => errors.push(e),
        }
    }
    (loaded, errors)
}

fn load_one(path: &Path, models: &[Arc<ModelCard>]) -> Result<LoadedCard, StatesError> {
    let mut last = None;
    for (i, m) in models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.features.is_some())
    {
        match ClassifierCard::load(path, m) {
            Ok(card) => {
                return Ok(LoadedCard {
                    path: path.to_owned(),
                    model: i,
                    card,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StatesError::Invalid {
        card: path.to_owned(),
        message: "no configured model has a [features] table to score it with".into(),
    }))
}

/// A classifier card as the worker's [`ZoneScorer`].
#[derive(Debug)]
pub struct StateScorer {
    model: usize,
    /// Only one worker analyses a camera at a time: the lock is never contended.
    classifier: Mutex<ZoneClassifier>,
    threshold: f32,
    kind: ObjectKind,
    label: Arc<str>,
    bbox: [f32; 4],
}

impl StateScorer {
    /// `kind`: the object kind its detections carry (the scenario's first kind).
    pub fn new(loaded: &LoadedCard, kind: ObjectKind) -> Self {
        let card = &loaded.card;
        Self {
            model: loaded.model,
            threshold: card.linear.threshold,
            kind,
            label: state_label(&card.state).into(),
            bbox: anchored_box(&card.polygon),
            classifier: Mutex::new(ZoneClassifier::new(card.clone())),
        }
    }
}

impl ZoneScorer for StateScorer {
    fn model(&self) -> usize {
        self.model
    }

    fn score_into(&self, map: &FeatureMap<'_>, out: &mut Vec<Detection>) {
        let mut classifier = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        match classifier.score(map) {
            Ok(p) if p >= self.threshold => out.push(Detection {
                class_id: STATE_CLASS_ID,
                label: self.label.clone(),
                kind: self.kind,
                score: confidence(p, self.threshold),
                bbox: self.bbox,
            }),
            Ok(_) => {}
            // The card was checked against this model at load: only a model whose output
            // changed shape gets here, and it would fail every frame.
            Err(e) => tracing::debug!(state = %self.label, error = %e, "zone state not scored"),
        }
    }
}

/// 0.5 at the classifier's threshold, 1 at certainty: what the rules' score thresholds and the
/// review tiers compare.
pub fn confidence(p: f32, threshold: f32) -> f32 {
    let span = (1.0 - threshold).max(f32::EPSILON);
    (0.5 + 0.5 * (p - threshold) / span).clamp(0.0, 1.0)
}

/// The zone's bounding box, its bottom edge raised until its bottom centre lies inside the
/// polygon, so the zone's own test (by default where a box stands) places the state in it.
pub fn anchored_box(polygon: &[[f64; 2]]) -> [f32; 4] {
    let (mut x1, mut y1, mut x2, mut y2) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for &[x, y] in polygon {
        (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
    }
    let cx = (x1 + x2) / 2.0;
    const STEPS: usize = 200;
    let bottom = (0..=STEPS)
        .map(|i| y2 - (y2 - y1) * i as f64 / STEPS as f64)
        .find(|&y| geometry::contains(polygon, [cx, y]))
        .unwrap_or(y2);
    [x1 as f32, y1 as f32, x2 as f32, bottom as f32]
}

/// (camera, zone, state) of every card in `dir`, read without the model check (which
/// [`load_cards`] does): what the scenario stage and `check` need to know.
pub fn card_identities(dir: &Path) -> Vec<(String, String, String)> {
    #[derive(Deserialize)]
    struct Identity {
        camera: String,
        zone: String,
        state: String,
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, String)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| toml::from_str::<Identity>(&t).ok())
        .map(|i| (i.camera, i.zone, i.state))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_stands_inside_its_zone_and_confidence_is_half_at_the_threshold() {
        let slanted = [[0.0, 0.31], [0.42, 0.30], [0.42, 0.53], [0.0, 0.47]];
        let b = anchored_box(&slanted);
        let foot = [f64::from(b[0] + b[2]) / 2.0, f64::from(b[3])];
        assert!(geometry::contains(&slanted, foot), "{b:?}");
        assert!(
            b[3] > 0.45,
            "the box reaches down to the zone's bottom: {b:?}"
        );
        assert!((confidence(0.3, 0.3) - 0.5).abs() < 1e-6);
        assert!((confidence(1.0, 0.3) - 1.0).abs() < 1e-6);
        assert!(confidence(0.9, 0.3) > confidence(0.5, 0.3));
    }
}
