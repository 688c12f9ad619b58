//! Algorithm 1: sample a batch, maybe unfreeze a task adapter (SELECT), forward, update the
//! trainable set. The base model and the language adapter stay frozen; the head always trains.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tch::Kind;

use super::batch::{self, TrainBatch};
use super::checkpoint::{self, TrainerState};
use super::config::{LrSchedule, Task, TrainConfig};
use super::data::Examples;
use super::fisher::{fisher_traces, largest_frozen, FisherOptions};
use super::log::CsvLog;
use super::optimizer::{clip_grad_norm, AdamW, AdamWConfig};
use super::order::EpochOrder;
use super::plan::Plan;
use super::schedule::{pick_random, Event};
use crate::features::{pad_id, tokenizer};
use crate::scoring;
use crate::seed::{derive_seed, permutation, stream_seed, Purpose};
use crate::task::Languages;
use crate::model::adapter_config::AdapterConfig;
use crate::model::composed::{AdapterSpec, ComposedModel, ModelFiles};
use crate::model::torch::{dropout, Logits, MadxModel};
use crate::model::ModelConfig;
use crate::run_dir::RunDir;


pub struct Trainer {
    config: TrainConfig,
    model: MadxModel,
    model_config: ModelConfig,
    head_json: Value,
    train: Examples,
    validation: Option<Examples>,
    pad_id: i64,
    optimizer: AdamW,
    state: TrainerState,
    total_steps: usize,
    quiet: bool,
}

impl Trainer {
    /// Sets up a run in `config.out`, resuming from its last checkpoint when there is one.
    pub fn new(config: TrainConfig, quiet: bool) -> Result<Self> {
        if let Some(n) = config.threads {
            tch::set_num_threads(n as i32);
        }
        let device = crate::device::torch_device(config.device)?;
        let run = RunDir::new(&config.out);
        // A run killed while replacing a checkpoint directory may have left it moved aside.
        crate::fsx::clear_stale(&run.last())?;
        crate::fsx::clear_stale(&run.best())?;
        let resume = run.last().join("trainer_state.json").exists();
        if resume {
            check_resumed_config(&run, &config)?;
        }

        let (pad, train, validation) = {
            let tok = tokenizer::load(&config.model)?;
            let train = Examples::read(&config.train_file, &config, &tok, config.train_subset, Languages::All)?;
            // Only NLI files name languages (XNLI dev holds 15).
            let languages = if config.task == Task::Nli { Languages::Source(config.source_language()) } else { Languages::All };
            let validation = match &config.validation_file {
                Some(p) => Some(Examples::read(p, &config, &tok, None, languages)?),
                None => None,
            };
            (pad_id(&tok)?, train, validation)
        };
        // The tokenizer (a 250k-piece vocabulary for XLM-R models) is no longer needed: hand
        // its memory back before the model is loaded, so it does not count towards the peak.
        release_free_heap();

        // A resumed run continues its last checkpoint; a new one may start from a given task
        // adapter and head (`init_adapter`) or from new ones.
        let start = if resume { Some(run.last()) } else { config.init_adapter.clone() };
        let files = ModelFiles {
            model_dir: config.model.clone(),
            lang_adapter: config.lang_adapter.clone(),
            task_adapter: start.clone(),
        };
        let mut composed = ComposedModel::load(&files)?;
        let model_config = composed.config.clone();
        let head_type = config.task.head_type();
        tch::manual_seed(stream_seed(config.seed, Purpose::Init, 0) as i64);
        let (mut model, head_json) = match &start {
            Some(dir) => {
                let head = composed.head.as_ref().with_context(|| format!("{}: no head saved with the task adapter", dir.display()))?;
                if head.head_type != head_type {
                    bail!("{}: the head is for {:?}, the task `{:?}` needs {head_type:?}", dir.display(), head.head_type, config.task);
                }
                let loaded = composed.task.as_ref().map(|t| t.name.clone()).unwrap_or_default();
                if config.adapter_name.as_ref().is_some_and(|n| *n != loaded) {
                    bail!("{}: the task adapter is named `{loaded}`, not adapter_name = {:?}", dir.display(), config.adapter_name);
                }
                let head_json = head.config_json(&model_config)?;
                (MadxModel::load(composed, device)?, head_json)
            }
            None => {
                let name = config.adapter_name();
                let (head, head_json) =
                    composed.new_task_head(config.head, head_type, &config.task.labels(), &name, config.mlp_head_layers())?;
                let adapter_config = AdapterConfig {
                    reduction_factor: config.reduction_factor,
                    dropout: config.adapter_dropout,
                    ..AdapterConfig::seq_bn()
                };
                let spec = AdapterSpec { name, config: adapter_config, dir: run.last() };
                let fresh: Vec<String> = (0..model_config.num_hidden_layers)
                    .map(|l| spec.layer_prefix(l))
                    .chain(head.layers.iter().map(|l| l.prefix.clone()))
                    .collect();
                composed.task = Some(spec);
                composed.head = Some(head);
                let model = MadxModel::build(&composed, device, &composed.weights)?;
                model.copy_weights(composed.weights, &fresh)?;
                (model, head_json)
            }
        };
        model.encoder.compute = config.precision.kind();
        if let Some(warning) = crate::device::bf16_warning(config.precision, device) {
            eprintln!("warning: {warning}");
        }
        let layers = model.num_layers;
        config.unfreezing(layers).validate()?;

        let mut optimizer = AdamW::new(AdamWConfig { weight_decay: config.weight_decay, ..Default::default() });
        let state = if resume {
            let (state, moments) = checkpoint::load_state(&run.last())?;
            optimizer.restore(&moments, &state.optimizer_steps, device)?;
            state
        } else {
            // Step 0's event sets the adapters trainable from the start.
            TrainerState {
                step: 0,
                unfreeze_steps: Vec::new(),
                trainable: Vec::new(),
                best_score: None,
                best_step: None,
                optimizer_steps: Default::default(),
            }
        };
        let total_steps = config.total_steps(train.len());
        // Nothing is written before the run is set up, so a bad input leaves no run folder.
        std::fs::create_dir_all(run.root()).with_context(|| format!("creating {}", run.root().display()))?;
        if !resume || !run.config_toml().exists() {
            write_config(&run, &config)?;
        }
        report_skipped(&run, &config, &train, validation.as_ref())?;
        if resume {
            println!("resuming {} from step {} of {}", run.root().display(), state.step, total_steps);
        } else {
            let plan = Plan::new(&config, layers, Some(train.len()));
            for warning in &plan.warnings {
                eprintln!("warning: {warning}");
            }
            crate::fsx::write_atomic(&run.plan_txt(), plan.render().as_bytes())?;
        }
        Ok(Self {
            config,
            model,
            model_config,
            head_json,
            train,
            validation,
            pad_id: pad,
            optimizer,
            state,
            total_steps,
            quiet,
        })
    }

