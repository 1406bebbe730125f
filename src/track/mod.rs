//! Multi-object tracking per camera, ByteTrack style: detections are matched to tracks by IoU
//! (greedy, highest IoU first, same object kind only) in two passes — confident detections first,
//! then the weak ones against the tracks still unmatched — so a parked car whose score dips keeps
//! its id. Tracks live by stream time, not by frame count: a track not seen for up to
//! `max_gap_seconds` keeps its id, which covers detector misses and the frames the motion gate
//! skipped (the gate's periodic pass comes every `periodic_inference_seconds`).
//!
//! Each track also carries a stationarity test: the time since its centre last moved more than
//! `stationary_tolerance_ratio` box diagonals from where it settled (`still_since_seconds`).
//! The buffers used for matching are kept between frames: no allocation per frame once warm.

use crate::infer::Detection;
use crate::infer::kinds::ObjectKind;

pub const DEFAULT_MATCH_IOU: f32 = 0.3;
pub const DEFAULT_HIGH_SCORE: f32 = 0.5;
/// Longer than the gate's default periodic pass (10 s) so gated gaps never end a track.
pub const DEFAULT_MAX_GAP_SECONDS: f64 = 25.0;
pub const DEFAULT_MIN_HITS: u32 = 2;
pub const DEFAULT_STATIONARY_TOLERANCE_RATIO: f64 = 0.25;
/// An object unseen for longer than an hour is a new one; a longer gap only keeps dead tracks.
pub const MAX_GAP_SECONDS: f64 = 3600.0;
/// A track confirmed only after more matches than this never is, in practice: a typo.
pub const MAX_MIN_HITS: u32 = 1000;
/// Moving ten box diagonals is not standing still: larger tolerances are typos.
pub const MAX_STATIONARY_TOLERANCE_RATIO: f64 = 10.0;

/// `[tracker]` of the key-area configuration; every field has a named default.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSettings {
    /// Minimum IoU between a track's box and a detection to match them.
    pub match_iou: f32,
    /// Detections at or above this score are matched first and may start tracks.
    pub high_score: f32,
    pub max_gap_seconds: f64,
    /// A track is confirmed after this many matched detections.
    pub min_hits: u32,
    pub stationary_tolerance_ratio: f64,
}

impl TrackerSettings {
    /// Range checks; (field, message) pairs.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.match_iou > 0.0 && self.match_iou <= 1.0) {
            out.push((
                "match_iou",
                format!("must be in (0, 1], got {}", self.match_iou),
            ));
        }
        if !(0.0..=1.0).contains(&self.high_score) {
            out.push((
                "high_score",
                format!("must be a score in [0, 1], got {}", self.high_score),
            ));
        }
        if !(self.max_gap_seconds > 0.0 && self.max_gap_seconds <= MAX_GAP_SECONDS) {
            out.push((
                "max_gap_seconds",
                format!(
                    "must be a number of seconds in (0, {MAX_GAP_SECONDS}], got {}",
                    self.max_gap_seconds
                ),
            ));
        }
        if !(1..=MAX_MIN_HITS).contains(&self.min_hits) {
            out.push((
                "min_hits",
                format!("must be in [1, {MAX_MIN_HITS}], got {}", self.min_hits),
            ));
        }
        if !(0.0..=MAX_STATIONARY_TOLERANCE_RATIO).contains(&self.stationary_tolerance_ratio) {
            out.push((
                "stationary_tolerance_ratio",
                format!(
                    "must be in [0, {MAX_STATIONARY_TOLERANCE_RATIO}] box diagonals, got {}",
                    self.stationary_tolerance_ratio
                ),
            ));
        }
        out
    }
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            match_iou: DEFAULT_MATCH_IOU,
            high_score: DEFAULT_HIGH_SCORE,
            max_gap_seconds: DEFAULT_MAX_GAP_SECONDS,
            min_hits: DEFAULT_MIN_HITS,
            stationary_tolerance_ratio: DEFAULT_STATIONARY_TOLERANCE_RATIO,
        }
    }
}

/// One tracked object.
#[derive(Debug, Clone)]
pub struct Track {
    /// Unique per tracker, never reused.
    pub id: u64,
    pub kind: ObjectKind,
    /// The last matched detection (its box, score, label).
    pub detection: Detection,
    pub first_seen_seconds: f64,
    pub last_seen_seconds: f64,
    /// Matched detections so far.
    pub hits: u32,
    /// Analysed frames since the track began (hits / frames = persistence).
    pub frames: u32,
    /// Since when the centre stayed within the tolerance of `still_anchor`.
    pub still_since_seconds: f64,
    still_anchor: [f32; 2],
    /// Sum of matched scores, for the mean score over the track.
    pub score_sum: f32,
}

