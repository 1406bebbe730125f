//! Case stage: turns each event into a case (UUIDv7 id, also the idempotency key; scenario,
//! handling department and 103060 deadline, camera, unit, times, confidence, JPEG snapshot and
//! object crop) and commits it to the SQLite outbox. The case JSON is described in OpenAPI
//! (`utoipa`), served by the reference receiver. The wire format itself is `gridwatch-case`
//! (crates/case), shared with the reference dispatch service.

pub mod evidence;
pub mod outbox;
pub mod routing;
pub mod settings;
pub mod tiers;

use std::time::SystemTime;

use crossbeam_channel::Receiver;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::scenarios::Event;
use crate::telemetry;
pub use gridwatch_case::{
    CASE_FIELDS, CASE_SCHEMA, CASE_SOURCE, Case, CaseCamera, CaseEpisode, CaseObject, CaseScenario,
    CaseSnapshot, CaseZone, HandlingLevel, Named, deadline,
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

fn render(
    event: &Event,
    tier: Tier,
    snapshot_max_width_pixels: u32,
) -> Result<Rendered, CaseError> {
    let (case, jpeg) = build(event, snapshot_max_width_pixels)?;
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
        id: Uuid::now_v7(),
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
    };
    Ok((case, evidence.snapshot.jpeg))
}

/// The case thread with the review console's tiers: an event matching an active suppression is
/// dropped (counted); below the scenario's `review_score` it is only counted; below its
/// `auto_dispatch_score` the case is stored as `awaiting_review` with its clean frame and
/// `on_held` tells the console; otherwise it is stored `pending` and `on_stored` wakes delivery.
pub fn run_triaged(
    mut outbox: Outbox,
    input: Receiver<Event>,
    triage: &Triage,
    on_stored: impl Fn(),
    on_held: impl Fn(),
) -> Result<u64, CaseError> {
    let mut stored = 0;
    for event in input {
        // The key area the event was decided under (a reload may have changed it since).
        let area = event.area.clone();
        let cam = &area.cameras[event.camera];
        let zone = &cam.zones[event.zone];
        // Checked before rendering: a suppressed event costs nothing.
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
            continue;
        }
        let tier = triage.tiers.decide(event.scenario.id, event.confidence);
        if tier == Tier::CountOnly {
            telemetry::review_below_threshold(event.scenario.id);
            tracing::info!(scenario = event.scenario.id, camera = %cam.id, confidence = event.confidence, "event below the review score: counted only");
            continue;
        }
        let Rendered {
            case,
            jpeg,
            body,
            clean,
        } = match render(&event, tier, triage.snapshot_max_width_pixels) {
            Ok(r) => r,
            Err(e) => {
                // One bad frame or value must not stop discovery: keep the event and go on.
                keep_unrendered(&outbox, &event, &e)?;
                continue;
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
        let targets = triage
            .routing
            .load()
            .route(&cam.unit, &zone.tags, event.scenario.id);
        // The fence, as late as possible (inside the write transaction): after a hand-over or
        // a lost lease the group's new owner analyses it, and this node must not add a case.
        let fence = || {
            triage
                .fence
                .as_ref()
                .is_none_or(|f| f.may_analyse(&cam.group))
        };
        let stored_here = outbox.store_if(
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
            fence,
        )?;
        if !stored_here {
            telemetry::cluster_fenced_event(&case.scenario.id);
            tracing::warn!(case = %case.id, scenario = %case.scenario.id, camera = %cam.id, group = %cam.group, "case not committed: this node no longer owns the camera's group");
            continue;
        }
        telemetry::case_stored(&case.scenario.id);
        tracing::info!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %case.unit.name, zone = %case.zone.id, targets = ?targets, objects = case.objects.len(), confidence = case.confidence, held_for_review = held, "case stored in outbox");
        if targets.is_empty() {
            // Kept, never silently lost: the operator sees the gap in the metric and the log.
            telemetry::case_unrouted(&case.scenario.id);
            tracing::warn!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %cam.unit, zone = %zone.id, "no dispatch target takes this case (check the [dispatch] routes); it stays in the outbox as unrouted");
        }
        stored += 1;
        if held {
            on_held();
        } else {
            on_stored();
        }
    }
    Ok(stored)
}
