//! The training configuration: every option of a run, read from a TOML file and overridden by
//! command-line flags. Unknown keys are errors that name the key and the file.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fisher::{FisherEstimator, FisherLabels, QaReduction};
use super::schedule::{EventTiming, Schedule, Unfreezing};
use crate::device::{Device, Precision};
use crate::model::head::HeadStyle;
pub use crate::task::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    Linear,
}

/// A resolved run configuration. Field docs are the TOML keys' documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model directory (config.json, model.safetensors, tokenizer) or Hub id; default: the
    /// imported multilingual-e5-small.
    #[serde(default = "defaults::model")]
    pub model: PathBuf,
    /// Language adapter of the source language (AdapterHub directory), stacked under the task
    /// adapter and frozen. None trains the task adapter directly on the encoder.
    #[serde(default)]
    pub lang_adapter: Option<PathBuf>,
    pub task: Task,
    /// Training file: MultiNLI jsonl, SQuAD v1.1 json, or COPA jsonl.
    pub train_file: PathBuf,
    /// English validation file (same format), used to keep the best checkpoint.
    #[serde(default)]
    pub validation_file: Option<PathBuf>,
    /// The language kept from a multilingual validation file (XNLI dev); default `en`, the
    /// source language, where the file names languages.
    #[serde(default)]
    pub validation_language: Option<String>,
    /// Where the run writes everything; `{schedule}`, `{seed}` and `{train_subset}` are
    /// filled in.
    pub out: PathBuf,
    /// Name of the task adapter (and its head) in saved checkpoints.
    #[serde(default)]
    pub adapter_name: Option<String>,
    #[serde(default = "defaults::reduction_factor")]
    pub reduction_factor: f64,
    #[serde(default)]
    pub adapter_dropout: f64,
    /// The new task head: `hf` (the released code's Hugging Face head for the model and task)
    /// or `mlp` (a flex head of `head_layers` layers on the first token).
    #[serde(default)]
    pub head: HeadStyle,
    /// Layers of an `mlp` head (default 2 = dense + tanh + output, the `adapters` default).
    #[serde(default)]
    pub head_layers: Option<usize>,
    /// Start from this task adapter and its head (AdapterHub directory, flex or static
    /// Hugging Face head) instead of new ones.
    #[serde(default)]
    pub init_adapter: Option<PathBuf>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default = "defaults::doc_stride")]
    pub doc_stride: usize,
    /// Train on N examples sampled with the seed (the paper's 1k/5k/10k settings).
    #[serde(default)]
    pub train_subset: Option<usize>,
    #[serde(default = "defaults::schedule")]
    pub schedule: Schedule,
    /// k of Algorithm 1: steps between unfreezing events.
    #[serde(default = "defaults::unfreeze_every")]
    pub unfreeze_every: usize,
    /// Explicit, possibly non-uniform event steps (updates done), instead of every k.
    #[serde(default)]
    pub unfreeze_at: Vec<usize>,
    /// Adapters unfrozen per event after the first (FUN: the n largest tr(F)).
    #[serde(default = "defaults::one")]
    pub unfreeze_count: usize,
    /// `paper` (events after k, 2k, ... updates) or `code` (the released code's timing).
    #[serde(default)]
    pub event_timing: EventTiming,
    /// gu-rev, rand and order: train the top adapter from step 0, as the released code does
    /// (the paper's text starts them at their own first layer). GU and FUN always do.
    #[serde(default)]
    pub top_first: bool,
    /// Batches tr(F) is measured on, for FUN and for tracking.
    #[serde(default = "defaults::fisher_batches")]
    pub fisher_batches: usize,
    /// Track tr(F) of every task adapter every N steps (0 = off; the paper used 100).
    #[serde(default)]
    pub fisher_every: usize,
    #[serde(default = "defaults::fisher_labels")]
    pub fisher_labels: FisherLabels,
    #[serde(default = "defaults::fisher_estimator")]
    pub fisher_estimator: FisherEstimator,
    /// QA: tr(F) of log p(start) + log p(end) (`sum`, Eq. 1 for the pair) or of the released
    /// code's loss, the mean of the two (`mean`: a quarter of `sum`).
    #[serde(default)]
    pub fisher_qa_reduction: QaReduction,
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    #[serde(default = "defaults::lr_schedule")]
    pub lr_schedule: LrSchedule,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "defaults::max_grad_norm")]
    pub max_grad_norm: f64,
    #[serde(default = "defaults::epochs")]
    pub epochs: usize,
    /// Stop after this many updates (overrides epochs).
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default = "defaults::one")]
    pub grad_accumulation: usize,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Validate (and keep the best checkpoint) every N steps (0 = never by steps).
    #[serde(default)]
    pub eval_every: usize,
    /// Validate at the end of every epoch as well (the released code validates every 500
    /// steps only: eval_every = 500, eval_each_epoch = false).
    #[serde(default = "defaults::yes")]
    pub eval_each_epoch: bool,
    /// Save a resumable checkpoint every N steps; 0 = at the end of each epoch.
    #[serde(default)]
    pub save_every: usize,
    #[serde(default)]
    pub device: Device,
    /// CPU threads for libtorch (default: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// `fp32`, or `bf16`: mixed precision (bfloat16 matmuls and activations; float32 master
    /// weights, optimizer state, softmax and LayerNorm statistics, loss and tr(F)), for CPUs
    /// with AVX512-BF16 or AMX and for CUDA.
    #[serde(default)]
    pub precision: Precision,
}

