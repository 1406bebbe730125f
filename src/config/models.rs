//! The deployment's models: `[[models]]` (or the single `[model]`), their ids, and which of them
//! each camera runs. A zone's `models`, else `[scenarios.models]`, else the first model that
//! provides each kind a scenario needs, decides; a camera runs the union over its zones. The
//! first model a camera runs keeps every kind it finds (what the wall shows); any other keeps
//! only the kinds of the scenarios that chose it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Config;
use crate::area::Camera;
use crate::area::kinds::ObjectKind;
use crate::infer::card::ModelCard;
use crate::infer::kinds::KindSet;
use crate::infer::models::{CameraModels, ModelUse, ZoneScorer};
use crate::scenarios::catalog::Catalog;
use crate::states::{LoadedCard, StateScorer};

/// More models than this in one deployment is a typo (and every worker holds a session of each).
pub const MAX_MODELS: usize = 16;

/// What a camera runs, with what `gridwatch check` should say about its zones.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSelection {
    pub plan: CameraModels,
    /// Scenarios in a zone whose models provide none of the kinds they need.
    pub unserved: Vec<String>,
}

impl Config {
    /// Where model `i` is written: `model` for the single-model form, else `models[i]`.
    pub fn model_field(&self, i: usize) -> String {
        if self.legacy_model {
            "model".into()
        } else {
            format!("models[{i}]")
        }
    }

    /// The models' ids, in the configuration's order.
    pub fn model_ids(&self) -> Vec<Arc<str>> {
        self.models
            .iter()
            .map(|m| Arc::from(m.resolved_id()))
            .collect()
    }

    /// Each model's object kinds (from its card's `[kinds]`), sorted, or why a card is unreadable.
    pub fn models_kinds(&self) -> Result<Vec<Vec<ObjectKind>>, String> {
        self.models
            .iter()
            .map(|m| {
                let card = ModelCard::load(&self.resolve(m.chosen_card()))
                    .map_err(|e| format!("model {}: {e}", m.resolved_id()))?;
                let mut kinds = card.class_kinds.clone();
                kinds.sort_unstable();
                kinds.dedup();
                Ok(kinds)
            })
            .collect()
    }

    /// Every camera's models, given each model's kinds ([`Config::models_kinds`]).
    pub fn camera_models(&self, kinds: &[Vec<ObjectKind>]) -> Vec<CameraSelection> {
        let ids = self.model_ids();
        self.area
            .cameras
            .iter()
            .map(|c| select(c, &self.catalog, &self.scenarios.models, &ids, kinds))
            .collect()
    }

    /// The folder of the learned zone states' classifier cards, if configured.
    pub fn states_dir(&self) -> Option<std::path::PathBuf> {
        self.states.cards_dir.as_ref().map(|d| self.resolve(d))
    }

    /// Each camera's learned zone states: the cards of that camera whose zone has the card's
    /// state among its scenarios; a card for a zone or scenario the configuration lacks is
    /// left out (and reported by [`Config::state_mismatches`]).
    pub fn camera_states(&self, cards: &[LoadedCard]) -> Vec<Vec<Arc<dyn ZoneScorer>>> {
        self.area
            .cameras
            .iter()
            .map(|c| {
                cards
                    .iter()
                    .filter(|l| l.card.camera == c.id)
                    .filter(|l| {
                        c.zones
                            .iter()
                            .any(|z| z.id == l.card.zone && z.scenarios.contains(&l.card.state))
                    })
                    .filter_map(|l| {
                        let entry = self.catalog.entry(&l.card.state)?;
                        let kind = crate::scenarios::state_kind(entry);
                        Some(Arc::new(StateScorer::new(l, kind)) as Arc<dyn ZoneScorer>)
                    })
                    .collect()
            })
            .collect()
    }

