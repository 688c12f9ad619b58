//! toolkit: adapter-based zero-shot cross-lingual transfer.
//!
//! The modules follow the data: `data` (readers) -> `features` (tokenised inputs) -> `model`
//! (MAD-X encoder) -> `train` (scheduled unfreezing) -> `export` (ONNX) -> `eval` (ort) ->
//! `report` (tables and plots).
pub mod features;
pub mod fsx;
pub mod model;
