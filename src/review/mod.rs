//! The review console (`[review]`, served by `gridwatch run`): video patrol staff confirm or
//! reject the cases the pipeline holds for review, watch the camera groups on the patrol wall,
//! follow recent cases and export reviewed frames as training data. One axum router over the
//! outbox database; the page and its script are embedded in the binary.
//!
//! Data flows one way: the case stage stores held cases and tells the [`ReviewHub`]; the console
//! decides on them in the outbox (conditional UPDATE: the first reviewer wins), wakes delivery,
//! and hands suppressions to the case stage through [`Suppressions`]. The patrol wall reads the
//! [`LatestFrames`] the scenario thread fills and the camera registry.

// Handlers return a ready-made response as their error arm (401, 403, 400 …); it is built once
// per request at most, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod export;
mod live;
pub mod settings;
mod stats;
pub mod store;
pub mod wall;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use uuid::Uuid;

use crate::area::Area;
use crate::cases::evidence::EvidenceError;
use crate::cases::outbox::OutboxError;
use crate::cases::routing::Routing;
use crate::cases::tiers::Suppressions;
use crate::ingest::status::CameraRegistry;
use crate::scenarios::catalog::Catalog;
use crate::telemetry;
use auth::{Credential, Role, User};
use settings::ReviewSettings;
use store::{QueueFilter, ReviewStore};

pub use wall::LatestFrames;

/// Longest remark kept.
pub const MAX_REMARK_CHARS: usize = 1000;
/// Longest suppression a reviewer may set: a week.
pub const MAX_SUPPRESS_MINUTES: u32 = 7 * 24 * 60;
const DEFAULT_HISTORY: u32 = 100;
const MAX_HISTORY: u32 = 1000;

/// SQLite calls of the console's requests running at once. The store is one connection behind
/// a mutex, so more threads would only wait for it; the rest of a flood waits as futures.
const MAX_STORE_CALLS: usize = 4;
/// Password hashes (sign-in, account changes) at once: argon2 takes tens of milliseconds of a
/// core on purpose, and the cores belong to inference.
const MAX_PASSWORD_HASHES: usize = 2;
/// Wall pictures drawn and encoded at once.
const MAX_WALL_ENCODERS: usize = 2;
/// Exports at once; another one asked for meanwhile gets 429 (each holds the whole dataset in
/// memory).
const MAX_EXPORTS: usize = 1;
/// Trainings at once: each runs the detector over every label of a zone (seconds to minutes of
/// CPU beside the pipeline).
const MAX_TRAININGS: usize = 1;
/// Statistics queries and reports at once: each scans the period's cases on a core.
const MAX_REPORTS: usize = 1;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const LIVE_JS: &str = include_str!("assets/live.js");

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("review store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("case JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("review console I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no random source: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("invalid input: expected {0}")]
    Invalid(String),
    #[error("no such case")]
    NotFound,
    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),
    #[error(transparent)]
    Render(#[from] crate::stats::render::RenderError),
    #[error("already {decision} by {by}")]
    AlreadyHandled {
        decision: String,
        by: String,
        at: String,
    },
    #[error("the case is {0}, no longer awaiting review")]
    Handled(String),
    #[error("review console: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

/// Tells open consoles that the queue changed (server-sent events); cheap to clone.
#[derive(Clone)]
pub struct ReviewHub {
    tx: broadcast::Sender<String>,
    closing: Arc<watch::Sender<bool>>,
}

impl Default for ReviewHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(256).0,
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

impl ReviewHub {
    /// `what` changed (`held`, `confirmed`, `rejected`, …); nobody listening is fine.
    pub fn notify(&self, what: &str) {
        let _ = self.tx.send(what.to_owned());
    }

    /// Ends every open event stream, so that the server's graceful shutdown is not held open.
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }
}

/// What the console reads of a configuration: the key area, the scenario catalog, its own
/// settings, and the routing rules (a corrected case is re-routed). Swapped whole by a reload.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub area: Arc<Area>,
    pub catalog: Arc<Catalog>,
    pub settings: ReviewSettings,
    pub routing: Routing,
    /// 103060 limits, for the deadlines the console shows and a reviewer's level change.
    pub deadlines: crate::cases::settings::DeadlineSettings,
    /// Targets whose platform takes case updates.
    pub update_targets: Vec<String>,
}

/// The console's configuration in force now; the run swaps it on reload.
pub type SharedConsoleConfig = Arc<arc_swap::ArcSwap<ConsoleConfig>>;

/// Trains a zone state's classifier on the labels staff set (the admin's "train" button). The
/// console owns no model: the binary wires in `gridwatch learn`'s trainer. Blocking.
pub trait ZoneTrainer: Send + Sync {
    /// Trains, saves the card and has the pipeline load it; the lines say what came out.
    /// `Err`: why not, for a person (too few labels, below the quality bar with the numbers).
    fn train(&self, camera: &str, zone: &str, state: &str) -> Result<Vec<String>, String>;
}

impl std::fmt::Debug for dyn ZoneTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZoneTrainer")
    }
}

