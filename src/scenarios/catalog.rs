//! The scenario catalog: data, not code. Per scenario its id, Chinese and English names, category
//! code (from the catalog's own code table: towns use local 城市管理 code tables), department,
//! workstation, handling level (103060), the object kinds it needs from the model, the rule that
//! detects it and that rule's default thresholds. `config/scenarios.toml` is the shipped default
//! (compiled in); `[scenarios] catalog = "path"` in the key-area configuration replaces it.
//!
//! Strings of a loaded catalog are interned (`&'static str`, one copy per distinct string per
//! process), so [`ScenarioInfo`] stays `Copy` and events carry it without allocation.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;

use super::{HandlingLevel, ScenarioInfo};
use crate::infer::kinds::ObjectKind;

/// The shipped catalog, compiled into the binary.
pub const EMBEDDED_CATALOG: &str = include_str!("../../config/scenarios.toml");

pub const DEFAULT_RULE_SCORE_THRESHOLD: f32 = 0.4;
pub const DEFAULT_DWELL_SECONDS: f64 = 60.0;
pub const DEFAULT_CLEAR_SECONDS: f64 = 10.0;
pub const DEFAULT_COOLDOWN_SECONDS: f64 = 300.0;
pub const DEFAULT_MIN_COUNT: usize = 1;
/// A track is stationary while its centre stays within this fraction of its box diagonal.
pub const DEFAULT_STATIONARY_TOLERANCE_RATIO: f64 = 0.25;
/// Persistence: the object must be seen in at least this share of the analysed frames.
pub const DEFAULT_MIN_PERSISTENCE_RATIO: f64 = 0.5;
/// Co-occurrence: companions within this many subject-box heights of the subject.
pub const DEFAULT_COMPANION_DISTANCE_RATIO: f64 = 1.5;
/// Frames per second a scenario needs when its catalog entry does not say: the rate of the
/// fastest shipped scenarios (crowds, fire), so a town catalog without rates loses nothing.
pub const DEFAULT_SCENARIO_ANALYSIS_FPS: f64 = 1.0;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read scenario catalog {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario catalog {name}: {message}")]
    Invalid { name: String, message: String },
}

/// How a scenario is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Persons counted in the zone over a duration (thresholds: `[scenarios.crowd_gathering]` of
    /// the key-area configuration, with phase overrides).
    Crowd,
    /// One episode per tracked object that stays (stationary) in the zone for the dwell.
    TrackDwell,
    /// One episode per zone while at least `min_count` objects dwell in it.
    ZoneCount,
}

/// Default thresholds of a scenario's rule; every field has a named default.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleThresholds {
    #[serde(default = "d_score")]
    pub score_threshold: f32,
    /// How long an object must stay (stationary) in the zone.
    #[serde(default = "d_dwell")]
    pub dwell_seconds: f64,
    /// A stricter dwell inside `night_hours` (e.g. e-bike charging at night).
    #[serde(default)]
    pub night_dwell_seconds: Option<f64>,
    /// Local-time window of the night, "HH:MM-HH:MM".
    #[serde(default)]
    pub night_hours: Option<String>,
    /// Only evaluate inside these windows (empty: always).
    #[serde(default)]
    pub active_hours: Vec<String>,
    /// Never evaluate inside these windows (e.g. the garbage drop-off hours).
    #[serde(default)]
    pub excluded_hours: Vec<String>,
    /// Require the object to be stationary (parking, vending) rather than merely present.
    #[serde(default = "d_true")]
    pub stationary: bool,
    #[serde(default = "d_tolerance")]
    pub stationary_tolerance_ratio: f64,
    #[serde(default = "d_persistence")]
    pub min_persistence_ratio: f64,
    /// Zone-count rules: objects needed at once.
    #[serde(default = "d_min_count")]
    pub min_count: usize,
    /// The episode ends after its condition stays false (or the object is gone) this long.
    #[serde(default = "d_clear")]
    pub clear_seconds: f64,
    /// After an episode ends, the same place (same zone, or an overlapping object) raises no new
    /// case for this long: a parked car that the tracker loses and finds again stays one case.
    #[serde(default = "d_cooldown")]
    pub cooldown_seconds: f64,
    #[serde(default = "d_companion_distance")]
    pub companion_distance_ratio: f64,
}

