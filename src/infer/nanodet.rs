//! NanoDet output decoding: per-level class scores (sigmoid applied in the graph) and GFL box
//! distributions (softmax over `reg_max + 1` bins per side), then per-class NMS.

use std::sync::Arc;

use super::kinds::ObjectKind;
use super::{Detection, nms};

/// Most output levels a card may name (the decoder keeps them in a fixed array).
pub const MAX_LEVELS: usize = 8;

/// Reused scratch space for one worker's decoding, and the kind of each class.
#[derive(Default)]
pub struct NanodetDecoder {
    candidates: Vec<Detection>,
    bins: Vec<f32>,
    kinds: Vec<ObjectKind>,
}

/// One output level: `scores` is [cells, classes], `boxes` is [cells, 4 * (reg_max + 1)].
pub struct Level<'a> {
    pub stride: u32,
    pub scores: &'a [f32],
    pub boxes: &'a [f32],
}

pub struct DecodeParams {
    pub input_width: usize,
    pub input_height: usize,
    pub num_classes: usize,
    pub reg_max: usize,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl NanodetDecoder {
    /// A decoder that tags class `i` with `kinds[i]` (classes beyond it: `other`).
    pub fn with_kinds(kinds: Vec<ObjectKind>) -> Self {
        Self {
            kinds,
            ..Self::default()
        }
    }

    /// Decodes all levels into `out` (cleared first); boxes are normalised to 0..1.
    pub fn decode(
        &mut self,
        levels: &[Level<'_>],
        p: &DecodeParams,
        labels: &[Arc<str>],
        out: &mut Vec<Detection>,
    ) {
        self.candidates.clear();
        out.clear();
        let bins = p.reg_max + 1;
        self.bins.resize(bins, 0.0);
        let (w, h) = (p.input_width as f32, p.input_height as f32);
        for level in levels {
            let cols = p.input_width.div_ceil(level.stride as usize);
            let cells = level.scores.len() / p.num_classes.max(1);
            for cell in 0..cells.min(level.boxes.len() / (4 * bins)) {
                let row_scores = &level.scores[cell * p.num_classes..(cell + 1) * p.num_classes];
                let (class, score) =
                    row_scores
                        .iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f32::MIN),
                            |best, (i, s)| if s > best.1 { (i, s) } else { best },
                        );
                if score < p.score_threshold {
                    continue;
                }
                let stride = level.stride as f32;
                let cx = ((cell % cols) as f32 + 0.5) * stride;
                let cy = ((cell / cols) as f32 + 0.5) * stride;
                let dist = &level.boxes[cell * 4 * bins..(cell + 1) * 4 * bins];
                let mut d = [0f32; 4];
                for (side, dv) in d.iter_mut().enumerate() {
                    *dv = expected_bin(&dist[side * bins..(side + 1) * bins], &mut self.bins)
                        * stride;
                }
                let bbox = [
                    (cx - d[0]).clamp(0.0, w) / w,
                    (cy - d[1]).clamp(0.0, h) / h,
                    (cx + d[2]).clamp(0.0, w) / w,
                    (cy + d[3]).clamp(0.0, h) / h,
                ];
                self.candidates.push(Detection {
                    class_id: class as u16,
                    label: labels.get(class).cloned().unwrap_or_else(|| Arc::from("?")),
                    kind: self.kinds.get(class).copied().unwrap_or(ObjectKind::Other),
                    score,
                    bbox,
                });
            }
        }
        nms::per_class_nms(&mut self.candidates, p.nms_iou, out);
    }
}

/// Softmax over the logits, then the expected bin index.
fn expected_bin(logits: &[f32], scratch: &mut [f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for (s, &l) in scratch.iter_mut().zip(logits) {
        *s = (l - max).exp();
        sum += *s;
    }
    scratch
        .iter()
        .enumerate()
        .map(|(i, s)| i as f32 * s)
        .sum::<f32>()
        / sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_confident_cell_decodes_to_its_box() {
        // One level, stride 8 over a 16x16 input: 2x2 cells, 2 classes, reg_max 1 (2 bins).
        let mut scores = vec![0.0f32; 4 * 2];
        scores[3 * 2 + 1] = 0.9; // cell 3 (row 1, col 1), class 1
        let mut boxes = vec![0.0f32; 4 * 4 * 2];
        // Every side: bin 1 overwhelmingly likely -> distance 1 * stride = 8.
        for side in 0..4 {
            boxes[3 * 8 + side * 2 + 1] = 50.0;
        }
        let labels: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        let p = DecodeParams {
            input_width: 16,
            input_height: 16,
            num_classes: 2,
            reg_max: 1,
            score_threshold: 0.5,
            nms_iou: 0.6,
        };
        let mut out = Vec::new();
        NanodetDecoder::default().decode(
            &[Level {
                stride: 8,
                scores: &scores,
                boxes: &boxes,
            }],
            &p,
            &labels,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!(&*d.label, "b");
        // centre (12, 12) +- 8 -> [4, 4, 20→16 clipped, 16] / 16
        let expect = [0.25, 0.25, 1.0, 1.0];
        for (a, b) in d.bbox.iter().zip(expect) {
            assert!((a - b).abs() < 1e-3, "{:?}", d.bbox);
        }
    }
}
