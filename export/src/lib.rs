//! ONNX protobuf messages, generated at build time from the official schema, and a small
//! graph builder over them.

#[allow(clippy::all)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub mod graph;

/// The protobuf runtime the messages use (`prost::Message` encodes and decodes them).
pub use prost;

pub use graph::{model, tensor, Attr, Dim, ElemType, GraphBuilder, ModelInfo};
