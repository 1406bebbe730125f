//! Scenario stage: turns each camera's detections over time into events, one per episode.
//! Runs on one thread fed in per-camera order by the inference pool.
//!
//! The scenarios themselves are data (`catalog`, `config/scenarios.toml`): names, category code,
//! department, workstation, handling level, object kinds, rule and thresholds. Each camera has a
//! tracker (`crate::track`); each zone runs the rules of the scenarios it enables (`rules`:
//! per-track dwell, per-zone count; `crowd`: the person count with hysteresis). Scenarios whose
//! kinds the model does not provide are inactive (logged once, reported by `gridwatch check`).

pub mod catalog;
pub mod crowd;
pub mod fire;
pub mod overrides;
pub mod rules;
pub mod settings;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::area::Area;
use crate::area::geometry::ZoneShape;
use crate::infer::Detection;
use crate::infer::kinds::ObjectKind;
use crate::infer::pool::Detections;
use crate::ingest::Frame;
use crate::recheck::{self, Rechecks};
use crate::telemetry;
use crate::track::{Tracker, TrackerSettings};
use catalog::{Catalog, RuleKind, RuleThresholds};
use crowd::CrowdRule;
use fire::FireBaselineSettings;
pub use gridwatch_case::HandlingLevel;
use rules::{Firing, Moment, ObjectFilter, RuleParams, Schedule, TrackDwellRule, ZoneCountRule};
use settings::ScenarioSettings;

/// A scenario's identity as cases and the dispatch platform name it, and who handles it.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioInfo {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    /// Key of the catalog's category code table (e.g. 街面秩序/机动车乱停放).
    pub category_code: &'static str,
    /// The code's 大类 and 小类 in the code table.
    pub category_major: &'static str,
    pub category_minor: &'static str,
    /// The department that handles the case, e.g. 公安 (police).
    pub department: &'static str,
    /// The workstation of the command centre that dispatches it.
    pub workstation: &'static str,
    /// Sets the 103060 deadline.
    pub level: HandlingLevel,
}

/// The shipped catalog (`config/scenarios.toml`), parsed once.
pub static EMBEDDED: LazyLock<Catalog> = LazyLock::new(Catalog::embedded);

/// A scenario of the shipped catalog (a configuration's own catalog: `config.catalog.info`).
pub fn info(id: &str) -> Option<ScenarioInfo> {
    EMBEDDED.info(id)
}

/// Whether the classical fire/smoke detector stands in for a model: enabled, and the model
/// provides neither `fire` nor `smoke`.
pub fn fire_baseline_in_use(settings: &FireBaselineSettings, model: &[ObjectKind]) -> bool {
    settings.enabled
        && !model
            .iter()
            .any(|k| matches!(k, ObjectKind::Fire | ObjectKind::Smoke))
}

/// The kinds the scenario stage will see: the model's, plus `fire`/`smoke` when the classical
/// detector stands in for a fire model.
pub fn provided_kinds(settings: &FireBaselineSettings, model: &[ObjectKind]) -> Vec<ObjectKind> {
    let mut kinds = model.to_vec();
    if fire_baseline_in_use(settings, &kinds) {
        kinds.extend([ObjectKind::Fire, ObjectKind::Smoke]);
    }
    kinds
}

/// What the scenario stage needs from a configuration (which composes it).
#[derive(Debug, Clone)]
pub struct ScenarioSetup {
    pub area: Arc<Area>,
    pub catalog: Arc<Catalog>,
    pub settings: ScenarioSettings,
    pub tracker: TrackerSettings,
    /// The gate's periodic pass: a track must outlive a few of these gaps to keep its id.
    pub periodic_inference_seconds: f64,
    /// The object kinds the configured model's classes map to, or why they are unknown.
    pub model_kinds: Result<Vec<ObjectKind>, String>,
    /// Learned zone states: (camera id, zone id, scenario id) served by a classifier card,
    /// whatever kinds the models provide.
    pub states: Vec<(String, String, String)>,
}

