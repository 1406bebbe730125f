//! A stored case history whose outcomes are known: the statistics' tests compare every figure
//! of a report with what was decided here, and `gridwatch-bench history` makes outbox files of
//! a million cases to time reports on.
//!
//! Cases are written as the pipeline and the review console write them: stored with their
//! 103060 clock by [`Outbox::store_with_clock`] (which also writes their `case_facts` row),
//! released or rejected by the outbox's own `release_case` / `reject_deliveries` with the review
//! store's rows beside them, delivered or dead-lettered by `mark_delivered` / `mark_dead`. Those
//! functions stamp the wall clock; the history's own moments (stored, decided, delivered, clock
//! started, handled, self-resolved) are then set with plain SQL, and verification rounds are
//! inserted as the platform loop leaves them.
//!
//! Every store is a transaction synced to disk (a few milliseconds each), so a large history is
//! a base set written that way and multiplied in SQL ([`replicate`]): each copy gets new ids
//! and its times shifted back by whole days, in one unsynced transaction.

use std::path::Path;

use gridwatch::cases::outbox::{self, InitialState, NewCase, Outbox, OutboxError};
use gridwatch::cases::routing::PRIMARY_TARGET_ID;
use gridwatch::cases::settings::{ClockStart, DeadlineSettings};
use gridwatch::cases::{
    CASE_SCHEMA, CASE_SOURCE, Case, CaseCamera, CaseEpisode, CaseObject, CaseScenario,
    CaseSnapshot, CaseZone, HandlingLevel, Named, ReportedBy,
};
use gridwatch::config::Config;
use gridwatch::scenarios::ScenarioInfo;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use time::OffsetDateTime;

const SECOND_MS: i64 = 1000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Held cases no reviewer decided within this long go out unreviewed (the review timeout).
pub const RELEASE_AFTER_MS: i64 = 15 * MINUTE_MS;
/// Only cases detected this close to the history's end may still be awaiting review.
pub const AWAITING_WITHIN_MS: i64 = DAY_MS;
/// Copies beyond one per tile of days are shifted back this much more per layer (see
/// [`CopyPlan`]).
pub const LAYER_SHIFT_MS: i64 = 97 * SECOND_MS;
/// Cases written through the outbox's functions by [`generate_bulk`] at most, by default.
pub const DEFAULT_BASE_CASES: usize = 2000;

const REVIEWER: &str = "reviewer-1";
const STAFF: &str = "patrol-1";

/// The shares of fates (of all cases, or of those that reach the step).
const STAFF_SHARE: f64 = 0.05;
const HELD_SHARE: f64 = 0.45;
const AWAITING_SHARE: f64 = 0.35;
const CONFIRMED_SHARE: f64 = 0.55;
const REJECTED_SHARE: f64 = 0.27;
const DEAD_SHARE: f64 = 0.03;
const SELF_RESOLVED_SHARE: f64 = 0.08;
const HANDLED_SHARE: f64 = 0.80;
const REOPENED_SHARE: f64 = 0.08;
const HANDLED_AGAIN_SHARE: f64 = 0.6;
/// Detections put exactly on a shift change (08:00 or 20:00 local) or a millisecond before it.
const BOUNDARY_SHARE: f64 = 0.04;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history: {0}")]
    Outbox(#[from] OutboxError),
    #[error("history: SQLite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("history: case JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("history: {0}")]
    Invalid(String),
}

/// What a reviewer made of a case, as the statistics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Review {
    /// Dispatched without a reviewer: never held, or held and released at the review timeout.
    Unattended,
    Confirmed,
    Rejected,
    /// Held, no decision yet.
    Awaiting,
}

impl Review {
    /// The statistics' name (`stats::CaseLine::review`).
    pub fn as_str(self) -> &'static str {
        match self {
            Review::Unattended => "unattended",
            Review::Confirmed => "confirmed",
            Review::Rejected => "rejected",
            Review::Awaiting => "awaiting_review",
        }
    }
}

/// A verification round (视频核查) as the platform loop leaves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub round: i64,
    /// `None`: still checking.
    pub passed: Option<bool>,
    pub requested_ms: i64,
    pub decided_ms: Option<i64>,
}

/// One case of a history and everything decided for it (times in Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedCase {
    pub id: String,
    /// `confirmed_at` of the case: when the rule confirmed the episode.
    pub detected_ms: i64,
    pub unit: String,
    pub unit_name: String,
    pub group: String,
    pub group_name: String,
    pub camera: String,
    pub camera_name: String,
    pub zone: String,
    pub department: String,
    pub scenario: String,
    pub scenario_name: String,
    pub level: HandlingLevel,
    /// Stored awaiting review (a reviewer's tier).
    pub held: bool,
    pub review: Review,
    /// The reviewer's decision, or the release of a held case at the review timeout.
    pub decided_ms: Option<i64>,
    /// The first (only) delivery to the primary target.
    pub delivered_ms: Option<i64>,
    /// The delivery was given up (dead letter); never dispatched.
    pub dead_lettered: bool,
    /// The 103060 clock's start (`None`: not started, e.g. counted from review and rejected).
    pub clock_start_ms: Option<i64>,
    /// The platform reported it handled (after a failed verification: handled again).
    pub handled_ms: Option<i64>,
    pub self_resolved_ms: Option<i64>,
    /// A verification round failed and the case was reopened.
    pub reopened: bool,
    pub reported_by_staff: bool,
    pub verifications: Vec<Verification>,
}

