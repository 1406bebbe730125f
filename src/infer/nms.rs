//! Greedy per-class non-maximum suppression over candidates sorted in place (no allocation
//! beyond the caller's reused buffers).

use std::sync::Arc;

use super::Detection;
use super::kinds::ObjectKind;

/// Appends a candidate from a centre-size box divided by `scale` (input size for decoders
/// in pixels, 1 for normalised ones), clipped to the frame; NaN boxes (a broken model output)
/// are dropped. Shared by the SSD and YOLO decoders.
pub fn push_centre_box(
    candidates: &mut Vec<Detection>,
    [cx, cy, w, h]: [f32; 4],
    [sx, sy]: [f32; 2],
    class: usize,
    score: f32,
    labels: &[Arc<str>],
    kinds: &[ObjectKind],
) {
    let bbox = [
        ((cx - w / 2.0) / sx).clamp(0.0, 1.0),
        ((cy - h / 2.0) / sy).clamp(0.0, 1.0),
        ((cx + w / 2.0) / sx).clamp(0.0, 1.0),
        ((cy + h / 2.0) / sy).clamp(0.0, 1.0),
    ];
    let Some(label) = labels.get(class) else {
        return;
    };
    if bbox.iter().any(|v| v.is_nan()) {
        return;
    }
    candidates.push(Detection {
        class_id: class as u16,
        label: label.clone(),
        kind: kinds.get(class).copied().unwrap_or(ObjectKind::Other),
        score,
        bbox,
    });
}

/// Intersection over union of two [x1, y1, x2, y2] boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Keeps, per class, the highest-scoring boxes that overlap no kept box by more than
/// `iou_threshold`. `candidates` is sorted by descending score; the survivors are appended to `out`.
pub fn per_class_nms(candidates: &mut [Detection], iou_threshold: f32, out: &mut Vec<Detection>) {
    candidates.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let first_kept = out.len();
    for c in candidates.iter() {
        let suppressed = out[first_kept..]
            .iter()
            .any(|k| k.class_id == c.class_id && iou(&k.bbox, &c.bbox) > iou_threshold);
        if !suppressed {
            out.push(c.clone());
        }
    }
}

/// Merges the detections of several models of one camera: of two boxes of the same kind from
/// different models (`models[i]` tells which model found `objects[i]`) overlapping at least
/// `iou_threshold`, the lower-scoring one goes. Boxes of one model were already through its
/// own NMS and are left alone. Keeps the order of the survivors; allocation-free.
pub fn merge_across_models(objects: &mut Vec<Detection>, models: &mut Vec<u8>, iou_threshold: f32) {
    let mut i = 0;
    while i < objects.len() {
        let duplicate_of_better = (0..objects.len()).any(|j| {
            j != i
                && models[j] != models[i]
                && objects[j].kind == objects[i].kind
                && (objects[j].score, j) > (objects[i].score, i)
                && iou(&objects[j].bbox, &objects[i].bbox) >= iou_threshold
        });
        if duplicate_of_better {
            objects.remove(i);
            models.remove(i);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u16, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id,
            label: "x".into(),
            kind: crate::infer::kinds::ObjectKind::Other,
            score,
            bbox,
        }
    }

    #[test]
    fn overlapping_boxes_of_one_class_collapse_to_the_best() {
        let mut c = vec![
            det(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
            det(1, 0.8, [1.0, 1.0, 11.0, 11.0]),
            det(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
        ];
        let mut out = Vec::new();
        per_class_nms(&mut c, 0.5, &mut out);
        let scores: Vec<f32> = out.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
    }

    #[test]
    fn one_object_from_two_models_is_kept_once_with_the_better_score() {
        use crate::infer::kinds::ObjectKind::{Bicycle, Person};
        let with_kind = |kind, score, bbox| Detection {
            kind,
            ..det(0, score, bbox)
        };
        let mut objects = vec![
            with_kind(Bicycle, 0.4, [0.0, 0.0, 0.5, 0.5]),
            with_kind(Person, 0.6, [0.0, 0.0, 0.5, 0.5]),
            with_kind(Bicycle, 0.7, [0.02, 0.0, 0.5, 0.52]),
            with_kind(Bicycle, 0.3, [0.6, 0.6, 0.9, 0.9]),
        ];
        let mut models = vec![0, 0, 1, 1];
        merge_across_models(&mut objects, &mut models, 0.5);
        let kept: Vec<(f32, u8)> = objects
            .iter()
            .zip(&models)
            .map(|(d, m)| (d.score, *m))
            .collect();
        // The first model's bicycle gives way to the second's; the person (another kind) and
        // the far bicycle stay.
        assert_eq!(kept, vec![(0.6, 0), (0.7, 1), (0.3, 1)]);
        // Overlaps within one model are that model's NMS's business.
        let mut same = vec![
            with_kind(Bicycle, 0.4, [0.0, 0.0, 0.5, 0.5]),
            with_kind(Bicycle, 0.7, [0.0, 0.0, 0.5, 0.5]),
        ];
        let mut models = vec![0, 0];
        merge_across_models(&mut same, &mut models, 0.5);
        assert_eq!(same.len(), 2);
    }

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[3.0, 3.0, 4.0, 4.0]), 0.0);
        assert!((iou(&a, &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
