//! Pooling a [`FeatureMap`] over a zone polygon into a fixed-length feature vector: which cells
//! count is worked out once per (zone, grid) as a [`ZoneMask`]; each frame then only sums.

use serde::{Deserialize, Serialize};

use crate::area::geometry;
use crate::infer::FeatureMap;

/// Sub-regions per side of the zone's bounding box with [`Pooling::ZoneCells2x2`].
pub const CELLS_PER_SIDE: usize = 2;

/// How a zone's feature vector is made from the map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean over every cell of the frame (ignores the polygon; a baseline).
    FrameMean,
    /// The mean over the cells whose centres are inside the polygon.
    ZoneMean,
    /// The zone mean, then the zone's bounding box split 2×2, each part the mean of its
    /// in-polygon cells (the zone mean when a part has none): 5 × channels values. The
    /// default: the best held-out precision in BENCHMARKS.md ("Zone states").
    #[default]
    #[serde(rename = "zone_cells_2x2")]
    ZoneCells2x2,
    /// The zone mean, then the per-channel maximum over the zone's cells: 2 × channels values.
    /// A small object (one person on a long path) is a peak the mean dilutes. Better per frame
    /// on one vtest split, worse per episode in the bench (BENCHMARKS.md): not the default.
    ZoneMeanMax,
}

impl Pooling {
    pub const ALL: [Pooling; 4] = [
        Pooling::FrameMean,
        Pooling::ZoneMean,
        Pooling::ZoneCells2x2,
        Pooling::ZoneMeanMax,
    ];

    /// Length of the pooled vector for a map of `channels`.
    pub fn dims(self, channels: usize) -> usize {
        match self {
            Pooling::FrameMean | Pooling::ZoneMean => channels,
            Pooling::ZoneCells2x2 => (1 + CELLS_PER_SIDE * CELLS_PER_SIDE) * channels,
            Pooling::ZoneMeanMax => 2 * channels,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::FrameMean => "frame_mean",
            Pooling::ZoneMean => "zone_mean",
            Pooling::ZoneCells2x2 => "zone_cells_2x2",
            Pooling::ZoneMeanMax => "zone_mean_max",
        }
    }
}

/// The cells (row-major indices) each pooled part averages, for one zone on one grid.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneMask {
    pub pooling: Pooling,
    pub grid_width: usize,
    pub grid_height: usize,
    /// Part 0 is the whole zone (or frame); then the sub-cells, if the pooling has them.
    parts: Vec<Vec<usize>>,
}

impl ZoneMask {
    /// The mask of `polygon` (normalised 0..1 coordinates) on a `grid_width` × `grid_height` map.
    /// A zone smaller than a cell still gets the cell under its first vertex, so no part is empty.
    pub fn new(
        polygon: &[[f64; 2]],
        pooling: Pooling,
        grid_width: usize,
        grid_height: usize,
    ) -> Self {
        let centre = |i: usize| {
            let (x, y) = (i % grid_width, i / grid_width);
            [
                (x as f64 + 0.5) / grid_width as f64,
                (y as f64 + 0.5) / grid_height as f64,
            ]
        };
        let cells = grid_width * grid_height;
        let mut zone: Vec<usize> = match pooling {
            Pooling::FrameMean => (0..cells).collect(),
            _ => (0..cells)
                .filter(|&i| geometry::contains(polygon, centre(i)))
                .collect(),
        };
        if zone.is_empty() && cells > 0 {
            let [x, y] = polygon.first().copied().unwrap_or([0.5, 0.5]);
            let col = ((x * grid_width as f64) as usize).min(grid_width - 1);
            let row = ((y * grid_height as f64) as usize).min(grid_height - 1);
            zone.push(row * grid_width + col);
        }
        let mut parts = vec![zone];
        if pooling == Pooling::ZoneCells2x2 {
            parts.extend(sub_cells(polygon, &parts[0], centre));
        }
        Self {
            pooling,
            grid_width,
            grid_height,
            parts,
        }
    }

    /// Cells in the whole zone.
    pub fn zone_cells(&self) -> usize {
        self.parts[0].len()
    }

    /// Pools `map` into `out` (cleared, then `pooling.dims(channels)` long); no allocation once
    /// `out` has grown to that length. The map must be on this mask's grid.
    pub fn pool(&self, map: &FeatureMap<'_>, out: &mut Vec<f32>) {
        let c = map.channels;
        out.clear();
        out.resize(self.pooling.dims(c), 0.0);
        for (part, cells) in self.parts.iter().enumerate() {
            let cells = if cells.is_empty() {
                &self.parts[0]
            } else {
                cells
            };
            let sum = &mut out[part * c..(part + 1) * c];
            for &cell in cells {
                for (s, v) in sum.iter_mut().zip(&map.data[cell * c..(cell + 1) * c]) {
                    *s += v;
                }
            }
            let n = cells.len().max(1) as f32;
            sum.iter_mut().for_each(|s| *s /= n);
        }
        if self.pooling == Pooling::ZoneMeanMax {
            let max = &mut out[c..2 * c];
            max.fill(f32::MIN);
            for &cell in &self.parts[0] {
                for (m, v) in max.iter_mut().zip(&map.data[cell * c..(cell + 1) * c]) {
                    *m = m.max(*v);
                }
            }
        }
    }
}

