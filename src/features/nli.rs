//! NLI inputs: `[CLS] premise [SEP] hypothesis [SEP]`, cut to 128 tokens longest-first as the
//! paper's `run_xnli.py` does.
use anyhow::Result;
use tokenizers::Tokenizer;

use super::{encode_pairs, Sequence, Truncation};
use crate::data::NliExample;

pub const NLI_MAX_LENGTH: usize = 128;

pub fn nli_features(tokenizer: &Tokenizer, examples: &[NliExample], max_length: usize) -> Result<Vec<Sequence>> {
    let pairs = examples.iter().map(|e| (e.premise.clone(), e.hypothesis.clone())).collect();
    let encodings = encode_pairs(tokenizer, pairs, Truncation::longest_first(max_length))?;
    Ok(encodings.iter().map(Sequence::from_encoding).collect())
}
