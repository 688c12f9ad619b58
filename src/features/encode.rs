//! Sentence-pair encoding with the truncation settings each task uses.
use std::borrow::Cow;

use anyhow::{anyhow, bail, Result};
use tokenizers::utils::truncation::truncate_encodings;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationParams, TruncationStrategy};

/// How a pair longer than `max_length` tokens (special tokens included) is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub max_length: usize,
    pub strategy: TruncationStrategy,
    /// Tokens shared by consecutive overflow windows.
    pub stride: usize,
    /// Whether the windows past the first are kept (QA contexts).
    pub windows: bool,
}

impl Truncation {
    /// Hugging Face's `truncation=True`: drop tokens from the longer sequence first.
    pub fn longest_first(max_length: usize) -> Truncation {
        Truncation { max_length, strategy: TruncationStrategy::LongestFirst, stride: 0, windows: false }
    }
}

/// Encodes `(first, second)` pairs with special tokens, character offsets and `truncation`,
/// without padding (batches are padded when they are built). Windows past the first, where
/// kept, are in each encoding's `get_overflowing()`.
///
/// Each side is tokenised whole and truncated afterwards (`truncate_encodings`, then
/// `post_process` adds the special tokens):
/// tokenizers 0.23 cuts every sequence to `max_length` tokens while tokenising when
/// truncation is set, which loses all overflow windows but the first.
pub fn encode_pairs(
    tokenizer: &Tokenizer,
    pairs: Vec<(String, String)>,
    truncation: Truncation,
) -> Result<Vec<Encoding>> {
    // A copy only for a tokenizer that pads or truncates by itself: copying a 250k-piece
    // vocabulary costs more than tokenising a language's test set.
    let whole = if tokenizer.get_padding().is_none() && tokenizer.get_truncation().is_none() {
        Cow::Borrowed(tokenizer)
    } else {
        let mut plain = tokenizer.clone();
        plain.with_padding(None);
        plain.with_truncation(None).map_err(|e| anyhow!("truncation settings: {e}"))?;
        Cow::Owned(plain)
    };
    // What `post_process` does with truncation set: the special tokens' room comes off the
    // length first.
    let added = whole.get_post_processor().map_or(0, |p| p.added_tokens(true));
    let params = TruncationParams {
        max_length: truncation.max_length.saturating_sub(added),
        strategy: truncation.strategy,
        stride: truncation.stride,
        ..TruncationParams::default()
    };
    let tokenize =
        |texts: Vec<String>| whole.encode_batch_char_offsets(texts, false).map_err(|e| anyhow!("tokenizing: {e}"));
    // In chunks, so the untruncated encodings of long texts never all exist at once.
    let mut encodings = Vec::with_capacity(pairs.len());
    let mut pairs = pairs.into_iter().peekable();
    while pairs.peek().is_some() {
        let (firsts, seconds): (Vec<String>, Vec<String>) = pairs.by_ref().take(ENCODE_CHUNK).unzip();
        let (firsts, seconds) = (tokenize(firsts)?, tokenize(seconds)?);
        if truncation.strategy == TruncationStrategy::OnlySecond {
            check_room_for_windows(&whole, &firsts, &seconds, truncation)?;
        }
        for (first, second) in firsts.into_iter().zip(seconds) {
            let (first, second) = truncate_encodings(first, Some(second), &params).map_err(|e| anyhow!("truncating: {e}"))?;
            let mut encoding = whole.post_process(first, second, true).map_err(|e| anyhow!("special tokens: {e}"))?;
            if !truncation.windows {
                // Pair truncation lists every combination of cut-off pieces as overflow; none
                // is used without windows, and for long texts they dwarf the kept tokens.
                drop(encoding.take_overflowing());
            }
            align_window_type_ids(&mut encoding);
            encodings.push(encoding);
        }
    }
    Ok(encodings)
}

/// Pairs tokenised at a time.
const ENCODE_CHUNK: usize = 256;

/// Gives every overflow window the token types of the first window: the post-processors
/// type only the windows they are given, so the later windows of a template tokenizer (XLM-R,
/// e5) would keep the raw per-sequence types and differ from the first window. The first
/// sequence and its special tokens are the same in every window (only the second is cut).
fn align_window_type_ids(encoding: &mut Encoding) {
    let types = encoding.get_type_ids().to_vec();
    let sequences = encoding.get_sequence_ids();
    let (Some(second_at), Some(&last)) = (sequences.iter().position(|s| *s == Some(1)), types.last()) else {
        return;
    };
    let second_type = types[second_at];
    for window in encoding.get_overflowing_mut() {
        let window_types = window
            .get_sequence_ids()
            .iter()
            .enumerate()
            .map(|(k, sequence)| match sequence {
                Some(1) => second_type,
                _ if k < second_at => types[k],
                _ => last,
            })
            .collect();
        window.set_type_ids(window_types);
    }
}

/// Windows over the second sequence need more room than the stride beside the first sequence
/// and the special tokens; tokenizers would panic otherwise.
fn check_room_for_windows(
    tokenizer: &Tokenizer,
    firsts: &[Encoding],
    seconds: &[Encoding],
    truncation: Truncation,
) -> Result<()> {
    let special = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(true));
    for (i, (first, second)) in firsts.iter().zip(seconds).enumerate() {
        if first.len() + second.len() + special <= truncation.max_length {
            continue;
        }
        let room = truncation.max_length.saturating_sub(first.len() + special);
        if room <= truncation.stride {
            bail!(
                "input {}: the first sequence has {} tokens, leaving {room} of max_length {} for windows of the \
                 second, which must be more than the stride {}",
                i + 1,
                first.len(),
                truncation.max_length,
                truncation.stride
            );
        }
    }
    Ok(())
}
