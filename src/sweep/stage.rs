//! The two stages of a run, as one array task (or one local job) runs them in-process, and
//! what says from the files alone that a stage is complete: the sweep skips those, and an
//! interrupted stage continues (training from `last/`; an export is staged and renamed into
//! place; a results CSV is written atomically).
use anyhow::{bail, Result};

use super::file::{Run, Sweep};
use crate::device::Device;
use crate::eval::{EvalArgs, DEFAULT_BATCH_TOKENS};
use crate::export::{Dtype, ExportArgs, Int8Activations, Int8Cpu};
use crate::run_dir::RunDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// `toolkit train`: resumes from last/.
    Train,
    /// `toolkit export`, then `toolkit eval` on every suite of the sweep.
    Score,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Train => "train",
            Stage::Score => "score",
        }
    }
}

/// Training is complete once the trainer wrote schedule.csv (after its last update) and best/.
pub fn trained(run: &RunDir) -> bool {
    run.schedule_csv().is_file() && run.best().join("adapter_config.json").is_file()
}

/// Updates done so far, from last/trainer_state.json.
pub fn steps_done(run: &RunDir) -> Option<usize> {
    let text = std::fs::read_to_string(run.last().join("trainer_state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state.get("step")?.as_u64().map(|s| s as usize)
}

/// Suites of the sweep whose results CSV for `run` exists.
pub fn scored_suites(sweep: &Sweep, run: &Run) -> usize {
    sweep.eval.suites.iter().filter(|s| sweep.results_csv(run, s).is_file()).count()
}

pub fn complete(sweep: &Sweep, run: &Run, stage: Stage) -> bool {
    match stage {
        Stage::Train => trained(&sweep.run_dir(run)),
        Stage::Score => scored_suites(sweep, run) == sweep.eval.suites.len(),
    }
}

/// Runs `stage` of `run` unless it is complete.
pub fn run_stage(sweep: &Sweep, run: &Run, stage: Stage) -> Result<()> {
    if complete(sweep, run, stage) {
        println!("{}: {} already complete", run.name, stage.as_str());
        return Ok(());
    }
    match stage {
        Stage::Train => {
            crate::train::Trainer::new(run.config.clone(), true)?.run()?;
        }
        Stage::Score => score(sweep, run)?,
    }
    println!("{}: {} complete", run.name, stage.as_str());
    Ok(())
}

fn score(sweep: &Sweep, run: &Run) -> Result<()> {
    if !trained(&sweep.run_dir(run)) {
        bail!("{}: training is not complete in {}", run.name, run.config.out.display());
    }
    let exported = sweep.export_dir(run);
    if !exported.join(crate::export::manifest::MANIFEST).is_file() {
        crate::export::run(&ExportArgs {
            run: Some(run.config.out.clone()),
            model: None,
            task_adapter: None,
            lang: sweep.export.lang_adapters.as_ref().map(|_| sweep.export.lang.clone().unwrap_or_else(|| "all".into())),
            lang_adapters: sweep.export.lang_adapters.clone(),
            no_lang_adapter: sweep.export.lang_adapters.is_none(),
            dtype: Dtype::Fp32,
            int8_lang_adapters: false,
            int8_cpu: Int8Cpu::Auto,
            int8_activations: Int8Activations::Token,
            out: exported.clone(),
            max_seq_len: None,
            tokenizer: None,
        })?;
    }
    for suite in &sweep.eval.suites {
        let out = sweep.results_csv(run, suite);
        if out.is_file() {
            continue;
        }
        crate::eval::run(&EvalArgs {
            suite: suite.clone(),
            models: exported.clone(),
            data_dir: sweep.eval.data_dir.clone(),
            lang: Vec::new(),
            device: Device::Auto,
            out: Some(out),
            run_name: Some(run.name.clone()),
            method: run.method.clone(),
            seed: Some(run.config.seed),
            base_model: None,
            batch_tokens: DEFAULT_BATCH_TOKENS,
            threads: sweep.eval.threads,
            share_weights: false,
            on_malformed: Default::default(),
        })?;
    }
    Ok(())
}
