//! MediaPipe SSD decoding: anchors generated once at load by MediaPipe's `SsdAnchorsCalculator`
//! scheme (card `[decoder.anchors]`), box encodings (ty, tx, th, tw) decoded against them
//! (cy = ty / sy × ah + acy, cx = tx / sx × aw + acx, h = exp(th / sh) × ah, w = exp(tw / sw) × aw,
//! normalised coordinates), class logits through a sigmoid with class 0 = background, then
//! per-class NMS.

use std::sync::Arc;

use super::card::SsdAnchors;
use super::kinds::ObjectKind;
use super::{Detection, nms};

/// Refuses anchor schemes that would allocate absurd amounts (a card is input from outside).
const MAX_ANCHORS: usize = 1 << 20;

/// One anchor in normalised coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

fn layer_scale(spec: &SsdAnchors, layer: usize) -> f32 {
    let n = spec.strides.len();
    if n == 1 {
        (spec.min_scale + spec.max_scale) / 2.0
    } else {
        spec.min_scale + (spec.max_scale - spec.min_scale) * layer as f32 / (n - 1) as f32
    }
}

/// The anchors of the scheme for an input of `width` × `height` pixels, in output order: layer
/// by layer (consecutive layers with the same stride share a grid), cells row-major, then the
/// anchors of the cell.
pub fn generate_anchors(
    spec: &SsdAnchors,
    width: usize,
    height: usize,
) -> Result<Vec<Anchor>, String> {
    if spec.strides.is_empty() || spec.strides.contains(&0) {
        return Err("decoder.anchors.strides must be non-empty and non-zero".into());
    }
    let positive = |v: f32| v.is_finite() && v > 0.0;
    if !positive(spec.min_scale) || !positive(spec.max_scale) {
        return Err("decoder.anchors scales must be positive".into());
    }
    if spec.aspect_ratios.is_empty() || !spec.aspect_ratios.iter().all(|&r| positive(r)) {
        return Err("decoder.anchors.aspect_ratios must be non-empty and positive".into());
    }
    let interpolated = spec.interpolated_scale_aspect_ratio;
    if !interpolated.is_finite() || interpolated < 0.0 {
        return Err("decoder.anchors.interpolated_scale_aspect_ratio must be >= 0".into());
    }
    let n = spec.strides.len();
    let mut anchors = Vec::new();
    // (width, height) of each anchor of a cell, for the layers sharing one stride.
    let mut shapes: Vec<(f32, f32)> = Vec::new();
    let mut layer = 0;
    while layer < n {
        shapes.clear();
        let mut last = layer;
        while last < n && spec.strides[last] == spec.strides[layer] {
            let scale = layer_scale(spec, last);
            let mut push = |ratio: f32, scale: f32| {
                let r = ratio.sqrt();
                shapes.push((scale * r, scale / r));
            };
            if last == 0 && spec.reduce_boxes_in_lowest_layer {
                push(1.0, 0.1);
                push(2.0, scale);
                push(0.5, scale);
            } else {
                for &ratio in &spec.aspect_ratios {
                    push(ratio, scale);
                }
                if interpolated > 0.0 {
                    let next = if last == n - 1 {
                        1.0
                    } else {
                        layer_scale(spec, last + 1)
                    };
                    push(interpolated, (scale * next).sqrt());
                }
            }
            last += 1;
        }
        let stride = spec.strides[layer] as usize;
        let (fm_w, fm_h) = (width.div_ceil(stride), height.div_ceil(stride));
        if anchors.len() + fm_w * fm_h * shapes.len() > MAX_ANCHORS {
            return Err(format!("decoder.anchors: more than {MAX_ANCHORS} anchors"));
        }
        for y in 0..fm_h {
            for x in 0..fm_w {
                let cx = (x as f32 + spec.offset[0]) / fm_w as f32;
                let cy = (y as f32 + spec.offset[1]) / fm_h as f32;
                for &(w, h) in &shapes {
                    anchors.push(Anchor { cx, cy, w, h });
                }
            }
        }
        layer = last;
    }
    Ok(anchors)
}

/// Reused scratch space and the anchors of one worker's SSD decoding.
pub struct SsdDecoder {
    anchors: Vec<Anchor>,
    /// Divisors of (y, x, h, w).
    box_scale: [f32; 4],
    kinds: Vec<ObjectKind>,
    candidates: Vec<Detection>,
}

