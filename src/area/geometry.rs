//! Zone geometry in normalised frame coordinates: polygon validation, point-in-polygon, and the
//! zone test rules apply to a box (an include polygon minus exclude masks, by a chosen anchor).

use serde::Deserialize;

/// Which part of an object's box must lie in the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Bottom-centre of the box: where a person or vehicle stands on the ground.
    #[default]
    BottomCentre,
    /// Centre of the box: objects seen from above or hanging (laundry, smoke).
    Centre,
    /// At least `min_overlap_ratio` of the box area lies in the zone (large objects such as
    /// trucks, puddles or garbage piles whose foot point says little).
    Overlap,
}

/// Default share of a box that must lie in the zone with [`Anchor::Overlap`].
pub const DEFAULT_MIN_OVERLAP_RATIO: f64 = 0.5;

/// Samples per box side when measuring overlap: 8 x 8 points, a resolution of 1/64 of the box,
/// plenty for a threshold and allocation-free.
const OVERLAP_SAMPLES_PER_SIDE: usize = 8;

/// A zone as rules see it: the include polygon, exclude masks (trees, private forecourts,
/// the camera's own timestamp overlay) and the anchor rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneShape {
    pub include: Vec<[f64; 2]>,
    pub exclude: Vec<Vec<[f64; 2]>>,
    pub anchor: Anchor,
    pub min_overlap_ratio: f64,
}

impl ZoneShape {
    /// A plain polygon, bottom-centre anchor, no masks.
    pub fn polygon(include: Vec<[f64; 2]>) -> Self {
        Self {
            include,
            exclude: Vec::new(),
            anchor: Anchor::BottomCentre,
            min_overlap_ratio: DEFAULT_MIN_OVERLAP_RATIO,
        }
    }

    /// A point counts when it is inside the include polygon and outside every mask.
    pub fn contains_point(&self, p: [f64; 2]) -> bool {
        contains(&self.include, p) && !self.exclude.iter().any(|m| contains(m, p))
    }

    /// Whether a box (normalised x1, y1, x2, y2) is in the zone by the zone's anchor.
    pub fn covers(&self, bbox: &[f32; 4]) -> bool {
        let [x1, y1, x2, y2] = bbox.map(f64::from);
        match self.anchor {
            Anchor::BottomCentre => self.contains_point([(x1 + x2) / 2.0, y2]),
            Anchor::Centre => self.contains_point([(x1 + x2) / 2.0, (y1 + y2) / 2.0]),
            Anchor::Overlap => self.overlap_ratio(bbox) >= self.min_overlap_ratio,
        }
    }

    /// Share of the box inside the zone, measured on a grid of sample points at cell centres.
    pub fn overlap_ratio(&self, bbox: &[f32; 4]) -> f64 {
        let [x1, y1, x2, y2] = bbox.map(f64::from);
        let n = OVERLAP_SAMPLES_PER_SIDE;
        let (dx, dy) = ((x2 - x1) / n as f64, (y2 - y1) / n as f64);
        let inside = (0..n * n)
            .filter(|i| {
                let (col, row) = ((i % n) as f64, (i / n) as f64);
                self.contains_point([x1 + (col + 0.5) * dx, y1 + (row + 0.5) * dy])
            })
            .count();
        inside as f64 / (n * n) as f64
    }
}

/// A zone polygon must have at least 3 vertices inside the frame and enclose an area.
pub fn validate_polygon(points: &[[f64; 2]]) -> Result<(), String> {
    if points.len() < 3 {
        return Err(format!(
            "a zone polygon needs at least 3 points, got {}",
            points.len()
        ));
    }
    if let Some(p) = points
        .iter()
        .find(|p| !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]))
    {
        return Err(format!(
            "point [{}, {}] is outside the frame (coordinates are normalised to 0..1)",
            p[0], p[1]
        ));
    }
    if area(points) < 1e-6 {
        return Err("the polygon encloses no area (points are collinear or repeated)".into());
    }
    Ok(())
}

/// Absolute area by the shoelace formula.
pub fn area(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        .abs()
        / 2.0
}

/// Even-odd rule; points on the boundary may fall either way.
pub fn contains(polygon: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut inside = false;
    let n = polygon.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[j]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_anchors_decide_which_boxes_are_in() {
        let whole = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        let mut z = ZoneShape::polygon(whole);
        // A box standing in the left half, feet at y = 0.9.
        let b = [0.1, 0.5, 0.3, 0.9];
        assert!(z.covers(&b));
        // A mask over the lower-left corner hides its foot point but not its centre.
        z.exclude = vec![vec![[0.0, 0.8], [0.5, 0.8], [0.5, 1.0], [0.0, 1.0]]];
        assert!(!z.covers(&b));
        z.anchor = Anchor::Centre;
        assert!(z.covers(&b));
        // Overlap: the mask covers 1/4 of the box's height, so 3/4 of it counts.
        z.anchor = Anchor::Overlap;
        assert!((z.overlap_ratio(&b) - 0.75).abs() < 1e-9);
        z.min_overlap_ratio = 0.8;
        assert!(!z.covers(&b));
        z.min_overlap_ratio = 0.7;
        assert!(z.covers(&b));
    }

    #[test]
    fn containment_and_validation() {
        let tri = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        assert!(contains(&tri, [0.2, 0.2]));
        assert!(!contains(&tri, [0.8, 0.8]));
        assert!(validate_polygon(&tri).is_ok());
        assert!(validate_polygon(&tri[..2]).is_err());
        assert!(validate_polygon(&[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]).is_err());
        assert!(validate_polygon(&[[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]]).is_err());
    }
}