/// Everything the console's routes share.
#[derive(Clone)]
pub struct ReviewState {
    pub store: Arc<ReviewStore>,
    /// Follows reloads, so the wall shows the cameras configured now.
    pub config: SharedConsoleConfig,
    pub cameras: CameraRegistry,
    pub latest: LatestFrames,
    pub suppressions: Suppressions,
    pub hub: ReviewHub,
    /// Wakes delivery after a confirmation (absent: delivery polls).
    pub wake: Option<Arc<Notify>>,
    /// Cluster mode: which node owns each camera group (the wall shows it).
    pub cluster: Option<crate::cluster::Ownership>,
    /// Trains zone states from the console (absent: the button answers 503).
    pub trainer: Option<Arc<dyn ZoneTrainer>>,
    /// The cameras' live streams (no hub: the wall shows stills).
    pub live: crate::live::LiveHubs,
    /// Where the wall's staff reports go (the case stage).
    pub reports: crate::cases::ReportInbox,
}

impl ReviewState {
    fn settings(&self) -> ReviewSettings {
        self.config.load().settings.clone()
    }
}

/// Creates the `admin` account at the first start: with the password from the configured
/// environment variable, or a generated one that is returned to be shown once.
pub fn bootstrap_admin(
    store: &ReviewStore,
    settings: &ReviewSettings,
) -> Result<Option<String>, ReviewError> {
    if store.user_count()? > 0 {
        return Ok(None);
    }
    match std::env::var(&settings.admin_password_env) {
        Ok(p) if !p.is_empty() => {
            store.set_user("admin", Role::Admin, &p)?;
            Ok(None)
        }
        _ => {
            let p = auth::random_token(9)?;
            store.set_user("admin", Role::Admin, &p)?;
            Ok(Some(p))
        }
    }
}

/// The router's state: what the routes share, and the bounds on their blocking work (one set
/// per router).
#[derive(Clone)]
struct Console {
    state: ReviewState,
    blocking: Blocking,
}

impl FromRef<Console> for ReviewState {
    fn from_ref(c: &Console) -> Self {
        c.state.clone()
    }
}

impl FromRef<Console> for Blocking {
    fn from_ref(c: &Console) -> Self {
        c.blocking.clone()
    }
}

/// The console's blocking work: SQLite (every authenticated request looks up its session or
/// token), argon2, JPEG encoding and export archives. The console is served on the runtime that
/// also renews the cluster lease and runs delivery, so none of it may run on a runtime worker:
/// it runs on tokio's blocking pool, each kind bounded by its own semaphore. A permit is waited
/// for asynchronously and held by the blocking closure itself, so a request dropped meanwhile
/// (the client went away) does not free a slot that is still busy.
#[derive(Clone)]
struct Blocking {
    store: Arc<Semaphore>,
    hashing: Arc<Semaphore>,
    encoding: Arc<Semaphore>,
    exports: Arc<Semaphore>,
    training: Arc<Semaphore>,
    reports: Arc<Semaphore>,
}

impl Blocking {
    fn new() -> Self {
        Self {
            store: Arc::new(Semaphore::new(MAX_STORE_CALLS)),
            hashing: Arc::new(Semaphore::new(MAX_PASSWORD_HASHES)),
            encoding: Arc::new(Semaphore::new(MAX_WALL_ENCODERS)),
            exports: Arc::new(Semaphore::new(MAX_EXPORTS)),
            training: Arc::new(Semaphore::new(MAX_TRAININGS)),
            reports: Arc::new(Semaphore::new(MAX_REPORTS)),
        }
    }

    /// Runs SQLite work through the store.
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        off_runtime(acquire(&self.store).await?, f).await
    }

    /// Runs work that hashes or verifies a password.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        off_runtime(acquire(&self.hashing).await?, f).await
    }

    /// Runs a statistics query or report (each over its own read-only connection), at most
    /// [`MAX_REPORTS`] at a time; the rest wait.
    async fn report<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        off_runtime(acquire(&self.reports).await?, f).await
    }

    /// Runs the drawing and encoding of a wall picture.
    async fn encoding<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        off_runtime(acquire(&self.encoding).await?, f).await
    }

    /// Runs an export, or answers 429 at once while another one runs.
    async fn export<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        let Ok(permit) = self.exports.clone().try_acquire_owned() else {
            return Err(problem(
                StatusCode::TOO_MANY_REQUESTS,
                "an export is running; try again when it has finished",
            ));
        };
        off_runtime(permit, f).await
    }

    /// Runs a training (a detector pass per label: seconds to minutes), one at a time; 429
    /// while another one runs.
    async fn training<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, Response> {
        let Ok(permit) = self.training.clone().try_acquire_owned() else {
            return Err(problem(
                StatusCode::TOO_MANY_REQUESTS,
                "a training is running; try again when it has finished",
            ));
        };
        off_runtime(permit, f).await
    }
}