impl ScenarioSetup {
    fn state_served(&self, camera: &str, zone: &str, scenario: &str) -> bool {
        self.states
            .iter()
            .any(|(c, z, s)| c == camera && z == zone && s == scenario)
    }
}

/// The object kind a learned zone state's detections carry: the scenario's first kind (water
/// for waterlogging, garbage for exposed garbage), `other` when it names none.
pub fn state_kind(entry: &catalog::ScenarioEntry) -> ObjectKind {
    entry.kinds.first().copied().unwrap_or(ObjectKind::Other)
}

impl ScenarioSetup {
    fn overrides(&self) -> overrides::Overrides<'_> {
        overrides::Overrides {
            area: &self.area,
            catalog: &self.catalog,
            crowd: &self.settings.crowd_gathering,
        }
    }
}

/// Who sees every analysed frame with the objects the rules saw (the patrol wall).
pub trait FrameObserver {
    /// The configuration now has `cameras` cameras (a reload may add some).
    fn ensure_cameras(&self, cameras: usize);
    fn seen(&self, frame: &Frame, objects: &[Detection]);
}

/// Two observers see every frame in turn (the wall's stills and its live overlays).
impl<A: FrameObserver, B: FrameObserver> FrameObserver for (A, B) {
    fn ensure_cameras(&self, cameras: usize) {
        self.0.ensure_cameras(cameras);
        self.1.ensure_cameras(cameras);
    }

    fn seen(&self, frame: &Frame, objects: &[Detection]) {
        self.0.seen(frame, objects);
        self.1.seen(frame, objects);
    }
}

/// A case a member of staff reported from the patrol wall: the event is theirs, not a rule's.
#[derive(Debug, Clone)]
pub struct StaffReport {
    /// The case id, chosen when the report is accepted (the console answers with it).
    pub id: uuid::Uuid,
    pub user: String,
    pub note: String,
}

/// The output of the scenario stage: one episode of a scenario in a zone, with its evidence frame.
pub struct Event {
    pub scenario: ScenarioInfo,
    pub camera: usize,
    pub zone: usize,
    pub first_seen_at: SystemTime,
    pub confirmed_at: SystemTime,
    pub first_seen_stream_seconds: f64,
    pub confirmed_stream_seconds: f64,
    /// The objects that make up the event (e.g. the persons in the zone).
    pub objects: Vec<Detection>,
    pub confidence: f32,
    /// The episode's key within its rule (matches a later [`EpisodeEnd`]).
    pub episode: u64,
    pub frame: Arc<Frame>,
    /// The key area the event was decided under: its camera and zone indices point into it,
    /// even if a reload has changed the configuration since.
    pub area: Arc<Area>,
    /// Reported by staff (no rule fired): dispatched as reported, never held or suppressed.
    pub reported: Option<StaffReport>,
}

enum TrackRule {
    Dwell(TrackDwellRule),
    Count(ZoneCountRule),
}

struct ZoneRules {
    camera: usize,
    zone: usize,
    shape: ZoneShape,
    /// The crowd rule with its scenario as the configured catalog names it.
    crowd: Option<(ScenarioInfo, CrowdRule)>,
    /// Catalog scenarios evaluated on the camera's tracks.
    tracked: Vec<(ScenarioInfo, TrackRule)>,
}

/// Every rule of every zone, indexed by camera.
pub struct ScenarioEngine {
    by_camera: Vec<Vec<ZoneRules>>,
    trackers: Vec<Tracker>,
    setup: Arc<ScenarioSetup>,
    /// When each camera's phase thresholds were last looked up.
    thresholds_checked: Vec<Option<std::time::Instant>>,
    /// The phase each camera's rules were built for (`None`: no phase, catalog thresholds).
    phases: Vec<Option<String>>,
    /// The classical fire/smoke detector of cameras that need it.
    fire: Vec<Option<fire::FireBaseline>>,
    /// Ids of the catalog scenarios the model cannot serve.
    inactive: Vec<String>,
    /// The classical detector stands in for a fire/smoke model.
    fire_baseline: bool,
    /// Reused for the firings of one frame.
    firings: Vec<Firing>,
    /// Reused for the keys of episodes that ended on one frame.
    ended: Vec<u64>,
    /// Camera re-checks the platform asked for (视频核查); none without a dispatch loop.
    rechecks: Option<Rechecks>,
}

