//! The `[review]` section: the review console's address, the confidence tiers (globally and per
//! scenario), the patrol wall's rotation and the bootstrap admin. Absent section: no console and
//! every case is dispatched unattended, as before the console existed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::cases::tiers::{
    DEFAULT_AUTO_DISPATCH_SCORE, DEFAULT_REVIEW_SCORE, TierOverride, TierSettings,
};
use crate::scenarios::catalog::Catalog;

pub const DEFAULT_REVIEW_LISTEN: &str = "127.0.0.1:8780";
pub const DEFAULT_ROTATION_SECONDS: u32 = 15;
pub const DEFAULT_SESSION_HOURS: f64 = 12.0;
pub const DEFAULT_ADMIN_PASSWORD_ENV: &str = "GRIDWATCH_ADMIN_PASSWORD";
/// A held case that no reviewer handled within this time is dispatched unreviewed: the
/// shortest 103060 handling limit (simple cases, 10 minutes) should not start late.
pub const DEFAULT_REVIEW_TIMEOUT_MINUTES: f64 = 10.0;
/// Sessions last at most a year; longer is a typo (and would overflow the expiry time).
pub const MAX_SESSION_HOURS: f64 = 24.0 * 366.0;
/// A session shorter than a minute ends before a reviewer can act (and a cookie of
/// `Max-Age=0` is no session at all).
pub const MIN_SESSION_HOURS: f64 = 1.0 / 60.0;
/// The patrol wall shows a camera group at most an hour before moving on.
pub const MAX_ROTATION_SECONDS: u32 = 3600;
/// Held cases wait for a reviewer at most a week: the longest 103060 limit is an hour, and a
/// larger value overflows the release time's milliseconds.
pub const MAX_REVIEW_TIMEOUT_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// After this many rejections of one object at one place (the same camera, zone and scenario,
/// boxes overlapping by [`crate::cases::tiers::OBJECT_MATCH_IOU`]), that object is suppressed
/// there: a public bench is not shopfront business however often the rule sees it.
pub const DEFAULT_OBJECT_SUPPRESSION_AFTER_REJECTIONS: u32 = 2;
/// At most this many rejections may be asked for; more is a typo.
pub const MAX_OBJECT_SUPPRESSION_AFTER_REJECTIONS: u32 = 100;
/// How long a learned object suppression lasts, and how far back rejections are counted.
pub const DEFAULT_OBJECT_SUPPRESSION_DAYS: f64 = 7.0;
/// Learned suppressions expire within a quarter: a place changes.
pub const MAX_OBJECT_SUPPRESSION_DAYS: f64 = 90.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// Address of the console (HTTP).
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_auto_dispatch_score")]
    pub auto_dispatch_score: f32,
    #[serde(default = "default_review_score")]
    pub review_score: f32,
    /// Per-scenario overrides of the two scores, keyed by scenario id.
    #[serde(default)]
    pub scenarios: BTreeMap<String, TierOverride>,
    /// The patrol wall moves to the next camera group every this many seconds (轮巡).
    #[serde(default = "default_rotation_seconds")]
    pub rotation_seconds: u32,
    #[serde(default = "default_session_hours")]
    pub session_hours: f64,
    /// At the first start (no account yet) an `admin` account is created with the password in
    /// this environment variable; without it, a generated password is printed once.
    #[serde(default = "default_admin_password_env")]
    pub admin_password_env: String,
    /// Held cases nobody confirmed or rejected within this time go out unreviewed (audited).
    #[serde(default = "default_review_timeout_minutes")]
    pub review_timeout_minutes: f64,
    /// Rejections of one object at one place that suppress it there (0: never learned).
    #[serde(default = "default_object_suppression_after_rejections")]
    pub object_suppression_after_rejections: u32,
    /// How long a learned object suppression lasts (and the window its rejections count in).
    #[serde(default = "default_object_suppression_days")]
    pub object_suppression_days: f64,
}

fn default_object_suppression_after_rejections() -> u32 {
    DEFAULT_OBJECT_SUPPRESSION_AFTER_REJECTIONS
}

