//! The plan's organisation as data: its phases with date and time (实战启动, 实战攻坚, 长效管理),
//! the stations (the joint-duty station that leads difficult problems, the village and
//! residential stations) with their units, the departments, and the mobile team (机动队伍).
//! Routes name the phases, escalation (督办) goes to the station that leads difficult problems;
//! the configuration checks the cross-references.

use serde::Deserialize;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::Area;

/// One phase of the plan: from a local date and time until the next phase starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPhase {
    /// What routes and reports name it by, e.g. `intensive`.
    pub id: String,
    /// The plan's name, e.g. 实战攻坚.
    pub name: String,
    /// Local start, e.g. `2026-11-01T08:00:00` (a date alone starts at midnight).
    pub from: toml::value::Datetime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    /// 联勤联动工作站: departments stationed together; leads difficult problems.
    Joint,
    /// 村居工作站.
    Village,
    /// The business district's own station.
    Business,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Station {
    pub id: String,
    pub name: String,
    pub kind: StationKind,
    /// The management units it serves.
    #[serde(default)]
    pub units: Vec<String>,
    /// Departments stationed there (ids of `[[departments]]`).
    #[serde(default)]
    pub departments: Vec<String>,
    /// Escalations (督办) of overdue cases go to this station; at most one may.
    #[serde(default)]
    pub leads_difficult: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub id: String,
    /// As the catalog's `department` names it, e.g. 城管.
    pub name: String,
}

/// 机动队伍: standby at the centre, commanded directly by it; a dispatch target of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileTeam {
    pub name: String,
    /// The dispatch target (`[[dispatch.targets]]` id) its cases go to.
    pub target: String,
    #[serde(default)]
    pub people: Option<u32>,
    #[serde(default)]
    pub vehicles: Option<u32>,
}

/// A TOML date or local date-time as a local moment; a date alone is its midnight.
pub fn local_datetime(d: &toml::value::Datetime) -> Option<PrimitiveDateTime> {
    if d.offset.is_some() {
        return None;
    }
    let date = d.date?;
    let day = Date::from_calendar_date(
        i32::from(date.year),
        Month::try_from(date.month).ok()?,
        date.day,
    )
    .ok()?;
    let time = match d.time {
        Some(t) => Time::from_hms(t.hour, t.minute, t.second).ok()?,
        None => Time::MIDNIGHT,
    };
    Some(PrimitiveDateTime::new(day, time))
}

impl Area {
    pub fn plan_phase(&self, id: &str) -> Option<&PlanPhase> {
        self.phases.iter().find(|p| p.id == id)
    }

    /// The plan's phase in force at `now`: the latest that has started.
    pub fn plan_phase_at(&self, now: OffsetDateTime) -> Option<&PlanPhase> {
        let local = now.to_offset(self.utc_offset());
        let local = PrimitiveDateTime::new(local.date(), local.time());
        self.phases
            .iter()
            .filter_map(|p| Some((local_datetime(&p.from)?, p)))
            .filter(|(from, _)| *from <= local)
            .max_by_key(|(from, _)| *from)
            .map(|(_, p)| p)
    }

    /// The station escalations go to (督办): the one that leads difficult problems.
    pub fn escalation_station(&self) -> Option<&Station> {
        self.stations.iter().find(|s| s.leads_difficult)
    }

    /// Checks of the organisation against the rest of the area: (field, message).
    pub fn validate_organisation(&self, targets: &[&str]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut last: Option<PrimitiveDateTime> = None;
        for (i, p) in self.phases.iter().enumerate() {
            match local_datetime(&p.from) {
                None => out.push((
                    format!("phases[{i}].from"),
                    format!(
                        "expected a local date and time like 2026-11-01T08:00:00, got `{}`",
                        p.from
                    ),
                )),
                Some(from) if last.is_some_and(|l| from <= l) => out.push((
                    format!("phases[{i}].from"),
                    "phases must be listed in order, each starting after the one before".into(),
                )),
                Some(from) => last = Some(from),
            }
        }
        let mut leads = 0;
        for (i, s) in self.stations.iter().enumerate() {
            for (k, u) in s.units.iter().enumerate() {
                if self.unit(u).is_none() {
                    out.push((
                        format!("stations[{i}].units[{k}]"),
                        format!("unknown management unit `{u}`"),
                    ));
                }
            }
            for (k, d) in s.departments.iter().enumerate() {
                if !self.departments.iter().any(|x| &x.id == d) {
                    out.push((
                        format!("stations[{i}].departments[{k}]"),
                        format!("unknown department `{d}`"),
                    ));
                }
            }
            leads += usize::from(s.leads_difficult);
            if s.leads_difficult && leads > 1 {
                out.push((
                    format!("stations[{i}].leads_difficult"),
                    "only one station leads difficult problems (escalations go to it)".into(),
                ));
            }
        }
        if let Some(m) = &self.mobile_team
            && !targets.contains(&m.target.as_str())
        {
            out.push((
                "mobile_team.target".into(),
                format!(
                    "unknown dispatch target `{}` (known: {})",
                    m.target,
                    targets.join(", ")
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_in_force_changes_at_its_local_start_time() {
        let area = crate::area::tests_support::area_with_phases(
            r#"
[[phases]]
id = "launch"
name = "实战启动"
from = 2026-10-09T08:00:00
[[phases]]
id = "intensive"
name = "实战攻坚"
from = 2026-11-01T08:00:00
[[phases]]
id = "long_term"
name = "长效管理"
from = 2026-11-11T08:00:00
"#,
        );
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let phase = |s| area.plan_phase_at(at(s)).map(|p| p.id.as_str());
        // Shanghai is UTC+8: 08:00 local is 00:00 UTC.
        assert_eq!(phase("2026-10-08T23:59:00Z"), None);
        assert_eq!(phase("2026-10-09T00:00:00Z"), Some("launch"));
        assert_eq!(phase("2026-10-31T23:59:59Z"), Some("launch"));
        assert_eq!(phase("2026-11-01T00:00:00Z"), Some("intensive"));
        assert_eq!(phase("2027-05-01T00:00:00Z"), Some("long_term"));
        assert!(area.validate_organisation(&[]).is_empty());
    }
}