impl SsdDecoder {
    pub fn new(anchors: Vec<Anchor>, box_scale: [f32; 4], kinds: Vec<ObjectKind>) -> Self {
        Self {
            anchors,
            box_scale,
            kinds,
            candidates: Vec::new(),
        }
    }

    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// Decodes `boxes` [anchors, 4] and `logits` [anchors, classes] into `out` (cleared first).
    /// Errors (as text) when the tensors do not fit the anchors and labels.
    pub fn decode(
        &mut self,
        boxes: &[f32],
        logits: &[f32],
        labels: &[Arc<str>],
        score_threshold: f32,
        nms_iou: f32,
        out: &mut Vec<Detection>,
    ) -> Result<(), String> {
        out.clear();
        self.candidates.clear();
        let n = self.anchors.len();
        let classes = labels.len();
        if boxes.len() != n * 4 {
            return Err(format!(
                "box encodings have {} values, expected {n} anchors × 4",
                boxes.len()
            ));
        }
        if logits.len() != n * classes {
            return Err(format!(
                "class predictions have {} values, expected {n} anchors × {classes} labels",
                logits.len()
            ));
        }
        if classes < 2 {
            return Ok(());
        }
        // sigmoid is monotone: compare logits, apply it to the winner only.
        let [sy, sx, sh, sw] = self.box_scale;
        for (i, a) in self.anchors.iter().enumerate() {
            let row = &logits[i * classes..(i + 1) * classes];
            let (class, logit) = row.iter().copied().enumerate().skip(1).fold(
                (0, f32::NEG_INFINITY),
                |best, (c, l)| {
                    if l > best.1 { (c, l) } else { best }
                },
            );
            let score = 1.0 / (1.0 + (-logit).exp());
            if class == 0 || score < score_threshold || !score.is_finite() {
                continue;
            }
            let e = &boxes[i * 4..i * 4 + 4];
            let cy = e[0] / sy * a.h + a.cy;
            let cx = e[1] / sx * a.w + a.cx;
            let h = (e[2] / sh).exp() * a.h;
            let w = (e[3] / sw).exp() * a.w;
            nms::push_centre_box(
                &mut self.candidates,
                [cx, cy, w, h],
                [1.0, 1.0],
                class,
                score,
                labels,
                &self.kinds,
            );
        }
        nms::per_class_nms(&mut self.candidates, nms_iou, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mediapipe_300() -> SsdAnchors {
        SsdAnchors {
            min_scale: 0.2,
            max_scale: 0.95,
            strides: vec![16, 32, 64, 128, 256, 512],
            aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 1.0 / 3.0],
            reduce_boxes_in_lowest_layer: true,
            interpolated_scale_aspect_ratio: 1.0,
            offset: [0.5, 0.5],
        }
    }

    #[test]
    fn the_shipped_scheme_makes_1917_anchors() {
        // 19²·3 + 10²·6 + 5²·6 + 3²·6 + 2²·6 + 1·6 (models/PROVENANCE.md).
        let a = generate_anchors(&mediapipe_300(), 300, 300).unwrap();
        assert_eq!(a.len(), 1917);
        // First anchor: cell (0, 0) of the 19×19 grid, ratio 1, scale 0.1.
        let first = a[0];
        assert!((first.cx - 0.5 / 19.0).abs() < 1e-6 && (first.cy - 0.5 / 19.0).abs() < 1e-6);
        assert!((first.w - 0.1).abs() < 1e-6 && (first.h - 0.1).abs() < 1e-6);
        // Last anchor: the single 1×1 cell, interpolated scale sqrt(0.95 · 1).
        let last = a[1916];
        assert_eq!((last.cx, last.cy), (0.5, 0.5));
        assert!((last.w - 0.95f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn hostile_schemes_are_refused() {
        let mut s = mediapipe_300();
        s.aspect_ratios = vec![0.0];
        assert!(generate_anchors(&s, 300, 300).is_err());
        let mut s = mediapipe_300();
        s.strides = vec![1; 6];
        assert!(generate_anchors(&s, 100_000, 100_000).is_err());
    }

    #[test]
    fn one_confident_anchor_decodes_to_its_box() {
        let anchors = vec![
            Anchor {
                cx: 0.5,
                cy: 0.5,
                w: 0.2,
                h: 0.4,
            },
            Anchor {
                cx: 0.2,
                cy: 0.2,
                w: 0.1,
                h: 0.1,
            },
        ];
        let mut d = SsdDecoder::new(anchors, [10.0, 10.0, 5.0, 5.0], vec![]);
        // Anchor 0: shift x by +0.1·w (tx = 1), height × e^0.5 (th = 2.5).
        let boxes = [0.0, 1.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        // Background very likely everywhere; anchor 0 class 1 at logit 2 (0.88).
        let logits = [9.0, 2.0, 9.0, -3.0];
        let labels: Vec<Arc<str>> = vec!["bg".into(), "thing".into()];
        let mut out = Vec::new();
        d.decode(&boxes, &logits, &labels, 0.5, 0.5, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        let h = 0.4 * 0.5f32.exp();
        let expect = [0.42, 0.5 - h / 2.0, 0.62, 0.5 + h / 2.0];
        for (a, b) in out[0].bbox.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {expect:?}", out[0].bbox);
        }
        assert!((out[0].score - 0.880_797).abs() < 1e-5);
        // Wrong tensor sizes are errors, not panics.
        assert!(
            d.decode(&boxes[..4], &logits, &labels, 0.5, 0.5, &mut out)
                .is_err()
        );
    }
}
