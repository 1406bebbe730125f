//! Case stage: turns each event into a case (UUIDv7 id, also the idempotency key; scenario,
//! handling department and 103060 deadline, camera, unit, times, confidence, JPEG snapshot and
//! object crop) and commits it to the SQLite outbox. The case JSON is described in OpenAPI
//! (`utoipa`), served by the reference receiver. The wire format itself is `gridwatch-case`
//! (crates/case), shared with the reference dispatch service.

pub mod evidence;
pub mod facts;
pub mod outbox;
pub mod platform;
pub mod routing;
pub mod settings;
pub mod tiers;

use std::time::SystemTime;

use crossbeam_channel::Receiver;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::scenarios::{Event, Output};
use crate::telemetry;
pub use gridwatch_case::{
    CASE_FIELDS, CASE_SCHEMA, CASE_SOURCE, Case, CaseCamera, CaseEpisode, CaseObject, CaseScenario,
    CaseSnapshot, CaseZone, HandlingLevel, Named, ReportedBy, deadline,
};
use outbox::{Outbox, OutboxError};
use tiers::{Tier, Triage};

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("case could not be serialised: {0}")]
    Json(#[from] serde_json::Error),
}

fn inline(s: &evidence::Snapshot) -> CaseSnapshot {
    CaseSnapshot::inline_jpeg(&s.jpeg, s.width, s.height)
}

