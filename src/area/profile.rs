//! A camera's analysis profile at a moment: its group's rate, keyframes-only mode, active hours
//! (day/night shifts) and the phase in force (launch, intensive, long-term), which may override
//! rates and scenario thresholds. Evaluated continuously, so a phase change needs no restart.

use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::organisation::local_datetime;
use super::{Area, GroupPhase, MAX_ANALYSIS_FPS, MIN_ANALYSIS_FPS};

/// What a camera should be doing now.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The camera's decoding rate: a phase's or group's rate, else the highest need of its zones.
    pub analysis_fps: f64,
    /// Where the rate comes from: the zones (each due at its own rate) or an override (every
    /// zone due at the camera's rate).
    pub rate: RateSource,
    /// Keyframes-only decoding as configured (camera, phase, group); `None`: ingest chooses it
    /// from the stream (on when the rate is at or below the stream's keyframe rate).
    pub keyframes_only: Option<bool>,
    /// Inside the active hours (or no hours set).
    pub active: bool,
    pub phase: Option<String>,
}

/// What decided a camera's analysis rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// The highest need of its zones' scenarios; each zone is due at its own rate.
    Zones,
    /// A phase's or a group's `analysis_fps` (or the default of a camera without zones).
    Override,
}

/// A local-time window "HH:MM-HH:MM"; wraps past midnight when the end is not after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursWindow {
    start_minute: u16,
    end_minute: u16,
}

impl HoursWindow {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("expected \"HH:MM-HH:MM\" (e.g. \"08:00-20:00\"), got `{s}`");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (start_minute, end_minute) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start_minute == end_minute {
            return Err(format!(
                "window `{s}` is empty; leave active_hours out to analyse all day"
            ));
        }
        Ok(Self {
            start_minute,
            end_minute,
        })
    }

    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

/// "+08:00" / "-05:30" → offset.
pub fn parse_utc_offset(s: &str) -> Option<UtcOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

/// The first local moment after a phase: a date's next midnight (the day is included), a
/// date and time itself.
fn phase_end(d: &toml::value::Datetime) -> Option<PrimitiveDateTime> {
    let at = local_datetime(d)?;
    if d.time.is_some() {
        Some(at)
    } else {
        Some(PrimitiveDateTime::new(at.date().next_day()?, at.time()))
    }
}

/// An analysis rate (a group's or a phase's) within [`MIN_ANALYSIS_FPS`, `MAX_ANALYSIS_FPS`].
pub fn check_analysis_fps(fps: f64) -> Result<(), String> {
    if (MIN_ANALYSIS_FPS..=MAX_ANALYSIS_FPS).contains(&fps) {
        Ok(())
    } else {
        Err(format!(
            "must be a number of frames per second in [{MIN_ANALYSIS_FPS}, {MAX_ANALYSIS_FPS}], got {fps}"
        ))
    }
}

/// An analysis rate given as text (a command-line flag), checked as the configuration checks it.
pub fn parse_analysis_fps(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    check_analysis_fps(v).map(|()| v)
}

pub fn validate_phase(p: &GroupPhase) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let from = local_datetime(&p.from);
    if from.is_none() {
        out.push((
            "from",
            format!(
                "expected a local date or date and time like 2026-11-01 or 2026-11-01T08:00:00, got `{}`",
                p.from
            ),
        ));
    }
    if let Some(to) = &p.to {
        match (from, phase_end(to)) {
            (_, None) => out.push((
                "to",
                format!("expected a local date or date and time like 2026-12-31 or 2026-11-11T08:00:00, got `{to}`"),
            )),
            (Some(f), Some(t)) if t <= f => out.push(("to", "ends before it starts".into())),
            _ => {}
        }
    }
    if let Some(fps) = p.analysis_fps
        && let Err(e) = check_analysis_fps(fps)
    {
        out.push(("analysis_fps", e));
    }
    // The crowd shorthands (`crowd_min_persons`, `crowd_min_duration_seconds`) are scenario
    // thresholds: the scenario stage checks them with its own ranges (`Overrides::validate`).
    for w in p.active_hours.iter().flatten() {
        if let Err(e) = HoursWindow::parse(w) {
            out.push(("active_hours", e));
        }
    }
    out
}

impl Area {
    pub fn utc_offset(&self) -> UtcOffset {
        parse_utc_offset(&self.centre.utc_offset).unwrap_or(UtcOffset::UTC)
    }

    /// The profile of camera `camera` at `now`.
    pub fn profile_at(&self, camera: usize, now: OffsetDateTime) -> Profile {
        let local = now.to_offset(self.utc_offset());
        let cam = &self.cameras[camera];
        let group = self.camera_group(cam);
        let moment = PrimitiveDateTime::new(local.date(), local.time());
        let phase = group.and_then(|g| {
            g.phases.iter().find(|p| {
                let from = local_datetime(&p.from);
                let to = p.to.as_ref().and_then(phase_end);
                from.is_some_and(|f| moment >= f) && to.is_none_or(|t| moment < t)
            })
        });
        let hours: &[String] = match (phase.and_then(|p| p.active_hours.as_deref()), group) {
            (Some(h), _) => h,
            (None, Some(g)) => &g.active_hours,
            (None, None) => &[],
        };
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let active = hours.is_empty()
            || hours
                .iter()
                .filter_map(|w| HoursWindow::parse(w).ok())
                .any(|w| w.contains(minute));
        let set = phase
            .and_then(|p| p.analysis_fps)
            .or(group.and_then(|g| g.analysis_fps));
        let zones = cam
            .zones
            .iter()
            .filter_map(super::Zone::needed_fps)
            .reduce(f64::max);
        let (analysis_fps, rate) = match (set, zones) {
            (Some(fps), _) => (fps, RateSource::Override),
            (None, Some(fps)) => (fps, RateSource::Zones),
            (None, None) => (super::DEFAULT_ANALYSIS_FPS, RateSource::Override),
        };
        Profile {
            analysis_fps,
            rate,
            keyframes_only: cam
                .keyframes_only
                .or(phase.and_then(|p| p.keyframes_only))
                .or(group.and_then(|g| g.keyframes_only)),
            active,
            phase: phase.map(|p| p.name.clone()),
        }
    }

