//! The task's training and validation examples as padded tensor batches: data readers ->
//! features -> rows of sequences with labels.
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;
use tokenizers::Tokenizer;

use super::batch::{Labels, TrainBatch};
use super::config::{Task, TrainConfig};
use crate::task::{Languages, Records};
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

/// Feature rows of the training set, as the trainer will see them: tokenised with the
/// model's tokenizer when `tokenize`, else counted from the records (exact for NLI and COPA,
/// one row per record; QA windows need the tokenizer).
pub fn count_rows(config: &TrainConfig, tokenize: bool) -> Result<usize> {
    let path = &config.train_file;
    if tokenize {
        let tok = tokenizer::load(&config.model)?;
        return Ok(Examples::read(path, config, &tok, config.train_subset, Languages::All)?.len());
    }
    if config.task == Task::Qa {
        bail!("QA windows are counted with the model's tokenizer, and the model is not here");
    }
    let records = config.task.read(path, Languages::All, OnMalformed::Error)?.len();
    Ok(config.train_subset.map_or(records, |n| n.min(records)))
}

impl Examples {
    /// Reads `path` for `config.task`, keeping the records `languages` selects.
    pub fn read(
        path: &Path,
        config: &TrainConfig,
        tokenizer: &Tokenizer,
        subset: Option<usize>,
        languages: Languages<'_>,
    ) -> Result<Examples> {
        let max_length = config.max_length();
        let records = config.task.read(path, languages, OnMalformed::Error).with_context(|| format!("reading {}", path.display()))?;
        let examples = match records {
            Records::Copa(loaded) => {
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
            Records::Nli(loaded) => {
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
            Records::Qa(loaded) => {
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
