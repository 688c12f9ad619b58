//! ONNX protobuf messages, generated at build time from the official schema.

#[allow(clippy::all)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
