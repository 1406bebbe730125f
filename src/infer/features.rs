//! The intermediate feature map a model card's `[features]` names: copied out of each run into a
//! buffer the detector owns (HWC, allocated once), and lent out as a [`FeatureMap`] for zone
//! states to pool. One model run gives both detections and features.

use super::card::{FeatureSpec, Layout};

/// One frame's feature map, cells row-major from the top-left, each cell's channels contiguous
/// (HWC): the value of channel `c` at cell (`x`, `y`) is `data[(y * width + x) * channels + c]`.
/// Cell (x, y) covers the normalised frame area [x/width, (x+1)/width) × [y/height, (y+1)/height).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureMap<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [f32],
}

impl<'a> FeatureMap<'a> {
    /// A map over `data`, which must hold exactly `width × height × channels` values.
    pub fn new(width: usize, height: usize, channels: usize, data: &'a [f32]) -> Option<Self> {
        (width * height * channels == data.len() && !data.is_empty()).then_some(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// The channels of cell (`x`, `y`).
    pub fn cell(&self, x: usize, y: usize) -> &'a [f32] {
        let start = (y * self.width + x) * self.channels;
        &self.data[start..start + self.channels]
    }
}

/// The detector's copy of the feature output: its spec, expected shape and the reused buffer.
pub(super) struct FeatureBuffer {
    pub spec: FeatureSpec,
    /// The ONNX output's shape, as the card implies it.
    pub shape: [usize; 4],
    width: usize,
    height: usize,
    data: Vec<f32>,
    /// Whether `data` holds a run's map (false until the first successful run).
    filled: bool,
}

impl FeatureBuffer {
    /// A zeroed buffer for the spec's map at a model input of (width, height).
    pub fn new(spec: FeatureSpec, input: (usize, usize)) -> Self {
        let shape = spec.shape(input);
        let (width, height) = spec.grid(input);
        let data = vec![0.0; width * height * spec.channels];
        Self {
            spec,
            shape,
            width,
            height,
            data,
            filled: false,
        }
    }

    /// Copies one run's output (flat, in the card's layout) into the HWC buffer; `false` when
    /// the output's shape is not the one the card implies (the buffer is then left unfilled).
    pub fn fill(&mut self, shape: &[i64], values: &[f32]) -> bool {
        let expected = self.shape.iter().map(|&d| d as i64);
        if !shape.iter().copied().eq(expected) || values.len() != self.data.len() {
            self.filled = false;
            return false;
        }
        match self.spec.layout {
            Layout::Nhwc => self.data.copy_from_slice(values),
            Layout::Nchw => {
                let (c_n, plane) = (self.spec.channels, self.width * self.height);
                for (c, channel) in values.chunks_exact(plane).enumerate() {
                    for (cell, &v) in channel.iter().enumerate() {
                        self.data[cell * c_n + c] = v;
                    }
                }
            }
        }
        self.filled = true;
        true
    }

    /// The last run did not copy its map: none is offered until one does.
    pub fn forget(&mut self) {
        self.filled = false;
    }

    /// The last run's map, once there has been one.
    pub fn map(&self) -> Option<FeatureMap<'_>> {
        self.filled.then_some(FeatureMap {
            width: self.width,
            height: self.height,
            channels: self.spec.channels,
            data: &self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_output_is_copied_to_hwc() {
        let spec = FeatureSpec {
            output: "f".into(),
            layout: Layout::Nchw,
            stride_pixels: 2,
            channels: 2,
        };
        // Input 6x4 → grid 3 wide, 2 high; channel 0 = cell index, channel 1 = 100 + index.
        let mut buffer = FeatureBuffer::new(spec, (6, 4));
        assert!(buffer.map().is_none());
        let values: Vec<f32> = (0..6)
            .map(|i| i as f32)
            .chain((0..6).map(|i| 100.0 + i as f32))
            .collect();
        assert!(buffer.fill(&[1, 2, 2, 3], &values));
        let map = buffer.map().unwrap();
        assert_eq!((map.width, map.height, map.channels), (3, 2, 2));
        assert_eq!(map.cell(2, 1), &[5.0, 105.0]);
        assert!(
            !buffer.fill(&[1, 2, 3, 2], &values),
            "a transposed shape is refused"
        );
        assert!(buffer.map().is_none());
    }
}
