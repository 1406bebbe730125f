//! YOLO-family output decoding, one output tensor each, boxes as centre + size in input pixels:
//! - YOLOv5 (Ultralytics export): [1, N, 5 + C] rows of cx, cy, w, h, objectness, class scores;
//!   score = objectness × best class score.
//! - YOLOv8 / YOLO11 (Ultralytics export): [1, 4 + C, N], features first: cx, cy, w, h, then the
//!   class scores (no objectness); score = best class score.
//! - YOLOX: rows like YOLOv5; when the export did not decode in the graph, cx = (x + col) × stride,
//!   cy = (y + row) × stride, w = exp(w) × stride, h = exp(h) × stride over the grids of the strides
//!   (row-major, stride by stride).
//!
//! Then per-class NMS. Shapes are checked against the labels on every frame (cheap) so a card
//! that does not fit its model gives an error, not garbage or a panic.

use std::sync::Arc;

use super::kinds::ObjectKind;
use super::{Detection, nms};

/// Which layout the output has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoloFormat {
    V5,
    V8,
    Yolox { decoded_in_graph: bool },
}

/// Reused scratch space (and the YOLOX grid) of one worker's YOLO decoding.
pub struct YoloDecoder {
    format: YoloFormat,
    input_width: f32,
    input_height: f32,
    /// YOLOX raw outputs: (col, row, stride) per row of the output.
    grid: Vec<[f32; 3]>,
    kinds: Vec<ObjectKind>,
    candidates: Vec<Detection>,
}

impl YoloDecoder {
    /// `strides` is used by raw YOLOX only: one grid of (input / stride) cells per stride.
    pub fn new(
        format: YoloFormat,
        input_width: usize,
        input_height: usize,
        strides: &[u32],
        kinds: Vec<ObjectKind>,
    ) -> Self {
        let mut grid = Vec::new();
        if format
            == (YoloFormat::Yolox {
                decoded_in_graph: false,
            })
        {
            for &stride in strides.iter().filter(|s| **s > 0) {
                let s = stride as usize;
                for row in 0..input_height / s {
                    for col in 0..input_width / s {
                        grid.push([col as f32, row as f32, stride as f32]);
                    }
                }
            }
        }
        Self {
            format,
            input_width: input_width as f32,
            input_height: input_height as f32,
            grid,
            kinds,
            candidates: Vec::new(),
        }
    }

    /// Decodes the output tensor (`shape`, `data`) into `out` (cleared first). Errors (as text)
    /// when the shape does not fit the format and the number of labels.
    pub fn decode(
        &mut self,
        shape: &[i64],
        data: &[f32],
        labels: &[Arc<str>],
        score_threshold: f32,
        nms_iou: f32,
        out: &mut Vec<Detection>,
    ) -> Result<(), String> {
        out.clear();
        self.candidates.clear();
        let classes = labels.len();
        let (extra, layout) = match self.format {
            YoloFormat::V8 => (4, "[1, 4 + classes, N]"),
            YoloFormat::V5 | YoloFormat::Yolox { .. } => (5, "[1, N, 5 + classes]"),
        };
        let feature_dim = if self.format == YoloFormat::V8 { 1 } else { 2 };
        let fits = shape.len() == 3
            && shape[0] == 1
            && shape[feature_dim] == (extra + classes) as i64
            && shape[3 - feature_dim] >= 0;
        if !fits {
            return Err(format!(
                "output shape {shape:?} does not fit {layout} with {classes} classes"
            ));
        }
        let n = shape[3 - feature_dim] as usize;
        let width = extra + classes;
        if data.len() != n * width {
            return Err(format!(
                "output has {} values, shape {shape:?} says {}",
                data.len(),
                n * width
            ));
        }
        if let YoloFormat::Yolox {
            decoded_in_graph: false,
        } = self.format
            && self.grid.len() != n
        {
            return Err(format!(
                "output has {n} rows, the strides make {} grid cells for a {}x{} input",
                self.grid.len(),
                self.input_width,
                self.input_height
            ));
        }
        for i in 0..n {
            // value j of candidate i
            let at = |j: usize| match self.format {
                YoloFormat::V8 => data[j * n + i],
                _ => data[i * width + j],
            };
            let (class, mut score) = (0..classes).fold((0, f32::NEG_INFINITY), |best, c| {
                let s = at(extra + c);
                if s > best.1 { (c, s) } else { best }
            });
            if extra == 5 {
                score *= at(4);
            }
            if score.is_nan() || score < score_threshold {
                continue;
            }
            let (mut cx, mut cy, mut w, mut h) = (at(0), at(1), at(2), at(3));
            if let YoloFormat::Yolox {
                decoded_in_graph: false,
            } = self.format
            {
                let [col, row, stride] = self.grid[i];
                cx = (cx + col) * stride;
                cy = (cy + row) * stride;
                w = w.exp() * stride;
                h = h.exp() * stride;
            }
            let (iw, ih) = (self.input_width, self.input_height);
            nms::push_centre_box(
                &mut self.candidates,
                [cx, cy, w, h],
                [iw, ih],
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

    fn labels() -> Vec<Arc<str>> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn yolov8_reads_features_first() {
        // 2 candidates, 2 classes: [1, 6, 2]. Candidate 1: centre (32, 16), 16×8, class b 0.9.
        let data = [
            0.0, 32.0, // cx
            0.0, 16.0, // cy
            1.0, 16.0, // w
            1.0, 8.0, // h
            0.1, 0.2, // class a
            0.1, 0.9, // class b
        ];
        let mut d = YoloDecoder::new(YoloFormat::V8, 64, 32, &[], vec![ObjectKind::Person]);
        let mut out = Vec::new();
        d.decode(&[1, 6, 2], &data, &labels(), 0.5, 0.5, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].class_id, &*out[0].label), (1, "b"));
        assert_eq!(out[0].kind, ObjectKind::Other);
        assert_eq!(out[0].bbox, [0.375, 0.375, 0.625, 0.625]);
    }

    #[test]
    fn yolox_raw_offsets_use_the_grid() {
        // 16×16 input, stride 8 and 16: 4 + 1 rows. Row 3 = cell (1, 1) of stride 8.
        let mut data = vec![0.0f32; 5 * 7];
        data[3 * 7..4 * 7].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.8, 1.0, 0.0]);
        let format = YoloFormat::Yolox {
            decoded_in_graph: false,
        };
        let mut d = YoloDecoder::new(format, 16, 16, &[8, 16], vec![ObjectKind::Person]);
        let mut out = Vec::new();
        d.decode(&[1, 5, 7], &data, &labels(), 0.5, 0.5, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, ObjectKind::Person);
        assert!((out[0].score - 0.8).abs() < 1e-6);
        // centre (12, 12), 8×8 -> [8, 8, 16, 16] / 16
        assert_eq!(out[0].bbox, [0.5, 0.5, 1.0, 1.0]);
        // A shape that does not fit is an error, not a panic.
        assert!(
            d.decode(&[1, 4, 7], &data[..28], &labels(), 0.5, 0.5, &mut out)
                .is_err()
        );
        assert!(
            d.decode(&[1, 5, 8], &data, &labels(), 0.5, 0.5, &mut out)
                .is_err()
        );
    }
}
