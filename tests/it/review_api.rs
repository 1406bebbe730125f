//! The review console's API in-process (axum `oneshot`), over a real outbox database filled by
//! the real case stage: tiers and suppressions, every route with its auth failures (401 without
//! credentials, 403 without the CSRF token or the admin role), double review (first wins, the
//! second gets 409 with who handled it), scenario change, remarks, the live event stream, the
//! patrol wall, case history, audit log, the YOLO export, and path-escape attempts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use gridwatch::cases::outbox::Outbox;
use gridwatch::cases::tiers::Suppressions;
use gridwatch::config::Config;
use gridwatch::infer::Detection;
use gridwatch::infer::kinds::ObjectKind;
use gridwatch::ingest::Frame;
use gridwatch::ingest::status::CameraRegistry;
use gridwatch::review::auth::Role;
use gridwatch::review::store::ReviewStore;
use gridwatch::review::{LatestFrames, ReviewHub, ReviewState};
use gridwatch::scenarios::Event;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::support::{TempDir, repo};

const PASSWORD: &str = "s3cret-pass";

fn config_text() -> String {
    format!(
        r#"
[centre]
name = "test centre"
[[units]]
id = "cbd"
name = "商业商务区"
[[units]]
id = "hemu"
name = "和睦"
[[groups]]
id = "cbd-patrol"
name = "商务区巡查编组"
unit = "cbd"
[[groups]]
id = "hemu-patrol"
name = "和睦巡查编组"
unit = "hemu"
[[cameras]]
id = "cam-a"
name = "广场 A"
unit = "cbd"
group = "cbd-patrol"
uri = "test:"
[[cameras.zones]]
id = "plaza"
name = "广场"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[[cameras]]
id = "cam-b"
name = "村口 B"
unit = "hemu"
group = "hemu-patrol"
uri = "test:"
[[cameras.zones]]
id = "gate"
name = "村口"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]
[model]
card = "{card}"
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "http://127.0.0.1:9/api/v1/cases"
# The platform reports status back, so it takes case updates.
[dispatch.status]
feed_url = "http://127.0.0.1:9/api/v1/status-events"
[review]
listen = "127.0.0.1:0"
auto_dispatch_score = 0.9
review_score = 0.5
rotation_seconds = 7
"#,
        card = repo("models/nanodet-g-416-coco.toml").display()
    )
}

/// A frame of `camera` with a few persons: what the scenario stage would hand on.
fn frame(camera: usize, id: &str, seq: u64) -> Frame {
    let (w, h) = (96u32, 64u32);
    let rgb = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    Frame::from_rgb(camera, Arc::from(id), seq, seq as f64 * 0.5, w, h, rgb).unwrap()
}

fn persons() -> Vec<Detection> {
    (0..3)
        .map(|i| Detection {
            class_id: 0,
            label: Arc::from("person"),
            kind: ObjectKind::Person,
            score: 0.7,
            bbox: [0.1 + 0.2 * i as f32, 0.2, 0.25 + 0.2 * i as f32, 0.8],
        })
        .collect()
}

struct Console {
    _dir: TempDir,
    config: Arc<Config>,
    state: ReviewState,
    router: Router,
    wake: Arc<Notify>,
}

