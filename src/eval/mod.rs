//! Scoring exported ONNX models on the benchmark suites (`toolkit eval`): suites name the
//! data, `exported` checks the export fits, `language` runs one language's features through
//! the model in length-sorted batches, and `crate::scoring` scores the predictions as the
//! official scripts do.
mod command;
mod exported;
mod infer;
mod language;
pub mod suite;

pub use command::{run, EvalArgs, DEFAULT_BATCH_TOKENS};
pub use suite::{Metric, Suite, Task};
