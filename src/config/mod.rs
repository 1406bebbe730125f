//! The configuration file: the key area (command centre, management units, camera groups,
//! cameras, zones; `crate::area`) composed with each stage's own settings section, which the
//! stage defines and validates. This module parses, asks each stage to check its section,
//! checks the cross-references (units, groups, scenarios, routes), and reports every problem
//! with file, line and field. It sits above every stage and no stage imports it.

mod locate;
pub mod models;
mod report;
mod routing;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::area::kinds::ObjectKind;
use crate::area::{Area, Camera, CommandCentre, Group, Unit, profile};
use crate::cases::settings::CaseSettings;
use crate::cluster::settings::ClusterSettings;
use crate::dispatch::settings::DispatchSettings;
use crate::gate::GateSettings;
use crate::infer::settings::{InferenceSettings, ModelSettings};
use crate::ingest::settings::IngestSettings;
use crate::review::ConsoleConfig;
use crate::review::settings::ReviewSettings;
use crate::scenarios::ScenarioSetup;
use crate::scenarios::catalog::Catalog;
use crate::scenarios::overrides::Overrides;
use crate::scenarios::settings::ScenarioSettings;
use crate::states::StatesSettings;
use crate::telemetry::TelemetrySettings;
use crate::track::TrackerSettings;
use locate::SourceMap;

/// The default configuration compiled into the binary: the sample streams as cameras of the
/// key area, the shipped model, and a local dispatch receiver.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");
/// Relative paths in the embedded default resolve against the source tree's `config/`.
pub const EMBEDDED_DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

/// A camera's latitude is within ±90°, its longitude within ±180°.
pub const MAX_LATITUDE: f64 = 90.0;
pub const MAX_LONGITUDE: f64 = 180.0;

/// The file as written: the key area's lists beside every stage's section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    centre: CommandCentre,
    #[serde(default)]
    units: Vec<Unit>,
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    cameras: Vec<Camera>,
    #[serde(default)]
    phases: Vec<crate::area::organisation::PlanPhase>,
    #[serde(default)]
    stations: Vec<crate::area::organisation::Station>,
    #[serde(default)]
    departments: Vec<crate::area::organisation::Department>,
    #[serde(default)]
    mobile_team: Option<crate::area::organisation::MobileTeam>,
    /// One model: the short form of `[[models]]`.
    #[serde(default)]
    model: Option<ModelSettings>,
    #[serde(default)]
    models: Vec<ModelSettings>,
    #[serde(default)]
    inference: InferenceSettings,
    #[serde(default)]
    ingest: IngestSettings,
    #[serde(default)]
    gate: GateSettings,
    #[serde(default)]
    scenarios: ScenarioSettings,
    #[serde(default)]
    tracker: TrackerSettings,
    #[serde(default)]
    states: StatesSettings,
    #[serde(default)]
    cases: CaseSettings,
    dispatch: DispatchSettings,
    #[serde(default)]
    telemetry: TelemetrySettings,
    #[serde(default)]
    review: Option<ReviewSettings>,
    #[serde(default)]
    live: crate::live::settings::LiveSettings,
    #[serde(default)]
    reports: crate::stats::settings::ReportSettings,
    #[serde(default)]
    cluster: Option<ClusterSettings>,
}

/// A loaded and validated configuration: the key area and each stage's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub area: Arc<Area>,
    /// The models, in the order of the file (`[model]` is the one model of its own form).
    pub models: Vec<ModelSettings>,
    /// Written as `[model]`: errors name `model.*` instead of `models[0].*`.
    pub legacy_model: bool,
    pub inference: InferenceSettings,
    pub ingest: IngestSettings,
    pub gate: GateSettings,
    pub scenarios: ScenarioSettings,
    /// The per-camera multi-object tracker the dwell rules use.
    pub tracker: TrackerSettings,
    /// Learned zone states: where their classifier cards are.
    pub states: StatesSettings,
    pub cases: CaseSettings,
    pub dispatch: DispatchSettings,
    pub telemetry: TelemetrySettings,
    /// The review console and confidence tiers; absent: every case is dispatched unattended.
    pub review: Option<ReviewSettings>,
    /// The wall's live video and full-resolution evidence.
    pub live: crate::live::settings::LiveSettings,
    /// Reports `run` writes on a schedule (`[reports] dir`; absent: none).
    pub reports: crate::stats::settings::ReportSettings,
    /// Several nodes sharing this configuration, camera groups owned through etcd; absent:
    /// one node analyses every camera.
    pub cluster: Option<ClusterSettings>,
    /// Where this configuration came from, for messages.
    pub source_name: String,
    /// The scenario catalog: `scenarios.catalog`, or the shipped one.
    pub catalog: Arc<Catalog>,
    /// The learned zone states whose cards were in `[states] cards_dir` when this
    /// configuration was read: (camera, zone, scenario).
    pub state_zones: Vec<(String, String, String)>,
}