struct Session {
    cookie: String,
    csrf: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl Console {
    fn new() -> Self {
        Self::with_text(&config_text())
    }

    fn with_text(text: &str) -> Self {
        let dir = TempDir::new("review-api");
        let config = Arc::new(
            Config::from_text(text, "review.toml", &dir.0).unwrap_or_else(|e| panic!("{e}")),
        );
        let store = Arc::new(ReviewStore::open(&config.resolve(&config.cases.outbox)).unwrap());
        store.set_user("alice", Role::Reviewer, PASSWORD).unwrap();
        store.set_user("bob", Role::Reviewer, PASSWORD).unwrap();
        store.set_user("root", Role::Admin, PASSWORD).unwrap();
        let cameras = CameraRegistry::default();
        for i in 0..config.area.cameras.len() {
            cameras.add(gridwatch::ingest::initial_status(&config.area, i));
        }
        let wake = Arc::new(Notify::new());
        let state = ReviewState {
            store,
            config: Arc::new(arc_swap::ArcSwap::from_pointee(config.console_config())),
            cameras,
            latest: LatestFrames::new(config.area.cameras.len()),
            suppressions: Suppressions::default(),
            hub: ReviewHub::default(),
            wake: Some(wake.clone()),
            cluster: None,
            trainer: None,
            live: gridwatch::live::LiveHubs::default(),
            reports: gridwatch::cases::ReportInbox::default(),
        };
        Self {
            _dir: dir,
            router: gridwatch::review::router(state.clone()),
            config,
            state,
            wake,
        }
    }

    /// Runs the real case stage over events of (camera, confidence); returns the ids stored.
    fn events(&self, events: &[(usize, f32)]) -> Vec<String> {
        let outbox_path = self.config.resolve(&self.config.cases.outbox);
        let before: Vec<String> = Outbox::open(&outbox_path)
            .unwrap()
            .list(None, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let events = events
            .iter()
            .enumerate()
            .map(|(n, &(camera, confidence))| {
                self.event(
                    camera,
                    confidence,
                    frame(camera, &self.config.area.cameras[camera].id, n as u64),
                )
            })
            .collect();
        self.run_case_stage(events).unwrap();
        Outbox::open(&outbox_path)
            .unwrap()
            .list(None, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .filter(|id| !before.contains(id))
            .collect()
    }

    fn event(&self, camera: usize, confidence: f32, frame: Frame) -> Event {
        Event {
            scenario: self.config.catalog.info("crowd_gathering").unwrap(),
            camera,
            zone: 0,
            first_seen_at: SystemTime::now() - Duration::from_secs(5),
            confirmed_at: SystemTime::now(),
            first_seen_stream_seconds: 1.0,
            confirmed_stream_seconds: 6.0,
            objects: persons(),
            confidence,
            episode: 1,
            frame: Arc::new(frame),
            area: self.config.area.clone(),
            reported: None,
        }
    }

    /// The real case stage over `events`: the number of cases stored.
    fn run_case_stage(&self, events: Vec<Event>) -> Result<u64, gridwatch::cases::CaseError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for e in events {
            tx.send(gridwatch::scenarios::Output::Event(e)).unwrap();
        }
        drop(tx);
        let triage = self.config.triage(
            self.state.suppressions.clone(),
            None,
            Arc::new(arc_swap::ArcSwap::from_pointee(
                self.config.dispatch.routing(),
            )),
        );
        let hub = self.state.hub.clone();
        gridwatch::cases::run_triaged(
            Outbox::open(&self.config.resolve(&self.config.cases.outbox)).unwrap(),
            rx,
            &triage,
            || {},
            || hub.notify("held"),
        )
    }

    /// The console with the admin's "train" button wired to `trainer`.
    fn set_trainer(&mut self, trainer: Arc<dyn gridwatch::review::ZoneTrainer>) {
        self.state.trainer = Some(trainer);
        self.router = gridwatch::review::router(self.state.clone());
    }

    fn state_of(&self, id: &str) -> String {
        Outbox::open(&self.config.resolve(&self.config.cases.outbox))
            .unwrap()
            .list(None, 1000)
            .unwrap()
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.state)
            .unwrap_or_default()
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn anonymous(&self, method: Method, path: &str) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn login(&self, name: &str) -> Session {
        let r = self
            .send(
                Request::post("/api/v1/auth/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        json!({ "name": name, "password": PASSWORD }).to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let cookie = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
        let csrf = r.json()["csrf"].as_str().unwrap().to_owned();
        Session {
            cookie: cookie.split(';').next().unwrap().to_owned(),
            csrf,
        }
    }

    async fn get(&self, s: &Session, path: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::COOKIE, &s.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, s: &Session, path: &str, body: Value) -> Reply {
        self.send(
            Request::post(path)
                .header(header::COOKIE, &s.cookie)
                .header("X-CSRF-Token", &s.csrf)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }
}

fn item_path(id: &str, action: &str) -> String {
    format!("/api/v1/review/items/{id}/{action}")
}

#[tokio::test]
async fn the_case_stage_holds_mid_confidence_cases_and_counts_low_ones() {
    let c = Console::new();
    // 0.95 ≥ auto (0.9): dispatched; 0.7: held; 0.3 < review (0.5): only counted.
    let ids = c.events(&[(0, 0.95), (0, 0.7), (1, 0.3)]);
    assert_eq!(ids.len(), 2, "the low-confidence event is not stored");
    let mut states: Vec<String> = ids.iter().map(|id| c.state_of(id)).collect();
    states.sort();
    assert_eq!(states, ["awaiting_review", "pending"]);
    let s = c.login("alice").await;
    let queue = c.get(&s, "/api/v1/review/queue").await.json();
    assert_eq!(queue.as_array().unwrap().len(), 1);
    assert_eq!(queue[0]["state"], "awaiting_review");
    assert_eq!(queue[0]["camera"], "cam-a");
    assert_eq!(queue[0]["unit_name"], "商业商务区");
    assert_eq!(queue[0]["zone"], "plaza");
    assert_eq!(queue[0]["objects"], 3);
    assert!((queue[0]["confidence"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!(queue[0]["waiting_seconds"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn pages_are_served_and_every_api_route_refuses_anonymous_callers() {
    let c = Console::new();
    let page = c.anonymous(Method::GET, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("/assets/app.js") && html.contains("审核"),
        "{html}"
    );
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    for asset in ["/assets/app.js", "/assets/app.css"] {
        let r = c.anonymous(Method::GET, asset).await;
        assert_eq!(r.status, StatusCode::OK, "{asset}");
        assert!(!r.body.is_empty());
    }
    let js = String::from_utf8_lossy(&c.anonymous(Method::GET, "/assets/app.js").await.body)
        .into_owned();
    assert!(
        !js.contains("http://") && !js.contains("https://"),
        "no CDN, nothing off-site"
    );

    let id = uuid::Uuid::now_v7();
    let routes = [
        (Method::GET, "/api/v1/auth/me".to_owned()),
        (Method::POST, "/api/v1/auth/logout".to_owned()),
        (Method::POST, "/api/v1/auth/tokens".to_owned()),
        (Method::POST, "/api/v1/review/users".to_owned()),
        (Method::GET, "/api/v1/review/meta".to_owned()),
        (Method::GET, "/api/v1/review/queue".to_owned()),
        (Method::GET, "/api/v1/review/events".to_owned()),
        (Method::GET, format!("/api/v1/review/items/{id}")),
        (Method::GET, item_path(&id.to_string(), "snapshot.jpg")),
        (Method::POST, item_path(&id.to_string(), "confirm")),
        (Method::POST, item_path(&id.to_string(), "reject")),
        (Method::POST, item_path(&id.to_string(), "scenario")),
        (Method::POST, item_path(&id.to_string(), "remark")),
        (Method::GET, "/api/v1/review/wall".to_owned()),
        (
            Method::GET,
            "/api/v1/review/wall/cam-a/frame.jpg".to_owned(),
        ),
        (Method::GET, "/api/v1/review/cases".to_owned()),
        (Method::GET, "/api/v1/review/suppressions".to_owned()),
        (Method::GET, "/api/v1/review/audit".to_owned()),
        (Method::GET, "/api/v1/review/export".to_owned()),
    ];
    for (method, path) in routes {
        let r = c.anonymous(method.clone(), &path).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        // A made-up bearer token is nobody either.
        let r = c
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(&path)
                    .header(header::AUTHORIZATION, "Bearer 0123456789abcdef")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
    }
}

#[tokio::test]
async fn sign_in_uses_a_strict_http_only_cookie_and_sign_out_ends_it() {
    let c = Console::new();
    let bad = c
        .send(
            Request::post("/api/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "name": "alice", "password": "nope-nope" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get(header::SET_COOKIE).is_none());

    let r = c
        .send(
            Request::post("/api/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "name": "alice", "password": PASSWORD }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("gw_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let s = c.login("alice").await;
    let me = c.get(&s, "/api/v1/auth/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["name"], "alice");
    assert_eq!(me.json()["role"], "reviewer");
    assert_eq!(me.json()["csrf"], s.csrf.as_str());

    // The session token is stored hashed: the cookie value is nowhere in the database.
    let token = s.cookie.split('=').nth(1).unwrap();
    let db = std::fs::read(c.config.resolve(&c.config.cases.outbox)).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));

    let out = c.post(&s, "/api/v1/auth/logout", json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(&s, "/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_and_bearer_tokens_do_not() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7), (0, 0.7)]);
    let s = c.login("alice").await;
    for csrf in [None, Some("wrong")] {
        let mut req = Request::post(item_path(&ids[0], "confirm"))
            .header(header::COOKIE, &s.cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(v) = csrf {
            req = req.header("X-CSRF-Token", v);
        }
        let r = c.send(req.body(Body::from("{}")).unwrap()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "CSRF {csrf:?}");
        assert_eq!(c.state_of(&ids[0]), "awaiting_review", "nothing happened");
    }
    // An API token (made by a signed-in user) works without CSRF, as a bearer token.
    let t = c.post(&s, "/api/v1/auth/tokens", json!({})).await;
    assert_eq!(t.status, StatusCode::CREATED);
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let r = c
        .send(
            Request::post(item_path(&ids[1], "confirm"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["reviewer"], "alice");
    assert_eq!(c.state_of(&ids[1]), "pending");
}

#[tokio::test]
async fn the_first_reviewer_wins_and_the_second_is_told_who() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7)]);
    let id = &ids[0];
    let alice = c.login("alice").await;
    let bob = c.login("bob").await;
    let woken = c.wake.notified();
    let r = c
        .post(
            &alice,
            &item_path(id, "confirm"),
            json!({ "remark": "现场确认" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["decision"], "confirmed");
    tokio::time::timeout(Duration::from_secs(2), woken)
        .await
        .expect("a confirmation wakes delivery");
    assert_eq!(c.state_of(id), "pending");
    let due = Outbox::open(&c.config.resolve(&c.config.cases.outbox))
        .unwrap()
        .due(gridwatch::cases::routing::PRIMARY_TARGET_ID, 10)
        .unwrap();
    assert!(
        due.iter().any(|p| &p.id == id),
        "the confirmed case is due for delivery now"
    );

    for action in ["confirm", "reject"] {
        let r = c.post(&bob, &item_path(id, action), json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{action}");
        let j = r.json();
        assert_eq!(j["handled_by"], "alice");
        assert_eq!(j["decision"], "confirmed");
    }
    assert_eq!(
        c.state_of(id),
        "pending",
        "the second review changed nothing"
    );
    // Concurrent reviews: exactly one of many wins.
    let more = c.events(&[(1, 0.7)]);
    let paths: Vec<(bool, String)> = (0..6)
        .map(|i| {
            let action = if i % 2 == 0 { "confirm" } else { "reject" };
            (i % 2 == 0, item_path(&more[0], action))
        })
        .collect();
    let racers: Vec<_> = paths
        .iter()
        .map(|(first, path)| c.post(if *first { &alice } else { &bob }, path, json!({})))
        .collect();
    let replies = futures_util::future::join_all(racers).await;
    let wins = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!((wins, conflicts), (1, 5));
    // Unknown case: 404.
    let r = c
        .post(
            &alice,
            &item_path(&uuid::Uuid::now_v7().to_string(), "confirm"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rejection_is_a_false_positive_and_may_suppress_the_camera_zone_and_scenario() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7), (1, 0.7)]);
    let s = c.login("alice").await;
    let bad = c
        .post(
            &s,
            &item_path(&ids[0], "reject"),
            json!({ "suppress_minutes": 999_999 }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let r = c
        .post(
            &s,
            &item_path(&ids[0], "reject"),
            json!({ "remark": "树影误报", "suppress_minutes": 30 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.json()["suppressed_until"].is_string());
    assert_eq!(c.state_of(&ids[0]), "rejected");
    assert!(
        Outbox::open(&c.config.resolve(&c.config.cases.outbox))
            .unwrap()
            .due(gridwatch::cases::routing::PRIMARY_TARGET_ID, 10)
            .unwrap()
            .is_empty(),
        "a rejected case is never delivered"
    );
    let list = c.get(&s, "/api/v1/review/suppressions").await.json();
    assert_eq!(list[0]["camera"], "cam-a");
    assert_eq!(list[0]["zone"], "plaza");
    assert_eq!(list[0]["scenario"], "crowd_gathering");

    // The case stage now drops events of that camera + zone + scenario, and only those.
    let next = c.events(&[(0, 0.7), (0, 0.95), (1, 0.7)]);
    assert_eq!(next.len(), 1, "only the other camera's event is stored");
    assert_eq!(
        c.get(&s, &format!("/api/v1/review/items/{}", next[0]))
            .await
            .json()["camera"],
        "cam-b"
    );
    // Reject without suppression.
    let r = c.post(&s, &item_path(&ids[1], "reject"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["suppressed_until"].is_null());
}

#[tokio::test]
async fn the_scenario_can_be_changed_before_dispatch_and_remarks_are_kept() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7), (0, 0.7)]);
    let s = c.login("alice").await;
    let unknown = c
        .post(
            &s,
            &item_path(&ids[0], "scenario"),
            json!({ "scenario": "no_such_thing" }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let r = c
        .post(
            &s,
            &item_path(&ids[0], "scenario"),
            json!({ "scenario": "illegal_parking" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["scenario"], "illegal_parking");
    let info = c.config.catalog.info("illegal_parking").unwrap();
    let conn = rusqlite::Connection::open(c.config.resolve(&c.config.cases.outbox)).unwrap();
    let body: String = conn
        .query_row("SELECT body FROM cases WHERE id = ?1", [&ids[0]], |r| {
            r.get(0)
        })
        .unwrap();
    let case: gridwatch::cases::Case = serde_json::from_str(&body).unwrap();
    assert_eq!(case.scenario.id, "illegal_parking");
    assert_eq!(case.department, info.department);
    assert_eq!(case.deadline_minutes, info.level.deadline_minutes());
    assert_eq!(
        case.deadline_at,
        gridwatch::cases::deadline(case.confirmed_at, info.level)
    );

    // Changing it within the confirmation.
    let r = c
        .post(
            &s,
            &item_path(&ids[1], "confirm"),
            json!({ "scenario": "illegal_parking" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["scenario"], "illegal_parking");
    // A dispatched case keeps its scenario.
    let late = c
        .post(
            &s,
            &item_path(&ids[1], "scenario"),
            json!({ "scenario": "crowd_gathering" }),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);

    assert_eq!(
        c.post(&s, &item_path(&ids[0], "remark"), json!({ "remark": "  " }))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = c
        .post(
            &s,
            &item_path(&ids[0], "remark"),
            json!({ "remark": "疑似临时停车" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let item = c
        .get(&s, &format!("/api/v1/review/items/{}", ids[0]))
        .await
        .json();
    assert_eq!(item["remark"], "疑似临时停车");
    let snap = c.get(&s, &item_path(&ids[0], "snapshot.jpg")).await;
    assert_eq!(snap.status, StatusCode::OK);
    assert_eq!(snap.headers[header::CONTENT_TYPE], "image/jpeg");
    image::load_from_memory_with_format(&snap.body, image::ImageFormat::Jpeg).unwrap();
}

#[tokio::test]
async fn the_queue_filters_by_unit_group_and_scenario() {
    let c = Console::new();
    c.events(&[(0, 0.7), (1, 0.7), (1, 0.6)]);
    let s = c.login("alice").await;
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(count(c.get(&s, "/api/v1/review/queue").await.json()), 3);
    assert_eq!(
        count(c.get(&s, "/api/v1/review/queue?unit=hemu").await.json()),
        2
    );
    assert_eq!(
        count(
            c.get(&s, "/api/v1/review/queue?group=cbd-patrol")
                .await
                .json()
        ),
        1
    );
    assert_eq!(
        count(
            c.get(&s, "/api/v1/review/queue?scenario=crowd_gathering&unit=cbd")
                .await
                .json()
        ),
        1
    );
    assert_eq!(
        count(
            c.get(&s, "/api/v1/review/queue?scenario=illegal_parking")
                .await
                .json()
        ),
        0
    );
    let meta = c.get(&s, "/api/v1/review/meta").await.json();
    assert_eq!(meta["rotation_seconds"], 7);
    assert_eq!(meta["units"].as_array().unwrap().len(), 2);
    assert!(
        meta["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "crowd_gathering")
    );
}

#[tokio::test]
async fn path_escape_attempts_are_refused() {
    let c = Console::new();
    c.events(&[(0, 0.7)]);
    let s = c.login("alice").await;
    for bad in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..",
        "%2Fetc%2Fpasswd",
        "x'%20OR%20'1'='1",
    ] {
        for action in ["snapshot.jpg", "confirm"] {
            let path = item_path(bad, action);
            let r = if action == "confirm" {
                c.post(&s, &path, json!({})).await
            } else {
                c.get(&s, &path).await
            };
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        }
    }
    for bad in ["..%2F..%2Fetc%2Fpasswd", "cam-a%2F..", "nope"] {
        let r = c
            .get(&s, &format!("/api/v1/review/wall/{bad}/frame.jpg"))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn admin_routes_are_for_admins_and_the_audit_log_says_who_did_what() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7), (1, 0.7)]);
    let alice = c.login("alice").await;
    let root = c.login("root").await;
    for path in ["/api/v1/review/audit", "/api/v1/review/export"] {
        assert_eq!(
            c.get(&alice, path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let u = c
        .post(
            &alice,
            "/api/v1/review/users",
            json!({ "name": "carol", "role": "reviewer", "password": PASSWORD }),
        )
        .await;
    assert_eq!(u.status, StatusCode::FORBIDDEN);
    let u = c
        .post(
            &root,
            "/api/v1/review/users",
            json!({ "name": "carol", "role": "reviewer", "password": PASSWORD }),
        )
        .await;
    assert_eq!(u.status, StatusCode::CREATED, "{:?}", u.body);
    let short = c
        .post(
            &root,
            "/api/v1/review/users",
            json!({ "name": "dave", "role": "reviewer", "password": "short" }),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let carol = c.login("carol").await;

    c.post(
        &alice,
        &item_path(&ids[0], "confirm"),
        json!({ "remark": "确认" }),
    )
    .await;
    c.post(
        &carol,
        &item_path(&ids[1], "reject"),
        json!({ "suppress_minutes": 5 }),
    )
    .await;
    let audit = c.get(&root, "/api/v1/review/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries = audit.json();
    let has = |user: &str, action: &str, case: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == user && e["action"] == action && e["case_id"] == case)
    };
    assert!(has("alice", "confirm", &ids[0]), "{entries}");
    assert!(has("carol", "reject", &ids[1]), "{entries}");
    assert!(has("carol", "suppress", &ids[1]), "{entries}");
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == "root" && e["action"] == "set_user")
    );
}

#[tokio::test]
async fn reviewed_frames_export_as_a_yolo_dataset() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7), (1, 0.7), (0, 0.8)]);
    let s = c.login("alice").await;
    c.post(&s, &item_path(&ids[0], "confirm"), json!({})).await;
    c.post(&s, &item_path(&ids[1], "reject"), json!({})).await;
    let root = c.login("root").await;
    let r = c.get(&root, "/api/v1/review/export").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-tar");
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(r.body.as_ref());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(path, bytes);
    }
    let names: Vec<&str> = c.config.catalog.ids().collect();
    let class = names.iter().position(|n| *n == "crowd_gathering").unwrap();
    let yaml = String::from_utf8(files["gridwatch-dataset/data.yaml"].clone()).unwrap();
    assert!(yaml.contains(&format!("nc: {}", names.len())), "{yaml}");
    assert!(
        yaml.contains(&format!("{class}: crowd_gathering")),
        "{yaml}"
    );
    // Positive: one line per person, class cx cy w h normalised.
    let label =
        String::from_utf8(files[&format!("gridwatch-dataset/labels/{}.txt", ids[0])].clone())
            .unwrap();
    let lines: Vec<&str> = label.lines().collect();
    assert_eq!(lines.len(), 3, "{label}");
    let first: Vec<f32> = lines[0]
        .split(' ')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(lines[0].split(' ').next().unwrap(), class.to_string());
    for (got, want) in first.iter().zip([0.175, 0.5, 0.15, 0.6]) {
        assert!((got - want).abs() < 1e-4, "{lines:?}");
    }
    // Hard negative: empty label file, image present.
    assert!(files[&format!("gridwatch-dataset/labels/{}.txt", ids[1])].is_empty());
    for id in &ids[..2] {
        let img = image::load_from_memory_with_format(
            &files[&format!("gridwatch-dataset/images/{id}.jpg")],
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert!(img.width() > 0);
    }
    // The unreviewed case is not in it; nothing outside the dataset folder.
    assert!(!files.keys().any(|k| k.contains(&ids[2])));
    assert!(
        files
            .keys()
            .all(|k| k.starts_with("gridwatch-dataset/") && !k.contains(".."))
    );

    // The same dataset written to a folder (what `gridwatch review export --out` does).
    let out = TempDir::new("review-export");
    let d = gridwatch::review::export::build(&c.state.store, &c.config.catalog).unwrap();
    d.write_to(&out.0).unwrap();
    assert_eq!((d.positives, d.negatives), (1, 1));
    assert!(out.path("data.yaml").exists());
    assert!(out.path(&format!("images/{}.jpg", ids[0])).exists());
}

#[tokio::test]
async fn case_history_shows_delivery_state_and_time_left() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.95), (0, 0.7)]);
    let s = c.login("alice").await;
    let r = c.get(&s, "/api/v1/review/cases?limit=10").await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    for h in list.as_array().unwrap() {
        assert!(ids.contains(&h["id"].as_str().unwrap().to_owned()));
        // crowd_gathering's level: the deadline is minutes ahead, not past.
        let left = h["time_left_seconds"].as_i64().unwrap();
        assert!(left > 60 && left <= 60 * 60, "{h}");
        assert_eq!(h["attempts"], 0);
    }
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"pending") && states.contains(&"awaiting_review"),
        "{states:?}"
    );
    assert_eq!(
        c.get(&s, "/api/v1/review/cases?limit=1")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_reviewer_changes_the_handling_level_and_the_platform_is_told() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.95)]);
    let id = &ids[0];
    let s = c.login("alice").await;
    let before = c.get(&s, &item_path(id, "platform")).await.json();
    let level = before["clock"]["level"].as_str().unwrap().to_owned();
    let start = before["clock"]["start_ms"]
        .as_i64()
        .expect("counted from detection");
    let target = if level == "difficult" {
        "simple"
    } else {
        "difficult"
    };
    let r = c
        .post(&s, &item_path(id, "level"), json!({ "level": target }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["changed"], true);
    let after = c.get(&s, &item_path(id, "platform")).await.json();
    assert_eq!(after["clock"]["level"], target);
    let limit_ms = if target == "difficult" {
        3_600_000
    } else {
        600_000
    };
    assert_eq!(
        after["clock"]["deadline_ms"].as_i64(),
        Some(start + limit_ms)
    );
    let updates = after["updates"].as_array().unwrap();
    assert_eq!(updates.len(), 1, "{after}");
    assert_eq!(updates[0]["kind"], "level_changed");
    assert_eq!(
        updates[0]["state"], "pending",
        "it waits for its case to reach the target"
    );
    // The same level again changes nothing; a level that does not exist is refused.
    let again = c
        .post(&s, &item_path(id, "level"), json!({ "level": target }))
        .await;
    assert_eq!(again.json()["changed"], false);
    let bad = c
        .post(&s, &item_path(id, "level"), json!({ "level": "urgent" }))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let history = c.get(&s, "/api/v1/review/cases?limit=10").await.json();
    assert_eq!(history[0]["platform"]["level"], target);
    let root = c.login("root").await;
    let audit = c.get(&root, "/api/v1/review/audit?limit=10").await.json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "level_changed" && a["case_id"] == id.as_str()),
        "{audit}"
    );
}

#[tokio::test]
async fn the_event_stream_announces_queue_changes() {
    let c = Console::new();
    let s = c.login("alice").await;
    let r = c
        .router
        .clone()
        .oneshot(
            Request::get("/api/v1/review/events")
                .header(header::COOKIE, &s.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = r.into_body();
    let mut text = String::new();
    let mut next = async |text: &mut String| {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    };
    next(&mut text).await;
    assert!(
        text.contains("event: queue") && text.contains("data: hello"),
        "{text}"
    );
    // A case held by the case stage is announced.
    c.events(&[(0, 0.7)]);
    while !text.contains("data: held") {
        next(&mut text).await;
    }
    // Closing the hub ends the stream (the server's shutdown is not held open).
    c.state.hub.close();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                None => break,
                Some(_) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends when the console closes");
}

#[tokio::test]
async fn the_wall_shows_each_group_with_health_and_the_latest_frame() {
    let c = Console::new();
    let s = c.login("alice").await;
    let wall = c.get(&s, "/api/v1/review/wall").await.json();
    assert_eq!(wall["rotation_seconds"], 7);
    let groups = wall["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["id"], "cbd-patrol");
    assert_eq!(groups[0]["unit_name"], "商业商务区");
    assert_eq!(groups[0]["cameras"][0]["id"], "cam-a");
    assert_eq!(groups[0]["cameras"][0]["state"], "connecting");
    c.state.cameras.set_state(
        0,
        gridwatch::ingest::status::CameraState::Stalled,
        Some("test"),
    );
    let wall = c.get(&s, "/api/v1/review/wall").await.json();
    assert_eq!(wall["groups"][0]["cameras"][0]["state"], "stalled");

    let url = "/api/v1/review/wall/cam-a/frame.jpg";
    assert_eq!(
        c.get(&s, url).await.status,
        StatusCode::NOT_FOUND,
        "no frame yet"
    );
    c.state.latest.offer(&frame(0, "cam-a", 1), &persons());
    let r = c.get(&s, url).await;
    assert_eq!(r.status, StatusCode::OK);
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).unwrap();
    assert!(
        img.width() >= 96,
        "restored to the display aspect: {}",
        img.width()
    );
    // Boxes are drawn: the annotated frame differs from the clean one.
    let clean = gridwatch::cases::evidence::annotate(
        &frame(0, "cam-a", 1),
        &[],
        &[],
        gridwatch::review::wall::WALL_WIDTH_PIXELS,
    )
    .unwrap();
    assert_ne!(clean.jpeg, r.body.to_vec());
    // The other camera has no frame.
    assert_eq!(
        c.get(&s, "/api/v1/review/wall/cam-b/frame.jpg")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_cli_adds_accounts_with_api_tokens_and_exports_the_dataset() {
    let c = Console::new();
    let ids = c.events(&[(0, 0.7)]);
    let s = c.login("alice").await;
    c.post(&s, &item_path(&ids[0], "confirm"), json!({})).await;
    let dir = c._dir.0.clone();
    let config = dir.join("review.toml");
    std::fs::write(&config, config_text()).unwrap();

    let out = crate::dispatch_support::gridwatch()
        .args([
            "review", "add-user", "--name", "ops", "--role", "admin", "--token", "--config",
        ])
        .arg(&config)
        .env("GRIDWATCH_REVIEW_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("API token (shown once): "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim()
        .to_owned();
    // The new admin's bearer token opens the admin routes of the console over the same database.
    let audit = c
        .send(
            Request::get("/api/v1/review/audit")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(audit.status, StatusCode::OK);
    assert!(
        audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == "cli" && e["action"] == "set_user")
    );
    c.login("ops").await;

    let dataset = dir.join("dataset");
    let out = crate::dispatch_support::gridwatch()
        .args(["review", "export", "--out"])
        .arg(&dataset)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dataset.join("data.yaml").is_file());
    assert!(dataset.join(format!("images/{}.jpg", ids[0])).is_file());
    assert_eq!(
        std::fs::read_to_string(dataset.join(format!("labels/{}.txt", ids[0])))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[tokio::test]
async fn login_refuses_forms_overlong_input_and_locks_a_name_after_repeated_failures() {
    let c = Console::new();
    let login = |ct: &'static str, name: String, password: String| {
        Request::post("/api/v1/auth/login")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(
                json!({ "name": name, "password": password }).to_string(),
            ))
            .unwrap()
    };
    // A cross-site form posts text/plain: no sign-in that way, even with the right password.
    let r = c
        .send(login("text/plain", "alice".into(), PASSWORD.into()))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = c
        .send(login("application/json", "a".repeat(5000), "x".into()))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = c
        .send(login(
            "application/json",
            "alice".into(),
            "p".repeat(10_000),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Five wrong passwords lock the name, even against the right one; other names still work.
    for _ in 0..5 {
        let r = c
            .send(login(
                "application/json",
                "alice".into(),
                "wrong-one".into(),
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = c
        .send(login("application/json", "alice".into(), PASSWORD.into()))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let s = c.login("root").await;
    let audit = c.get(&s, "/api/v1/review/audit").await;
    let text = String::from_utf8_lossy(&audit.body).into_owned();
    assert!(text.contains("login_locked_out"), "{text}");
}

/// Issue 13, 3a: the console shares the `gridwatch-io` runtime (two workers) with the etcd lease
/// renewal and delivery, so none of its requests may block a worker. Another connection holds
/// the outbox's write lock for a second (a retention pass, a migration, the CLI) while signed-in
/// reviewers confirm, reject, remark, read the queue and history, sign in, and an admin exports:
/// on a single-threaded runtime a ticker standing in for the lease renewal must keep its pace
/// all the while.
#[test]
fn a_busy_database_does_not_stall_the_async_runtime_while_requests_wait_for_it() {
    const HOLD: Duration = Duration::from_secs(1);
    const TICK: Duration = Duration::from_millis(10);
    const MAX_GAP: Duration = Duration::from_millis(200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = Console::new();
        let ids = c.events(&[(0, 0.7), (1, 0.7), (0, 0.8), (1, 0.8)]);
        let alice = c.login("alice").await;
        let root = c.login("root").await;
        // A reviewed case, so that the export has a frame to pack.
        let r = c
            .post(&alice, &item_path(&ids[3], "reject"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

        let ticking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let ticker = tokio::spawn({
            let ticking = ticking.clone();
            async move {
                let mut every = tokio::time::interval(TICK);
                every.tick().await;
                let mut last = std::time::Instant::now();
                let _ = started_tx.send(());
                let (mut worst, mut ticks) = (Duration::ZERO, 0u32);
                while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                    every.tick().await;
                    let now = std::time::Instant::now();
                    worst = worst.max(now - last);
                    last = now;
                    ticks += 1;
                }
                (worst, ticks)
            }
        });
        // The ticker is running (a stall before its first tick would go unseen).
        started_rx.await.unwrap();

        // Another connection takes the write lock (BEGIN IMMEDIATE) and keeps it for HOLD.
        let holder = rusqlite::Connection::open(c.config.resolve(&c.config.cases.outbox)).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(HOLD);
            holder.execute_batch("COMMIT").unwrap();
        });

        let login = c.send(
            Request::post("/api/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "name": "bob", "password": PASSWORD }).to_string(),
                ))
                .unwrap(),
        );
        let (confirm_path, reject_path, remark_path, item_url) = (
            item_path(&ids[0], "confirm"),
            item_path(&ids[1], "reject"),
            item_path(&ids[2], "remark"),
            format!("/api/v1/review/items/{}", ids[2]),
        );
        let (confirm, reject, remark, queue, history, item, export, login) = tokio::join!(
            c.post(&alice, &confirm_path, json!({})),
            c.post(&alice, &reject_path, json!({})),
            c.post(&alice, &remark_path, json!({ "remark": "看一下" })),
            c.get(&alice, "/api/v1/review/queue"),
            c.get(&alice, "/api/v1/review/cases?limit=1000"),
            c.get(&alice, &item_url),
            c.get(&root, "/api/v1/review/export"),
            login,
        );
        let waited = started.elapsed();
        ticking.store(false, std::sync::atomic::Ordering::Relaxed);
        let (worst, ticks) = ticker.await.unwrap();
        release.join().unwrap();

        for (what, r) in [
            ("confirm", &confirm),
            ("reject", &reject),
            ("remark", &remark),
            ("queue", &queue),
            ("history", &history),
            ("item", &item),
            ("export", &export),
            ("login", &login),
        ] {
            assert!(
                r.status.is_success(),
                "{what}: {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        assert!(
            worst <= MAX_GAP,
            "a console request blocked the runtime: the ticker stalled for {worst:?} \
             (requests in flight for {waited:?})"
        );
        // The writes really waited for the lock: the requests were in flight all along.
        assert!(waited >= HOLD - Duration::from_millis(100), "{waited:?}");
        assert!(ticks >= 10, "the ticker ran only {ticks} times");
        assert_eq!(c.state_of(&ids[0]), "pending");
        assert_eq!(c.state_of(&ids[1]), "rejected");
    });
}

/// A case whose evidence cannot be rendered (here a frame whose buffer is shorter than its
/// size says) is kept with its reason, and the case stage goes on to the next event.
#[test]
fn a_case_that_cannot_be_rendered_is_kept_with_its_reason_and_the_stage_goes_on() {
    let c = Console::new();
    let cam = &c.config.area.cameras[0];
    let mut broken = frame(0, &cam.id, 1);
    broken.height += 8; // the caps say more rows than the buffer holds
    let good = frame(0, &cam.id, 2);
    let stored = c
        .run_case_stage(vec![c.event(0, 0.95, broken), c.event(0, 0.95, good)])
        .expect("the stage goes on past the broken event");
    assert_eq!(
        stored, 1,
        "the good event after the broken one became a case"
    );

    let outbox = Outbox::open(&c.config.resolve(&c.config.cases.outbox)).unwrap();
    let kept = outbox.unrendered(10).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let k = &kept[0];
    assert_eq!(k.scenario, "crowd_gathering");
    assert_eq!(k.camera, cam.id);
    assert_eq!(k.zone, cam.zones[0].id);
    assert!(k.reason.contains("do not fill"), "{}", k.reason);
    assert_eq!(k.event["frame"]["seq"], 1);
    assert_eq!(k.event["objects"].as_array().map(Vec::len), Some(3));
    assert_eq!(outbox.stats().unwrap().unrendered, 1);
}

/// A reviewer rejecting the same objects at the same place twice (`[review]
/// object_suppression_after_rejections`, default 2) suppresses those objects there, listed
/// with their boxes; other objects in the zone still make cases.
#[tokio::test]
async fn objects_rejected_twice_at_one_place_are_suppressed_there_and_only_they() {
    let c = Console::new();
    let s = c.login("alice").await;
    let first = c.events(&[(0, 0.7)]);
    let r = c.post(&s, &item_path(&first[0], "reject"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let list = c.get(&s, "/api/v1/review/suppressions").await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "one rejection teaches nothing: {list}"
    );

    let second = c.events(&[(0, 0.7)]);
    let r = c
        .post(&s, &item_path(&second[0], "reject"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let list = c.get(&s, "/api/v1/review/suppressions").await.json();
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        persons().len(),
        "one per rejected object: {list:?}"
    );
    for (sup, p) in list.iter().zip(persons()) {
        assert_eq!(
            (sup["camera"].as_str(), sup["zone"].as_str()),
            (Some("cam-a"), Some("plaza"))
        );
        let b: Vec<f32> = serde_json::from_value(sup["object"].clone()).unwrap();
        assert_eq!(b, p.bbox, "{sup}");
    }

    // The same objects there again: dropped. The same objects at another camera, or other
    // objects in the zone: cases.
    assert!(
        c.events(&[(0, 0.7)]).is_empty(),
        "the suppressed objects make no case"
    );
    assert_eq!(
        c.events(&[(1, 0.7)]).len(),
        1,
        "another camera is not suppressed"
    );
    let mut elsewhere = c.event(0, 0.7, frame(0, &c.config.area.cameras[0].id, 99));
    for o in &mut elsewhere.objects {
        o.bbox[1] = 0.82;
        o.bbox[3] = 0.98;
    }
    assert_eq!(
        c.run_case_stage(vec![elsewhere]).unwrap(),
        1,
        "other objects in the zone"
    );

    // Learned from the store at the next start too.
    let active = c.state.store.active_suppressions().unwrap();
    assert_eq!(
        active.iter().filter(|s| s.object.is_some()).count(),
        persons().len()
    );
}

/// The vtest path's by-eye labels (sample-streams/vtest.states.toml) at these seconds: 5 clear,
/// 5 occupied, the last three held out by time.
const LABELLED_SECONDS: [f64; 10] = [2.0, 4.0, 7.0, 8.0, 10.0, 12.0, 16.0, 20.0, 45.0, 50.0];

#[tokio::test]
async fn labels_set_on_the_wall_keep_their_frame_and_train_a_zone_state() {
    use gridwatch::learn::{self, LabelSource, LabelsFile, LearnOptions};
    use gridwatch::states::{Pooling, QualityBar, TrainOptions};
    // cam-a's zone is the vtest path; the state it is labelled with is one of its scenarios.
    let path_polygon = "polygon = [[0.0, 0.31], [0.42, 0.30], [0.42, 0.53], [0.0, 0.47]]";
    let text = config_text().replacen(
        "polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]",
        path_polygon,
        1,
    ) + "[states]\ncards_dir = \"cards\"\n";
    let mut c = Console::with_text(&text);
    let s = c.login("alice").await;
    let url = "/api/v1/review/wall/cam-a/zones/plaza/labels";
    let label = |present: bool| json!({"state": "crowd_gathering", "present": present});
    assert_eq!(
        c.post(&s, url, label(true)).await.status,
        StatusCode::CONFLICT,
        "no frame yet"
    );
    let bad_state = json!({"state": "waterlogging", "present": true});
    assert_eq!(
        c.post(&s, url, bad_state).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let no_zone = "/api/v1/review/wall/cam-a/zones/nowhere/labels";
    assert_eq!(
        c.post(&s, no_zone, label(true)).await.status,
        StatusCode::NOT_FOUND
    );

    // The wall shows vtest's frames as the pipeline analysed them; alice labels some.
    let by_eye = LabelsFile::load(&repo("sample-streams/vtest.states.toml")).unwrap();
    let present_at = |t: f64| {
        by_eye
            .labels
            .iter()
            .find(|l| l.at_seconds == t)
            .unwrap()
            .present
    };
    let clip = repo("sample-streams/vtest.mp4");
    let frames = gridwatch::ingest::replay::FileFrames::open(&clip, 1.0, 416, 416).unwrap();
    let mut offered = Vec::new();
    for (pts, frame) in frames.take(51) {
        if !LABELLED_SECONDS.contains(&pts.round()) {
            continue;
        }
        c.state.latest.offer(&frame, &[]);
        offered.push(frame.rgb()[..416 * 416 * 3].to_vec());
        let r = c.post(&s, url, label(present_at(pts.round()))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        // The wall copies a camera's frame at most once per interval.
        tokio::time::sleep(gridwatch::review::wall::COPY_INTERVAL + Duration::from_millis(20))
            .await;
    }
    assert_eq!(offered.len(), LABELLED_SECONDS.len());

    // Kept losslessly, in order, with who set them; audited.
    let stored = c
        .state
        .store
        .zone_labels("cam-a", "plaza", "crowd_gathering")
        .unwrap();
    assert_eq!(stored.len(), LABELLED_SECONDS.len());
    for ((l, rgb), t) in stored.iter().zip(&offered).zip(LABELLED_SECONDS) {
        assert_eq!((l.present, l.user.as_str()), (present_at(t), "alice"));
        let png = image::load_from_memory(&l.frame).unwrap().to_rgb8();
        assert!(
            png.as_raw() == rgb,
            "the frame of {t} s is kept as analysed"
        );
    }
    let audit = c.get(&s, "/api/v1/review/audit").await;
    let root = c.login("root").await;
    let audit = if audit.status == StatusCode::OK {
        audit
    } else {
        c.get(&root, "/api/v1/review/audit").await
    };
    assert!(String::from_utf8_lossy(&audit.body).contains("label_zone"));

    // `gridwatch learn --camera cam-a --zone plaza --state crowd_gathering` trains on them (the
    // bar lowered: ten labels prove the path, not the accuracy, measured on the file's labels).
    let config = c.config.clone();
    let out_dir = config.resolve(std::path::Path::new("cards"));
    let learned = tokio::task::spawn_blocking(move || {
        learn::run(
            &config,
            &LearnOptions {
                source: LabelSource::Console {
                    camera: "cam-a".into(),
                    zone: "plaza".into(),
                    state: "crowd_gathering".into(),
                },
                out_dir,
                pooling: Pooling::ZoneCells2x2,
                train: TrainOptions {
                    bar: QualityBar {
                        min_precision: 0.0,
                        min_recall: 0.0,
                        min_labels_per_class: 2,
                        min_held_out_per_class: 1,
                    },
                    ..Default::default()
                },
                decode_fps: learn::DEFAULT_DECODE_FPS,
            },
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let card = &learned.trained.card;
    assert_eq!(
        (card.camera.as_str(), card.zone.as_str()),
        ("cam-a", "plaza")
    );
    assert_eq!(
        card.polygon,
        vec![[0.0, 0.31], [0.42, 0.30], [0.42, 0.53], [0.0, 0.47]]
    );
    let present = LABELLED_SECONDS.iter().filter(|&&t| present_at(t)).count();
    let l = card.labels;
    assert_eq!(l.train_positive + l.held_out_positive, present);
    assert_eq!(
        l.train_negative + l.held_out_negative,
        LABELLED_SECONDS.len() - present
    );
    assert_eq!(
        l.held_out_positive + l.held_out_negative,
        3,
        "the latest three are held out"
    );

    // The admin's "train" button does the same from the console: unavailable where nothing
    // trains, for admins only, refused with the numbers under the default bar (ten labels are
    // too few), saved and reloaded under a bar the ten labels pass.
    let train_url = "/api/v1/review/admin/train";
    let what = json!({"camera": "cam-a", "zone": "plaza", "state": "crowd_gathering"});
    let r = c.post(&root, train_url, what.clone()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let reload = gridwatch::run::ReloadHandle::default();
    let config = c.config.clone();
    let trainer = |train: TrainOptions| {
        Arc::new(learn::ConsoleTrainer {
            config: config.clone(),
            config_path: None,
            reload: reload.clone(),
            train,
        })
    };
    let strict = trainer(TrainOptions::default());
    c.set_trainer(strict);
    let root = c.login("root").await;
    let s = c.login("alice").await;
    let r = c.post(&s, train_url, what.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "reviewers do not train");
    let wrong = json!({"camera": "cam-a", "zone": "plaza", "state": "waterlogging"});
    let r = c.post(&root, train_url, wrong).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = c.post(&root, train_url, what.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let why = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains("label"),
        "the refusal says what is missing: {why}"
    );
    assert!(!reload.is_requested());
    let lowered = TrainOptions {
        bar: QualityBar {
            min_precision: 0.0,
            min_recall: 0.0,
            min_labels_per_class: 2,
            min_held_out_per_class: 1,
        },
        ..Default::default()
    };
    c.set_trainer(trainer(lowered));
    // The direct run above saved its card there: gone, so the button must write its own.
    std::fs::remove_dir_all(c.config.resolve(std::path::Path::new("cards"))).unwrap();
    let r = c.post(&root, train_url, what).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(!r.json()["lines"].as_array().unwrap().is_empty());
    assert!(
        reload.is_requested(),
        "the pipeline is asked to load the card"
    );
    let cards = gridwatch::states::scorer::card_identities(
        &c.config.resolve(std::path::Path::new("cards")),
    );
    assert!(
        cards.contains(&("cam-a".into(), "plaza".into(), "crowd_gathering".into())),
        "{cards:?}"
    );
    let audit = c.get(&root, "/api/v1/review/audit").await;
    assert_eq!(
        String::from_utf8_lossy(&audit.body)
            .matches("train_zone_state")
            .count(),
        2,
        "both attempts audited"
    );
}

/// A held case of a learned zone state, reviewed, labels its frame for that state: confirmed →
/// present, rejected or confirmed as another scenario → clear. Cases of objects make no label
/// by review, but any case that kept its frame can be labelled from the history.
#[tokio::test]
async fn reviews_of_a_zone_states_held_cases_become_labels_of_their_frames() {
    let c = Console::new();
    let state = Detection {
        class_id: gridwatch::states::scorer::STATE_CLASS_ID,
        label: Arc::from(gridwatch::area::kinds::state_label("crowd_gathering")),
        kind: ObjectKind::Person,
        score: 0.7,
        bbox: [0.0, 0.0, 1.0, 1.0],
    };
    let events: Vec<Event> = (0..4)
        .map(|n| {
            let mut e = c.event(0, 0.7, frame(0, "cam-a", n));
            if n < 3 {
                e.objects = vec![state.clone()];
            }
            e
        })
        .collect();
    c.run_case_stage(events).unwrap();
    let held: Vec<String> = c
        .state
        .store
        .queue(&Default::default())
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(held.len(), 4, "all four held for review");
    let s = c.login("alice").await;
    let ok = |r: Reply| assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    ok(c.post(&s, &item_path(&held[0], "confirm"), json!({})).await);
    ok(c.post(&s, &item_path(&held[1], "reject"), json!({})).await);
    let other = json!({ "scenario": "illegal_parking" });
    ok(c.post(&s, &item_path(&held[2], "confirm"), other).await);
    ok(c.post(&s, &item_path(&held[3], "reject"), json!({})).await);

    // From the history: the object case kept its frame (it was held), so it can be labelled;
    // an automatically dispatched object case kept none.
    let auto = c.events(&[(0, 0.95)]);
    // A confident state case goes out at once and still keeps its frame.
    let mut sure = c.event(0, 0.95, frame(0, "cam-a", 9));
    sure.objects = vec![state.clone()];
    c.run_case_stage(vec![sure]).unwrap();
    let sure_id = c
        .state
        .store
        .history(1, None)
        .unwrap()
        .pop()
        .map(|h| h.item.id)
        .unwrap();
    assert_eq!(
        c.state_of(&sure_id),
        "pending",
        "not held: it was confident"
    );
    let history = c.get(&s, "/api/v1/review/cases").await.json();
    let kept = |id: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .map(|h| h["frame_kept"].clone())
    };
    assert_eq!(kept(&held[3]), Some(json!(true)));
    assert_eq!(kept(&auto[0]), Some(json!(false)));
    assert_eq!(kept(&sure_id), Some(json!(true)));
    let label = |present: bool| json!({"state": "crowd_gathering", "present": present});
    let r = c
        .post(&s, &item_path(&held[3], "labels"), label(true))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = c
        .post(&s, &item_path(&auto[0], "labels"), label(true))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "no frame kept");
    let r = c
        .post(&s, &item_path("no-such-case", "labels"), label(true))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let not_there = json!({"state": "waterlogging", "present": true});
    let r = c.post(&s, &item_path(&held[3], "labels"), not_there).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let labels = c
        .state
        .store
        .zone_labels("cam-a", "plaza", "crowd_gathering")
        .unwrap();
    let got: Vec<(Option<&str>, bool)> = labels
        .iter()
        .map(|l| (l.case_id.as_deref(), l.present))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(held[0].as_str()), true),
            (Some(held[1].as_str()), false),
            (Some(held[2].as_str()), false),
            (Some(held[3].as_str()), true),
        ],
        "the object case's review made no label; its history label did"
    );
    for l in &labels {
        assert_eq!(l.user, "alice");
        let img = image::load_from_memory(&l.frame).expect("the clean frame decodes");
        assert!(img.width() > 0);
    }
    let audit = c.state.store.audit_log(50).unwrap();
    assert_eq!(
        audit.iter().filter(|a| a.action == "label_zone").count(),
        labels.len()
    );
}
