//! The one integration-test binary: real GStreamer, real onnxruntime on the shipped model, real
//! SQLite, real HTTP over loopback.

mod check;
mod decoder;
mod delivery;
mod dispatch_support;
mod end_to_end;
mod fault;
mod ingest;
mod receiver;
mod receiver_fuzz;
mod support;
