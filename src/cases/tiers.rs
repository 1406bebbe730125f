//! Confidence tiers and suppressions: what the case stage asks before it stores a case. The case
//! stage decides the tier itself from its [`TierSettings`] (the scores of `[review]`); the review
//! console only writes suppressions into the shared list, so data flows one way.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Deserialize;

/// At or above this confidence a case is dispatched without a reviewer (automatic discovery).
pub const DEFAULT_AUTO_DISPATCH_SCORE: f32 = 0.8;
/// At or above this (and below the auto-dispatch score) a case waits in the review queue;
/// below it, the event is only counted.
pub const DEFAULT_REVIEW_SCORE: f32 = 0.4;

/// A scenario's own scores (`[review.scenarios.<id>]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierOverride {
    #[serde(default)]
    pub auto_dispatch_score: Option<f32>,
    #[serde(default)]
    pub review_score: Option<f32>,
}

/// The scores that split events into tiers, globally and per scenario id.
#[derive(Debug, Clone)]
pub struct TierSettings {
    pub auto_dispatch_score: f32,
    pub review_score: f32,
    pub scenarios: BTreeMap<String, TierOverride>,
}

impl Default for TierSettings {
    fn default() -> Self {
        Self {
            auto_dispatch_score: DEFAULT_AUTO_DISPATCH_SCORE,
            review_score: DEFAULT_REVIEW_SCORE,
            scenarios: BTreeMap::new(),
        }
    }
}

impl TierSettings {
    /// (auto_dispatch_score, review_score) for a scenario.
    pub fn scores(&self, scenario: &str) -> (f32, f32) {
        let o = self.scenarios.get(scenario);
        (
            o.and_then(|o| o.auto_dispatch_score)
                .unwrap_or(self.auto_dispatch_score),
            o.and_then(|o| o.review_score).unwrap_or(self.review_score),
        )
    }
}

/// What becomes of an event of a given confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// At or above `auto_dispatch_score`: a case, dispatched unattended (automatic discovery).
    Dispatch,
    /// Between `review_score` and `auto_dispatch_score`: a case held in the review queue.
    Review,
    /// Below `review_score`: counted (`gridwatch_review_below_threshold_total`), not stored.
    CountOnly,
}

/// The tiers per scenario; without a `[review]` section every case is dispatched.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    settings: Option<TierSettings>,
}

impl Tiers {
    pub fn new(settings: Option<TierSettings>) -> Self {
        Self { settings }
    }

    pub fn decide(&self, scenario: &str, confidence: f32) -> Tier {
        let Some(s) = &self.settings else {
            return Tier::Dispatch;
        };
        let (auto, review) = s.scores(scenario);
        if confidence >= auto {
            Tier::Dispatch
        } else if confidence >= review {
            Tier::Review
        } else {
            Tier::CountOnly
        }
    }
}

/// Boxes overlapping at least this much (IoU) are one object at one place: a fixed bench seen
/// again, not a new problem.
pub const OBJECT_MATCH_IOU: f32 = 0.5;

/// One "do not raise this again for a while" from a reviewer's rejection: a whole camera + zone
/// + scenario, or (learned from repeated rejections) one object there.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    pub camera: String,
    pub zone: String,
    pub scenario: String,
    pub until: SystemTime,
    /// The object's box (normalised x1, y1, x2, y2); `None`: the whole zone.
    pub object: Option<[f32; 4]>,
}

/// The active suppressions, shared between the console (writer) and the case stage (reader).
#[derive(Debug, Clone, Default)]
pub struct Suppressions(Arc<RwLock<Vec<Suppression>>>);

impl Suppressions {
    pub fn add(&self, s: Suppression) {
        let mut v = self.0.write().unwrap_or_else(|p| p.into_inner());
        v.retain(|o| o.until > SystemTime::now());
        v.push(s);
    }

    /// Whether an event of `scenario` in `camera`'s `zone` whose objects have `boxes` is
    /// suppressed at `now`: the zone is, or every object matches a suppressed object there.
    pub fn active(
        &self,
        camera: &str,
        zone: &str,
        scenario: &str,
        boxes: &[[f32; 4]],
        now: SystemTime,
    ) -> bool {
        let all = self.0.read().unwrap_or_else(|p| p.into_inner());
        let here = || {
            all.iter().filter(|s| {
                s.camera == camera && s.zone == zone && s.scenario == scenario && s.until > now
            })
        };
        if here().any(|s| s.object.is_none()) {
            return true;
        }
        !boxes.is_empty()
            && boxes.iter().all(|b| {
                here()
                    .filter_map(|s| s.object.as_ref())
                    .any(|o| crate::track::iou(o, b) >= OBJECT_MATCH_IOU)
            })
    }

