//! The pipeline's updates about a case it delivered (`gridwatch.case_update.v1`, `POST
//! /api/v1/cases/{id}/updates`): stored idempotently by `Idempotency-Key` like intake, and
//! applied to the case where they fit its status: 核查通过 (处置 → 核查), 核查不通过 (处置 →
//! 派遣, reopened + 1), 自行消除 (立案 or 派遣 → 结案), 督办 (the station) and 等级调整 (level and
//! deadline), each written to the case's history and so to the status feed. Reminders are only
//! stored; an update that does not fit the case's status is stored and changes nothing.

use gridwatch_case::platform::UPDATE_SCHEMA;
use time::UtcOffset;

use super::*;

/// One stored update, as `GET /api/v1/cases/{id}/updates` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UpdateItem {
    /// The update's id: its Idempotency-Key.
    pub id: String,
    pub kind: UpdateKind,
    /// 核查通过 … 督办.
    pub kind_zh: String,
    /// When the pipeline says it happened (UTC).
    pub at: String,
    pub note: Option<String>,
    pub handling_level: Option<HandlingLevel>,
    pub deadline_at: Option<String>,
    /// Escalations: the station's name.
    pub station: Option<String>,
    /// Whether it changed the case (status, level, deadline or 督办) when it first came.
    pub applied: bool,
    /// POSTs received with this key (the first plus idempotent repeats).
    pub deliveries: i64,
    pub has_snapshot: bool,
    pub received_at: String,
}

/// The answer to an update.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UpdateResponse {
    /// `stored` (first time, 201) or `duplicate` (same key and payload again, 200).
    pub outcome: String,
    pub update: UpdateItem,
    /// The case after the update.
    pub case: StoredCase,
}

/// A validated update ready to store.
struct NewUpdate {
    update: CaseUpdate,
    sha256: String,
    snapshot: Option<Vec<u8>>,
}

enum Outcome {
    New(UpdateResponse),
    Duplicate(UpdateResponse),
    Conflict,
    NoCase,
}

/// Checks the body: a `gridwatch.case_update.v1` whose id is the key and whose case is the
/// path's, with a JPEG if it carries a snapshot. `Err` is the reason (a 422).
fn validate(key: &str, case_id: &str, bytes: &[u8]) -> Result<NewUpdate, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON: {e}"))?;
    let update: CaseUpdate = serde_json::from_value(value.clone())
        .map_err(|e| format!("not a {UPDATE_SCHEMA} update: {e}"))?;
    if update.schema != UPDATE_SCHEMA {
        return Err(format!("`schema` must be `{UPDATE_SCHEMA}`"));
    }
    if uuid::Uuid::parse_str(key).ok() != Some(update.id) {
        return Err("body `id` must equal the Idempotency-Key".into());
    }
    if uuid::Uuid::parse_str(case_id).ok() != Some(update.case_id) {
        return Err("body `case_id` must equal the case of the path".into());
    }
    if update
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(format!("note over {MAX_NOTE_CHARS} characters"));
    }
    let snapshot = match &update.snapshot {
        None => None,
        Some(s) => {
            let jpeg = s.jpeg().ok_or("`snapshot.data_base64` is not base64")?;
            if !jpeg.starts_with(&[0xff, 0xd8, 0xff]) {
                return Err("`snapshot` is not a JPEG".into());
            }
            Some(jpeg)
        }
    };
    let sha256 = hex::encode(Sha256::digest(canonical(&value).to_string().as_bytes()));
    Ok(NewUpdate {
        update,
        sha256,
        snapshot,
    })
}

