//! The patrol wall's live side: one WebSocket per tile carrying the camera's fMP4 stream, the
//! detections aligned to it and the camera's open cases (`live_socket`), and the staff report
//! a patrol member files by drawing a box on a tile (`report`).
//!
//! Messages to the browser, in order: a `hello` text (the stream's state); then for video an
//! `init` text followed by the init segment (binary), and per access unit its `moof`+`mdat`
//! header and its bytes (two binary messages, appended to the same source buffer); between
//! them texts: `objects` (detections at a media time), `clock` (when a media time reached
//! gridwatch, for the latency the tile shows), `cases` (open cases of the camera), `source`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::store::ReviewStore;
use super::{Blocking, Caller, ReviewError, ReviewState, json_body, problem};
use crate::area::kinds::ObjectKind;
use crate::infer::Detection;
use crate::live::{Hub, Joined, LiveMessage};
use crate::scenarios::{Event, StaffReport};

/// How often a viewer is told the camera's open cases.
const CASES_INTERVAL: Duration = Duration::from_secs(5);
/// Open cases older than this are not marked on the wall.
const OPEN_CASES_WINDOW: Duration = Duration::from_secs(24 * 3600);
const OPEN_CASES_SHOWN: u32 = 20;
/// A viewer whose socket takes longer than this to accept one message is disconnected (its
/// browser reconnects); meanwhile its hub queue has already cut it to the next keyframe.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The media-time → arrival-time pairs sent for the tile's latency: every this many units.
const CLOCK_EVERY_UNITS: u32 = 12;
/// Longest note a staff report keeps.
const MAX_NOTE_CHARS: usize = 500;

/// `GET /api/v1/review/wall/{camera}/live`: the camera's live stream as a WebSocket.
pub(super) async fn live_socket(
    State(s): State<ReviewState>,
    _caller: Caller,
    UrlPath(camera): UrlPath<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // The session cookie rides along on any page's WebSocket: only our own page may use it.
    if !same_origin(&headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "live view from another origin refused",
        );
    }
    let config = s.config.load_full();
    let Some(index) = config.area.cameras.iter().position(|c| c.id == camera) else {
        return problem(StatusCode::NOT_FOUND, "no such camera");
    };
    if !s.live.settings().enabled {
        return problem(
            StatusCode::NOT_FOUND,
            "live video is off ([live] enabled = false)",
        );
    }
    let Some(hub) = s.live.hub(index).filter(|h| h.camera() == camera) else {
        return problem(StatusCode::CONFLICT, "the camera has not started yet");
    };
    let joined = match hub.join() {
        Ok(j) => j,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let store = s.store.clone();
    ws.on_upgrade(move |socket| serve_viewer(socket, hub, joined, store))
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) else {
        // Not a browser page (a tool with a bearer token).
        return true;
    };
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    host.is_some() && origin_host == host
}

/// Forwards the hub's messages until the browser leaves or falls too far behind.
async fn serve_viewer(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    mut joined: Joined,
    store: Arc<ReviewStore>,
) {
    let hello = json!({"type": "hello", "camera": hub.camera(), "source": joined.source});
    let mut clock = ClockPairs::default();
    let mut cases = tokio::time::interval(CASES_INTERVAL);
    let mut ok = send(
        &mut socket,
        hub.camera(),
        Message::Text(hello.to_string().into()),
    )
    .await;
    while ok {
        ok = tokio::select! {
            m = joined.rx.recv() => match m {
                Some(m) => forward(&mut socket, hub.camera(), m, &mut clock).await,
                None => false,
            },
            _ = cases.tick() => match open_cases(&store, hub.camera()).await {
                Some(text) => send(&mut socket, hub.camera(), Message::Text(text.into())).await,
                None => true,
            },
            r = socket.recv() => matches!(r, Some(Ok(m)) if !matches!(m, Message::Close(_))),
        };
    }
    hub.leave(joined.id);
}

