//! The training configuration: every option of a run, read from a TOML file and overridden by
//! command-line flags. Unknown keys are errors that name the key and the file.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fisher::{FisherEstimator, FisherLabels};
use super::schedule::Schedule;
use crate::device::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Natural language inference: MultiNLI / XNLI (3 classes).
    Nli,
    /// Extractive question answering: SQuAD / XQuAD / MLQA.
    Qa,
    /// Causal commonsense reasoning: COPA / XCOPA (2 choices).
    Copa,
}

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
    /// Where the run writes everything.
    pub out: PathBuf,
    /// Name of the task adapter (and its head) in saved checkpoints.
    #[serde(default)]
    pub adapter_name: Option<String>,
    #[serde(default = "defaults::reduction_factor")]
    pub reduction_factor: f64,
    #[serde(default)]
    pub adapter_dropout: f64,
    /// Layers of the new flex head (2 = dense + tanh + output, the `adapters` default).
    #[serde(default = "defaults::head_layers")]
    pub head_layers: usize,
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
    /// Validate (and keep the best checkpoint) every N steps; 0 = at the end of each epoch.
    #[serde(default)]
    pub eval_every: usize,
    /// Save a resumable checkpoint every N steps; 0 = at the end of each epoch.
    #[serde(default)]
    pub save_every: usize,
    #[serde(default)]
    pub device: Device,
    /// CPU threads for libtorch (default: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
}

mod defaults {
    use super::*;
    pub fn model() -> PathBuf {
        PathBuf::from(crate::model::DEFAULT_MODEL)
    }
    pub fn reduction_factor() -> f64 {
        16.0
    }
    pub fn head_layers() -> usize {
        2
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
    pub fn seed() -> u64 {
        42
    }
}

impl TrainConfig {
    /// Reads `file` (if any), applies `overrides` (a TOML table of keys set on the command
    /// line) on top, and checks the result.
    pub fn resolve(file: Option<&Path>, overrides: toml::Table) -> Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                // Relative paths stay relative to the working directory, like every other path
                // the user types.
                toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        table.extend(overrides);
        let where_ = file.map_or("the command line".to_string(), |p| p.display().to_string());
        let config: TrainConfig = TrainConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{where_}: {}", e.to_string().trim()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.batch_size == 0 || self.grad_accumulation == 0 {
            bail!("batch_size and grad_accumulation must be at least 1");
        }
        if self.unfreeze_every == 0 && self.schedule != Schedule::Standard {
            bail!("unfreeze_every must be at least 1 for schedule `{}`", self.schedule);
        }
        if !(0.0..1.0).contains(&self.adapter_dropout) {
            bail!("adapter_dropout must be in [0, 1)");
        }
        Ok(())
    }

    pub fn adapter_name(&self) -> String {
        self.adapter_name.clone().unwrap_or_else(|| match self.task {
            Task::Nli => "nli".into(),
            Task::Qa => "qa".into(),
            Task::Copa => "copa".into(),
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length.unwrap_or(match self.task {
            Task::Nli => crate::features::NLI_MAX_LENGTH,
            Task::Qa => crate::features::QA_MAX_LENGTH,
            Task::Copa => crate::features::COPA_MAX_LENGTH,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
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
