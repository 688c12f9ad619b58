//! A training run's folder: every file `toolkit train` writes there, and the part of its
//! `config.toml` that `toolkit export` and `toolkit report` read back. It needs no libtorch:
//! the full configuration (`train::TrainConfig`) lives behind the `train` feature, so this
//! reads only the keys named here and ignores the others.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The files of a run folder.
#[derive(Debug, Clone)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// The resolved configuration, with the toolkit version and git commit in a comment.
    pub fn config_toml(&self) -> PathBuf {
        self.0.join("config.toml")
    }

    /// The number of updates and the schedule's unfreezing events, as `--dry-run` prints them.
    pub fn plan_txt(&self) -> PathBuf {
        self.0.join("plan.txt")
    }

    /// step, epoch, loss, lr, trainable_adapters, grad_norm.
    pub fn metrics_csv(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }

    /// step, metric, value of each validation (on the source language).
    pub fn validation_csv(&self) -> PathBuf {
        self.0.join("validation.csv")
    }

    /// step, layer, trainable, trace: tr(F) of every layer's task adapter.
    pub fn fisher_csv(&self) -> PathBuf {
        self.0.join("fisher.csv")
    }

    /// step, trainable_adapters, avg_trace_trainable: the paper's plotted quantity.
    pub fn fisher_avg_csv(&self) -> PathBuf {
        self.0.join("fisher_avg.csv")
    }

    /// step, layer, trace, chosen: each FUN decision with the traces it compared.
    pub fn fun_selection_csv(&self) -> PathBuf {
        self.0.join("fun_selection.csv")
    }

    /// layer, from_top, unfreeze_step: when each layer's task adapter became trainable.
    pub fn schedule_csv(&self) -> PathBuf {
        self.0.join("schedule.csv")
    }

    /// Records left out of training and validation, with reasons.
    pub fn skipped_txt(&self) -> PathBuf {
        self.0.join("skipped.txt")
    }

    /// The latest checkpoint, with optimizer and trainer state: a run resumes from it.
    pub fn last(&self) -> PathBuf {
        self.0.join("last")
    }

    /// The checkpoint with the best validation score: the trained task adapter and its head.
    pub fn best(&self) -> PathBuf {
        self.0.join("best")
    }

    /// What export and report need of `config.toml`.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.config_toml();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is {} a training run folder?)", path.display(), self.0.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: not a training run's configuration", path.display()))
    }
}

/// Keys of a run's `config.toml`, as `toolkit train` wrote them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunConfig {
    /// The base model folder; a relative path is taken from the folder training ran in.
    pub model: PathBuf,
    /// The frozen language adapter stacked under the task adapter, if any.
    #[serde(default)]
    pub lang_adapter: Option<PathBuf>,
    /// `nli`, `qa` or `copa`.
    pub task: String,
    /// The unfreezing schedule as configs name it: `standard`, `gu`, `fun`, `order:11,9,10`, ...
    pub schedule: String,
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_config_is_read_and_other_keys_ignored() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::new(root.path());
        std::fs::write(
            run.config_toml(),
            "# Resolved configuration of this run.\nmodel = \"models/mbert\"\ntask = \"copa\"\n\
             schedule = \"order:11,10\"\nlr = 0.0005\nseed = 3\n\n[fisher]\nbatches = 40\n",
        )
        .unwrap();
        let config = run.read_config().unwrap();
        assert_eq!(
            config,
            RunConfig {
                model: PathBuf::from("models/mbert"),
                lang_adapter: None,
                task: "copa".into(),
                schedule: "order:11,10".into(),
                seed: 3,
            }
        );

        std::fs::write(run.config_toml(), "model = \"models/mbert\"\n").unwrap();
        let err = run.read_config().unwrap_err();
        assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    }
}
