//! Evidence rendering: the analysed frame restored to the camera's aspect ratio, with the zone
//! and the objects that made the event drawn on it, encoded as JPEG.

use opencv::core::{CV_8UC3, Mat, Point, Rect, Scalar, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;

use crate::infer::Detection;
use crate::ingest::Frame;

const JPEG_QUALITY: u8 = 85;
const ZONE_COLOUR: (f64, f64, f64) = (255.0, 200.0, 0.0);
const OBJECT_COLOUR: (f64, f64, f64) = (230.0, 30.0, 30.0);

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("drawing the snapshot failed: {0}")]
    Draw(#[from] opencv::Error),
    #[error("encoding the snapshot failed: {0}")]
    Encode(#[from] image::ImageError),
}

/// A JPEG with its size.
pub struct Snapshot {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

fn rgb((r, g, b): (f64, f64, f64)) -> Scalar {
    // Mats here hold RGB, so channel order is R, G, B.
    Scalar::new(r, g, b, 0.0)
}

/// Renders `frame` at most `max_width` wide, at its display aspect, with zone and boxes.
pub fn render(
    frame: &Frame,
    zone: &[[f64; 2]],
    objects: &[Detection],
    max_width: u32,
) -> Result<Snapshot, EvidenceError> {
    let (w, h) = (frame.width as i32, frame.height as i32);
    let mut src = Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(0.0))?;
    {
        let dst = src.data_bytes_mut()?;
        let row = w as usize * 3;
        for y in 0..h as usize {
            dst[y * row..(y + 1) * row]
                .copy_from_slice(&frame.rgb()[y * frame.row_stride..y * frame.row_stride + row]);
        }
    }
    // Keep the analysed height (no invented detail), restore the width; cap the width.
    let mut out_h = h;
    let mut out_w = ((h as f64) * frame.display_aspect).round().max(1.0) as i32;
    if out_w > max_width as i32 {
        out_h = ((out_h as f64) * max_width as f64 / out_w as f64)
            .round()
            .max(1.0) as i32;
        out_w = max_width as i32;
    }
    let mut img = Mat::default();
    imgproc::resize(
        &src,
        &mut img,
        Size::new(out_w, out_h),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )?;

    let to_px = |p: [f64; 2]| {
        Point::new(
            (p[0] * out_w as f64).round() as i32,
            (p[1] * out_h as f64).round() as i32,
        )
    };
    let polygon: Vector<Point> = zone.iter().map(|&p| to_px(p)).collect();
    let polygons: Vector<Vector<Point>> = std::iter::once(polygon).collect();
    imgproc::polylines(
        &mut img,
        &polygons,
        true,
        rgb(ZONE_COLOUR),
        2,
        imgproc::LINE_AA,
        0,
    )?;
    for d in objects {
        let a = to_px([f64::from(d.bbox[0]), f64::from(d.bbox[1])]);
        let b = to_px([f64::from(d.bbox[2]), f64::from(d.bbox[3])]);
        imgproc::rectangle(
            &mut img,
            Rect::from_points(a, b),
            rgb(OBJECT_COLOUR),
            2,
            imgproc::LINE_8,
            0,
        )?;
        let text = format!("{} {:.0}%", d.label, d.score * 100.0);
        imgproc::put_text(
            &mut img,
            &text,
            Point::new(a.x, (a.y - 4).max(10)),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.4,
            rgb(OBJECT_COLOUR),
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }

    let pixels = img.data_bytes()?.to_vec();
    let mut jpeg = Vec::with_capacity(pixels.len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode(
        &pixels,
        out_w as u32,
        out_h as u32,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(Snapshot {
        jpeg,
        width: out_w as u32,
        height: out_h as u32,
    })
}
