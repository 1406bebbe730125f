//! Several models per deployment: which models a camera runs (its plan, chosen by the
//! configuration from what its zones' scenarios need) and the worker's set of detectors that
//! runs a plan on one decoded frame. Each camera is decoded once, at the largest input size of
//! the models; a smaller model gets an area-resized copy in a buffer reused frame after frame.
//! The models' detections are filtered to the kinds the camera asked of each model, then
//! merged across models (one object seen by two models is kept once).

use std::collections::HashMap;
use std::sync::Arc;

use opencv::core::Mat;
use opencv::prelude::*;

use super::kinds::KindSet;
use super::{Detection, Detector, FeatureMap, InferError, StageTimes, nms};
use crate::ingest::Frame;
use crate::telemetry;

/// One model of a camera's plan: its index among the deployment's models, its id (metric
/// label) and the kinds of its detections the camera keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUse {
    pub index: usize,
    pub id: Arc<str>,
    pub kinds: KindSet,
}

/// A learned zone state that reads a model's feature map and reports the state, when it holds,
/// as a detection (its zone's box, the state's kind and label). Implemented by the zone-states
/// stage; the worker only calls it after the model it reads has run on the frame.
pub trait ZoneScorer: Send + Sync + std::fmt::Debug {
    /// The index of the model (in the deployment's order) whose feature map it reads.
    fn model(&self) -> usize;
    /// Scores the frame's feature map; appends a detection when the state holds.
    fn score_into(&self, map: &FeatureMap<'_>, out: &mut Vec<Detection>);
}

/// The models a camera runs on each analysed frame, in the deployment's order, and its learned
/// zone states. No models: the first model, keeping every kind (a camera the configuration has
/// not planned yet).
#[derive(Debug, Clone, Default)]
pub struct CameraModels {
    pub models: Vec<ModelUse>,
    pub states: Vec<Arc<dyn ZoneScorer>>,
}

impl PartialEq for CameraModels {
    fn eq(&self, other: &Self) -> bool {
        self.models == other.models
            && self.states.len() == other.states.len()
            && self
                .states
                .iter()
                .zip(&other.states)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl CameraModels {
    pub fn of(models: Vec<ModelUse>) -> Self {
        Self {
            models,
            states: Vec::new(),
        }
    }

    /// Every model of the deployment, keeping every kind (`gridwatch detect`).
    pub fn all(ids: &[Arc<str>]) -> Self {
        Self::of(
            ids.iter()
                .enumerate()
                .map(|(index, id)| ModelUse {
                    index,
                    id: id.clone(),
                    kinds: KindSet::ALL,
                })
                .collect(),
        )
    }

    /// The ids of the models, joined by `+` (reports, detect's JSON).
    pub fn label(&self) -> String {
        self.models
            .iter()
            .map(|m| &*m.id)
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// A worker's detectors, one onnxruntime session per model, with the buffers to feed and merge
/// them.
pub struct ModelSet {
    detectors: Vec<Detector>,
    /// Per model: the frame resized to its input, when the frame is larger.
    resized: Vec<Mat>,
    /// One model's detections before its kinds are filtered.
    found: Vec<Detection>,
    /// Which model found each detection of the frame (for the merge); `u8::MAX` for a zone
    /// state.
    origins: Vec<u8>,
    /// The zone states that hold in this frame.
    states_found: Vec<Detection>,
    /// The plan of a camera not planned yet: the first model, every kind (built once).
    fallback: Vec<ModelUse>,
    merge_iou: f32,
    /// (camera, model) → its counters, registered on the camera's first frame here.
    metrics: HashMap<(Arc<str>, Arc<str>), telemetry::ModelFrameMetrics>,
}

impl ModelSet {
    /// `detectors` in the deployment's order (the plan's indices point into it).
    pub fn new(detectors: Vec<Detector>, merge_iou: f32) -> Self {
        let n = detectors.len();
        Self {
            detectors,
            resized: (0..n).map(|_| Mat::default()).collect(),
            found: Vec::with_capacity(64),
            origins: Vec::with_capacity(64),
            states_found: Vec::new(),
            fallback: vec![ModelUse {
                index: 0,
                id: Arc::from(""),
                kinds: KindSet::ALL,
            }],
            merge_iou,
            metrics: HashMap::new(),
        }
    }

    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// For each detection of the last [`ModelSet::analyse`], the index of the model that found it.
    pub fn origins(&self) -> &[u8] {
        &self.origins
    }

    /// Runs the plan's models on `frame`; their detections, filtered and merged, go to `out`
    /// (cleared first). A failing model is counted and skipped; the frame fails only when
    /// every model failed.
    pub fn analyse(
        &mut self,
        frame: &Frame,
        plan: &CameraModels,
        out: &mut Vec<Detection>,
    ) -> Result<StageTimes, InferError> {
        out.clear();
        self.origins.clear();
        self.states_found.clear();
        let fallback = std::mem::take(&mut self.fallback);
        let uses = if plan.models.is_empty() {
            &fallback[..]
        } else {
            &plan.models
        };
        let mut total = StageTimes::default();
        let mut failures = 0;
        let mut last_error = None;
        for u in uses {
            let read = plan.states.iter().any(|s| s.model() == u.index);
            if let Some(d) = self.detectors.get_mut(u.index) {
                d.keep_features(read);
            }
            match self.run_one(frame, u.index) {
                Ok(times) => {
                    self.score_states(plan, u.index);
                    if !u.id.is_empty() {
                        self.metrics
                            .entry((frame.camera_id.clone(), u.id.clone()))
                            .or_insert_with(|| {
                                telemetry::ModelFrameMetrics::new(&frame.camera_id, &u.id)
                            })
                            .analysed(times.inference_seconds);
                    }
                    total.add(&times);
                    for d in self.found.drain(..).filter(|d| u.kinds.contains(d.kind)) {
                        out.push(d);
                        self.origins.push(u.index as u8);
                    }
                }
                Err(e) => {
                    telemetry::model_frame(&frame.camera_id, &u.id, "inference_error", None);
                    tracing::warn!(camera = %frame.camera_id, model = %u.id, error = %e, "model failed on a frame; its detections are missing");
                    failures += 1;
                    last_error = Some(e);
                }
            }
        }
        let (all_failed, several) = (failures == uses.len(), uses.len() > 1);
        self.fallback = fallback;
        if let Some(e) = last_error.filter(|_| all_failed) {
            return Err(e);
        }
        if several {
            nms::merge_across_models(out, &mut self.origins, self.merge_iou);
        }
        // Zone states are one per zone and state: nothing to merge.
        for d in self.states_found.drain(..) {
            out.push(d);
            self.origins.push(u8::MAX);
        }
        Ok(total)
    }

    /// The camera's zone states that read model `index`'s feature map, just computed.
    fn score_states(&mut self, plan: &CameraModels, index: usize) {
        let Some(map) = self.detectors.get(index).and_then(Detector::features) else {
            return;
        };
        for state in plan.states.iter().filter(|s| s.model() == index) {
            state.score_into(&map, &mut self.states_found);
        }
    }

    /// One model on the frame, resized to its input when the sizes differ; into `found`.
    fn run_one(&mut self, frame: &Frame, index: usize) -> Result<StageTimes, InferError> {
        let detector = self
            .detectors
            .get_mut(index)
            .ok_or_else(|| InferError::Run {
                model: format!("#{index}"),
                message: "no such model in this deployment".into(),
            })?;
        let (w, h) = detector.card().input_size();
        if (frame.width as usize, frame.height as usize) == (w, h) {
            return detector.detect(
                frame.rgb(),
                frame.width,
                frame.height,
                frame.row_stride,
                &mut self.found,
            );
        }
        let started = std::time::Instant::now();
        let mat = &mut self.resized[index];
        let resize_err = |e: opencv::Error| InferError::Run {
            model: detector.card().id.clone(),
            message: format!("resizing the frame to {w}x{h}: {e}"),
        };
        frame
            .resize_into(mat, w as i32, h as i32)
            .map_err(resize_err)?;
        let bytes = mat.data_bytes().map_err(resize_err)?;
        let resize_seconds = started.elapsed().as_secs_f64();
        let mut times = detector.detect(bytes, w as u32, h as u32, w * 3, &mut self.found)?;
        times.preprocess_seconds += resize_seconds;
        Ok(times)
    }
}