fn datetime(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// A case ready to store: the case, its snapshot, its JSON body, and the clean frame a case
/// held for review keeps.
struct Rendered {
    case: Case,
    jpeg: Vec<u8>,
    body: String,
    clean: Option<Vec<u8>>,
}

fn render(event: &Event, tier: Tier, triage: &Triage) -> Result<Rendered, CaseError> {
    let snapshot_max_width_pixels = triage.snapshot_max_width_pixels;
    let (mut case, jpeg) = build(event, snapshot_max_width_pixels)?;
    // The configured limits (the plan's 10/30/60 minutes unless a town sets others).
    let limit_ms = triage.deadlines.limit_ms(case.handling_level);
    case.deadline_minutes = u32::try_from((limit_ms + 59_999) / 60_000).unwrap_or(u32::MAX);
    case.deadline_at = case.confirmed_at + time::Duration::milliseconds(limit_ms);
    let body = serde_json::to_string(&case)?;
    // A held case keeps its frame for the reviewer's training data; a learned zone state's
    // case keeps it too, so that staff can label it from the history.
    let state = event
        .objects
        .iter()
        .any(|o| crate::area::kinds::is_state_label(&o.label));
    let clean = if tier == Tier::Review || state {
        Some(evidence::annotate(&event.frame, &[], &[], snapshot_max_width_pixels)?.jpeg)
    } else {
        None
    };
    Ok(Rendered {
        case,
        jpeg,
        body,
        clean,
    })
}

/// Keeps an event whose case could not be rendered in the outbox's `unrendered` table, with
/// the reason; counted and logged. Only a failure to store it is an error.
fn keep_unrendered(outbox: &Outbox, event: &Event, error: &CaseError) -> Result<(), CaseError> {
    let cam = &event.area.cameras[event.camera];
    let zone = &cam.zones[event.zone];
    let facts = serde_json::json!({
        "unit": cam.unit,
        "group": cam.group,
        "first_seen_at": datetime(event.first_seen_at).format(&Rfc3339).ok(),
        "confirmed_at": datetime(event.confirmed_at).format(&Rfc3339).ok(),
        "confirmed_stream_seconds": event.confirmed_stream_seconds,
        "confidence": event.confidence,
        "frame": {"seq": event.frame.seq, "width": event.frame.width, "height": event.frame.height},
        "objects": event.objects.iter().map(|o| serde_json::json!({
            "label": &*o.label, "score": o.score, "bbox": o.bbox,
        })).collect::<Vec<_>>(),
    });
    let reason = error.to_string();
    let id = outbox.keep_unrendered(event.scenario.id, &cam.id, &zone.id, &reason, &facts)?;
    telemetry::case_unrendered(event.scenario.id);
    tracing::error!(unrendered = id, scenario = event.scenario.id, camera = %cam.id, zone = %zone.id, %reason, "case could not be rendered; the event is kept in the outbox's unrendered table and the pipeline goes on");
    Ok(())
}

/// Builds the case for an event, evidence included.
pub fn build(event: &Event, snapshot_max_width_pixels: u32) -> Result<(Case, Vec<u8>), CaseError> {
    let area = &event.area;
    let cam = &area.cameras[event.camera];
    let zone = &cam.zones[event.zone];
    let group = area.camera_group(cam);
    let unit = area.unit(&cam.unit);
    let evidence = evidence::render(
        &event.frame,
        &zone.polygon,
        &event.objects,
        snapshot_max_width_pixels,
    )?;
    let confirmed_at = datetime(event.confirmed_at);
    let level = event.scenario.level;
    let case = Case {
        schema: CASE_SCHEMA.into(),
        id: event.reported.as_ref().map_or_else(Uuid::now_v7, |r| r.id),
        source: CASE_SOURCE.into(),
        scenario: CaseScenario {
            id: event.scenario.id.into(),
            name_zh: event.scenario.name_zh.into(),
            name_en: event.scenario.name_en.into(),
            category_code: event.scenario.category_code.into(),
            category_major: event.scenario.category_major.into(),
            category_minor: event.scenario.category_minor.into(),
        },
        department: event.scenario.department.into(),
        workstation: event.scenario.workstation.into(),
        handling_level: level,
        deadline_minutes: level.deadline_minutes(),
        deadline_at: deadline(confirmed_at, level),
        unit: Named {
            id: cam.unit.clone(),
            name: unit.map(|u| u.name.clone()).unwrap_or_default(),
        },
        group: Named {
            id: cam.group.clone(),
            name: group.map(|g| g.name.clone()).unwrap_or_default(),
        },
        camera: CaseCamera {
            id: cam.id.clone(),
            name: cam.name.clone(),
            gb28181_device_id: cam.gb28181_device_id.clone(),
            gb28181_channel_id: cam.gb28181_channel_id.clone(),
        },
        location: cam.location.clone(),
        lat: cam.lat,
        lon: cam.lon,
        zone: CaseZone {
            id: zone.id.clone(),
            name: zone.name.clone(),
            polygon: zone.polygon.clone(),
        },
        first_seen_at: datetime(event.first_seen_at),
        confirmed_at,
        confidence: event.confidence,
        objects: event
            .objects
            .iter()
            .map(|d| CaseObject {
                kind: d.kind.as_str().to_owned(),
                label: d.label.to_string(),
                score: d.score,
                bbox: d.bbox,
            })
            .collect(),
        episode: CaseEpisode {
            started_media_seconds: event.first_seen_stream_seconds,
            confirmed_media_seconds: event.confirmed_stream_seconds,
            frame_seq: event.frame.seq,
        },
        snapshot: inline(&evidence.snapshot),
        crop: evidence.crop.as_ref().map(inline),
        reported_by: event.reported.as_ref().map(|r| ReportedBy {
            user: r.user.clone(),
            note: r.note.clone(),
        }),
    };
    Ok((case, evidence.snapshot.jpeg))
}

/// Staff reports from the console into the case stage's input, beside the scenario stage's
/// events. Closed when the pipeline shuts down, so that the stage sees its input end.
#[derive(Clone, Default)]
pub struct ReportInbox {
    tx: std::sync::Arc<std::sync::Mutex<Option<crossbeam_channel::Sender<Output>>>>,
}

impl std::fmt::Debug for ReportInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportInbox").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("the case stage is not running")]
    NotRunning,
    #[error("the case stage is busy; try again in a moment")]
    Busy,
}

impl ReportInbox {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<crossbeam_channel::Sender<Output>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connect(&self, tx: crossbeam_channel::Sender<Output>) {
        *self.slot() = Some(tx);
    }

    pub fn close(&self) {
        *self.slot() = None;
    }

