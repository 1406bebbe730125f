//! Per-camera and per-phase overrides of scenario thresholds: partial tables laid over the
//! catalog's thresholds (crowd gathering: over `[scenarios.crowd_gathering]`). Order: catalog,
//! then the camera's `scenario_overrides`, then the phase in force (a phase is a campaign of the
//! whole group, so it has the last word while it runs).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::catalog::{Catalog, RuleKind, RuleThresholds, validate_thresholds};
use super::settings::CrowdSettings;
use crate::area::{Area, GroupPhase, ScenarioOverrides};

/// The overrides of one configuration: its key area over the catalog and crowd settings.
pub struct Overrides<'a> {
    pub area: &'a Area,
    pub catalog: &'a Catalog,
    pub crowd: &'a CrowdSettings,
}

/// `base` with the fields of `over` replaced; unknown fields and wrong types are refused.
pub fn overlay<T: Serialize + DeserializeOwned>(base: &T, over: &toml::Table) -> Result<T, String> {
    let mut merged = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    for (k, v) in over {
        merged.insert(k.clone(), v.clone());
    }
    merged
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())
}

impl Overrides<'_> {
    /// The thresholds of track/zone rule `id` on camera `camera` while `phase` is in force.
    pub fn rule_thresholds(
        &self,
        camera: usize,
        phase: Option<&GroupPhase>,
        id: &str,
    ) -> Result<RuleThresholds, String> {
        let entry = self
            .catalog
            .entry(id)
            .ok_or_else(|| format!("unknown scenario `{id}`"))?;
        let mut t = entry.thresholds.clone();
        for over in [
            self.area.cameras[camera].scenario_overrides.get(id),
            phase.and_then(|p| p.scenario_overrides.get(id)),
        ]
        .into_iter()
        .flatten()
        {
            t = overlay(&t, over)?;
        }
        validate_thresholds(&t)?;
        Ok(t)
    }

    /// Crowd gathering settings on camera `camera` while `phase` is in force (the phase's
    /// `crowd_min_persons` / `crowd_min_duration_seconds` shorthands included).
    pub fn crowd_settings(
        &self,
        camera: usize,
        phase: Option<&GroupPhase>,
    ) -> Result<CrowdSettings, String> {
        let id = "crowd_gathering";
        let mut s = self.crowd.clone();
        for over in [
            self.area.cameras[camera].scenario_overrides.get(id),
            phase.and_then(|p| p.scenario_overrides.get(id)),
        ]
        .into_iter()
        .flatten()
        {
            s = overlay(&s, over)?;
        }
        if let Some(p) = phase {
            s.min_persons = p.crowd_min_persons.unwrap_or(s.min_persons);
            s.min_duration_seconds = p
                .crowd_min_duration_seconds
                .unwrap_or(s.min_duration_seconds);
        }
        Ok(s)
    }

    /// Checks every override table, first field by field (so that an unknown field or a wrong
    /// type points at its own line), then as a whole and in every combination a camera can
    /// meet at run time (its own overrides with each phase of its group): (field, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut fields_ok = true;
        let mut check = |path: String, overrides: &ScenarioOverrides| {
            for (id, table) in overrides {
                let Some(entry) = self.catalog.entry(id) else {
                    if !self.catalog.scenarios.is_empty() {
                        fields_ok = false;
                        out.push((
                            format!("{path}.{id}"),
                            format!(
                                "unknown scenario `{id}` (known: {})",
                                self.catalog.ids().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    continue;
                };
                for (k, v) in table {
                    let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                    let result = if entry.rule == RuleKind::Crowd {
                        overlay(self.crowd, &one).map(|_| ())
                    } else {
                        overlay(&entry.thresholds, &one).map(|_| ())
                    };
                    if let Err(e) = result {
                        fields_ok = false;
                        out.push((format!("{path}.{id}.{k}"), e));
                    }
                }
            }
        };
        for (i, c) in self.area.cameras.iter().enumerate() {
            check(
                format!("cameras[{i}].scenario_overrides"),
                &c.scenario_overrides,
            );
        }
        for (i, g) in self.area.groups.iter().enumerate() {
            for (k, p) in g.phases.iter().enumerate() {
                check(
                    format!("groups[{i}].phases[{k}].scenario_overrides"),
                    &p.scenario_overrides,
                );
            }
        }
        // The phases' crowd shorthands, with the crowd rule's own ranges.
        for (i, g) in self.area.groups.iter().enumerate() {
            for (k, p) in g.phases.iter().enumerate() {
                let s = CrowdSettings {
                    min_persons: p.crowd_min_persons.unwrap_or(self.crowd.min_persons),
                    min_duration_seconds: p
                        .crowd_min_duration_seconds
                        .unwrap_or(self.crowd.min_duration_seconds),
                    ..self.crowd.clone()
                };
                for (field, message) in s.validate() {
                    let shorthand = match field {
                        "min_persons" if p.crowd_min_persons.is_some() => "crowd_min_persons",
                        "min_duration_seconds" if p.crowd_min_duration_seconds.is_some() => {
                            "crowd_min_duration_seconds"
                        }
                        // The section's own values: reported at `scenarios.crowd_gathering`.
                        _ => continue,
                    };
                    out.push((format!("groups[{i}].phases[{k}].{shorthand}"), message));
                }
            }
        }
        if !fields_ok {
            return out;
        }
        // Whole tables, per camera, without and with each phase of its group.
        for (i, cam) in self.area.cameras.iter().enumerate() {
            let phases = self
                .area
                .camera_group(cam)
                .map(|g| g.phases.iter().map(Some).collect::<Vec<_>>())
                .unwrap_or_default();
            for (k, phase) in std::iter::once(None).chain(phases).enumerate() {
                let at = |id: &str| match phase {
                    None => format!("cameras[{i}].scenario_overrides.{id}"),
                    Some(p) => {
                        let g = self
                            .area
                            .groups
                            .iter()
                            .position(|g| g.id == cam.group)
                            .unwrap_or(0);
                        let overridden = p.scenario_overrides.contains_key(id);
                        if overridden {
                            format!("groups[{g}].phases[{}].scenario_overrides.{id}", k - 1)
                        } else {
                            format!("cameras[{i}].scenario_overrides.{id}")
                        }
                    }
                };
                let ids = cam
                    .scenario_overrides
                    .keys()
                    .chain(phase.into_iter().flat_map(|p| p.scenario_overrides.keys()));
                let mut seen = std::collections::BTreeSet::new();
                for id in ids.filter(|id| seen.insert(id.as_str())) {
                    let Some(entry) = self.catalog.entry(id) else {
                        continue;
                    };
                    let when = phase.map_or(String::new(), |p| {
                        format!(" (during phase `{}` on camera `{}`)", p.name, cam.id)
                    });
                    let problem = if entry.rule == RuleKind::Crowd {
                        match self.crowd_settings(i, phase) {
                            Ok(s) => s
                                .validate()
                                .into_iter()
                                .map(|(f, m)| format!("{f} {m}"))
                                .next(),
                            Err(e) => Some(e),
                        }
                    } else {
                        self.rule_thresholds(i, phase, id).err()
                    };
                    if let Some(p) = problem {
                        let entry = (at(id), format!("{p}{when}"));
                        if !out.contains(&entry) {
                            out.push(entry);
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const AREA: &str = r#"
[centre]
name = "c"
[[units]]
id = "u"
name = "u"
[[groups]]
id = "g"
name = "g"
unit = "u"
[[groups.phases]]
name = "intensive"
from = 2026-11-01
to = 2026-11-30
[groups.phases.scenario_overrides.illegal_parking]
dwell_seconds = 30.0
[groups.phases.scenario_overrides.crowd_gathering]
min_persons = 4
[[cameras]]
id = "c"
name = "c"
unit = "u"
group = "g"
uri = "test:"
[cameras.scenario_overrides.illegal_parking]
dwell_seconds = 60.0
cooldown_seconds = 900.0
[cameras.scenario_overrides.crowd_gathering]
min_duration_seconds = 20.0
[model]
card = "../models/nanodet-g-416-coco.toml"
[dispatch]
url = "http://127.0.0.1:1/"
"#;

    fn dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn camera_then_phase_overrides_lay_over_the_catalog() {
        let c = Config::from_text(AREA, "t.toml", &dir()).unwrap_or_else(|e| panic!("{e}"));
        let catalog = c
            .catalog
            .entry("illegal_parking")
            .unwrap()
            .thresholds
            .clone();
        let plain = c
            .overrides()
            .rule_thresholds(0, None, "illegal_parking")
            .unwrap();
        assert_eq!((plain.dwell_seconds, plain.cooldown_seconds), (60.0, 900.0));
        assert_eq!(
            plain.clear_seconds, catalog.clear_seconds,
            "untouched fields stay"
        );
        let phase = c.area.phase_named(0, Some("intensive"));
        assert!(phase.is_some());
        let intensive = c
            .overrides()
            .rule_thresholds(0, phase, "illegal_parking")
            .unwrap();
        assert_eq!(
            (intensive.dwell_seconds, intensive.cooldown_seconds),
            (30.0, 900.0)
        );
        let crowd = c.overrides().crowd_settings(0, phase).unwrap();
        assert_eq!((crowd.min_persons, crowd.min_duration_seconds), (4, 20.0));
        let crowd = c.overrides().crowd_settings(0, None).unwrap();
        assert_eq!(crowd.min_persons, c.scenarios.crowd_gathering.min_persons);
    }

    #[test]
    fn a_bad_override_names_its_line_and_field() {
        let text = AREA
            .replace("cooldown_seconds = 900.0", "cooldown_secs = 900.0")
            .replace("min_persons = 4", "min_persons = \"four\"")
            .replace(
                "[cameras.scenario_overrides.crowd_gathering]",
                "[cameras.scenario_overrides.crowd_gathering]\n[cameras.scenario_overrides.parking]\ndwell_seconds = 1.0",
            );
        let Err(ConfigError::Invalid(problems)) = Config::from_text(&text, "t.toml", &dir()) else {
            panic!("must be refused");
        };
        let found: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.field.as_str()))
            .collect();
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert!(
            found.contains(&(
                line_of("min_persons = \"four\""),
                "groups[0].phases[0].scenario_overrides.crowd_gathering.min_persons"
            )),
            "{problems:?}"
        );
        assert!(
            found.contains(&(
                line_of("cooldown_secs"),
                "cameras[0].scenario_overrides.illegal_parking.cooldown_secs"
            )),
            "{problems:?}"
        );
        assert!(
            found
                .iter()
                .any(|(_, f)| *f == "cameras[0].scenario_overrides.parking"),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn tables_are_checked_whole_and_with_each_phase() {
        // A pair that only makes sense together is accepted together.
        let text = AREA.replace(
            "cooldown_seconds = 900.0",
            "cooldown_seconds = 900.0\nnight_dwell_seconds = 20.0\nnight_hours = \"20:00-06:00\"",
        );
        let c = Config::from_text(&text, "t.toml", &dir()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.overrides()
                .rule_thresholds(0, None, "illegal_parking")
                .unwrap()
                .night_dwell_seconds,
            Some(20.0)
        );
        // Half of the pair is refused, and a crowd of zero persons too.
        let text = AREA
            .replace(
                "cooldown_seconds = 900.0",
                "cooldown_seconds = 900.0\nnight_dwell_seconds = 20.0",
            )
            .replace("min_persons = 4", "min_persons = 0");
        let Err(ConfigError::Invalid(problems)) = Config::from_text(&text, "t.toml", &dir()) else {
            panic!("must be refused");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(
            fields.contains(&"cameras[0].scenario_overrides.illegal_parking"),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.field
                == "groups[0].phases[0].scenario_overrides.crowd_gathering"
                && p.message.contains("min_persons")
                && p.message.contains("intensive")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_field_in_the_second_camera_is_its_only_problem() {
        // Two cameras, each with a typo right after its uri: commenting a typo out must not
        // take the line above it along (which once reported a spurious "missing field uri").
        let second = "[[cameras]]\nid = \"d\"\nname = \"d\"\nunit = \"u\"\ngroup = \"g\"\nuri = \"test:\"\nlop = true\n[model]";
        let text = AREA
            .replace("uri = \"test:\"\n", "uri = \"test:\"\nlop = true\n")
            .replace("[model]", second);
        let Err(ConfigError::Invalid(problems)) = Config::from_text(&text, "t.toml", &dir()) else {
            panic!("must be refused");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["cameras[0].lop", "cameras[1].lop"], "{problems:?}");
    }
}