    pub fn run(self) -> Result<RunSummary> {
        self.run_until(None)
    }

    /// Trains until `stop` updates are done (or the end), as if the process were killed
    /// there: what a resumed run has to cope with. Tests use it; `run` goes to the end.
    pub fn run_until(mut self, stop: Option<usize>) -> Result<RunSummary> {
        let run = RunDir::new(&self.config.out);
        // Rows carry the step they describe: metrics and validation the updates done (kept up
        // to the checkpoint), Fisher measurements the step they precede (kept before it).
        let done = self.state.step;
        let (after, before) = if done > 0 { (Some(done), Some(done - 1)) } else { (None, None) };
        let mut metrics = CsvLog::open(&run.metrics_csv(), &["step", "epoch", "loss", "lr", "trainable_adapters", "grad_norm"], after)?;
        let mut validation = CsvLog::open(&run.validation_csv(), &["step", "metric", "value"], after)?;
        let mut fisher = CsvLog::open(&run.fisher_csv(), &["step", "layer", "trainable", "trace"], before)?;
        let mut fisher_avg = CsvLog::open(&run.fisher_avg_csv(), &["step", "trainable_adapters", "avg_trace_trainable"], before)?;
        let mut fun = CsvLog::open(&run.fun_selection_csv(), &["step", "layer", "trace", "chosen"], before)?;
        let layers = self.model.num_layers;
        let steps_per_epoch = self.config.steps_per_epoch(self.train.len());
        let save_every = if self.config.save_every > 0 { self.config.save_every } else { steps_per_epoch };
        let (eval_every, eval_each_epoch) = (self.config.eval_every, self.config.eval_each_epoch);
        let eval_due =
            |done: usize| (eval_every > 0 && done.is_multiple_of(eval_every)) || (eval_each_epoch && done.is_multiple_of(steps_per_epoch));

        let bar = self.progress_bar();
        let mut order = EpochOrder::new(self.config.seed, self.train.len(), self.config.batch_size);
        while self.state.step < self.total_steps {
            let step = self.state.step;
            if stop == Some(step) {
                return Ok(RunSummary { steps: step, best_score: self.state.best_score, best_step: self.state.best_step, dir: run.root().to_path_buf() });
            }
            // SELECT: the schedule's event for this step.
            self.apply_event(step, &mut fun)?;
            self.set_trainable();
            if self.config.fisher_every > 0 && step.is_multiple_of(self.config.fisher_every) {
                self.track_fisher(step, &mut fisher, &mut fisher_avg)?;
            }

            dropout::reseed(stream_seed(self.config.seed, Purpose::Dropout, step as u64));
            let params = self.trainable_params();
            for (_, p) in &params {
                p.shallow_clone().zero_grad();
            }
            let mut loss_sum = 0.0;
            let mut epoch = 0;
            for a in 0..self.config.grad_accumulation {
                let micro = step * self.config.grad_accumulation + a;
                let (micro_epoch, indices) = order.batch(micro);
                epoch = micro_epoch;
                let batch = self.train.batch(indices, self.pad_id, self.model.device());
                let logits = self.model.forward(&batch.inputs, true)?;
                let loss = batch::loss(&logits, &batch.labels) / self.config.grad_accumulation as f64;
                loss.backward();
                loss_sum += loss.double_value(&[]);
            }
            let grad_norm = clip_grad_norm(&params, self.config.max_grad_norm);
            let lr = self.lr_at(step);
            self.optimizer.step(&params, lr);
            self.state.step = step + 1;
            let done = self.state.step;
            metrics.row(&[
                done.to_string(),
                epoch.to_string(),
                format!("{loss_sum:.6}"),
                format!("{lr:e}"),
                self.state.trainable.len().to_string(),
                format!("{grad_norm:.6}"),
            ])?;
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss_sum:.4} lr {lr:.2e} adapters {}/{layers}", self.state.trainable.len()));

            let last = done == self.total_steps;
            if self.validation.is_some() && (eval_due(done) || last) {
                self.validate(&mut validation, &run)?;
            }
            if done.is_multiple_of(save_every) || last {
                checkpoint::save(&run.last(), &self.model, &self.model_config, &self.head_json, Some((&self.optimizer, &self.state)))?;
            }
        }
        bar.finish_and_clear();
        write_schedule(&run, &self.state, layers)?;
        if self.validation.is_none() {
            // Without validation the final weights are the ones to use.
            checkpoint::save(&run.best(), &self.model, &self.model_config, &self.head_json, None)?;
        }
        Ok(RunSummary { steps: self.state.step, best_score: self.state.best_score, best_step: self.state.best_step, dir: run.root().to_path_buf() })
    }

    fn progress_bar(&self) -> ProgressBar {
        progress_bar("train", self.total_steps, self.state.step, self.quiet)
    }

    fn apply_event(&mut self, step: usize, fun: &mut CsvLog) -> Result<()> {
        let layers = self.model.num_layers;
        let Some(event) = self.config.unfreezing(layers).event(step, &self.state.trainable) else {
            return Ok(());
        };
        let frozen: Vec<usize> = (0..layers).filter(|l| !self.state.trainable.contains(l)).collect();
        let chosen = match event {
            Event::Unfreeze(ls) => ls,
            Event::UnfreezeAll => frozen,
            Event::UnfreezeRandom(n) => {
                let draw = stream_seed(self.config.seed, Purpose::RandomSchedule, step as u64);
                pick_random(&frozen, n, |j| derive_seed(draw, 0, j as u64))
            }
            Event::UnfreezeLargestFisher(n) => {
                let batches = self.fisher_batches(step);
                let traces = fisher_traces(&self.model, &batches, self.fisher_options(), stream_seed(self.config.seed, Purpose::Fisher, step as u64))?;
                let picks = largest_frozen(&traces, &self.state.trainable, n);
                for &l in &frozen {
                    fun.row(&[step.to_string(), l.to_string(), format!("{:e}", traces[l]), u8::from(picks.contains(&l)).to_string()])?;
                }
                picks
            }
        };
        for l in chosen {
            self.state.trainable.push(l);
            self.state.unfreeze_steps.push(step);
        }
        Ok(())
    }

    fn fisher_options(&self) -> FisherOptions {
        FisherOptions { labels: self.config.fisher_labels, estimator: self.config.fisher_estimator, qa: self.config.fisher_qa_reduction }
    }

    /// requires-grad on exactly the head and the trainable task adapters; everything else
    /// (base, language adapter, frozen task adapters) computes no gradient.
    fn set_trainable(&self) {
        self.model.require_grad_only(&self.trainable_params());
    }

    fn trainable_params(&self) -> Vec<(String, tch::Tensor)> {
        let mut params = self.model.head_vars();
        for &l in &self.state.trainable {
            params.extend(self.model.task_adapter_vars(l));
        }
        params
    }

    /// `fisher_batches` training batches drawn for `step`, independent of the training order.
    fn fisher_batches(&self, step: usize) -> Vec<TrainBatch> {
        let order = permutation(self.train.len(), stream_seed(self.config.seed, Purpose::Fisher, step as u64));
        order
            .chunks(self.config.batch_size)
            .take(self.config.fisher_batches)
            .map(|idx| self.train.batch(idx, self.pad_id, self.model.device()))
            .collect()
    }

    fn track_fisher(&self, step: usize, fisher: &mut CsvLog, avg: &mut CsvLog) -> Result<()> {
        let batches = self.fisher_batches(step);
        let seed = stream_seed(self.config.seed, Purpose::Fisher, step as u64);
        let traces = fisher_traces(&self.model, &batches, self.fisher_options(), seed)?;
        let mut sum = 0.0;
        for (l, t) in traces.iter().enumerate() {
            let trainable = self.state.trainable.contains(&l);
            if trainable {
                sum += t;
            }
            fisher.row(&[step.to_string(), l.to_string(), u8::from(trainable).to_string(), format!("{t:e}")])?;
        }
        let n = self.state.trainable.len();
        let mean = if n > 0 { sum / n as f64 } else { 0.0 };
        avg.row(&[step.to_string(), n.to_string(), format!("{mean:e}")])
    }

    fn lr_at(&self, step: usize) -> f64 {
        scheduled_lr(self.config.lr, self.config.lr_schedule, self.config.warmup_steps, self.total_steps, step)
    }

    fn validate(&mut self, log: &mut CsvLog, run: &RunDir) -> Result<()> {
        let examples = self.validation.as_ref().expect("validation set");
        let (metric, score) = evaluate(&self.model, examples, self.pad_id, self.config.batch_size)?;
        log.row(&[self.state.step.to_string(), metric.to_string(), format!("{score:.6}")])?;
        if self.state.best_score.is_none_or(|b| score > b) {
            self.state.best_score = Some(score);
            self.state.best_step = Some(self.state.step);
            checkpoint::save(&run.best(), &self.model, &self.model_config, &self.head_json, None)?;
        }
        Ok(())
    }
}

