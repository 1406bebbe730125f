//! The reference dispatch service (`gridwatch dispatch-server`, also embedded in `gridwatch run`
//! for a first run): an axum service over SQLite for towns whose platform has no intake yet,
//! and for tests. A crate apart from the pipeline: it shares only the case's wire format
//! (`gridwatch-case`) and the migration helper (`gridwatch-sqlite`), and builds without
//! GStreamer, OpenCV or onnxruntime.
//!
//! Intake (`POST /api/v1/cases`) is idempotent by `Idempotency-Key`: the same key with the same
//! payload answers the stored case with its current status; the same key with another payload is
//! 422; a key whose first request is still being processed is 409; no key is 400. Payloads are
//! compared by the SHA-256 of their canonical JSON (sorted keys, images inline), so inline and
//! multipart uploads of one case are the same payload. A body limit guards the intake. Each case
//! is tracked through 立案 → 派遣 → 处置 → 结案 (or 退回 before handling, or 核查 → 结案 once the
//! camera verified it) with the 103060 deadline of its handling level, the statuses of
//! [`gridwatch_case::platform::PlatformStatus`]; `/api/v1/cases/overdue` lists the late ones and
//! `/` is the board of open cases by unit and department. The OpenAPI description is served at
//! `/api/v1/openapi.json`.
//!
//! The loop back to the pipeline: every status change is an event of the status feed (`GET
//! /api/v1/status-events?after=<event id>`, 立案 at intake included); with a [`Webhook`], each
//! event is also POSTed, signed, to its URL from a durable cursor. The pipeline's updates about a
//! case (`POST /api/v1/cases/{id}/updates`, `gridwatch.case_update.v1`, idempotent like intake)
//! are stored and, where they fit the case's status, move it: 核查通过, 核查不通过 (reopened),
//! 自行消除, 督办, 等级调整.
//!
//! With a token (`--token`), every route but `/healthz` needs it, the OpenAPI document included
//! (`gridwatch dispatch-server --openapi` prints it without a server): `Authorization: Bearer
//! <token>` for anything, or, for a browser, the cookie `POST /login` sets (the board answers a
//! browser's unauthenticated request with that sign-in form, as a 401). The cookie holds a digest
//! of the token, not the token, and only reads (GET, HEAD): a page of another site cannot make a
//! signed-in browser post or advance cases with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::OpenApi;

use gridwatch_case::platform::{
    CaseUpdate, PlatformStatus, Station, StatusEvent, StatusFeed, UpdateKind,
};
use gridwatch_case::{CASE_SCHEMA, Case, CaseSnapshot, HandlingLevel, deadline};

mod feed;
#[cfg(test)]
mod tests;
mod updates;
mod webhook;

pub use updates::{UpdateItem, UpdateResponse};
pub use webhook::{Webhook, WebhookTask};

pub const CASES_PATH: &str = "/api/v1/cases";
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// The status feed: `GET ?after=<event id>&limit=<n>`.
pub const STATUS_EVENTS_PATH: &str = "/api/v1/status-events";
/// The one route open without the token.
pub const HEALTH_PATH: &str = "/healthz";
/// Where the board's sign-in form posts the token (`token`, and `next`: the page to go back to).
pub const LOGIN_PATH: &str = "/login";
/// The cookie a signed-in browser reads with.
pub const BOARD_COOKIE: &str = "gw_board";
/// Cases carry two JPEGs of well under a megabyte; anything far larger is not a case.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const MAX_KEY_CHARS: usize = 128;
const MAX_PARTS: usize = 8;
const PAGE_LIMIT: u32 = 200;
const MAX_PAGE_LIMIT: u32 = 1000;
const MAX_NOTE_CHARS: usize = 1000;
/// Fields whose images may travel inline (`data_base64`) or as multipart parts (`part`).
const IMAGE_FIELDS: &[&str] = &["snapshot", "crop"];

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver database {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("receiver database {path}: schema migration failed: {source}")]
    Migrate {
        path: String,
        #[source]
        source: gridwatch_sqlite::Error,
    },
    #[error("receiver: cannot create folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver: {0}")]
    Serve(#[source] std::io::Error),
    #[error("receiver: webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
}

/// The service's former name for [`PlatformStatus`], kept for existing callers.
pub use gridwatch_case::platform::PlatformStatus as CaseStatus;

/// The statuses a case may move to from `status` by `POST /api/v1/cases/{id}/status`: the chain
/// 立案 → 派遣 → 处置 → 结案, 退回 before handling, and 结案 after the camera's 核查. 核查 itself
/// comes only from the pipeline's updates.
pub fn allowed_next(status: PlatformStatus) -> &'static [PlatformStatus] {
    use PlatformStatus as S;
    match status {
        S::Registered => &[S::Dispatched, S::Returned],
        S::Dispatched => &[S::Handling, S::Returned],
        S::Handling | S::Verified => &[S::Closed],
        S::Closed | S::Returned => &[],
    }
}

/// Closed or returned: out of the platform's hands, no deadline running.
fn terminal(status: PlatformStatus) -> bool {
    matches!(status, PlatformStatus::Closed | PlatformStatus::Returned)
}

