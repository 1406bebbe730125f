//! gridwatch: automatic discovery of street problems from city camera feeds.
//!
//! The stages, in the order a frame travels: [`ingest`] (GStreamer, one pipeline per camera) →
//! [`infer`] (onnxruntime worker pool) → [`scenarios`] (rules over time, one event per episode)
//! → [`cases`] (evidence + SQLite outbox) → [`dispatch`] (HTTP delivery; reference receiver).
//! [`review`] is the console where staff confirm or reject held cases.
//! [`cluster`] divides camera groups among several nodes (etcd leases) and fences each one.
//! [`run`] wires them together; [`detect`] runs the configured model on stills and clips; [`states`] scores zone states from the detector's feature map, [`learn`] trains them from labels; [`config`] describes the key area; [`telemetry`] names every metric.

pub mod area;
pub mod cases;
pub mod cluster;
pub mod config;
pub mod detect;
pub mod dispatch;
pub mod gate;
pub mod infer;
pub mod ingest;
pub mod learn;
pub mod live;
pub mod recheck;
pub mod reload;
pub mod review;
pub mod run;
pub mod scenarios;
pub use gridwatch_sqlite as sqlite;
pub mod states;
pub mod stats;
pub mod status;
pub mod telemetry;
pub mod track;
