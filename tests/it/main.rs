//! The one integration-test binary: real GStreamer, real onnxruntime on the shipped model, real
//! SQLite, real HTTP over loopback.

mod check;
mod decoder;
mod end_to_end;
mod receiver;
mod support;