/// Sends one hub message; `false` when the viewer is gone or too slow.
async fn forward(
    socket: &mut WebSocket,
    camera: &str,
    m: LiveMessage,
    clock: &mut ClockPairs,
) -> bool {
    match m {
        LiveMessage::Init { mime, segment } => {
            let text = json!({"type": "init", "mime": &*mime}).to_string();
            send(socket, camera, Message::Text(text.into())).await
                && send(socket, camera, Message::Binary(segment)).await
        }
        LiveMessage::Fragment(f) => {
            if let Some(text) = clock.pair(f.keyframe, f.media_seconds, f.received_unix_ms)
                && !send(socket, camera, Message::Text(text.into())).await
            {
                return false;
            }
            send(socket, camera, Message::Binary(f.header.clone())).await
                && send(socket, camera, Message::Binary(f.payload.clone())).await
        }
        LiveMessage::Text(t) => send(socket, camera, Message::Text((*t).into())).await,
    }
}

/// `false` when the viewer is gone, or did not take the message within [`SEND_TIMEOUT`]
/// (counted: its browser reconnects and starts again from the last keyframe).
async fn send(socket: &mut WebSocket, camera: &str, m: Message) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            crate::telemetry::live_viewer_dropped(camera, "send_timeout");
            tracing::info!(
                camera,
                timeout_seconds = SEND_TIMEOUT.as_secs(),
                "live viewer too slow to take a message: disconnected"
            );
            false
        }
    }
}

/// When media times reached gridwatch: at every keyframe and every few units.
#[derive(Default)]
struct ClockPairs {
    since: u32,
}

impl ClockPairs {
    fn pair(
        &mut self,
        keyframe: bool,
        media_seconds: f64,
        received_unix_ms: u64,
    ) -> Option<String> {
        self.since += 1;
        if !keyframe && self.since < CLOCK_EVERY_UNITS {
            return None;
        }
        self.since = 0;
        Some(
            json!({"type": "clock", "t": media_seconds, "received_unix_ms": received_unix_ms})
                .to_string(),
        )
    }
}

/// The camera's open cases as a `cases` text; `None` when the store could not say (logged).
async fn open_cases(store: &Arc<ReviewStore>, camera: &str) -> Option<String> {
    let since = time::OffsetDateTime::from(SystemTime::now() - OPEN_CASES_WINDOW)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let (store, camera_id) = (store.clone(), camera.to_owned());
    let found =
        tokio::task::spawn_blocking(move || store.open_cases(&camera_id, &since, OPEN_CASES_SHOWN))
            .await;
    match found {
        Ok(Ok(cases)) => Some(json!({"type": "cases", "cases": cases}).to_string()),
        Ok(Err(e)) => {
            tracing::warn!(camera, error = %e, "live wall: open cases could not be read");
            None
        }
        Err(_) => None,
    }
}

/// `POST /api/v1/review/wall/{camera}/reports`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportRequest {
    scenario: String,
    /// The zone the problem is in; absent: the zone holding the box's centre, else the first.
    #[serde(default)]
    zone: Option<String>,
    /// [x0, y0, x1, y1], fractions of the picture.
    #[serde(rename = "box", default)]
    bbox: [f32; 4],
    #[serde(default)]
    note: String,
}

