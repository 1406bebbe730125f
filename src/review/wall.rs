//! The patrol wall's pictures: the latest analysed frame of each camera with its detections,
//! handed over by the scenario thread through [`LatestFrames`] and turned into a JPEG (zones and
//! boxes drawn) only when the console asks for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::cases::evidence::{self, EvidenceError};
use crate::infer::Detection;
use crate::ingest::Frame;

/// The scenario thread copies a camera's frame at most this often: the wall refreshes slower
/// than that, and a copy per analysed frame would be wasted work on the hot path.
pub const COPY_INTERVAL: Duration = Duration::from_secs(1);
/// Width of the wall's pictures.
pub const WALL_WIDTH_PIXELS: u32 = 640;

struct Latest {
    width: u32,
    height: u32,
    display_aspect: f64,
    seq: u64,
    stream_seconds: f64,
    captured_at: SystemTime,
    /// Packed RGB (the GStreamer buffer is not kept: it belongs to the camera's pipeline).
    rgb: Vec<u8>,
    objects: Vec<Detection>,
    copied: Instant,
    /// The JPEG of this frame, once someone asked for it.
    jpeg: Option<Arc<Vec<u8>>>,
}

impl Latest {
    /// The copied picture as a frame of camera `camera`.
    fn frame(&self, camera: usize, camera_id: &str) -> Option<Frame> {
        let mut frame = Frame::from_rgb(
            camera,
            Arc::from(camera_id),
            self.seq,
            self.stream_seconds,
            self.width,
            self.height,
            self.rgb.clone(),
        )?;
        frame.display_aspect = self.display_aspect;
        frame.captured_at = self.captured_at;
        Some(frame)
    }
}

/// The latest analysed frame per camera (by configuration index); cheap to clone.
#[derive(Clone, Default)]
pub struct LatestFrames {
    inner: Arc<Mutex<Vec<Option<Latest>>>>,
}

impl std::fmt::Debug for LatestFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestFrames").finish_non_exhaustive()
    }
}

/// A wall picture.
pub struct WallFrame {
    pub jpeg: Arc<Vec<u8>>,
    pub captured_at: SystemTime,
    pub seq: u64,
}

impl LatestFrames {
    pub fn new(cameras: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new((0..cameras).map(|_| None).collect())),
        }
    }

    /// Makes room for cameras a configuration reload added.
    pub fn ensure_cameras(&self, cameras: usize) {
        let mut v = self.lock();
        // An empty registry means no console: it stays without slots.
        if !v.is_empty() && v.len() < cameras {
            v.resize_with(cameras, || None);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Latest>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the scenario thread after each analysed frame; copies the pixels only when the
    /// camera's last copy is older than [`COPY_INTERVAL`]. A registry without slots (no console)
    /// costs one lock.
    pub fn offer(&self, frame: &Frame, objects: &[Detection]) {
        {
            let v = self.lock();
            match v.get(frame.camera) {
                None => return,
                Some(Some(l)) if l.copied.elapsed() < COPY_INTERVAL => return,
                _ => {}
            }
        }
        // Copy outside the lock: the console may be encoding another camera meanwhile.
        let row = frame.width as usize * 3;
        let mut rgb = Vec::with_capacity(row * frame.height as usize);
        for y in 0..frame.height as usize {
            let start = y * frame.row_stride;
            rgb.extend_from_slice(&frame.rgb()[start..start + row]);
        }
        let latest = Latest {
            width: frame.width,
            height: frame.height,
            display_aspect: frame.display_aspect,
            seq: frame.seq,
            stream_seconds: frame.stream_seconds,
            captured_at: frame.captured_at,
            rgb,
            objects: objects.to_vec(),
            copied: Instant::now(),
            jpeg: None,
        };
        if let Some(slot) = self.lock().get_mut(frame.camera) {
            *slot = Some(latest);
        }
    }

    /// The camera's latest analysed frame, unannotated and lossless (PNG, at the size the
    /// models saw it): what a zone-state label keeps to train on. Blocking (encoding).
    pub fn png(&self, camera: usize) -> Result<Option<Vec<u8>>, image::ImageError> {
        let (w, h, rgb) = {
            let v = self.lock();
            let Some(Some(l)) = v.get(camera) else {
                return Ok(None);
            };
            (l.width, l.height, l.rgb.clone())
        };
        let Some(img) = image::RgbImage::from_raw(w, h, rgb) else {
            return Ok(None);
        };
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)?;
        Ok(Some(out.into_inner()))
    }

    /// The camera's latest analysed frame, unannotated (what a staff report starts from).
    pub fn frame(&self, camera: usize, camera_id: &str) -> Option<Frame> {
        match self.lock().get(camera) {
            Some(Some(l)) => l.frame(camera, camera_id),
            _ => None,
        }
    }

    /// The camera's latest frame as JPEG with `zones` and its detections drawn; encoded once
    /// per copied frame. Blocking (drawing and encoding take milliseconds of a core): the console
    /// calls it on the blocking pool.
    pub fn jpeg(
        &self,
        camera: usize,
        camera_id: &str,
        zones: &[&[[f64; 2]]],
    ) -> Result<Option<WallFrame>, EvidenceError> {
        let (frame, objects, captured_at, seq) = {
            let v = self.lock();
            let Some(Some(l)) = v.get(camera) else {
                return Ok(None);
            };
            if let Some(j) = &l.jpeg {
                return Ok(Some(WallFrame {
                    jpeg: j.clone(),
                    captured_at: l.captured_at,
                    seq: l.seq,
                }));
            }
            let Some(frame) = l.frame(camera, camera_id) else {
                return Ok(None);
            };
            (frame, l.objects.clone(), l.captured_at, l.seq)
        };
        let snap = evidence::annotate(&frame, zones, &objects, WALL_WIDTH_PIXELS)?;
        let jpeg = Arc::new(snap.jpeg);
        if let Some(Some(l)) = self.lock().get_mut(camera)
            && l.seq == seq
        {
            l.jpeg = Some(jpeg.clone());
        }
        Ok(Some(WallFrame {
            jpeg,
            captured_at,
            seq,
        }))
    }
}

impl crate::scenarios::FrameObserver for LatestFrames {
    fn ensure_cameras(&self, cameras: usize) {
        LatestFrames::ensure_cameras(self, cameras);
    }

    fn seen(&self, frame: &Frame, objects: &[Detection]) {
        self.offer(frame, objects);
    }
}