impl Default for RuleThresholds {
    fn default() -> Self {
        toml::from_str("").expect("every threshold has a default")
    }
}

fn d_score() -> f32 {
    DEFAULT_RULE_SCORE_THRESHOLD
}
fn d_dwell() -> f64 {
    DEFAULT_DWELL_SECONDS
}
fn d_true() -> bool {
    true
}
fn d_tolerance() -> f64 {
    DEFAULT_STATIONARY_TOLERANCE_RATIO
}
fn d_persistence() -> f64 {
    DEFAULT_MIN_PERSISTENCE_RATIO
}
fn d_min_count() -> usize {
    DEFAULT_MIN_COUNT
}
fn d_clear() -> f64 {
    DEFAULT_CLEAR_SECONDS
}
fn d_cooldown() -> f64 {
    DEFAULT_COOLDOWN_SECONDS
}
fn d_companion_distance() -> f64 {
    DEFAULT_COMPANION_DISTANCE_RATIO
}

/// One row of the category code table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryCode {
    /// 大类, e.g. 街面秩序.
    pub major: String,
    /// 小类, e.g. 机动车乱停放.
    pub minor: String,
}

/// One scenario of the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioEntry {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// A key of the catalog's `[codes]` table.
    pub category_code: String,
    pub department: String,
    pub workstation: String,
    pub level: HandlingLevel,
    pub rule: RuleKind,
    /// The subject's kinds (any of them); the scenario is inactive when the model has none.
    pub kinds: Vec<ObjectKind>,
    /// Co-occurrence: at least one of these must be near the subject (empty: no requirement).
    #[serde(default)]
    pub companion_kinds: Vec<ObjectKind>,
    /// What model the scenario needs when the shipped kinds cannot express it.
    #[serde(default)]
    pub needs: Option<String>,
    /// Frames per second the scenario needs analysed (crowds and fire about 1, a parked car or
    /// piled garbage a frame every few seconds); a camera runs at the highest need of its zones.
    #[serde(default = "default_scenario_fps")]
    pub analysis_fps: f64,
    #[serde(default)]
    pub thresholds: RuleThresholds,
}

fn default_scenario_fps() -> f64 {
    DEFAULT_SCENARIO_ANALYSIS_FPS
}

/// The plan's two kinds of station a case is dispatched through.
pub const WORKSTATIONS: [&str; 2] = ["联勤联动工作站", "村居工作站"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    departments: Vec<String>,
    codes: BTreeMap<String, CategoryCode>,
    scenarios: Vec<ScenarioEntry>,
}

/// The loaded catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The departments a scenario may name (empty: not checked).
    pub departments: Vec<String>,
    pub codes: BTreeMap<String, CategoryCode>,
    pub scenarios: Vec<ScenarioEntry>,
    infos: Vec<ScenarioInfo>,
}

/// Why a scenario cannot run with the configured model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inactive {
    pub id: String,
    pub reason: String,
}

impl Catalog {
    /// The shipped catalog.
    pub fn embedded() -> Catalog {
        Self::parse(EMBEDDED_CATALOG, "<embedded config/scenarios.toml>")
            .expect("the shipped catalog is valid (unit-tested)")
    }