/// What the scenario stage hands the case stage.
pub enum Output {
    /// An episode was confirmed: a case.
    Event(Event),
    /// A fired episode ended (the car left, the crowd dispersed): its case may have resolved
    /// itself before anyone acted.
    Ended(EpisodeEnd),
    /// A camera re-check of a handled case was decided on this frame.
    Checked(Checked),
}

/// The end of an episode that made an event (same scenario, camera, zone and `episode`).
pub struct EpisodeEnd {
    pub scenario: ScenarioInfo,
    pub camera: usize,
    pub zone: usize,
    pub episode: u64,
    pub frame: Arc<Frame>,
    pub area: Arc<Area>,
}

/// A decided re-check, with the frame that decided it.
pub struct Checked {
    pub outcome: recheck::Outcome,
    pub camera: usize,
    /// The zone's index on the camera (absent if a reload removed it meanwhile).
    pub zone: Option<usize>,
    pub frame: Arc<Frame>,
    pub area: Arc<Area>,
}

/// Phases change by the date; looking once a second is plenty.
const PROFILE_REFRESH: Duration = Duration::from_secs(1);

/// A track must outlive this many gated gaps (the gate's periodic pass) to keep its id.
const GATED_GAPS_BRIDGED: f64 = 2.5;

/// The rule parameters of one catalog scenario in one zone (zone filters narrow the catalog's).
fn rule_params(
    entry: &catalog::ScenarioEntry,
    zone: &crate::area::Zone,
    th: RuleThresholds,
    min_hits: u32,
) -> Option<RuleParams> {
    let kinds: Vec<ObjectKind> = match &zone.kinds {
        Some(only) => entry
            .kinds
            .iter()
            .copied()
            .filter(|k| only.contains(k))
            .collect(),
        None => entry.kinds.clone(),
    };
    Some(RuleParams {
        filter: ObjectFilter {
            kinds,
            label: None,
            min_score: zone
                .min_score
                .unwrap_or(th.score_threshold)
                .max(th.score_threshold),
            companions: entry.companion_kinds.clone(),
            companion_distance_ratio: th.companion_distance_ratio,
            min_hits,
        },
        schedule: Schedule::from_thresholds(&th).ok()?,
        thresholds: th,
    })
}

/// The rules of every zone of camera `ci`.
fn camera_rules(setup: &ScenarioSetup, ci: usize, inactive: &[String]) -> Vec<ZoneRules> {
    let catalog = &setup.catalog;
    let cam = &setup.area.cameras[ci];
    cam.zones
        .iter()
        .enumerate()
        .map(|(zi, z)| {
            let mut crowd = None;
            let mut tracked = Vec::new();
            for id in z.scenarios.iter() {
                let state = setup.state_served(&cam.id, &z.id, id);
                if inactive.contains(id) && !state {
                    continue;
                }
                let (Some(entry), Some(info)) = (catalog.entry(id), catalog.info(id)) else {
                    continue;
                };
                match entry.rule {
                    RuleKind::Crowd => match setup.overrides().crowd_settings(ci, None) {
                        Ok(settings) => crowd = Some((info, CrowdRule::new(settings))),
                        Err(e) => {
                            tracing::error!(camera = %cam.id, error = %e, "crowd settings invalid; rule skipped")
                        }
                    },
                    RuleKind::TrackDwell | RuleKind::ZoneCount => {
                        // Validated at load; a failure here would be a bug, so the rule is
                        // skipped loudly rather than run with wrong numbers.
                        let params = setup
                            .overrides()
                            .rule_thresholds(ci, None, id)
                            .map_err(|e| tracing::error!(scenario = %id, camera = %cam.id, error = %e, "thresholds invalid; rule skipped"))
                            .ok()
                            .and_then(|th| rule_params(entry, z, th, setup.tracker.min_hits));
                        let Some(mut params) = params else { continue };
                        if state {
                            // Served by the zone's learned state: only its detections count.
                            params.filter.kinds = vec![state_kind(entry)];
                            params.filter.label = Some(crate::area::kinds::state_label(id).into());
                        }
                        let rule = if entry.rule == RuleKind::TrackDwell {
                            TrackRule::Dwell(TrackDwellRule::new(params))
                        } else {
                            TrackRule::Count(ZoneCountRule::new(params))
                        };
                        tracked.push((info, rule));
                    }
                }
            }
            ZoneRules {
                camera: ci,
                zone: zi,
                shape: z.shape(),
                crowd,
                tracked,
            }
        })
        .collect()
}