impl GeneratedCase {
    /// This case as a copy of it with id `id` and every time `shift_ms` earlier ([`replicate`]).
    pub fn shifted(&self, id: String, shift_ms: i64) -> GeneratedCase {
        let s = |t: Option<i64>| t.map(|t| t - shift_ms);
        GeneratedCase {
            id,
            detected_ms: self.detected_ms - shift_ms,
            decided_ms: s(self.decided_ms),
            delivered_ms: s(self.delivered_ms),
            clock_start_ms: s(self.clock_start_ms),
            handled_ms: s(self.handled_ms),
            self_resolved_ms: s(self.self_resolved_ms),
            verifications: self
                .verifications
                .iter()
                .map(|v| Verification {
                    requested_ms: v.requested_ms - shift_ms,
                    decided_ms: s(v.decided_ms),
                    ..v.clone()
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Still open with the pipeline at the history's end: held for review, or a delivery
    /// waiting for its next attempt. [`replicate`] does not copy these (a copy days old would be
    /// one the product had long released or delivered).
    pub fn in_flight(&self) -> bool {
        self.review == Review::Awaiting
            || (matches!(self.review, Review::Unattended | Review::Confirmed)
                && self.delivered_ms.is_none()
                && !self.dead_lettered)
    }
}

/// A camera a history's cases come from, with its unit and camera group.
#[derive(Debug, Clone)]
pub struct Place {
    pub unit: String,
    pub unit_name: String,
    pub group: String,
    pub group_name: String,
    pub camera: String,
    pub camera_name: String,
    pub location: String,
    /// (zone id, zone name, its scenarios; empty: any of the catalog's).
    pub zones: Vec<(String, String, Vec<String>)>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct HistorySpec {
    pub cases: usize,
    /// Cases are detected over the `days` before `now_ms`.
    pub days: u32,
    pub seed: u64,
    /// The history's end: nothing happens after it.
    pub now_ms: i64,
    /// The key area's local time (shift changes at 08:00 and 20:00).
    pub utc_offset_s: i64,
    /// Limits decide late and on-time handling; `counted_from` when clocks start.
    pub deadlines: DeadlineSettings,
    pub places: Vec<Place>,
    pub scenarios: Vec<ScenarioInfo>,
}

impl HistorySpec {
    /// The area, catalog and 103060 settings of `config`: every camera group of every unit, with
    /// its configured cameras and their zones' scenarios; a group without a camera gets one
    /// (`<group>-cam-01`) that finds any scenario of the catalog.
    pub fn from_config(config: &Config, cases: usize, days: u32, seed: u64, now_ms: i64) -> Self {
        let area = &config.area;
        let known: Vec<&str> = config
            .catalog
            .scenarios
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        let mut places = Vec::new();
        for g in &area.groups {
            let unit_name = area
                .units
                .iter()
                .find(|u| u.id == g.unit)
                .map_or_else(|| g.unit.clone(), |u| u.name.clone());
            let place = |camera: String, camera_name: String, location: String, zones| Place {
                unit: g.unit.clone(),
                unit_name: unit_name.clone(),
                group: g.id.clone(),
                group_name: g.name.clone(),
                camera,
                camera_name,
                location,
                zones,
            };
            let before = places.len();
            for c in area.cameras.iter().filter(|c| c.group == g.id) {
                let zones = c
                    .zones
                    .iter()
                    .map(|z| {
                        let scenarios = z
                            .scenarios
                            .iter()
                            .filter(|s| known.contains(&s.as_str()))
                            .cloned()
                            .collect();
                        (z.id.clone(), z.name.clone(), scenarios)
                    })
                    .collect::<Vec<_>>();
                let zones = if zones.is_empty() {
                    vec![("all".to_owned(), "全景".to_owned(), Vec::new())]
                } else {
                    zones
                };
                places.push(place(
                    c.id.clone(),
                    c.name.clone(),
                    c.location.clone(),
                    zones,
                ));
            }
            if places.len() == before {
                places.push(place(
                    format!("{}-cam-01", g.id),
                    format!("{} 1 号", g.name),
                    format!("{unit_name}巡查点"),
                    vec![("all".to_owned(), "全景".to_owned(), Vec::new())],
                ));
            }
        }
        let scenarios = config
            .catalog
            .scenarios
            .iter()
            .filter_map(|s| config.catalog.info(&s.id))
            .collect();
        HistorySpec {
            cases,
            days,
            seed,
            now_ms,
            utc_offset_s: i64::from(area.utc_offset().whole_seconds()),
            deadlines: config.cases.deadlines.clone(),
            places,
            scenarios,
        }
    }
}

/// The cases of `spec` and their fates, decided without writing anything (deterministic:
/// the same spec gives the same cases). In detection order.
pub fn plan(spec: &HistorySpec) -> Result<Vec<GeneratedCase>, HistoryError> {
    if spec.places.is_empty() || spec.scenarios.is_empty() {
        return Err(HistoryError::Invalid(
            "the area has no camera group or the catalog no scenario".into(),
        ));
    }
    let span = i64::from(spec.days.max(1)) * DAY_MS;
    let start = spec.now_ms - span;
    if start < 0 {
        return Err(HistoryError::Invalid(
            "the history would start before 1970".into(),
        ));
    }
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let offset_ms = spec.utc_offset_s * SECOND_MS;
    let mut detected: Vec<i64> = (0..spec.cases)
        .map(|_| {
            let t = start + rng.i64(1..span);
            if rng.f64() >= BOUNDARY_SHARE {
                return t;
            }
            // A shift change of that local day, or the millisecond before it.
            let local = t + offset_ms;
            let midnight = local - local.rem_euclid(DAY_MS);
            let hour = if rng.bool() { 8 } else { 20 };
            let edge = midnight + hour * HOUR_MS - offset_ms - i64::from(rng.bool());
            if edge > start && edge < spec.now_ms {
                edge
            } else {
                t
            }
        })
        .collect();
    detected.sort_unstable();
    let mut cases = Vec::with_capacity(detected.len());
    for d in detected {
        let place = &spec.places[rng.usize(..spec.places.len())];
        let (zone, _, allowed) = &place.zones[rng.usize(..place.zones.len())];
        let candidates: Vec<&ScenarioInfo> = spec
            .scenarios
            .iter()
            .filter(|s| allowed.is_empty() || allowed.iter().any(|a| a == s.id))
            .collect();
        let scenario = if candidates.is_empty() {
            &spec.scenarios[rng.usize(..spec.scenarios.len())]
        } else {
            candidates[rng.usize(..candidates.len())]
        };
        let id = case_id(d, &mut rng);
        cases.push(fate(spec, &mut rng, id, d, place, zone, scenario));
    }
    Ok(cases)
}

/// A UUIDv7 of `ms` with random bits from `rng` (as the pipeline's ids: time-ordered).
fn case_id(ms: i64, rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 10];
    rng.fill(&mut bytes);
    uuid::Builder::from_unix_timestamp_millis(ms.max(0) as u64, &bytes)
        .into_uuid()
        .to_string()
}

fn between(rng: &mut fastrand::Rng, from: i64, to: i64) -> i64 {
    rng.i64(from..to)
}

/// What becomes of one case detected at `d`.
fn fate(
    spec: &HistorySpec,
    rng: &mut fastrand::Rng,
    id: String,
    d: i64,
    place: &Place,
    zone: &str,
    scenario: &ScenarioInfo,
) -> GeneratedCase {
    let now = spec.now_ms;
    let staff = rng.f64() < STAFF_SHARE;
    let held = !staff && rng.f64() < HELD_SHARE;
    let (review, decided_ms) = if !held {
        (Review::Unattended, None)
    } else if now - d < AWAITING_WITHIN_MS && rng.f64() < AWAITING_SHARE {
        (Review::Awaiting, None)
    } else {
        let r = rng.f64();
        let (review, at) = if r < CONFIRMED_SHARE {
            (
                Review::Confirmed,
                d + between(rng, 20 * SECOND_MS, 20 * MINUTE_MS),
            )
        } else if r < CONFIRMED_SHARE + REJECTED_SHARE {
            (
                Review::Rejected,
                d + between(rng, 20 * SECOND_MS, 20 * MINUTE_MS),
            )
        } else {
            (Review::Unattended, d + RELEASE_AFTER_MS)
        };
        if at > now {
            (Review::Awaiting, None)
        } else {
            (review, Some(at))
        }
    };
    // Delivery: from detection, or from the reviewer's confirmation or the release.
    let (mut delivered_ms, mut dead_lettered) = (None, false);
    if matches!(review, Review::Unattended | Review::Confirmed) {
        let ready = decided_ms.unwrap_or(d);
        if rng.f64() < DEAD_SHARE {
            dead_lettered = true;
        } else {
            let r = rng.f64();
            let delay = if r < 0.85 {
                between(rng, 150, 3 * SECOND_MS)
            } else if r < 0.97 {
                between(rng, 3 * SECOND_MS, MINUTE_MS)
            } else {
                between(rng, MINUTE_MS, 15 * MINUTE_MS)
            };
            delivered_ms = Some(ready + delay).filter(|&t| t <= now);
        }
    }
    let clock_start_ms = match spec.deadlines.counted_from {
        ClockStart::Detection => Some(d),
        ClockStart::Review if !held => Some(d),
        ClockStart::Review => decided_ms.filter(|_| review != Review::Rejected),
        ClockStart::Dispatch => delivered_ms,
    };
    let mut case = GeneratedCase {
        id,
        detected_ms: d,
        unit: place.unit.clone(),
        unit_name: place.unit_name.clone(),
        group: place.group.clone(),
        group_name: place.group_name.clone(),
        camera: place.camera.clone(),
        camera_name: place.camera_name.clone(),
        zone: zone.to_owned(),
        department: scenario.department.to_owned(),
        scenario: scenario.id.to_owned(),
        scenario_name: scenario.name_zh.to_owned(),
        level: scenario.level,
        held,
        review,
        decided_ms,
        delivered_ms,
        dead_lettered,
        clock_start_ms,
        handled_ms: None,
        self_resolved_ms: None,
        reopened: false,
        reported_by_staff: staff,
        verifications: Vec::new(),
    };
    if let (Some(sent), Some(start)) = (delivered_ms, clock_start_ms) {
        platform_outcome(spec, rng, &mut case, sent, start);
    }
    case
}

/// After dispatch: self-resolved, handled (on time or late, perhaps reopened by a failed
/// verification and handled again), or still open.
fn platform_outcome(
    spec: &HistorySpec,
    rng: &mut fastrand::Rng,
    case: &mut GeneratedCase,
    sent: i64,
    start: i64,
) {
    let now = spec.now_ms;
    let r = rng.f64();
    if r < SELF_RESOLVED_SHARE {
        case.self_resolved_ms =
            Some(sent + between(rng, 30 * SECOND_MS, 10 * MINUTE_MS)).filter(|&t| t <= now);
        return;
    }
    if r >= SELF_RESOLVED_SHARE + HANDLED_SHARE {
        return;
    }
    let limit = spec.deadlines.limit_ms(case.level);
    let x = rng.f64();
    let took = if x < 0.03 {
        limit
    } else if x < 0.05 {
        limit + 1
    } else if x < 0.80 {
        (limit as f64 * (0.05 + 0.93 * rng.f64())) as i64
    } else {
        (limit as f64 * (1.02 + 2.0 * rng.f64())) as i64
    };
    // The platform acts on a case it has: after the delivery.
    let earliest = sent + 5 * SECOND_MS;
    let handled = if start + took < earliest {
        earliest + between(rng, 0, MINUTE_MS)
    } else {
        start + took
    };
    if handled > now {
        return;
    }
    let check = |rng: &mut fastrand::Rng, at: i64| {
        Some(at + between(rng, 30 * SECOND_MS, 5 * MINUTE_MS)).filter(|&t| t <= now)
    };
    let decided = check(rng, handled);
    if decided.is_some() && rng.f64() < REOPENED_SHARE {
        case.reopened = true;
        case.verifications.push(Verification {
            round: 1,
            passed: Some(false),
            requested_ms: handled,
            decided_ms: decided,
        });
        let again = decided.unwrap_or(handled) + between(rng, 5 * MINUTE_MS, HOUR_MS);
        if rng.f64() < HANDLED_AGAIN_SHARE && again <= now {
            case.handled_ms = Some(again);
            let decided = check(rng, again);
            case.verifications.push(Verification {
                round: 2,
                passed: decided.map(|_| true),
                requested_ms: again,
                decided_ms: decided,
            });
        }
        return;
    }
    case.handled_ms = Some(handled);
    case.verifications.push(Verification {
        round: 1,
        passed: decided.map(|_| true),
        requested_ms: handled,
        decided_ms: decided,
    });
}

/// Writes the cases of `spec` into the outbox at `path` (created or migrated as the pipeline
/// does) and returns them.
pub fn generate(
    outbox_path: &Path,
    spec: &HistorySpec,
) -> Result<Vec<GeneratedCase>, HistoryError> {
    let cases = plan(spec)?;
    write(outbox_path, spec, &cases)?;
    Ok(cases)
}

/// `2026-11-20T02:30:00.123Z`: the one form of time a history writes into case JSON and
/// `created_at` / `decided_at`, so that [`replicate`] can shift a time in place (same length,
/// the snapshot's place in the stored JSON stays right) and SQLite's `strftime` writes it too.
pub fn iso_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

fn utc(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A small real JPEG for the snapshots and clean frames.
pub fn tiny_jpeg() -> Vec<u8> {
    let img = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 13 + y * 7) as u8]));
    let mut out = Vec::new();
    // Encoding 256 grey pixels into memory cannot fail.
    let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 60).encode(
        img.as_raw(),
        16,
        16,
        image::ExtendedColorType::L8,
    );
    out
}

