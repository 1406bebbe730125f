//! The case as it travels: the `gridwatch.case.v1` wire format that the pipeline's case stage
//! writes and a dispatch API (the reference service in `gridwatch-dispatch-ref` included)
//! reads, with the 103060 handling levels that set its deadline. Types only: no I/O, so both
//! sides share one definition without sharing anything else.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

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
    "reported_by",
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
    /// Present when a member of staff reported the case from the patrol wall (the box they
    /// drew is its one object); absent for automatic discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<ReportedBy>,
}

/// Who reported a case by hand, and what they wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ReportedBy {
    /// The console account that reported it.
    pub user: String,
    #[serde(default)]
    pub note: String,
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
    /// A JPEG carried inline, base64.
    pub fn inline_jpeg(jpeg: &[u8], width: u32, height: u32) -> Self {
        CaseSnapshot {
            content_type: "image/jpeg".into(),
            width,
            height,
            data_base64: base64::engine::general_purpose::STANDARD.encode(jpeg),
            part: None,
        }
    }

    pub fn jpeg(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .ok()
    }
}

/// Handling level of a case; the "103060" rule gives simple cases 10 minutes, general 30 and
/// difficult 60, counted from confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandlingLevel {
    Simple,
    General,
    Difficult,
}

impl HandlingLevel {
    pub const ALL: [HandlingLevel; 3] = [
        HandlingLevel::Simple,
        HandlingLevel::General,
        HandlingLevel::Difficult,
    ];

    /// The wire name (`simple`, `general`, `difficult`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlingLevel::Simple => "simple",
            HandlingLevel::General => "general",
            HandlingLevel::Difficult => "difficult",
        }
    }

    pub fn parse(s: &str) -> Option<HandlingLevel> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn deadline_minutes(self) -> u32 {
        match self {
            HandlingLevel::Simple => 10,
            HandlingLevel::General => 30,
            HandlingLevel::Difficult => 60,
        }
    }
}

/// 103060: the time by which a case of `level` confirmed at `confirmed_at` must be closed.
pub fn deadline(confirmed_at: OffsetDateTime, level: HandlingLevel) -> OffsetDateTime {
    confirmed_at + time::Duration::minutes(i64::from(level.deadline_minutes()))
}

pub mod platform;
