//! Scoring one language: features, length-sorted batches through the model, predictions,
//! metrics, throughput and where the time went.
use std::collections::HashMap;
use std::time::Instant;

use anyhow::{ensure, Result};
use indicatif::ProgressBar;
use ort::session::Session;
use serde::Serialize;

use super::exported::ExportedModels;
use super::infer::run_batch;
use crate::scoring::{accuracy, qa_predictions, score_predictions};
use super::suite::Records;
use super::{Metric, Suite};
use crate::data::{CopaExample, NliExample};
use crate::features::{copa_features, nli_features, pad_id, qa_features, BatchPlan, FeatureBatch, QaFeature, Sequence};

/// Speed and padding of one language's run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub examples: usize,
    /// Model inputs: sequences (QA windows, COPA choices count one each).
    pub sequences: usize,
    pub batches: usize,
    pub tokens: usize,
    pub padding_fraction: f64,
    /// Tokenisation (unless it ran while the previous language was scored), inference and
    /// post-processing.
    pub seconds: f64,
    /// `session.run` alone.
    pub inference_seconds: f64,
    pub examples_per_second: f64,
    pub tokens_per_second: f64,
    pub phases: Phases,
}

/// Where a language's seconds went, phase by phase (wall clock; `tokenize` on whichever
/// thread tokenised).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Records to token ids.
    pub tokenize: f64,
    /// The length-sorted plan and the padded batches.
    pub batch: f64,
    /// ONNX Runtime's input tensors.
    pub tensors: f64,
    /// `session.run`.
    pub run: f64,
    /// Outputs copied out of ONNX Runtime and into each item's result.
    pub outputs: f64,
    /// Metrics (QA: answer extraction too).
    pub score: f64,
}

/// A language's records with their model inputs.
pub struct LanguageInputs {
    pub records: Records,
    features: Features,
    tokenize_seconds: f64,
}

enum Features {
    Nli(Vec<Sequence>),
    Copa(Vec<[Sequence; 2]>),
    Qa(Vec<QaFeature>),
}

impl LanguageInputs {
    /// Tokenises `records` with the export's tokenizer as the suite says.
    pub fn tokenize(records: Records, models: &ExportedModels, suite: &Suite) -> Result<LanguageInputs> {
        let start = Instant::now();
        let max_length = suite.features.max_length;
        let features = match &records {
            Records::Nli(loaded) => Features::Nli(nli_features(&models.tokenizer, &loaded.records, max_length)?),
            Records::Copa(loaded) => Features::Copa(copa_features(&models.tokenizer, &loaded.records, max_length)?),
            Records::Qa(loaded) => {
                let stride = suite.features.doc_stride.unwrap_or_default();
                Features::Qa(qa_features(&models.tokenizer, &loaded.records, max_length, stride)?)
            }
        };
        Ok(LanguageInputs { records, features, tokenize_seconds: start.elapsed().as_secs_f64() })
    }
}

/// A language's scores.
pub struct LanguageScores {
    pub metrics: Vec<(Metric, f64)>,
    pub throughput: Throughput,
    /// `{id: prediction}`: a QA question's answer text, an NLI pair's label, a COPA item's
    /// chosen choice (`0` or `1`, as the data's labels), keyed by question id, pair id (or
    /// `line N`) and COPA `idx`.
    pub predictions: HashMap<String, String>,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub token_budget: usize,
}