/// Camera `ci`'s classical fire/smoke detector, when one of its zones needs it.
fn camera_fire_detector(
    setup: &ScenarioSetup,
    ci: usize,
    inactive: &[String],
    baseline: bool,
) -> Option<fire::FireBaseline> {
    let cam = &setup.area.cameras[ci];
    let wanted = baseline
        && cam.zones.iter().flat_map(|z| &z.scenarios).any(|id| {
            !inactive.contains(id)
                && setup.catalog.entry(id).is_some_and(|e| {
                    e.kinds
                        .iter()
                        .any(|k| matches!(k, ObjectKind::Fire | ObjectKind::Smoke))
                })
        });
    if !wanted {
        return None;
    }
    tracing::info!(camera = %cam.id, "fire/smoke: classical OpenCV baseline (no fire model configured)");
    fire::FireBaseline::new(setup.settings.fire_baseline.clone())
        .map_err(|e| tracing::error!(camera = %cam.id, error = %e, "fire baseline unavailable"))
        .ok()
}

impl ScenarioEngine {
    pub fn new(setup: Arc<ScenarioSetup>) -> Self {
        let (inactive, fire_baseline) = match &setup.model_kinds {
            Ok(model) => {
                let baseline = fire_baseline_in_use(&setup.settings.fire_baseline, model);
                let kinds = provided_kinds(&setup.settings.fire_baseline, model);
                (setup.catalog.inactive(&kinds), baseline)
            }
            Err(e) => {
                tracing::warn!(error = %e, "model kinds unknown; every scenario stays active");
                (Vec::new(), false)
            }
        };
        for i in &inactive {
            tracing::warn!(scenario = %i.id, reason = %i.reason, "scenario inactive");
        }
        let inactive: Vec<String> = inactive.into_iter().map(|i| i.id).collect();
        let mut engine = Self {
            by_camera: Vec::new(),
            trackers: Vec::new(),
            setup: setup.clone(),
            thresholds_checked: Vec::new(),
            phases: Vec::new(),
            fire: Vec::new(),
            inactive,
            fire_baseline,
            firings: Vec::new(),
            ended: Vec::new(),
            rechecks: None,
        };
        for ci in 0..setup.area.cameras.len() {
            engine.rebuild_camera(ci);
        }
        engine
    }

    /// (Re)builds camera `ci`'s rules from the current configuration; its tracker is kept
    /// when it has one (a zone edit does not forget the cars parked in front of the camera).
    fn rebuild_camera(&mut self, ci: usize) {
        let setup = &self.setup;
        let rules = camera_rules(setup, ci, &self.inactive);
        let fire = camera_fire_detector(setup, ci, &self.inactive, self.fire_baseline);
        if ci < self.by_camera.len() {
            self.by_camera[ci] = rules;
            self.fire[ci] = fire;
            self.thresholds_checked[ci] = None;
            self.phases[ci] = None;
        } else {
            let tracker = TrackerSettings {
                max_gap_seconds: setup
                    .tracker
                    .max_gap_seconds
                    .max(GATED_GAPS_BRIDGED * setup.periodic_inference_seconds),
                ..setup.tracker
            };
            self.by_camera.push(rules);
            self.fire.push(fire);
            self.trackers.push(Tracker::new(tracker));
            self.thresholds_checked.push(None);
            self.phases.push(None);
        }
    }

