//! Rule primitives over tracks and the two generic rules the catalog's scenarios use.
//!
//! Primitives: object filters (kinds, minimum score; a zone may narrow both), the zone test
//! (include polygon minus exclude masks, by the zone's anchor: bottom-centre, centre or overlap
//! ratio, `geometry::ZoneShape`), dwell with a stationarity test (the
//! tracker's `still_since`), persistence (seen in at least K of N analysed frames), count
//! thresholds, schedules (active / excluded local-time windows, a stricter dwell at night) and
//! co-occurrence (a companion object within a distance of the subject).
//!
//! Lifecycle of an episode: candidate (the condition holds) → confirmed (dwell, persistence and
//! hits reached: the one event of the episode is emitted) → updated (the condition keeps
//! holding; nothing is emitted) → ended (the condition is false for `clear_seconds`, or the track
//! is gone). After an episode ends, the same place raises no new case for `cooldown_seconds`
//! (an overlapping object for [`TrackDwellRule`], the zone for [`ZoneCountRule`]): a parked car
//! that the tracker loses and finds again under a new id stays one case.
//!
//! Confidence of an event: the mean, over the event's objects, of each object's mean detection
//! score over its track so far.

use crate::area::kinds::is_state_label;
use crate::area::profile::HoursWindow;
use crate::infer::Detection;
use crate::infer::kinds::ObjectKind;
use crate::track::{Track, iou};

use super::catalog::RuleThresholds;
use crate::area::geometry::ZoneShape;

/// Overlap with an ended episode's object that counts as "the same place" for the cooldown.
pub const SAME_PLACE_IOU: f32 = 0.3;

/// When the rule runs and which dwell applies.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    active: Vec<HoursWindow>,
    excluded: Vec<HoursWindow>,
    night: Option<(HoursWindow, f64)>,
}

impl Schedule {
    /// From validated thresholds (see `catalog::validate_thresholds`).
    pub fn from_thresholds(t: &RuleThresholds) -> Result<Self, String> {
        let parse = |v: &[String]| -> Result<Vec<HoursWindow>, String> {
            v.iter().map(|w| HoursWindow::parse(w)).collect()
        };
        let night = match (&t.night_hours, t.night_dwell_seconds) {
            (Some(w), Some(d)) => Some((HoursWindow::parse(w)?, d)),
            _ => None,
        };
        Ok(Self {
            active: parse(&t.active_hours)?,
            excluded: parse(&t.excluded_hours)?,
            night,
        })
    }

    pub fn allows(&self, minute_of_day: u16) -> bool {
        (self.active.is_empty() || self.active.iter().any(|w| w.contains(minute_of_day)))
            && !self.excluded.iter().any(|w| w.contains(minute_of_day))
    }

    /// The dwell in force: the night dwell inside the night window.
    pub fn dwell_seconds(&self, minute_of_day: u16, day: f64) -> f64 {
        match self.night {
            Some((w, night)) if w.contains(minute_of_day) => night,
            _ => day,
        }
    }
}

/// Which objects a rule looks at, and the co-occurrence it needs.
#[derive(Debug, Clone)]
pub struct ObjectFilter {
    pub kinds: Vec<ObjectKind>,
    /// Only detections with this label (a learned zone state's), when set.
    pub label: Option<std::sync::Arc<str>>,
    pub min_score: f32,
    pub companions: Vec<ObjectKind>,
    pub companion_distance_ratio: f64,
    /// Matched detections before a track counts (the tracker's confirmation).
    pub min_hits: u32,
}

impl ObjectFilter {
    /// A rule served by a learned zone state counts only that state's detections, and only on
    /// frames where its classifier says so (the tracker's memory of unseen objects, for
    /// occlusions, would make a state outlast itself by the tracker's maximum gap). Any other
    /// rule counts objects, never a state's detection.
    fn subject(&self, tr: &Track, zone: &ZoneShape, t: f64) -> bool {
        let wanted = match &self.label {
            Some(l) => *tr.detection.label == **l && tr.seen_at(t),
            None => !is_state_label(&tr.detection.label),
        };
        wanted
            && self.kinds.contains(&tr.kind)
            && tr.mean_score() >= self.min_score
            && zone.covers(&tr.detection.bbox)
    }