/// The case JSON of `c` (`gridwatch.case.v1`), its times in the [`iso_ms`] form.
fn case_json(spec: &HistorySpec, c: &GeneratedCase, jpeg: &[u8]) -> Result<String, HistoryError> {
    let info = spec
        .scenarios
        .iter()
        .find(|s| s.id == c.scenario)
        .ok_or_else(|| HistoryError::Invalid(format!("unknown scenario {}", c.scenario)))?;
    let place = spec.places.iter().find(|p| p.camera == c.camera);
    let zone_name = place
        .and_then(|p| p.zones.iter().find(|z| z.0 == c.zone))
        .map_or_else(|| c.zone.clone(), |z| z.1.clone());
    let confirmed = utc(c.detected_ms);
    let first_seen = utc(c.detected_ms - 5 * SECOND_MS);
    let deadline = gridwatch::cases::deadline(confirmed, c.level);
    let case = Case {
        schema: CASE_SCHEMA.into(),
        id: c
            .id
            .parse()
            .map_err(|e| HistoryError::Invalid(format!("case id {}: {e}", c.id)))?,
        source: CASE_SOURCE.into(),
        scenario: CaseScenario {
            id: info.id.into(),
            name_zh: info.name_zh.into(),
            name_en: info.name_en.into(),
            category_code: info.category_code.into(),
            category_major: info.category_major.into(),
            category_minor: info.category_minor.into(),
        },
        department: info.department.into(),
        workstation: info.workstation.into(),
        handling_level: c.level,
        deadline_minutes: c.level.deadline_minutes(),
        deadline_at: deadline,
        unit: Named {
            id: c.unit.clone(),
            name: c.unit_name.clone(),
        },
        group: Named {
            id: c.group.clone(),
            name: c.group_name.clone(),
        },
        camera: CaseCamera {
            id: c.camera.clone(),
            name: c.camera_name.clone(),
            gb28181_device_id: None,
            gb28181_channel_id: None,
        },
        location: place.map_or_else(String::new, |p| p.location.clone()),
        lat: None,
        lon: None,
        zone: CaseZone {
            id: c.zone.clone(),
            name: zone_name,
            polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
        },
        first_seen_at: first_seen,
        confirmed_at: confirmed,
        confidence: 0.8,
        objects: vec![CaseObject {
            kind: "person".into(),
            label: "person".into(),
            score: 0.8,
            bbox: [0.1, 0.1, 0.3, 0.6],
        }],
        episode: CaseEpisode {
            started_media_seconds: 0.0,
            confirmed_media_seconds: 5.0,
            frame_seq: 10,
        },
        snapshot: CaseSnapshot::inline_jpeg(jpeg, 16, 16),
        crop: None,
        reported_by: c.reported_by_staff.then(|| ReportedBy {
            user: STAFF.into(),
            note: "巡查上报".into(),
        }),
    };
    let mut body = serde_json::to_string(&case)?;
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    for (key, t) in [
        ("first_seen_at", first_seen),
        ("confirmed_at", confirmed),
        ("deadline_at", deadline),
    ] {
        let unix_ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let from = format!(
            "\"{key}\":\"{}\"",
            t.format(rfc3339)
                .map_err(|e| HistoryError::Invalid(e.to_string()))?
        );
        let to = format!("\"{key}\":\"{}\"", iso_ms(unix_ms));
        if !body.contains(&from) {
            return Err(HistoryError::Invalid(format!(
                "{key} is not in the case JSON as RFC 3339"
            )));
        }
        body = body.replacen(&from, &to, 1);
    }
    Ok(body)
}

