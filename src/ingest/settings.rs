//! The `[ingest]` section: pacing of sources, the stall watchdog and reconnect timing.

use serde::Deserialize;

pub const DEFAULT_STALL_TIMEOUT_SECONDS: f64 = 10.0;
pub const DEFAULT_RECONNECT_INITIAL_SECONDS: f64 = 1.0;
pub const DEFAULT_RECONNECT_MAX_SECONDS: f64 = 60.0;
pub const DEFAULT_RTSP_TIMEOUT_SECONDS: f64 = 5.0;
/// Longer timings are typos; `inf` would panic in `Duration` arithmetic.
pub const MAX_INGEST_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Live cameras and demos: sources run at their own speed; a frame that arrives while the
    /// previous one of that camera still waits replaces it (counted as dropped).
    #[default]
    Realtime,
    /// Replays and tests: files are read as fast as inference takes them; no frame is dropped.
    Fast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    pub pace: Pace,
    /// No frame for this long restarts that camera (never less than 3 analysis intervals).
    pub stall_timeout_seconds: f64,
    /// First reconnect delay; doubles per failed attempt (full jitter) up to the max.
    pub reconnect_initial_seconds: f64,
    pub reconnect_max_seconds: f64,
    /// RTSP connection and receive timeout.
    pub rtsp_timeout_seconds: f64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            pace: Pace::default(),
            stall_timeout_seconds: DEFAULT_STALL_TIMEOUT_SECONDS,
            reconnect_initial_seconds: DEFAULT_RECONNECT_INITIAL_SECONDS,
            reconnect_max_seconds: DEFAULT_RECONNECT_MAX_SECONDS,
            rtsp_timeout_seconds: DEFAULT_RTSP_TIMEOUT_SECONDS,
        }
    }
}

impl IngestSettings {
    /// Range checks: (field below `ingest`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, v) in [
            ("stall_timeout_seconds", self.stall_timeout_seconds),
            ("reconnect_initial_seconds", self.reconnect_initial_seconds),
            ("reconnect_max_seconds", self.reconnect_max_seconds),
            ("rtsp_timeout_seconds", self.rtsp_timeout_seconds),
        ] {
            if !(v > 0.0 && v <= MAX_INGEST_SECONDS) {
                out.push((
                    field.to_owned(),
                    format!("must be a number of seconds in (0, {MAX_INGEST_SECONDS}], got {v}"),
                ));
            }
        }
        if self.reconnect_max_seconds < self.reconnect_initial_seconds {
            out.push((
                "reconnect_max_seconds".into(),
                "need 0 < reconnect_initial_seconds <= reconnect_max_seconds".into(),
            ));
        }
        out
    }
}
