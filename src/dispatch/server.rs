//! The reference dispatch receiver (`gridwatch dispatch-server`): an axum service that stores
//! cases idempotently by `Idempotency-Key` in SQLite and lists them, with snapshots, on a page.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const CASES_PATH: &str = "/api/v1/cases";
/// Cases carry a JPEG or two; anything far larger is not a case.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const MAX_KEY_CHARS: usize = 128;
const PAGE_LIMIT: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver database {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: rusqlite::Error,
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
}

#[derive(Clone)]
struct AppState {
    db: Arc<Mutex<Connection>>,
    token: Option<Arc<str>>,
}

/// One stored case, as listed by `GET /api/v1/cases`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StoredCase {
    pub id: String,
    pub received_at: String,
    pub scenario: String,
    pub camera: String,
    pub unit: String,
    pub first_seen_at: String,
    pub confidence: f64,
    /// POSTs received with this key (the first plus idempotent repeats).
    pub deliveries: i64,
    pub snapshot_bytes: i64,
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
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.execute_batch(
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
        );",
    )
    .map_err(err)?;
    Ok(conn)
}

/// The receiver's routes over the database at `db_path`.
pub fn router(db_path: &Path, token: Option<String>) -> Result<Router, ReceiverError> {
    let state = AppState {
        db: Arc::new(Mutex::new(open(db_path)?)),
        token: token.map(Arc::from),
    };
    Ok(Router::new()
        .route("/", get(index))
        .route(CASES_PATH, post(intake).get(list))
        .route("/cases/{id}/snapshot.jpg", get(snapshot))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state))
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Receiver {
    pub async fn bind(
        addr: &str,
        db_path: &Path,
        token: Option<String>,
    ) -> Result<Self, ReceiverError> {
        let router = router(db_path, token)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ReceiverError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReceiverError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ReceiverError::Serve)
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn authorised(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.as_bytes() == token.as_bytes())
}

fn text_at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(|x| x.as_str()).unwrap_or("")
}

async fn intake(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorised(&state, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key header is required",
        );
    };
    if key.len() > MAX_KEY_CHARS {
        return problem(StatusCode::BAD_REQUEST, "Idempotency-Key is too long");
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body must be a JSON object",
        );
    };
    if obj.get("id").and_then(|v| v.as_str()) != Some(key) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body `id` must equal the Idempotency-Key",
        );
    }
    let snapshot = value
        .pointer("/snapshot/data_base64")
        .and_then(|v| v.as_str())
        .map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b));
    let snapshot = match snapshot {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(_)) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "snapshot.data_base64 is not base64",
            );
        }
        None => None,
    };
    let sha = hex::encode(Sha256::digest(&body));
    let key = key.to_owned();
    let text = String::from_utf8_lossy(&body).into_owned();
    let db = state.db.clone();
    let result = tokio::task::spawn_blocking(move || -> rusqlite::Result<(StatusCode, &'static str)> {
        let conn = db.lock().unwrap_or_else(|p| p.into_inner());
        let existing: Option<String> = conn
            .query_row("SELECT body_sha256 FROM received WHERE id = ?1", params![key], |r| r.get(0))
            .optional()?;
        match existing {
            Some(s) if s == sha => {
                conn.execute("UPDATE received SET deliveries = deliveries + 1 WHERE id = ?1", params![key])?;
                Ok((StatusCode::OK, "duplicate"))
            }
            Some(_) => Ok((StatusCode::UNPROCESSABLE_ENTITY, "conflict")),
            None => {
                let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                conn.execute(
                    "INSERT INTO received (id, received_at, body_sha256, body, scenario, camera, unit, first_seen_at, confidence, snapshot)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        key,
                        now,
                        sha,
                        text,
                        text_at(&value, "/scenario/id"),
                        text_at(&value, "/camera/id"),
                        text_at(&value, "/unit/name"),
                        text_at(&value, "/first_seen_at"),
                        value.get("confidence").and_then(|c| c.as_f64()).unwrap_or(0.0),
                        snapshot,
                    ],
                )?;
                Ok((StatusCode::CREATED, "stored"))
            }
        }
    })
    .await;
    match result {
        Ok(Ok((StatusCode::UNPROCESSABLE_ENTITY, _))) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used with a different payload",
        ),
        Ok(Ok((status, outcome))) => (
            status,
            axum::Json(serde_json::json!({ "outcome": outcome })),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "receiver database write failed");
            problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn load_cases(db: &Mutex<Connection>) -> rusqlite::Result<Vec<StoredCase>> {
    let conn = db.lock().unwrap_or_else(|p| p.into_inner());
    let mut stmt = conn.prepare(
        "SELECT id, received_at, scenario, camera, unit, first_seen_at, confidence, deliveries, COALESCE(length(snapshot), 0)
         FROM received ORDER BY received_at DESC, id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![PAGE_LIMIT], |r| {
        Ok(StoredCase {
            id: r.get(0)?,
            received_at: r.get(1)?,
            scenario: r.get(2)?,
            camera: r.get(3)?,
            unit: r.get(4)?,
            first_seen_at: r.get(5)?,
            confidence: r.get(6)?,
            deliveries: r.get(7)?,
            snapshot_bytes: r.get(8)?,
        })
    })?;
    rows.collect()
}

async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorised(&state, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match tokio::task::spawn_blocking(move || load_cases(&state.db)).await {
        Ok(Ok(cases)) => axum::Json(cases).into_response(),
        _ => problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
    }
}

async fn snapshot(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    let db = state.db.clone();
    let found = tokio::task::spawn_blocking(move || {
        let conn = db.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT snapshot FROM received WHERE id = ?1",
            params![id],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
    })
    .await;
    match found {
        Ok(Ok(Some(Some(jpeg)))) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(Ok(_)) => problem(StatusCode::NOT_FOUND, "no such case or no snapshot"),
        _ => problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn index(State(state): State<AppState>) -> Response {
    let cases = match tokio::task::spawn_blocking(move || load_cases(&state.db)).await {
        Ok(Ok(c)) => c,
        _ => return problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
    };
    let mut rows = String::new();
    for c in &cases {
        let id = escape_html(&c.id);
        rows.push_str(&format!(
            "<tr><td><a href=\"/cases/{id}/snapshot.jpg\"><img src=\"/cases/{id}/snapshot.jpg\" alt=\"snapshot\" width=\"320\"></a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td><code>{id}</code></td></tr>\n",
            escape_html(&c.scenario),
            escape_html(&c.camera),
            escape_html(&c.unit),
            escape_html(&c.first_seen_at),
            c.confidence,
            c.deliveries,
        ));
    }
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>gridwatch dispatch receiver</title><style>body{{font-family:sans-serif;margin:1em}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}</style></head>\
         <body><h1>Dispatch receiver · 派单接收</h1><p>{} case(s), newest first. JSON: <a href=\"{CASES_PATH}\">{CASES_PATH}</a></p>\
         <table><thead><tr><th>snapshot</th><th>scenario</th><th>camera</th><th>unit</th><th>first seen</th><th>confidence</th><th>POSTs</th><th>id</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>",
        cases.len()
    ))
    .into_response()
}
