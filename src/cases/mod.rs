//! Case stage: turns each event into a case (UUIDv7 id, also the idempotency key; scenario,
//! handling department and 103060 deadline, camera, unit, times, confidence, JPEG snapshot and
//! object crop) and commits it to the SQLite outbox. The case JSON is described in OpenAPI
//! (`utoipa`), served by the reference receiver.

pub mod evidence;
pub mod outbox;
pub mod routing;
pub mod settings;
pub mod tiers;

use std::time::SystemTime;

use base64::Engine as _;
use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::scenarios::{Event, HandlingLevel};
use crate::telemetry;
use outbox::{Outbox, OutboxError};
use tiers::{Tier, Triage};

pub const CASE_SCHEMA: &str = "gridwatch.case.v1";
pub const CASE_SOURCE: &str = "ai_video";

/// Top-level fields of the case JSON (the names `[dispatch.field_map]` may rename).
pub const CASE_FIELDS: &[&str] = &[
    "schema",
    "id",
    "source",
    "scenario",
    "department",
    "workstation",
    "handling_level",
    "deadline_minutes",
    "deadline_at",
    "unit",
    "group",
    "camera",
    "location",
    "lat",
    "lon",
    "zone",
    "first_seen_at",
    "confirmed_at",
    "confidence",
    "objects",
    "episode",
    "snapshot",
    "crop",
];

/// A case (`gridwatch.case.v1`) as it is sent to the dispatch API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Case {
    /// Always `gridwatch.case.v1`.
    #[schema(example = "gridwatch.case.v1")]
    pub schema: String,
    /// UUIDv7; also the `Idempotency-Key` of every delivery attempt.
    pub id: Uuid,
    /// Always `ai_video`.
    #[schema(example = "ai_video")]
    pub source: String,
    pub scenario: CaseScenario,
    /// Department that handles the case (e.g. 公安).
    pub department: String,
    /// Workstation of the command centre that dispatches it (e.g. 联勤联动工作站).
    pub workstation: String,
    pub handling_level: HandlingLevel,
    /// 103060: 10, 30 or 60 minutes from `confirmed_at`, by handling level.
    pub deadline_minutes: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline_at: OffsetDateTime,
    pub unit: Named,
    pub group: Named,
    pub camera: CaseCamera,
    pub location: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub zone: CaseZone,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub confirmed_at: OffsetDateTime,
    pub confidence: f32,
    pub objects: Vec<CaseObject>,
    pub episode: CaseEpisode,
    /// The analysed frame with the zone and the objects drawn.
    pub snapshot: CaseSnapshot,
    /// The objects' region, unannotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<CaseSnapshot>,
}

/// Where in the camera's media the episode happened (stream seconds; for replays, the offset in
/// the recording), so a reviewer can find the moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseEpisode {
    pub started_media_seconds: f64,
    pub confirmed_media_seconds: f64,
    pub frame_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseScenario {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// The event code of the town's code table (e.g. `0101`), with its 大类 / 小类.
    #[serde(default)]
    pub category_code: String,
    #[serde(default)]
    pub category_major: String,
    #[serde(default)]
    pub category_minor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Named {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseCamera {
    pub id: String,
    pub name: String,
    pub gb28181_device_id: Option<String>,
    pub gb28181_channel_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseZone {
    pub id: String,
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseObject {
    /// What the object is, independent of the model (`person`, `car`, …).
    pub kind: String,
    /// The model's own label.
    pub label: String,
    pub score: f32,
    /// [x1, y1, x2, y2] normalised to the frame.
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseSnapshot {
    #[schema(example = "image/jpeg")]
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// The JPEG, base64 (inline upload). Absent in multipart uploads, where `part` names the
    /// form part that carries the bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

impl CaseSnapshot {
    fn inline(s: &evidence::Snapshot) -> Self {
        CaseSnapshot {
            content_type: "image/jpeg".into(),
            width: s.width,
            height: s.height,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&s.jpeg),
            part: None,
        }
    }

    pub fn jpeg(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("case could not be serialised: {0}")]
    Json(#[from] serde_json::Error),
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
    let clean = match tier {
        Tier::Review => {
            Some(evidence::annotate(&event.frame, &[], &[], snapshot_max_width_pixels)?.jpeg)
        }
        _ => None,
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
        snapshot: CaseSnapshot::inline(&evidence.snapshot),
        crop: evidence.crop.as_ref().map(CaseSnapshot::inline),
    };
    Ok((case, evidence.snapshot.jpeg))
}

/// 103060: the time by which a case of `level` confirmed at `confirmed_at` must be closed.
pub fn deadline(confirmed_at: OffsetDateTime, level: HandlingLevel) -> OffsetDateTime {
    confirmed_at + time::Duration::minutes(i64::from(level.deadline_minutes()))
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
        if triage
            .suppressions
            .active(&cam.id, &zone.id, event.scenario.id, SystemTime::now())
        {
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
        let state = match clean {
            Some(_) => outbox::InitialState::AwaitingReview,
            None => outbox::InitialState::Pending,
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
        tracing::info!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %case.unit.name, zone = %case.zone.id, targets = ?targets, objects = case.objects.len(), confidence = case.confidence, held_for_review = clean.is_some(), "case stored in outbox");
        if targets.is_empty() {
            // Kept, never silently lost: the operator sees the gap in the metric and the log.
            telemetry::case_unrouted(&case.scenario.id);
            tracing::warn!(case = %case.id, scenario = %case.scenario.id, camera = %case.camera.id, unit = %cam.unit, zone = %zone.id, "no dispatch target takes this case (check the [dispatch] routes); it stays in the outbox as unrouted");
        }
        stored += 1;
        if clean.is_some() {
            on_held();
        } else {
            on_stored();
        }
    }
    Ok(stored)
}
