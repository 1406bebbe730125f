//! A classical fire and smoke detector (OpenCV), the documented baseline for straw burning
//! (秸秆焚烧) while no fire/smoke model is configured: its `fire`/`smoke` detections join the
//! model's before tracking, so the straw-burning rule treats them like any other objects.
//!
//! Fire: flame-coloured pixels (red ≥ green > blue, bright, saturated; after Chen et al.,
//! "An early fire-detection method based on image processing", ICIP 2004) that **flicker**:
//! the mask or the red channel changes from frame to frame in a large share of the region
//! (a red car or a brick wall is flame-coloured but steady, or moves as a whole).
//! Smoke: pixels that keep **moving** (against a slow background and from frame to frame), with
//! **low saturation** and mid brightness, persistently in the same place, in a region that
//! **grows** and that is **translucent** (it adds no edges to the background's texture).
//!
//! Known limits (no accuracy claim on real footage: none was available to us): sunsets, red
//! flashing lights and fluttering red flags look like flames; fog, steam and dust look like
//! smoke; at night only the flames are seen. A fire/smoke model, when a card maps its labels
//! to `fire`/`smoke`, replaces this detector.

use std::collections::VecDeque;
use std::sync::Arc;

use opencv::core::{CV_8UC1, Mat, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use serde::Deserialize;

use crate::infer::Detection;
use crate::infer::kinds::ObjectKind;
use crate::ingest::Frame;

pub const DEFAULT_ANALYSIS_WIDTH_PIXELS: u32 = 160;
/// Regions smaller than this share of the frame are ignored (compression noise, lamps).
pub const DEFAULT_MIN_REGION_RATIO: f64 = 0.002;
/// Share of a flame-coloured region that must have flickered recently.
pub const DEFAULT_FIRE_MIN_FLICKER_RATIO: f64 = 0.25;
/// Recent-candidate level (0..1, an average over the last few frames) a smoke pixel needs.
pub const DEFAULT_SMOKE_MIN_PERSISTENCE: f32 = 0.35;
/// The smoke area must grow by this factor within the growth window.
pub const DEFAULT_SMOKE_MIN_GROWTH_RATIO: f64 = 1.3;
/// The analysed width: narrower loses small fires, wider costs more than it tells (and the
/// detector keeps several buffers of width × height).
pub const MIN_ANALYSIS_WIDTH_PIXELS: u32 = 32;
pub const MAX_ANALYSIS_WIDTH_PIXELS: u32 = 1920;
/// Smoke growing a hundredfold within the window never counted: larger ratios are typos.
pub const MAX_SMOKE_MIN_GROWTH_RATIO: f64 = 100.0;

/// Frames before any detection: the flicker averages need history.
const WARM_UP_FRAMES: u64 = 4;
/// Frames before smoke: the background must have forgotten whatever moved away early on (a
/// person standing in the first frame leaves a "ghost" until then).
const SMOKE_WARM_UP_FRAMES: u64 = 20;
/// Smoke is translucent: it softens the texture behind it. A region counts as smoke only if
/// its edge energy (|Laplacian|) is at most the background's plus this much per pixel; a
/// person or a vehicle adds edges of its own.
const SMOKE_EDGE_SLACK: f32 = 2.0;
/// Analysed frames without smoke after which it must grow again to count.
const SMOKE_UNLATCH_FRAMES: u32 = 3;
/// Analysed frames over which smoke growth is measured.
const GROWTH_WINDOW_FRAMES: usize = 12;
/// Weight of the newest frame in the flicker, persistence and background averages.
const FLICKER_WEIGHT: f32 = 0.4;
const PERSISTENCE_WEIGHT: f32 = 0.2;
const BACKGROUND_WEIGHT: f32 = 0.05;
/// A flicker average above this marks a pixel as having flickered recently.
const FLICKERED: f32 = 0.2;
/// Red-channel change (0..255) that counts as a flicker inside a flame-coloured pixel.
const RED_FLICKER_STEP: i16 = 24;
/// Grey-level difference from the background that counts as motion.
const MOTION_STEP: f32 = 10.0;

/// `[scenarios.fire_baseline]`: the classical detector's switches and thresholds.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FireBaselineSettings {
    /// Runs on cameras with a straw-burning zone when the model has no fire/smoke kinds.
    pub enabled: bool,
    /// Frames are analysed at this width (height keeps the camera's aspect).
    pub analysis_width_pixels: u32,
    pub min_region_ratio: f64,
    pub fire_min_flicker_ratio: f64,
    pub smoke_min_persistence: f32,
    pub smoke_min_growth_ratio: f64,
}