    /// A reloaded configuration: camera indices are stable; the cameras in `changed` (zones,
    /// overrides, group or thresholds edited, or added) get new rules, the others keep theirs
    /// and their episodes.
    pub fn reload(&mut self, setup: Arc<ScenarioSetup>, changed: &[usize]) {
        self.setup = setup;
        for &ci in changed {
            if ci < self.setup.area.cameras.len() {
                self.rebuild_camera(ci);
            }
        }
        // Cameras the reload added but did not list (defensive): give them rules too.
        for ci in self.by_camera.len()..self.setup.area.cameras.len() {
            self.rebuild_camera(ci);
        }
        tracing::info!(cameras = changed.len(), "scenario rules reloaded");
    }

    /// Applies the thresholds of the phase in force to the camera's rules when the phase
    /// changes; episodes in progress keep their state.
    fn refresh_thresholds(&mut self, camera: usize) {
        let due = self.thresholds_checked[camera].is_none_or(|t| t.elapsed() >= PROFILE_REFRESH);
        if !due {
            return;
        }
        self.thresholds_checked[camera] = Some(std::time::Instant::now());
        let profile = self
            .setup
            .area
            .profile_at(camera, time::OffsetDateTime::now_utc());
        if profile.phase == self.phases[camera] {
            return;
        }
        let setup = &self.setup;
        let area = &setup.area;
        let overrides = setup.overrides();
        let phase = area.phase_named(camera, profile.phase.as_deref());
        tracing::info!(camera = %area.cameras[camera].id, phase = ?profile.phase, "scenario thresholds follow the phase");
        for z in &mut self.by_camera[camera] {
            let zone = &area.cameras[camera].zones[z.zone];
            if let Some((_, rule)) = z.crowd.as_mut()
                && let Ok(s) = overrides.crowd_settings(camera, phase)
            {
                rule.set_settings(s);
            }
            for (info, rule) in &mut z.tracked {
                let Some(entry) = setup.catalog.entry(info.id) else {
                    continue;
                };
                let params = overrides
                    .rule_thresholds(camera, phase, info.id)
                    .ok()
                    .and_then(|th| rule_params(entry, zone, th, setup.tracker.min_hits));
                if let Some(params) = params {
                    match rule {
                        TrackRule::Dwell(r) => r.set_params(params),
                        TrackRule::Count(r) => r.set_params(params),
                    }
                }
            }
        }
        self.phases[camera] = profile.phase;
    }

    /// Evaluates one frame's detections; events that fire are passed to `emit`.
    pub fn evaluate(&mut self, d: Detections, mut emit: impl FnMut(Event)) {
        self.evaluate_seen(
            d,
            |_, _| {},
            |o| {
                if let Output::Event(e) = o {
                    emit(e);
                }
            },
        );
    }

    /// Re-checks of handled cases are decided on this engine's frames from now on.
    pub fn set_rechecks(&mut self, rechecks: Rechecks) {
        self.rechecks = Some(rechecks);
    }