pub struct RunSummary {
    pub steps: usize,
    pub best_score: Option<f64>,
    pub best_step: Option<usize>,
    pub dir: PathBuf,
}

/// The task's validation metric on `examples` (dropout off): accuracy, or SQuAD F1 for QA.
pub fn evaluate(model: &MadxModel, examples: &Examples, pad_id: i64, batch_size: usize) -> Result<(&'static str, f64)> {
    let mut correct = 0usize;
    let mut spans: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let all: Vec<usize> = (0..examples.len()).collect();
    for idx in all.chunks(batch_size) {
        let batch = examples.batch(idx, pad_id, model.device());
        let logits = tch::no_grad(|| model.forward(&batch.inputs, false))?;
        match (&logits, &batch.labels) {
            (Logits::Classes(l), batch::Labels::Class(y)) => {
                correct += l.argmax(-1, false).eq_tensor(y).to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]) as usize;
            }
            (Logits::Span { start, end }, _) => {
                let rows = |t: &tch::Tensor| Vec::<Vec<f32>>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Float));
                spans.extend(rows(start)?.into_iter().zip(rows(end)?));
            }
            _ => bail!("labels do not fit the head"),
        }
    }
    match &examples.qa {
        None => Ok(("accuracy", correct as f64 / examples.len() as f64)),
        Some((records, windows)) => {
            let predictions = scoring::qa_predictions(records, windows, &spans);
            Ok(("f1", scoring::score_predictions(&scoring::AnswerNormalization::SQUAD, records, &predictions).f1))
        }
    }
}