impl Default for FireBaselineSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            analysis_width_pixels: DEFAULT_ANALYSIS_WIDTH_PIXELS,
            min_region_ratio: DEFAULT_MIN_REGION_RATIO,
            fire_min_flicker_ratio: DEFAULT_FIRE_MIN_FLICKER_RATIO,
            smoke_min_persistence: DEFAULT_SMOKE_MIN_PERSISTENCE,
            smoke_min_growth_ratio: DEFAULT_SMOKE_MIN_GROWTH_RATIO,
        }
    }
}

impl FireBaselineSettings {
    /// Range checks: (field below `scenarios.fire_baseline`, message) pairs.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let w = self.analysis_width_pixels;
        if !(MIN_ANALYSIS_WIDTH_PIXELS..=MAX_ANALYSIS_WIDTH_PIXELS).contains(&w) {
            out.push((
                "analysis_width_pixels",
                format!(
                    "must be in [{MIN_ANALYSIS_WIDTH_PIXELS}, {MAX_ANALYSIS_WIDTH_PIXELS}], got {w}"
                ),
            ));
        }
        if !(self.min_region_ratio > 0.0 && self.min_region_ratio < 1.0) {
            out.push((
                "min_region_ratio",
                format!("must be in (0, 1), got {}", self.min_region_ratio),
            ));
        }
        if !(0.0..=1.0).contains(&self.fire_min_flicker_ratio) {
            out.push((
                "fire_min_flicker_ratio",
                format!("must be in [0, 1], got {}", self.fire_min_flicker_ratio),
            ));
        }
        if !(self.smoke_min_persistence > 0.0 && self.smoke_min_persistence <= 1.0) {
            out.push((
                "smoke_min_persistence",
                format!("must be in (0, 1], got {}", self.smoke_min_persistence),
            ));
        }
        if !(1.0..=MAX_SMOKE_MIN_GROWTH_RATIO).contains(&self.smoke_min_growth_ratio) {
            out.push((
                "smoke_min_growth_ratio",
                format!(
                    "must be in [1, {MAX_SMOKE_MIN_GROWTH_RATIO}], got {}",
                    self.smoke_min_growth_ratio
                ),
            ));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fire baseline: {0}")]
pub struct FireError(#[from] opencv::Error);

/// One camera's detector: background, flicker and persistence averages, reused buffers.
pub struct FireBaseline {
    settings: FireBaselineSettings,
    small: Mat,
    fire_mask: Mat,
    smoke_mask: Mat,
    cleaned: Mat,
    /// Scratch of the smoke mask's closing (kept apart from `labels`, which is CV_32S: sharing
    /// one Mat would make OpenCV reallocate both every frame).
    closed: Mat,
    labels: Mat,
    stats: Mat,
    centroids: Mat,
    kernel: Mat,
    /// Grey level of the frame and the slow background (CV_32F), and their Laplacians.
    grey: Mat,
    background: Mat,
    edges: Mat,
    background_edges: Mat,
    prev_red: Vec<u8>,
    prev_fire: Vec<u8>,
    flicker: Vec<f32>,
    persistence: Vec<f32>,
    smoke_area: VecDeque<usize>,
    /// Smoke grew recently and is still there: it stays smoke while it lasts, grown or not.
    smoke_latched: bool,
    frames_without_smoke: u32,
    wide_kernel: Mat,
    frames: u64,
    /// A frame failed before (the caller logs only the first failure).
    failed: bool,
    fire_label: Arc<str>,
    smoke_label: Arc<str>,
}

impl FireBaseline {
    pub fn new(settings: FireBaselineSettings) -> Result<Self, FireError> {
        let kernel = imgproc::get_structuring_element_def(imgproc::MORPH_ELLIPSE, Size::new(3, 3))?;
        Ok(Self {
            settings,
            small: Mat::default(),
            fire_mask: Mat::default(),
            smoke_mask: Mat::default(),
            cleaned: Mat::default(),
            closed: Mat::default(),
            labels: Mat::default(),
            stats: Mat::default(),
            centroids: Mat::default(),
            kernel,
            grey: Mat::default(),
            background: Mat::default(),
            edges: Mat::default(),
            background_edges: Mat::default(),
            prev_red: Vec::new(),
            prev_fire: Vec::new(),
            flicker: Vec::new(),
            persistence: Vec::new(),
            smoke_area: VecDeque::with_capacity(GROWTH_WINDOW_FRAMES + 1),
            smoke_latched: false,
            frames_without_smoke: 0,
            wide_kernel: imgproc::get_structuring_element_def(
                imgproc::MORPH_ELLIPSE,
                Size::new(5, 5),
            )?,
            frames: 0,
            failed: false,
            fire_label: Arc::from("fire (baseline)"),
            smoke_label: Arc::from("smoke (baseline)"),
        })
    }

    /// Whether an earlier frame already failed; marks this one as failed.
    pub fn failed_before(&mut self) -> bool {
        std::mem::replace(&mut self.failed, true)
    }

    /// Analyses one frame; pushes fire and smoke regions (normalised boxes) to `out`.
    pub fn detect(&mut self, frame: &Frame, out: &mut Vec<Detection>) -> Result<(), FireError> {
        self.shrink(frame)?;
        let (w, h) = (self.small.cols(), self.small.rows());
        let n = (w * h) as usize;
        if self.flicker.len() != n {
            self.reset(w, h)?;
        }
        self.update_masks(n)?;
        self.frames += 1;
        if self.frames <= WARM_UP_FRAMES {
            return Ok(());
        }
        let min_area = (self.settings.min_region_ratio * n as f64).max(4.0) as i32;

        // Fire: flame-coloured regions of which a large share flickered.
        imgproc::morphology_ex_def(
            &self.fire_mask,
            &mut self.cleaned,
            imgproc::MORPH_CLOSE,
            &self.kernel,
        )?;
        self.regions(
            min_area,
            |this, label, area, bbox| {
                let flickered = this.count_in(label, bbox, |i| this.flicker[i] > FLICKERED);
                let ratio = flickered as f64 / area as f64;
                (ratio >= this.settings.fire_min_flicker_ratio).then(|| {
                    let score = (0.5 + 0.5 * ratio).min(1.0) as f32;
                    (ObjectKind::Fire, score)
                })
            },
            w,
            h,
            out,
        )?;

        // Smoke: persistent low-saturation motion, in a region that grew recently.
        // Smoke is diffuse: join its speckles first, then drop isolated ones.
        imgproc::morphology_ex_def(
            &self.smoke_mask,
            &mut self.closed,
            imgproc::MORPH_CLOSE,
            &self.wide_kernel,
        )?;
        imgproc::morphology_ex_def(
            &self.closed,
            &mut self.cleaned,
            imgproc::MORPH_OPEN,
            &self.kernel,
        )?;
        let area = opencv::core::count_non_zero(&self.cleaned)? as usize;
        if self.smoke_area.len() == GROWTH_WINDOW_FRAMES {
            self.smoke_area.pop_front();
        }
        self.smoke_area.push_back(area);
        let smallest = self.smoke_area.iter().copied().min().unwrap_or(0).max(1);
        let growth = area as f64 / smallest as f64;
        if area as i32 >= min_area {
            self.frames_without_smoke = 0;
            if growth >= self.settings.smoke_min_growth_ratio {
                self.smoke_latched = true;
            }
        } else {
            self.frames_without_smoke = self.frames_without_smoke.saturating_add(1);
            if self.frames_without_smoke > SMOKE_UNLATCH_FRAMES {
                self.smoke_latched = false;
            }
        }
        if self.frames > SMOKE_WARM_UP_FRAMES && area as i32 >= min_area && self.smoke_latched {
            let persistence_needed = self.settings.smoke_min_persistence;
            imgproc::laplacian(
                &self.grey,
                &mut self.edges,
                opencv::core::CV_32F,
                3,
                1.0,
                0.0,
                opencv::core::BORDER_DEFAULT,
            )?;
            imgproc::laplacian(
                &self.background,
                &mut self.background_edges,
                opencv::core::CV_32F,
                3,
                1.0,
                0.0,
                opencv::core::BORDER_DEFAULT,
            )?;
            self.regions(
                min_area,
                |this, label, area, bbox| {
                    let (Ok(edges), Ok(background_edges)) = (
                        this.edges.data_typed::<f32>(),
                        this.background_edges.data_typed::<f32>(),
                    ) else {
                        return None;
                    };
                    let level = this.sum_in(label, bbox, |i| this.persistence[i]) / area as f32;
                    let added =
                        this.sum_in(label, bbox, |i| edges[i].abs() - background_edges[i].abs());
                    let translucent = added <= SMOKE_EDGE_SLACK * area as f32;

                    let score = (0.4 + 0.6 * level.min(1.0)).min(1.0);
                    (level >= persistence_needed && translucent)
                        .then_some((ObjectKind::Smoke, score))
                },
                w,
                h,
                out,
            )?;
        }
        Ok(())
    }

    fn shrink(&mut self, frame: &Frame) -> Result<(), FireError> {
        // The frame is stretched to the model's input; undo that so regions keep their shape.
        let sw = self
            .settings
            .analysis_width_pixels
            .clamp(MIN_ANALYSIS_WIDTH_PIXELS, MAX_ANALYSIS_WIDTH_PIXELS) as i32;
        let sh = (f64::from(sw) / frame.display_aspect.max(0.1))
            .round()
            .clamp(8.0, 4.0 * f64::from(sw)) as i32;
        frame.resize_into(&mut self.small, sw, sh)?;
        Ok(())
    }

    fn reset(&mut self, w: i32, h: i32) -> Result<(), FireError> {
        let n = (w * h) as usize;
        self.fire_mask = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(0.0))?;
        self.smoke_mask = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(0.0))?;
        self.prev_red = vec![0; n];
        self.prev_fire = vec![0; n];
        self.flicker = vec![0.0; n];
        self.grey =
            Mat::new_rows_cols_with_default(h, w, opencv::core::CV_32FC1, Scalar::all(0.0))?;
        self.background = self.grey.try_clone()?;
        let px = self.small.data_bytes()?;
        for (b, p) in self
            .background
            .data_typed_mut::<f32>()?
            .iter_mut()
            .zip(px.chunks_exact(3))
        {
            *b = grey(p[0], p[1], p[2]);
        }
        self.persistence = vec![0.0; n];
        self.smoke_area.clear();
        self.smoke_latched = false;
        self.frames_without_smoke = 0;
        self.frames = 0;
        Ok(())
    }

    /// One pass over the pixels: colour rules, flicker, background and persistence averages.
    fn update_masks(&mut self, n: usize) -> Result<(), FireError> {
        let px = self.small.data_bytes()?;
        let fire = self.fire_mask.data_bytes_mut()?;
        let smoke = self.smoke_mask.data_bytes_mut()?;
        let grey_level = self.grey.data_typed_mut::<f32>()?;
        let background = self.background.data_typed_mut::<f32>()?;
        let threshold = self.settings.smoke_min_persistence;
        // Learn fast at first (a running mean), then slowly.
        let weight = BACKGROUND_WEIGHT.max(1.0 / (self.frames + 1) as f32);
        for i in 0..n {
            let (r, g, b) = (px[3 * i], px[3 * i + 1], px[3 * i + 2]);
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            let saturation = if max == 0 {
                0.0
            } else {
                f32::from(max - min) / f32::from(max)
            };

            let flame = r > 170 && r >= g && g > b && r - b > 70 && saturation >= 0.3;
            let was_flame = self.prev_fire[i] != 0;
            let changed = flame != was_flame
                || (flame
                    && (i16::from(r) - i16::from(self.prev_red[i])).abs() >= RED_FLICKER_STEP);
            self.flicker[i] += FLICKER_WEIGHT * (f32::from(u8::from(changed)) - self.flicker[i]);
            self.prev_fire[i] = u8::from(flame);
            self.prev_red[i] = r;
            fire[i] = if flame { 255 } else { 0 };

            let y = grey(r, g, b);
            // Smoke churns: it differs from the background *and* from the previous frame
            // (a background "ghost" of something that left differs only from the former).
            let churning = (y - grey_level[i]).abs() > MOTION_STEP;
            grey_level[i] = y;
            let moving = churning && (y - background[i]).abs() > MOTION_STEP;
            // Selective update: what keeps moving is not learnt into the background (smoke
            // that lingers would fade into it); static change, such as a ghost, is.
            if !moving {
                background[i] += weight * (y - background[i]);
            }
            let hazy = saturation < 0.2 && (90..=235).contains(&max);
            let candidate = moving && hazy;
            self.persistence[i] +=
                PERSISTENCE_WEIGHT * (f32::from(u8::from(candidate)) - self.persistence[i]);
            smoke[i] = if self.persistence[i] >= threshold {
                255
            } else {
                0
            };
        }
        Ok(())
    }

    /// Connected regions of `self.cleaned` of at least `min_area` pixels; `judge` decides
    /// whether one is an object, and of which kind and score.
    fn regions(
        &mut self,
        min_area: i32,
        judge: impl Fn(&Self, i32, i32, [i32; 4]) -> Option<(ObjectKind, f32)>,
        w: i32,
        h: i32,
        out: &mut Vec<Detection>,
    ) -> Result<(), FireError> {
        let count = imgproc::connected_components_with_stats(
            &self.cleaned,
            &mut self.labels,
            &mut self.stats,
            &mut self.centroids,
            8,
            opencv::core::CV_32S,
        )?;
        for label in 1..count {
            let stat =
                |c: i32| -> Result<i32, FireError> { Ok(*self.stats.at_2d::<i32>(label, c)?) };
            let area = stat(imgproc::CC_STAT_AREA)?;
            if area < min_area {
                continue;
            }
            let bbox = [
                stat(imgproc::CC_STAT_LEFT)?,
                stat(imgproc::CC_STAT_TOP)?,
                stat(imgproc::CC_STAT_WIDTH)?,
                stat(imgproc::CC_STAT_HEIGHT)?,
            ];
            if let Some((kind, score)) = judge(self, label, area, bbox) {
                let [x, y, bw, bh] = bbox.map(|v| v as f32);
                let (fw, fh) = (w as f32, h as f32);
                out.push(Detection {
                    class_id: u16::MAX,
                    label: if kind == ObjectKind::Fire {
                        self.fire_label.clone()
                    } else {
                        self.smoke_label.clone()
                    },
                    kind,
                    score,
                    bbox: [x / fw, y / fh, (x + bw) / fw, (y + bh) / fh],
                });
            }
        }
        Ok(())
    }

    fn count_in(&self, label: i32, bbox: [i32; 4], pred: impl Fn(usize) -> bool) -> usize {
        let mut n = 0;
        self.for_each_in(label, bbox, |i| n += usize::from(pred(i)));
        n
    }

    fn sum_in(&self, label: i32, bbox: [i32; 4], value: impl Fn(usize) -> f32) -> f32 {
        let mut s = 0.0;
        self.for_each_in(label, bbox, |i| s += value(i));
        s
    }

    fn for_each_in(&self, label: i32, [x, y, bw, bh]: [i32; 4], mut f: impl FnMut(usize)) {
        let w = self.labels.cols();
        // One slice for the whole region rather than a checked lookup per pixel.
        let Ok(labels) = self.labels.data_typed::<i32>() else {
            return;
        };
        for row in y..y + bh {
            for col in x..x + bw {
                let i = (row * w + col) as usize;
                if labels.get(i) == Some(&label) {
                    f(i);
                }
            }
        }
    }
}

fn grey(r: u8, g: u8, b: u8) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}
