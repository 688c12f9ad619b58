//! toolkit: adapter-based zero-shot cross-lingual transfer.
//!
//! The modules follow the data: `data` (readers) -> `features` (tokenised inputs) -> `model`
//! (MAD-X encoder) -> `train` (scheduled unfreezing) -> `export` (ONNX) -> `eval` (ort) ->
//! `report` (tables and plots).
pub mod data;
pub mod device;
#[cfg(feature = "eval")]
pub mod eval;
#[cfg(feature = "eval")]
pub mod export;
pub mod features;
pub mod fsx;
pub mod import;
pub mod model;
#[cfg(feature = "train")]
pub mod predict;
#[cfg(feature = "train")]
pub mod train;
pub mod report;
pub mod run_dir;
pub mod scoring;
pub mod seed;
#[cfg(feature = "train")]
pub mod sweep;
pub mod task;
#[cfg(feature = "eval")]
pub mod runtime;