    /// Frames per second each zone of camera `camera` is due at under `profile`: its own need
    /// when the zones set the rate, the camera's rate when a phase or group overrides it.
    pub fn zone_fps(&self, camera: usize, profile: &Profile) -> Vec<f64> {
        self.cameras[camera]
            .zones
            .iter()
            .map(|z| match profile.rate {
                RateSource::Zones => z.needed_fps().unwrap_or(profile.analysis_fps),
                RateSource::Override => profile.analysis_fps,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;
    use time::macros::datetime;

    #[test]
    fn windows_wrap_past_midnight() {
        let day = HoursWindow::parse("08:00-20:00").unwrap();
        let night = HoursWindow::parse("20:00-08:00").unwrap();
        assert!(day.contains(8 * 60) && !day.contains(20 * 60) && !day.contains(3 * 60));
        assert!(night.contains(20 * 60) && night.contains(3 * 60) && !night.contains(8 * 60));
        assert!(HoursWindow::parse("8-20").is_err());
        assert!(HoursWindow::parse("08:00-08:00").is_err());
        assert!(HoursWindow::parse("25:00-08:00").is_err());
    }

    const AREA: &str = r#"
[centre]
name = "c"
utc_offset = "+08:00"
[[units]]
id = "u"
name = "u"
[[groups]]
id = "g"
name = "g"
unit = "u"
analysis_fps = 1.0
active_hours = ["08:00-20:00"]
[[groups.phases]]
name = "intensive"
from = 2026-11-01
to = 2026-11-30
analysis_fps = 4.0
crowd_min_persons = 3
active_hours = ["00:00-24:00"]
[[groups.phases]]
name = "long_term"
from = 2026-12-01
[[cameras]]
id = "c"
name = "c"
unit = "u"
group = "g"
uri = "test:"
[model]
card = "../models/nanodet-g-416-coco.toml"
[dispatch]
url = "http://127.0.0.1:1/"
"#;

    #[test]
    fn phases_and_shifts_follow_local_time() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let c = Config::from_text(AREA, "t.toml", &dir).unwrap_or_else(|e| panic!("{e}"));
        // 2026-10-31 23:00 UTC = 2026-11-01 07:00 in Shanghai: intensive phase, all day.
        let p = c.area.profile_at(0, datetime!(2026-10-31 23:00 UTC));
        assert_eq!(
            (p.phase.as_deref(), p.analysis_fps, p.active),
            (Some("intensive"), 4.0, true)
        );
        // Before any phase, 07:00 local: outside the day shift.
        let p = c.area.profile_at(0, datetime!(2026-10-30 23:00 UTC));
        assert_eq!((p.phase, p.analysis_fps, p.active), (None, 1.0, false));
        // Long-term phase (open-ended) uses the group's own hours and rate.
        let p = c.area.profile_at(0, datetime!(2027-03-01 04:00 UTC));
        assert_eq!(
            (p.phase.as_deref(), p.analysis_fps, p.active),
            (Some("long_term"), 1.0, true)
        );
    }

    #[test]
    fn a_camera_runs_at_its_zones_highest_need_unless_a_phase_or_group_sets_a_rate() {
        let text = AREA.replace("analysis_fps = 1.0\n", "").replace(
            "uri = \"test:\"\n",
            "uri = \"test:\"\n[[cameras.zones]]\nid = \"plaza\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.5]]\nscenarios = [\"crowd_gathering\"]\n[[cameras.zones]]\nid = \"kerb\"\npolygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]\nscenarios = [\"illegal_parking\"]\n[[cameras.zones]]\nid = \"bins\"\npolygon = [[0.0, 0.5], [1.0, 0.5], [0.0, 1.0]]\nscenarios = [\"illegal_parking\"]\nanalysis_fps = 0.5\n",
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let c = Config::from_text(&text, "t.toml", &dir).unwrap_or_else(|e| panic!("{e}"));
        let need = |id: &str| c.catalog.entry(id).unwrap().analysis_fps;
        // Outside any phase: the zones decide, each at its own need (the kerb's parking rate, the
        // bins' own rate).
        let p = c.area.profile_at(0, datetime!(2026-10-30 01:00 UTC));
        assert_eq!(p.rate, RateSource::Zones);
        assert_eq!(p.analysis_fps, need("crowd_gathering"));
        assert_eq!(
            c.area.zone_fps(0, &p),
            vec![need("crowd_gathering"), need("illegal_parking"), 0.5]
        );
        assert!(need("illegal_parking") < need("crowd_gathering"));
        // The intensive phase sets 4 frames/s: every zone at it.
        let p = c.area.profile_at(0, datetime!(2026-11-10 01:00 UTC));
        assert_eq!((p.rate, p.analysis_fps), (RateSource::Override, 4.0));
        assert_eq!(c.area.zone_fps(0, &p), vec![4.0; 3]);
        // Keyframes-only is left to ingest unless configured.
        assert_eq!(p.keyframes_only, None);
    }
}