    /// [`Self::evaluate`], also showing `seen` the frame with every object the rules will see
    /// (the model's and the fire baseline's), for the patrol wall, and passing episode ends
    /// and decided re-checks to `emit` too.
    pub fn evaluate_seen(
        &mut self,
        mut d: Detections,
        seen: impl FnOnce(&Frame, &[Detection]),
        mut emit: impl FnMut(Output),
    ) {
        let camera = d.frame.camera;
        if camera >= self.by_camera.len() {
            return;
        }
        self.refresh_thresholds(camera);
        let t = d.frame.stream_seconds;
        let local =
            time::OffsetDateTime::from(d.frame.captured_at).to_offset(self.setup.area.utc_offset());
        let moment = Moment {
            t,
            minute_of_day: u16::from(local.hour()) * 60 + u16::from(local.minute()),
        };
        if let Some(detector) = self.fire[camera].as_mut()
            && let Err(e) = detector.detect(&d.frame, &mut d.objects)
        {
            // Counted every time, logged once per camera: a persistent fault must not flood.
            telemetry::fire_baseline_error(&d.frame.camera_id);
            if !detector.failed_before() {
                tracing::warn!(camera = %d.frame.camera_id, error = %e, "fire baseline failed on a frame (further failures only counted: gridwatch_fire_baseline_errors_total)");
            }
        }
        seen(&d.frame, &d.objects);
        let tracker = &mut self.trackers[camera];
        let zones = &mut self.by_camera[camera];
        if zones.iter().any(|z| !z.tracked.is_empty()) {
            tracker.update(t, &d.objects);
        }
        let mut fired: Vec<(ScenarioInfo, usize, usize, Firing)> = Vec::new();
        for z in zones.iter_mut() {
            if let Some((info, rule)) = z.crowd.as_mut() {
                // Counted without allocating; the persons are collected only when it fires.
                let count = rule.persons_in(&z.shape, &d.objects).count();
                if let Some(f) = rule.observe(t, count) {
                    let persons: Vec<Detection> =
                        rule.persons_in(&z.shape, &d.objects).cloned().collect();
                    let confidence =
                        persons.iter().map(|p| p.score).sum::<f32>() / persons.len().max(1) as f32;
                    fired.push((
                        *info,
                        z.camera,
                        z.zone,
                        Firing {
                            episode: f.episode,
                            episode_start_seconds: f.episode_start_seconds,
                            objects: persons,
                            confidence,
                        },
                    ));
                }
            }
            for (info, rule) in &mut z.tracked {
                self.firings.clear();
                match rule {
                    TrackRule::Dwell(r) => {
                        r.observe(moment, &z.shape, tracker.tracks(), &mut self.firings)
                    }
                    TrackRule::Count(r) => {
                        r.observe(moment, &z.shape, tracker.tracks(), &mut self.firings)
                    }
                }
                fired.extend(self.firings.drain(..).map(|f| (*info, z.camera, z.zone, f)));
            }
        }
        let ends = self.take_ended(camera);
        let checked = self.recheck(camera, t, &d.objects);
        if fired.is_empty() && ends.is_empty() && checked.is_empty() {
            return;
        }
        // Zones of one camera that fire on the same frame share it.
        let frame = Arc::new(d.frame);
        for (scenario, camera, zone, episode) in ends {
            emit(Output::Ended(EpisodeEnd {
                scenario,
                camera,
                zone,
                episode,
                frame: frame.clone(),
                area: self.setup.area.clone(),
            }));
        }
        for outcome in checked {
            let zone = self.setup.area.cameras[camera]
                .zones
                .iter()
                .position(|z| z.id == outcome.request.zone);
            emit(Output::Checked(Checked {
                outcome,
                camera,
                zone,
                frame: frame.clone(),
                area: self.setup.area.clone(),
            }));
        }
        for (scenario, camera, zone, f) in fired {
            telemetry::event(scenario.id);
            // Stream times come from the pipeline: a difference that is not a finite number of
            // seconds dates the episode from this frame rather than panicking.
            let back = Duration::try_from_secs_f64((t - f.episode_start_seconds).max(0.0))
                .unwrap_or(Duration::ZERO);
            emit(Output::Event(Event {
                scenario,
                camera,
                zone,
                first_seen_at: frame
                    .captured_at
                    .checked_sub(back)
                    .unwrap_or(frame.captured_at),
                confirmed_at: frame.captured_at,
                first_seen_stream_seconds: f.episode_start_seconds,
                confirmed_stream_seconds: t,
                objects: f.objects,
                confidence: f.confidence,
                episode: f.episode,
                frame: frame.clone(),
                area: self.setup.area.clone(),
                reported: None,
            }));
        }
    }

