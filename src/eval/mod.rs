//! Scoring exported ONNX models on the benchmark suites (`toolkit eval`): suites name the
//! data, `exported` checks the export fits, `language` runs one language's features through
//! the model in length-sorted batches, `metrics` scores the predictions as the official
//! scripts do. Suites, metrics and QA answer extraction need no ONNX Runtime (the trainer's
//! validation uses them), so only the runner is behind the `eval` feature.
#[cfg(feature = "eval")]
mod command;
#[cfg(feature = "eval")]
mod exported;
#[cfg(feature = "eval")]
mod infer;
#[cfg(feature = "eval")]
mod language;
pub mod metrics;
pub mod qa_answers;
pub mod suite;

#[cfg(feature = "eval")]
pub use command::{run, EvalArgs};
pub use suite::{Metric, Suite, Task};
