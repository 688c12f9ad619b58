//! The task's training and validation examples as padded tensor batches: data readers ->
//! features -> rows of sequences with labels.
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;
use tokenizers::Tokenizer;

use super::batch::{Labels, TrainBatch};
use super::config::{Task, TrainConfig};
use crate::data::{self, OnMalformed, QaExample, Skipped};
use crate::features::{self, tokenizer, FeatureBatch, QaFeature, Sequence};
use crate::model::torch::Inputs;

/// Feature rows (one sequence, or one per choice) with their labels: a class or choice index,
/// or an answer's start and end token.
pub struct Examples {
    pub rows: Vec<Vec<Sequence>>,
    pub labels: Vec<(i64, i64)>,
    pub task: Task,
    /// For QA validation: the examples and the window each row comes from.
    pub qa: Option<(Vec<QaExample>, Vec<QaFeature>)>,
    pub skipped: Skipped,
}

/// Class names of the task's head, in id order.
pub fn label_names(task: Task) -> Vec<String> {
    match task {
        Task::Nli => data::nli::NliLabel::ALL.iter().map(|l| l.as_str().to_string()).collect(),
        Task::Qa | Task::Copa => Vec::new(),
    }
}

/// Feature rows of the training set, as the trainer will see them: tokenised with the
/// model's tokenizer when `tokenize`, else counted from the records (exact for NLI and COPA,
/// one row per record; QA windows need the tokenizer).
pub fn count_rows(config: &TrainConfig, tokenize: bool) -> Result<usize> {
    let path = &config.train_file;
    if tokenize {
        let tok = tokenizer::load(&config.model)?;
        return Ok(Examples::read(path, config, &tok, config.train_subset, None)?.len());
    }
    let records = match config.task {
        Task::Nli => data::nli::read(path, None, OnMalformed::Error)?.records.len(),
        Task::Copa => data::copa::read(path, OnMalformed::Error)?.records.len(),
        Task::Qa => bail!("QA windows are counted with the model's tokenizer, and the model is not here"),
    };
    Ok(config.train_subset.map_or(records, |n| n.min(records)))
}

impl Examples {
    /// Reads `path` for `config.task`. `source_language` keeps only that language's records
    /// of a multilingual NLI file (XNLI dev); files that name no languages are read whole.
    pub fn read(
        path: &Path,
        config: &TrainConfig,
        tokenizer: &Tokenizer,
        subset: Option<usize>,
        source_language: Option<&str>,
    ) -> Result<Examples> {
        let max_length = config.max_length();
        let read_err = || format!("reading {}", path.display());
        let examples = match config.task {
            Task::Copa => {
                let loaded = data::copa::read(path, OnMalformed::Error).with_context(read_err)?;
                let records = take_subset(loaded.records, subset, config.seed);
                let features = features::copa_features(tokenizer, &records, max_length)?;
                Examples {
                    rows: features.into_iter().map(|pair| pair.to_vec()).collect(),
                    labels: records.iter().map(|r| (r.label as i64, 0)).collect(),
                    task: config.task,
                    qa: None,
                    skipped: loaded.skipped,
                }
            }
            Task::Nli => {
                let loaded = match source_language {
                    Some(lang) => data::nli::read_source(path, lang, OnMalformed::Error),
                    None => data::nli::read(path, None, OnMalformed::Error),
                }
                .with_context(read_err)?;
                let records = take_subset(loaded.records, subset, config.seed);
                let features = features::nli_features(tokenizer, &records, max_length)?;
                let class = |l: data::nli::NliLabel| data::nli::NliLabel::ALL.iter().position(|x| *x == l).unwrap() as i64;
                Examples {
                    rows: features.into_iter().map(|s| vec![s]).collect(),
                    labels: records.iter().map(|r| (class(r.label), 0)).collect(),
                    task: config.task,
                    qa: None,
                    skipped: loaded.skipped,
                }
            }
            Task::Qa => {
                let loaded = data::squad::read(path, OnMalformed::Error).with_context(read_err)?;
                let records = take_subset(loaded.records, subset, config.seed);
                let windows = features::qa_features(tokenizer, &records, max_length, config.doc_stride)?;
                Examples {
                    rows: windows.iter().map(|w| vec![w.sequence.clone()]).collect(),
                    labels: windows.iter().map(|w| (w.start_position as i64, w.end_position as i64)).collect(),
                    task: config.task,
                    qa: Some((records, windows)),
                    skipped: loaded.skipped,
                }
            }
        };
        if examples.rows.is_empty() {
            bail!("{}: no usable examples ({})", path.display(), examples.skipped);
        }
        Ok(examples)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows `indices` as one padded batch on `device`.
    pub fn batch(&self, indices: &[usize], pad_id: i64, device: tch::Device) -> TrainBatch {
        let rows: Vec<&[Sequence]> = indices.iter().map(|&i| self.rows[i].as_slice()).collect();
        let padded = FeatureBatch::pad(&rows, pad_id);
        let shape: Vec<i64> = padded.shape.iter().map(|&d| d as i64).collect();
        let t = |v: &[i64]| Tensor::from_slice(v).reshape(shape.as_slice()).to_device(device);
        let inputs = Inputs {
            input_ids: t(&padded.input_ids),
            attention_mask: t(&padded.attention_mask),
            token_type_ids: Some(t(&padded.token_type_ids)),
        };
        let first: Vec<i64> = indices.iter().map(|&i| self.labels[i].0).collect();
        let labels = match self.task {
            Task::Qa => {
                let second: Vec<i64> = indices.iter().map(|&i| self.labels[i].1).collect();
                Labels::Span { start: Tensor::from_slice(&first).to_device(device), end: Tensor::from_slice(&second).to_device(device) }
            }
            _ => Labels::Class(Tensor::from_slice(&first).to_device(device)),
        };
        TrainBatch { inputs, labels }
    }
}

fn take_subset<T: Clone>(records: Vec<T>, subset: Option<usize>, seed: u64) -> Vec<T> {
    match subset {
        Some(n) if n < records.len() => features::train_subset(records.len(), n, seed).into_iter().map(|i| records[i].clone()).collect(),
        _ => records,
    }
}

/// A seeded permutation of 0..n (Fisher-Yates over a splitmix64 stream): the same seed gives
/// the same order on every machine, which resumed runs rely on.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        order.swap(i, (mix(state) % (i as u64 + 1)) as usize);
    }
    order
}

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A splitmix64 stream: uniform numbers for sampling, reproducible on every machine.
pub struct SeedStream(u64);

impl SeedStream {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A uniform draw in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (mix(self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A 64-bit seed for one purpose at one step, derived from the run's seed.
pub fn derive_seed(seed: u64, purpose: u64, step: u64) -> u64 {
    mix(seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_shuffle() {
        let p = permutation(100, 1);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(p, permutation(100, 1));
        assert_ne!(p, permutation(100, 2));
    }
}
