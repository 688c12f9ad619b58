//! Tokenised model inputs built from the data readers' records.
pub mod tokenizer;