impl ConfigFile {
    fn into_config(self, base_dir: &Path, source_name: &str) -> Config {
        Config {
            area: Arc::new(Area {
                centre: self.centre,
                units: self.units,
                groups: self.groups,
                cameras: self.cameras,
                phases: self.phases,
                stations: self.stations,
                departments: self.departments,
                mobile_team: self.mobile_team,
                base_dir: base_dir.to_path_buf(),
            }),
            legacy_model: self.model.is_some(),
            models: self.model.into_iter().chain(self.models).collect(),
            inference: self.inference,
            ingest: self.ingest,
            gate: self.gate,
            scenarios: self.scenarios,
            tracker: self.tracker,
            states: self.states,
            cases: self.cases,
            dispatch: self.dispatch,
            telemetry: self.telemetry,
            review: self.review,
            live: self.live,
            reports: self.reports,
            cluster: self.cluster,
            source_name: source_name.to_owned(),
            catalog: Arc::default(),
            state_zones: Vec::new(),
        }
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `cameras[1].unit`; empty when the problem is not tied to a field.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

impl Config {
    /// Loads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_text(&text, &path.display().to_string(), &base)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::from_text(
            EMBEDDED_DEFAULT,
            "<embedded config/default.toml>",
            Path::new(EMBEDDED_DEFAULT_DIR),
        )
    }