/// The zone's cells in each part of its bounding box split `CELLS_PER_SIDE` × `CELLS_PER_SIDE`
/// (by cell centre), row-major; a part may be empty (pooling then uses the whole zone).
fn sub_cells(
    polygon: &[[f64; 2]],
    zone: &[usize],
    centre: impl Fn(usize) -> [f64; 2],
) -> Vec<Vec<usize>> {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in polygon {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let n = CELLS_PER_SIDE;
    let mut parts = vec![Vec::new(); n * n];
    for &cell in zone {
        let [x, y] = centre(cell);
        let at = |v: f64, k: usize| {
            let span = (hi[k] - lo[k]).max(f64::EPSILON);
            (((v - lo[k]) / span * n as f64) as usize).min(n - 1)
        };
        parts[at(y, 1) * n + at(x, 0)].push(cell);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×4 map of 2 channels: cells in the square (0.5..1, 0.5..1) hold (1 + column, 2),
    /// every other cell 0.
    fn map_data() -> Vec<f32> {
        let mut data = vec![0.0; 4 * 4 * 2];
        for y in 2..4 {
            for x in 2..4 {
                let i = (y * 4 + x) * 2;
                data[i] = 1.0 + x as f32;
                data[i + 1] = 2.0;
            }
        }
        data
    }

    const SQUARE: [[f64; 2]; 4] = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]];

    #[test]
    fn card_names_are_the_cli_names() {
        for p in Pooling::ALL {
            let text = toml::to_string(&std::collections::BTreeMap::from([("p", p)])).unwrap();
            assert_eq!(text.trim(), format!("p = \"{}\"", p.name()));
        }
    }

    #[test]
    fn zone_mean_averages_only_cells_inside() {
        let data = map_data();
        let map = FeatureMap::new(4, 4, 2, &data).unwrap();
        let mut out = Vec::new();
        ZoneMask::new(&SQUARE, Pooling::ZoneMean, 4, 4).pool(&map, &mut out);
        assert_eq!(out, vec![3.5, 2.0]);
        ZoneMask::new(&SQUARE, Pooling::FrameMean, 4, 4).pool(&map, &mut out);
        assert_eq!(out, vec![14.0 / 16.0, 0.5]);
        ZoneMask::new(&SQUARE, Pooling::ZoneMeanMax, 4, 4).pool(&map, &mut out);
        assert_eq!(out, vec![3.5, 2.0, 4.0, 2.0], "mean, then the maximum");
        let outside = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]];
        ZoneMask::new(&outside, Pooling::ZoneMean, 4, 4).pool(&map, &mut out);
        assert_eq!(out, vec![0.0, 0.0]);
    }

    #[test]
    fn cells_2x2_split_the_zone_box_and_reuse_the_buffer() {
        let data = map_data();
        let map = FeatureMap::new(4, 4, 2, &data).unwrap();
        let mask = ZoneMask::new(&SQUARE, Pooling::ZoneCells2x2, 4, 4);
        assert_eq!(mask.zone_cells(), 4);
        let mut out = Vec::with_capacity(10);
        let before = out.as_ptr();
        mask.pool(&map, &mut out);
        // Zone mean, then top-left (x = 2), top-right (x = 3), bottom-left, bottom-right.
        assert_eq!(out, vec![3.5, 2.0, 3.0, 2.0, 4.0, 2.0, 3.0, 2.0, 4.0, 2.0]);
        assert_eq!(out.as_ptr(), before, "pooling must not reallocate");
    }

    #[test]
    fn an_empty_part_falls_back_to_the_zone_mean_and_a_tiny_zone_gets_a_cell() {
        let data = map_data();
        let map = FeatureMap::new(4, 4, 2, &data).unwrap();
        // A triangle whose box's top-right quarter holds no cell centre.
        let triangle = [[0.5, 0.5], [0.6, 1.0], [0.5, 1.0]];
        let mut out = Vec::new();
        let tiny = ZoneMask::new(&triangle, Pooling::ZoneMean, 4, 4);
        assert_eq!(tiny.zone_cells(), 1, "the cell under the first vertex");
        tiny.pool(&map, &mut out);
        assert_eq!(out, vec![3.0, 2.0]);
        let wide = [[0.5, 0.55], [1.0, 1.0], [0.5, 1.0]];
        ZoneMask::new(&wide, Pooling::ZoneCells2x2, 4, 4).pool(&map, &mut out);
        assert_eq!(
            &out[..2],
            &out[4..6],
            "the empty top-right part repeats the zone mean"
        );
    }
}
