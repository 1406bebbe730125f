//! Camera re-checks (视频核查): when a platform reports a case handled, the camera that raised
//! it looks at the zone again at once, whatever its cadence. The dispatch side adds requests
//! (`Rechecks::add`), the gate lets a camera's next frame through while one of its checks is
//! due (`Rechecks::due`), and the scenario stage reports on each analysed frame whether the
//! case's scenario still holds in its zone (`Rechecks::observe`), which decides the round:
//! `clear_checks` frames in a row without the problem pass it; the problem seen at `checks`
//! checks spread over `window` fails it (the case is reopened). A shared handle below every
//! stage that uses it, so data still flows one way through the imports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A re-check the platform asked for: the case's zone, this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub case_id: String,
    pub round: i64,
    pub camera: String,
    pub zone: String,
    pub scenario: String,
    /// When the platform's status arrived (Unix ms), for logs and the console.
    pub requested_at_ms: i64,
}

/// How a round is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Checks in which the problem is still there before the round fails.
    pub checks: u32,
    /// Over how long those checks are spread (the first is at once).
    pub window: Duration,
    /// Frames in a row without the problem that pass the round.
    pub clear_checks: u32,
}

/// A decided round.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub request: Request,
    pub passed: bool,
}

#[derive(Debug)]
struct Pending {
    request: Request,
    next_due: Instant,
    present: u32,
    clear_run: u32,
}

/// The shared handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Rechecks {
    policy: Policy,
    pending: Arc<Mutex<Vec<Pending>>>,
    /// How many are pending: the gate's per-frame test reads only this when none is.
    count: Arc<AtomicUsize>,
}

impl Rechecks {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Policy {
                checks: policy.checks.max(1),
                clear_checks: policy.clear_checks.max(1),
                ..policy
            },
            pending: Arc::default(),
            count: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a round (a repeat of one pending is ignored); its first check is due now.
    pub fn add(&self, request: Request) {
        let mut pending = self.lock();
        if pending
            .iter()
            .any(|p| p.request.case_id == request.case_id && p.request.round == request.round)
        {
            return;
        }
        tracing::info!(case = %request.case_id, round = request.round, camera = %request.camera, zone = %request.zone, "camera re-check requested");
        pending.push(Pending {
            request,
            next_due: Instant::now(),
            present: 0,
            clear_run: 0,
        });
        self.count.store(pending.len(), Ordering::Release);
    }

    /// Rounds still open.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a check of `camera` is due: its next frame must be analysed.
    pub fn due(&self, camera: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let now = Instant::now();
        self.lock()
            .iter()
            .any(|p| p.request.camera == camera && p.next_due <= now)
    }

    /// One analysed frame of `camera`: `holds(zone, scenario)` says whether the scenario's
    /// condition holds in the zone on it (`None`: the zone or scenario is not analysed there any
    /// more: the round waits). Returns the rounds decided by this frame.
    pub fn observe(
        &self,
        camera: &str,
        mut holds: impl FnMut(&str, &str) -> Option<bool>,
    ) -> Vec<Outcome> {
        if self.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut pending = self.lock();
        let mut decided = Vec::new();
        let spacing = self.policy.window / self.policy.checks.saturating_sub(1).max(1);
        pending.retain_mut(|p| {
            if p.request.camera != camera || p.next_due > now {
                return true;
            }
            let Some(present) = holds(&p.request.zone, &p.request.scenario) else {
                // Not analysed here any more (a reload): look again later, not on every frame.
                p.next_due = now + spacing.max(Duration::from_secs(1));
                return true;
            };
            if present {
                p.clear_run = 0;
                p.present += 1;
                p.next_due = now + spacing;
            } else {
                p.clear_run += 1;
            }
            let passed = p.clear_run >= self.policy.clear_checks;
            let failed = p.present >= self.policy.checks;
            if passed || failed {
                decided.push(Outcome {
                    request: p.request.clone(),
                    passed,
                });
                return false;
            }
            true
        });
        self.count.store(pending.len(), Ordering::Release);
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(case: &str) -> Request {
        Request {
            case_id: case.into(),
            round: 1,
            camera: "cam".into(),
            zone: "z".into(),
            scenario: "s".into(),
            requested_at_ms: 0,
        }
    }

    #[test]
    fn a_round_passes_on_clear_frames_in_a_row_and_fails_on_checks_over_the_window() {
        let r = Rechecks::new(Policy {
            checks: 2,
            window: Duration::from_millis(50),
            clear_checks: 2,
        });
        assert!(!r.due("cam"));
        r.add(request("gone"));
        r.add(request("gone"));
        assert_eq!(r.len(), 1, "a repeated request is one round");
        assert!(r.due("cam") && !r.due("other"));
        // Clear, present (the run restarts), then clear twice: passed.
        assert!(r.observe("cam", |_, _| Some(false)).is_empty());
        assert!(r.observe("cam", |_, _| Some(true)).is_empty());
        assert!(!r.due("cam"), "the next check waits for its spacing");
        std::thread::sleep(Duration::from_millis(60));
        assert!(r.observe("cam", |_, _| Some(false)).is_empty());
        let out = r.observe("cam", |_, _| Some(false));
        assert_eq!(out.len(), 1);
        assert!(out[0].passed);
        assert!(r.is_empty());

        r.add(request("stays"));
        assert!(
            r.observe("cam", |_, _| None).is_empty(),
            "not analysable: waits"
        );
        assert!(!r.due("cam"), "and does not hold the camera's gate open");
        std::thread::sleep(Duration::from_millis(1010));
        assert!(r.observe("cam", |_, _| Some(true)).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        let out = r.observe("cam", |_, _| Some(true));
        assert_eq!((out.len(), out[0].passed), (1, false));
    }
}