    /// Parses, then validates; collects all problems rather than stopping at the first.
    pub fn from_text(text: &str, name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let map = SourceMap::new(text);
        let mut problems = Vec::new();
        let parsed = parse_collecting(text, name, &map, &mut problems);
        if let Some(file) = parsed {
            let mut config = file.into_config(base_dir, name);
            let catalog_path = config.scenarios.catalog.as_ref().map(|p| config.resolve(p));
            match Catalog::load_or_embedded(catalog_path.as_deref()) {
                Ok(c) => config.catalog = Arc::new(c),
                Err(e) => problems.push(problem_at_field(
                    name,
                    &map,
                    "scenarios.catalog",
                    e.to_string(),
                )),
            }
            config.read_state_zones();
            config.set_zone_needs();
            for (field, message) in config.validate() {
                problems.push(problem_at_field(name, &map, &field, message));
            }
            if problems.is_empty() {
                return Ok(config);
            }
        }
        problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError::Invalid(problems))
    }

    /// Reads which zones the cards in `[states] cards_dir` serve now (at load, and on a reload
    /// without a file to re-read).
    pub fn read_state_zones(&mut self) {
        self.state_zones = self
            .states_dir()
            .map(|d| crate::states::scorer::card_identities(&d))
            .unwrap_or_default();
    }

    /// Writes into each zone what its scenarios need (the catalog's rates), which the cameras'
    /// profiles read.
    fn set_zone_needs(&mut self) {
        let catalog = self.catalog.clone();
        let area = Arc::make_mut(&mut self.area);
        for zone in area.cameras.iter_mut().flat_map(|c| c.zones.iter_mut()) {
            zone.scenario_fps = catalog
                .needed_fps(zone.scenarios.iter().map(String::as_str))
                .unwrap_or(0.0);
        }
    }

    /// Resolves a path from this file against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.area.resolve(p)
    }

    /// The object kinds the configured models' classes map to (all models together), or why
    /// they are unknown.
    pub fn model_kinds(&self) -> Result<Vec<ObjectKind>, String> {
        let mut kinds: Vec<ObjectKind> = self.models_kinds()?.concat();
        kinds.sort_unstable();
        kinds.dedup();
        Ok(kinds)
    }

    /// The kinds the scenario stage will see (the model's, and the fire baseline's).
    pub fn provided_kinds(&self) -> Result<Vec<ObjectKind>, String> {
        let model = self.model_kinds()?;
        Ok(crate::scenarios::provided_kinds(
            &self.scenarios.fire_baseline,
            &model,
        ))
    }

    /// Scenario thresholds with the cameras' and phases' overrides laid over the catalog.
    pub fn overrides(&self) -> Overrides<'_> {
        Overrides {
            area: &self.area,
            catalog: &self.catalog,
            crowd: &self.scenarios.crowd_gathering,
        }
    }

    /// What the scenario stage is built from.
    pub fn scenario_setup(&self) -> Arc<ScenarioSetup> {
        Arc::new(ScenarioSetup {
            area: self.area.clone(),
            catalog: self.catalog.clone(),
            settings: self.scenarios.clone(),
            tracker: self.tracker,
            periodic_inference_seconds: self.gate.periodic_inference_seconds,
            model_kinds: self.model_kinds(),
            states: self.state_zones.clone(),
        })
    }

    /// What the case stage decides with: tiers, 103060 clock, escalation station; the shared
    /// handles (suppressions, cluster fence, routing) come from the run.
    pub fn triage(
        &self,
        suppressions: crate::cases::tiers::Suppressions,
        fence: Option<crate::cluster::Ownership>,
        routing: Arc<arc_swap::ArcSwap<crate::cases::routing::Routing>>,
    ) -> crate::cases::tiers::Triage {
        let v = &self.cases.verification;
        crate::cases::tiers::Triage {
            tiers: crate::cases::tiers::Tiers::new(self.review.as_ref().map(|r| r.tiers())),
            suppressions,
            fence,
            routing,
            snapshot_max_width_pixels: self.cases.snapshot_max_width_pixels,
            deadlines: self.cases.deadlines.clone(),
            report_self_resolved: v.enabled && v.report_self_resolved,
            escalation_station: self.area.escalation_station().map(|s| {
                crate::cases::platform::Station {
                    id: s.id.clone(),
                    name: s.name.clone(),
                }
            }),
            update_targets: self.update_targets(),
            live: None,
        }
    }

    /// The targets whose platform takes case updates: those that report status back
    /// (`[dispatch.status]`, or the embedded receiver); a platform that does not would only
    /// see requests for a route it lacks.
    pub fn update_targets(&self) -> Vec<String> {
        self.dispatch
            .per_target()
            .iter()
            .filter(|t| t.status.is_some() || (t.embedded_receiver.is_some() && t.url.is_none()))
            .map(|t| t.primary_id().to_owned())
            .collect()
    }

    /// What the review console reads (absent `[review]`: its defaults).
    pub fn console_config(&self) -> ConsoleConfig {
        ConsoleConfig {
            area: self.area.clone(),
            catalog: self.catalog.clone(),
            settings: self.review.clone().unwrap_or_default(),
            routing: self.dispatch.routing(),
            deadlines: self.cases.deadlines.clone(),
            update_targets: self.update_targets(),
        }
    }

    /// Semantic checks; returns (field path, message) pairs.
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |field: String, msg: String| out.push((field, msg));
        let area = &self.area;
        unique_ids(area.units.iter().map(|u| u.id.as_str()), "units", &mut err);
        unique_ids(
            area.groups.iter().map(|g| g.id.as_str()),
            "groups",
            &mut err,
        );
        unique_ids(
            area.cameras.iter().map(|c| c.id.as_str()),
            "cameras",
            &mut err,
        );
        let units: HashSet<&str> = area.units.iter().map(|u| u.id.as_str()).collect();
        let groups: HashMap<&str, &Group> =
            area.groups.iter().map(|g| (g.id.as_str(), g)).collect();

        for (i, g) in area.groups.iter().enumerate() {
            if !units.contains(g.unit.as_str()) {
                err(
                    format!("groups[{i}].unit"),
                    format!("unknown management unit `{}`", g.unit),
                );
            }
            if let Some(fps) = g.analysis_fps
                && let Err(e) = profile::check_analysis_fps(fps)
            {
                err(format!("groups[{i}].analysis_fps"), e);
            }
            for (k, w) in g.active_hours.iter().enumerate() {
                if let Err(e) = profile::HoursWindow::parse(w) {
                    err(format!("groups[{i}].active_hours[{k}]"), e);
                }
            }
            for (k, p) in g.phases.iter().enumerate() {
                for (field, msg) in profile::validate_phase(p) {
                    err(format!("groups[{i}].phases[{k}].{field}"), msg);
                }
            }
        }
        if area.cameras.is_empty() {
            err("cameras".into(), "no cameras configured".into());
        }
        for (i, c) in area.cameras.iter().enumerate() {
            if !units.contains(c.unit.as_str()) {
                err(
                    format!("cameras[{i}].unit"),
                    format!("unknown management unit `{}`", c.unit),
                );
            }
            match groups.get(c.group.as_str()) {
                None => err(
                    format!("cameras[{i}].group"),
                    format!("unknown camera group `{}`", c.group),
                ),
                Some(g) if g.unit != c.unit && units.contains(c.unit.as_str()) => err(
                    format!("cameras[{i}].group"),
                    format!(
                        "group `{}` belongs to unit `{}`, not to the camera's unit `{}`",
                        g.id, g.unit, c.unit
                    ),
                ),
                Some(_) => {}
            }
            if let Some(path) = crate::ingest::local_file(&c.uri, &area.base_dir)
                && !path.is_file()
            {
                err(
                    format!("cameras[{i}].uri"),
                    format!("file not found: {}", path.display()),
                );
            }
            if let Err(e) = crate::ingest::SourceKind::of(&c.uri) {
                err(format!("cameras[{i}].uri"), e);
            }
            if let Err(e) = crate::ingest::DecoderChoice::parse(&c.decoder) {
                err(format!("cameras[{i}].decoder"), e);
            }
            if let Some(p) = &c.pipeline
                && !self.resolve(p).is_file()
            {
                err(
                    format!("cameras[{i}].pipeline"),
                    format!("template not found: {}", self.resolve(p).display()),
                );
            }
            for (field, value, limit) in
                [("lat", c.lat, MAX_LATITUDE), ("lon", c.lon, MAX_LONGITUDE)]
            {
                if let Some(v) = value
                    && !(-limit..=limit).contains(&v)
                {
                    err(
                        format!("cameras[{i}].{field}"),
                        format!("must be in [-{limit}, {limit}] degrees, got {v}"),
                    );
                }
            }
            unique_ids(
                c.zones.iter().map(|z| z.id.as_str()),
                &format!("cameras[{i}].zones"),
                &mut err,
            );
            for (j, z) in c.zones.iter().enumerate() {
                if let Some(v) = z.min_score
                    && !(0.0..=1.0).contains(&v)
                {
                    err(
                        format!("cameras[{i}].zones[{j}].min_score"),
                        format!("must be a score in [0, 1], got {v}"),
                    );
                }
                let field = format!("cameras[{i}].zones[{j}].polygon");
                if let Err(e) = crate::area::geometry::validate_polygon(&z.polygon) {
                    err(field, e);
                }
                for (k, mask) in z.exclude.iter().enumerate() {
                    if let Err(e) = crate::area::geometry::validate_polygon(mask) {
                        err(format!("cameras[{i}].zones[{j}].exclude[{k}]"), e);
                    }
                }
                if let Some(fps) = z.analysis_fps
                    && let Err(e) = profile::check_analysis_fps(fps)
                {
                    err(format!("cameras[{i}].zones[{j}].analysis_fps"), e);
                }
                if !(z.min_overlap_ratio > 0.0 && z.min_overlap_ratio <= 1.0) {
                    err(
                        format!("cameras[{i}].zones[{j}].min_overlap_ratio"),
                        format!("must be in (0, 1], got {}", z.min_overlap_ratio),
                    );
                }
                for (k, s) in z.scenarios.iter().enumerate() {
                    if !self.catalog.scenarios.is_empty() && self.catalog.entry(s).is_none() {
                        err(
                            format!("cameras[{i}].zones[{j}].scenarios[{k}]"),
                            format!(
                                "unknown scenario `{s}` (known: {})",
                                self.catalog.ids().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
            }
        }

        self.validate_models(&mut err);
        if profile::parse_utc_offset(&self.area.centre.utc_offset).is_none() {
            err(
                "centre.utc_offset".into(),
                format!(
                    "expected \"+HH:MM\" or \"-HH:MM\", got `{}`",
                    self.area.centre.utc_offset
                ),
            );
        }
        // Each stage checks its own section; the configuration only names where.
        let sections: [(&str, Vec<(String, String)>); 10] = [
            ("inference", self.inference.validate()),
            ("ingest", self.ingest.validate()),
            ("gate", self.gate.validate()),
            ("tracker", owned(self.tracker.validate())),
            ("cases", self.cases.validate()),
            ("dispatch", self.dispatch.validate()),
            ("telemetry", self.telemetry.validate()),
            ("live", self.live.validate()),
            ("reports", self.reports.validate()),
            (
                "scenarios.crowd_gathering",
                owned(self.scenarios.crowd_gathering.validate()),
            ),
        ];
        for (section, problems) in sections {
            for (field, msg) in problems {
                err(join_field(section, &field), msg);
            }
        }
        for (field, msg) in self.scenarios.fire_baseline.validate() {
            err(format!("scenarios.fire_baseline.{field}"), msg);
        }
        if let Some(r) = &self.review {
            for (field, msg) in r.validate(&self.catalog) {
                err(format!("review.{field}"), msg);
            }
        }
        if let Some(c) = &self.cluster {
            for (field, msg) in c.validate() {
                err(format!("cluster.{field}"), msg);
            }
        }
        for (field, msg) in self.overrides().validate() {
            err(field, msg);
        }
        for (field, msg) in self.validate_routes() {
            err(field, msg);
        }
        let area = &self.area;
        unique_ids(
            area.phases.iter().map(|p| p.id.as_str()),
            "phases",
            &mut err,
        );
        unique_ids(
            area.stations.iter().map(|p| p.id.as_str()),
            "stations",
            &mut err,
        );
        unique_ids(
            area.departments.iter().map(|p| p.id.as_str()),
            "departments",
            &mut err,
        );
        let targets: Vec<&str> = std::iter::once(self.dispatch.primary_id())
            .chain(self.dispatch.targets.iter().map(|t| t.id.as_str()))
            .collect();
        for (field, msg) in area.validate_organisation(&targets) {
            err(field, msg);
        }
        out
    }
}

fn owned(problems: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    problems
        .into_iter()
        .map(|(f, m)| (f.to_owned(), m))
        .collect()
}

/// `section.field`, or the section alone for a problem of the whole section.
fn join_field(section: &str, field: &str) -> String {
    if field.is_empty() {
        section.to_owned()
    } else {
        format!("{section}.{field}")
    }
}

fn unique_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    list: &str,
    err: &mut impl FnMut(String, String),
) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if id.trim().is_empty() {
            err(format!("{list}[{i}].id"), "id must not be empty".into());
        } else if !seen.insert(id) {
            err(format!("{list}[{i}].id"), format!("duplicate id `{id}`"));
        }
    }
}