    /// Every camera's plan: its models ([`Config::camera_models`]) and its learned zone states
    /// (the cards in `[states] cards_dir`, read now and checked against `cards`, the models'
    /// cards in order), with the cards refused or unused, in words. A state's model runs on
    /// its camera, if only for its features.
    pub fn camera_plans(
        &self,
        kinds: &[Vec<ObjectKind>],
        cards: &[Arc<ModelCard>],
    ) -> (Vec<CameraModels>, Vec<String>) {
        let (loaded, refused) = match self.states_dir() {
            Some(dir) => crate::states::scorer::load_cards(&dir, cards),
            None => Default::default(),
        };
        let mut problems: Vec<String> = refused.iter().map(ToString::to_string).collect();
        problems.extend(self.state_mismatches(&loaded));
        let ids = self.model_ids();
        let plans = self
            .camera_models(kinds)
            .into_iter()
            .zip(self.camera_states(&loaded))
            .map(|(selection, states)| {
                let mut plan = selection.plan;
                for s in &states {
                    if !plan.models.iter().any(|u| u.index == s.model()) {
                        plan.models.push(ModelUse {
                            index: s.model(),
                            id: ids.get(s.model()).cloned().unwrap_or_else(|| "".into()),
                            kinds: KindSet::EMPTY,
                        });
                        plan.models.sort_by_key(|u| u.index);
                    }
                }
                plan.states = states;
                plan
            })
            .collect();
        (plans, problems)
    }

    /// Cards whose camera, zone or scenario the configuration does not have, in words.
    pub fn state_mismatches(&self, cards: &[LoadedCard]) -> Vec<String> {
        cards
            .iter()
            .filter_map(|l| self.state_mismatch(l))
            .collect()
    }

    /// Why a classifier card would not serve its zone as trained, if it would not.
    fn state_mismatch(&self, l: &LoadedCard) -> Option<String> {
        let (card, path) = (&l.card, l.path.display());
        let zone = self
            .area
            .cameras
            .iter()
            .filter(|c| c.id == card.camera)
            .flat_map(|c| c.zones.iter())
            .find(|z| z.id == card.zone && z.scenarios.contains(&card.state));
        let Some(zone) = zone else {
            return Some(format!(
                "classifier card {path} is for camera {} zone {} state `{}`, which no zone of the configuration has: it is not used",
                card.camera, card.zone, card.state
            ));
        };
        let rule = self.catalog.entry(&card.state).map(|e| e.rule);
        if rule == Some(crate::scenarios::catalog::RuleKind::Crowd) {
            return Some(format!(
                "classifier card {path}: `{}` counts persons (rule crowd); a learned state serves zone_count and track_dwell scenarios, so this card is not used",
                card.state
            ));
        }
        // The card pools the polygon it was trained on: a zone drawn again needs new training.
        (zone.polygon != card.polygon).then(|| {
            format!(
                "classifier card {path}: camera {} zone {} was redrawn since the card was trained ({:?} then, {:?} now); it still scores the old outline: label and `gridwatch learn` again",
                card.camera, card.zone, card.polygon, zone.polygon
            )
        })
    }

    /// One form of the section, each card readable, each model's numbers in range, the names.
    pub(super) fn validate_models(&self, err: &mut impl FnMut(String, String)) {
        if self.models.is_empty() {
            err(
                "model".into(),
                "no model configured: add `[[models]]` with a `card` (or `[model]`)".into(),
            );
            return;
        }
        if self.models.len() > MAX_MODELS {
            err(
                "models".into(),
                format!(
                    "{} models configured: at most {MAX_MODELS} (each costs a session per worker)",
                    self.models.len()
                ),
            );
            return;
        }
        if self.legacy_model && self.models.len() > 1 {
            err(
                "models".into(),
                "`[model]` and `[[models]]` together: write every model as `[[models]]`".into(),
            );
            return;
        }
        for (i, m) in self.models.iter().enumerate() {
            let at = self.model_field(i);
            let cards = std::iter::once(("card", &m.card))
                .chain(m.int8_card.as_ref().map(|c| ("int8_card", c)));
            for (field, card) in cards {
                let card_path = self.resolve(card);
                if !card_path.is_file() {
                    err(
                        format!("{at}.{field}"),
                        format!("model card not found: {}", card_path.display()),
                    );
                } else if let Err(e) = ModelCard::load(&card_path) {
                    err(format!("{at}.{field}"), e.to_string());
                }
            }
            if let Some(int8) = &m.int8_card
                && let (Ok(a), Ok(b)) = (
                    ModelCard::load(&self.resolve(&m.card)),
                    ModelCard::load(&self.resolve(int8)),
                )
                && a.class_kinds != b.class_kinds
            {
                err(
                    format!("{at}.int8_card"),
                    "must be the same model quantised: its classes map to other kinds than `card`'s"
                        .into(),
                );
            }
            for (field, msg) in m.validate() {
                err(format!("{at}.{field}"), msg);
            }
        }
        self.validate_model_names(err);
    }