/// Writes `cases` (from [`plan`]) into the outbox at `path`.
pub fn write(path: &Path, spec: &HistorySpec, cases: &[GeneratedCase]) -> Result<(), HistoryError> {
    let jpeg = tiny_jpeg();
    let targets = [PRIMARY_TARGET_ID.to_owned()];
    let mut outbox = Outbox::open(path)?;
    for c in cases {
        let body = case_json(spec, c, &jpeg)?;
        let stored = outbox.store_with_clock(
            &NewCase {
                id: &c.id,
                scenario: &c.scenario,
                camera: &c.camera,
                body: &body,
                snapshot: &jpeg,
                state: if c.held {
                    InitialState::AwaitingReview
                } else {
                    InitialState::Pending
                },
                clean_frame: c.held.then_some(jpeg.as_slice()),
                targets: &targets,
            },
            Some((c.level, spec.deadlines.counted_from, c.detected_ms)),
            || true,
        )?;
        if !stored {
            return Err(HistoryError::Invalid(format!("case {} not stored", c.id)));
        }
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The reviewers' decisions and the review timeout, before delivery (a held case is never
    // delivered).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for c in cases.iter().filter(|c| c.held) {
        decide(&tx, c)?;
    }
    tx.commit()?;
    for c in cases {
        if c.delivered_ms.is_some() {
            outbox.mark_delivered(&c.id, PRIMARY_TARGET_ID)?;
        } else if c.dead_lettered {
            outbox.mark_dead(&c.id, PRIMARY_TARGET_ID, "HTTP 503 Service Unavailable")?;
        }
    }
    drop(outbox);
    // The history's moments where the functions above stamped the wall clock; the platform's
    // handling and verification rounds.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for c in cases {
        set_times(&tx, c)?;
    }
    tx.commit()?;
    Ok(())
}

