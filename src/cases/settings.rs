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
    /// 103060: limits per handling level, when the clock starts, reminders and escalation.
    pub deadlines: DeadlineSettings,
    /// 视频核查: the camera's re-check when the platform reports a case handled.
    pub verification: VerificationSettings,
}

/// The moment a case's 103060 clock starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStart {
    /// When the rule confirmed the episode.
    #[default]
    Detection,
    /// When a reviewer confirmed it (cases dispatched unattended: their detection).
    Review,
    /// When the platform accepted it (the first delivery).
    Dispatch,
}

impl ClockStart {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockStart::Detection => "detection",
            ClockStart::Review => "review",
            ClockStart::Dispatch => "dispatch",
        }
    }
}

pub const DEFAULT_SIMPLE_SECONDS: f64 = 600.0;
pub const DEFAULT_GENERAL_SECONDS: f64 = 1800.0;
pub const DEFAULT_DIFFICULT_SECONDS: f64 = 3600.0;
/// A reminder this long before the deadline (0: none).
pub const DEFAULT_REMIND_BEFORE_SECONDS: f64 = 120.0;
/// A week: longer limits are typos.
pub const MAX_DEADLINE_SECONDS: f64 = 7.0 * 86_400.0;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineSettings {
    pub counted_from: ClockStart,
    /// The plan's 10 / 30 / 60 minutes.
    pub simple_seconds: f64,
    pub general_seconds: f64,
    pub difficult_seconds: f64,
    /// A reminder to the platform this long before the deadline of a case not yet handled.
    pub remind_before_seconds: f64,
    /// At the deadline, escalate (督办) to the station that leads difficult problems.
    pub escalate: bool,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        Self {
            counted_from: ClockStart::Detection,
            simple_seconds: DEFAULT_SIMPLE_SECONDS,
            general_seconds: DEFAULT_GENERAL_SECONDS,
            difficult_seconds: DEFAULT_DIFFICULT_SECONDS,
            remind_before_seconds: DEFAULT_REMIND_BEFORE_SECONDS,
            escalate: true,
        }
    }
}

impl DeadlineSettings {
    /// The limit of `level`, in milliseconds.
    pub fn limit_ms(&self, level: gridwatch_case::HandlingLevel) -> i64 {
        let s = match level {
            gridwatch_case::HandlingLevel::Simple => self.simple_seconds,
            gridwatch_case::HandlingLevel::General => self.general_seconds,
            gridwatch_case::HandlingLevel::Difficult => self.difficult_seconds,
        };
        (s.clamp(1.0, MAX_DEADLINE_SECONDS) * 1000.0) as i64
    }

    fn validate(&self, out: &mut Vec<(String, String)>) {
        for (field, v) in [
            ("simple_seconds", self.simple_seconds),
            ("general_seconds", self.general_seconds),
            ("difficult_seconds", self.difficult_seconds),
        ] {
            if !(1.0..=MAX_DEADLINE_SECONDS).contains(&v) {
                out.push((
                    format!("deadlines.{field}"),
                    format!("must be a number of seconds in [1, {MAX_DEADLINE_SECONDS}], got {v}"),
                ));
            }
        }
        let r = self.remind_before_seconds;
        if !(0.0..=MAX_DEADLINE_SECONDS).contains(&r) {
            out.push((
                "deadlines.remind_before_seconds".into(),
                format!("must be a number of seconds in [0, {MAX_DEADLINE_SECONDS}] (0: no reminder), got {r}"),
            ));
        }
    }
}

pub const DEFAULT_VERIFY_CHECKS: u32 = 3;
pub const DEFAULT_VERIFY_WINDOW_SECONDS: f64 = 300.0;
pub const DEFAULT_VERIFY_CLEAR_CHECKS: u32 = 2;
pub const MAX_VERIFY_CHECKS: u32 = 100;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationSettings {
    pub enabled: bool,
    /// Checks in which the problem is still there before the case is reopened (核查不通过).
    pub checks: u32,
    /// Over how long those checks are spread (the first is at once).
    pub window_seconds: f64,
    /// Consecutive analysed frames without the problem that pass the check (a detector's
    /// one-frame miss is not a fix).
    pub clear_checks: u32,
    /// Tell the platform when an episode ends before anyone acted (自行消除).
    pub report_self_resolved: bool,
}

impl Default for VerificationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            checks: DEFAULT_VERIFY_CHECKS,
            window_seconds: DEFAULT_VERIFY_WINDOW_SECONDS,
            clear_checks: DEFAULT_VERIFY_CLEAR_CHECKS,
            report_self_resolved: true,
        }
    }
}

impl VerificationSettings {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        for (field, v) in [("checks", self.checks), ("clear_checks", self.clear_checks)] {
            if !(1..=MAX_VERIFY_CHECKS).contains(&v) {
                out.push((
                    format!("verification.{field}"),
                    format!("must be in [1, {MAX_VERIFY_CHECKS}], got {v}"),
                ));
            }
        }
        let w = self.window_seconds;
        if !(0.0..=MAX_DEADLINE_SECONDS).contains(&w) {
            out.push((
                "verification.window_seconds".into(),
                format!("must be a number of seconds in [0, {MAX_DEADLINE_SECONDS}], got {w}"),
            ));
        }
    }
}

impl Default for CaseSettings {
    fn default() -> Self {
        Self {
            outbox: PathBuf::from(DEFAULT_OUTBOX),
            event_queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
            snapshot_max_width_pixels: DEFAULT_SNAPSHOT_MAX_WIDTH_PIXELS,
            retention_days: DEFAULT_RETENTION_DAYS,
            deadlines: DeadlineSettings::default(),
            verification: VerificationSettings::default(),
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
        self.deadlines.validate(&mut out);
        self.verification.validate(&mut out);
        out
    }
}
