//! Episode precision and recall against ground truth annotated by eye
//! (`sample-streams/ground-truth.toml`) and the independently computed crowd episodes
//! (`sample-streams/*.crowd-ground-truth.toml`): shared by `gridwatch-bench run` and the accuracy
//! tests, so both score cases the same way.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use gridwatch::cases::Case;
use gridwatch::track::iou;

/// The crowd ground truth is computed, not annotated: detections near the threshold differ a
/// little between the Python reference and the pipeline, so its episodes end a few seconds later.
pub const CROWD_TOLERANCE_SECONDS: f64 = 4.0;

#[derive(Debug, thiserror::Error)]
pub enum AccuracyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, AccuracyError> {
    let err = |message: String| AccuracyError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// `ground-truth.toml`: see the header of that file for the meaning of every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroundTruth {
    pub catalog: String,
    pub match_iou: f32,
    pub tolerance_seconds: f64,
    pub clips: Vec<Clip>,
}

impl GroundTruth {
    pub fn load(path: &Path) -> Result<Self, AccuracyError> {
        read_toml(path)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clip {
    pub clip: String,
    pub camera: String,
    pub analysis_fps: f64,
    pub zones: Vec<Zone>,
    pub episodes: Vec<Episode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub id: String,
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
    pub scenarios: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Episode {
    pub scenario: String,
    pub zone: String,
    pub what: String,
    /// Where the object stands; `None` for episodes of a whole zone (crowds), matched by time.
    pub bbox: Option<[f32; 4]>,
    pub start_seconds: f64,
    pub end_seconds: f64,
}

/// `<clip>.crowd-ground-truth.toml`, written by `scripts/crowd_ground_truth.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct CrowdGroundTruth {
    pub zone: Vec<[f64; 2]>,
    pub min_persons: usize,
    pub min_duration_seconds: f64,
    pub clear_seconds: f64,
    pub score_threshold: f32,
    pub episodes: Vec<CrowdEpisode>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CrowdEpisode {
    pub start_seconds: f64,
    pub end_seconds: f64,
}

impl CrowdGroundTruth {
    pub fn load(path: &Path) -> Result<Self, AccuracyError> {
        read_toml(path)
    }

    /// The crowd episodes as whole-zone episodes of `zone`, with the crowd tolerance folded into
    /// their end (the scoring adds the clip's own tolerance on top).
    pub fn episodes_in(&self, zone: &str) -> Vec<Episode> {
        self.episodes
            .iter()
            .map(|e| Episode {
                scenario: "crowd_gathering".into(),
                zone: zone.into(),
                what: format!("crowd {:.1}-{:.1} s", e.start_seconds, e.end_seconds),
                bbox: None,
                start_seconds: e.start_seconds,
                end_seconds: e.end_seconds + CROWD_TOLERANCE_SECONDS,
            })
            .collect()
    }
}

/// Counts per scenario: (cases, cases matching an episode, episodes, episodes found).
pub type Tally = BTreeMap<String, (usize, usize, usize, usize)>;

/// Matches cases to episodes (each at most once: a second case for one episode is false) and
/// adds the counts to `tally`. A case matches when scenario and zone agree, it was confirmed
/// within [start, end + tolerance], and (for episodes with a box) one of its objects overlaps
/// the box by `match_iou`. Returns one line per case and per missed episode, for people.
pub fn score(
    episodes: &[Episode],
    clip_name: &str,
    match_iou: f32,
    tolerance_seconds: f64,
    cases: &[Case],
    tally: &mut Tally,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut found = vec![false; episodes.len()];
    for e in episodes {
        tally.entry(e.scenario.clone()).or_default().2 += 1;
    }
    for case in cases {
        let t = case.episode.confirmed_media_seconds;
        let hit = episodes.iter().enumerate().position(|(i, e)| {
            !found[i]
                && e.scenario == case.scenario.id
                && e.zone == case.zone.id
                && (e.start_seconds..=e.end_seconds + tolerance_seconds).contains(&t)
                && e.bbox
                    .is_none_or(|b| case.objects.iter().any(|o| iou(&o.bbox, &b) >= match_iou))
        });
        let entry = tally.entry(case.scenario.id.clone()).or_default();
        entry.0 += 1;
        match hit {
            Some(i) => {
                found[i] = true;
                entry.1 += 1;
                entry.3 += 1;
                lines.push(format!(
                    "{clip_name}: {} {} at {t:.1} s matches `{}`",
                    case.scenario.id, case.zone.id, episodes[i].what
                ));
            }
            None => {
                let boxes: Vec<[f32; 4]> = case.objects.iter().map(|o| o.bbox).collect();
                lines.push(format!(
                    "{clip_name}: {} {} at {t:.1} s {boxes:?}: false positive",
                    case.scenario.id, case.zone.id
                ));
            }
        }
    }
    for (e, f) in episodes.iter().zip(&found) {
        if !*f {
            lines.push(format!("{clip_name}: missed `{}` ({})", e.what, e.scenario));
        }
    }
    lines
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioAccuracy {
    pub scenario: String,
    pub episodes: usize,
    pub found: usize,
    pub missed: usize,
    /// Cases matching no episode, or a second case for one.
    pub false_cases: usize,
    pub cases: usize,
    /// Matched cases / cases (1 when there were no cases).
    pub precision: f64,
    /// Episodes found / episodes (1 when there were none).
    pub recall: f64,
}

pub fn summarize(tally: &Tally) -> Vec<ScenarioAccuracy> {
    tally
        .iter()
        .map(
            |(scenario, &(cases, right, episodes, found))| ScenarioAccuracy {
                scenario: scenario.clone(),
                episodes,
                found,
                missed: episodes - found,
                false_cases: cases - right,
                cases,
                precision: if cases == 0 {
                    1.0
                } else {
                    right as f64 / cases as f64
                },
                recall: if episodes == 0 {
                    1.0
                } else {
                    found as f64 / episodes as f64
                },
            },
        )
        .collect()
}
