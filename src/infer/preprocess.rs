//! Frame → model input: colour order, normalisation and layout in one pass over the pixels, into
//! a buffer the caller reuses. Frames already arrive at the model's size (scaled in GStreamer).

use super::card::{ColourOrder, InputSpec, Layout};

/// Writes `rgb` (packed RGB rows of `row_stride` bytes, `width`×`height`) into `out` as the
/// model expects it. `out` holds width × height × 3 floats.
pub fn normalise(
    spec: &InputSpec,
    width: usize,
    height: usize,
    rgb: &[u8],
    row_stride: usize,
    out: &mut [f32],
) {
    // Channel c of the model reads source channel src[c].
    let src = match spec.colour_order {
        ColourOrder::Rgb => [0, 1, 2],
        ColourOrder::Bgr => [2, 1, 0],
    };
    let scale = [1.0 / spec.std[0], 1.0 / spec.std[1], 1.0 / spec.std[2]];
    let mean = spec.mean;
    let plane = width * height;
    match spec.layout {
        Layout::Nchw => {
            let (r, rest) = out[..3 * plane].split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            let planes: [&mut [f32]; 3] = [r, g, b];
            let [p0, p1, p2] = planes;
            for y in 0..height {
                let row = &rgb[y * row_stride..y * row_stride + width * 3];
                let base = y * width;
                for (x, px) in row.chunks_exact(3).enumerate() {
                    p0[base + x] = (f32::from(px[src[0]]) - mean[0]) * scale[0];
                    p1[base + x] = (f32::from(px[src[1]]) - mean[1]) * scale[1];
                    p2[base + x] = (f32::from(px[src[2]]) - mean[2]) * scale[2];
                }
            }
        }
        Layout::Nhwc => {
            for y in 0..height {
                let row = &rgb[y * row_stride..y * row_stride + width * 3];
                let dst = &mut out[y * width * 3..(y + 1) * width * 3];
                for (px, d) in row.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                    for c in 0..3 {
                        d[c] = (f32::from(px[src[c]]) - mean[c]) * scale[c];
                    }
                }
            }
        }
    }
}