/// One stored case with its handling state, as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StoredCase {
    pub id: String,
    pub received_at: String,
    /// Scenario id, e.g. `crowd_gathering`.
    pub scenario: String,
    pub scenario_name: String,
    pub camera: String,
    pub camera_name: String,
    /// Management unit (name).
    pub unit: String,
    pub location: String,
    pub department: String,
    pub workstation: String,
    pub handling_level: HandlingLevel,
    pub first_seen_at: String,
    pub confirmed_at: String,
    /// `confirmed_at` plus 10/30/60 minutes by handling level (103060).
    pub deadline_at: String,
    pub confidence: f64,
    pub status: PlatformStatus,
    /// 立案, 派遣, 处置, 核查, 结案 or 退回.
    pub status_zh: String,
    pub dispatched_at: Option<String>,
    pub handling_at: Option<String>,
    pub closed_at: Option<String>,
    /// Seconds until the deadline (negative when late); absent once closed.
    pub time_left_seconds: Option<i64>,
    /// Open and past its deadline, or closed after it.
    pub overdue: bool,
    /// POSTs received with this key (the first plus idempotent repeats).
    pub deliveries: i64,
    pub snapshot_bytes: i64,
    pub crop_bytes: i64,
    /// Times the camera found the problem still there after handling (核查不通过).
    pub reopened: i64,
    /// 督办: the station the case was escalated to, if it was.
    pub escalated_to: Option<String>,
    /// Distinct updates the pipeline sent about the case.
    pub updates: i64,
    /// The member of staff who reported the case from the patrol wall (absent: discovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
}

/// The answer to an intake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct IntakeResponse {
    /// `stored` (first time, 201) or `duplicate` (same key and payload again, 200).
    pub outcome: String,
    pub case: StoredCase,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    pub error: String,
}

/// `POST /api/v1/cases/{id}/status`: move a case to a status [`allowed_next`] allows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub status: PlatformStatus,
    /// Free text kept in the case's history (who, what was done).
    #[serde(default)]
    pub note: Option<String>,
}

