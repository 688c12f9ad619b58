//! Scoring predictions, below both the trainer's validation and the evaluator: the
//! benchmarks' official metrics, as percentages (0-100) like the papers report them, and the
//! extraction of QA answers from start/end logits.
//!
//! - `accuracy` for XNLI and XCOPA.
//! - `exact_match` and `f1` for extractive QA, with the answer normalisation of the official
//!   script the suite names ([`AnswerScheme`]): SQuAD v1.1's for XQuAD, MLQA's per-language
//!   one for MLQA.
mod answer;
mod normalize;
pub mod qa_answers;

pub use answer::{exact_match, f1, score_predictions, QaScores};
pub use normalize::{AnswerNormalization, AnswerScheme};
pub use qa_answers::qa_predictions;

/// Percentage of `predicted[i] == gold[i]`.
pub fn accuracy<T: PartialEq>(predicted: &[T], gold: &[T]) -> f64 {
    assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
    if gold.is_empty() {
        return 0.0;
    }
    let correct = predicted.iter().zip(gold).filter(|(p, g)| p == g).count();
    100.0 * correct as f64 / gold.len() as f64
}