fn audit(
    tx: &Connection,
    c: &GeneratedCase,
    user: &str,
    action: &str,
    detail: Option<&str>,
    at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO review_audit (at, user, action, case_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![iso_ms(at), user, action, c.id, detail])?;
    Ok(())
}

/// A held case's decision, as the review store writes it (`review::store`: confirm, reject)
/// or as the review timeout releases it (`Outbox::release_held`).
fn decide(tx: &Connection, c: &GeneratedCase) -> Result<(), HistoryError> {
    let Some(at) = c.decided_ms else {
        return Ok(());
    };
    match c.review {
        Review::Confirmed => {
            if outbox::release_case(tx, &c.id)? != 1 {
                return Err(HistoryError::Invalid(format!("{} was not held", c.id)));
            }
            tx.prepare_cached(
                "INSERT INTO review_decisions (case_id, decision, reviewer, decided_at, original_scenario) VALUES (?1, 'confirmed', ?2, ?3, NULL)",
            )?
            .execute(params![c.id, REVIEWER, iso_ms(at)])?;
            audit(tx, c, REVIEWER, "confirm", None, at)?;
        }
        Review::Rejected => {
            let n = tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'rejected' WHERE case_id = ?1 AND state = 'awaiting_review'",
                )?
                .execute(params![c.id])?;
            if n != 1 {
                return Err(HistoryError::Invalid(format!("{} was not held", c.id)));
            }
            outbox::reject_deliveries(tx, &c.id)?;
            tx.prepare_cached(
                "INSERT INTO review_decisions (case_id, decision, reviewer, decided_at, suppress_until_ms) VALUES (?1, 'rejected', ?2, ?3, NULL)",
            )?
            .execute(params![c.id, REVIEWER, iso_ms(at)])?;
            audit(tx, c, REVIEWER, "reject", None, at)?;
        }
        Review::Unattended => {
            if outbox::release_case(tx, &c.id)? != 1 {
                return Err(HistoryError::Invalid(format!("{} was not held", c.id)));
            }
            audit(
                tx,
                c,
                "gridwatch",
                "released_unreviewed",
                Some("review timeout"),
                at,
            )?;
        }
        Review::Awaiting => {}
    }
    Ok(())
}