async fn acquire(permits: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Response> {
    // The semaphores are never closed; answer rather than panic if one ever is.
    permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
}

/// Runs `f` on the blocking pool, holding `permit` until it returns: its error becomes the
/// usual error response, a panic a 500.
async fn off_runtime<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    f: impl FnOnce() -> Result<T, ReviewError> + Send + 'static,
) -> Result<T, Response> {
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await;
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_response(e)),
        Err(e) => {
            tracing::error!(error = %e, "review console: a blocking task failed");
            Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    }
}

/// The console's routes.
pub fn router(state: ReviewState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/live.js", get(live_js))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/auth/tokens", post(new_token))
        .route("/api/v1/review/users", post(set_user))
        .route("/api/v1/review/meta", get(meta))
        .route("/api/v1/review/queue", get(queue))
        .route("/api/v1/review/events", get(events))
        .route("/api/v1/review/items/{id}", get(get_item))
        .route("/api/v1/review/items/{id}/snapshot.jpg", get(snapshot))
        .route("/api/v1/review/items/{id}/confirm", post(confirm))
        .route("/api/v1/review/items/{id}/reject", post(reject))
        .route("/api/v1/review/items/{id}/scenario", post(change_scenario))
        .route("/api/v1/review/items/{id}/remark", post(remark))
        .route("/api/v1/review/items/{id}/labels", post(label_case))
        .route("/api/v1/review/items/{id}/platform", get(platform_of))
        .route("/api/v1/review/items/{id}/level", post(set_level))
        .route("/api/v1/review/wall", get(wall_groups))
        .route("/api/v1/review/wall/{camera}/frame.jpg", get(wall_frame))
        .route("/api/v1/review/wall/{camera}/live", get(live::live_socket))
        .route("/api/v1/review/wall/{camera}/reports", post(live::report))
        .route(
            "/api/v1/review/wall/{camera}/zones/{zone}/labels",
            post(label_zone),
        )
        .route("/api/v1/review/cases", get(history))
        .route("/api/v1/review/suppressions", get(suppressions))
        .route("/api/v1/review/audit", get(audit_log))
        .route("/api/v1/review/export", get(export_dataset))
        .route("/api/v1/review/stats", get(stats::figures))
        .route("/api/v1/review/stats/cases", get(stats::cases))
        .route("/api/v1/review/stats/report", get(stats::report))
        .route("/assets/stats.js", get(stats::stats_js))
        .route("/assets/vendor/echarts.min.js", get(stats::echarts_js))
        .route("/api/v1/review/admin/train", post(train_zone_state))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Console {
            state,
            blocking: Blocking::new(),
        })
}

/// A bound console, ready to serve.
pub struct ReviewServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl ReviewServer {
    pub async fn bind(addr: &str, state: ReviewState) -> Result<Self, ReviewError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ReviewError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        // The queue depth gauge follows every change the hub hears of (counted on the blocking
        // pool, one count at a time).
        {
            let mut rx = state.hub.tx.subscribe();
            let store = state.store.clone();
            tokio::spawn(async move {
                loop {
                    let store = store.clone();
                    if let Ok(Ok(d)) =
                        tokio::task::spawn_blocking(move || store.queue_depth()).await
                    {
                        telemetry::review_queue_depth(d);
                    }
                    if let Err(broadcast::error::RecvError::Closed) = rx.recv().await {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            listener,
            router: router(state),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReviewError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ReviewError::Io)
    }
}

// ----- responses -----

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn unauthorised() -> Response {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "sign in, or send a valid bearer token",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn error_response(e: ReviewError) -> Response {
    match e {
        ReviewError::NotFound => problem(StatusCode::NOT_FOUND, "no such case"),
        ReviewError::AlreadyHandled { decision, by, at } => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "error": format!("already {decision} by {by}"),
                "decision": decision,
                "handled_by": by,
                "at": at,
            })),
        )
            .into_response(),
        ReviewError::Handled(state) => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "error": format!("the case is {state}, no longer awaiting review"),
                "decision": state,
            })),
        )
            .into_response(),
        ReviewError::Invalid(m) => problem(StatusCode::BAD_REQUEST, format!("expected {m}")),
        ReviewError::Stats(crate::stats::StatsError::Invalid(m)) => {
            problem(StatusCode::BAD_REQUEST, m)
        }
        other => {
            tracing::error!(error = %other, "review console failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "review storage unavailable",
            )
        }
    }
}

/// Who sent a request, and the session's CSRF token if it came with a cookie.
struct Caller {
    user: User,
    csrf: Option<String>,
    session: Option<String>,
}

/// Handlers take the caller as an extractor: a request that fails `authenticate` never
/// reaches them.
impl axum::extract::FromRequestParts<Console> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Console,
    ) -> Result<Self, Response> {
        authenticate(console, &parts.method, &parts.headers).await
    }
}

/// A caller with the admin role (403 otherwise).
struct Admin(Caller);

impl axum::extract::FromRequestParts<Console> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Console,
    ) -> Result<Self, Response> {
        let c = Caller::from_request_parts(parts, console).await?;
        admin_only(&c)?;
        Ok(Admin(c))
    }
}

