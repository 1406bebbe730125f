//! The `[cases]` section: where the outbox lives, the event queue's bound, snapshot size.

use std::path::PathBuf;

use serde::Deserialize;

pub const DEFAULT_OUTBOX: &str = "var/gridwatch.sqlite";
pub const DEFAULT_EVENT_QUEUE_CAPACITY: usize = 64;
pub const DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS: u32 = 960;
/// Events are rare; a bigger queue only hides a stalled case stage.
pub const MAX_EVENT_QUEUE_CAPACITY: usize = 65_536;
/// Narrower than this shows nothing a reviewer could judge.
pub const MIN_SNAPSHOT_WIDTH_PIXELS: u32 = 16;
/// Wider than 8K is a typo (and an allocation the size of a poster).
pub const MAX_SNAPSHOT_WIDTH_PIXELS: u32 = 7680;
/// `retention_days` when absent.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// The longest `retention_days` (ten years); 0 turns the purge off.
pub const MAX_RETENTION_DAYS: u32 = 3650;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaseSettings {
    /// SQLite file holding cases and the delivery outbox.
    pub outbox: PathBuf,
    pub event_queue_capacity: usize,
    pub snapshot_max_width_pixels: u32,
    /// Days a finished case (delivered to every target, or rejected by a reviewer) stays in the
    /// outbox before it is deleted with its snapshot and deliveries; 0: kept forever. Pending,
    /// held, dead-lettered and unrouted cases are never deleted.
    pub retention_days: u32,
}

impl Default for CaseSettings {
    fn default() -> Self {
        Self {
            outbox: PathBuf::from(DEFAULT_OUTBOX),
            event_queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
            snapshot_max_width_pixels: DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl CaseSettings {
    /// Range checks: (field below `cases`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=MAX_EVENT_QUEUE_CAPACITY).contains(&self.event_queue_capacity) {
            out.push((
                "event_queue_capacity".into(),
                format!(
                    "must be in [1, {MAX_EVENT_QUEUE_CAPACITY}], got {}",
                    self.event_queue_capacity
                ),
            ));
        }
        let w = self.snapshot_max_width_pixels;
        if !(MIN_SNAPSHOT_WIDTH_PIXELS..=MAX_SNAPSHOT_WIDTH_PIXELS).contains(&w) {
            out.push((
                "snapshot_max_width_pixels".into(),
                format!(
                    "must be in [{MIN_SNAPSHOT_WIDTH_PIXELS}, {MAX_SNAPSHOT_WIDTH_PIXELS}], got {w}"
                ),
            ));
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            out.push((
                "retention_days".into(),
                format!(
                    "must be within 0..={MAX_RETENTION_DAYS} (0: keep cases forever), got {}",
                    self.retention_days
                ),
            ));
        }
        out
    }
}
