//! The receiver against hostile input over real HTTP (proptest): random bytes, random JSON,
//! mutated valid cases, bad tokens and odd keys get a 4xx (never a 5xx, never a dropped
//! connection), and a 2xx only ever stores a real v1 case. Then the OpenAPI description is
//! checked by schemathesis against the running service (`scripts/schemathesis-receiver`).

use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use crate::dispatch_support::{TOKEN, TestReceiver, case};
use crate::support::{TempDir, repo};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid case with one random change: a field removed, replaced, or nested data replaced.
fn mutated_case() -> impl Strategy<Value = (String, Value)> {
    let fields = gridwatch::cases::CASE_FIELDS;
    (0..fields.len(), 0u8..3, json_value()).prop_map(move |(i, how, junk)| {
        let c = case(1, "u");
        let key = c.id.to_string();
        let mut v = serde_json::to_value(&c).unwrap();
        let field = fields[i];
        match how {
            0 => {
                v.as_object_mut().unwrap().remove(field);
            }
            1 => v[field] = junk,
            _ => {
                if let Some(obj) = v[field].as_object_mut() {
                    let first = obj.keys().next().cloned();
                    if let Some(k) = first {
                        obj.insert(k, junk);
                    }
                } else {
                    v[field] = junk;
                }
            }
        }
        (key, v)
    })
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Vec<u8>),
    Json(Value),
    Mutated(String, Value),
    BadToken(String),
    Key(String),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000).prop_map(Input::Bytes),
        json_value().prop_map(Input::Json),
        mutated_case().prop_map(|(k, v)| Input::Mutated(k, v)),
        "[ -~]{0,80}"
            .prop_filter("not the token", |t| t != TOKEN)
            .prop_map(Input::BadToken),
        "[ -~]{0,200}".prop_map(Input::Key),
    ]
}

#[test]
fn hostile_input_gets_4xx_and_never_a_crash() {
    let dir = TempDir::new("fuzz");
    let rx = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    let url = rx.cases_url();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let tally = std::cell::RefCell::new([0u32; 6]);
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(inp in input())| {
        let fresh_key = uuid::Uuid::now_v7().to_string();
        let (req, valid_if_2xx) = match &inp {
            Input::Bytes(b) => (client.post(&url).bearer_auth(TOKEN).header("Idempotency-Key", &fresh_key).body(b.clone()), None),
            Input::Json(v) => (client.post(&url).bearer_auth(TOKEN).header("Idempotency-Key", &fresh_key).json(v), None),
            Input::Mutated(k, v) => (client.post(&url).bearer_auth(TOKEN).header("Idempotency-Key", k).json(v), Some(v.clone())),
            Input::BadToken(t) => (client.post(&url).bearer_auth(t).header("Idempotency-Key", &fresh_key).json(&case(1, "u")), None),
            Input::Key(k) => (client.post(&url).bearer_auth(TOKEN).header("Idempotency-Key", k).json(&case(1, "u")), None),
        };
        let resp = req.send().expect("the receiver answers every request");
        let status = resp.status().as_u16();
        tally.borrow_mut()[(status / 100) as usize] += 1;
        prop_assert!(status < 500, "5xx: {}", status);
        match &inp {
            Input::BadToken(_) => prop_assert_eq!(status, 401),
            Input::Mutated(..) if (200..300).contains(&status) => {
                let v = valid_if_2xx.unwrap();
                prop_assert!(serde_json::from_value::<gridwatch::cases::Case>(v).is_ok(), "accepted a non-case");
            }
            Input::Mutated(..) => prop_assert!((400..500).contains(&status)),
            _ => prop_assert!((400..500).contains(&status), "status {}", status),
        }
    });
    let tally = tally.into_inner();
    println!(
        "fuzz: responses by class 2xx {} 4xx {} 5xx {}",
        tally[2], tally[4], tally[5]
    );
    let health = client.get(format!("{}/healthz", rx.base)).send().unwrap();
    assert_eq!(health.status(), 200);
}

/// schemathesis (PyPI, installed by scripts/setup) exercises every documented operation of the
/// running service and checks the answers against the OpenAPI description.
#[test]
fn openapi_description_holds_under_schemathesis() {
    let script = repo("scripts/schemathesis-receiver");
    let out = std::process::Command::new(&script)
        .env("GRIDWATCH_BIN", env!("CARGO_BIN_EXE_gridwatch"))
        .env("SCHEMATHESIS_MAX_EXAMPLES", "30")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: String = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    println!("{tail}");
    assert!(
        out.status.success(),
        "schemathesis found problems (or is not installed: run scripts/setup):\n{text}"
    );
}