/// Bearer token (API use, no CSRF) or session cookie (CSRF header required on anything that
/// changes state). The lookup runs on the blocking pool like every other store call; a request
/// without credentials is refused without one.
async fn authenticate(
    console: &Console,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    let (token, kind) = match auth::credential(headers) {
        Credential::Bearer(token) => (token, "api"),
        Credential::Session(token) => (token, "session"),
        Credential::None => return Err(unauthorised()),
    };
    let store = console.state.store.clone();
    let found = {
        let token = token.clone();
        console
            .blocking
            .store(move || store.token_user(&token, kind))
            .await?
    };
    let Some((user, csrf)) = found else {
        return Err(unauthorised());
    };
    if kind == "api" {
        return Ok(Caller {
            user,
            csrf: None,
            session: None,
        });
    }
    if auth::changes_state(method) {
        let given = auth::csrf_header(headers).unwrap_or("");
        let ok = csrf.as_deref().is_some_and(|c| auth::same_secret(given, c));
        if !ok {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token (X-CSRF-Token)",
            ));
        }
    }
    Ok(Caller {
        user,
        csrf,
        session: Some(token),
    })
}

fn admin_only(c: &Caller) -> Result<(), Response> {
    if c.user.role == Role::Admin {
        Ok(())
    } else {
        Err(problem(StatusCode::FORBIDDEN, "administrators only"))
    }
}

/// Case ids are UUIDs: anything else is refused before it reaches a query or a file name.
fn case_id(raw: &str) -> Result<String, Response> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| problem(StatusCode::BAD_REQUEST, "not a case id"))
}

/// A JSON body that may be empty (`{}` assumed).
fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn remark_text(r: Option<String>) -> Result<Option<String>, Response> {
    let r = r.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if r.as_ref()
        .is_some_and(|s| s.chars().count() > MAX_REMARK_CHARS)
    {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            format!("a remark has at most {MAX_REMARK_CHARS} characters"),
        ));
    }
    Ok(r)
}

fn scenario_info(s: &ReviewState, id: &str) -> Result<crate::scenarios::ScenarioInfo, Response> {
    s.config
        .load()
        .catalog
        .info(id)
        .ok_or_else(|| problem(StatusCode::BAD_REQUEST, format!("unknown scenario `{id}`")))
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                // MSE plays the live wall from a blob: URL; its socket is same-origin ('self').
                "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn jpeg(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, no-cache"),
        ],
        bytes,
    )
        .into_response()
}

// ----- pages -----

async fn index() -> Response {
    static_asset("text/html; charset=utf-8", INDEX_HTML)
}
async fn app_js() -> Response {
    static_asset("text/javascript; charset=utf-8", APP_JS)
}
async fn live_js() -> Response {
    static_asset("text/javascript; charset=utf-8", LIVE_JS)
}
async fn app_css() -> Response {
    static_asset("text/css; charset=utf-8", APP_CSS)
}

// ----- accounts -----

#[derive(Deserialize)]
struct LoginRequest {
    name: String,
    password: String,
}

async fn login(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON only: a cross-site form (text/plain) must not be able to sign a browser in.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the login as application/json",
        );
    }
    let Ok(req) = serde_json::from_slice::<LoginRequest>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "expected {\"name\", \"password\"}");
    };
    if req.name.chars().count() > store::MAX_NAME_CHARS
        || req.password.len() > store::MAX_PASSWORD_BYTES
    {
        return problem(StatusCode::BAD_REQUEST, "name or password too long");
    }
    let name = req.name;
    // In memory: no need to leave the worker for it.
    if s.store.locked_out(&name) {
        let store = s.store.clone();
        let _ = blocking
            .store(move || store.audit(&name, "login_locked_out", None, None))
            .await;
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins for this name; try again in a few minutes",
        );
    }
    // argon2 is slow on purpose: a bounded number at a time, on the blocking pool.
    let store = s.store.clone();
    let user = {
        let name = name.clone();
        blocking
            .hashing(move || store.login(&name, &req.password))
            .await
    };
    let user = match user {
        Ok(u) => u,
        Err(r) => return r,
    };
    let store = s.store.clone();
    let Some(user) = user else {
        let _ = blocking
            .store(move || store.audit(&name, "login_failed", None, None))
            .await;
        return problem(StatusCode::UNAUTHORIZED, "wrong name or password");
    };
    let ttl: Duration = s.settings().session_ttl();
    let session = blocking
        .store(move || {
            let t = store.new_session(&user, ttl)?;
            let _ = store.audit(&user.name, "login", None, None);
            Ok((user, t))
        })
        .await;
    let (user, (token, csrf)) = match session {
        Ok(v) => v,
        Err(r) => return r,
    };
    let cookie = auth::session_cookie(&token, ttl.as_secs() as i64);
    (
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({ "name": user.name, "role": user.role, "csrf": csrf })),
    )
        .into_response()
}

async fn logout(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
) -> Response {
    let store = s.store.clone();
    let ended = blocking
        .store(move || {
            if let Some(token) = &c.session {
                store.end_session(token)?;
            }
            let _ = store.audit(&c.user.name, "logout", None, None);
            Ok(())
        })
        .await;
    if let Err(r) = ended {
        return r;
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::clear_cookie())],
    )
        .into_response()
}