fn set_times(tx: &Connection, c: &GeneratedCase) -> rusqlite::Result<()> {
    let ready = c.decided_ms.unwrap_or(c.detected_ms);
    tx.prepare_cached("UPDATE cases SET created_at = ?2 WHERE id = ?1")?
        .execute(params![c.id, iso_ms(c.detected_ms)])?;
    tx.prepare_cached("UPDATE outbox SET next_attempt_ms = ?2 WHERE case_id = ?1")?
        .execute(params![c.id, ready])?;
    // The roll-up trigger writes the outbox's `delivered_at` from this.
    tx.prepare_cached(
        "UPDATE deliveries SET next_attempt_at_ms = ?2, delivered_at_ms = ?3 WHERE case_id = ?1",
    )?
    .execute(params![c.id, ready, c.delivered_ms])?;
    tx.prepare_cached(
        "UPDATE case_clocks SET start_ms = ?2, handled_at_ms = ?3, self_resolved_at_ms = ?4 WHERE case_id = ?1",
    )?
    .execute(params![
        c.id,
        c.clock_start_ms,
        c.handled_ms,
        c.self_resolved_ms
    ])?;
    for v in &c.verifications {
        let state = match v.passed {
            None => "checking",
            Some(true) => "passed",
            Some(false) => "failed",
        };
        tx.prepare_cached(
            "INSERT INTO verifications (case_id, round, camera, zone, scenario, state, requested_at_ms, decided_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            c.id,
            v.round,
            c.camera,
            c.zone,
            c.scenario,
            state,
            v.requested_ms,
            v.decided_ms
        ])?;
    }
    Ok(())
}

/// How a base history is multiplied: copy `k` (from 1) lies `k mod tiles` tiles of
/// `base_days` days earlier, and `k / tiles` layers of [`LAYER_SHIFT_MS`] earlier still (a
/// layer once every tile of the period holds a copy: more cases per day than the base has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPlan {
    pub base_days: u32,
    pub tiles: u32,
    /// Cases to add.
    pub rows: usize,
    /// Of the copies' ids.
    pub seed: u64,
}

impl CopyPlan {
    pub fn shift_ms(&self, copy: usize) -> i64 {
        let tiles = self.tiles.max(1) as usize;
        let (tile, layer) = ((copy % tiles) as i64, (copy / tiles) as i64);
        tile * i64::from(self.base_days) * DAY_MS + layer * LAYER_SHIFT_MS
    }

    /// (index of the base case, the copy's id, its shift) of every case added, in order: copy
    /// 1 of each base case not [`GeneratedCase::in_flight`], then copy 2, ….
    pub fn rows<'a>(
        &self,
        base: &'a [GeneratedCase],
    ) -> impl Iterator<Item = (usize, String, i64)> + 'a {
        let copyable: Vec<usize> = (0..base.len()).filter(|&i| !base[i].in_flight()).collect();
        let plan = *self;
        let mut rng = fastrand::Rng::with_seed(plan.seed);
        let rows = if copyable.is_empty() { 0 } else { plan.rows };
        (0..rows).map(move |n| {
            let copy = 1 + n / copyable.len();
            let i = copyable[n % copyable.len()];
            let shift = plan.shift_ms(copy);
            (i, case_id(base[i].detected_ms - shift, &mut rng), shift)
        })
    }

    /// Every case added, as [`GeneratedCase`]s (for tests: a million of them is a lot).
    pub fn copies(&self, base: &[GeneratedCase]) -> Vec<GeneratedCase> {
        self.rows(base)
            .map(|(i, id, shift)| base[i].shifted(id, shift))
            .collect()
    }
}

