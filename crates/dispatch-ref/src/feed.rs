//! The status feed (`GET /api/v1/status-events`): every status change of every case, from the
//! case history, numbered by the history's id so that a poller (or the webhook) resumes after
//! the last event it took.

use super::*;

/// A page of the feed when the poller names none.
const FEED_LIMIT: u32 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedParams {
    /// Only events after this `event_id` (default 0: from the start).
    after: Option<i64>,
    /// At most this many (default 100, at most 1000), oldest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The events after `after`, oldest first.
pub(crate) fn events_after(
    conn: &Connection,
    after: i64,
    limit: u32,
) -> rusqlite::Result<Vec<StatusEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, case_id, status, at, note FROM case_history WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (event_id, case_id, status, at, note) = row?;
        // Every status the service writes parses; a row that does not is skipped, not guessed.
        let Some(status) = PlatformStatus::parse(&status) else {
            tracing::warn!(event_id, status, "case history row with an unknown status");
            continue;
        };
        events.push(StatusEvent {
            event_id,
            case_id,
            status,
            at: OffsetDateTime::parse(&at, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            note,
        });
    }
    Ok(events)
}

#[utoipa::path(
    get,
    path = "/api/v1/status-events",
    tag = "feed",
    description = "Every status change of every case (立案 at intake included), oldest first, for a poller: pass the last `event_id` taken as `after`.",
    params(FeedParams),
    responses(
        (status = 200, description = "The events after `after`", body = StatusFeed),
        (status = 400, description = "Bad query", body = Problem),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn status_events(
    State(state): State<AppState>,
    query: Result<Query<FeedParams>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = q.limit.unwrap_or(FEED_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("limit must be within 1..={MAX_PAGE_LIMIT}"),
        );
    }
    let after = q.after.unwrap_or(0);
    match blocking(&state.db, move |c| events_after(c, after, limit)).await {
        Ok(events) => axum::Json(StatusFeed { events }).into_response(),
        Err(e) => unavailable(e),
    }
}