    /// Co-occurrence: a companion track whose centre lies within `companion_distance_ratio`
    /// subject-box heights of the subject's centre.
    fn has_companion(&self, subject: &Track, tracks: &[Track]) -> bool {
        if self.companions.is_empty() {
            return true;
        }
        let b = &subject.detection.bbox;
        let reach = f64::from(b[3] - b[1]) * self.companion_distance_ratio;
        let c = centre(b);
        tracks.iter().any(|o| {
            o.id != subject.id
                && self.companions.contains(&o.kind)
                && !is_state_label(&o.detection.label)
                && o.mean_score() >= self.min_score
                && {
                    let oc = centre(&o.detection.bbox);
                    (oc[0] - c[0]).hypot(oc[1] - c[1]) <= reach
                }
        })
    }
}

fn centre(b: &[f32; 4]) -> [f64; 2] {
    [f64::from(b[0] + b[2]) / 2.0, f64::from(b[1] + b[3]) / 2.0]
}

/// What a rule sees of one analysed frame.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Stream time (seconds, monotone per camera).
    pub t: f64,
    /// Local time of day of the frame, minutes since midnight.
    pub minute_of_day: u16,
}

/// A rule confirmed an episode on this frame: emit one event.
#[derive(Debug, Clone)]
pub struct Firing {
    /// The episode's key within its rule (a track id, or the rule's episode count), which
    /// [`TrackDwellRule::take_ended`] and friends report when it ends.
    pub episode: u64,
    pub episode_start_seconds: f64,
    pub objects: Vec<Detection>,
    pub confidence: f32,
}

/// Common settings of both rules.
#[derive(Debug, Clone)]
pub struct RuleParams {
    pub filter: ObjectFilter,
    pub thresholds: RuleThresholds,
    pub schedule: Schedule,
}

impl RuleParams {
    /// When the track started counting towards the dwell.
    fn dwell_start(&self, tr: &Track, since: f64) -> f64 {
        if self.thresholds.stationary {
            since.max(tr.still_since_seconds)
        } else {
            since
        }
    }

    fn mature(&self, tr: &Track) -> bool {
        tr.hits >= self.filter.min_hits && tr.persistence() >= self.thresholds.min_persistence_ratio
    }
}

#[derive(Debug, Clone)]
struct Episode {
    track: u64,
    started: f64,
    last_ok: f64,
    confirmed: bool,
    /// Confirmed and reported (not a repeat within the cooldown).
    fired: bool,
    bbox: [f32; 4],
}

/// One episode per tracked object that stays in the zone (stationary if so configured) for the
/// dwell: illegal parking, street vending, e-bike charging, garbage drop-off.
#[derive(Debug, Clone)]
pub struct TrackDwellRule {
    params: RuleParams,
    episodes: Vec<Episode>,
    /// (object box, stream time) of confirmed episodes that ended, for the cooldown.
    ended: Vec<([f32; 4], f64)>,
    /// Keys of fired episodes that ended since the last [`Self::take_ended`].
    just_ended: Vec<u64>,
}

impl TrackDwellRule {
    pub fn new(params: RuleParams) -> Self {
        Self {
            params,
            episodes: Vec::new(),
            ended: Vec::new(),
            just_ended: Vec::new(),
        }
    }