async fn me(c: Caller) -> Response {
    axum::Json(json!({ "name": c.user.name, "role": c.user.role, "csrf": c.csrf })).into_response()
}

async fn new_token(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
) -> Response {
    let store = s.store.clone();
    let token = blocking
        .store(move || {
            let token = store.new_api_token(&c.user)?;
            let _ = store.audit(&c.user.name, "api_token", None, None);
            Ok(token)
        })
        .await;
    match token {
        Ok(token) => (StatusCode::CREATED, axum::Json(json!({ "token": token }))).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct UserRequest {
    name: String,
    role: String,
    password: String,
}

async fn set_user(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    Admin(c): Admin,
    body: Bytes,
) -> Response {
    let req: UserRequest = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(role) = Role::parse(&req.role) else {
        return problem(StatusCode::BAD_REQUEST, "role is `reviewer` or `admin`");
    };
    let store = s.store.clone();
    // Hashes the new password.
    let user = blocking
        .hashing(move || {
            let u = store.set_user(&req.name, role, &req.password)?;
            let _ = store.audit(
                &c.user.name,
                "set_user",
                None,
                Some(&format!("{} ({})", u.name, role.as_str())),
            );
            Ok(u)
        })
        .await;
    match user {
        Ok(u) => (StatusCode::CREATED, axum::Json(u)).into_response(),
        Err(r) => r,
    }
}

// ----- queue -----

async fn meta(State(s): State<ReviewState>, _caller: Caller) -> Response {
    let c = s.config.load_full();
    let scenarios: Vec<_> = c
        .catalog
        .ids()
        .filter_map(|id| c.catalog.info(id))
        .map(|i| json!({ "id": i.id, "name_zh": i.name_zh, "name_en": i.name_en }))
        .collect();
    axum::Json(json!({
        "centre": c.area.centre.name,
        "rotation_seconds": s.settings().rotation_seconds,
        "units": c.area.units.iter().map(|u| json!({ "id": u.id, "name": u.name })).collect::<Vec<_>>(),
        "groups": c.area.groups.iter().map(|g| json!({ "id": g.id, "name": g.name, "unit": g.unit })).collect::<Vec<_>>(),
        "scenarios": scenarios,
    }))
    .into_response()
}

async fn queue(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    Query(filter): Query<QueueFilter>,
) -> Response {
    let store = s.store.clone();
    match blocking.store(move || store.queue(&filter)).await {
        Ok(items) => axum::Json(items).into_response(),
        Err(r) => r,
    }
}

async fn events(State(s): State<ReviewState>, _caller: Caller) -> Response {
    let rx = s.hub.tx.subscribe();
    let closing = s.hub.closing.subscribe();
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(SseEvent::default().event("queue").data("hello"))
    });
    let rest = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        let what = tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => "lagged".to_owned(),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = closing.wait_for(|c| *c) => return None,
        };
        Some((
            Ok::<_, Infallible>(SseEvent::default().event("queue").data(what)),
            (rx, closing),
        ))
    });
    use futures_util::StreamExt as _;
    Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn get_item(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let id = match case_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = s.store.clone();
    match blocking.store(move || store.item(&id)).await {
        Ok(Some(item)) => axum::Json(item).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(r) => r,
    }
}

