//! Evidence rendering: the analysed frame restored to the camera's aspect ratio, with the zone
//! and the objects that made the event drawn on it, encoded as JPEG; plus a crop of the objects.

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
    #[error(
        "the frame's pixels ({have} bytes) do not fill its {width}x{height} size at a row stride of {stride}"
    )]
    Frame {
        have: usize,
        width: u32,
        height: u32,
        stride: usize,
    },
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

/// The evidence of an event: the annotated snapshot and a crop around its objects.
pub struct Evidence {
    pub snapshot: Snapshot,
    /// The objects' union box (with a margin), unannotated; `None` when there are no objects.
    pub crop: Option<Snapshot>,
}

/// Margin around the objects' union box in the crop, as a fraction of its size.
const CROP_MARGIN: f64 = 0.15;
/// Smaller crops carry nothing a reviewer can see.
const CROP_MIN_PIXELS: i32 = 16;

/// Renders `frame` at most `max_width` wide, at its display aspect, with zone and boxes, plus
/// the crop of the objects.
pub fn render(
    frame: &Frame,
    zone: &[[f64; 2]],
    objects: &[Detection],
    max_width: u32,
) -> Result<Evidence, EvidenceError> {
    render_with(frame, &[zone], objects, max_width, true)
}

/// `frame` with any number of zones (none: the clean frame, for training data) and boxes, no
/// crop: the review console's patrol wall and the reviewed cases' clean frames.
pub fn annotate(
    frame: &Frame,
    zones: &[&[[f64; 2]]],
    objects: &[Detection],
    max_width: u32,
) -> Result<Snapshot, EvidenceError> {
    Ok(render_with(frame, zones, objects, max_width, false)?.snapshot)
}

/// A frame whose buffer is shorter than its size says (a caps or stride mismatch) is an error,
/// not a panic in the copy below.
fn check_frame(frame: &Frame) -> Result<(), EvidenceError> {
    let (width, height, stride) = (frame.width, frame.height, frame.row_stride);
    let need = (height as usize)
        .checked_sub(1)
        .and_then(|rows| rows.checked_mul(stride))
        .and_then(|n| n.checked_add(width as usize * 3));
    let have = frame.rgb().len();
    match need {
        Some(need) if width > 0 && stride >= width as usize * 3 && have >= need => Ok(()),
        _ => Err(EvidenceError::Frame {
            have,
            width,
            height,
            stride,
        }),
    }
}

fn render_with(
    frame: &Frame,
    zones: &[&[[f64; 2]]],
    objects: &[Detection],
    max_width: u32,
    with_crop: bool,
) -> Result<Evidence, EvidenceError> {
    check_frame(frame)?;
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
    let mut clean = Mat::default();
    imgproc::resize(
        &src,
        &mut clean,
        Size::new(out_w, out_h),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )?;
    let crop = if with_crop {
        crop_objects(&clean, objects, out_w, out_h)?
    } else {
        None
    };
    let mut img = clean.try_clone()?;

    let to_px = |p: [f64; 2]| {
        Point::new(
            (p[0] * out_w as f64).round() as i32,
            (p[1] * out_h as f64).round() as i32,
        )
    };
    // OpenCV refuses an empty contour: a clean frame has no zone at all.
    let polygons: Vector<Vector<Point>> = zones
        .iter()
        .filter(|z| !z.is_empty())
        .map(|z| z.iter().map(|&p| to_px(p)).collect::<Vector<Point>>())
        .collect();
    if !polygons.is_empty() {
        imgproc::polylines(
            &mut img,
            &polygons,
            true,
            rgb(ZONE_COLOUR),
            2,
            imgproc::LINE_AA,
            0,
        )?;
    }
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
    Ok(Evidence {
        snapshot: encode(&img)?,
        crop,
    })
}

/// The union of the objects' boxes with a margin, clamped to the image.
fn crop_objects(
    img: &Mat,
    objects: &[Detection],
    w: i32,
    h: i32,
) -> Result<Option<Snapshot>, EvidenceError> {
    if objects.is_empty() {
        return Ok(None);
    }
    let (mut x1, mut y1, mut x2, mut y2) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for d in objects {
        x1 = x1.min(f64::from(d.bbox[0]));
        y1 = y1.min(f64::from(d.bbox[1]));
        x2 = x2.max(f64::from(d.bbox[2]));
        y2 = y2.max(f64::from(d.bbox[3]));
    }
    let (mx, my) = ((x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN);
    let px = |v: f64, size: i32| ((v.clamp(0.0, 1.0)) * size as f64).round() as i32;
    let (ax, ay) = (px(x1 - mx, w), px(y1 - my, h));
    let (bx, by) = (px(x2 + mx, w), px(y2 + my, h));
    if bx - ax < CROP_MIN_PIXELS || by - ay < CROP_MIN_PIXELS {
        return Ok(None);
    }
    let roi = Mat::roi(img, Rect::new(ax, ay, bx - ax, by - ay))?;
    let crop = roi.try_clone()?;
    Ok(Some(encode(&crop)?))
}

fn encode(img: &Mat) -> Result<Snapshot, EvidenceError> {
    let (w, h) = (img.cols() as u32, img.rows() as u32);
    // A continuous copy: ROIs share rows with their parent.
    let pixels = if img.is_continuous() {
        img.data_bytes()?.to_vec()
    } else {
        img.try_clone()?.data_bytes()?.to_vec()
    };
    let mut jpeg = Vec::with_capacity(pixels.len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode(
        &pixels,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(Snapshot {
        jpeg,
        width: w,
        height: h,
    })
}