    /// Fired episodes that ended since the last call (their keys).
    pub fn take_ended(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.just_ended);
    }

    /// Whether the rule's object is in the zone on the frame at `t` (seen on it), whatever
    /// its dwell: what a re-check asks.
    pub fn holds(&self, t: f64, zone: &ZoneShape, tracks: &[Track]) -> bool {
        let f = &self.params.filter;
        tracks
            .iter()
            .any(|tr| tr.seen_at(t) && f.subject(tr, zone, t) && f.has_companion(tr, tracks))
    }

    /// New thresholds (a phase began or ended); episodes in progress continue under them.
    pub fn set_params(&mut self, params: RuleParams) {
        self.params = params;
    }

    /// Episodes in progress (candidate or confirmed).
    pub fn open_episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Feeds one analysed frame; a confirmed episode pushes its one firing to `out`.
    pub fn observe(
        &mut self,
        m: Moment,
        zone: &ZoneShape,
        tracks: &[Track],
        out: &mut Vec<Firing>,
    ) {
        let p = &self.params;
        let th = &p.thresholds;
        let allowed = p.schedule.allows(m.minute_of_day);
        let dwell = p.schedule.dwell_seconds(m.minute_of_day, th.dwell_seconds);
        if allowed {
            for tr in tracks {
                if !p.filter.subject(tr, zone, m.t) || !p.filter.has_companion(tr, tracks) {
                    continue;
                }
                let ep = match self.episodes.iter_mut().position(|e| e.track == tr.id) {
                    Some(i) => &mut self.episodes[i],
                    None => {
                        self.episodes.push(Episode {
                            track: tr.id,
                            started: m.t,
                            last_ok: m.t,
                            confirmed: false,
                            fired: false,
                            bbox: tr.detection.bbox,
                        });
                        self.episodes.last_mut().expect("just pushed")
                    }
                };
                ep.last_ok = m.t;
                ep.bbox = tr.detection.bbox;
                if ep.confirmed || m.t - p.dwell_start(tr, ep.started) < dwell || !p.mature(tr) {
                    continue;
                }
                ep.confirmed = true;
                let repeat = self.ended.iter().any(|(b, at)| {
                    m.t - at <= th.cooldown_seconds && iou(b, &tr.detection.bbox) >= SAME_PLACE_IOU
                });
                if !repeat {
                    ep.fired = true;
                    out.push(Firing {
                        episode: tr.id,
                        episode_start_seconds: p.dwell_start(tr, ep.started),
                        objects: vec![tr.detection.clone()],
                        confidence: tr.mean_score(),
                    });
                }
            }
        }
        // Episodes end when their track is gone or the condition stayed false long enough.
        let ended = &mut self.ended;
        let just_ended = &mut self.just_ended;
        self.episodes.retain(|e| {
            let alive = tracks.iter().any(|tr| tr.id == e.track);
            let keep = alive && m.t - e.last_ok < th.clear_seconds;
            if !keep && e.confirmed {
                ended.push((e.bbox, m.t));
            }
            if !keep && e.fired {
                just_ended.push(e.track);
            }
            keep
        });
        // A confirmed object still in place also holds off re-triggers by a duplicate track.
        for e in &self.episodes {
            if e.confirmed {
                ended.retain(|(b, _)| iou(b, &e.bbox) < SAME_PLACE_IOU);
                ended.push((e.bbox, m.t));
            }
        }
        self.ended.retain(|(_, at)| m.t - at <= th.cooldown_seconds);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ZonePhase {
    Idle,
    Active { last_ok: f64 },
}

/// One episode per zone while at least `min_count` objects dwell in it: non-motor parking,
/// business outside the shop front.
#[derive(Debug, Clone)]
pub struct ZoneCountRule {
    params: RuleParams,
    phase: ZonePhase,
    cooldown_until: f64,
    /// A learned state: since when it holds, and since when it has been absent.
    state_since: Option<f64>,
    state_absent_since: Option<f64>,
    /// Episodes fired so far (the key of the next), and the key of the one in progress.
    fired: u64,
    current: Option<u64>,
    just_ended: Option<u64>,
}

impl ZoneCountRule {
    pub fn new(params: RuleParams) -> Self {
        Self {
            params,
            phase: ZonePhase::Idle,
            cooldown_until: f64::NEG_INFINITY,
            state_since: None,
            state_absent_since: None,
            fired: 0,
            current: None,
            just_ended: None,
        }
    }

    /// The fired episode that ended since the last call (its key).
    pub fn take_ended(&mut self, out: &mut Vec<u64>) {
        out.extend(self.just_ended.take());
    }

    /// Whether at least `min_count` of the rule's objects are in the zone on the frame at `t`,
    /// whatever their dwell: what a re-check asks.
    pub fn holds(&self, t: f64, zone: &ZoneShape, tracks: &[Track]) -> bool {
        let f = &self.params.filter;
        tracks
            .iter()
            .filter(|tr| tr.seen_at(t) && f.subject(tr, zone, t) && f.has_companion(tr, tracks))
            .count()
            >= self.params.thresholds.min_count.max(1)
    }

    /// New thresholds (a phase began or ended); an episode in progress continues under them.
    pub fn set_params(&mut self, params: RuleParams) {
        self.params = params;
    }

    fn dwelling<'a>(
        &'a self,
        m: Moment,
        zone: &'a ZoneShape,
        tracks: &'a [Track],
    ) -> impl Iterator<Item = &'a Track> + 'a {
        let p = &self.params;
        let dwell = p
            .schedule
            .dwell_seconds(m.minute_of_day, p.thresholds.dwell_seconds);
        tracks.iter().filter(move |tr| {
            let since = self.state_since.unwrap_or(tr.first_seen_seconds);
            p.filter.subject(tr, zone, m.t)
                && p.filter.has_companion(tr, tracks)
                && p.mature(tr)
                && m.t - p.dwell_start(tr, since) >= dwell
        })
    }

    /// A learned state's dwell counts from when it last appeared after an absence of at least
    /// `clear_seconds` (its track survives such gaps, so its first sighting may be an earlier
    /// episode's). Objects keep their track's own dwell.
    fn follow_state(&mut self, m: Moment, zone: &ZoneShape, tracks: &[Track]) {
        if self.params.filter.label.is_none() {
            return;
        }
        let present = tracks
            .iter()
            .any(|tr| self.params.filter.subject(tr, zone, m.t));
        if present {
            self.state_absent_since = None;
            self.state_since.get_or_insert(m.t);
        } else {
            let absent = *self.state_absent_since.get_or_insert(m.t);
            if m.t - absent >= self.params.thresholds.clear_seconds {
                self.state_since = None;
            }
        }
    }

    pub fn observe(
        &mut self,
        m: Moment,
        zone: &ZoneShape,
        tracks: &[Track],
        out: &mut Vec<Firing>,
    ) {
        self.follow_state(m, zone, tracks);
        let th = &self.params.thresholds;
        let ok = self.params.schedule.allows(m.minute_of_day)
            && self.dwelling(m, zone, tracks).count() >= th.min_count;
        match self.phase {
            ZonePhase::Idle if ok => {
                self.phase = ZonePhase::Active { last_ok: m.t };
                if m.t < self.cooldown_until {
                    return;
                }
                let objects: Vec<Detection> = self
                    .dwelling(m, zone, tracks)
                    .map(|tr| tr.detection.clone())
                    .collect();
                let start = self
                    .dwelling(m, zone, tracks)
                    .map(|tr| self.params.dwell_start(tr, tr.first_seen_seconds))
                    .fold(m.t, f64::min);
                let confidence = self
                    .dwelling(m, zone, tracks)
                    .map(|tr| tr.mean_score())
                    .sum::<f32>()
                    / objects.len().max(1) as f32;
                self.fired += 1;
                self.current = Some(self.fired);
                out.push(Firing {
                    episode: self.fired,
                    episode_start_seconds: start,
                    objects,
                    confidence,
                });
            }
            ZonePhase::Idle => {}
            ZonePhase::Active { .. } if ok => self.phase = ZonePhase::Active { last_ok: m.t },
            ZonePhase::Active { last_ok } => {
                if m.t - last_ok >= th.clear_seconds {
                    self.phase = ZonePhase::Idle;
                    self.cooldown_until = m.t + th.cooldown_seconds;
                    self.just_ended = self.current.take();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{Tracker, TrackerSettings};

    fn whole() -> ZoneShape {
        ZoneShape::polygon(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    }
    fn left_half() -> ZoneShape {
        ZoneShape::polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]])
    }
    const NOON: u16 = 12 * 60;

    fn det(kind: ObjectKind, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id: 0,
            label: kind.as_str().into(),
            kind,
            score: 0.8,
            bbox,
        }
    }

    fn params(kinds: &[ObjectKind], th: RuleThresholds) -> RuleParams {
        RuleParams {
            filter: ObjectFilter {
                kinds: kinds.to_vec(),
                label: None,
                min_score: th.score_threshold,
                companions: Vec::new(),
                companion_distance_ratio: th.companion_distance_ratio,
                min_hits: 2,
            },
            schedule: Schedule::from_thresholds(&th).unwrap(),
            thresholds: th,
        }
    }

    fn th(dwell: f64, clear: f64, cooldown: f64) -> RuleThresholds {
        RuleThresholds {
            dwell_seconds: dwell,
            clear_seconds: clear,
            cooldown_seconds: cooldown,
            ..RuleThresholds::default()
        }
    }

    /// Runs a script of frames (stream time, local minute, detections) through a tracker and a
    /// rule; returns the stream times at which events fired.
    fn script(
        mut observe: impl FnMut(Moment, &[Track], &mut Vec<Firing>),
        frames: impl IntoIterator<Item = (f64, u16, Vec<Detection>)>,
    ) -> Vec<f64> {
        let mut tracker = Tracker::new(TrackerSettings::default());
        let mut fired = Vec::new();
        let mut out = Vec::new();
        for (t, minute, dets) in frames {
            tracker.update(t, &dets);
            out.clear();
            observe(
                Moment {
                    t,
                    minute_of_day: minute,
                },
                tracker.tracks(),
                &mut out,
            );
            fired.extend(out.iter().map(|_| t));
        }
        fired
    }

    const CAR: [f32; 4] = [0.1, 0.5, 0.3, 0.7];

    #[test]
    fn a_car_parked_for_an_hour_is_one_case_even_through_misses_and_lost_tracks() {
        let mut rule = TrackDwellRule::new(params(&[ObjectKind::Car], th(120.0, 30.0, 600.0)));
        // One frame every 2 s for an hour; the detector misses the car on every 7th frame and
        // for a whole minute at 30 min (the track expires and the car gets a new id).
        let frames = (0..1800).map(|i| {
            let t = i as f64 * 2.0;
            let seen = i % 7 != 3 && !(900..930).contains(&i);
            (
                t,
                NOON,
                if seen {
                    vec![det(ObjectKind::Car, CAR)]
                } else {
                    vec![]
                },
            )
        });
        let zone = whole();
        let fired = script(|m, tr, out| rule.observe(m, &zone, tr, out), frames);
        // The dwell is measured from the first frame: the event fires at 120 s, once.
        assert_eq!(fired, vec![120.0]);
    }

    #[test]
    fn a_passing_car_is_no_case_and_a_car_outside_the_zone_neither() {
        let mut rule = TrackDwellRule::new(params(&[ObjectKind::Car], th(10.0, 5.0, 60.0)));
        let frames = (0..40).map(|i| {
            let t = i as f64 * 0.5;
            let x = 0.02 * i as f32;
            // Driving slowly through the zone, then parked in the right half (outside).
            let b = if i < 30 {
                [x, 0.5, x + 0.2, 0.7]
            } else {
                [0.6, 0.5, 0.8, 0.7]
            };
            (t, NOON, vec![det(ObjectKind::Car, b)])
        });
        let zone = left_half();
        let fired = script(|m, tr, out| rule.observe(m, &zone, tr, out), frames);
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn after_the_car_leaves_a_new_car_is_a_new_case_only_after_the_cooldown() {
        let mut rule = TrackDwellRule::new(params(&[ObjectKind::Car], th(10.0, 5.0, 60.0)));
        // Parked 0-30 s, gone 30-60 s (longer than the tracker's max gap: the track ends),
        // parked again 60-90 s (a new track inside the cooldown at the same place: no case),
        // gone, parked again 200-230 s (after the cooldown: a new case).
        const { assert!(30.0 > crate::track::DEFAULT_MAX_GAP_SECONDS) };
        let frames = (0..460).map(|i| {
            let t = i as f64 * 0.5;
            let here = t < 30.0 || (60.0..90.0).contains(&t) || (200.0..230.0).contains(&t);
            (
                t,
                NOON,
                if here {
                    vec![det(ObjectKind::Car, CAR)]
                } else {
                    vec![]
                },
            )
        });
        let zone = whole();
        let fired = script(|m, tr, out| rule.observe(m, &zone, tr, out), frames);
        assert_eq!(fired, vec![10.0, 210.0]);
    }

    #[test]
    fn the_night_dwell_is_stricter_and_excluded_hours_silence_the_rule() {
        let night = RuleThresholds {
            night_hours: Some("20:00-06:00".into()),
            night_dwell_seconds: Some(5.0),
            ..th(60.0, 5.0, 60.0)
        };
        let bike = [0.2, 0.6, 0.3, 0.8];
        let run = |minute: u16, t: RuleThresholds| {
            let mut rule = TrackDwellRule::new(params(&[ObjectKind::Bicycle], t));
            let frames = (0..200)
                .map(move |i| (i as f64 * 0.5, minute, vec![det(ObjectKind::Bicycle, bike)]));
            script(|m, tr, out| rule.observe(m, &whole(), tr, out), frames)
        };
        assert_eq!(run(22 * 60, night.clone()), vec![5.0]);
        assert_eq!(run(NOON, night), vec![60.0]);
        let dropoff = RuleThresholds {
            excluded_hours: vec!["07:00-09:00".into()],
            ..th(5.0, 5.0, 60.0)
        };
        assert!(run(8 * 60, dropoff.clone()).is_empty());
        assert_eq!(run(10 * 60, dropoff), vec![5.0]);
    }

    #[test]
    fn a_vendor_needs_a_stall_object_nearby() {
        let mut p = params(&[ObjectKind::Person], th(10.0, 5.0, 60.0));
        p.filter.companions = vec![ObjectKind::Umbrella, ObjectKind::Table];
        let person = det(ObjectKind::Person, [0.40, 0.40, 0.45, 0.60]);
        let near = det(ObjectKind::Umbrella, [0.46, 0.35, 0.56, 0.50]);
        let far = det(ObjectKind::Table, [0.90, 0.80, 0.99, 0.90]);
        let run = |p: RuleParams, other: Detection| {
            let mut rule = TrackDwellRule::new(p);
            let frames = {
                let person = person.clone();
                (0..60).map(move |i| (i as f64 * 0.5, NOON, vec![person.clone(), other.clone()]))
            };
            script(|m, tr, out| rule.observe(m, &whole(), tr, out), frames)
        };
        assert!(run(p.clone(), far).is_empty());
        assert_eq!(run(p, near), vec![10.0]);
    }

    #[test]
    fn zone_count_fires_once_when_enough_bicycles_dwell() {
        let t = RuleThresholds {
            min_count: 3,
            ..th(10.0, 5.0, 60.0)
        };
        let mut rule = ZoneCountRule::new(params(&[ObjectKind::Bicycle], t));
        let bike = |k: usize| {
            det(
                ObjectKind::Bicycle,
                [0.1 * k as f32, 0.6, 0.1 * k as f32 + 0.08, 0.8],
            )
        };
        // Two bicycles from 0 s, a third from 5 s; one of them flickers out now and then.
        let frames = (0..120).map(|i| {
            let t = i as f64 * 0.5;
            let mut d = vec![bike(1), bike(3)];
            if t >= 5.0 && i % 9 != 0 {
                d.push(bike(5));
            }
            (t, NOON, d)
        });
        let zone = whole();
        let fired = script(|m, tr, out| rule.observe(m, &zone, tr, out), frames);
        assert_eq!(fired, vec![15.0]);
    }

    #[test]
    fn a_learned_state_ends_when_its_classifier_says_so_and_the_next_one_dwells_afresh() {
        let mut p = params(&[ObjectKind::Other], th(3.0, 2.5, 1.0));
        p.filter.label = Some("state:path_occupied".into());
        let mut rule = ZoneCountRule::new(p);
        let state = Detection {
            label: "state:path_occupied".into(),
            ..det(ObjectKind::Other, [0.0, 0.3, 0.4, 0.5])
        };
        // Present 0-9 s, absent 10-14.5 s (5 s, longer than clear), present again from 15 s.
        // The tracker keeps the state's track through the gap (max gap 25 s); the rule must not.
        let frames = (0..60).map(|i| {
            let t = i as f64 * 0.5;
            let on = !(10.0..15.0).contains(&t);
            (t, NOON, if on { vec![state.clone()] } else { Vec::new() })
        });
        let zone = whole();
        let fired = script(|m, tr, out| rule.observe(m, &zone, tr, out), frames);
        assert_eq!(
            fired,
            vec![3.0, 18.0],
            "dwell 3 s from 0 s and again from 15 s"
        );

        // A rule of objects of the same kind in the same zone never counts the state.
        let mut objects = ZoneCountRule::new(params(&[ObjectKind::Other], th(3.0, 2.5, 1.0)));
        let frames = (0..20).map(|i| (i as f64 * 0.5, NOON, vec![state.clone()]));
        let fired = script(|m, tr, out| objects.observe(m, &zone, tr, out), frames);
        assert!(fired.is_empty(), "{fired:?}");
    }
}
