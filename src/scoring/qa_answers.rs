//! From start/end logits over all windows of a question to the answer text, as the paper's
//! `utils_qa.postprocess_qa_predictions` does it: the 20 best start and end tokens of each
//! window, spans inside the context of at most 30 tokens, the best start + end logit sum over
//! all windows, mapped back to the context by character offsets.
//!
//! One difference: candidates come from the window's own tokens; the paper's code padded every
//! window to 384 tokens and let padding positions take places among the 20 best, where they
//! were then discarded.
use std::collections::HashMap;

use crate::data::QaExample;
use crate::features::QaFeature;

pub const N_BEST: usize = 20;
pub const MAX_ANSWER_TOKENS: usize = 30;

/// The answer Hugging Face's code gives when no span qualifies.
pub const NO_ANSWER: &str = "empty";

/// One window's scores: per token, its character span in the context (`None` outside it), and
/// its start and end logits.
pub struct WindowLogits<'a> {
    pub offsets: &'a [Option<(usize, usize)>],
    pub start: &'a [f32],
    pub end: &'a [f32],
}

/// The best answer of every question (by id), from the start and end logits of each of its
/// windows (`logits[i]` belongs to `features[i]`).
pub fn qa_predictions(examples: &[QaExample], features: &[QaFeature], logits: &[(Vec<f32>, Vec<f32>)]) -> HashMap<String, String> {
    let mut windows: Vec<Vec<WindowLogits>> = (0..examples.len()).map(|_| Vec::new()).collect();
    for (feature, (start, end)) in features.iter().zip(logits) {
        windows[feature.example].push(WindowLogits { offsets: &feature.context_offsets, start, end });
    }
    examples.iter().zip(&windows).map(|(example, windows)| (example.id.clone(), best_answer(&example.context, windows))).collect()
}

/// The best answer over `windows` of one question, as text of `context`.
pub fn best_answer(context: &str, windows: &[WindowLogits<'_>]) -> String {
    // (score, start char, end char), in the order the paper's code collects them; the stable
    // sort keeps that order among equal scores.
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for window in windows {
        let starts = top_indices(window.start, N_BEST);
        let ends = top_indices(window.end, N_BEST);
        for &s in &starts {
            for &e in &ends {
                let (Some(Some(from)), Some(Some(to))) = (window.offsets.get(s), window.offsets.get(e)) else {
                    continue;
                };
                if e < s || e - s + 1 > MAX_ANSWER_TOKENS {
                    continue;
                }
                candidates.push((window.start[s] + window.end[e], from.0, to.1));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    match candidates.as_slice() {
        [] => NO_ANSWER.to_string(),
        [(_, from, to)] if from >= to => NO_ANSWER.to_string(),
        [(_, from, to), ..] => context.chars().skip(*from).take(to.saturating_sub(*from)).collect(),
    }
}

/// Indices of the `n` largest values, largest first.
fn top_indices(values: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order.truncate(n);
    order
}
