//! The `[scenarios]` section: crowd gathering's thresholds, the classical fire/smoke baseline,
//! and an optional catalog file replacing the shipped one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fire::FireBaselineSettings;

pub const DEFAULT_CROWD_MIN_PERSONS: usize = 6;
pub const DEFAULT_CROWD_MIN_DURATION_SECONDS: f64 = 5.0;
pub const DEFAULT_CROWD_CLEAR_SECONDS: f64 = 3.0;
pub const DEFAULT_CROWD_SCORE_THRESHOLD: f32 = 0.4;
/// Durations of a rule longer than a week are typos (and `inf` panics in `Duration`).
pub const MAX_RULE_SECONDS: f64 = 7.0 * 86_400.0;
/// Object counts a rule waits for (persons of a crowd, objects in a zone): more than any
/// detector reports in one frame is a typo.
pub const MAX_RULE_COUNT: usize = 1000;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScenarioSettings {
    pub crowd_gathering: CrowdSettings,
    /// The classical fire/smoke detector that serves straw burning without a fire model.
    pub fire_baseline: FireBaselineSettings,
    /// A scenario catalog replacing the shipped `config/scenarios.toml`.
    pub catalog: Option<PathBuf>,
    /// Scenario id → the model ids (`[[models]] id`) that serve it, where the default (the
    /// first model providing each kind the scenario needs) is not wanted.
    pub models: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrowdSettings {
    pub min_persons: usize,
    pub min_duration_seconds: f64,
    /// The episode ends after the count stays below `min_persons` this long.
    pub clear_seconds: f64,
    pub score_threshold: f32,
}

impl CrowdSettings {
    /// Range checks, also applied to overrides and phase shorthands: (field, message) pairs.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=MAX_RULE_COUNT).contains(&self.min_persons) {
            out.push((
                "min_persons",
                format!(
                    "must be a count in [1, {MAX_RULE_COUNT}], got {}",
                    self.min_persons
                ),
            ));
        }
        for (field, v) in [
            ("min_duration_seconds", self.min_duration_seconds),
            ("clear_seconds", self.clear_seconds),
        ] {
            if !(0.0..=MAX_RULE_SECONDS).contains(&v) {
                out.push((
                    field,
                    format!("must be a number of seconds in [0, {MAX_RULE_SECONDS}], got {v}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            out.push((
                "score_threshold",
                format!("must be a score in [0, 1], got {}", self.score_threshold),
            ));
        }
        out
    }
}

impl Default for CrowdSettings {
    fn default() -> Self {
        Self {
            min_persons: DEFAULT_CROWD_MIN_PERSONS,
            min_duration_seconds: DEFAULT_CROWD_MIN_DURATION_SECONDS,
            clear_seconds: DEFAULT_CROWD_CLEAR_SECONDS,
            score_threshold: DEFAULT_CROWD_SCORE_THRESHOLD,
        }
    }
}