/// Multipart intake: the case JSON, with each image's `part` naming the part that carries it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only describes the form for OpenAPI.
pub struct CaseMultipart {
    /// The case JSON; `snapshot.part` = "snapshot", `crop.part` = "crop".
    case: String,
    #[schema(value_type = String, format = Binary)]
    snapshot: Vec<u8>,
    #[schema(value_type = Option<String>, format = Binary)]
    crop: Option<Vec<u8>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gridwatch dispatch API",
        description = "Case intake (gridwatch.case.v1), case handling (立案 → 派遣 → 处置 → 核查 → 结案, 退回; 103060 deadlines), the status feed and the pipeline's updates (gridwatch.case_update.v1) of the reference dispatch service."
    ),
    paths(
        intake,
        list,
        overdue,
        get_case,
        advance,
        feed::status_events,
        updates::post_update,
        updates::list_updates
    ),
    components(schemas(
        Case,
        StoredCase,
        IntakeResponse,
        Problem,
        StatusChange,
        PlatformStatus,
        CaseMultipart,
        StatusEvent,
        StatusFeed,
        CaseUpdate,
        UpdateKind,
        Station,
        UpdateItem,
        UpdateResponse
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI description of the receiver's API and of the case.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(Clone)]
struct AppState {
    db: Arc<Mutex<Connection>>,
    token: Option<Arc<str>>,
    /// The value of [`BOARD_COOKIE`] for `token`.
    board_cookie: Option<Arc<str>>,
    /// Keys whose first request is being processed now (answered 409 meanwhile).
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Columns added to `received` after the first release (357c287), each by `ALTER TABLE` when
/// missing. Frozen with [`MIGRATIONS`]' step 1.
const COLUMNS: &[(&str, &str)] = &[
    ("scenario_name", "TEXT NOT NULL DEFAULT ''"),
    ("camera_name", "TEXT NOT NULL DEFAULT ''"),
    ("location", "TEXT NOT NULL DEFAULT ''"),
    ("department", "TEXT NOT NULL DEFAULT ''"),
    ("workstation", "TEXT NOT NULL DEFAULT ''"),
    ("level", "TEXT NOT NULL DEFAULT 'general'"),
    ("confirmed_at", "TEXT NOT NULL DEFAULT ''"),
    ("deadline_at", "TEXT NOT NULL DEFAULT ''"),
    ("status", "TEXT NOT NULL DEFAULT 'registered'"),
    ("dispatched_at", "TEXT"),
    ("handling_at", "TEXT"),
    ("closed_at", "TEXT"),
    ("crop", "BLOB"),
];

/// The reference dispatch service's schema, one step per change (`PRAGMA user_version` = steps
/// applied; see [`gridwatch_sqlite`]). Never edit a shipped step; add one.
pub const MIGRATIONS: &[gridwatch_sqlite::Step] = &[
    // 1: the handling schema (357c287), from an empty file, from the first release's `received`
    // (b7384ed) or from an unversioned database of the handling schema.
    gridwatch_sqlite::Step::hook(unversioned_to_handling),
    // 2: the board and the case lists read the newest cases first.
    gridwatch_sqlite::Step::sql("CREATE INDEX received_recent ON received(received_at, id);"),
    // 3: the status feed numbers the history: an explicit id (a rowid alone may be renumbered
    // by VACUUM), never reused (AUTOINCREMENT), the old rows keeping their order.
    gridwatch_sqlite::Step::sql(
        "ALTER TABLE case_history RENAME TO case_history_unnumbered;
        CREATE TABLE case_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id TEXT NOT NULL REFERENCES received(id),
            status TEXT NOT NULL,
            at TEXT NOT NULL,
            note TEXT
        );
        INSERT INTO case_history (case_id, status, at, note)
            SELECT case_id, status, at, note FROM case_history_unnumbered ORDER BY rowid;
        DROP TABLE case_history_unnumbered;",
    ),
    // 4: the pipeline's updates, what they change on the case, and the webhook's cursor.
    gridwatch_sqlite::Step::sql(
        "ALTER TABLE received ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE received ADD COLUMN escalated_to TEXT;
        CREATE TABLE case_update (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            case_id TEXT NOT NULL REFERENCES received(id),
            body_sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            note TEXT,
            level TEXT,
            deadline_at TEXT,
            station TEXT,
            snapshot BLOB,
            applied INTEGER NOT NULL DEFAULT 0,
            received_at TEXT NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1
        );
        CREATE INDEX case_update_case ON case_update(case_id, at, seq);
        CREATE TABLE webhook_cursor (url TEXT PRIMARY KEY, after INTEGER NOT NULL DEFAULT 0);",
    ),
];

/// Step 1: what `open` did before the schema was versioned, frozen.
fn unversioned_to_handling(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS received (
            id TEXT PRIMARY KEY,
            received_at TEXT NOT NULL,
            body_sha256 TEXT NOT NULL,
            body TEXT NOT NULL,
            scenario TEXT NOT NULL,
            camera TEXT NOT NULL,
            unit TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            confidence REAL NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1,
            snapshot BLOB
        );
        CREATE TABLE IF NOT EXISTS case_history (
            case_id TEXT NOT NULL REFERENCES received(id),
            status TEXT NOT NULL,
            at TEXT NOT NULL,
            note TEXT
        );",
    )?;
    // Databases of the first release lack the handling columns: add them in place.
    let existing: HashSet<String> = {
        let mut stmt = tx.prepare("SELECT name FROM pragma_table_info('received')")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for (name, decl) in COLUMNS {
        if !existing.contains(*name) {
            tx.execute_batch(&format!("ALTER TABLE received ADD COLUMN {name} {decl}"))?;
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<Connection, ReceiverError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ReceiverError::Folder {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let err = |source| ReceiverError::Database {
        path: path.display().to_string(),
        source,
    };
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    gridwatch_sqlite::migrate(&mut conn, MIGRATIONS).map_err(|source| ReceiverError::Migrate {
        path: path.display().to_string(),
        source,
    })?;
    Ok(conn)
}

/// The receiver's routes over the database at `db_path`.
pub fn router(db_path: &Path, token: Option<String>) -> Result<Router, ReceiverError> {
    router_with(db_path, token, None).map(|(router, _)| router)
}

/// The receiver's routes, and with a `webhook` the task that pushes the status feed to it (run
/// it with [`WebhookTask::run`]; [`Receiver::serve`] does).
pub fn router_with(
    db_path: &Path,
    token: Option<String>,
    webhook: Option<Webhook>,
) -> Result<(Router, Option<WebhookTask>), ReceiverError> {
    let state = AppState {
        db: Arc::new(Mutex::new(open(db_path)?)),
        board_cookie: token.as_deref().map(board_cookie_value).map(Arc::from),
        token: token.map(Arc::from),
        in_flight: Arc::default(),
    };
    let task = webhook
        .map(|w| WebhookTask::new(state.db.clone(), w))
        .transpose()?;
    Ok((routes(state), task))
}

fn routes(state: AppState) -> Router {
    // Every route above the layer needs the token; the sign-in form checks it itself.
    Router::new()
        .route("/", get(board))
        .route(OPENAPI_PATH, get(|| async { axum::Json(openapi()) }))
        .route(CASES_PATH, post(intake).get(list))
        .route("/api/v1/cases/overdue", get(overdue))
        .route("/api/v1/cases/{id}", get(get_case))
        .route("/api/v1/cases/{id}/status", post(advance))
        .route(
            "/api/v1/cases/{id}/updates",
            post(updates::post_update).get(updates::list_updates),
        )
        .route(STATUS_EVENTS_PATH, get(feed::status_events))
        .route("/cases/{id}/snapshot.jpg", get(snapshot))
        .route("/cases/{id}/crop.jpg", get(crop))
        .route(
            "/cases/{id}/updates/{key}/snapshot.jpg",
            get(updates::update_snapshot),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route(LOGIN_PATH, post(login))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .with_state(state)
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: tokio::net::TcpListener,
    router: Router,
    webhook: Option<WebhookTask>,
}

impl Receiver {
    pub async fn bind(
        addr: &str,
        db_path: &Path,
        token: Option<String>,
    ) -> Result<Self, ReceiverError> {
        Self::bind_with(addr, db_path, token, None).await
    }

    /// [`Receiver::bind`], and with a `webhook` that [`Receiver::serve`] pushes the feed to.
    pub async fn bind_with(
        addr: &str,
        db_path: &Path,
        token: Option<String>,
        webhook: Option<Webhook>,
    ) -> Result<Self, ReceiverError> {
        let (router, webhook) = router_with(db_path, token, webhook)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ReceiverError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            listener,
            router,
            webhook,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves (and runs the webhook, if any) until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReceiverError> {
        // The webhook stops when the shutdown comes, or when serving ends otherwise (the
        // sender is dropped then).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = self.webhook.map(|w| {
            let mut stopped = stopped;
            tokio::spawn(w.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .map_err(ReceiverError::Serve);
        if let Some(task) = task {
            let _ = task.await;
        }
        served
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(Problem {
            error: message.into(),
        }),
    )
        .into_response()
}

fn unauthorised() -> Response {
    let mut r = problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "receiver storage failed");
    problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
}

/// Whether a request may pass: with the bearer token, anything; with the board's cookie, reading
/// (GET, HEAD) only; without a token configured, anything.
fn authorised(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    if let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return same_secret(given, token);
    }
    matches!(*method, Method::GET | Method::HEAD)
        && state
            .board_cookie
            .as_deref()
            .zip(cookie(headers, BOARD_COOKIE))
            .is_some_and(|(expected, given)| same_secret(given, expected))
}

/// Equal secrets, compared in constant time: both are hashed first, so the comparison always
/// runs over 32 bytes, whatever the lengths and wherever they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// What the board's cookie holds: a digest of the token, so a cookie copied out of a browser
/// does not give the token (which also posts cases).
fn board_cookie_value(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("gridwatch dispatch board\n{token}").as_bytes(),
    ))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The layer in front of every route but the sign-in form and `/healthz`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if authorised(&state, request.method(), request.headers()) {
        return next.run(request).await;
    }
    let browser = request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if browser {
        let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
        sign_in_page(here, false)
    } else {
        unauthorised()
    }
}

/// 401 with the form that signs a browser in and comes back to `next`.
fn sign_in_page(next: &str, wrong: bool) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Html(format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>gridwatch dispatch board · sign in</title>\
             <style>body{{font-family:sans-serif;margin:2em}}input,button{{font-size:1em;padding:4px 8px}}</style></head>\
             <body><h1>派单看板 · Dispatch board</h1>{}<form method=\"post\" action=\"{LOGIN_PATH}\">\
             <label>令牌 Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus required></label>\
             <input type=\"hidden\" name=\"next\" value=\"{}\"> <button type=\"submit\">登录 Sign in</button></form></body></html>",
            if wrong {
                "<p role=\"alert\">令牌错误 · Wrong token.</p>"
            } else {
                "<p>This service needs its token (<code>--token</code>).</p>"
            },
            escape_html(next),
        )),
    )
        .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the right token sets the board's cookie (HttpOnly: no script reads it; a
/// browser session long) and goes back to `next`, a path on this server; otherwise 401.
async fn login(
    State(state): State<AppState>,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return unauthorised();
    };
    let next = Some(form.next.as_str())
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
        .and_then(|n| HeaderValue::from_str(n).ok())
        .unwrap_or(HeaderValue::from_static("/"));
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let (Some(token), Some(value)) = (&state.token, &state.board_cookie) {
        if !same_secret(&form.token, token) {
            return sign_in_page(next.to_str().unwrap_or("/"), true);
        }
        // Lax, not Strict: a link to the board from elsewhere opens it signed in; the cookie
        // only reads, so a cross-site navigation can change nothing with it.
        let set = format!("{BOARD_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/");
        if let Ok(set) = HeaderValue::from_str(&set) {
            r.headers_mut().insert(header::SET_COOKIE, set);
        }
    }
    r.headers_mut().insert(header::LOCATION, next);
    r
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Removes the key from the in-flight set when its request ends, however it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// JSON with object keys sorted at every level: the payload identity of a case.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        v => v.clone(),
    }
}