    /// Queues a reported event without waiting (the console runs on the async runtime).
    pub fn send(&self, event: Event) -> Result<(), ReportError> {
        let slot = self.slot();
        let tx = slot.as_ref().ok_or(ReportError::NotRunning)?;
        tx.try_send(Output::Event(event)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => ReportError::Busy,
            crossbeam_channel::TrySendError::Disconnected(_) => ReportError::NotRunning,
        })
    }
}

/// How often the case thread looks at the 103060 clocks.
const DEADLINE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The case thread with the review console's tiers: an event matching an active suppression is
/// dropped (counted); below the scenario's `review_score` it is only counted; below its
/// `auto_dispatch_score` the case is stored as `awaiting_review` with its clean frame and
/// `on_held` tells the console; otherwise it is stored `pending` and `on_stored` wakes delivery.
/// It also turns ended episodes and decided re-checks into updates of their cases, and every
/// second queues the 103060 reminders and escalations that are due.
pub fn run_triaged(
    mut outbox: Outbox,
    input: Receiver<Output>,
    triage: &Triage,
    on_stored: impl Fn(),
    on_held: impl Fn(),
) -> Result<u64, CaseError> {
    let mut stored = 0;
    let mut episodes = Episodes::default();
    let mut ticked = std::time::Instant::now();
    loop {
        let output = match input.recv_timeout(DEADLINE_TICK) {
            Ok(o) => Some(o),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if ticked.elapsed() >= DEADLINE_TICK {
            ticked = std::time::Instant::now();
            if tick_deadlines(&mut outbox, triage)? {
                on_stored();
            }
        }
        match output {
            None => {}
            Some(Output::Event(event)) => {
                let key = (event.scenario.id, event.camera, event.zone, event.episode);
                // A staff report is no rule's episode: no episode end resolves it.
                let episode = event.reported.is_none();
                // A new episode under this key (rules rebuilt by a reload count afresh) is
                // never an older case's: forget it whether or not it becomes a case.
                if episode {
                    episodes.remove(&key);
                }
                let Some((id, held)) = store_event(&mut outbox, event, triage)? else {
                    continue;
                };
                if episode {
                    episodes.insert(key, id);
                }
                stored += 1;
                if held {
                    on_held();
                } else {
                    on_stored();
                }
            }
            Some(Output::Ended(end)) => {
                let key = (end.scenario.id, end.camera, end.zone, end.episode);
                if let Some(id) = episodes.remove(&key)
                    && triage.report_self_resolved
                    && self_resolved(&mut outbox, &id, &end, triage)?
                {
                    on_stored();
                }
            }
            Some(Output::Checked(c)) if verified(&mut outbox, &c, triage)? => on_stored(),
            Some(Output::Checked(_)) => {}
        }
    }
    Ok(stored)
}

/// The case each episode in progress made, by (scenario, camera, zone, episode key): an
/// episode's end finds its case. Bounded by the episodes in progress.
type Episodes = std::collections::HashMap<(&'static str, usize, usize, u64), String>;

/// Reminders and escalations due now; whether any was queued.
fn tick_deadlines(outbox: &mut Outbox, triage: &Triage) -> Result<bool, CaseError> {
    let (reminders, escalations) = outbox.tick_deadlines(
        &triage.deadlines,
        triage.escalation_station.as_ref(),
        &triage.update_targets,
    )?;
    if reminders + escalations > 0 {
        telemetry::deadline_updates("reminder", reminders);
        telemetry::deadline_updates("escalated", escalations);
        tracing::info!(
            reminders,
            escalations,
            "103060: reminders and escalations queued for the platform"
        );
    }
    Ok(reminders + escalations > 0)
}

/// The zone's picture now, for an update: the frame with the zone drawn, no objects.
fn zone_snapshot(
    frame: &crate::ingest::Frame,
    area: &crate::area::Area,
    camera: usize,
    zone: Option<usize>,
    max_width: u32,
) -> Option<(Vec<u8>, u32, u32)> {
    let polygon = zone
        .and_then(|z| area.cameras.get(camera)?.zones.get(z))
        .map(|z| z.polygon.clone())
        .unwrap_or_default();
    match evidence::render(frame, &polygon, &[], max_width) {
        Ok(e) => Some((e.snapshot.jpeg, e.snapshot.width, e.snapshot.height)),
        Err(e) => {
            tracing::warn!(error = %e, "update snapshot could not be rendered; the update goes without it");
            None
        }
    }
}

/// An episode ended: its case resolved itself if nobody acted yet (自行消除).
fn self_resolved(
    outbox: &mut Outbox,
    case_id: &str,
    end: &crate::scenarios::EpisodeEnd,
    triage: &Triage,
) -> Result<bool, CaseError> {
    let facts = platform::UpdateFacts {
        note: Some("事件已自行消除 (episode ended before handling)".into()),
        snapshot: zone_snapshot(
            &end.frame,
            &end.area,
            end.camera,
            Some(end.zone),
            triage.snapshot_max_width_pixels,
        ),
        ..platform::UpdateFacts::default()
    };
    let queued = outbox.self_resolved(case_id, &facts, &triage.update_targets)?;
    if queued {
        tracing::info!(case = %case_id, scenario = end.scenario.id, "episode ended before anyone acted: self-resolved update queued");
    }
    Ok(queued)
}

/// A re-check was decided: 核查通过 or 核查不通过 (reopened), with the frame that decided it.
fn verified(
    outbox: &mut Outbox,
    c: &crate::scenarios::Checked,
    triage: &Triage,
) -> Result<bool, CaseError> {
    let r = &c.outcome.request;
    let note = if c.outcome.passed {
        "核查通过: 摄像头复核问题已消除"
    } else {
        "核查不通过: 摄像头复核问题仍在, 案件重新打开"
    };
    let facts = platform::UpdateFacts {
        note: Some(note.into()),
        snapshot: zone_snapshot(
            &c.frame,
            &c.area,
            c.camera,
            c.zone,
            triage.snapshot_max_width_pixels,
        ),
        ..platform::UpdateFacts::default()
    };
    let decided = outbox.finish_verification(
        &r.case_id,
        r.round,
        c.outcome.passed,
        &facts,
        &triage.update_targets,
    )?;
    if decided {
        telemetry::verification(if c.outcome.passed { "passed" } else { "failed" });
        tracing::info!(case = %r.case_id, round = r.round, passed = c.outcome.passed, camera = %r.camera, zone = %r.zone, "camera re-check decided");
    }
    Ok(decided)
}

/// The event's tier, or `None` (counted and logged) when a reviewer's suppression covers it
/// or it is below the review score. Checked before rendering: a dropped event costs nothing.
fn tier_of(event: &Event, triage: &Triage) -> Option<Tier> {
    if event.reported.is_some() {
        // A person saw it: no score to weigh, no rejection to repeat.
        return Some(Tier::Dispatch);
    }
    let cam = &event.area.cameras[event.camera];
    let zone = &cam.zones[event.zone];
    let boxes: Vec<[f32; 4]> = event.objects.iter().map(|o| o.bbox).collect();
    if triage.suppressions.active(
        &cam.id,
        &zone.id,
        event.scenario.id,
        &boxes,
        SystemTime::now(),
    ) {
        telemetry::event_suppressed(event.scenario.id);
        tracing::info!(scenario = event.scenario.id, camera = %cam.id, zone = %zone.id, "event suppressed by a reviewer's rejection");
        return None;
    }
    let tier = triage.tiers.decide(event.scenario.id, event.confidence);
    if tier == Tier::CountOnly {
        telemetry::review_below_threshold(event.scenario.id);
        tracing::info!(scenario = event.scenario.id, camera = %cam.id, confidence = event.confidence, "event below the review score: counted only");
        return None;
    }
    Some(tier)
}

fn unix_ms(t: SystemTime) -> i64 {
    (datetime(t).unix_timestamp_nanos() / 1_000_000) as i64
}

/// When a case was confirmed, as routes see it: local time of day and the plan's phase.
pub fn route_moment(area: &crate::area::Area, at: SystemTime) -> routing::RouteMoment {
    let at = datetime(at);
    let local = at.to_offset(area.utc_offset());
    routing::RouteMoment {
        minute_of_day: u16::from(local.hour()) * 60 + u16::from(local.minute()),
        phase: area.plan_phase_at(at).map(|p| p.id.clone()),
    }
}

/// Triage, render, route and store one event's case; its id and whether it is held, or
/// `None` when it was suppressed, counted only, kept unrendered or fenced.
fn store_event(
    outbox: &mut Outbox,
    mut event: Event,
    triage: &Triage,
) -> Result<Option<(String, bool)>, CaseError> {
    // The key area the event was decided under (a reload may have changed it since).
    let area = event.area.clone();
    let cam = &area.cameras[event.camera];
    let zone = &cam.zones[event.zone];
    let Some(tier) = tier_of(&event, triage) else {
        return Ok(None);
    };
    // The evidence at the camera's own resolution when its stream still holds the moment (a
    // staff report brings its full-resolution picture already: the one the box was drawn on).
    if event.reported.is_none()
        && let Some(full) = triage
            .live
            .as_ref()
            .and_then(|l| l.full_resolution(&event.frame))
    {
        event.frame = std::sync::Arc::new(full);
    }
    let Rendered {
        case,
        jpeg,
        body,
        clean,
    } = match render(&event, tier, triage) {
        Ok(r) => r,
        Err(e) => {
            // One bad frame or value must not stop discovery: keep the event and go on.
            keep_unrendered(outbox, &event, &e)?;
            return Ok(None);
        }
    };
    let held = tier == Tier::Review;
    let state = if held {
        outbox::InitialState::AwaitingReview
    } else {
        outbox::InitialState::Pending
    };
    // Routed once, under the rules in force now, and stored with its deliveries in the
    // same transaction.
    let when = route_moment(&area, event.confirmed_at);
    let targets =
        triage
            .routing
            .load()
            .route(&cam.unit, &zone.tags, event.scenario.id, Some(&when));
    // The fence, as late as possible (inside the write transaction): after a hand-over or
    // a lost lease the group's new owner analyses it, and this node must not add a case.
    let fence = || {
        triage
            .fence
            .as_ref()
            .is_none_or(|f| f.may_analyse(&cam.group))
    };
    let clock = (
        case.handling_level,
        triage.deadlines.counted_from,
        unix_ms(event.confirmed_at),
    );
    let stored_here = outbox.store_with_clock(
        &outbox::NewCase {
            id: &case.id.to_string(),
            scenario: &case.scenario.id,
            camera: &case.camera.id,
            body: &body,
            snapshot: &jpeg,
            state,
            clean_frame: clean.as_deref(),
            targets: &targets,
        },
        Some(clock),
        fence,
    )?;
    if !stored_here {
        telemetry::cluster_fenced_event(&case.scenario.id);
        tracing::warn!(case = %case.id, scenario = %case.scenario.id, camera = %cam.id, group = %cam.group, "case not committed: this node no longer owns the camera's group");
        return Ok(None);
    }
    telemetry::case_stored(&case.scenario.id);
    if let Some(r) = &case.reported_by {
        telemetry::staff_report(&case.scenario.id);
        tracing::info!(case = %case.id, user = %r.user, scenario = %case.scenario.id, camera = %case.camera.id, "case reported by staff");
    }
    tracing::info!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %case.unit.name, zone = %case.zone.id, targets = ?targets, objects = case.objects.len(), confidence = case.confidence, held_for_review = held, "case stored in outbox");
    if targets.is_empty() {
        // Kept, never silently lost: the operator sees the gap in the metric and the log.
        telemetry::case_unrouted(&case.scenario.id);
        tracing::warn!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %cam.unit, zone = %zone.id, "no dispatch target takes this case (check the [dispatch] routes); it stays in the outbox as unrouted");
    }
    Ok(Some((case.id.to_string(), held)))
}
