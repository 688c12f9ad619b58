//! Padded model inputs and the length-sorted batching that keeps padding small.
use anyhow::{Context, Result};
use tokenizers::Tokenizer;

/// One tokenised input sequence (special tokens included, no padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

impl Sequence {
    pub fn from_encoding(encoding: &tokenizers::Encoding) -> Sequence {
        Sequence {
            input_ids: encoding.get_ids().iter().map(|&id| i64::from(id)).collect(),
            token_type_ids: encoding.get_type_ids().iter().map(|&id| i64::from(id)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Model inputs for a batch, row-major, padded to the batch's longest sequence only. `shape`
/// is `[batch, seq]`, or `[batch, choices, seq]` for multiple choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureBatch {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub shape: Vec<usize>,
}

impl FeatureBatch {
    /// Pads `rows` (each a list of `choices` sequences; one for single-sequence tasks) with
    /// `pad_id`; `choices` = 1 gives shape `[batch, seq]`.
    pub fn pad(rows: &[&[Sequence]], pad_id: i64) -> FeatureBatch {
        let choices = rows.first().map_or(1, |r| r.len());
        assert!(rows.iter().all(|r| r.len() == choices), "every row has the same number of choices");
        let seq = rows.iter().flat_map(|r| r.iter()).map(Sequence::len).max().unwrap_or(0);
        let n = rows.len() * choices * seq;
        let mut batch = FeatureBatch {
            input_ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            token_type_ids: Vec::with_capacity(n),
            shape: if choices == 1 { vec![rows.len(), seq] } else { vec![rows.len(), choices, seq] },
        };
        for sequence in rows.iter().flat_map(|r| r.iter()) {
            let pad = seq - sequence.len();
            batch.input_ids.extend(&sequence.input_ids);
            batch.input_ids.extend(std::iter::repeat_n(pad_id, pad));
            batch.attention_mask.extend(std::iter::repeat_n(1, sequence.len()));
            batch.attention_mask.extend(std::iter::repeat_n(0, pad));
            batch.token_type_ids.extend(&sequence.token_type_ids);
            batch.token_type_ids.extend(std::iter::repeat_n(0, pad));
        }
        batch
    }

    /// Tokens in the batch, padding included.
    pub fn padded_tokens(&self) -> usize {
        self.input_ids.len()
    }

    /// Tokens in the batch, padding excluded.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }
}

/// The id padding uses: the tokenizer's padding setting, else its `[PAD]` / `<pad>` token.
pub fn pad_id(tokenizer: &Tokenizer) -> Result<i64> {
    if let Some(padding) = tokenizer.get_padding() {
        return Ok(i64::from(padding.pad_id));
    }
    ["[PAD]", "<pad>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .map(i64::from)
        .context("the tokenizer has no padding token ([PAD] or <pad>)")
}

/// Which items go into which batch, and how much padding that costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// Item indices per batch; items of similar length share a batch.
    pub batches: Vec<Vec<usize>>,
    pub real_tokens: usize,
    pub padded_tokens: usize,
}

impl BatchPlan {
    /// Groups items (each one sequence, or one per choice), sorted by their longest sequence,
    /// into batches whose padded size (items × sequences per item × longest length) stays
    /// within `token_budget`; an item longer than the budget gets a batch of its own.
    /// `max_items` caps the batch size as well.
    pub fn length_sorted(items: &[&[Sequence]], token_budget: usize, max_items: Option<usize>) -> BatchPlan {
        let longest: Vec<usize> = items.iter().map(|item| item.iter().map(Sequence::len).max().unwrap_or(0)).collect();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| longest[i]);
        let mut plan = BatchPlan {
            batches: Vec::new(),
            real_tokens: items.iter().flat_map(|item| item.iter()).map(Sequence::len).sum(),
            padded_tokens: 0,
        };
        let (mut current, mut rows, mut length) = (Vec::new(), 0, 0);
        for i in order {
            let full = max_items.is_some_and(|m| current.len() >= m);
            if !current.is_empty() && ((rows + items[i].len()) * longest[i] > token_budget || full) {
                plan.padded_tokens += rows * length;
                plan.batches.push(std::mem::take(&mut current));
                rows = 0;
            }
            current.push(i);
            rows += items[i].len();
            length = longest[i];
        }
        if !current.is_empty() {
            plan.padded_tokens += rows * length;
            plan.batches.push(current);
        }
        plan
    }

    /// Share of the padded tokens that are padding.
    pub fn padding_fraction(&self) -> f64 {
        if self.padded_tokens == 0 {
            return 0.0;
        }
        1.0 - self.real_tokens as f64 / self.padded_tokens as f64
    }
}