/// `strftime` of the text time `expr` moved back by the copy's shift, in the [`iso_ms`] form.
fn shifted_text(expr: &str) -> String {
    format!(
        "strftime('%Y-%m-%dT%H:%M:%fZ', (ROUND(unixepoch({expr}, 'subsec') * 1000) - m.shift_ms) / 1000.0, 'unixepoch')"
    )
}

/// Case JSON times [`replicate`] shifts in place.
const BODY_TIMES: [&str; 3] = ["first_seen_at", "confirmed_at", "deadline_at"];

/// The rows of every table a case has, copied (`m`: the copy map; the base rows are `b`).
fn copy_statements() -> Vec<String> {
    let mut body = "replace(b.body, m.old_id, m.new_id)".to_owned();
    for key in BODY_TIMES {
        body = format!(
            "replace({body}, '\"{key}\":\"' || b.{key} || '\"', '\"{key}\":\"' || {} || '\"')",
            shifted_text(&format!("b.{key}"))
        );
    }
    let insert = |table: &str, columns: &str, select: &str, key: &str| {
        format!(
            "INSERT INTO main.{table} ({columns}) SELECT {select}
             FROM temp.copy_map m JOIN temp.base_{table} b ON b.{key} = m.old_id ORDER BY m.rowid"
        )
    };
    vec![
        insert(
            "cases",
            "id, created_at, scenario, camera, body, snapshot, snapshot_at",
            &format!(
                "m.new_id, {}, b.scenario, b.camera, {body}, b.snapshot, b.snapshot_at",
                shifted_text("b.created_at")
            ),
            "id",
        ),
        insert(
            "outbox",
            "case_id, state, attempts, next_attempt_ms, last_error, delivered_at",
            &format!(
                "m.new_id, b.state, b.attempts, b.next_attempt_ms - m.shift_ms, b.last_error,
                 CASE WHEN b.delivered_at IS NOT NULL THEN {} END",
                shifted_text("b.delivered_at")
            ),
            "case_id",
        ),
        insert(
            "deliveries",
            "case_id, target, state, attempts, next_attempt_at_ms, last_error, delivered_at_ms",
            "m.new_id, b.target, b.state, b.attempts, b.next_attempt_at_ms - m.shift_ms,
             b.last_error, b.delivered_at_ms - m.shift_ms",
            "case_id",
        ),
        insert(
            "review_frames",
            "case_id, jpeg",
            "m.new_id, b.jpeg",
            "case_id",
        ),
        insert(
            "review_decisions",
            "case_id, decision, reviewer, decided_at, original_scenario, suppress_until_ms",
            &format!(
                "m.new_id, b.decision, b.reviewer, {}, b.original_scenario,
                 b.suppress_until_ms - m.shift_ms",
                shifted_text("b.decided_at")
            ),
            "case_id",
        ),
        insert(
            "case_clocks",
            "case_id, level, counted_from, start_ms, handled_at_ms, self_resolved_at_ms,
             reminded_at_ms, escalated_at_ms, generation",
            "m.new_id, b.level, b.counted_from, b.start_ms - m.shift_ms,
             b.handled_at_ms - m.shift_ms, b.self_resolved_at_ms - m.shift_ms,
             b.reminded_at_ms - m.shift_ms, b.escalated_at_ms - m.shift_ms, b.generation",
            "case_id",
        ),
        insert(
            "verifications",
            "case_id, round, camera, zone, scenario, state, requested_at_ms, decided_at_ms",
            "m.new_id, b.round, b.camera, b.zone, b.scenario, b.state,
             b.requested_at_ms - m.shift_ms, b.decided_at_ms - m.shift_ms",
            "case_id",
        ),
        insert(
            "case_facts",
            "case_id, detected_ms, unit, unit_name, grp, grp_name, department, scenario,
             scenario_name, camera, camera_name, level, manual, purged_at_ms, review,
             dispatched_ms, clock_level, clock_start_ms, handled_ms, self_resolved_ms, reopened",
            "m.new_id, b.detected_ms - m.shift_ms, b.unit, b.unit_name, b.grp, b.grp_name,
             b.department, b.scenario, b.scenario_name, b.camera, b.camera_name, b.level,
             b.manual, b.purged_at_ms - m.shift_ms, b.review, b.dispatched_ms - m.shift_ms,
             b.clock_level, b.clock_start_ms - m.shift_ms, b.handled_ms - m.shift_ms,
             b.self_resolved_ms - m.shift_ms, b.reopened",
            "case_id",
        ),
    ]
}