/// A patrol member reports what they see on a tile: the box they drew becomes a case of the
/// scenario they chose, through the same case stage, outbox and routing as discovered ones,
/// marked as reported by them (and audited). The picture is the camera's latest, at full
/// resolution when its stream is cached. 202 with the case id: it is stored by the case stage.
pub(super) async fn report(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    c: Caller,
    UrlPath(camera): UrlPath<String>,
    body: Bytes,
) -> Response {
    let req = match json_body::<ReportRequest>(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let config = s.config.load_full();
    let Some(index) = config.area.cameras.iter().position(|cam| cam.id == camera) else {
        return problem(StatusCode::NOT_FOUND, "no such camera");
    };
    let Some(scenario) = config.catalog.info(&req.scenario) else {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("scenario: `{}` is not in the catalog", req.scenario),
        );
    };
    let bbox = match report_box(req.bbox) {
        Ok(b) => b,
        Err(msg) => return problem(StatusCode::BAD_REQUEST, msg),
    };
    if req.note.chars().count() > MAX_NOTE_CHARS {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("note: at most {MAX_NOTE_CHARS} characters"),
        );
    }
    let cam = &config.area.cameras[index];
    let zone = match report_zone(cam, req.zone.as_deref(), bbox) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let (latest, live, id) = (s.latest.clone(), s.live.clone(), cam.id.clone());
    let frame = blocking
        .encoding(move || {
            let analysed = latest.frame(index, &id);
            let full = live.full_resolution_at(index, None);
            Ok::<_, ReviewError>(match (analysed, full) {
                (Some(a), Some(d)) => Some(crate::ingest::Frame::decoded(&a, &d.info, d.buffer)),
                (a, _) => a,
            })
        })
        .await;
    let frame = match frame {
        Ok(Some(f)) => f,
        Ok(None) => return problem(StatusCode::CONFLICT, "no frame of this camera yet"),
        Err(r) => return r,
    };
    let case_id = uuid::Uuid::now_v7();
    let now = SystemTime::now();
    let event = Event {
        scenario,
        camera: index,
        zone,
        first_seen_at: now,
        confirmed_at: now,
        first_seen_stream_seconds: frame.stream_seconds,
        confirmed_stream_seconds: frame.stream_seconds,
        objects: vec![Detection {
            class_id: 0,
            label: Arc::from("staff_report"),
            kind: ObjectKind::Other,
            score: 1.0,
            bbox,
        }],
        confidence: 1.0,
        episode: 0,
        frame: Arc::new(frame),
        area: config.area.clone(),
        reported: Some(StaffReport {
            id: case_id,
            user: c.user.name.clone(),
            note: req.note.clone(),
        }),
    };
    if let Err(e) = s.reports.send(event) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let store = s.store.clone();
    let detail = json!({"camera": cam.id, "zone": cam.zones[zone].id, "scenario": req.scenario, "box": bbox, "note": req.note}).to_string();
    let user = c.user.name.clone();
    let id = case_id.to_string();
    let audited = blocking
        .store(move || store.audit(&user, "report", Some(&id), Some(&detail)))
        .await;
    if audited.is_err() {
        // The case is on its way; only the audit row is missing, and the log says so.
        tracing::error!(case = %case_id, user = %c.user.name, "staff report could not be audited");
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"id": case_id.to_string(), "camera": cam.id, "zone": cam.zones[zone].id}),
        ),
    )
        .into_response()
}

/// The drawn box, ordered and within the picture.
fn report_box(b: [f32; 4]) -> Result<[f32; 4], String> {
    if b.iter().any(|v| !v.is_finite() || !(0.0..=1.0).contains(v)) {
        return Err("box: four fractions of the picture, each within 0..1".into());
    }
    let out = [
        b[0].min(b[2]),
        b[1].min(b[3]),
        b[0].max(b[2]),
        b[1].max(b[3]),
    ];
    if out[2] - out[0] < 0.005 || out[3] - out[1] < 0.005 {
        return Err("box: draw a box around the problem (it is empty)".into());
    }
    Ok(out)
}

fn report_zone(
    cam: &crate::area::Camera,
    zone: Option<&str>,
    bbox: [f32; 4],
) -> Result<usize, Response> {
    if let Some(id) = zone {
        return cam.zones.iter().position(|z| z.id == id).ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                format!("zone: `{id}` is not a zone of this camera"),
            )
        });
    }
    if cam.zones.is_empty() {
        return Err(problem(
            StatusCode::CONFLICT,
            "this camera has no zone to file a case under",
        ));
    }
    let centre = [
        f64::from(bbox[0] + bbox[2]) / 2.0,
        f64::from(bbox[1] + bbox[3]) / 2.0,
    ];
    Ok(cam
        .zones
        .iter()
        .position(|z| crate::area::geometry::contains(&z.polygon, centre))
        .unwrap_or(0))
}