/// The learning rate after `step` of `total` updates: linear warm-up, then constant or linear
/// decay to 0.
pub fn scheduled_lr(lr: f64, schedule: LrSchedule, warmup: usize, total: usize, step: usize) -> f64 {
    let factor = if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        match schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Linear => ((total - step) as f64 / (total - warmup).max(1) as f64).max(0.0),
        }
    };
    lr * factor
}

/// A step counter with loss and ETA (hidden with `quiet`), starting at `position`.
pub fn progress_bar(label: &str, total: usize, position: usize, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let template = format!("{label} {{bar:30}} {{pos}}/{{len}} steps  {{msg}}  [{{elapsed_precise}} < {{eta_precise}}]");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar.set_position(position as u64);
    bar
}

/// The schedule actually followed: when each layer's adapter became trainable.
fn write_schedule(run: &RunDir, state: &TrainerState, layers: usize) -> Result<()> {
    let mut text = String::from("layer,from_top,unfreeze_step\n");
    let mut rows: Vec<(usize, usize)> = state.trainable.iter().copied().zip(state.unfreeze_steps.iter().copied()).collect();
    rows.sort();
    for (layer, step) in rows {
        text.push_str(&format!("{layer},{},{step}\n", layers - 1 - layer));
    }
    crate::fsx::write_atomic(&run.schedule_csv(), text.as_bytes())
}