/// The case JSON and its image parts from a multipart/form-data body.
async fn parse_multipart(
    body: Bytes,
    boundary: String,
) -> Result<(Value, HashMap<String, Vec<u8>>), String> {
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut case = None;
    let mut files = HashMap::new();
    let mut parts = 0;
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        if name == "case" {
            case = Some(
                serde_json::from_slice::<Value>(&data)
                    .map_err(|e| format!("part `case` is not JSON: {e}"))?,
            );
        } else {
            files.insert(name, data.to_vec());
        }
    }
    let case = case.ok_or("no `case` part")?;
    Ok((case, files))
}

/// A validated case ready to store.
struct Intake {
    case: Case,
    canonical: String,
    sha256: String,
    snapshot: Vec<u8>,
    crop: Option<Vec<u8>>,
}

/// Checks the payload: a `gridwatch.case.v1` whose id is the key, with JPEG images. `Err` is
/// the status and the reason.
fn validate(
    key: &str,
    mut value: Value,
    mut files: HashMap<String, Vec<u8>>,
) -> Result<Intake, (StatusCode, String)> {
    let unprocessable = |m: String| (StatusCode::UNPROCESSABLE_ENTITY, m);
    if !value.is_object() {
        return Err(unprocessable("body must be a JSON object".into()));
    }
    // Multipart images go back inline, so both uploads store (and compare) the same case.
    for field in IMAGE_FIELDS {
        let Some(img) = value.get_mut(*field).and_then(Value::as_object_mut) else {
            continue;
        };
        if let Some(part) = img.remove("part") {
            let name = part.as_str().unwrap_or_default();
            let bytes = files
                .remove(name)
                .ok_or_else(|| unprocessable(format!("`{field}.part` names no part: `{name}`")))?;
            img.insert(
                "data_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }
    let case: Case = serde_json::from_value(value.clone())
        .map_err(|e| unprocessable(format!("not a {CASE_SCHEMA} case: {e}")))?;
    if case.schema != CASE_SCHEMA {
        return Err(unprocessable(format!("`schema` must be `{CASE_SCHEMA}`")));
    }
    if uuid::Uuid::parse_str(key).ok() != Some(case.id) {
        return Err(unprocessable(
            "body `id` must equal the Idempotency-Key".into(),
        ));
    }
    let jpeg = |field: &str, s: &CaseSnapshot| -> Result<Vec<u8>, (StatusCode, String)> {
        let bytes = s
            .jpeg()
            .ok_or_else(|| unprocessable(format!("`{field}.data_base64` is not base64")))?;
        if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            return Err(unprocessable(format!("`{field}` is not a JPEG")));
        }
        Ok(bytes)
    };
    let snapshot = jpeg("snapshot", &case.snapshot)?;
    let crop = case.crop.as_ref().map(|c| jpeg("crop", c)).transpose()?;
    let canonical = canonical(&value).to_string();
    let sha256 = hex::encode(Sha256::digest(canonical.as_bytes()));
    Ok(Intake {
        case,
        canonical,
        sha256,
        snapshot,
        crop,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/cases",
    tag = "cases",
    description = "Stores a case, idempotently by `Idempotency-Key` (which must equal the case id).",
    params(("Idempotency-Key" = String, Header, description = "The case id (UUID)")),
    request_body(content(
        (Case = "application/json"),
        (CaseMultipart = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "Stored", body = IntakeResponse),
        (status = 200, description = "Same key and payload again: the stored case", body = IntakeResponse),
        (status = 400, description = "No key, or not JSON / not a form", body = Problem),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 409, description = "A request with this key is still being processed; retry later", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 422, description = "Not a valid case, or the key was used with another payload", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
async fn intake(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(m) => return problem(StatusCode::BAD_REQUEST, m),
    };
    if let Some(r) = declared_too_large(&headers) {
        return r;
    }
    // Reserve the key before reading the body: a second request with it meanwhile is a 409.
    let _guard = {
        let mut set = state.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.to_owned()) {
            let mut r = problem(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being processed",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        InFlight {
            set: state.in_flight.clone(),
            key: key.to_owned(),
        }
    };
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parsed = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        match multer::parse_boundary(content_type) {
            Ok(boundary) => parse_multipart(bytes, boundary).await,
            Err(e) => Err(e.to_string()),
        }
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .map(|v| (v, HashMap::new()))
            .map_err(|e| format!("body is not JSON: {e}"))
    };
    let (value, files) = match parsed {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let intake = match validate(key, value, files) {
        Ok(i) => i,
        Err((status, message)) => return problem(status, message),
    };
    let key = key.to_owned();
    let db = state.db.clone();
    let result = tokio::task::spawn_blocking(move || store(&db, &key, intake)).await;
    match result {
        Ok(Ok(Stored::New(case))) => {
            tracing::info!(case = %case.id, scenario = %case.scenario, unit = %case.unit, deadline_at = %case.deadline_at, "case registered (立案)");
            (
                StatusCode::CREATED,
                axum::Json(IntakeResponse {
                    outcome: "stored".into(),
                    case,
                }),
            )
                .into_response()
        }
        Ok(Ok(Stored::Duplicate(case))) => (
            StatusCode::OK,
            axum::Json(IntakeResponse {
                outcome: "duplicate".into(),
                case,
            }),
        )
            .into_response(),
        Ok(Ok(Stored::Conflict)) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used with a different payload",
        ),
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

/// The request's `Idempotency-Key`, or why it is refused (a 400).
fn idempotency_key(headers: &HeaderMap) -> Result<&str, &'static str> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or("Idempotency-Key header is required")?;
    if key.len() > MAX_KEY_CHARS {
        return Err("Idempotency-Key is too long");
    }
    Ok(key)
}

fn too_large() -> Response {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {MAX_BODY_BYTES} bytes"),
    )
}

/// A 413 for a declared length over the limit, before anything is read.
fn declared_too_large(headers: &HeaderMap) -> Option<Response> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > MAX_BODY_BYTES as u64)
        .map(|_| too_large())
}

/// The body, up to [`MAX_BODY_BYTES`] (413 beyond).
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let over = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                too_large()
            } else {
                problem(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        })
}

enum Stored {
    New(StoredCase),
    Duplicate(StoredCase),
    Conflict,
}

fn store(db: &Mutex<Connection>, key: &str, i: Intake) -> rusqlite::Result<Stored> {
    let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT body_sha256 FROM received WHERE id = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()?;
    let outcome = match existing {
        Some(s) if s == i.sha256 => {
            tx.execute(
                "UPDATE received SET deliveries = deliveries + 1 WHERE id = ?1",
                params![key],
            )?;
            None
        }
        Some(_) => return Ok(Stored::Conflict),
        None => {
            let c = &i.case;
            let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
            let now = now_rfc3339();
            tx.execute(
                "INSERT INTO received (id, received_at, body_sha256, body, scenario, camera, unit, first_seen_at,
                    confidence, snapshot, scenario_name, camera_name, location, department, workstation, level,
                    confirmed_at, deadline_at, status, crop)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, 'registered', ?19)",
                params![
                    key,
                    now,
                    i.sha256,
                    i.canonical,
                    c.scenario.id,
                    c.camera.id,
                    c.unit.name,
                    fmt(c.first_seen_at),
                    f64::from(c.confidence),
                    i.snapshot,
                    c.scenario.name_zh,
                    c.camera.name,
                    c.location,
                    c.department,
                    c.workstation,
                    level_str(c.handling_level),
                    fmt(c.confirmed_at),
                    // The deadline follows the level, whatever the sender computed.
                    fmt(deadline(c.confirmed_at, c.handling_level)),
                    i.crop,
                ],
            )?;
            record_history(&tx, key, PlatformStatus::Registered, &now, None)?;
            Some(())
        }
    };
    let stored = load_case(&tx, key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    Ok(match outcome {
        Some(()) => Stored::New(stored),
        None => Stored::Duplicate(stored),
    })
}

