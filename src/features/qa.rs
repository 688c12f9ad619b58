//! Extractive QA inputs as the paper's `run_qa.py` builds them: `[CLS] question [SEP] context
//! [SEP]`, the question left-stripped, only the context cut, into windows of at most 384
//! tokens that overlap by a 128-token stride, each window keeping its tokens' character spans
//! in the context and the answer's token span.
use anyhow::Result;
use tokenizers::{Encoding, Tokenizer, TruncationStrategy};

use super::{encode_pairs, Sequence, Truncation};
use crate::data::QaExample;

pub const QA_MAX_LENGTH: usize = 384;
pub const QA_DOC_STRIDE: usize = 128;

/// The token the model points at when a window does not hold the answer.
pub const CLS_INDEX: usize = 0;

/// One window of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct QaFeature {
    /// Index of the example in the slice the features were built from.
    pub example: usize,
    pub sequence: Sequence,
    /// Each token's character span in the context; `None` for question and special tokens.
    pub context_offsets: Vec<Option<(usize, usize)>>,
    /// Token span of the first gold answer, or ([`CLS_INDEX`], [`CLS_INDEX`]) when the
    /// answer is not wholly inside this window.
    pub start_position: usize,
    pub end_position: usize,
}

pub fn qa_features(
    tokenizer: &Tokenizer,
    examples: &[QaExample],
    max_length: usize,
    doc_stride: usize,
) -> Result<Vec<QaFeature>> {
    let pairs = examples.iter().map(|e| (e.question.trim_start().to_string(), e.context.to_string())).collect();
    let truncation = Truncation { max_length, strategy: TruncationStrategy::OnlySecond, stride: doc_stride, windows: true };
    let encodings = encode_pairs(tokenizer, pairs, truncation)?;
    let mut features = Vec::with_capacity(encodings.len());
    for (index, (mut encoding, example)) in encodings.into_iter().zip(examples).enumerate() {
        let overflowing = encoding.take_overflowing();
        for window in std::iter::once(encoding).chain(overflowing) {
            features.push(window_feature(index, example, &window));
        }
    }
    Ok(features)
}

fn window_feature(index: usize, example: &QaExample, window: &Encoding) -> QaFeature {
    let context_offsets: Vec<Option<(usize, usize)>> = window
        .get_sequence_ids()
        .iter()
        .zip(window.get_offsets())
        .map(|(sequence, &offsets)| (*sequence == Some(1)).then_some(offsets))
        .collect();
    let (start_position, end_position) = match example.answers.first() {
        Some(answer) => answer_span(&context_offsets, answer.start, answer.start + answer.text.chars().count()),
        None => (CLS_INDEX, CLS_INDEX),
    };
    QaFeature {
        example: index,
        sequence: Sequence::from_encoding(window),
        context_offsets,
        start_position,
        end_position,
    }
}

/// The first context token whose span reaches past `start` and the last one that begins
/// before `end`, or CLS when the window's context does not cover `start..end`. The paper's
/// code walks the start forward over every token with an offset at or before the answer,
/// which runs into `[SEP]` (offset 0) when the answer starts in the window's last context
/// token; here the walk stays inside the context.
fn answer_span(offsets: &[Option<(usize, usize)>], start: usize, end: usize) -> (usize, usize) {
    let context: Vec<(usize, (usize, usize))> =
        offsets.iter().enumerate().filter_map(|(i, o)| o.map(|o| (i, o))).collect();
    let (Some(&(_, first)), Some(&(_, last))) = (context.first(), context.last()) else {
        return (CLS_INDEX, CLS_INDEX);
    };
    if first.0 > start || last.1 < end {
        return (CLS_INDEX, CLS_INDEX);
    }
    let start_token = context.iter().take_while(|(_, o)| o.0 <= start).last().map_or(CLS_INDEX, |&(i, _)| i);
    let end_token = context.iter().rev().take_while(|(_, o)| o.1 >= end).last().map_or(CLS_INDEX, |&(i, _)| i);
    (start_token, end_token)
}