    /// Fired episodes of `camera` that ended on this frame: (scenario, camera, zone, key).
    fn take_ended(&mut self, camera: usize) -> Vec<(ScenarioInfo, usize, usize, u64)> {
        let mut out = Vec::new();
        for z in &mut self.by_camera[camera] {
            if let Some((info, rule)) = z.crowd.as_mut()
                && let Some(k) = rule.take_ended()
            {
                out.push((*info, z.camera, z.zone, k));
            }
            for (info, rule) in &mut z.tracked {
                self.ended.clear();
                match rule {
                    TrackRule::Dwell(r) => r.take_ended(&mut self.ended),
                    TrackRule::Count(r) => r.take_ended(&mut self.ended),
                }
                out.extend(self.ended.iter().map(|k| (*info, z.camera, z.zone, *k)));
            }
        }
        out
    }

    /// Re-checks of `camera` decided on this frame (at stream time `t`).
    fn recheck(&self, camera: usize, t: f64, objects: &[Detection]) -> Vec<recheck::Outcome> {
        let Some(rechecks) = self.rechecks.as_ref().filter(|r| !r.is_empty()) else {
            return Vec::new();
        };
        let cam = &self.setup.area.cameras[camera];
        let zones = &self.by_camera[camera];
        let tracks = self.trackers[camera].tracks();
        rechecks.observe(&cam.id, |zone_id, scenario| {
            let z = zones.iter().find(|z| cam.zones[z.zone].id == zone_id)?;
            if let Some((info, rule)) = &z.crowd
                && info.id == scenario
            {
                return Some(rule.holds(rule.persons_in(&z.shape, objects).count()));
            }
            z.tracked
                .iter()
                .find(|(info, _)| info.id == scenario)
                .map(|(_, rule)| match rule {
                    TrackRule::Dwell(r) => r.holds(t, &z.shape, tracks),
                    TrackRule::Count(r) => r.holds(t, &z.shape, tracks),
                })
        })
    }
}

/// A reloaded configuration for the scenario thread: the cameras whose rules change, and a
/// channel to say it is applied (the reload starts the changed cameras only then).
pub struct Reload {
    pub setup: Arc<ScenarioSetup>,
    pub cameras: Vec<usize>,
    pub applied: Sender<()>,
}

/// The scenario thread: reads detections until the inference stage closes its channel, and
/// applies reloads between frames.
pub fn run(
    mut engine: ScenarioEngine,
    input: Receiver<Detections>,
    output: Sender<Output>,
    observer: &dyn FrameObserver,
    reloads: Receiver<Reload>,
) {
    let mut reloads = reloads;
    loop {
        crossbeam_channel::select! {
            recv(reloads) -> r => match r {
                Ok(r) => {
                    observer.ensure_cameras(r.setup.area.cameras.len());
                    engine.reload(r.setup, &r.cameras);
                    let _ = r.applied.send(());
                }
                // No more reloads can come: stop listening (a closed channel is always ready).
                Err(_) => reloads = crossbeam_channel::never(),
            },
            recv(input) -> d => {
                let Ok(d) = d else { break };
                let mut closed = false;
                engine.evaluate_seen(d, |frame, objects| observer.seen(frame, objects), |o| {
                    if let Output::Event(e) = &o {
                        tracing::info!(
                            scenario = e.scenario.id,
                            camera = e.camera,
                            zone = e.zone,
                            objects = e.objects.len(),
                            stream_seconds = e.confirmed_stream_seconds,
                            "event"
                        );
                    }
                    // Outputs are rare and must not be lost: block until the case stage takes it.
                    if output.send(o).is_err() {
                        closed = true;
                    }
                });
                if closed {
                    break;
                }
            }
        }
    }
}
