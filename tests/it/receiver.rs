//! The reference dispatch service over real HTTP: idempotent intake by `Idempotency-Key` (same
//! payload → the stored case and its status, other payload → 422, key in flight → 409, no key →
//! 400), auth, body limit, inline and multipart uploads as one payload, the 立案 → 派遣 → 处置 →
//! 结案 lifecycle with 103060 deadlines and the overdue list, the board, and the OpenAPI document;
//! the token guards every route but `/healthz`, and a browser signs in to the board with a form.

use std::io::{Read, Write};
use std::time::Duration;

use gridwatch_dispatch_ref::{CaseStatus, IntakeResponse, MAX_BODY_BYTES, StoredCase};
use serde_json::Value;

use crate::dispatch_support::{TOKEN, TestReceiver, case};
use crate::support::TempDir;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn post(url: &str, key: Option<&str>, token: &str, body: &str) -> reqwest::blocking::Response {
    let mut r = client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    r.send().unwrap()
}

#[test]
fn intake_is_idempotent_and_cases_follow_their_lifecycle() {
    let dir = TempDir::new("receiver");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let url = rx.cases_url();
    let fresh = case(1, "商业商务区");
    let key = fresh.id.to_string();
    let body = serde_json::to_string(&fresh).unwrap();

    let first = post(&url, Some(&key), TOKEN, &body);
    assert_eq!(first.status(), 201);
    let first: IntakeResponse = first.json().unwrap();
    assert_eq!(
        (first.outcome.as_str(), first.case.status),
        ("stored", CaseStatus::Registered)
    );
    assert_eq!(first.case.status_zh, "立案");
    assert_eq!(
        (
            first.case.department.as_str(),
            first.case.workstation.as_str()
        ),
        ("公安", "联勤联动工作站")
    );
    let left = first.case.time_left_seconds.unwrap();
    assert!(
        (28 * 60..=29 * 60).contains(&left),
        "general level: 30 min from confirmation, 1 min ago: {left}"
    );
    assert!(!first.case.overdue);

    // Lifecycle: only the next status is accepted.
    let advance = |id: &str, status: &str| {
        client()
            .post(format!("{url}/{id}/status"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "status": status, "note": "巡查员到场" }))
            .send()
            .unwrap()
    };
    assert_eq!(
        advance(&key, "handling").status(),
        409,
        "派遣 cannot be skipped"
    );
    let dispatched = advance(&key, "dispatched");
    assert_eq!(dispatched.status(), 200);
    let dispatched: StoredCase = dispatched.json().unwrap();
    assert_eq!(
        (dispatched.status, dispatched.status_zh.as_str()),
        (CaseStatus::Dispatched, "派遣")
    );
    assert!(dispatched.dispatched_at.is_some());
    assert_eq!(advance("no-such-case", "dispatched").status(), 404);
    assert_eq!(advance(&key, "sideways").status(), 422);

    // Same key and payload: the stored case with its current status.
    let again = post(&url, Some(&key), TOKEN, &body);
    assert_eq!(again.status(), 200, "same key, same payload");
    let again: IntakeResponse = again.json().unwrap();
    assert_eq!(
        (
            again.outcome.as_str(),
            again.case.status,
            again.case.deliveries
        ),
        ("duplicate", CaseStatus::Dispatched, 2)
    );
    // The same payload with other key order and spacing is the same payload.
    let reordered: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        post(
            &url,
            Some(&key),
            TOKEN,
            &serde_json::to_string_pretty(&reordered).unwrap()
        )
        .status(),
        200
    );

    let mut other = fresh.clone();
    other.confidence = 0.5;
    assert_eq!(
        post(
            &url,
            Some(&key),
            TOKEN,
            &serde_json::to_string(&other).unwrap()
        )
        .status(),
        422,
        "same key, other payload"
    );
    assert_eq!(post(&url, None, TOKEN, &body).status(), 400, "no key");
    let bad = post(&url, Some(&key), "wrong", &body);
    assert_eq!(bad.status(), 401, "bad token");
    assert_eq!(bad.headers()["www-authenticate"], "Bearer");
    assert_eq!(post(&url, Some(&key), TOKEN, "not json").status(), 400);
    assert_eq!(
        post(&url, Some(&uuid::Uuid::now_v7().to_string()), TOKEN, &body).status(),
        422,
        "id must equal the key"
    );
    let mut not_jpeg = case(1, "u");
    not_jpeg.snapshot.data_base64 = "aGVsbG8=".into();
    assert_eq!(
        post(
            &url,
            Some(&not_jpeg.id.to_string()),
            TOKEN,
            &serde_json::to_string(&not_jpeg).unwrap()
        )
        .status(),
        422
    );
    // Over the body limit: refused from the headers, before the body is read.
    let mut big = std::net::TcpStream::connect(rx.base.trim_start_matches("http://")).unwrap();
    write!(
        big,
        "POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        MAX_BODY_BYTES + 1
    )
    .unwrap();
    let mut answer = [0u8; 12];
    big.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413", "body limit");
    // A chunked body (no length up front) is cut at the limit too.
    let streamed =
        reqwest::blocking::Body::new(std::io::Cursor::new(vec![b' '; MAX_BODY_BYTES + (1 << 20)]));
    let r = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "big2")
        .body(streamed)
        .send();
    assert!(
        r.is_err() || r.unwrap().status() == 413,
        "chunked over the limit"
    );

    // Overdue: a difficult case would have 60 min; this general one was confirmed 45 min ago.
    let late = case(45, "沈泾塘");
    assert_eq!(
        post(
            &url,
            Some(&late.id.to_string()),
            TOKEN,
            &serde_json::to_string(&late).unwrap()
        )
        .status(),
        201
    );
    let overdue: Vec<StoredCase> = client()
        .get(format!("{url}/overdue"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        overdue.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![late.id.to_string()]
    );
    assert!(overdue[0].time_left_seconds.unwrap() <= -14 * 60);
    assert_eq!(
        client()
            .get(format!("{url}/overdue"))
            .send()
            .unwrap()
            .status(),
        401
    );

    // The board: open cases by unit and department, with time left.
    let page = client()
        .get(format!("{}/", rx.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains("商业商务区 · 公安") && page.contains("沈泾塘 · 公安"),
        "{page}"
    );
    assert!(page.contains("2 open case(s), 1 overdue"), "{page}");
    assert!(
        page.contains("超时 overdue 1") && page.contains("剩余 2"),
        "{page}"
    );
    assert!(page.contains(&format!("/cases/{key}/snapshot.jpg")));

    // Closing takes a case off the board; images are served.
    assert_eq!(advance(&key, "handling").status(), 200);
    let closed: StoredCase = advance(&key, "closed").json().unwrap();
    assert_eq!(
        (closed.status, closed.time_left_seconds, closed.overdue),
        (CaseStatus::Closed, None, false)
    );
    assert_eq!(advance(&key, "closed").status(), 409);
    let page = client()
        .get(format!("{}/", rx.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains("1 open case(s), 1 overdue") && !page.contains("商业商务区 · 公安"),
        "{page}"
    );
    let snap = client()
        .get(format!("{}/cases/{key}/snapshot.jpg", rx.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(snap.headers()["content-type"], "image/jpeg");
    assert_eq!(
        snap.bytes().unwrap().to_vec(),
        fresh.snapshot.jpeg().unwrap()
    );
    let crop = client()
        .get(format!("{}/cases/{key}/crop.jpg", rx.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(
        crop.bytes().unwrap().to_vec(),
        fresh.crop.unwrap().jpeg().unwrap()
    );

    let listed: Vec<StoredCase> = client()
        .get(format!("{url}?status=closed"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        client()
            .get(format!("{url}?status=nope"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status(),
        400
    );

    // The OpenAPI document describes the case and the routes.
    let spec: Value = client()
        .get(format!("{}/api/v1/openapi.json", rx.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    for path in [
        "/api/v1/cases",
        "/api/v1/cases/overdue",
        "/api/v1/cases/{id}/status",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
    let case_props = &spec["components"]["schemas"]["Case"]["properties"];
    for field in gridwatch::cases::CASE_FIELDS {
        assert!(case_props.get(*field).is_some(), "Case.{field} documented");
    }
}

/// A slow first request holds its key: a second one with the same key meanwhile is 409, and
/// the first still succeeds.
#[test]
fn a_key_still_being_processed_is_409() {
    let dir = TempDir::new("receiver-409");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let c = case(1, "u");
    let key = c.id.to_string();
    let body = serde_json::to_string(&c).unwrap();
    let addr = rx.base.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(&body.as_bytes()[..10]).unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let second = post(&rx.cases_url(), Some(&key), TOKEN, &body);
    assert_eq!(second.status(), 409);
    assert_eq!(second.headers()["retry-after"], "1");

    slow.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(
        post(&rx.cases_url(), Some(&key), TOKEN, &body).status(),
        200,
        "then the stored case"
    );
}

/// A multipart upload (case JSON + image parts) is the same payload as the inline one.
#[test]
fn multipart_and_inline_uploads_are_one_payload() {
    let dir = TempDir::new("receiver-mp");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let c = case(1, "u");
    let key = c.id.to_string();
    // Through text, as the sender does (to_value would widen the f32 fields differently).
    let mut stripped: Value = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    for f in ["snapshot", "crop"] {
        let img = stripped[f].as_object_mut().unwrap();
        img.remove("data_base64");
        img.insert("part".into(), f.into());
    }
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "case",
            reqwest::blocking::multipart::Part::text(stripped.to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "snapshot",
            reqwest::blocking::multipart::Part::bytes(c.snapshot.jpeg().unwrap())
                .file_name("snapshot.jpg"),
        )
        .part(
            "crop",
            reqwest::blocking::multipart::Part::bytes(c.crop.as_ref().unwrap().jpeg().unwrap())
                .file_name("crop.jpg"),
        );
    let r = client()
        .post(rx.cases_url())
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", &key)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let inline = post(
        &rx.cases_url(),
        Some(&key),
        TOKEN,
        &serde_json::to_string(&c).unwrap(),
    );
    assert_eq!(
        inline.status(),
        200,
        "the inline upload of the same case is a repeat"
    );
    let stored: IntakeResponse = inline.json().unwrap();
    assert_eq!(
        (
            stored.case.snapshot_bytes as usize,
            stored.case.crop_bytes as usize
        ),
        (
            c.snapshot.jpeg().unwrap().len(),
            c.crop.unwrap().jpeg().unwrap().len()
        )
    );

    // A part that is named but missing is not a case.
    let c2 = case(1, "u");
    let mut v: Value = serde_json::to_value(&c2).unwrap();
    v["snapshot"].as_object_mut().unwrap().remove("data_base64");
    v["snapshot"]["part"] = "snapshot".into();
    let form = reqwest::blocking::multipart::Form::new().text("case", v.to_string());
    let r = client()
        .post(rx.cases_url())
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", c2.id.to_string())
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
}

/// Every route of a server with a token, as (method, path): each answers 401 without the token.
fn guarded_routes(id: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/".into()),
        (Method::GET, "/api/v1/openapi.json".into()),
        (Method::POST, "/api/v1/cases".into()),
        (Method::GET, "/api/v1/cases".into()),
        (Method::GET, "/api/v1/cases/overdue".into()),
        (Method::GET, format!("/api/v1/cases/{id}")),
        (Method::POST, format!("/api/v1/cases/{id}/status")),
        (Method::GET, format!("/cases/{id}/snapshot.jpg")),
        (Method::GET, format!("/cases/{id}/crop.jpg")),
        (Method::POST, "/login".into()),
    ]
}

#[test]
fn every_route_but_health_needs_the_token() {
    let dir = TempDir::new("receiver-auth");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let stored = case(1, "商业商务区");
    let id = stored.id.to_string();
    let body = serde_json::to_string(&stored).unwrap();
    assert_eq!(post(&rx.cases_url(), Some(&id), TOKEN, &body).status(), 201);

    let health = client().get(format!("{}/healthz", rx.base)).send().unwrap();
    assert_eq!(health.status(), 200, "/healthz stays open");

    for (method, path) in guarded_routes(&id) {
        let url = format!("{}{path}", rx.base);
        for (how, request) in [
            ("no token", client().request(method.clone(), &url)),
            (
                "a wrong token",
                client().request(method.clone(), &url).bearer_auth("wrong"),
            ),
            (
                "a wrong token of the right length",
                client()
                    .request(method.clone(), &url)
                    .bearer_auth("s3cret-tokem"),
            ),
            (
                "a forged cookie",
                client()
                    .request(method.clone(), &url)
                    .header("cookie", format!("gw_board={TOKEN}")),
            ),
        ] {
            let r = request.send().unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {how}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer", "{method} {path}");
        }
    }

    // With the token, each works.
    let get = |path: &str| {
        client()
            .get(format!("{}{path}", rx.base))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
    };
    for path in [
        "/".to_owned(),
        "/api/v1/openapi.json".into(),
        "/api/v1/cases".into(),
        "/api/v1/cases/overdue".into(),
        format!("/api/v1/cases/{id}"),
        format!("/cases/{id}/snapshot.jpg"),
        format!("/cases/{id}/crop.jpg"),
    ] {
        assert_eq!(get(&path).status(), 200, "GET {path} with the token");
    }
    let advanced = client()
        .post(format!("{}/{id}/status", rx.cases_url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "status": "dispatched" }))
        .send()
        .unwrap();
    assert_eq!(advanced.status(), 200);
}

#[test]
fn a_browser_signs_in_with_the_token_and_its_cookie_only_reads() {
    let dir = TempDir::new("receiver-login");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let stored = case(1, "商业商务区");
    let id = stored.id.to_string();
    let body = serde_json::to_string(&stored).unwrap();
    assert_eq!(post(&rx.cases_url(), Some(&id), TOKEN, &body).status(), 201);
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // A browser without the cookie gets the sign-in form, which comes back to the page.
    let form = browser
        .get(format!("{}/cases/{id}/snapshot.jpg?x=1", rx.base))
        .header("accept", "text/html,*/*")
        .send()
        .unwrap();
    assert_eq!(form.status(), 401);
    let page = form.text().unwrap();
    assert!(
        page.contains("action=\"/login\"") && page.contains("name=\"token\""),
        "{page}"
    );
    assert!(
        page.contains(&format!("value=\"/cases/{id}/snapshot.jpg?x=1\"")),
        "{page}"
    );

    let sign_in = |token: &str, next: &str| {
        browser
            .post(format!("{}/login", rx.base))
            .form(&[("token", token), ("next", next)])
            .send()
            .unwrap()
    };
    let wrong = sign_in("nope", "/");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // Elsewhere is not a place to go back to.
    let offsite = sign_in(TOKEN, "//example.com/x");
    assert_eq!(offsite.status(), 303);
    assert_eq!(offsite.headers()["location"], "/");

    let signed_in = sign_in(TOKEN, "/");
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/");
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("gw_board="), "{cookie}");
    assert!(
        !cookie.contains(TOKEN),
        "the cookie holds a digest, not the token"
    );

    // The cookie reads the board, its images and the API's lists.
    for path in [
        "/".to_owned(),
        format!("/cases/{id}/snapshot.jpg"),
        format!("/cases/{id}/crop.jpg"),
        "/api/v1/cases".into(),
        format!("/api/v1/cases/{id}"),
    ] {
        let r = browser
            .get(format!("{}{path}", rx.base))
            .header("cookie", &cookie)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path} with the cookie");
    }
    // It changes nothing: writes need the bearer token.
    let advance = browser
        .post(format!("{}/{id}/status", rx.cases_url()))
        .header("cookie", &cookie)
        .json(&serde_json::json!({ "status": "dispatched" }))
        .send()
        .unwrap();
    assert_eq!(advance.status(), 401);
    let again = case(2, "沈泾塘");
    let intake = browser
        .post(rx.cases_url())
        .header("cookie", &cookie)
        .header("Idempotency-Key", again.id.to_string())
        .json(&again)
        .send()
        .unwrap();
    assert_eq!(intake.status(), 401);
}