impl Track {
    pub fn confirmed(&self, min_hits: u32) -> bool {
        self.hits >= min_hits
    }

    /// Seen on the frame at stream time `t`.
    pub fn seen_at(&self, t: f64) -> bool {
        self.last_seen_seconds == t
    }

    /// Share of analysed frames since the track began in which it was matched.
    pub fn persistence(&self) -> f64 {
        f64::from(self.hits) / f64::from(self.frames.max(1))
    }

    pub fn mean_score(&self) -> f32 {
        self.score_sum / self.hits.max(1) as f32
    }

    /// How long the object has not moved, at stream time `t`.
    pub fn stationary_seconds(&self, t: f64) -> f64 {
        (t - self.still_since_seconds).max(0.0)
    }
}

/// The tracker of one camera.
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_id: u64,
    // Reused between frames.
    pairs: Vec<(f32, u32, u32)>,
    track_taken: Vec<bool>,
    det_taken: Vec<bool>,
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

fn centre(b: &[f32; 4]) -> [f32; 2] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings,
            tracks: Vec::new(),
            next_id: 1,
            pairs: Vec::new(),
            track_taken: Vec::new(),
            det_taken: Vec::new(),
        }
    }

    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Live tracks (seen within `max_gap_seconds`), confirmed or not.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Feeds the detections of one analysed frame at stream time `t`.
    pub fn update(&mut self, t: f64, detections: &[Detection]) {
        let s = self.settings;
        self.tracks
            .retain(|tr| t - tr.last_seen_seconds <= s.max_gap_seconds);
        for tr in &mut self.tracks {
            tr.frames += 1;
        }
        self.track_taken.clear();
        self.track_taken.resize(self.tracks.len(), false);
        self.det_taken.clear();
        self.det_taken.resize(detections.len(), false);
        for confident in [true, false] {
            self.pairs.clear();
            for (di, d) in detections.iter().enumerate() {
                if self.det_taken[di] || (d.score >= s.high_score) != confident {
                    continue;
                }
                for (ti, tr) in self.tracks.iter().enumerate() {
                    if self.track_taken[ti] || tr.kind != d.kind {
                        continue;
                    }
                    let v = iou(&tr.detection.bbox, &d.bbox);
                    if v >= s.match_iou {
                        self.pairs.push((v, ti as u32, di as u32));
                    }
                }
            }
            self.pairs
                .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, ti, di) in &self.pairs {
                let (ti, di) = (ti as usize, di as usize);
                if self.track_taken[ti] || self.det_taken[di] {
                    continue;
                }
                self.track_taken[ti] = true;
                self.det_taken[di] = true;
                let tr = &mut self.tracks[ti];
                let d = &detections[di];
                tr.detection.clone_from(d);
                tr.last_seen_seconds = t;
                tr.hits += 1;
                tr.score_sum += d.score;
                let c = centre(&d.bbox);
                let b = &d.bbox;
                let diag = f64::from((b[2] - b[0]).hypot(b[3] - b[1]));
                let moved = f64::from((c[0] - tr.still_anchor[0]).hypot(c[1] - tr.still_anchor[1]));
                if moved > s.stationary_tolerance_ratio * diag {
                    tr.still_anchor = c;
                    tr.still_since_seconds = t;
                }
            }
        }
        for (di, d) in detections.iter().enumerate() {
            if self.det_taken[di] || d.score < s.high_score {
                continue;
            }
            self.tracks.push(Track {
                id: self.next_id,
                kind: d.kind,
                detection: d.clone(),
                first_seen_seconds: t,
                last_seen_seconds: t,
                hits: 1,
                frames: 1,
                still_since_seconds: t,
                still_anchor: centre(&d.bbox),
                score_sum: d.score,
            });
            self.next_id += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(kind: ObjectKind, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id: 0,
            label: kind.as_str().into(),
            kind,
            score,
            bbox,
        }
    }

    fn ids(t: &Tracker, at: f64) -> Vec<(u64, ObjectKind)> {
        t.tracks()
            .iter()
            .filter(|tr| tr.seen_at(at))
            .map(|tr| (tr.id, tr.kind))
            .collect()
    }

    #[test]
    fn ids_survive_misses_and_gated_gaps_and_end_after_the_max_gap() {
        let mut t = Tracker::new(TrackerSettings::default());
        let car = det(ObjectKind::Car, 0.8, [0.1, 0.5, 0.3, 0.7]);
        t.update(0.0, std::slice::from_ref(&car));
        let id = t.tracks()[0].id;
        // A miss at 0.5 s, then 10 s without frames (the motion gate skipped them).
        t.update(0.5, &[]);
        t.update(10.5, std::slice::from_ref(&car));
        assert_eq!(ids(&t, 10.5), vec![(id, ObjectKind::Car)]);
        // A weak detection (score dip) still continues the track (second pass)...
        let weak = det(ObjectKind::Car, 0.36, [0.11, 0.5, 0.31, 0.7]);
        t.update(11.0, &[weak]);
        assert_eq!(ids(&t, 11.0), vec![(id, ObjectKind::Car)]);
        // ...but never starts one.
        let mut fresh = Tracker::new(TrackerSettings::default());
        fresh.update(0.0, &[det(ObjectKind::Car, 0.36, [0.1, 0.5, 0.3, 0.7])]);
        assert!(fresh.tracks().is_empty());
        // Past the max gap the track is gone and the object gets a new id.
        t.update(11.0 + DEFAULT_MAX_GAP_SECONDS + 1.0, &[car]);
        let now = ids(&t, 11.0 + DEFAULT_MAX_GAP_SECONDS + 1.0);
        assert_eq!(now.len(), 1);
        assert_ne!(now[0].0, id);
    }

    #[test]
    fn two_objects_crossing_kinds_and_neighbours_keep_their_ids() {
        let mut t = Tracker::new(TrackerSettings::default());
        // A person walking right past a parked bicycle that overlaps them.
        let bike = det(ObjectKind::Bicycle, 0.7, [0.40, 0.5, 0.55, 0.8]);
        let mut person = det(ObjectKind::Person, 0.9, [0.20, 0.3, 0.30, 0.8]);
        t.update(0.0, &[person.clone(), bike.clone()]);
        let id_of = |t: &Tracker, k| t.tracks().iter().find(|tr| tr.kind == k).unwrap().id;
        let (pid, bid) = (
            id_of(&t, ObjectKind::Person),
            id_of(&t, ObjectKind::Bicycle),
        );
        for step in 1..12 {
            let dx = 0.03 * step as f32;
            person.bbox = [0.20 + dx, 0.3, 0.30 + dx, 0.8];
            t.update(step as f64 * 0.5, &[bike.clone(), person.clone()]);
            assert_eq!(t.tracks().len(), 2, "step {step}");
            assert_eq!(id_of(&t, ObjectKind::Person), pid);
            assert_eq!(id_of(&t, ObjectKind::Bicycle), bid);
        }
        let bike_track = t.tracks().iter().find(|tr| tr.id == bid).unwrap();
        assert_eq!(bike_track.stationary_seconds(5.5), 5.5);
        let person_track = t.tracks().iter().find(|tr| tr.id == pid).unwrap();
        assert!(person_track.stationary_seconds(5.5) < 1.0);
        assert_eq!(person_track.hits, 12);
    }

    #[test]
    fn jitter_within_the_tolerance_keeps_the_object_stationary() {
        let mut t = Tracker::new(TrackerSettings::default());
        for i in 0..20 {
            let j = if i % 2 == 0 { 0.01 } else { -0.01 };
            t.update(
                i as f64,
                &[det(ObjectKind::Car, 0.8, [0.1 + j, 0.5, 0.3 + j, 0.7])],
            );
        }
        assert_eq!(t.tracks().len(), 1);
        assert_eq!(t.tracks()[0].stationary_seconds(19.0), 19.0);
        assert_eq!(t.tracks()[0].persistence(), 1.0);
    }

    #[test]
    fn settings_come_from_config_with_defaults_and_checks() {
        let s: TrackerSettings = toml::from_str("match_iou = 0.5\nmax_gap_seconds = 40.0").unwrap();
        assert_eq!((s.match_iou, s.max_gap_seconds), (0.5, 40.0));
        assert_eq!(s.min_hits, DEFAULT_MIN_HITS);
        assert!(s.validate().is_empty());
        assert!(toml::from_str::<TrackerSettings>("max_gap = 4.0").is_err());
        let bad: TrackerSettings = toml::from_str("match_iou = 0.0\nmin_hits = 0").unwrap();
        let fields: Vec<_> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["match_iou", "min_hits"]);
    }
}