fn level_str(l: HandlingLevel) -> &'static str {
    l.as_str()
}

/// A stored level; anything else (never written by this service) reads as general.
fn parse_level(s: &str) -> HandlingLevel {
    HandlingLevel::parse(s).unwrap_or(HandlingLevel::General)
}

const SELECT: &str = "SELECT id, received_at, scenario, scenario_name, camera, camera_name, unit, location,
    department, workstation, level, first_seen_at, confirmed_at, deadline_at, confidence, status,
    dispatched_at, handling_at, closed_at, deliveries, COALESCE(length(snapshot), 0), COALESCE(length(crop), 0),
    reopened, escalated_to, (SELECT COUNT(*) FROM case_update u WHERE u.case_id = received.id),
    json_extract(body, '$.reported_by.user')
    FROM received";

fn row_to_case(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCase> {
    let status =
        PlatformStatus::parse(&r.get::<_, String>(15)?).unwrap_or(PlatformStatus::Registered);
    let deadline_at: String = r.get(13)?;
    let closed_at: Option<String> = r.get(18)?;
    let deadline = OffsetDateTime::parse(&deadline_at, &Rfc3339).ok();
    let now = OffsetDateTime::now_utc();
    let time_left_seconds = match deadline {
        Some(d) if !terminal(status) => Some((d - now).whole_seconds()),
        _ => None,
    };
    // A returned case was never the platform's to handle: it is not late.
    let overdue = match (deadline, &closed_at) {
        _ if status == PlatformStatus::Returned => false,
        (Some(d), Some(c)) => OffsetDateTime::parse(c, &Rfc3339).is_ok_and(|c| c > d),
        (Some(d), None) => now > d,
        (None, _) => false,
    };
    Ok(StoredCase {
        id: r.get(0)?,
        received_at: r.get(1)?,
        scenario: r.get(2)?,
        scenario_name: r.get(3)?,
        camera: r.get(4)?,
        camera_name: r.get(5)?,
        unit: r.get(6)?,
        location: r.get(7)?,
        department: r.get(8)?,
        workstation: r.get(9)?,
        handling_level: parse_level(&r.get::<_, String>(10)?),
        first_seen_at: r.get(11)?,
        confirmed_at: r.get(12)?,
        deadline_at,
        confidence: r.get(14)?,
        status,
        status_zh: status.name_zh().into(),
        dispatched_at: r.get(16)?,
        handling_at: r.get(17)?,
        closed_at,
        time_left_seconds,
        overdue,
        deliveries: r.get(19)?,
        snapshot_bytes: r.get(20)?,
        crop_bytes: r.get(21)?,
        reopened: r.get(22)?,
        escalated_to: r.get(23)?,
        updates: r.get(24)?,
        reported_by: r.get(25)?,
    })
}

fn load_case(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredCase>> {
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), params![id], row_to_case)
        .optional()
}