    /// The catalog at `path`, or the shipped one.
    pub fn load_or_embedded(path: Option<&Path>) -> Result<Catalog, CatalogError> {
        match path {
            None => Ok(Self::embedded()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| CatalogError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    pub fn parse(text: &str, name: &str) -> Result<Catalog, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            name: name.to_owned(),
            message,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut seen = HashSet::new();
        for s in &file.scenarios {
            if !seen.insert(s.id.as_str()) {
                return Err(invalid(format!("scenario `{}` listed twice", s.id)));
            }
            if !file.codes.contains_key(&s.category_code) {
                return Err(invalid(format!(
                    "scenario `{}`: category_code `{}` is not in [codes]",
                    s.id, s.category_code
                )));
            }
            if let Err(e) = validate_thresholds(&s.thresholds) {
                return Err(invalid(format!("scenario `{}`: {e}", s.id)));
            }
            if let Err(e) = crate::area::profile::check_analysis_fps(s.analysis_fps) {
                return Err(invalid(format!("scenario `{}`: analysis_fps {e}", s.id)));
            }
            if !WORKSTATIONS.contains(&s.workstation.as_str()) {
                return Err(invalid(format!(
                    "scenario `{}`: workstation `{}` is not one of {}",
                    s.id,
                    s.workstation,
                    WORKSTATIONS.join(", ")
                )));
            }
            if !file.departments.is_empty() && !file.departments.contains(&s.department) {
                return Err(invalid(format!(
                    "scenario `{}`: department `{}` is not in `departments` ({})",
                    s.id,
                    s.department,
                    file.departments.join(", ")
                )));
            }
        }
        let infos = file
            .scenarios
            .iter()
            .map(|s| ScenarioInfo {
                id: intern(&s.id),
                name_zh: intern(&s.name_zh),
                name_en: intern(&s.name_en),
                category_code: intern(&s.category_code),
                // Codes are checked above: every scenario's code is in the table.
                category_major: intern(
                    file.codes
                        .get(&s.category_code)
                        .map_or("", |c| c.major.as_str()),
                ),
                category_minor: intern(
                    file.codes
                        .get(&s.category_code)
                        .map_or("", |c| c.minor.as_str()),
                ),
                department: intern(&s.department),
                workstation: intern(&s.workstation),
                level: s.level,
            })
            .collect();
        Ok(Catalog {
            departments: file.departments,
            codes: file.codes,
            scenarios: file.scenarios,
            infos,
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.scenarios.iter().map(|s| s.id.as_str())
    }

    pub fn info(&self, id: &str) -> Option<ScenarioInfo> {
        self.infos.iter().find(|s| s.id == id).copied()
    }

    pub fn entry(&self, id: &str) -> Option<&ScenarioEntry> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    /// The analysis rate `scenarios` need together: the highest of their rates (`None` when
    /// none of them is in the catalog).
    pub fn needed_fps<'a>(&self, scenarios: impl IntoIterator<Item = &'a str>) -> Option<f64> {
        scenarios
            .into_iter()
            .filter_map(|id| self.entry(id))
            .map(|e| e.analysis_fps)
            .reduce(f64::max)
    }

    /// Scenarios the model cannot serve, given the kinds its classes map to, with the reason.
    pub fn inactive(&self, provided: &[ObjectKind]) -> Vec<Inactive> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            if let Some(reason) = inactive_reason(s, provided) {
                out.push(Inactive {
                    id: s.id.clone(),
                    reason,
                });
            }
        }
        out
    }
}

fn inactive_reason(s: &ScenarioEntry, provided: &[ObjectKind]) -> Option<String> {
    let names = |ks: &[ObjectKind]| ks.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    let needs = s
        .needs
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    if s.kinds.is_empty() {
        return Some(format!(
            "no object kind expresses it: only a learned zone state can serve it{needs}"
        ));
    }
    if !s.kinds.iter().any(|k| provided.contains(k)) {
        return Some(format!(
            "no configured model provides any of the kinds {}{needs}",
            names(&s.kinds)
        ));
    }
    if !s.companion_kinds.is_empty() && !s.companion_kinds.iter().any(|k| provided.contains(k)) {
        return Some(format!(
            "no configured model provides any of the companion kinds {}{needs}",
            names(&s.companion_kinds)
        ));
    }
    None
}

/// Co-occurrence farther than this many subject-box heights spans the whole frame: a typo.
pub const MAX_COMPANION_DISTANCE_RATIO: f64 = 100.0;

/// Checks a set of thresholds; also used for per-zone overrides. Every number is range-checked:
/// a non-finite or absurd one is refused here rather than misbehaving in a rule.
pub fn validate_thresholds(t: &RuleThresholds) -> Result<(), String> {
    use super::settings::{MAX_RULE_COUNT, MAX_RULE_SECONDS};
    use crate::area::profile::HoursWindow;
    use crate::track::MAX_STATIONARY_TOLERANCE_RATIO;
    if !(0.0..=1.0).contains(&t.score_threshold) {
        return Err(format!(
            "score_threshold must be a score in [0, 1], got {}",
            t.score_threshold
        ));
    }
    let times = [
        ("dwell_seconds", Some(t.dwell_seconds)),
        ("clear_seconds", Some(t.clear_seconds)),
        ("cooldown_seconds", Some(t.cooldown_seconds)),
        ("night_dwell_seconds", t.night_dwell_seconds),
    ];
    for (field, v) in times {
        if let Some(v) = v
            && !(0.0..=MAX_RULE_SECONDS).contains(&v)
        {
            return Err(format!(
                "{field} must be a number of seconds in [0, {MAX_RULE_SECONDS}], got {v}"
            ));
        }
    }
    let ratios = [
        ("min_persistence_ratio", t.min_persistence_ratio, 1.0),
        (
            "stationary_tolerance_ratio",
            t.stationary_tolerance_ratio,
            MAX_STATIONARY_TOLERANCE_RATIO,
        ),
        (
            "companion_distance_ratio",
            t.companion_distance_ratio,
            MAX_COMPANION_DISTANCE_RATIO,
        ),
    ];
    for (field, v, max) in ratios {
        if !(0.0..=max).contains(&v) {
            return Err(format!("{field} must be in [0, {max}], got {v}"));
        }
    }
    if !(1..=MAX_RULE_COUNT).contains(&t.min_count) {
        return Err(format!(
            "min_count must be a count in [1, {MAX_RULE_COUNT}], got {}",
            t.min_count
        ));
    }
    for w in t
        .active_hours
        .iter()
        .chain(&t.excluded_hours)
        .chain(t.night_hours.iter())
    {
        HoursWindow::parse(w)?;
    }
    if t.night_dwell_seconds.is_some() != t.night_hours.is_some() {
        return Err("night_dwell_seconds and night_hours go together".into());
    }
    Ok(())
}

/// One `&'static str` per distinct string for the life of the process.
fn intern(s: &str) -> &'static str {
    static POOL: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool.get_or_insert_with(HashSet::new);
    if let Some(&existing) = pool.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    pool.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command centre's 10 smart scenarios and the town's garbage sorting (two rules:
    /// drop-offs outside the hours, and overflowing bins / bags left outside).
    const PLAN: [&str; 12] = [
        "ebike_charging",
        "straw_burning",
        "illegal_parking",
        "nonmotor_parking",
        "street_vending",
        "shopfront_business",
        "crowd_gathering",
        "exposed_garbage",
        "street_drying",
        "waterlogging",
        "garbage_sorting",
        "garbage_overflow",
    ];

    #[test]
    fn the_shipped_catalog_has_the_plan_and_resolves_its_codes() {
        let c = Catalog::embedded();
        let mut ids: Vec<&str> = c.ids().collect();
        ids.sort_unstable();
        let mut plan = PLAN.to_vec();
        plan.sort_unstable();
        assert_eq!(ids, plan);
        let parking = c.info("illegal_parking").unwrap();
        assert_eq!(parking.name_zh, "机动车乱停放");
        let code = &c.codes[parking.category_code];
        assert_eq!(
            (code.major.as_str(), code.minor.as_str()),
            ("街面秩序", "机动车乱停放")
        );
        // The plan (shared/plan/FACTS.md): e-bike charging is a key item of the joint-duty
        // station, straw burning of the village stations; the night shift is 20:00-08:00.
        assert_eq!(
            c.info("ebike_charging").unwrap().workstation,
            "联勤联动工作站"
        );
        assert_eq!(c.info("straw_burning").unwrap().workstation, "村居工作站");
        assert_eq!(
            c.entry("ebike_charging")
                .unwrap()
                .thresholds
                .night_hours
                .as_deref(),
            Some("20:00-08:00")
        );
        assert_eq!(
            c.departments,
            [
                "公安",
                "城管",
                "市场",
                "城运中心（安管）",
                "水务",
                "规保办",
                "人口办",
                "城建中心",
                "社保大队"
            ]
        );
        for s in &c.scenarios {
            assert!(c.departments.contains(&s.department), "{}", s.id);
        }
    }

    #[test]
    fn a_department_or_workstation_outside_the_plan_is_refused() {
        let text =
            EMBEDDED_CATALOG.replacen("department = \"市场\"", "department = \"市场监管\"", 1);
        let e = Catalog::parse(&text, "town.toml").unwrap_err().to_string();
        assert!(
            e.contains("department `市场监管` is not in `departments`"),
            "{e}"
        );
        let text =
            EMBEDDED_CATALOG.replacen("workstation = \"村居工作站\"", "workstation = \"总站\"", 1);
        let e = Catalog::parse(&text, "town.toml").unwrap_err().to_string();
        assert!(e.contains("workstation `总站` is not one of"), "{e}");
    }

    #[test]
    fn coco_kinds_leave_exactly_the_custom_model_scenarios_inactive() {
        let coco = [
            ObjectKind::Person,
            ObjectKind::Bicycle,
            ObjectKind::Motorcycle,
            ObjectKind::Car,
            ObjectKind::Bus,
            ObjectKind::Truck,
            ObjectKind::Umbrella,
            ObjectKind::Chair,
            ObjectKind::Table,
            ObjectKind::Bench,
        ];
        let inactive: Vec<String> = Catalog::embedded()
            .inactive(&coco)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(
            inactive,
            [
                "straw_burning",
                "exposed_garbage",
                "street_drying",
                "waterlogging",
                "garbage_overflow"
            ]
        );
        // A model without stall objects cannot serve street vending.
        let persons_only = Catalog::embedded().inactive(&[ObjectKind::Person]);
        let vending = persons_only
            .iter()
            .find(|i| i.id == "street_vending")
            .unwrap();
        assert!(vending.reason.contains("companion"), "{}", vending.reason);
    }

    #[test]
    fn codes_are_data_and_unknown_fields_or_codes_are_refused() {
        let text = r#"
[codes]
"X1" = { major = "市容环境", minor = "乱停车" }
[[scenarios]]
id = "p"
name_zh = "乱停车"
name_en = "Parking"
category_code = "X1"
department = "城管"
workstation = "村居工作站"
level = "simple"
rule = "track_dwell"
kinds = ["car"]
thresholds = { dwell_seconds = 30.0 }
"#;
        let c = Catalog::parse(text, "t").unwrap();
        let info = c.info("p").unwrap();
        assert_eq!(info.level.deadline_minutes(), 10);
        assert_eq!(c.codes[info.category_code].minor, "乱停车");
        assert_eq!(c.entry("p").unwrap().thresholds.dwell_seconds, 30.0);
        assert!(Catalog::parse(&text.replace("\"X1\" =", "\"X2\" ="), "t").is_err());
        assert!(Catalog::parse(&text.replace("dwell_seconds", "dwell_secs"), "t").is_err());
    }
}