    pub fn list(&self) -> Vec<Suppression> {
        let now = SystemTime::now();
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.until > now)
            .cloned()
            .collect()
    }
}

/// What the case stage decides with, besides each event.
#[derive(Debug, Clone, Default)]
pub struct Triage {
    pub tiers: Tiers,
    /// Written by the review console, read here.
    pub suppressions: Suppressions,
    /// Cluster mode: a case is committed only while this node owns its camera's group.
    pub fence: Option<crate::cluster::Ownership>,
    /// Which dispatch targets each case goes to; a reload swaps it whole.
    pub routing: Arc<arc_swap::ArcSwap<super::routing::Routing>>,
    pub snapshot_max_width_pixels: u32,
    /// 103060: limits, the moment the clock starts, reminders and escalation.
    pub deadlines: super::settings::DeadlineSettings,
    /// Whether ended episodes are reported to the platform (自行消除).
    pub report_self_resolved: bool,
    /// Where overdue cases are escalated (督办).
    pub escalation_station: Option<super::platform::Station>,
    /// Targets whose platform takes case updates (it reports status back); the others get none.
    pub update_targets: Vec<String>,
    /// The cameras' encoded streams, for evidence at full resolution (absent: the analysed
    /// frame is the evidence).
    pub live: Option<crate::live::LiveHubs>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tiers_follow_the_scores_and_their_overrides() {
        assert_eq!(Tiers::default().decide("x", 0.0), Tier::Dispatch);
        let mut s = TierSettings {
            auto_dispatch_score: 0.8,
            review_score: 0.5,
            ..TierSettings::default()
        };
        s.scenarios.insert(
            "crowd_gathering".into(),
            TierOverride {
                auto_dispatch_score: Some(0.95),
                review_score: None,
            },
        );
        let t = Tiers::new(Some(s));
        assert_eq!(t.decide("other", 0.85), Tier::Dispatch);
        assert_eq!(t.decide("crowd_gathering", 0.85), Tier::Review);
        assert_eq!(t.decide("crowd_gathering", 0.5), Tier::Review);
        assert_eq!(t.decide("crowd_gathering", 0.49), Tier::CountOnly);
    }

    #[test]
    fn suppressions_match_camera_zone_and_scenario_until_they_expire() {
        let s = Suppressions::default();
        let now = SystemTime::now();
        s.add(Suppression {
            camera: "c".into(),
            zone: "z".into(),
            scenario: "s".into(),
            until: now + Duration::from_secs(60),
            object: None,
        });
        let b = [[0.1, 0.1, 0.2, 0.2]];
        assert!(s.active("c", "z", "s", &b, now));
        assert!(!s.active("c", "other", "s", &b, now));
        assert!(!s.active("c", "z", "other", &b, now));
        assert!(!s.active("c", "z", "s", &b, now + Duration::from_secs(61)));
    }

    #[test]
    fn an_object_suppression_covers_that_object_only() {
        let s = Suppressions::default();
        let now = SystemTime::now();
        s.add(Suppression {
            camera: "c".into(),
            zone: "z".into(),
            scenario: "s".into(),
            until: now + Duration::from_secs(60),
            object: Some([0.10, 0.10, 0.30, 0.30]),
        });
        let bench = [0.11, 0.10, 0.31, 0.30];
        let table = [0.60, 0.60, 0.80, 0.80];
        assert!(
            s.active("c", "z", "s", &[bench], now),
            "the same object, moved a little"
        );
        assert!(
            !s.active("c", "z", "s", &[table], now),
            "another object in the zone"
        );
        assert!(
            !s.active("c", "z", "s", &[bench, table], now),
            "not every object is suppressed"
        );
        assert!(
            !s.active("c", "z", "s", &[], now),
            "no object: nothing to match"
        );
        assert!(!s.active("c", "z", "s", &[bench], now + Duration::from_secs(61)));
    }
}