/// Multiplies the history `base` (as [`generate`] wrote it into `outbox_path`) by `plan`, in
/// one transaction without syncing (a bench file, not a record to keep): every row of the
/// cases' tables (`cases` with their snapshot, `outbox`, `deliveries`, `review_frames`,
/// `review_decisions`, `case_clocks`, `verifications`, `case_facts`) again under a new id, its
/// times shifted. Returns the cases added.
pub fn replicate(
    outbox_path: &Path,
    base: &[GeneratedCase],
    plan: &CopyPlan,
) -> Result<usize, HistoryError> {
    let mut conn = Connection::open(outbox_path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A rollback journal instead of the WAL for this one large write: the WAL would hold
    // every new page once more until its checkpoint.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TEMP TABLE copy_map (old_id TEXT NOT NULL, new_id TEXT NOT NULL, shift_ms INTEGER NOT NULL);",
    )?;
    let mut added = 0;
    {
        let mut insert = tx.prepare("INSERT INTO temp.copy_map VALUES (?1, ?2, ?3)")?;
        for (i, id, shift) in plan.rows(base) {
            insert.execute(params![base[i].id, id, shift])?;
            added += 1;
        }
    }
    if added < plan.rows {
        return Err(HistoryError::Invalid(
            "the base history has no finished case to copy".into(),
        ));
    }
    let times: String = BODY_TIMES
        .iter()
        .map(|k| format!(", json_extract(body, '$.{k}') AS {k}"))
        .collect();
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE base_ids AS SELECT DISTINCT old_id AS id FROM temp.copy_map;
         CREATE TEMP TABLE base_cases AS SELECT *{times} FROM main.cases WHERE id IN temp.base_ids;
         CREATE INDEX temp.base_cases_id ON base_cases(id);"
    ))?;
    for table in [
        "outbox",
        "deliveries",
        "review_frames",
        "review_decisions",
        "case_clocks",
        "verifications",
        "case_facts",
    ] {
        tx.execute_batch(&format!(
            "CREATE TEMP TABLE base_{table} AS SELECT * FROM main.{table} WHERE case_id IN temp.base_ids;
             CREATE INDEX temp.base_{table}_id ON base_{table}(case_id);"
        ))?;
    }
    let pattern = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z";
    let odd: i64 = tx.query_row(
        &format!(
            "SELECT COUNT(*) FROM temp.base_cases WHERE NOT ({})",
            BODY_TIMES
                .iter()
                .chain(["created_at"].iter())
                .map(|k| format!("COALESCE({k} GLOB '{pattern}', 0)"))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        [],
        |r| r.get(0),
    )?;
    if odd > 0 {
        return Err(HistoryError::Invalid(format!(
            "{odd} base cases were not written by history::generate (their times are not in the form 2026-11-20T02:30:00.123Z)"
        )));
    }
    for sql in copy_statements() {
        tx.execute(&sql, [])?;
    }
    tx.execute_batch(
        "DROP TABLE temp.copy_map; DROP TABLE temp.base_ids; DROP TABLE temp.base_cases;
         DROP TABLE temp.base_outbox; DROP TABLE temp.base_deliveries;
         DROP TABLE temp.base_review_frames; DROP TABLE temp.base_review_decisions;
         DROP TABLE temp.base_case_clocks; DROP TABLE temp.base_verifications;
         DROP TABLE temp.base_case_facts;",
    )?;
    tx.commit()?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(added)
}

/// A history of `spec.cases` cases: at most `base_cases` of them written through the outbox
/// ([`generate`]) over the newest tile of days, the rest copies ([`replicate`]) tiling the
/// `spec.days` before it.
#[derive(Debug, Clone)]
pub struct Bulk {
    pub base: Vec<GeneratedCase>,
    pub plan: CopyPlan,
    pub copied: usize,
    pub base_seconds: f64,
    pub copy_seconds: f64,
}

pub fn generate_bulk(
    outbox_path: &Path,
    spec: &HistorySpec,
    base_cases: usize,
) -> Result<Bulk, HistoryError> {
    let days = spec.days.max(1);
    let base_n = spec.cases.min(base_cases.max(1));
    let tiles = if spec.cases <= base_n {
        1
    } else {
        u32::try_from(spec.cases.div_ceil(base_n))
            .unwrap_or(u32::MAX)
            .min(days)
    };
    let base_days = days / tiles;
    let base_spec = HistorySpec {
        cases: base_n,
        days: base_days,
        ..spec.clone()
    };
    let started = std::time::Instant::now();
    let base = generate(outbox_path, &base_spec)?;
    let base_seconds = started.elapsed().as_secs_f64();
    let plan = CopyPlan {
        base_days,
        tiles,
        rows: spec.cases - base_n,
        seed: spec.seed ^ 0x9e37_79b9_7f4a_7c15,
    };
    let started = std::time::Instant::now();
    let copied = if plan.rows > 0 {
        replicate(outbox_path, &base, &plan)?
    } else {
        0
    };
    Ok(Bulk {
        base,
        plan,
        copied,
        base_seconds,
        copy_seconds: started.elapsed().as_secs_f64(),
    })
}