    /// Model ids: unique, and every id a zone or `[scenarios.models]` names is configured.
    fn validate_model_names(&self, err: &mut impl FnMut(String, String)) {
        let ids = self.model_ids();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                let m = &self.models[i];
                let field = if m.id.is_some() { "id" } else { "card" };
                err(
                    format!("{}.{field}", self.model_field(i)),
                    format!("model id `{id}` is used twice (give one of them an `id`)"),
                );
            }
        }
        let known = || ids.iter().map(|i| &**i).collect::<Vec<_>>().join(", ");
        for (i, c) in self.area.cameras.iter().enumerate() {
            for (j, z) in c.zones.iter().enumerate() {
                for (k, m) in z.models.iter().enumerate() {
                    if !ids.iter().any(|id| **id == **m) {
                        err(
                            format!("cameras[{i}].zones[{j}].models[{k}]"),
                            format!("unknown model `{m}` (configured: {})", known()),
                        );
                    }
                }
            }
        }
        for (scenario, models) in &self.scenarios.models {
            if !self.catalog.scenarios.is_empty() && self.catalog.entry(scenario).is_none() {
                err(
                    format!("scenarios.models.{scenario}"),
                    format!("unknown scenario `{scenario}`"),
                );
            }
            for (k, m) in models.iter().enumerate() {
                if !ids.iter().any(|id| **id == **m) {
                    err(
                        format!("scenarios.models.{scenario}[{k}]"),
                        format!("unknown model `{m}` (configured: {})", known()),
                    );
                }
            }
        }
    }
}

/// One camera's models: for each scenario of each zone, the models named for it (zone, then
/// `[scenarios.models]`) or the first model providing each of its kinds.
pub fn select(
    camera: &Camera,
    catalog: &Catalog,
    named: &BTreeMap<String, Vec<String>>,
    ids: &[Arc<str>],
    kinds: &[Vec<ObjectKind>],
) -> CameraSelection {
    let mut masks = vec![KindSet::EMPTY; ids.len()];
    let mut chosen = vec![false; ids.len()];
    let mut unserved = Vec::new();
    let index_of = |id: &str| ids.iter().position(|i| &**i == id);
    for z in &camera.zones {
        for s in &z.scenarios {
            let Some(entry) = catalog.entry(s) else {
                continue;
            };
            // The zone may narrow the scenario's kinds (only cars for parking, say).
            let needed: Vec<ObjectKind> = entry
                .kinds
                .iter()
                .filter(|k| z.kinds.as_ref().is_none_or(|only| only.contains(k)))
                .chain(&entry.companion_kinds)
                .copied()
                .collect();
            let names = Some(&z.models)
                .filter(|m| !m.is_empty())
                .or_else(|| named.get(s));
            let models: Vec<usize> = match names {
                Some(names) => names.iter().filter_map(|n| index_of(n)).collect(),
                None => needed
                    .iter()
                    .filter_map(|k| kinds.iter().position(|m| m.contains(k)))
                    .collect(),
            };
            let mut served = false;
            for m in models {
                chosen[m] = true;
                for k in needed.iter().filter(|k| kinds[m].contains(k)) {
                    masks[m].insert(*k);
                    served = true;
                }
            }
            if !served && names.is_some() {
                unserved.push(format!(
                    "scenario {s} in zone {}: models {} provide none of its kinds",
                    z.id,
                    names.map(|n| n.join(", ")).unwrap_or_default()
                ));
            }
        }
    }
    let plan = plan_of(ids, &chosen, &masks);
    CameraSelection { plan, unserved }
}

/// The chosen models in order; the first keeps every kind. None chosen: the first model.
fn plan_of(ids: &[Arc<str>], chosen: &[bool], masks: &[KindSet]) -> CameraModels {
    let mut uses: Vec<ModelUse> = (0..ids.len())
        .filter(|&m| chosen[m])
        .map(|m| ModelUse {
            index: m,
            id: ids[m].clone(),
            kinds: masks[m],
        })
        .collect();
    if uses.is_empty() && !ids.is_empty() {
        uses.push(ModelUse {
            index: 0,
            id: ids[0].clone(),
            kinds: KindSet::ALL,
        });
    }
    if let Some(first) = uses.first_mut() {
        first.kinds = KindSet::ALL;
    }
    CameraModels::of(uses)
}
