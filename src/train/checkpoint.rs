//! Checkpoints: the task adapter and its head in AdapterHub layout (loadable by the `adapters`
//! library and by `toolkit export`), plus, for resuming, the optimizer and trainer state.
//! Every checkpoint directory is built in an `fsx::Staging` directory and renamed into place,
//! so a failed save leaves the previous checkpoint as it was.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::optimizer::{to_stored, AdamW};
use crate::fsx::{self, Staging};
use crate::model::adapter_config::SavedAdapterConfig;
use crate::model::composed::AdapterSpec;
use crate::model::torch::MadxModel;
use crate::model::weights::{write_safetensors, Tensor as Stored, Weights};
use crate::model::ModelConfig;

/// Where the trainer stands after an update: everything a resumed run needs besides weights
/// and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Updates done.
    pub step: usize,
    /// Task-adapter layers trainable now, in the order they were unfrozen.
    pub trainable: Vec<usize>,
    /// The step at which each of `trainable` was unfrozen.
    pub unfreeze_steps: Vec<usize>,
    pub best_score: Option<f64>,
    pub best_step: Option<usize>,
    /// Per-parameter AdamW step counts.
    pub optimizer_steps: BTreeMap<String, i64>,
}

/// Writes `dir` = the task adapter + head of `model` (AdapterHub layout), and with `state`
/// the optimizer and trainer state too.
pub fn save(
    dir: &Path,
    model: &MadxModel,
    config: &ModelConfig,
    head_json: &Value,
    state: Option<(&AdamW, &TrainerState)>,
) -> Result<()> {
    let task = model.task.as_ref().context("no task adapter to save")?;
    let write = || -> Result<()> {
        let staging = Staging::new(dir, None)?;
        let staging_dir = staging.dir();
        write_adapter(staging_dir, model, task, config)?;
        write_json(&staging_dir.join("head_config.json"), head_json)?;
        let head: Vec<(String, Stored)> = model.head_vars().into_iter().map(|(n, t)| (n, to_stored(&t))).collect();
        write_tensors(&staging_dir.join("model_head.safetensors"), &head)?;
        if let Some((optimizer, trainer)) = state {
            let steps = write_optimizer(staging_dir, optimizer)?;
            let trainer = TrainerState { optimizer_steps: steps, ..trainer.clone() };
            write_json(&staging_dir.join("trainer_state.json"), &serde_json::to_value(&trainer)?)?;
        }
        staging.commit()
    };
    // The files named in errors are in the hidden staging directory: say which checkpoint.
    write().with_context(|| format!("saving the checkpoint {}", dir.display()))
}

/// Writes the adapter `spec` of `model` into `dir`: `adapter_config.json` and
/// `adapter.safetensors` (with its invertible adapter), named as the `adapters` library does.
pub fn write_adapter(dir: &Path, model: &MadxModel, spec: &AdapterSpec, config: &ModelConfig) -> Result<()> {
    let prefix = config.arch.prefix();
    let saved = SavedAdapterConfig {
        config: spec.config.clone(),
        name: spec.name.clone(),
        hidden_size: Some(config.hidden_size),
        model_type: Some(config.arch.model_type().to_string()),
    };
    write_json(&dir.join("adapter_config.json"), &saved.to_json())?;
    let adapter: Vec<(String, Stored)> = model.adapter_vars(spec).into_iter().map(|(n, t)| (format!("{prefix}{n}"), to_stored(&t))).collect();
    write_tensors(&dir.join("adapter.safetensors"), &adapter)
}

/// Writes the optimizer's moments into `dir` (`optimizer.safetensors`); returns the
/// per-parameter step counts for the trainer's state file.
pub fn write_optimizer(dir: &Path, optimizer: &AdamW) -> Result<BTreeMap<String, i64>> {
    let (moments, steps) = optimizer.state_tensors();
    write_tensors(&dir.join("optimizer.safetensors"), &moments)?;
    Ok(steps)
}

/// The optimizer moments `write_optimizer` wrote into `dir`.
pub fn read_optimizer(dir: &Path) -> Result<Weights> {
    Weights::read_safetensors(&dir.join("optimizer.safetensors"), |n| Some(n.to_string()))
}

/// The trainer state and optimizer moments of a resumable checkpoint.
pub fn load_state(dir: &Path) -> Result<(TrainerState, Weights)> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("{}: corrupt trainer state", path.display()))?;
    Ok((state, read_optimizer(dir)?))
}

pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fsx::write_atomic(path, text.as_bytes())
}

pub fn write_tensors(path: &Path, tensors: &[(String, Stored)]) -> Result<()> {
    let refs: Vec<(String, &Stored)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    write_safetensors(path, &refs, None)
}
