//! The loop back to the pipeline, over real HTTP on loopback: the status feed, the pipeline's
//! updates and what they change, and the webhook (received by a local axum server) with its
//! retries and its durable cursor.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gridwatch_case::platform::{SIGNATURE_HEADER, UPDATE_SCHEMA, verify};
use gridwatch_case::{CaseCamera, CaseEpisode, CaseScenario, CaseZone, Named};
use reqwest::StatusCode as Http;
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;

const TOKEN: &str = "t0ken";
const SECRET: &str = "hook-s3cret";
const JPEG: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 0xff, 0xd9,
];

/// A folder of its own for one test's database, removed afterwards.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("gw-dispatch-ref-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDb(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("dispatch.sqlite")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A serving receiver and the client that talks to it.
struct Running {
    base: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), ReceiverError>>,
}

impl Running {
    async fn start(db: &Path, webhook: Option<Webhook>) -> Self {
        let rx = Receiver::bind_with("127.0.0.1:0", db, Some(TOKEN.into()), webhook)
            .await
            .unwrap();
        let base = format!("http://{}", rx.local_addr());
        let (stop, stopped) = oneshot::channel();
        let served = tokio::spawn(rx.serve(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Running {
            base,
            client,
            stop,
            served,
        }
    }

    /// Stops serving and the webhook with it.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("the receiver and its webhook stop on shutdown")
            .unwrap()
            .unwrap();
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    async fn intake(&self) -> StoredCase {
        let case = case();
        let r = self
            .post(CASES_PATH)
            .header("Idempotency-Key", case.id.to_string())
            .json(&case)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::CREATED);
        r.json::<IntakeResponse>().await.unwrap().case
    }

    async fn advance(&self, id: &str, status: &str) -> Http {
        self.post(&format!("{CASES_PATH}/{id}/status"))
            .json(&json!({ "status": status, "note": "巡查员到场" }))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn case(&self, id: &str) -> StoredCase {
        let r = self
            .get(&format!("{CASES_PATH}/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::OK);
        r.json().await.unwrap()
    }

    async fn feed(&self, after: i64) -> Vec<StatusEvent> {
        let r = self
            .get(&format!("{STATUS_EVENTS_PATH}?after={after}&limit=1000"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::OK);
        r.json::<StatusFeed>().await.unwrap().events
    }

    /// POSTs `body` as an update of `case_id` with `key`; the status and the answer's JSON.
    async fn update(&self, case_id: &str, key: Option<&str>, body: &Value) -> (Http, Value) {
        let mut r = self.post(&format!("{CASES_PATH}/{case_id}/updates"));
        if let Some(key) = key {
            r = r.header("Idempotency-Key", key);
        }
        let r = r.json(body).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Sends a new update of `kind` about `case`, expecting it stored (201).
    async fn send(
        &self,
        case: &str,
        kind: UpdateKind,
        edit: impl FnOnce(&mut CaseUpdate),
    ) -> Value {
        let mut u = update(case, kind);
        edit(&mut u);
        let (status, answer) = self
            .update(
                case,
                Some(&u.id.to_string()),
                &serde_json::to_value(&u).unwrap(),
            )
            .await;
        assert_eq!(status, Http::CREATED, "{answer}");
        answer
    }
}

fn case() -> Case {
    let now = OffsetDateTime::now_utc();
    let named = |id: &str, name: &str| Named {
        id: id.into(),
        name: name.into(),
    };
    Case {
        schema: CASE_SCHEMA.into(),
        id: Uuid::now_v7(),
        source: "ai_video".into(),
        scenario: CaseScenario {
            id: "crowd_gathering".into(),
            name_zh: "人员聚集".into(),
            name_en: "crowd gathering".into(),
            category_code: String::new(),
            category_major: String::new(),
            category_minor: String::new(),
        },
        department: "公安".into(),
        workstation: "联勤联动工作站".into(),
        handling_level: HandlingLevel::General,
        deadline_minutes: 30,
        deadline_at: deadline(now, HandlingLevel::General),
        unit: named("u1", "商业商务区"),
        group: named("g1", "一组"),
        camera: CaseCamera {
            id: "cam-1".into(),
            name: "东门".into(),
            gb28181_device_id: None,
            gb28181_channel_id: None,
        },
        location: "东门广场".into(),
        lat: None,
        lon: None,
        zone: CaseZone {
            id: "z1".into(),
            name: "广场".into(),
            polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
        },
        first_seen_at: now,
        confirmed_at: now,
        confidence: 0.9,
        objects: Vec::new(),
        episode: CaseEpisode {
            started_media_seconds: 0.0,
            confirmed_media_seconds: 1.0,
            frame_seq: 1,
        },
        snapshot: CaseSnapshot::inline_jpeg(JPEG, 4, 4),
        crop: None,
        reported_by: None,
    }
}

fn update(case_id: &str, kind: UpdateKind) -> CaseUpdate {
    CaseUpdate {
        schema: UPDATE_SCHEMA.into(),
        id: Uuid::now_v7(),
        case_id: Uuid::parse_str(case_id).unwrap(),
        kind,
        kind_zh: kind.name_zh().into(),
        at: OffsetDateTime::now_utc(),
        note: None,
        handling_level: None,
        deadline_at: None,
        station: None,
        snapshot: None,
    }
}

/// (case, status, note) of each event, for comparing feeds.
fn summary(events: &[StatusEvent]) -> Vec<(String, PlatformStatus, Option<String>)> {
    events
        .iter()
        .map(|e| (e.case_id.clone(), e.status, e.note.clone()))
        .collect()
}

fn assert_increasing(events: &[StatusEvent]) {
    assert!(
        events.windows(2).all(|w| w[0].event_id < w[1].event_id),
        "event ids strictly increase: {:?}",
        events.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_lists_intake_and_every_status_change_in_order() {
    let dir = TempDb::new();
    let rx = Running::start(&dir.path(), None).await;
    let a = rx.intake().await.id;
    let b = rx.intake().await.id;
    assert_eq!(rx.advance(&a, "dispatched").await, Http::OK);
    assert_eq!(
        rx.advance(&a, "closed").await,
        Http::CONFLICT,
        "no skipping"
    );
    assert_eq!(rx.advance(&a, "handling").await, Http::OK);
    assert_eq!(
        rx.advance(&a, "returned").await,
        Http::CONFLICT,
        "handled: no return"
    );
    assert_eq!(
        rx.advance(&a, "verified").await,
        Http::CONFLICT,
        "核查 comes from the camera"
    );
    assert_eq!(rx.advance(&a, "closed").await, Http::OK);
    assert_eq!(rx.advance(&b, "returned").await, Http::OK);
    assert_eq!(
        rx.advance(&b, "dispatched").await,
        Http::CONFLICT,
        "returned is settled"
    );

    let events = rx.feed(0).await;
    use PlatformStatus as S;
    let note = Some("巡查员到场".to_owned());
    assert_eq!(
        summary(&events),
        vec![
            (a.clone(), S::Registered, None),
            (b.clone(), S::Registered, None),
            (a.clone(), S::Dispatched, note.clone()),
            (a.clone(), S::Handling, note.clone()),
            (a.clone(), S::Closed, note.clone()),
            (b.clone(), S::Returned, note.clone()),
        ]
    );
    assert_increasing(&events);
    assert_eq!(
        rx.feed(events[2].event_id).await,
        events[3..].to_vec(),
        "after"
    );
    assert!(rx.feed(events[5].event_id).await.is_empty());

    let page: StatusFeed = rx
        .get(&format!("{STATUS_EVENTS_PATH}?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page.events,
        events[..2].to_vec(),
        "limit, from the start by default"
    );
    for bad in ["limit=0", "limit=1001", "after=x"] {
        let r = rx
            .get(&format!("{STATUS_EVENTS_PATH}?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::BAD_REQUEST, "{bad}");
    }
    let anonymous = rx
        .client
        .get(format!("{}{STATUS_EVENTS_PATH}", rx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), Http::UNAUTHORIZED, "behind the token");

    let returned = rx.case(&b).await;
    assert_eq!(
        (
            returned.status_zh.as_str(),
            returned.overdue,
            returned.time_left_seconds
        ),
        ("退回", false, None)
    );
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_idempotent_by_key() {
    let dir = TempDb::new();
    let rx = Running::start(&dir.path(), None).await;
    let id = rx.intake().await.id;
    let u = update(&id, UpdateKind::Reminder);
    let key = u.id.to_string();
    let body = serde_json::to_value(&u).unwrap();

    let (status, first) = rx.update(&id, Some(&key), &body).await;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (Http::CREATED, Some("stored"))
    );
    let (status, again) = rx.update(&id, Some(&key), &body).await;
    assert_eq!(
        (status, again["outcome"].as_str()),
        (Http::OK, Some("duplicate"))
    );
    assert_eq!(again["update"]["deliveries"], 2);

    let mut other = body.clone();
    other["note"] = json!("另一个");
    assert_eq!(
        rx.update(&id, Some(&key), &other).await.0,
        Http::UNPROCESSABLE_ENTITY,
        "other payload"
    );
    assert_eq!(
        rx.update(&id, None, &body).await.0,
        Http::BAD_REQUEST,
        "no key"
    );
    assert_eq!(
        rx.update(&id, Some(&key), &json!({"x": 1})).await.0,
        Http::UNPROCESSABLE_ENTITY,
        "not an update"
    );
    let elsewhere = rx.intake().await.id;
    let fresh = update(&id, UpdateKind::Reminder);
    let fresh_body = serde_json::to_value(&fresh).unwrap();
    let fresh_key = fresh.id.to_string();
    assert_eq!(
        rx.update(&elsewhere, Some(&fresh_key), &fresh_body).await.0,
        Http::UNPROCESSABLE_ENTITY,
        "case_id is not the path's"
    );
    assert_eq!(
        rx.update(&id, Some(&Uuid::now_v7().to_string()), &fresh_body)
            .await
            .0,
        Http::UNPROCESSABLE_ENTITY,
        "key is not the id"
    );
    let ghost = update(&Uuid::now_v7().to_string(), UpdateKind::Reminder);
    let (status, _) = rx
        .update(
            &ghost.case_id.to_string(),
            Some(&ghost.id.to_string()),
            &serde_json::to_value(&ghost).unwrap(),
        )
        .await;
    assert_eq!(status, Http::NOT_FOUND, "unknown case");

    let listed: Vec<UpdateItem> = rx
        .get(&format!("{CASES_PATH}/{id}/updates"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id.as_str(),
            listed[0].kind,
            listed[0].deliveries,
            listed[0].applied
        ),
        (key.as_str(), UpdateKind::Reminder, 2, false)
    );
    let case = rx.case(&id).await;
    assert_eq!(
        (case.updates, case.status),
        (1, PlatformStatus::Registered),
        "a reminder is only stored"
    );
    assert_eq!(rx.feed(0).await.len(), 2, "two intakes, no other event");
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_move_the_case_where_they_fit_and_show_in_the_feed() {
    use PlatformStatus as S;
    let dir = TempDb::new();
    let rx = Running::start(&dir.path(), None).await;
    let id = rx.intake().await.id;
    let skip = rx.feed(0).await.last().unwrap().event_id;

    // Not handled yet: the camera's verification is stored, and changes nothing.
    let early = rx.send(&id, UpdateKind::Verified, |_| {}).await;
    assert_eq!(
        (
            early["update"]["applied"].as_bool(),
            early["case"]["status"].as_str()
        ),
        (Some(false), Some("registered"))
    );

    assert_eq!(rx.advance(&id, "dispatched").await, Http::OK);
    assert_eq!(rx.advance(&id, "handling").await, Http::OK);
    let reopened = rx.send(&id, UpdateKind::Reopened, |_| {}).await;
    assert_eq!(
        (
            reopened["case"]["status"].as_str(),
            reopened["case"]["reopened"].as_i64()
        ),
        (Some("dispatched"), Some(1))
    );
    assert_eq!(rx.advance(&id, "handling").await, Http::OK);
    let verified = rx
        .send(&id, UpdateKind::Verified, |u| {
            u.snapshot = Some(CaseSnapshot::inline_jpeg(JPEG, 4, 4))
        })
        .await;
    assert_eq!(verified["case"]["status_zh"], "核查");
    let key = verified["update"]["id"].as_str().unwrap().to_owned();
    let jpeg = rx
        .get(&format!("/cases/{id}/updates/{key}/snapshot.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(jpeg.status(), Http::OK);
    assert_eq!(jpeg.bytes().await.unwrap().as_ref(), JPEG);

    rx.send(&id, UpdateKind::Escalated, |u| {
        u.station = Some(Station {
            id: "s1".into(),
            name: "城运中心".into(),
        })
    })
    .await;
    let new_deadline = OffsetDateTime::now_utc() + time::Duration::hours(2);
    rx.send(&id, UpdateKind::LevelChanged, |u| {
        u.handling_level = Some(HandlingLevel::Difficult);
        u.deadline_at = Some(new_deadline);
    })
    .await;
    let case = rx.case(&id).await;
    assert_eq!(case.escalated_to.as_deref(), Some("城运中心"));
    assert_eq!(case.handling_level, HandlingLevel::Difficult);
    assert_eq!(
        OffsetDateTime::parse(&case.deadline_at, &Rfc3339).unwrap(),
        new_deadline
    );
    assert_eq!(
        (case.status, case.reopened, case.updates),
        (S::Verified, 1, 5)
    );
    let board = rx.get("/").send().await.unwrap().text().await.unwrap();
    assert!(
        board.contains("城运中心") && board.contains("核查"),
        "the board shows 督办 and 核查"
    );
    assert!(
        board.contains("<td class=\"reopened\">1</td>"),
        "and the reopened count"
    );
    assert_eq!(rx.advance(&id, "closed").await, Http::OK, "核查 → 结案");

    let other = rx.intake().await.id;
    let resolved = rx.send(&other, UpdateKind::SelfResolved, |_| {}).await;
    assert_eq!(resolved["case"]["status"], "closed");

    let events = rx.feed(skip).await;
    assert_increasing(&events);
    let at = |s: &str| Some(s.to_owned());
    let level_note = format!("等级调整：difficult，时限 {}", case.deadline_at);
    assert_eq!(
        summary(&events),
        vec![
            (id.clone(), S::Dispatched, at("巡查员到场")),
            (id.clone(), S::Handling, at("巡查员到场")),
            (id.clone(), S::Dispatched, at("核查不通过")),
            (id.clone(), S::Handling, at("巡查员到场")),
            (id.clone(), S::Verified, at("核查通过")),
            (id.clone(), S::Verified, at("督办：城运中心")),
            (id.clone(), S::Verified, Some(level_note)),
            (id.clone(), S::Closed, at("巡查员到场")),
            (other.clone(), S::Registered, None),
            (other.clone(), S::Closed, at("自行消除")),
        ]
    );
    let kinds: Vec<UpdateKind> = rx
        .get(&format!("{CASES_PATH}/{id}/updates"))
        .send()
        .await
        .unwrap()
        .json::<Vec<UpdateItem>>()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.kind)
        .collect();
    use UpdateKind as K;
    assert_eq!(
        kinds,
        vec![
            K::Verified,
            K::Reopened,
            K::Verified,
            K::Escalated,
            K::LevelChanged
        ],
        "oldest first"
    );
    rx.stop().await;
}

/// What the webhook's receiver got: the events it took, and what it refused.
#[derive(Default)]
struct HookLog {
    events: Vec<StatusEvent>,
    /// Requests still to answer 503 (the receiver failing).
    refuse: usize,
    refused: usize,
    problems: Vec<String>,
}

type Hook = Arc<Mutex<HookLog>>;

async fn hook(State(log): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut log = log.lock().unwrap();
    if log.refuse > 0 {
        log.refuse -= 1;
        log.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if text("content-type") != "application/json" {
        log.problems
            .push(format!("content type {}", text("content-type")));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = verify(SECRET.as_bytes(), &text(SIGNATURE_HEADER), &body, now) {
        log.problems.push(format!("signature: {e}"));
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice(&body) {
        Ok(event) => log.events.push(event),
        Err(e) => log.problems.push(format!("body: {e}")),
    }
    StatusCode::OK
}

/// Serves the webhook's receiver on `listener` until the sender is used or dropped.
fn serve_hook(listener: tokio::net::TcpListener, log: Hook) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let app = Router::new().route("/hook", post(hook)).with_state(log);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    stop
}

fn webhook(addr: SocketAddr) -> Webhook {
    Webhook {
        url: format!("http://{addr}/hook"),
        secret: SECRET.into(),
    }
}

fn stored_cursor(db: &Path, url: &str) -> Option<i64> {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT after FROM webhook_cursor WHERE url = ?1",
            params![url],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
}

/// Waits until the hook holds `n` events, then a while longer for any extra (duplicate) one.
async fn settled(log: &Hook, n: usize) -> Vec<StatusEvent> {
    wait_until("the webhook's deliveries", Duration::from_secs(30), || {
        log.lock().unwrap().events.len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let log = log.lock().unwrap();
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    log.events.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_delivers_every_event_once_in_order_signed_and_retries_failures() {
    let dir = TempDb::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_at = listener.local_addr().unwrap();
    let log: Hook = Arc::new(Mutex::new(HookLog {
        refuse: 2,
        ..HookLog::default()
    }));
    let _hook = serve_hook(listener, log.clone());
    let rx = Running::start(&dir.path(), Some(webhook(hook_at))).await;
    let a = rx.intake().await.id;
    let b = rx.intake().await.id;
    assert_eq!(rx.advance(&a, "dispatched").await, Http::OK);
    assert_eq!(rx.advance(&b, "returned").await, Http::OK);
    assert_eq!(rx.advance(&a, "handling").await, Http::OK);
    rx.send(&a, UpdateKind::Verified, |_| {}).await;

    let expected = rx.feed(0).await;
    assert_eq!(expected.len(), 6);
    assert_eq!(
        settled(&log, expected.len()).await,
        expected,
        "every event once, in order"
    );
    assert_eq!(log.lock().unwrap().refused, 2, "the failures were retried");
    rx.stop().await;
    let url = webhook(hook_at).url;
    assert_eq!(stored_cursor(&dir.path(), &url), Some(expected[5].event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_resumes_from_its_cursor_after_its_receiver_and_the_service_were_down() {
    let dir = TempDb::new();
    // A port with nothing on it yet: the receiver is down.
    let hook_at = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let first = Running::start(&dir.path(), Some(webhook(hook_at))).await;
    let id = first.intake().await.id;
    assert_eq!(first.advance(&id, "dispatched").await, Http::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stored_cursor(&dir.path(), &webhook(hook_at).url),
        None,
        "nothing taken while down"
    );

    let log: Hook = Arc::default();
    let _hook = serve_hook(
        tokio::net::TcpListener::bind(hook_at).await.unwrap(),
        log.clone(),
    );
    assert_eq!(settled(&log, 2).await, first.feed(0).await);
    first.stop().await;

    // The service runs a while without its webhook; the next start sends only what came since.
    let quiet = Running::start(&dir.path(), None).await;
    assert_eq!(quiet.advance(&id, "handling").await, Http::OK);
    quiet.send(&id, UpdateKind::Reopened, |_| {}).await;
    quiet.stop().await;
    let again = Running::start(&dir.path(), Some(webhook(hook_at))).await;
    let all = again.feed(0).await;
    assert_eq!(all.len(), 4);
    assert_eq!(
        settled(&log, 4).await,
        all,
        "resumed after the cursor: nothing skipped or repeated"
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_written_before_the_feed_keeps_its_order() {
    let dir = TempDb::new();
    let path = dir.path();
    {
        // A database of the release before the feed (steps 1 and 2), with a history.
        let mut conn = Connection::open(&path).unwrap();
        gridwatch_sqlite::migrate(&mut conn, &MIGRATIONS[..2]).unwrap();
        conn.execute_batch(
            "INSERT INTO received (id, received_at, body_sha256, body, scenario, camera, unit, first_seen_at, confidence)
                VALUES ('old-1', '2026-01-01T00:00:00Z', 'sha', '{}', 'crowd_gathering', 'cam-1', 'u', '2026-01-01T00:00:00Z', 0.8);
             UPDATE received SET status = 'dispatched' WHERE id = 'old-1';
             INSERT INTO case_history (case_id, status, at) VALUES ('old-1', 'registered', '2026-01-01T00:00:00Z');
             INSERT INTO case_history (case_id, status, at, note) VALUES ('old-1', 'dispatched', '2026-01-01T00:01:00Z', 'x');",
        )
        .unwrap();
    }
    let rx = Running::start(&path, None).await;
    let events = rx.feed(0).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_id, e.status))
            .collect::<Vec<_>>(),
        vec![
            (1, PlatformStatus::Registered),
            (2, PlatformStatus::Dispatched)
        ]
    );
    assert_eq!(rx.advance("old-1", "handling").await, Http::OK);
    assert_eq!(rx.feed(2).await[0].event_id, 3, "new events follow the old");
    let old = rx.case("old-1").await;
    assert_eq!((old.reopened, old.escalated_to, old.updates), (0, None, 0));
    rx.stop().await;
}

#[test]
fn the_openapi_document_describes_the_feed_and_the_updates() {
    let doc = serde_json::to_value(openapi()).unwrap();
    for path in [STATUS_EVENTS_PATH, "/api/v1/cases/{id}/updates"] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    assert!(
        doc["paths"]["/api/v1/cases/{id}/updates"]
            .get("post")
            .is_some()
    );
    for schema in [
        "StatusEvent",
        "StatusFeed",
        "CaseUpdate",
        "UpdateKind",
        "PlatformStatus",
        "UpdateItem",
        "UpdateResponse",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }
    let statuses = &doc["components"]["schemas"]["PlatformStatus"]["enum"];
    assert_eq!(statuses.as_array().map(Vec::len), Some(6), "{statuses}");
}

#[test]
fn a_webhook_needs_an_http_url() {
    let dir = TempDb::new();
    for url in ["not a url", "ftp://example.org/x"] {
        let w = Webhook {
            url: url.into(),
            secret: SECRET.into(),
        };
        assert!(
            matches!(
                router_with(&dir.path(), None, Some(w)),
                Err(ReceiverError::Webhook { .. })
            ),
            "{url}"
        );
    }
}
