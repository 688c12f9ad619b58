//! The ONNX layer: protobuf messages, generated at build time from the official schema, and a
//! generic graph builder over them (`builder`). The exporter (`toolkit::export`) builds the
//! composed model's graph with it.

#[allow(clippy::all)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub mod builder;

/// The protobuf runtime the messages use (`prost::Message` encodes and decodes them).
pub use prost;

pub use builder::{model, tensor, Attr, Dim, ElemType, GraphBuilder, ModelInfo};
