//! Readers for the benchmark files in the formats their authors publish them in.
//!
//! Every reader returns a [`Loaded`]: the records plus a [`Skipped`] tally, so that a record
//! left out (an NLI pair without a gold label, a malformed line read with
//! [`OnMalformed::Skip`]) is always counted and shown, never dropped silently.
pub mod copa;
mod lines;
pub mod nli;
mod skipped;
pub mod squad;
pub mod text;

pub use copa::{CopaExample, CopaQuestion};
pub use lines::read_text;
pub use nli::NliExample;
pub use skipped::{Loaded, OnMalformed, Skipped};
pub use squad::{Answer, QaExample};