fn default_object_suppression_days() -> f64 {
    DEFAULT_OBJECT_SUPPRESSION_DAYS
}

/// What a rejection may teach: see [`ReviewSettings::object_suppression_after_rejections`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectLearning {
    /// 0: off.
    pub after_rejections: u32,
    pub lasts: Duration,
}

impl ObjectLearning {
    /// Nothing is learned from rejections.
    pub const OFF: ObjectLearning = ObjectLearning {
        after_rejections: 0,
        lasts: Duration::ZERO,
    };
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            auto_dispatch_score: DEFAULT_AUTO_DISPATCH_SCORE,
            review_score: DEFAULT_REVIEW_SCORE,
            scenarios: BTreeMap::new(),
            rotation_seconds: DEFAULT_ROTATION_SECONDS,
            session_hours: DEFAULT_SESSION_HOURS,
            admin_password_env: default_admin_password_env(),
            review_timeout_minutes: DEFAULT_REVIEW_TIMEOUT_MINUTES,
            object_suppression_after_rejections: DEFAULT_OBJECT_SUPPRESSION_AFTER_REJECTIONS,
            object_suppression_days: DEFAULT_OBJECT_SUPPRESSION_DAYS,
        }
    }
}

impl ReviewSettings {
    /// The scores the case stage splits events by.
    pub fn tiers(&self) -> TierSettings {
        TierSettings {
            auto_dispatch_score: self.auto_dispatch_score,
            review_score: self.review_score,
            scenarios: self.scenarios.clone(),
        }
    }

    /// How long a login lasts: `session_hours` within [`MIN_SESSION_HOURS`,
    /// `MAX_SESSION_HOURS`] whatever is configured (not a number: the default).
    pub fn session_ttl(&self) -> Duration {
        let h = if self.session_hours.is_nan() {
            DEFAULT_SESSION_HOURS
        } else {
            self.session_hours
        };
        Duration::try_from_secs_f64(h.clamp(MIN_SESSION_HOURS, MAX_SESSION_HOURS) * 3600.0)
            .unwrap_or(Duration::from_secs(3600))
    }

    /// How long a held case waits for a reviewer: `review_timeout_minutes` within (0,
    /// `MAX_REVIEW_TIMEOUT_MINUTES`] whatever is configured (not a number: the default).
    pub fn review_timeout(&self) -> Duration {
        let m = if self.review_timeout_minutes.is_nan() {
            DEFAULT_REVIEW_TIMEOUT_MINUTES
        } else {
            self.review_timeout_minutes
        };
        Duration::try_from_secs_f64(m.clamp(0.0, MAX_REVIEW_TIMEOUT_MINUTES) * 60.0)
            .unwrap_or(Duration::from_secs(600))
    }

    /// Object suppressions learned from rejections, bounded whatever is configured.
    pub fn object_learning(&self) -> ObjectLearning {
        let d = if self.object_suppression_days.is_nan() {
            DEFAULT_OBJECT_SUPPRESSION_DAYS
        } else {
            self.object_suppression_days
        };
        ObjectLearning {
            after_rejections: self
                .object_suppression_after_rejections
                .min(MAX_OBJECT_SUPPRESSION_AFTER_REJECTIONS),
            lasts: Duration::try_from_secs_f64(
                d.clamp(0.0, MAX_OBJECT_SUPPRESSION_DAYS) * 86_400.0,
            )
            .unwrap_or(Duration::from_secs(86_400)),
        }
    }