mod defaults {
    use super::*;
    pub fn model() -> PathBuf {
        PathBuf::from(crate::model::DEFAULT_MODEL)
    }
    pub fn reduction_factor() -> f64 {
        16.0
    }
    pub fn doc_stride() -> usize {
        128
    }
    pub fn schedule() -> Schedule {
        Schedule::Standard
    }
    pub fn unfreeze_every() -> usize {
        50
    }
    pub fn fisher_batches() -> usize {
        40
    }
    pub fn fisher_labels() -> FisherLabels {
        FisherLabels::Sampled
    }
    pub fn fisher_estimator() -> FisherEstimator {
        FisherEstimator::Batch
    }
    pub fn lr() -> f64 {
        1e-4
    }
    pub fn lr_schedule() -> LrSchedule {
        LrSchedule::Linear
    }
    pub fn max_grad_norm() -> f64 {
        1.0
    }
    pub fn epochs() -> usize {
        3
    }
    pub fn batch_size() -> usize {
        32
    }
    pub fn one() -> usize {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn seed() -> u64 {
        42
    }
}

impl TrainConfig {
    /// Reads `file` (if any), applies `overrides` (a TOML table of keys set on the command
    /// line) on top, and checks the result.
    pub fn resolve(file: Option<&Path>, overrides: toml::Table) -> Result<Self> {
        Ok(Self::resolve_explained(file, overrides)?.0)
    }

