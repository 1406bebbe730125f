//! Delivery against real HTTP peers over loopback and a real SQLite outbox: how responses are
//! classified, the circuit breaker, the drain bound, multipart and field mapping, the outbox
//! status route and the `gridwatch outbox` command, and a restart resuming undelivered cases.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use gridwatch::cases::outbox::Outbox;
use gridwatch::dispatch::settings::DispatchSettings;
use gridwatch::dispatch::{Delivery, Phase};
use serde_json::Value;

use crate::dispatch_support::{
    TOKEN, TestReceiver, case, committed, free_port, gridwatch, received, spawn_run,
    terminate_after_exit, write_run_config,
};
use crate::support::TempDir;

/// One request as a scripted peer saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    key: String,
    auth: String,
    content_type: String,
    body: Bytes,
}

#[derive(Default)]
struct Script {
    /// Statuses to answer per key, in order; then 201.
    per_key: HashMap<String, VecDeque<u16>>,
    /// Answer 503 to everything until then.
    unhealthy_until: Option<Instant>,
    /// Hold every request this long before answering.
    hang: Option<Duration>,
    seen: Vec<Seen>,
}

/// A dispatch API peer on loopback that answers as scripted and records what it got.
struct Scripted {
    url: String,
    script: Arc<Mutex<Script>>,
    _rt: tokio::runtime::Runtime,
}

impl Scripted {
    fn start(script: Script) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let script = Arc::new(Mutex::new(script));
        let state = script.clone();
        let app = axum::Router::new().route(
            "/cases",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let key = h("idempotency-key");
                    let (status, hang) = {
                        let mut s = state.lock().unwrap();
                        s.seen.push(Seen {
                            at: Instant::now(),
                            key: key.clone(),
                            auth: h("authorization"),
                            content_type: h("content-type"),
                            body,
                        });
                        let status = if s.unhealthy_until.is_some_and(|t| Instant::now() < t) {
                            503
                        } else {
                            s.per_key
                                .get_mut(&key)
                                .and_then(|q| q.pop_front())
                                .unwrap_or(201)
                        };
                        (status, s.hang)
                    };
                    if let Some(d) = hang {
                        tokio::time::sleep(d).await;
                    }
                    (
                        StatusCode::from_u16(status).unwrap(),
                        format!("scripted {status}"),
                    )
                }
            }),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/cases", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Scripted {
            url,
            script,
            _rt: rt,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

/// Test defaults (fast retries), overridden by `extra` (TOML of `[dispatch]`).
fn settings(extra: &str) -> DispatchSettings {
    let mut table: toml::Table = toml::from_str(&format!(
        "bearer_token = \"{TOKEN}\"\ntimeout_seconds = 5.0\nretry_initial_seconds = 0.02\nretry_max_seconds = 0.1"
    ))
    .unwrap();
    table.extend(toml::from_str::<toml::Table>(extra).unwrap());
    table.try_into().unwrap()
}

/// Stores `n` valid cases in a fresh outbox; returns their ids and bodies.
fn fill(path: &Path, n: usize) -> Vec<(String, String)> {
    let mut outbox = Outbox::open(path).unwrap();
    (0..n)
        .map(|_| {
            let c = case(1, "u");
            let body = serde_json::to_string(&c).unwrap();
            outbox
                .insert(
                    &c.id.to_string(),
                    "crowd_gathering",
                    "cam-1",
                    &body,
                    &c.snapshot.jpeg().unwrap(),
                )
                .unwrap();
            (c.id.to_string(), body)
        })
        .collect()
}

/// Runs delivery until the outbox is drained or `within` passes.
fn drain(settings: DispatchSettings, url: &str, outbox: &Path, within: Duration) -> Duration {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let delivery = Delivery::new(settings, url.to_owned(), Outbox::open(outbox).unwrap()).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(Phase::Drain {
        deadline: Instant::now() + within,
    });
    let start = Instant::now();
    rt.block_on(delivery.run(Arc::new(tokio::sync::Notify::new()), rx))
        .unwrap();
    start.elapsed()
}

fn outbox_rows(path: &Path) -> HashMap<String, (String, u32, Option<String>)> {
    Outbox::open(path)
        .unwrap()
        .list(None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| (e.id, (e.state, e.attempts, e.last_error)))
        .collect()
}

