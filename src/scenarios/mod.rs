//! Scenario stage: turns each camera's detections over time into events, one per episode.
//! Runs on one thread fed in per-camera order by the inference pool.

pub mod crowd;
pub mod geometry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::infer::Detection;
use crate::infer::pool::Detections;
use crate::ingest::Frame;
use crate::telemetry;
use crowd::CrowdRule;

/// A scenario's identity as cases and the dispatch platform name it, and who handles it.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioInfo {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    /// The department that handles the case, e.g. 公安 (police).
    pub department: &'static str,
    /// The workstation of the command centre that dispatches it.
    pub workstation: &'static str,
    /// Sets the 103060 deadline.
    pub level: HandlingLevel,
}

/// Handling level of a case; the "103060" rule gives simple cases 10 minutes, general 30 and
/// difficult 60, counted from confirmation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HandlingLevel {
    Simple,
    General,
    Difficult,
}

impl HandlingLevel {
    pub fn deadline_minutes(self) -> u32 {
        match self {
            HandlingLevel::Simple => 10,
            HandlingLevel::General => 30,
            HandlingLevel::Difficult => 60,
        }
    }
}

pub const CROWD_GATHERING: ScenarioInfo = ScenarioInfo {
    id: "crowd_gathering",
    name_zh: "人群聚集",
    name_en: "Crowd gathering",
    department: "公安",
    workstation: "联勤联动工作站",
    level: HandlingLevel::General,
};

/// Scenario ids a zone may enable.
pub const SCENARIO_IDS: &[&str] = &[CROWD_GATHERING.id];

pub fn info(id: &str) -> Option<ScenarioInfo> {
    [CROWD_GATHERING].into_iter().find(|s| s.id == id)
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
    pub frame: Arc<Frame>,
}

struct ZoneRules {
    camera: usize,
    zone: usize,
    polygon: Vec<[f64; 2]>,
    crowd: Option<CrowdRule>,
}

/// Every rule of every zone, indexed by camera.
pub struct ScenarioEngine {
    by_camera: Vec<Vec<ZoneRules>>,
    config: Arc<Config>,
    /// When each camera's phase thresholds were last looked up.
    thresholds_checked: Vec<Option<std::time::Instant>>,
}

/// Phases change by the date; looking once a second is plenty.
const PROFILE_REFRESH: Duration = Duration::from_secs(1);

impl ScenarioEngine {
    pub fn new(config: Arc<Config>) -> Self {
        let by_camera = config
            .cameras
            .iter()
            .enumerate()
            .map(|(ci, cam)| {
                cam.zones
                    .iter()
                    .enumerate()
                    .map(|(zi, z)| ZoneRules {
                        camera: ci,
                        zone: zi,
                        polygon: z.polygon.clone(),
                        crowd: z
                            .scenarios
                            .iter()
                            .any(|s| s == CROWD_GATHERING.id)
                            .then(|| CrowdRule::new(config.scenarios.crowd_gathering.clone())),
                    })
                    .collect()
            })
            .collect();
        let thresholds_checked = vec![None; config.cameras.len()];
        Self {
            by_camera,
            config,
            thresholds_checked,
        }
    }

    /// Applies the thresholds of the phase in force (if it changed) to the camera's rules.
    fn refresh_thresholds(&mut self, camera: usize) {
        let due = self.thresholds_checked[camera].is_none_or(|t| t.elapsed() >= PROFILE_REFRESH);
        if !due {
            return;
        }
        self.thresholds_checked[camera] = Some(std::time::Instant::now());
        let profile = self
            .config
            .profile_at(camera, time::OffsetDateTime::now_utc());
        for z in &mut self.by_camera[camera] {
            if let Some(rule) = z.crowd.as_mut() {
                rule.set_thresholds(
                    profile.crowd_min_persons,
                    profile.crowd_min_duration_seconds,
                );
            }
        }
    }

    /// Evaluates one frame's detections; events that fire are passed to `emit`.
    pub fn evaluate(&mut self, d: Detections, mut emit: impl FnMut(Event)) {
        if d.frame.camera >= self.by_camera.len() {
            return;
        }
        self.refresh_thresholds(d.frame.camera);
        let zones = &mut self.by_camera[d.frame.camera];
        let t = d.frame.stream_seconds;
        let mut fired = Vec::new();
        for z in zones.iter_mut() {
            if let Some(rule) = z.crowd.as_mut() {
                let persons: Vec<Detection> =
                    rule.persons_in(&z.polygon, &d.objects).cloned().collect();
                if let Some(f) = rule.observe(t, persons.len()) {
                    let confidence =
                        persons.iter().map(|p| p.score).sum::<f32>() / persons.len().max(1) as f32;
                    let back = Duration::from_secs_f64((t - f.episode_start_seconds).max(0.0));
                    fired.push((
                        z.camera,
                        z.zone,
                        f.episode_start_seconds,
                        back,
                        persons,
                        confidence,
                    ));
                }
            }
        }
        if fired.is_empty() {
            return;
        }
        // Zones of one camera that fire on the same frame share it.
        let frame = Arc::new(d.frame);
        for (camera, zone, start, back, objects, confidence) in fired {
            telemetry::event(CROWD_GATHERING.id);
            emit(Event {
                scenario: CROWD_GATHERING,
                camera,
                zone,
                first_seen_at: frame
                    .captured_at
                    .checked_sub(back)
                    .unwrap_or(frame.captured_at),
                confirmed_at: frame.captured_at,
                first_seen_stream_seconds: start,
                confirmed_stream_seconds: t,
                objects,
                confidence,
                frame: frame.clone(),
            });
        }
    }
}

/// The scenario thread: reads detections until the inference stage closes its channel.
pub fn run(mut engine: ScenarioEngine, input: Receiver<Detections>, output: Sender<Event>) {
    for d in input {
        let mut closed = false;
        engine.evaluate(d, |e| {
            tracing::info!(
                scenario = e.scenario.id,
                camera = e.camera,
                zone = e.zone,
                objects = e.objects.len(),
                stream_seconds = e.confirmed_stream_seconds,
                "event"
            );
            // Events are rare and must not be lost: block until the case stage takes it.
            if output.send(e).is_err() {
                closed = true;
            }
        });
        if closed {
            break;
        }
    }
}
