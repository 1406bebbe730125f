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

/// A scenario's identity as cases and the dispatch platform name it.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioInfo {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
}

pub const CROWD_GATHERING: ScenarioInfo = ScenarioInfo {
    id: "crowd_gathering",
    name_zh: "人群聚集",
    name_en: "Crowd gathering",
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
}

impl ScenarioEngine {
    pub fn new(config: &Config) -> Self {
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
        Self { by_camera }
    }

    /// Evaluates one frame's detections; events that fire are passed to `emit`.
    pub fn evaluate(&mut self, d: Detections, mut emit: impl FnMut(Event)) {
        let Some(zones) = self.by_camera.get_mut(d.frame.camera) else {
            return;
        };
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
