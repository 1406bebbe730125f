//! The one integration-test binary: real GStreamer, real onnxruntime on the shipped model, real
//! SQLite, real HTTP over loopback.

mod bench;
mod check;
mod cluster;
mod config_values;
mod decoder;
mod decoders_cards;
mod decoders_ssd;
mod decoders_yolo;
mod delivery;
mod detect;
mod dispatch_support;
mod end_to_end;
mod fault;
mod first_run;
mod gate;
mod ingest;
mod learn_states;
mod metrics;
mod multi_model;
mod outbox_soak;
mod platform_loop;
mod receiver;
mod receiver_fuzz;
mod reload;
mod review_api;
mod review_browser;
mod routing;
mod scenarios_accuracy;
mod scenarios_catalog;
mod scenarios_custom;
mod storage;
mod supervisor;
mod support;
mod zone_states;
