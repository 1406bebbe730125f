//! Crowd gathering (人群聚集): at least `min_persons` persons standing in a zone for at least
//! `min_duration_seconds` makes one event per episode; the episode ends only after the count
//! stays below the threshold for `clear_seconds`, so a crowd flickering around the threshold
//! does not raise a new case each time.

use super::settings::CrowdSettings;
use crate::infer::Detection;
use crate::infer::kinds::ObjectKind;

use crate::area::geometry::ZoneShape;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// The count reached the threshold at `since`; it was last at or above it at `last_above`.
    Building {
        since: f64,
        last_above: f64,
    },
    /// The event fired; the episode lasts until the count stays low for `clear_seconds`.
    Fired {
        last_above: f64,
    },
}

/// The state of one zone of one camera.
#[derive(Debug, Clone)]
pub struct CrowdRule {
    settings: CrowdSettings,
    phase: Phase,
    /// Stream time the current episode started, for the case's "first seen".
    episode_start: f64,
    /// Episodes fired so far; the fired episode that ended since the last `take_ended`.
    fired: u64,
    just_ended: Option<u64>,
}

/// The rule fired on this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CrowdFiring {
    /// The episode's key (the rule's count of episodes fired).
    pub episode: u64,
    pub episode_start_seconds: f64,
    pub count: usize,
}

impl CrowdRule {
    pub fn new(settings: CrowdSettings) -> Self {
        Self {
            settings,
            phase: Phase::Idle,
            episode_start: 0.0,
            fired: 0,
            just_ended: None,
        }
    }

    /// The fired episode that ended since the last call (its key).
    pub fn take_ended(&mut self) -> Option<u64> {
        self.just_ended.take()
    }

    /// Whether `count` persons are a crowd (what a re-check asks, whatever the duration).
    pub fn holds(&self, count: usize) -> bool {
        count >= self.settings.min_persons
    }

    /// The phase in force may change the thresholds; an episode in progress keeps its state.
    pub fn set_settings(&mut self, settings: CrowdSettings) {
        self.settings = settings;
    }

    /// Persons in the zone (by its anchor: normally where their feet stand), by the rule's own score threshold.
    pub fn persons_in<'a>(
        &'a self,
        zone: &'a ZoneShape,
        objects: &'a [Detection],
    ) -> impl Iterator<Item = &'a Detection> + 'a {
        objects.iter().filter(move |d| {
            d.kind == ObjectKind::Person
                && !crate::area::kinds::is_state_label(&d.label)
                && d.score >= self.settings.score_threshold
                && zone.covers(&d.bbox)
        })
    }

    /// Feeds one analysed frame (stream time `t`, persons counted in the zone).
    pub fn observe(&mut self, t: f64, count: usize) -> Option<CrowdFiring> {
        let s = &self.settings;
        let above = count >= s.min_persons;
        match self.phase {
            Phase::Idle if above => {
                self.phase = Phase::Building {
                    since: t,
                    last_above: t,
                };
                self.episode_start = t;
                if s.min_duration_seconds <= 0.0 {
                    return self.fire(t, count);
                }
            }
            Phase::Idle => {}
            Phase::Building { since, .. } if above => {
                if t - since >= s.min_duration_seconds {
                    return self.fire(t, count);
                }
                self.phase = Phase::Building {
                    since,
                    last_above: t,
                };
            }
            Phase::Building { last_above, .. } => {
                if t - last_above >= s.clear_seconds {
                    self.phase = Phase::Idle;
                }
            }
            Phase::Fired { .. } if above => self.phase = Phase::Fired { last_above: t },
            Phase::Fired { last_above } => {
                if t - last_above >= s.clear_seconds {
                    self.phase = Phase::Idle;
                    self.just_ended = Some(self.fired);
                }
            }
        }
        None
    }

    fn fire(&mut self, t: f64, count: usize) -> Option<CrowdFiring> {
        self.phase = Phase::Fired { last_above: t };
        self.fired += 1;
        Some(CrowdFiring {
            episode: self.fired,
            episode_start_seconds: self.episode_start,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> CrowdRule {
        CrowdRule::new(CrowdSettings {
            min_persons: 3,
            min_duration_seconds: 2.0,
            clear_seconds: 1.5,
            score_threshold: 0.4,
        })
    }

    fn feed(r: &mut CrowdRule, counts: &[usize]) -> Vec<f64> {
        // Two frames per second.
        counts
            .iter()
            .enumerate()
            .filter_map(|(i, &c)| r.observe(i as f64 * 0.5, c).map(|_| i as f64 * 0.5))
            .collect()
    }

    #[test]
    fn one_event_per_episode_even_when_the_count_flickers() {
        let mut r = rule();
        let fired = feed(&mut r, &[0, 3, 3, 4, 2, 3, 5, 3, 2, 3, 4, 3, 3, 3]);
        assert_eq!(fired, vec![2.5]);
    }

    #[test]
    fn a_new_episode_after_the_zone_clears() {
        let mut r = rule();
        let fired = feed(&mut r, &[3, 3, 3, 3, 3, 0, 0, 0, 0, 3, 3, 3, 3, 3]);
        assert_eq!(fired, vec![2.0, 6.5]);
    }

    #[test]
    fn too_short_a_gathering_is_no_event() {
        let mut r = rule();
        assert!(feed(&mut r, &[3, 3, 3, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn a_learned_states_detection_is_not_one_more_person() {
        let person = |label: &str| Detection {
            class_id: 0,
            label: label.into(),
            kind: ObjectKind::Person,
            score: 0.9,
            bbox: [0.1, 0.1, 0.3, 0.6],
        };
        let objects = [
            person("person"),
            person("person"),
            person(&crate::area::kinds::state_label("crowd_gathering")),
        ];
        let zone = ZoneShape::polygon(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        assert_eq!(rule().persons_in(&zone, &objects).count(), 2);
    }
}