    /// `resolve`, also naming the per-method and per-subset tables of the file that applied.
    ///
    /// A config file holds one (task, model) setting: top-level keys, then
    /// `[per_schedule.NAME]` tables (NAME = standard, lpft, gu, gu-rev, rand, order, fun) with
    /// the keys that differ for that method, and `[per_train_subset.N]` tables for training
    /// on N examples (the paper's Table 4). The schedule's table applies first, the subset's
    /// on top, then the command line.
    pub fn resolve_explained(file: Option<&Path>, overrides: toml::Table) -> Result<(Self, Vec<String>)> {
        let where_ = file.map_or("the command line".to_string(), |p| p.display().to_string());
        let mut table = match file {
            Some(path) => {
                let text = crate::data::read_text(path)?;
                // Relative paths stay relative to the working directory, like every other path
                // the user types.
                toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let per_schedule = take_tables(&mut table, "per_schedule", &where_)?;
        let per_subset = take_tables(&mut table, "per_train_subset", &where_)?;
        let mut applied = Vec::new();

        let chosen = |key: &str, table: &toml::Table| overrides.get(key).or_else(|| table.get(key)).cloned();
        let schedule: Schedule = match chosen("schedule", &table) {
            Some(v) => Schedule::deserialize(v).map_err(|e| anyhow::anyhow!("{where_}: {}", e.to_string().trim()))?,
            None => defaults::schedule(),
        };
        for name in per_schedule.keys() {
            if !Schedule::KINDS.contains(&name.as_str()) {
                bail!("{where_}: [per_schedule.{name}]: no such schedule ({})", Schedule::KINDS.join(", "));
            }
        }
        if let Some(keys) = per_schedule.get(schedule.kind()) {
            merge_section(&mut table, keys, &format!("per_schedule.{}", schedule.kind()), &["schedule"], &where_)?;
            applied.push(format!("[per_schedule.{}]", schedule.kind()));
        }
        if let Some(subset) = chosen("train_subset", &table) {
            let n = subset.as_integer().with_context(|| format!("{where_}: train_subset must be an integer"))?;
            if let Some(keys) = per_subset.get(&n.to_string()) {
                let name = format!("per_train_subset.{n}");
                merge_section(&mut table, keys, &name, &["schedule", "train_subset"], &where_)?;
                applied.push(format!("[{name}]"));
            }
        }
        table.extend(overrides);
        let mut config: TrainConfig = TrainConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{where_}: {}", e.to_string().trim()))?;
        config.out = config.expand_out();
        config.check().with_context(|| format!("in {where_}"))?;
        Ok((config, applied))
    }

    fn check(&self) -> Result<()> {
        if self.batch_size == 0 || self.grad_accumulation == 0 {
            bail!("batch_size and grad_accumulation must be at least 1");
        }
        let scheduled = !matches!(self.schedule, Schedule::Standard);
        if scheduled && self.unfreeze_every == 0 && self.unfreeze_at.is_empty() {
            bail!("unfreeze_every must be at least 1 for schedule `{}`", self.schedule);
        }
        if !scheduled && (!self.unfreeze_at.is_empty() || self.unfreeze_count != 1 || self.top_first) {
            bail!("unfreeze_at, unfreeze_count and top_first need a schedule other than `standard`");
        }
        if !(0.0..1.0).contains(&self.adapter_dropout) {
            bail!("adapter_dropout must be in [0, 1)");
        }
        if self.head == HeadStyle::Hf && self.head_layers.is_some() {
            bail!("head_layers applies to head = \"mlp\"; the `hf` head has the released code's layers");
        }
        if self.head_layers == Some(0) {
            bail!("head_layers must be at least 1");
        }
        if self.task != Task::Qa && self.fisher_qa_reduction != QaReduction::default() {
            bail!("fisher_qa_reduction applies to task = \"qa\" only");
        }
        if self.validation_language.is_some() && (self.validation_file.is_none() || self.task != Task::Nli) {
            bail!("validation_language selects a language of a multilingual NLI validation_file (XNLI dev)");
        }
        if self.validation_file.is_some() && self.eval_every == 0 && !self.eval_each_epoch {
            bail!("with eval_every = 0 and eval_each_epoch = false the validation_file is never used");
        }
        let new_parts = self.head_layers.is_some()
            || self.head != HeadStyle::default()
            || self.reduction_factor != defaults::reduction_factor()
            || self.adapter_dropout != 0.0;
        if self.init_adapter.is_some() && new_parts {
            bail!("head, head_layers, reduction_factor and adapter_dropout describe a new task adapter; init_adapter brings its own");
        }
        Ok(())
    }

    /// `out` with `{schedule}`, `{seed}` and `{train_subset}` filled in, so one file serves
    /// every method and seed of a grid.
    fn expand_out(&self) -> PathBuf {
        let schedule = self.schedule.to_string().replace([':', ','], "-");
        let subset = self.train_subset.map_or("full".to_string(), |n| n.to_string());
        let out = self.out.to_string_lossy();
        PathBuf::from(out.replace("{schedule}", &schedule).replace("{seed}", &self.seed.to_string()).replace("{train_subset}", &subset))
    }

    /// The unfreezing plan for a model of `num_layers` layers.
    pub fn unfreezing(&self, num_layers: usize) -> Unfreezing {
        Unfreezing {
            schedule: self.schedule.clone(),
            every: self.unfreeze_every,
            at: self.unfreeze_at.clone(),
            per_event: self.unfreeze_count,
            timing: self.event_timing,
            top_first: self.top_first,
            num_layers,
        }
    }

    /// The language whose records a multilingual validation file contributes.
    pub fn source_language(&self) -> &str {
        self.validation_language.as_deref().unwrap_or("en")
    }

    /// Batches per epoch over `train_len` feature rows.
    pub fn batches_per_epoch(&self, train_len: usize) -> usize {
        train_len.div_ceil(self.batch_size)
    }

    /// Updates per epoch (batches grouped by gradient accumulation).
    pub fn steps_per_epoch(&self, train_len: usize) -> usize {
        self.batches_per_epoch(train_len).div_ceil(self.grad_accumulation).max(1)
    }

    /// Updates of the whole run.
    pub fn total_steps(&self, train_len: usize) -> usize {
        self.max_steps.unwrap_or_else(|| (self.epochs * self.batches_per_epoch(train_len)).div_ceil(self.grad_accumulation))
    }

    /// Layers of a new `mlp` head.
    pub fn mlp_head_layers(&self) -> usize {
        self.head_layers.unwrap_or(2)
    }

    pub fn adapter_name(&self) -> String {
        self.adapter_name.clone().unwrap_or_else(|| self.task.as_str().to_string())
    }

    pub fn max_length(&self) -> usize {
        self.max_length.unwrap_or(self.task.default_max_length())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Removes `[NAME.*]` from `table`: a table of tables.
fn take_tables(table: &mut toml::Table, name: &str, where_: &str) -> Result<toml::Table> {
    let Some(value) = table.remove(name) else { return Ok(toml::Table::new()) };
    let toml::Value::Table(sections) = value else { bail!("{where_}: `{name}` must be a table of tables") };
    for (key, section) in &sections {
        if !section.is_table() {
            bail!("{where_}: `{name}.{key}` must be a table");
        }
    }
    Ok(sections)
}

/// Lays the keys of `[name]` over `table`; the keys in `forbidden` choose sections and cannot
/// be set inside one.
fn merge_section(table: &mut toml::Table, section: &toml::Value, name: &str, forbidden: &[&str], where_: &str) -> Result<()> {
    let keys = section.as_table().expect("checked by take_tables");
    for (key, value) in keys {
        if forbidden.contains(&key.as_str()) || key.starts_with("per_") {
            bail!("{where_}: [{name}] cannot set `{key}`");
        }
        table.insert(key.clone(), value.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> toml::Table {
        toml::from_str(
            r#"model = "m"
task = "copa"
train_file = "t.jsonl"
out = "runs/x""#,
        )
        .unwrap()
    }

    #[test]
    fn unknown_key_is_named() {
        let mut t = base();
        t.insert("learning_rate".into(), 0.1.into());
        let err = TrainConfig::resolve(None, t).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `learning_rate`"), "{err:#}");
    }

    #[test]
    fn bad_value_is_named() {
        let mut t = base();
        t.insert("schedule".into(), "gradual".into());
        let err = TrainConfig::resolve(None, t).unwrap_err();
        assert!(format!("{err:#}").contains("unknown schedule `gradual`"), "{err:#}");
    }

    #[test]
    fn model_defaults_to_the_imported_e5() {
        let mut t = base();
        t.remove("model");
        assert_eq!(TrainConfig::resolve(None, t).unwrap().model, PathBuf::from(crate::model::DEFAULT_MODEL));
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "model = \"m\"\ntask = \"copa\"\ntrain_file = \"t.jsonl\"\nout = \"o\"\nseed = 1\nlr = 0.5\n").unwrap();
        let mut over = toml::Table::new();
        over.insert("seed".into(), 7.into());
        let c = TrainConfig::resolve(Some(&file), over).unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.lr, 0.5);
        assert_eq!(c.model, PathBuf::from("m"));
        let round: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(round, c);
    }
}
