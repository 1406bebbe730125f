//! The reference receiver over real HTTP: idempotent intake by `Idempotency-Key`, auth, and the
//! listing page.

use gridwatch::dispatch::server::{CASES_PATH, Receiver, StoredCase};

use crate::support::TempDir;

#[test]
fn intake_is_idempotent_by_key() {
    let dir = TempDir::new("receiver");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let receiver = Receiver::bind("127.0.0.1:0", &dir.path("r.sqlite"), Some("tok".into())).await.unwrap();
        let base = format!("http://{}", receiver.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(receiver.serve(async {
            let _ = rx.await;
        }));
        let url = format!("{base}{CASES_PATH}");
        let client = reqwest::Client::new();
        let body = r#"{"id":"k1","scenario":{"id":"crowd_gathering"},"camera":{"id":"c"},"unit":{"name":"u"},"confidence":0.5,"snapshot":{"data_base64":"/9j/"}}"#;
        let post = |key: Option<&str>, token: &str, body: &str| {
            let mut r = client.post(&url).bearer_auth(token).header("content-type", "application/json").body(body.to_owned());
            if let Some(k) = key {
                r = r.header("Idempotency-Key", k);
            }
            r.send()
        };
        assert_eq!(post(Some("k1"), "tok", body).await.unwrap().status(), 201);
        assert_eq!(post(Some("k1"), "tok", body).await.unwrap().status(), 200, "same key, same payload");
        assert_eq!(post(Some("k1"), "tok", &body.replace("0.5", "0.6")).await.unwrap().status(), 422, "same key, other payload");
        assert_eq!(post(None, "tok", body).await.unwrap().status(), 400, "no key");
        assert_eq!(post(Some("k1"), "wrong", body).await.unwrap().status(), 401, "bad token");
        assert_eq!(post(Some("k2"), "tok", "not json").await.unwrap().status(), 400);
        assert_eq!(post(Some("k3"), "tok", body).await.unwrap().status(), 422, "id must equal the key");

        let listed: Vec<StoredCase> = client.get(&url).bearer_auth("tok").send().await.unwrap().json().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id.as_str(), listed[0].deliveries), ("k1", 2));
        let page = client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("/cases/k1/snapshot.jpg"), "{page}");
        let snap = client.get(format!("{base}/cases/k1/snapshot.jpg")).send().await.unwrap();
        assert_eq!(snap.headers()["content-type"], "image/jpeg");
        assert_eq!(snap.bytes().await.unwrap().as_ref(), &[0xff, 0xd8, 0xff]);
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    });
}