#[test]
fn responses_are_classified() {
    let dir = TempDir::new("classify");
    let path = dir.path("outbox.sqlite");
    let cases = fill(&path, 6);
    let ids: Vec<&str> = cases.iter().map(|(id, _)| id.as_str()).collect();
    let mut script = Script::default();
    for (id, statuses) in ids.iter().zip([
        vec![400],
        vec![422],
        vec![503, 500],
        vec![409],
        vec![],
        vec![413],
    ]) {
        script.per_key.insert((*id).to_owned(), statuses.into());
    }
    let peer = Scripted::start(script);
    drain(
        settings("breaker_failure_threshold = 100"),
        &peer.url,
        &path,
        Duration::from_secs(20),
    );

    let rows = outbox_rows(&path);
    let state = |i: usize| rows[ids[i]].clone();
    assert_eq!(state(0).0, "dead");
    assert!(
        state(0)
            .2
            .as_deref()
            .unwrap()
            .starts_with("HTTP 400: scripted 400"),
        "{:?}",
        state(0)
    );
    assert_eq!(state(1).0, "dead");
    assert!(state(1).2.as_deref().unwrap().starts_with("HTTP 422"));
    assert_eq!(
        (state(2).0.as_str(), state(2).1),
        ("delivered", 3),
        "5xx retried until 2xx"
    );
    assert_eq!(
        (state(3).0.as_str(), state(3).1),
        ("delivered", 2),
        "409 retried later"
    );
    assert_eq!((state(4).0.as_str(), state(4).1), ("delivered", 1));
    assert_eq!(state(5).0, "dead", "413: the case will never fit");

    let seen = peer.seen();
    assert_eq!(seen.len(), 1 + 1 + 3 + 2 + 1 + 1);
    for s in &seen {
        let body = &cases
            .iter()
            .find(|(id, _)| *id == s.key)
            .expect("key is a case id")
            .1;
        assert_eq!(s.body.as_ref(), body.as_bytes(), "the stored body, as is");
        assert_eq!(s.auth, format!("Bearer {TOKEN}"));
        assert_eq!(s.content_type, "application/json");
    }
}

#[test]
fn the_circuit_breaker_backs_off_the_whole_endpoint() {
    let dir = TempDir::new("breaker");
    let path = dir.path("outbox.sqlite");
    fill(&path, 5);
    let healthy_at = Instant::now() + Duration::from_millis(1500);
    let peer = Scripted::start(Script {
        unhealthy_until: Some(healthy_at),
        ..Script::default()
    });
    // Backoff alone would retry every 10-20 ms: ~100 requests in 1.5 s.
    let s = settings(
        "retry_initial_seconds = 0.01\nretry_max_seconds = 0.02\nbreaker_failure_threshold = 3\nbreaker_open_seconds = 0.5",
    );
    drain(s, &peer.url, &path, Duration::from_secs(20));

    let seen = peer.seen();
    let failing: Vec<Instant> = seen
        .iter()
        .map(|s| s.at)
        .filter(|t| *t < healthy_at)
        .collect();
    println!(
        "breaker: {} requests while the endpoint failed for 1.5 s, {} in all",
        failing.len(),
        seen.len()
    );
    assert!(
        (3..=7).contains(&failing.len()),
        "3 failures, then one probe per 0.5 s: {}",
        failing.len()
    );
    for w in failing.windows(2).skip(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(450),
            "open for 0.5 s between probes: {:?}",
            w[1] - w[0]
        );
    }
    let rows = outbox_rows(&path);
    assert!(rows.values().all(|r| r.0 == "delivered"), "{rows:?}");
    assert_eq!(
        seen.len(),
        failing.len() + 5,
        "after the probe succeeds, one request per case"
    );
}

#[test]
fn shutdown_cuts_a_hanging_request_at_the_drain_deadline() {
    let dir = TempDir::new("drain");
    let path = dir.path("outbox.sqlite");
    fill(&path, 2);
    let peer = Scripted::start(Script {
        hang: Some(Duration::from_secs(30)),
        ..Script::default()
    });
    let took = drain(
        settings("timeout_seconds = 20.0"),
        &peer.url,
        &path,
        Duration::from_secs(1),
    );
    assert!(
        took < Duration::from_secs(3),
        "bounded by the drain deadline, not the 20 s timeout: {took:?}"
    );
    let rows = outbox_rows(&path);
    assert!(
        rows.values().all(|r| r.0 == "pending"),
        "left in the outbox: {rows:?}"
    );
}

#[test]
fn multipart_upload_and_field_map() {
    let dir = TempDir::new("multipart");
    let path = dir.path("outbox.sqlite");
    let cases = fill(&path, 2);
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    drain(
        settings("image_upload = \"multipart\""),
        &rx.cases_url(),
        &path,
        Duration::from_secs(20),
    );
    let got = received(&rx.db);
    assert_eq!(got.len(), 2);
    let conn = rusqlite::Connection::open(&rx.db).unwrap();
    for (id, body) in &cases {
        let (stored, snapshot): (String, Vec<u8>) = conn
            .query_row(
                "SELECT body, snapshot FROM received WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let sent: gridwatch::cases::Case = serde_json::from_str(body).unwrap();
        let stored: gridwatch::cases::Case = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored, sent, "the receiver rebuilt the case from its parts");
        assert_eq!(snapshot, sent.snapshot.jpeg().unwrap());
    }

    // Another platform's names.
    let path2 = dir.path("outbox2.sqlite");
    let cases = fill(&path2, 1);
    let peer = Scripted::start(Script::default());
    drain(
        settings("[field_map]\nid = \"caseId\"\nconfirmed_at = \"reportTime\""),
        &peer.url,
        &path2,
        Duration::from_secs(20),
    );
    let seen = peer.seen();
    let v: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(v["caseId"], cases[0].0.as_str());
    assert!(
        v.get("id").is_none() && v.get("reportTime").is_some() && v.get("unit").is_some(),
        "{v}"
    );
}

