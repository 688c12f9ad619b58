//! Exact match and token F1 of a predicted answer, maximised over the gold answers, and their
//! totals over a data set, as the SQuAD v1.1 and MLQA scripts compute them.
use std::collections::HashMap;

use serde::Serialize;

use super::AnswerNormalization;
use crate::data::QaExample;

/// Whether the normalised prediction equals the normalised gold answer.
pub fn exact_match(norm: &AnswerNormalization, prediction: &str, gold: &str) -> bool {
    norm.normalize(prediction) == norm.normalize(gold)
}

/// Harmonic mean of token precision and recall, counting shared tokens as a multiset.
pub fn f1(norm: &AnswerNormalization, prediction: &str, gold: &str) -> f64 {
    let predicted = norm.tokens(prediction);
    let gold = norm.tokens(gold);
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for token in &gold {
        *gold_counts.entry(token).or_default() += 1;
    }
    let mut same = 0usize;
    for token in &predicted {
        if let Some(n) = gold_counts.get_mut(token.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / predicted.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QaScores {
    pub exact_match: f64,
    pub f1: f64,
    /// Questions scored, answered or not.
    pub total: usize,
    /// Questions without a prediction (scored 0).
    pub unanswered: usize,
}

/// The script's totals: per question the best score over its gold answers; a question with
/// no prediction scores 0 but counts; percentages over all questions.
pub fn score_predictions(
    norm: &AnswerNormalization,
    examples: &[QaExample],
    predictions: &HashMap<String, String>,
) -> QaScores {
    let (mut em, mut f1_sum, mut unanswered) = (0.0, 0.0, 0);
    for example in examples {
        let Some(prediction) = predictions.get(&example.id) else {
            unanswered += 1;
            continue;
        };
        let best = |score: &dyn Fn(&str) -> f64| example.answers.iter().map(|a| score(&a.text)).fold(0.0, f64::max);
        em += best(&|gold| f64::from(u8::from(exact_match(norm, prediction, gold))));
        f1_sum += best(&|gold| f1(norm, prediction, gold));
    }
    let total = examples.len();
    let percent = |x: f64| if total == 0 { 0.0 } else { 100.0 * x / total as f64 };
    QaScores { exact_match: percent(em), f1: percent(f1_sum), total, unanswered }
}
