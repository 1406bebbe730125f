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
    /// Learned zone states of the clip, trained and scored by the bench.
    #[serde(default)]
    pub states: Vec<StateTruth>,
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

/// A learned zone state scored on a clip: `labels` (a `gridwatch learn` labels file next to the
/// ground truth) trains the zone's classifier on its earliest `train_labels` labels; the rest
/// are the ground truth, scored only after the last training label (held out by time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateTruth {
    pub labels: String,
    /// The catalog scenario the state raises (the labels file's `state`).
    pub scenario: String,
    pub train_labels: usize,
}

/// The episodes of a zone state in labels set at regular times: maximal runs of `present`
/// labels, a run closed by an absence of at least `clear_seconds` (first absent label to the
/// next present one), kept when it lasts at least `dwell_seconds` (first to last present label).
/// The rule needs exactly that much presence and absence to raise and close a case.
pub fn state_episodes(
    labels: &[(f64, bool)],
    scenario: &str,
    zone: &str,
    dwell_seconds: f64,
    clear_seconds: f64,
) -> Vec<Episode> {
    let mut sorted = labels.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut runs: Vec<(f64, f64)> = Vec::new();
    let mut absent_since: Option<f64> = None;
    for &(t, present) in &sorted {
        if !present {
            absent_since.get_or_insert(t);
            continue;
        }
        match (runs.last_mut(), absent_since.take()) {
            (Some(run), None) => run.1 = t,
            (Some(run), Some(a)) if t - a < clear_seconds => run.1 = t,
            _ => runs.push((t, t)),
        }
    }
    runs.into_iter()
        .filter(|(start, end)| end - start >= dwell_seconds)
        .map(|(start, end)| Episode {
            scenario: scenario.into(),
            zone: zone.into(),
            what: format!("{scenario} {start:.1}-{end:.1} s"),
            bbox: None,
            start_seconds: start,
            end_seconds: end,
        })
        .collect()
}

/// What is scored in a held-out window starting at `from_seconds`: the episodes that start in
/// it, and the cases confirmed in it except those that belong to an episode already running
/// when it began (neither right nor wrong: that episode started while the classifier trained).
pub fn held_out(
    episodes: &[Episode],
    cases: &[Case],
    from_seconds: f64,
    tolerance_seconds: f64,
) -> (Vec<Episode>, Vec<Case>) {
    let (scored, running): (Vec<Episode>, Vec<Episode>) = episodes
        .iter()
        .filter(|e| e.end_seconds >= from_seconds)
        .cloned()
        .partition(|e| e.start_seconds >= from_seconds);
    let cases = cases
        .iter()
        .filter(|c| {
            let t = c.episode.confirmed_media_seconds;
            t >= from_seconds
                && !running.iter().any(|e| {
                    e.scenario == c.scenario.id
                        && e.zone == c.zone.id
                        && t <= e.end_seconds + tolerance_seconds
                })
        })
        .cloned()
        .collect();
    (scored, cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(e: &[Episode]) -> Vec<(f64, f64)> {
        e.iter().map(|e| (e.start_seconds, e.end_seconds)).collect()
    }

    #[test]
    fn state_episodes_follow_dwell_and_clear() {
        // present 2-4, absent 5-6 (2 s), present 7-12, absent 13-17, present 18-19 (too short).
        let labels: Vec<(f64, bool)> = (0..20)
            .map(|t| {
                let t = t as f64;
                (
                    t,
                    (2.0..=4.0).contains(&t) || (7.0..=12.0).contains(&t) || t >= 18.0,
                )
            })
            .collect();
        let e = state_episodes(&labels, "s", "z", 2.0, 3.0);
        assert_eq!(
            spans(&e),
            vec![(2.0, 12.0)],
            "a 2 s absence under clear 3 s joins"
        );
        let e = state_episodes(&labels, "s", "z", 2.0, 2.0);
        assert_eq!(spans(&e), vec![(2.0, 4.0), (7.0, 12.0)]);
        let e = state_episodes(&labels, "s", "z", 0.5, 2.0);
        assert_eq!(spans(&e).last(), Some(&(18.0, 19.0)));
    }
}