#[test]
fn outbox_status_route_and_command() {
    let dir = TempDir::new("outbox-cli");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let config = write_run_config(&dir.0, &rx.cases_url(), false, "");
    let path = dir.path("outbox.sqlite");
    // Two cases the receiver refuses (body id differs from the key) and one it takes.
    let good = fill(&path, 1);
    let mut outbox = Outbox::open(&path).unwrap();
    let bad: Vec<String> = (0..2)
        .map(|_| {
            let key = uuid::Uuid::now_v7().to_string();
            let body = serde_json::to_string(&case(1, "u")).unwrap();
            outbox
                .insert(&key, "crowd_gathering", "cam-1", &body, b"x")
                .unwrap();
            key
        })
        .collect();
    drop(outbox);
    drain(
        settings(""),
        &rx.cases_url(),
        &path,
        Duration::from_secs(20),
    );

    // GET /api/v1/outbox
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/api/v1/outbox", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, gridwatch::dispatch::status_routes(path)).await });
    let stats: Value = reqwest::blocking::get(&url).unwrap().json().unwrap();
    assert_eq!(
        (
            stats["pending"].as_u64(),
            stats["delivered"].as_u64(),
            stats["dead_letters"].as_u64()
        ),
        (Some(0), Some(1), Some(2)),
        "{stats}"
    );

    let cli = |args: &[&str]| {
        let out = gridwatch()
            .arg("outbox")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Vec<Value> = cli(&["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut listed_ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    listed_ids.sort();
    let mut bad_sorted: Vec<&str> = bad.iter().map(String::as_str).collect();
    bad_sorted.sort();
    assert_eq!(listed_ids, bad_sorted, "dead letters listed");
    assert!(
        listed
            .iter()
            .all(|e| e["last_error"].as_str().unwrap().contains("HTTP 422"))
    );
    assert!(cli(&["list", "--state", "all"]).contains(&good[0].0));

    assert!(cli(&["retry", &bad[0]]).starts_with("1 dead letter(s) queued"));
    assert!(cli(&["purge", "--all"]).starts_with("1 dead letter(s) purged"));
    let status: Value = serde_json::from_str(&cli(&["status"])).unwrap();
    assert_eq!(
        (status["pending"].as_u64(), status["dead_letters"].as_u64()),
        (Some(1), Some(0)),
        "{status}"
    );
    let out = gridwatch()
        .args(["outbox", "--config"])
        .arg(&config)
        .arg("retry")
        .output()
        .unwrap();
    assert!(!out.status.success(), "retry needs ids or --all");
}

/// A run that ends with its receiver down leaves its cases in the outbox; the next run, with
/// the receiver up, delivers them (and its own) exactly once.
#[test]
fn restart_resumes_undelivered_cases() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("resume");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/cases");
    let config = write_run_config(&dir.0, &url, false, "retry_max_seconds = 1.0");
    let first = spawn_run(&config, &dir.0, "first", 1.0);
    let out = terminate_after_exit(first, Duration::from_secs(90));
    let before = committed(&dir.path("outbox.sqlite"));
    let pending = before.values().filter(|s| *s == "pending").count();
    println!("restart: first run (receiver down): {out}");
    assert!(
        pending >= 1 && pending == before.len(),
        "cases wait in the outbox: {before:?}"
    );

    let rx = TestReceiver::start(&dir.path("r.sqlite"), &format!("127.0.0.1:{port}"));
    let second = spawn_run(&config, &dir.0, "second", 30.0);
    let out = terminate_after_exit(second, Duration::from_secs(90));
    println!("restart: second run (receiver up): {out}");
    let after = committed(&dir.path("outbox.sqlite"));
    let got = received(&rx.db);
    assert!(after.values().all(|s| s == "delivered"), "{after:?}");
    assert!(
        before.keys().all(|id| got.contains_key(id)),
        "the first run's cases arrived"
    );
    assert_eq!(got.len(), after.len(), "nothing else arrived");
    assert!(got.values().all(|n| *n == 1), "each POSTed once: {got:?}");
    println!(
        "restart: {} case(s) left by the first run, {} delivered in all, duplicates 0",
        before.len(),
        got.len()
    );
}