/// Scores `inputs`; `tokenized_here` says whether their tokenisation belongs to this
/// language's seconds (it does not when it ran beside the previous language).
pub fn score_language(
    session: &mut Session,
    models: &ExportedModels,
    suite: &Suite,
    lang: &str,
    inputs: &LanguageInputs,
    tokenized_here: bool,
    batching: Batching,
    progress: &ProgressBar,
) -> Result<LanguageScores> {
    let start = Instant::now();
    let mut runner = Runner {
        session,
        pad_id: pad_id(&models.tokenizer)?,
        batching,
        progress,
        phases: Phases { tokenize: inputs.tokenize_seconds, ..Phases::default() },
    };
    let (metrics, predictions, plan, examples) = match (&inputs.records, &inputs.features) {
        (Records::Nli(loaded), Features::Nli(features)) => {
            let (predicted, plan) = runner.classify(features, &models.class_names)?;
            let scoring = Instant::now();
            let gold: Vec<&str> = loaded.records.iter().map(|e: &NliExample| e.label.as_str()).collect();
            let metrics = vec![(Metric::Accuracy, accuracy(&predicted, &gold))];
            let ids = loaded.records.iter().map(|e| e.id.clone());
            let predictions = keyed_by_id(ids, predicted.iter().map(|p| p.to_string()), lang)?;
            runner.phases.score += scoring.elapsed().as_secs_f64();
            (metrics, predictions, plan, loaded.records.len())
        }
        (Records::Copa(loaded), Features::Copa(features)) => {
            let (predicted, plan) = runner.choose(features)?;
            let scoring = Instant::now();
            let gold: Vec<usize> = loaded.records.iter().map(|e: &CopaExample| e.label).collect();
            let metrics = vec![(Metric::Accuracy, accuracy(&predicted, &gold))];
            let ids = loaded.records.iter().map(|e| e.idx.to_string());
            let predictions = keyed_by_id(ids, predicted.iter().map(|p| p.to_string()), lang)?;
            runner.phases.score += scoring.elapsed().as_secs_f64();
            (metrics, predictions, plan, loaded.records.len())
        }
        (Records::Qa(loaded), Features::Qa(features)) => {
            let (logits, plan) = runner.answer(features)?;
            let scoring = Instant::now();
            let predictions = qa_predictions(&loaded.records, features, &logits);
            let scores = score_predictions(&suite.answer_normalization(lang)?, &loaded.records, &predictions);
            let metrics = suite
                .metrics
                .iter()
                .map(|&m| (m, if m == Metric::ExactMatch { scores.exact_match } else { scores.f1 }))
                .collect();
            runner.phases.score += scoring.elapsed().as_secs_f64();
            (metrics, predictions, plan, loaded.records.len())
        }
        _ => unreachable!("LanguageInputs::tokenize makes the features of its records' task"),
    };
    let seconds = start.elapsed().as_secs_f64() + if tokenized_here { inputs.tokenize_seconds } else { 0.0 };
    let throughput = Throughput {
        examples,
        sequences: plan.sequences,
        batches: plan.plan.batches.len(),
        tokens: plan.plan.real_tokens,
        padding_fraction: plan.plan.padding_fraction(),
        seconds,
        inference_seconds: runner.phases.run,
        examples_per_second: examples as f64 / seconds,
        tokens_per_second: plan.plan.real_tokens as f64 / seconds,
        phases: runner.phases,
    };
    Ok(LanguageScores { metrics, throughput, predictions })
}

/// Predictions by item id, in the data's order; two items with one id would make the file
/// ambiguous, so that is an error naming the id.
fn keyed_by_id(ids: impl Iterator<Item = String>, predictions: impl Iterator<Item = String>, lang: &str) -> Result<HashMap<String, String>> {
    let mut keyed = HashMap::new();
    for (id, prediction) in ids.zip(predictions) {
        ensure!(
            !keyed.contains_key(&id),
            "{lang}: two items have the id `{id}`, so their predictions cannot be told apart in {lang}.json"
        );
        keyed.insert(id, prediction);
    }
    Ok(keyed)
}

struct PlanUsed {
    plan: BatchPlan,
    sequences: usize,
}

struct Runner<'a> {
    session: &'a mut Session,
    pad_id: i64,
    batching: Batching,
    progress: &'a ProgressBar,
    phases: Phases,
}

