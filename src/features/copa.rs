//! COPA as two-choice multiple choice, as the paper's `run_copa.py` builds it: for each choice
//! the pair (premise + " What was the cause?" / " What was the effect?", choice), cut
//! longest-first.
use anyhow::Result;
use tokenizers::Tokenizer;

use super::{encode_pairs, Sequence, Truncation};
use crate::data::CopaExample;

/// The paper's code used the tokenizer's maximum (512 for mBERT and XLM-R).
pub const COPA_MAX_LENGTH: usize = 512;

/// The first segment of both choices' inputs.
pub fn copa_context(example: &CopaExample) -> String {
    format!("{} What was the {}?", example.premise, example.question.as_str())
}

/// One `[choice 1, choice 2]` pair of sequences per example.
pub fn copa_features(tokenizer: &Tokenizer, examples: &[CopaExample], max_length: usize) -> Result<Vec<[Sequence; 2]>> {
    let pairs = examples
        .iter()
        .flat_map(|e| {
            let context = copa_context(e);
            e.choices.iter().map(move |choice| (context.clone(), choice.clone()))
        })
        .collect();
    let encodings = encode_pairs(tokenizer, pairs, Truncation::longest_first(max_length))?;
    Ok(encodings.chunks(2).map(|c| [Sequence::from_encoding(&c[0]), Sequence::from_encoding(&c[1])]).collect())
}