async fn snapshot(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let id = match case_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = s.store.clone();
    match blocking.store(move || store.snapshot(&id)).await {
        Ok(Some(bytes)) => jpeg(bytes),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    #[serde(default)]
    scenario: Option<String>,
    #[serde(default)]
    remark: Option<String>,
}

async fn confirm(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (id, req) = match case_id(&id).and_then(|id| Ok((id, json_body::<ConfirmRequest>(&body)?)))
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let remark = match remark_text(req.remark) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let info = match req
        .scenario
        .as_deref()
        .map(|sc| scenario_info(&s, sc))
        .transpose()
    {
        Ok(i) => i,
        Err(r) => return r,
    };
    let config = s.config.load_full();
    let store = s.store.clone();
    let user = c.user.clone();
    let decision = {
        let id = id.clone();
        blocking
            .store(move || {
                let reroute =
                    |case: &crate::cases::Case, scenario: &str| reroute(&config, case, scenario);
                store.confirm(&id, &user, info.as_ref(), remark.as_deref(), &reroute)
            })
            .await
    };
    match decision {
        Ok(d) => {
            telemetry::review_decision("confirmed");
            tracing::info!(case = %id, reviewer = %c.user.name, scenario = %d.scenario, "case confirmed by a reviewer: dispatching");
            if let Some(w) = &s.wake {
                w.notify_one();
            }
            s.hub.notify("confirmed");
            axum::Json(d).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    suppress_minutes: Option<u32>,
}

async fn reject(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (id, req) = match case_id(&id).and_then(|id| Ok((id, json_body::<RejectRequest>(&body)?))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let remark = match remark_text(req.remark) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req
        .suppress_minutes
        .is_some_and(|m| m > MAX_SUPPRESS_MINUTES)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("suppress_minutes is at most {MAX_SUPPRESS_MINUTES}"),
        );
    }
    let store = s.store.clone();
    let user = c.user.clone();
    let learning = s.settings().object_learning();
    let decision = {
        let id = id.clone();
        blocking
            .store(move || {
                store.reject(
                    &id,
                    &user,
                    remark.as_deref(),
                    req.suppress_minutes,
                    learning,
                )
            })
            .await
    };
    match decision {
        Ok((d, suppressions)) => {
            telemetry::review_decision("rejected");
            tracing::info!(case = %id, reviewer = %c.user.name, suppressions = suppressions.len(), "case rejected by a reviewer (false positive)");
            for sup in suppressions {
                if let Some(object) = sup.object {
                    telemetry::object_suppression_learned(&sup.scenario);
                    tracing::info!(case = %id, camera = %sup.camera, zone = %sup.zone, scenario = %sup.scenario, ?object, "object suppressed there: rejected again at the same place");
                }
                s.suppressions.add(sup);
            }
            s.hub.notify("rejected");
            axum::Json(d).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    #[serde(default)]
    scenario: String,
}

async fn change_scenario(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (id, req) = match case_id(&id).and_then(|id| Ok((id, json_body::<ScenarioRequest>(&body)?)))
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let info = match scenario_info(&s, &req.scenario) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let config = s.config.load_full();
    let store = s.store.clone();
    let hub = s.hub.clone();
    let changed = blocking
        .store(move || {
            let reroute =
                |case: &crate::cases::Case, scenario: &str| reroute(&config, case, scenario);
            store.change_scenario(&id, &c.user, &info, &reroute)?;
            hub.notify("changed");
            store.item(&id)
        })
        .await;
    match changed {
        Ok(Some(item)) => axum::Json(item).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RemarkRequest {
    #[serde(default)]
    remark: Option<String>,
}

async fn remark(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (id, req) = match case_id(&id).and_then(|id| Ok((id, json_body::<RemarkRequest>(&body)?))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let text = match remark_text(req.remark) {
        Ok(Some(t)) => t,
        Ok(None) => return problem(StatusCode::BAD_REQUEST, "an empty remark"),
        Err(r) => return r,
    };
    let store = s.store.clone();
    match blocking
        .store(move || store.remark(&id, &c.user, &text))
        .await
    {
        Ok(()) => {
            s.hub.notify("remark");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

/// A case's life on the platform: statuses, verification rounds, 103060 clock, updates.
async fn platform_of(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let id = match case_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = s.store.clone();
    let deadlines = s.config.load().deadlines.clone();
    match blocking
        .store(move || store.platform(&id, &deadlines))
        .await
    {
        Ok(Some(view)) => axum::Json(view).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such case"),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LevelRequest {
    /// `simple`, `general` or `difficult`.
    level: String,
}

/// A reviewer sets a case's 103060 level: its deadline follows and the platform is told.
async fn set_level(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (id, req) = match case_id(&id).and_then(|id| Ok((id, json_body::<LevelRequest>(&body)?))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(level) = crate::cases::HandlingLevel::parse(&req.level) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "level must be simple, general or difficult",
        );
    };
    let store = s.store.clone();
    let config = s.config.load_full();
    match blocking
        .store(move || {
            store.set_level(
                &id,
                level,
                &c.user,
                (&config.deadlines, &config.update_targets),
            )
        })
        .await
    {
        Ok(changed) => {
            if changed && let Some(w) = &s.wake {
                w.notify_one();
            }
            s.hub.notify("level");
            axum::Json(json!({ "changed": changed })).into_response()
        }
        Err(r) => r,
    }
}

/// A held case's dispatch targets under a corrected scenario, by the current rules; `None`
/// (keep its targets) when a reload removed its camera or zone.
fn reroute(
    config: &ConsoleConfig,
    case: &crate::cases::Case,
    scenario: &str,
) -> Option<Vec<String>> {
    let cam = config
        .area
        .cameras
        .iter()
        .find(|cam| cam.id == case.camera.id)?;
    let zone = cam.zones.iter().find(|z| z.id == case.zone.id)?;
    // Routed as at its confirmation, like the case stage routes.
    let when = crate::cases::route_moment(&config.area, case.confirmed_at.into());
    Some(
        config
            .routing
            .route(&case.unit.id, &zone.tags, scenario, Some(&when)),
    )
}

// ----- wall, history, suppressions, audit, export -----

async fn wall_groups(State(s): State<ReviewState>, _caller: Caller) -> Response {
    let statuses = s.cameras.snapshot();
    let config = s.config.load_full();
    let cluster = s.cluster.as_ref().map(|o| o.view());
    let owner_of = |group: &str| {
        cluster
            .as_ref()
            .and_then(|v| v.groups.iter().find(|g| g.id == group))
            .and_then(|g| g.owner.clone())
    };
    let groups: Vec<_> = config
        .area
        .groups
        .iter()
        .filter(|g| config.area.cameras.iter().any(|c| c.group == g.id))
        .map(|g| {
            let cameras: Vec<_> = config
                .area
                .cameras
                .iter()
                .filter(|c| c.group == g.id)
                .map(|c| {
                    let st = statuses.iter().find(|st| st.id == c.id);
                    json!({
                        "id": c.id,
                        "name": c.name,
                        "location": c.location,
                        "state": st.map(|st| st.state.as_str()).unwrap_or("unknown"),
                        "last_frame_at": st.and_then(|st| st.last_frame_at).and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                        "reconnects": st.map(|st| st.reconnects),
                        "frame_url": format!("/api/v1/review/wall/{}/frame.jpg", c.id),
                        // Live video when the stream is H.264; otherwise stills, and why.
                        "live": live_source(&s, &config, &c.id),
                        "live_url": s.live.settings().enabled.then(|| format!("/api/v1/review/wall/{}/live", c.id)),
                        // For "this zone shows X / clear" (zone-state labels).
                        "zones": c.zones.iter().map(|z| json!({
                            "id": z.id,
                            "name": z.name,
                            "polygon": z.polygon,
                            "scenarios": z.scenarios,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "id": g.id,
                "name": g.name,
                "unit": g.unit,
                "unit_name": config.area.unit(&g.unit).map(|u| u.name.clone()).unwrap_or_default(),
                "cameras": cameras,
                "owner_node": owner_of(&g.id),
            })
        })
        .collect();
    axum::Json(json!({
        "rotation_seconds": s.settings().rotation_seconds,
        "node": cluster.as_ref().map(|v| v.node_id.clone()),
        "groups": groups,
    }))
    .into_response()
}

/// What a camera's tile can show live.
fn live_source(s: &ReviewState, config: &ConsoleConfig, camera: &str) -> serde_json::Value {
    let index = config.area.cameras.iter().position(|c| c.id == camera);
    let source = match index
        .and_then(|i| s.live.hub(i))
        .filter(|h| h.camera() == camera)
    {
        _ if !s.live.settings().enabled => crate::live::LiveSource::Stills {
            reason: "live video is off ([live] enabled = false)".into(),
        },
        Some(h) => h.source(),
        None => crate::live::LiveSource::Waiting,
    };
    json!(source)
}

async fn wall_frame(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    UrlPath(camera): UrlPath<String>,
) -> Response {
    // The camera is looked up among the configured ones: the name never reaches a path.
    let config = s.config.load_full();
    let Some(index) = config.area.cameras.iter().position(|c| c.id == camera) else {
        return problem(StatusCode::NOT_FOUND, "no such camera");
    };
    let latest = s.latest.clone();
    let frame = blocking
        .encoding(move || {
            let cam = &config.area.cameras[index];
            let zones: Vec<&[[f64; 2]]> = cam.zones.iter().map(|z| z.polygon.as_slice()).collect();
            // The copy of a cached picture happens here too, off the runtime.
            Ok(latest
                .jpeg(index, &cam.id, &zones)?
                .map(|f| f.jpeg.as_ref().clone()))
        })
        .await;
    match frame {
        Ok(Some(bytes)) => jpeg(bytes),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no analysed frame yet"),
        Err(r) => r,
    }
}

/// Where a zone-state label or a training goes: the camera (its index) and zone, looked up
/// among the configured ones (names never reach a path), with `state` one of the zone's
/// scenarios; otherwise the answer to give (404, or 422 for a state the zone lacks).
fn state_zone<'a>(
    config: &'a ConsoleConfig,
    camera: &str,
    zone: &str,
    state: &str,
) -> Result<(usize, &'a crate::area::Zone), Response> {
    let Some(index) = config.area.cameras.iter().position(|c| c.id == camera) else {
        return Err(problem(StatusCode::NOT_FOUND, "no such camera"));
    };
    let Some(z) = config.area.cameras[index]
        .zones
        .iter()
        .find(|z| z.id == zone)
    else {
        return Err(problem(StatusCode::NOT_FOUND, "no such zone"));
    };
    if !z.scenarios.iter().any(|s| s == state) {
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the state must be one of the zone's scenarios",
        ));
    }
    Ok((index, z))
}

// An empty body is the default request, whose empty state no zone has.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ZoneLabelRequest {
    /// The scenario the zone's state stands for; one of the zone's scenarios.
    state: String,
    /// The state shows (`true`) or the zone is clear of it (`false`).
    present: bool,
}

/// "This zone shows X" / "clear" on the wall: a zone-state label on the camera's latest
/// analysed frame, kept losslessly for `gridwatch learn`.
async fn label_zone(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath((camera, zone)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let req = match json_body::<ZoneLabelRequest>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let config = s.config.load_full();
    let (index, z) = match state_zone(&config, &camera, &zone, &req.state) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let cam = &config.area.cameras[index];
    let latest = s.latest.clone();
    let png = blocking
        .encoding(move || {
            latest
                .png(index)
                .map_err(|e| ReviewError::Io(std::io::Error::other(e)))
        })
        .await;
    let png = match png {
        Ok(Some(p)) => p,
        Ok(None) => return problem(StatusCode::CONFLICT, "no analysed frame of this camera yet"),
        Err(r) => return r,
    };
    let store = s.store.clone();
    let (camera, state, present) = (cam.id.clone(), req.state, req.present);
    let zone = z.id.clone();
    let stored = blocking
        .store(move || {
            let label = store::NewZoneLabel {
                camera: &camera,
                zone: &zone,
                state: &state,
                present,
                frame_png: &png,
            };
            store.add_zone_label(&label, &c.user)
        })
        .await;
    match stored {
        Ok(id) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "id": id })),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// "This zone shows X" / "clear" on a case of the history: a zone-state label on the clean
/// frame the case kept, for `gridwatch learn --camera --zone --state`.
async fn label_case(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let req = match json_body::<ZoneLabelRequest>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let store = s.store.clone();
    let item = match blocking.store(move || store.item(&id)).await {
        Ok(Some(item)) => item,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such case"),
        Err(r) => return r,
    };
    // The case's zone as configured now.
    let config = s.config.load_full();
    if let Err(r) = state_zone(&config, &item.camera, &item.zone, &req.state) {
        return r;
    }
    let store = s.store.clone();
    let stored = blocking
        .store(move || store.label_case_frame(&item.id, &req.state, req.present, &c.user))
        .await;
    match stored {
        Ok(Some(id)) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "id": id })),
        )
            .into_response(),
        Ok(None) => problem(StatusCode::CONFLICT, "this case kept no clean frame"),
        Err(r) => r,
    }
}

// An empty body is the default request, whose empty camera is no camera.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TrainRequest {
    camera: String,
    zone: String,
    /// The scenario the state stands for; one of the zone's scenarios.
    state: String,
}

/// The admin's "train": `gridwatch learn --camera --zone --state` on the console's labels;
/// the card is saved and the pipeline reloads it. Refusals (too few labels, below the bar)
/// come back as 422 with the numbers; every attempt is audited.
async fn train_zone_state(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    Admin(c): Admin,
    body: Bytes,
) -> Response {
    let req = match json_body::<TrainRequest>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(trainer) = s.trainer.clone() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process does not train (run `gridwatch learn`)",
        );
    };
    let config = s.config.load_full();
    if let Err(r) = state_zone(&config, &req.camera, &req.zone, &req.state) {
        return r;
    }
    let store = s.store.clone();
    let outcome = blocking
        .training(move || {
            let outcome = trainer.train(&req.camera, &req.zone, &req.state);
            let detail = format!(
                "{} {} {}: {}",
                req.camera,
                req.zone,
                req.state,
                match &outcome {
                    Ok(lines) => lines.first().cloned().unwrap_or_default(),
                    Err(why) => format!("refused: {why}"),
                }
            );
            store.audit(&c.user.name, "train_zone_state", None, Some(&detail))?;
            Ok(outcome)
        })
        .await;
    match outcome {
        Ok(Ok(lines)) => {
            (StatusCode::CREATED, axum::Json(json!({ "lines": lines }))).into_response()
        }
        Ok(Err(why)) => problem(StatusCode::UNPROCESSABLE_ENTITY, why),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn history(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    Query(limit): Query<Limit>,
) -> Response {
    let limit = limit.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let store = s.store.clone();
    let deadlines = s.config.load().deadlines.clone();
    match blocking
        .store(move || store.history(limit, Some(&deadlines)))
        .await
    {
        Ok(items) => axum::Json(items).into_response(),
        Err(r) => r,
    }
}

async fn suppressions(State(s): State<ReviewState>, _caller: Caller) -> Response {
    let list: Vec<_> = s
        .suppressions
        .list()
        .into_iter()
        .map(|sup| {
            json!({
                "camera": sup.camera,
                "zone": sup.zone,
                "scenario": sup.scenario,
                "until": time::OffsetDateTime::from(sup.until).format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                // Learned from repeated rejections: only this object there (box 0..1).
                "object": sup.object,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

async fn audit_log(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _admin: Admin,
    Query(limit): Query<Limit>,
) -> Response {
    let limit = limit.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let store = s.store.clone();
    match blocking.store(move || store.audit_log(limit)).await {
        Ok(items) => axum::Json(items).into_response(),
        Err(r) => r,
    }
}

async fn export_dataset(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    Admin(c): Admin,
) -> Response {
    let store = s.store.clone();
    let config = s.config.load_full();
    // The queries, the archive and the audit entry: all of it on the blocking pool, one export
    // at a time.
    let tar = blocking
        .export(move || {
            let d = export::build(&store, &config.catalog)?;
            let tar = d.to_tar()?;
            let _ = store.audit(
                &c.user.name,
                "export",
                None,
                Some(&format!(
                    "{} positives, {} hard negatives",
                    d.positives, d.negatives
                )),
            );
            Ok(tar)
        })
        .await;
    match tar {
        Ok(tar) => (
            [
                (header::CONTENT_TYPE, "application/x-tar".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"gridwatch-dataset.tar\"".to_owned(),
                ),
            ],
            tar,
        )
            .into_response(),
        Err(r) => r,
    }
}
