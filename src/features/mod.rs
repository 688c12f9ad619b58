//! Tokenised model inputs built from the data readers' records.
mod batch;
mod copa;
mod encode;
pub mod mlm;
mod nli;
mod qa;
mod subset;
pub mod tokenizer;

pub use batch::{pad_id, BatchPlan, FeatureBatch, Sequence};
pub use copa::{copa_context, copa_features, COPA_MAX_LENGTH};
pub use encode::{encode_pairs, Truncation};
pub use nli::{nli_features, NLI_MAX_LENGTH};
pub use qa::{qa_features, QaFeature, CLS_INDEX, QA_DOC_STRIDE, QA_MAX_LENGTH};
pub use subset::train_subset;