fn problem_at_field(file: &str, map: &SourceMap, field: &str, message: String) -> ConfigProblem {
    let (line, column) = map.span_of(field).map_or((1, 1), |s| map.line_col(s.start));
    ConfigProblem {
        file: file.to_owned(),
        line,
        column,
        field: field.to_owned(),
        message,
    }
}

/// Deserialises `text`; on an unknown field, records it, comments the offending lines out and
/// tries again, so that one typo does not hide the problems behind it.
fn parse_collecting(
    text: &str,
    name: &str,
    map: &SourceMap,
    problems: &mut Vec<ConfigProblem>,
) -> Option<ConfigFile> {
    const MAX_ROUNDS: usize = 64;
    let mut current = text.to_owned();
    for _ in 0..MAX_ROUNDS {
        match toml::from_str::<ConfigFile>(&current) {
            Ok(c) => return Some(c),
            Err(e) => {
                let span = e.span();
                // Offsets refer to `current`, whose commented lines are one byte longer than in
                // the original: locate in `current` (line numbers are the same in both).
                let here = SourceMap::new(&current);
                let map = if current.len() == text.len() {
                    map
                } else {
                    &here
                };
                let (line, column) = span.clone().map_or((1, 1), |s| map.line_col(s.start));
                let located = span.as_ref().and_then(|s| map.path_at(s.start));
                let message = e.message().trim().to_owned();
                problems.push(ConfigProblem {
                    file: name.to_owned(),
                    line,
                    column,
                    field: located.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
                    message: message.clone(),
                });
                let recoverable = message.starts_with("unknown field");
                match (recoverable, located) {
                    (true, Some((_, whole))) => current = comment_out(&current, whole),
                    _ => return None,
                }
            }
        }
    }
    None
}

/// Turns the lines covering `span` into comments; line numbers stay the same.
fn comment_out(text: &str, span: std::ops::Range<usize>) -> String {
    let first = text[..span.start.min(text.len())].matches('\n').count();
    let last = text[..span.end.min(text.len())]
        .trim_end_matches('\n')
        .matches('\n')
        .count();
    text.split('\n')
        .enumerate()
        .map(|(i, l)| {
            if (first..=last).contains(&i) {
                format!("#{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A parser of a number of seconds in [0, `max`] given as text (a command-line flag): `inf`,
/// `nan` or a negative value is refused before anything turns it into a `Duration`.
pub fn seconds_in(
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
        if (0.0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "must be a number of seconds in [0, {max}], got {v}"
            ))
        }
    }
}