    /// (field path below `review`, message) pairs.
    pub fn validate(&self, catalog: &Catalog) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let in_range = |v: f32| (0.0..=1.0).contains(&v);
        let mut check = |field: String, auto: f32, review: f32| {
            if !in_range(auto) {
                out.push((
                    format!("{field}auto_dispatch_score"),
                    format!("must be in [0, 1], got {auto}"),
                ));
            }
            if !in_range(review) {
                out.push((
                    format!("{field}review_score"),
                    format!("must be in [0, 1], got {review}"),
                ));
            }
            if review > auto {
                out.push((
                    format!("{field}review_score"),
                    format!("must not exceed auto_dispatch_score ({review} > {auto})"),
                ));
            }
        };
        check(String::new(), self.auto_dispatch_score, self.review_score);
        let tiers = self.tiers();
        for id in self.scenarios.keys() {
            let (auto, review) = tiers.scores(id);
            check(format!("scenarios.{id}."), auto, review);
        }
        for id in self.scenarios.keys() {
            if catalog.entry(id).is_none() {
                out.push((
                    format!("scenarios.{id}"),
                    format!("unknown scenario `{id}`"),
                ));
            }
        }
        if !(1..=MAX_ROTATION_SECONDS).contains(&self.rotation_seconds) {
            out.push((
                "rotation_seconds".into(),
                format!(
                    "must be a number of seconds in [1, {MAX_ROTATION_SECONDS}], got {}",
                    self.rotation_seconds
                ),
            ));
        }
        if !(MIN_SESSION_HOURS..=MAX_SESSION_HOURS).contains(&self.session_hours) {
            out.push((
                "session_hours".into(),
                format!(
                    "must be a number of hours in [1/60 (a minute), {MAX_SESSION_HOURS}], got {}",
                    self.session_hours
                ),
            ));
        }
        let m = self.review_timeout_minutes;
        if !(m > 0.0 && m <= MAX_REVIEW_TIMEOUT_MINUTES) {
            out.push((
                "review_timeout_minutes".into(),
                format!(
                    "must be a number of minutes in (0, {MAX_REVIEW_TIMEOUT_MINUTES}], got {m}"
                ),
            ));
        }
        let n = self.object_suppression_after_rejections;
        if n > MAX_OBJECT_SUPPRESSION_AFTER_REJECTIONS {
            out.push((
                "object_suppression_after_rejections".into(),
                format!(
                    "must be in [0 (never), {MAX_OBJECT_SUPPRESSION_AFTER_REJECTIONS}], got {n}"
                ),
            ));
        }
        let d = self.object_suppression_days;
        if !(d > 0.0 && d <= MAX_OBJECT_SUPPRESSION_DAYS) {
            out.push((
                "object_suppression_days".into(),
                format!("must be a number of days in (0, {MAX_OBJECT_SUPPRESSION_DAYS}], got {d}"),
            ));
        }
        out
    }
}

fn default_listen() -> String {
    DEFAULT_REVIEW_LISTEN.to_owned()
}
fn default_auto_dispatch_score() -> f32 {
    DEFAULT_AUTO_DISPATCH_SCORE
}
fn default_review_score() -> f32 {
    DEFAULT_REVIEW_SCORE
}
fn default_rotation_seconds() -> u32 {
    DEFAULT_ROTATION_SECONDS
}
fn default_session_hours() -> f64 {
    DEFAULT_SESSION_HOURS
}
fn default_review_timeout_minutes() -> f64 {
    DEFAULT_REVIEW_TIMEOUT_MINUTES
}
fn default_admin_password_env() -> String {
    DEFAULT_ADMIN_PASSWORD_ENV.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_times_are_refused_and_still_convert_without_a_panic() {
        let catalog = Catalog::embedded();
        for v in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e-9, 1e300] {
            let s = ReviewSettings {
                session_hours: v,
                review_timeout_minutes: v,
                ..ReviewSettings::default()
            };
            let fields: Vec<String> = s.validate(&catalog).into_iter().map(|(f, _)| f).collect();
            assert!(
                fields.contains(&"session_hours".to_owned()),
                "{v}: {fields:?}"
            );
            if v != 1e-9 {
                assert!(
                    fields.contains(&"review_timeout_minutes".to_owned()),
                    "{v}: {fields:?}"
                );
            }
            assert!(s.session_ttl() >= Duration::from_secs(60));
            assert!(s.session_ttl() <= Duration::from_secs(366 * 86_400));
            assert!(s.review_timeout() <= Duration::from_secs(7 * 86_400));
        }
        let ok = ReviewSettings::default();
        assert!(ok.validate(&catalog).is_empty());
        assert_eq!(ok.session_ttl(), Duration::from_secs(12 * 3600));
        assert_eq!(ok.review_timeout(), Duration::from_secs(600));
    }
}
