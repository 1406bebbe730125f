//! The loop back from the command platform, as it travels: the case statuses a platform reports
//! (立案, 派遣, 处置, 核查, 结案, 退回), the feed it serves them from (polled) and the signed
//! webhook it calls, and the updates the pipeline sends about a case it already delivered
//! (verification by the camera, self-resolution, reminders, escalation, a new handling level).
//! Types and the signature only; no I/O.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{CaseSnapshot, HandlingLevel};

pub const UPDATE_SCHEMA: &str = "gridwatch.case_update.v1";
/// The webhook's signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Gridwatch-Signature";
/// A webhook call signed longer ago (or further ahead) than this is refused as a replay.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// Where a case is on the platform.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PlatformStatus {
    /// 立案: received and registered.
    Registered,
    /// 派遣: sent to the handling department.
    Dispatched,
    /// 处置: the department reports it handled the problem (the camera re-checks now).
    Handling,
    /// 核查: the camera verified that the problem is gone.
    Verified,
    /// 结案: closed.
    Closed,
    /// 退回: returned by the platform (not its case, or not a problem).
    Returned,
}

impl PlatformStatus {
    pub const ALL: [PlatformStatus; 6] = [
        PlatformStatus::Registered,
        PlatformStatus::Dispatched,
        PlatformStatus::Handling,
        PlatformStatus::Verified,
        PlatformStatus::Closed,
        PlatformStatus::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PlatformStatus::Registered => "registered",
            PlatformStatus::Dispatched => "dispatched",
            PlatformStatus::Handling => "handling",
            PlatformStatus::Verified => "verified",
            PlatformStatus::Closed => "closed",
            PlatformStatus::Returned => "returned",
        }
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            PlatformStatus::Registered => "立案",
            PlatformStatus::Dispatched => "派遣",
            PlatformStatus::Handling => "处置",
            PlatformStatus::Verified => "核查",
            PlatformStatus::Closed => "结案",
            PlatformStatus::Returned => "退回",
        }
    }

    pub fn parse(s: &str) -> Option<PlatformStatus> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Handled in the sense of 103060: someone acted (or the case left the platform's hands).
    pub fn handled(self) -> bool {
        !matches!(
            self,
            PlatformStatus::Registered | PlatformStatus::Dispatched
        )
    }
}

/// One status change of one case, as the platform reports it. `event_id` is unique and
/// increasing on the platform: a receiver stores each once, whichever way it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusEvent {
    pub event_id: i64,
    pub case_id: String,
    pub status: PlatformStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET <status feed>?after=<event_id>&limit=<n>`: the events after `after`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusFeed {
    pub events: Vec<StatusEvent>,
}

/// What an update says about a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// 核查通过: the camera re-checked after handling and the problem is gone.
    Verified,
    /// 核查不通过: still there after the checks: the case is open again.
    Reopened,
    /// The episode ended before anyone acted (the car left, the crowd dispersed).
    SelfResolved,
    /// The 103060 deadline is near.
    Reminder,
    /// 督办: the deadline passed; the station that leads difficult problems takes it up.
    Escalated,
    /// A reviewer changed the case's handling level (and so its deadline).
    LevelChanged,
}

impl UpdateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Verified => "verified",
            UpdateKind::Reopened => "reopened",
            UpdateKind::SelfResolved => "self_resolved",
            UpdateKind::Reminder => "reminder",
            UpdateKind::Escalated => "escalated",
            UpdateKind::LevelChanged => "level_changed",
        }
    }

    pub fn name_zh(self) -> &'static str {
        match self {
            UpdateKind::Verified => "核查通过",
            UpdateKind::Reopened => "核查不通过",
            UpdateKind::SelfResolved => "自行消除",
            UpdateKind::Reminder => "临期提醒",
            UpdateKind::Escalated => "督办",
            UpdateKind::LevelChanged => "等级调整",
        }
    }

    pub fn parse(s: &str) -> Option<UpdateKind> {
        [
            UpdateKind::Verified,
            UpdateKind::Reopened,
            UpdateKind::SelfResolved,
            UpdateKind::Reminder,
            UpdateKind::Escalated,
            UpdateKind::LevelChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The station a case is escalated to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Station {
    pub id: String,
    pub name: String,
}

/// `POST <cases url>/<case id>/updates` with `Idempotency-Key` = `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaseUpdate {
    /// Always `gridwatch.case_update.v1`.
    pub schema: String,
    /// UUIDv7; the idempotency key.
    pub id: Uuid,
    pub case_id: Uuid,
    pub kind: UpdateKind,
    /// 核查通过 … 督办.
    pub kind_zh: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The case's handling level and deadline as gridwatch counts them now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling_level: Option<HandlingLevel>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline_at: Option<OffsetDateTime>,
    /// Escalations: who takes the case up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<Station>,
    /// Verification and self-resolution: the camera's frame that shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<CaseSnapshot>,
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac(secret, unix_seconds, body))
    )
}

/// Why a webhook call's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    /// Signed outside [`SIGNATURE_TOLERANCE_SECONDS`] of now: a replay or a wrong clock.
    Stale {
        age_seconds: i64,
    },
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Malformed => write!(
                f,
                "signature header malformed (expected t=<unix seconds>,v1=<hex>)"
            ),
            SignatureError::Stale { age_seconds } => write!(
                f,
                "signed {age_seconds} s from now, outside ±{SIGNATURE_TOLERANCE_SECONDS} s"
            ),
            SignatureError::Mismatch => write!(f, "signature does not match"),
        }
    }
}

/// Checks a [`SIGNATURE_HEADER`] value against `body` at `now_unix` (constant-time compare).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    let age = now_unix.saturating_sub(t);
    if age.abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::Stale { age_seconds: age });
    }
    let given = hex::decode(v1).map_err(|_| SignatureError::Malformed)?;
    keyed(secret, t, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// HMAC-SHA256 of "<unix seconds>.<body>" under `secret`.
fn keyed(secret: &[u8], unix_seconds: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(unix_seconds.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

fn mac(secret: &[u8], unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    keyed(secret, unix_seconds, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_body_secret_and_time() {
        let body = br#"{"event_id":1}"#;
        let h = sign(b"s3cret", 1_000, body);
        assert_eq!(verify(b"s3cret", &h, body, 1_010), Ok(()));
        assert_eq!(
            verify(b"other", &h, body, 1_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, b"{}", 1_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, body, 1_000 + SIGNATURE_TOLERANCE_SECONDS + 1),
            Err(SignatureError::Stale {
                age_seconds: SIGNATURE_TOLERANCE_SECONDS + 1
            })
        );
        assert_eq!(
            verify(b"s3cret", "v1=zz", body, 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", "t=1000,v1=zz", body, 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn statuses_and_kinds_read_back_what_they_write() {
        for s in PlatformStatus::ALL {
            assert_eq!(PlatformStatus::parse(s.as_str()), Some(s));
        }
        assert!(!PlatformStatus::Dispatched.handled() && PlatformStatus::Handling.handled());
        assert_eq!(UpdateKind::parse("escalated"), Some(UpdateKind::Escalated));
    }
}