impl Runner<'_> {
    /// Runs `items` in length-sorted batches; `take` receives each batch's item indices and
    /// the requested outputs.
    fn run(
        &mut self,
        items: &[&[Sequence]],
        outputs: &[&str],
        mut take: impl FnMut(&[usize], Vec<(Vec<f32>, Vec<usize>)>) -> Result<()>,
    ) -> Result<PlanUsed> {
        let start = Instant::now();
        let plan = BatchPlan::length_sorted(items, self.batching.token_budget, None);
        self.phases.batch += start.elapsed().as_secs_f64();
        self.progress.set_length(items.len() as u64);
        for batch in &plan.batches {
            let padding = Instant::now();
            let rows: Vec<&[Sequence]> = batch.iter().map(|&i| items[i]).collect();
            let inputs = FeatureBatch::pad(&rows, self.pad_id);
            self.phases.batch += padding.elapsed().as_secs_f64();
            let out = run_batch(self.session, inputs, outputs, &mut self.phases)?;
            let taking = Instant::now();
            take(batch, out.tensors)?;
            self.phases.outputs += taking.elapsed().as_secs_f64();
            self.progress.inc(batch.len() as u64);
        }
        Ok(PlanUsed { sequences: items.iter().map(|i| i.len()).sum(), plan })
    }

    /// Per-row argmax of `[batch, n]` logits.
    fn argmax_rows(&mut self, items: &[&[Sequence]], expected_width: usize) -> Result<(Vec<usize>, PlanUsed)> {
        let mut predicted = vec![0; items.len()];
        let plan = self.run(items, &["logits"], |batch, mut tensors| {
            let (logits, shape) = tensors.remove(0);
            ensure!(
                shape == [batch.len(), expected_width],
                "logits of shape {shape:?}, expected [{}, {expected_width}]",
                batch.len()
            );
            for (row, &item) in logits.chunks(expected_width).zip(batch) {
                predicted[item] = argmax(row);
            }
            Ok(())
        })?;
        Ok((predicted, plan))
    }

    fn classify<'n>(&mut self, features: &[Sequence], class_names: &'n [String]) -> Result<(Vec<&'n str>, PlanUsed)> {
        let items: Vec<&[Sequence]> = features.iter().map(std::slice::from_ref).collect();
        let (ids, plan) = self.argmax_rows(&items, class_names.len())?;
        Ok((ids.into_iter().map(|i| class_names[i].as_str()).collect(), plan))
    }

    fn choose(&mut self, features: &[[Sequence; 2]]) -> Result<(Vec<usize>, PlanUsed)> {
        let items: Vec<&[Sequence]> = features.iter().map(|f| &f[..]).collect();
        self.argmax_rows(&items, 2)
    }

    /// Each window's start and end logits over its own tokens.
    fn answer(&mut self, features: &[QaFeature]) -> Result<(Vec<(Vec<f32>, Vec<f32>)>, PlanUsed)> {
        let items: Vec<&[Sequence]> = features.iter().map(|f| std::slice::from_ref(&f.sequence)).collect();
        let mut logits: Vec<(Vec<f32>, Vec<f32>)> = vec![Default::default(); features.len()];
        let plan = self.run(&items, &["start_logits", "end_logits"], |batch, tensors| {
            let [(start, start_shape), (end, end_shape)] = <[_; 2]>::try_from(tensors).expect("two outputs asked for");
            let width = start_shape.get(1).copied().unwrap_or(0);
            ensure!(
                start_shape == [batch.len(), width] && end_shape == start_shape,
                "QA logits of shapes {start_shape:?} and {end_shape:?}"
            );
            for (row, &item) in batch.iter().enumerate() {
                let len = features[item].sequence.len();
                let at = row * width;
                logits[item] = (start[at..at + len].to_vec(), end[at..at + len].to_vec());
            }
            Ok(())
        })?;
        Ok((logits, plan))
    }
}

/// Index of the largest value; the first one on ties, as numpy's `argmax`.
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}
