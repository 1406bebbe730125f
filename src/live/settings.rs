//! The `[live]` section: the patrol wall's live video and the full-resolution evidence that
//! both read the camera's encoded stream.

/// Fragments (access units) a viewer may have queued before it is cut to the next keyframe.
pub const DEFAULT_VIEWER_QUEUE_FRAMES: usize = 120;
pub const MAX_VIEWER_QUEUE_FRAMES: usize = 2_000;
/// Encoded bytes each camera keeps (its last two groups of pictures) for joining viewers and
/// for full-resolution evidence.
pub const DEFAULT_CACHE_MEGABYTES: u32 = 8;
pub const MAX_CACHE_MEGABYTES: u32 = 256;
/// Viewers of one camera at once.
pub const DEFAULT_MAX_VIEWERS_PER_CAMERA: usize = 16;
pub const MAX_MAX_VIEWERS_PER_CAMERA: usize = 256;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Live video on the wall (H.264 passed through; other codecs show stills).
    pub enabled: bool,
    /// Case snapshots and crops decoded from the camera's own stream at its resolution, when
    /// a case is made; off (or when the frame is no longer cached): the analysed frame.
    pub full_resolution_evidence: bool,
    pub viewer_queue_frames: usize,
    pub cache_megabytes: u32,
    pub max_viewers_per_camera: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            full_resolution_evidence: true,
            viewer_queue_frames: DEFAULT_VIEWER_QUEUE_FRAMES,
            cache_megabytes: DEFAULT_CACHE_MEGABYTES,
            max_viewers_per_camera: DEFAULT_MAX_VIEWERS_PER_CAMERA,
        }
    }
}

impl LiveSettings {
    /// Range checks: (field below `live`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=MAX_VIEWER_QUEUE_FRAMES).contains(&self.viewer_queue_frames) {
            out.push((
                "viewer_queue_frames".into(),
                format!(
                    "must be in [1, {MAX_VIEWER_QUEUE_FRAMES}], got {}",
                    self.viewer_queue_frames
                ),
            ));
        }
        if !(1..=MAX_CACHE_MEGABYTES).contains(&self.cache_megabytes) {
            out.push((
                "cache_megabytes".into(),
                format!(
                    "must be in [1, {MAX_CACHE_MEGABYTES}], got {}",
                    self.cache_megabytes
                ),
            ));
        }
        if !(1..=MAX_MAX_VIEWERS_PER_CAMERA).contains(&self.max_viewers_per_camera) {
            out.push((
                "max_viewers_per_camera".into(),
                format!(
                    "must be in [1, {MAX_MAX_VIEWERS_PER_CAMERA}], got {}",
                    self.max_viewers_per_camera
                ),
            ));
        }
        out
    }

    pub fn cache_bytes(&self) -> usize {
        self.cache_megabytes as usize * 1024 * 1024
    }
}