/// A resumed run must have the configuration it was started with (when that is stored).
fn check_resumed_config(run: &RunDir, config: &TrainConfig) -> Result<()> {
    let path = run.config_toml();
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stored: TrainConfig = toml::from_str(&text).with_context(|| format!("{}: corrupt config", path.display()))?;
    // The thread count changes no result beyond float rounding: a run may resume with more or
    // fewer cores.
    let as_table = |c: &TrainConfig| -> Result<toml::Table> {
        Ok(toml::Table::try_from(TrainConfig { threads: None, ..c.clone() })?)
    };
    let (stored, wanted) = (as_table(&stored)?, as_table(config)?);
    // A file named another way (relative or absolute, through a link) is the same file.
    let same = |a: Option<&toml::Value>, b: Option<&toml::Value>| {
        a == b
            || match (a.and_then(toml::Value::as_str), b.and_then(toml::Value::as_str)) {
                (Some(a), Some(b)) => matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b),
                _ => false,
            }
    };
    let differing: std::collections::BTreeSet<&str> =
        stored.keys().chain(wanted.keys()).filter(|k| !same(stored.get(*k), wanted.get(*k))).map(String::as_str).collect();
    if !differing.is_empty() {
        bail!(
            "{} holds a run with a different configuration (differing in {}, against {}); resume with the same settings or choose another --out",
            run.root().display(),
            differing.into_iter().collect::<Vec<_>>().join(", "),
            path.display()
        );
    }
    Ok(())
}

/// The resolved config, with the toolkit version and git commit.
fn write_config(run: &RunDir, config: &TrainConfig) -> Result<()> {
    let path = run.config_toml();
    let header = format!(
        "# Resolved configuration of this run (toolkit {}, git {}).\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("TOOLKIT_GIT_COMMIT").unwrap_or("unknown")
    );
    crate::fsx::write_atomic(&path, (header + &config.to_toml()).as_bytes())
}

fn report_skipped(run: &RunDir, config: &TrainConfig, train: &Examples, validation: Option<&Examples>) -> Result<()> {
    let mut text = format!("{}: {}\n", config.train_file.display(), train.skipped);
    if let (Some(v), Some(p)) = (validation, &config.validation_file) {
        text.push_str(&format!("{}: {}\n", p.display(), v.skipped));
    }
    if !train.skipped.is_empty() || validation.is_some_and(|v| !v.skipped.is_empty()) {
        eprint!("skipped records:\n{text}");
    }
    crate::fsx::write_atomic(&run.skipped_txt(), text.as_bytes())
}

/// Returns the heap's free pages to the system, then keeps freed memory from here on. glibc
/// keeps freed small allocations (the tokenizer's vocabulary) in its arenas, where they would
/// still count as resident memory, hence the trim before the model loads. After it, a training
/// step frees and re-allocates the same activation buffers every step, and glibc would hand a
/// freed heap top back to the kernel each time, so each step faulted its activations in and
/// zeroed them again (4% of an fp32 step's CPU time in bench-train's profile); the peak stays
/// what it was.
pub(super) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn malloc_trim(pad: usize) -> c_int;
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        // glibc's largest mmap threshold on 64-bit: blocks below it come from the heap, reused.
        const MMAP_THRESHOLD_MAX: c_int = 32 << 20;
        // A step's activations can exceed any positive threshold (2 GiB at most): -1 is never.
        const NEVER: c_int = -1;
        // SAFETY: malloc_trim only releases memory glibc's allocator holds unused; mallopt only
        // sets the allocator's parameters.
        unsafe {
            malloc_trim(0);
            mallopt(M_TRIM_THRESHOLD, NEVER);
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
        }
    }
}