fn load_cases(
    db: &Mutex<Connection>,
    status: Option<PlatformStatus>,
    open_only: bool,
    limit: u32,
) -> rusqlite::Result<Vec<StoredCase>> {
    let conn = db.lock().unwrap_or_else(|p| p.into_inner());
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE (?1 IS NULL OR status = ?1) AND (?2 = 0 OR status NOT IN ('closed', 'returned'))
         ORDER BY received_at DESC, id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![status.map(PlatformStatus::as_str), open_only, limit],
        row_to_case,
    )?;
    rows.collect()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only cases in this status.
    status: Option<PlatformStatus>,
    /// At most this many (default 200, at most 1000), newest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/cases",
    tag = "cases",
    params(ListParams),
    responses(
        (status = 200, description = "Cases, newest first", body = [StoredCase]),
        (status = 400, description = "Bad query", body = Problem),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = q.limit.unwrap_or(PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("limit must be within 1..={MAX_PAGE_LIMIT}"),
        );
    }
    match tokio::task::spawn_blocking(move || load_cases(&state.db, q.status, false, limit)).await {
        Ok(Ok(cases)) => axum::Json(cases).into_response(),
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

fn overdue_cases(db: &Mutex<Connection>) -> rusqlite::Result<Vec<StoredCase>> {
    let mut cases = load_cases(db, None, true, MAX_PAGE_LIMIT)?;
    cases.retain(|c| c.overdue);
    // Latest first: the most overdue at the top.
    cases.sort_by_key(|c| c.time_left_seconds.unwrap_or(0));
    Ok(cases)
}

#[utoipa::path(
    get,
    path = "/api/v1/cases/overdue",
    tag = "cases",
    description = "Open cases past their 103060 deadline, the latest first.",
    responses(
        (status = 200, description = "Overdue open cases", body = [StoredCase]),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
async fn overdue(State(state): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || overdue_cases(&state.db)).await {
        Ok(Ok(cases)) => axum::Json(cases).into_response(),
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}",
    tag = "cases",
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case", body = StoredCase),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 404, description = "No such case", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
async fn get_case(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    let db = state.db.clone();
    let found = tokio::task::spawn_blocking(move || {
        load_case(&db.lock().unwrap_or_else(|p| p.into_inner()), &id)
    })
    .await;
    match found {
        Ok(Ok(Some(c))) => axum::Json(c).into_response(),
        Ok(Ok(None)) => problem(StatusCode::NOT_FOUND, "no such case"),
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/status",
    tag = "cases",
    description = "Moves a case along: 立案 → 派遣 → 处置 → 结案 (statuses are not skipped), 立案 or 派遣 → 退回, and 核查 → 结案 once the camera verified it (核查 itself comes from the pipeline's updates).",
    params(("id" = String, Path, description = "Case id")),
    request_body(content = StatusChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The case in its new status", body = StoredCase),
        (status = 400, description = "Body is not JSON", body = Problem),
        (status = 401, description = "Missing or wrong bearer token", body = Problem),
        (status = 404, description = "No such case", body = Problem),
        (status = 409, description = "Not a status the case may move to now", body = Problem),
        (status = 422, description = "Not a status change", body = Problem),
        (status = 503, description = "Storage unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
async fn advance(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let change: StatusChange = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    if change
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("note over {MAX_NOTE_CHARS} characters"),
        );
    }
    let db = state.db.clone();
    let result =
        tokio::task::spawn_blocking(move || -> rusqlite::Result<Result<StoredCase, Response>> {
            let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(case) = load_case(&tx, &id)? else {
                return Ok(Err(problem(StatusCode::NOT_FOUND, "no such case")));
            };
            if !allowed_next(case.status).contains(&change.status) {
                return Ok(Err(not_allowed(case.status, change.status)));
            }
            set_status(&tx, &id, change.status, change.note.as_deref())?;
            let updated = load_case(&tx, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            tx.commit()?;
            Ok(Ok(updated))
        })
        .await;
    match result {
        Ok(Ok(Ok(c))) => {
            tracing::info!(case = %c.id, status = c.status.as_str(), status_zh = c.status_zh, overdue = c.overdue, "case status changed");
            axum::Json(c).into_response()
        }
        Ok(Ok(Err(r))) => r,
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

/// The 409 for a status change [`allowed_next`] does not allow.
fn not_allowed(from: PlatformStatus, to: PlatformStatus) -> Response {
    let next: Vec<&str> = allowed_next(from).iter().map(|s| s.as_str()).collect();
    let next = if next.is_empty() {
        "none (it is settled)".to_owned()
    } else {
        next.join(" or ")
    };
    problem(
        StatusCode::CONFLICT,
        format!(
            "case is {} ({}); it cannot move to {}; the next status is {next}",
            from.as_str(),
            from.name_zh(),
            to.as_str(),
        ),
    )
}

/// Moves a case to `status`, stamps the status's time column, and records the change in the
/// case's history (and so in the status feed).
fn set_status(
    tx: &Connection,
    id: &str,
    status: PlatformStatus,
    note: Option<&str>,
) -> rusqlite::Result<()> {
    let now = now_rfc3339();
    let column = match status {
        PlatformStatus::Dispatched => Some("dispatched_at"),
        PlatformStatus::Handling => Some("handling_at"),
        PlatformStatus::Closed => Some("closed_at"),
        _ => None,
    };
    match column {
        Some(column) => tx.execute(
            &format!("UPDATE received SET status = ?2, {column} = ?3 WHERE id = ?1"),
            params![id, status.as_str(), now],
        )?,
        None => tx.execute(
            "UPDATE received SET status = ?2 WHERE id = ?1",
            params![id, status.as_str()],
        )?,
    };
    record_history(tx, id, status, &now, note)
}

/// One row of the case's history: an event of the status feed.
fn record_history(
    tx: &Connection,
    id: &str,
    status: PlatformStatus,
    at: &str,
    note: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO case_history (case_id, status, at, note) VALUES (?1, ?2, ?3, ?4)",
        params![id, status.as_str(), at, note],
    )?;
    Ok(())
}

/// Why a storage call off the runtime failed.
#[derive(Debug, thiserror::Error)]
enum StorageError {
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
    #[error("storage task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs `f` with the connection on a blocking thread: SQLite calls block (fsync, busy waits).
async fn blocking<T: Send + 'static>(
    db: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    let db = db.clone();
    let result =
        tokio::task::spawn_blocking(move || f(&mut db.lock().unwrap_or_else(|p| p.into_inner())))
            .await?;
    Ok(result?)
}

async fn image(state: AppState, id: String, column: &'static str) -> Response {
    let db = state.db.clone();
    let found = tokio::task::spawn_blocking(move || {
        let conn = db.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            &format!("SELECT {column} FROM received WHERE id = ?1"),
            params![id],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
    })
    .await;
    match found {
        Ok(Ok(Some(Some(jpeg)))) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(Ok(_)) => problem(StatusCode::NOT_FOUND, "no such case or no image"),
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e),
    }
}

async fn snapshot(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    image(state, id, "snapshot").await
}

async fn crop(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    image(state, id, "crop").await
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// "12:04 left" or "overdue 3:10".
fn time_left_text(seconds: i64) -> String {
    let a = seconds.unsigned_abs();
    let text = format!("{}:{:02}", a / 60, a % 60);
    if seconds >= 0 {
        format!("剩余 {text} left")
    } else {
        format!("超时 overdue {text}")
    }
}

async fn board(State(state): State<AppState>) -> Response {
    let db = state.db.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        Ok::<_, rusqlite::Error>((
            load_cases(&db, None, true, MAX_PAGE_LIMIT)?,
            load_cases(&db, None, false, PAGE_LIMIT)?,
        ))
    })
    .await;
    let (open, recent) = match loaded {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return unavailable(e),
        Err(e) => return unavailable(e),
    };
    // Open cases by unit, then department; the least time left first within each.
    let mut groups: BTreeMap<(&str, &str), Vec<&StoredCase>> = BTreeMap::new();
    for c in &open {
        groups
            .entry((c.unit.as_str(), c.department.as_str()))
            .or_default()
            .push(c);
    }
    let overdue_count = open.iter().filter(|c| c.overdue).count();
    let mut board = String::new();
    for ((unit, department), mut cases) in groups {
        cases.sort_by_key(|c| c.time_left_seconds.unwrap_or(i64::MAX));
        board.push_str(&format!(
            "<h3>{} · {} <small>({} open)</small></h3><table><thead><tr><th>snapshot</th><th>scenario</th><th>camera</th><th>status</th><th>level</th><th>deadline</th><th>time left</th><th>核查不通过 reopened</th><th>督办 escalated to</th><th>id</th></tr></thead><tbody>\n",
            escape_html(unit),
            escape_html(department),
            cases.len()
        ));
        for c in cases {
            let id = escape_html(&c.id);
            board.push_str(&format!(
                "<tr class=\"{cls}\"><td><a href=\"/cases/{id}/snapshot.jpg\"><img src=\"/cases/{id}/snapshot.jpg\" alt=\"snapshot\" width=\"240\"></a></td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"left\">{}</td><td class=\"reopened\">{}</td><td class=\"escalated\">{}</td><td><code>{id}</code></td></tr>\n",
                escape_html(&c.scenario_name),
                escape_html(&c.camera_name),
                escape_html(&c.status_zh),
                level_str(c.handling_level),
                escape_html(&c.deadline_at),
                c.time_left_seconds.map(time_left_text).unwrap_or_default(),
                c.reopened,
                escape_html(c.escalated_to.as_deref().unwrap_or("")),
                cls = if c.overdue { "overdue" } else { "open" },
            ));
        }
        board.push_str("</tbody></table>\n");
    }
    if open.is_empty() {
        board.push_str("<p>No open cases. 无待办案件。</p>");
    }
    let mut rows = String::new();
    for c in &recent {
        let id = escape_html(&c.id);
        rows.push_str(&format!(
            "<tr><td><a href=\"/cases/{id}/snapshot.jpg\">snapshot</a>{crop}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{id}</code></td></tr>\n",
            escape_html(&c.scenario_name),
            escape_html(&c.unit),
            escape_html(&c.status_zh),
            escape_html(&c.confirmed_at),
            c.confidence,
            c.deliveries,
            c.reopened,
            escape_html(c.escalated_to.as_deref().unwrap_or("")),
            if c.updates > 0 {
                format!("<a href=\"/api/v1/cases/{id}/updates\">{}</a>", c.updates)
            } else {
                "0".into()
            },
            crop = if c.crop_bytes > 0 {
                format!(" · <a href=\"/cases/{id}/crop.jpg\">crop</a>")
            } else {
                String::new()
            },
        ));
    }
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>gridwatch dispatch board</title><style>body{{font-family:sans-serif;margin:1em}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}\
         tr.overdue td.left{{color:#b00;font-weight:bold}}</style></head>\
         <body><h1>派单看板 · Dispatch board</h1><p id=\"summary\">{} open case(s), {} overdue (103060). API: <a href=\"{CASES_PATH}\">{CASES_PATH}</a> · \
         <a href=\"/api/v1/cases/overdue\">overdue</a> · <a href=\"{STATUS_EVENTS_PATH}\">status feed</a> · <a href=\"{OPENAPI_PATH}\">OpenAPI</a></p>\
         <h2>Open cases by unit and department · 按单元和部门的待办案件</h2>{board}\
         <h2>Received · 最近接收</h2><table><thead><tr><th>images</th><th>scenario</th><th>unit</th><th>status</th><th>confirmed</th><th>confidence</th><th>POSTs</th><th>reopened</th><th>督办</th><th>updates</th><th>id</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>",
        open.len(),
        overdue_count,
    ))
    .into_response()
}