fn utc(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn open_case(status: PlatformStatus) -> bool {
    !terminal(status)
}

/// Changes the case as `u` says where it fits the case's status; whether it did.
fn apply(tx: &Connection, case: &StoredCase, u: &CaseUpdate) -> rusqlite::Result<bool> {
    use PlatformStatus as S;
    let id = case.id.as_str();
    match (u.kind, case.status) {
        (UpdateKind::Verified, S::Handling) => {
            set_status(tx, id, S::Verified, Some("核查通过"))?;
        }
        (UpdateKind::Reopened, S::Handling) => {
            set_status(tx, id, S::Dispatched, Some("核查不通过"))?;
            tx.execute(
                "UPDATE received SET reopened = reopened + 1 WHERE id = ?1",
                params![id],
            )?;
        }
        (UpdateKind::SelfResolved, S::Registered | S::Dispatched) => {
            set_status(tx, id, S::Closed, Some("自行消除"))?;
        }
        (UpdateKind::Escalated, s) if open_case(s) => {
            let Some(station) = &u.station else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE received SET escalated_to = ?2 WHERE id = ?1",
                params![id, station.name],
            )?;
            let note = format!("督办：{}", station.name);
            record_history(tx, id, s, &now_rfc3339(), Some(&note))?;
        }
        (UpdateKind::LevelChanged, s) if open_case(s) => {
            let Some(level) = u.handling_level else {
                return Ok(false);
            };
            change_level(tx, case, level, u.deadline_at)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// 等级调整: the new level, and the deadline the pipeline sent (or the level's from
/// confirmation when it sent none).
fn change_level(
    tx: &Connection,
    case: &StoredCase,
    level: HandlingLevel,
    sent: Option<OffsetDateTime>,
) -> rusqlite::Result<()> {
    let confirmed = OffsetDateTime::parse(&case.confirmed_at, &Rfc3339).ok();
    let deadline_at = sent
        .or(confirmed.map(|c| deadline(c, level)))
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| case.deadline_at.clone());
    tx.execute(
        "UPDATE received SET level = ?2, deadline_at = ?3 WHERE id = ?1",
        params![case.id, level_str(level), deadline_at],
    )?;
    let note = format!("等级调整：{}，时限 {deadline_at}", level_str(level));
    record_history(tx, &case.id, case.status, &now_rfc3339(), Some(&note))
}

fn insert(
    tx: &Connection,
    key: &str,
    case_id: &str,
    n: &NewUpdate,
    applied: bool,
) -> rusqlite::Result<()> {
    let u = &n.update;
    tx.execute(
        "INSERT INTO case_update (key, case_id, body_sha256, kind, at, note, level, deadline_at,
            station, snapshot, applied, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            key,
            case_id,
            n.sha256,
            u.kind.as_str(),
            utc(u.at),
            u.note,
            u.handling_level.map(level_str),
            u.deadline_at.and_then(|d| d.format(&Rfc3339).ok()),
            u.station.as_ref().map(|s| s.name.as_str()),
            n.snapshot,
            applied,
            now_rfc3339(),
        ],
    )?;
    Ok(())
}

/// Stores the update once per key, applying it the first time.
fn store(
    conn: &mut Connection,
    case_id: &str,
    key: &str,
    n: NewUpdate,
) -> rusqlite::Result<Outcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing: Option<(String, String)> = tx
        .query_row(
            "SELECT body_sha256, case_id FROM case_update WHERE key = ?1",
            params![key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (stored_for, first) = match existing {
        Some((sha, stored_for)) if sha == n.sha256 => {
            tx.execute(
                "UPDATE case_update SET deliveries = deliveries + 1 WHERE key = ?1",
                params![key],
            )?;
            (stored_for, false)
        }
        Some(_) => return Ok(Outcome::Conflict),
        None => {
            let Some(case) = load_case(&tx, case_id)? else {
                return Ok(Outcome::NoCase);
            };
            let applied = apply(&tx, &case, &n.update)?;
            insert(&tx, key, case_id, &n, applied)?;
            (case_id.to_owned(), true)
        }
    };
    let missing = || rusqlite::Error::QueryReturnedNoRows;
    let response = UpdateResponse {
        outcome: if first { "stored" } else { "duplicate" }.into(),
        update: load_update(&tx, key)?.ok_or_else(missing)?,
        case: load_case(&tx, &stored_for)?.ok_or_else(missing)?,
    };
    tx.commit()?;
    Ok(if first {
        Outcome::New(response)
    } else {
        Outcome::Duplicate(response)
    })
}

const SELECT_UPDATE: &str = "SELECT key, kind, at, note, level, deadline_at, station, applied,
    deliveries, snapshot IS NOT NULL, received_at FROM case_update";

fn row_to_update(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateItem> {
    let kind = UpdateKind::parse(&r.get::<_, String>(1)?).unwrap_or(UpdateKind::Reminder);
    Ok(UpdateItem {
        id: r.get(0)?,
        kind,
        kind_zh: kind.name_zh().into(),
        at: r.get(2)?,
        note: r.get(3)?,
        handling_level: r.get::<_, Option<String>>(4)?.as_deref().map(parse_level),
        deadline_at: r.get(5)?,
        station: r.get(6)?,
        applied: r.get(7)?,
        deliveries: r.get(8)?,
        has_snapshot: r.get(9)?,
        received_at: r.get(10)?,
    })
}

fn load_update(conn: &Connection, key: &str) -> rusqlite::Result<Option<UpdateItem>> {
    conn.query_row(
        &format!("{SELECT_UPDATE} WHERE key = ?1"),
        params![key],
        row_to_update,
    )
    .optional()
}

/// The case's updates, oldest first; `None` when there is no such case.
fn case_updates(conn: &Connection, case_id: &str) -> rusqlite::Result<Option<Vec<UpdateItem>>> {
    if load_case(conn, case_id)?.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare(&format!(
        "{SELECT_UPDATE} WHERE case_id = ?1 ORDER BY at, seq"
    ))?;
    let rows = stmt.query_map(params![case_id], row_to_update)?;
    rows.collect::<rusqlite::Result<_>>().map(Some)
}

#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/updates",
    tag = "updates",
    description = "Stores the pipeline's update about a case, idempotently by `Idempotency-Key` (which must equal the update id), and applies it where it fits the case's status: verified (处置 → 核查), reopened (处置 → 派遣), self_resolved (立案 or 派遣 → 结案), escalated (督办), level_changed (level and deadline). Reminders, and updates that do not fit, are stored without a change.",
    params(
        ("id" = String, Path, description = "Case id"),
        ("Idempotency-Key" = String, Header, description = "The update id (UUID)")
    ),
    request_body(content = CaseUpdate, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (and applied where it fits)", body = UpdateResponse),
        (status = 200, description = "Same key and payload again: the stored update", body = UpdateResponse),
        (status = 400, description = "No key", body = Problem),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 404, description = "No such case", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 422, description = "Not a valid update for this case, or the key was used with another payload", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn post_update(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k.to_owned(),
        Err(m) => return problem(StatusCode::BAD_REQUEST, m),
    };
    if let Some(r) = declared_too_large(&headers) {
        return r;
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let new = match validate(&key, &id, &bytes) {
        Ok(n) => n,
        Err(m) => return problem(StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    match blocking(&state.db, move |c| store(c, &id, &key, new)).await {
        Ok(Outcome::New(r)) => {
            tracing::info!(case = %r.case.id, kind = r.update.kind.as_str(), applied = r.update.applied, status = r.case.status.as_str(), "case update stored");
            (StatusCode::CREATED, axum::Json(r)).into_response()
        }
        Ok(Outcome::Duplicate(r)) => (StatusCode::OK, axum::Json(r)).into_response(),
        Ok(Outcome::Conflict) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used with a different payload",
        ),
        Ok(Outcome::NoCase) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(e) => unavailable(e),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/updates",
    tag = "updates",
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case's updates, oldest first", body = [UpdateItem]),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 404, description = "No such case", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_updates(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match blocking(&state.db, move |c| case_updates(c, &id)).await {
        Ok(Some(updates)) => axum::Json(updates).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(e) => unavailable(e),
    }
}

/// `GET /cases/{id}/updates/{key}/snapshot.jpg`: the frame an update carried.
pub(crate) async fn update_snapshot(
    State(state): State<AppState>,
    UrlPath((id, key)): UrlPath<(String, String)>,
) -> Response {
    let found = blocking(&state.db, move |c| {
        c.query_row(
            "SELECT snapshot FROM case_update WHERE case_id = ?1 AND key = ?2",
            params![id, key],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
    })
    .await;
    match found {
        Ok(Some(Some(jpeg))) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(_) => problem(StatusCode::NOT_FOUND, "no such update or no snapshot"),
        Err(e) => unavailable(e),
    }
}
