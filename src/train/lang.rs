//! `toolkit train-lang`: a MAD-X language adapter trained by masked language modelling on a
//! language's text with the base model frozen (the first stage of MAD-X; Pfeiffer et al. 2020,
//! and the paper's Appendix B for mBERT's missing adapters). The MLM head is the checkpoint's
//! pretrained one, frozen; an encoder published without one gets a new head of the same shape
//! whose transform and bias train with the adapter (the decoder stays tied to the embeddings).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::order::EpochOrder;
use super::checkpoint::{read_optimizer, write_adapter, write_json, write_optimizer, write_tensors};
use super::config::LrSchedule;
use super::log::CsvLog;
use super::optimizer::{clip_grad_norm, to_stored, AdamW, AdamWConfig};
use super::trainer::{progress_bar, release_free_heap, scheduled_lr};
use crate::features::mlm::{self, Blocking, Corpus, Masking, MlmBatch, MlmVocab, Split};
use crate::features::tokenizer;
use crate::fsx::Staging;
use crate::model::adapter_config::AdapterConfig;
use crate::model::composed::{AdapterSpec, ComposedModel, ModelFiles};
use crate::model::mlm_head::{self, MlmHeadNames};
use crate::model::torch::{dropout, MadxModel, MlmHead};
use crate::model::weights::Weights;
use crate::model::ModelConfig;
use crate::run_dir::RunDir;
use crate::seed::{derive_seed, stream_seed, Purpose, SeedStream};

/// Flags of `toolkit train-lang`; defaults are the paper's (Appendix B).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(after_help = "Trains one MAD-X language adapter with masked language modelling (15% of the tokens chosen;
80% masked, 10% random, 10% kept), the base model frozen. Texts are grouped into blocks of
--max-length tokens across lines, as Hugging Face's run_mlm.py does (--line-by-line: one block
per line). Input files are read as streams: plain text with one document or paragraph per
line, JSON lines with a `text` field (Wikipedia extractions, `.jsonl`/`.json`), either one
optionally `.gz`.

The MLM head is the checkpoint's pretrained one (BERT cls.predictions.*, XLM-R lm_head.*),
frozen. A model published without one (multilingual-e5-small) gets a new head of the same shape
whose transform and bias are trained along (the decoder is tied to the word embeddings); it is
saved as mlm_head.safetensors beside the adapter, and mlm_head.txt in the run directory says so.

The run directory gets config.toml, data/ (the tokenised corpus), metrics.csv (step, loss, lr,
grad norm; held-out loss and perplexity at each evaluation, step 0 included), last/ (resumable:
the same command continues it) and adapter/, the trained adapter in AdapterHub layout, which
the `adapters` library loads (load_adapter), `toolkit train --lang-adapter` stacks under a task
adapter and `toolkit export --lang-adapters` swaps in.

Examples:
  toolkit train-lang --text th-wiki.jsonl.gz --lang th --out runs/lang-th
  toolkit train-lang --model models/mbert --text it.txt --validation-text it-dev.txt \\
      --lang it --epochs 1 --max-hours 2 --out runs/lang-it
  toolkit train-lang --text en.txt --lang en --batch-size 8 --max-length 128 --whole-word-mask \\
      --adapter-config seq_bn --out runs/lang-en")]
pub struct LangArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json or vocab.txt).
    #[arg(long, default_value = crate::model::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Training text files (plain text, JSON lines with `text`; `.gz` too).
    #[arg(long, required = true, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// Held-out text for perplexity; without it, --validation-fraction of the lines is held out.
    #[arg(long, num_args = 1..)]
    #[serde(default)]
    pub validation_text: Vec<PathBuf>,
    /// Share of the training lines held out for perplexity (drawn with the seed) when no
    /// --validation-text is given; 0 for none.
    #[arg(long, default_value_t = 0.01)]
    pub validation_fraction: f64,
    /// Language code: the adapter's name.
    #[arg(long)]
    pub lang: String,
    /// Run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Adapter config: seq_bn_inv (pfeiffer+inv, with the invertible adapter), seq_bn
    /// (pfeiffer), or a JSON file with an `adapters` library config dict.
    #[arg(long, default_value = "seq_bn_inv")]
    pub adapter_config: String,
    /// Hidden size / bottleneck size of the layer adapters (MAD-X language adapters: 2).
    #[arg(long, default_value_t = 2.0)]
    pub reduction_factor: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "linear")]
    pub lr_schedule: LrSchedule,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Gradient clipping (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Blocks per update (per micro-batch with --grad-accumulation).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation: usize,
    /// Tokens per block.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Stop after this many updates, if that comes before the epochs end.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Training-time budget over all sessions of the run: it stops (and saves) when spent.
    #[arg(long, default_value_t = 24.0)]
    pub max_hours: f64,
    #[arg(long, default_value_t = 0.15)]
    pub mlm_probability: f64,
    /// Choose whole words for masking (all pieces of a word together).
    #[arg(long)]
    #[serde(default)]
    pub whole_word_mask: bool,
    /// One block per line (truncated to --max-length) instead of grouped blocks.
    #[arg(long)]
    #[serde(default)]
    pub line_by_line: bool,
    /// Held-out perplexity every N updates (default: every epoch) and at the end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Checkpoint last/ every N updates (default: at every evaluation) and at the end.
    #[arg(long)]
    pub save_every: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    #[serde(skip)]
    pub device: crate::device::Device,
    /// CPU threads for libtorch.
    #[arg(long)]
    #[serde(skip)]
    pub threads: Option<usize>,
    /// fp32 | bf16: mixed precision, bfloat16 matmuls and activations with float32 master
    /// weights, optimizer state, LayerNorm statistics and loss (see `train --precision`).
    #[arg(long, value_enum, default_value = "fp32")]
    #[serde(default)]
    pub precision: crate::device::Precision,
    /// Hide the progress bars.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
}

/// Everything a resumed run needs besides weights and optimizer moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LangState {
    /// Updates done.
    pub step: usize,
    /// Training seconds spent over all sessions, for --max-hours.
    pub seconds: f64,
    pub optimizer_steps: std::collections::BTreeMap<String, i64>,
}

/// What the trained adapter's run directory holds besides the common files.
const STATE_FILE: &str = "lang_state.json";
const HEAD_FILE: &str = "mlm_head.safetensors";

pub struct LangTrainer {
    args: LangArgs,
    run: RunDir,
    model: MadxModel,
    model_config: ModelConfig,
    spec: AdapterSpec,
    head: MlmHead,
    /// Whether the head is new and trained (the checkpoint had none).
    head_trained: bool,
    vocab: MlmVocab,
    train: Corpus,
    held_out: Option<Corpus>,
    optimizer: AdamW,
    state: LangState,
    micro_per_epoch: usize,
    total_steps: usize,
}

impl LangTrainer {
    /// Sets up the run in `args.out`, resuming from its last/ when there is one.
    pub fn new(args: LangArgs) -> Result<Self> {
        if let Some(n) = args.threads {
            tch::set_num_threads(n as i32);
        }
        check_args(&args)?;
        let device = crate::device::torch_device(args.device)?;
        let run = RunDir::new(&args.out);
        std::fs::create_dir_all(run.root()).with_context(|| format!("creating {}", run.root().display()))?;
        // A run killed while replacing last/ may have left it moved aside.
        crate::fsx::clear_stale(&run.last())?;
        let resume = run.last().join(STATE_FILE).exists();
        check_config(&run, &args, resume)?;

        let blocking = Blocking { max_length: args.max_length, line_by_line: args.line_by_line };
        let (vocab, train, held_out) = {
            let tok = tokenizer::load(&args.model)?;
            prepare_corpus(&run, &args, &tok, blocking)?;
            let train = Corpus::open(&corpus_path(&run, "train"), blocking)?;
            let held = Corpus::open(&corpus_path(&run, "heldout"), blocking)?;
            (MlmVocab::new(&tok)?, train, (!held.is_empty()).then_some(held))
        };
        release_free_heap();
        if train.is_empty() {
            bail!("{}: the training text holds no tokens", args.text.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        }

        let files = ModelFiles { model_dir: args.model.clone(), lang_adapter: resume.then(|| run.last()), task_adapter: None };
        let mut composed = ComposedModel::load(&files)?;
        let model_config = composed.config.clone();
        let pretrained = mlm_head::read_pretrained(&composed.model_dir, &model_config)?;
        let head_trained = !mlm_head::is_complete(&pretrained, &model_config, &composed.model_file)?;
        composed.weights.merge(pretrained)?;
        if vocab.size as usize > model_config.vocab_size {
            bail!("the tokenizer has {} tokens, the model's embeddings {}", vocab.size, model_config.vocab_size);
        }
        let mut fresh = Vec::new();
        let spec = match &composed.lang {
            Some(loaded) => {
                if head_trained {
                    let path = run.last().join(HEAD_FILE);
                    composed.weights.merge(Weights::read_safetensors(&path, |n| Some(n.to_string()))?)?;
                }
                loaded.clone()
            }
            None => {
                let spec = AdapterSpec { name: args.lang.clone(), config: adapter_config(&args)?, dir: run.last() };
                fresh.extend((0..model_config.num_hidden_layers).map(|l| spec.layer_prefix(l)));
                fresh.push(spec.invertible_prefix());
                if head_trained {
                    fresh.extend(MlmHeadNames::of(model_config.arch).tensors());
                }
                composed.lang = Some(spec.clone());
                spec
            }
        };
        let model_file = composed.model_file.clone();
        tch::manual_seed(stream_seed(args.seed, Purpose::Init, 0) as i64);
        let (mut model, head) = build_mlm_model(composed, device, &fresh)?;
        model.encoder.compute = args.precision.kind();
        if let Some(warning) = crate::device::bf16_warning(args.precision, device) {
            eprintln!("warning: {warning}");
        }

        let mut optimizer = AdamW::new(AdamWConfig { weight_decay: args.weight_decay, ..Default::default() });
        let state = if resume {
            let path = run.last().join(STATE_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let state: LangState = serde_json::from_str(&text).with_context(|| format!("{}: corrupt state", path.display()))?;
            optimizer.restore(&read_optimizer(&run.last())?, &state.optimizer_steps, device)?;
            state
        } else {
            LangState::default()
        };
        if head_trained && !resume {
            let note = format!(
                "{} has no pretrained MLM head, so a new head of the same shape ({}) was trained with the\n\
                 adapter: its transform and bias; the decoder is tied to the frozen word embeddings.\n\
                 It is saved as {HEAD_FILE} beside the adapter (adapter/, last/). The adapter is meant to\n\
                 be used without it (stacked under a task adapter); the head is kept for further MLM.\n",
                model_file.display(),
                MlmHeadNames::of(model_config.arch).tensors().join(", ")
            );
            crate::fsx::write_atomic(&run.root().join("mlm_head.txt"), note.as_bytes())?;
        }
        let micro_per_epoch = train.len().div_ceil(args.batch_size);
        let total = (args.epochs * micro_per_epoch).div_ceil(args.grad_accumulation);
        let total_steps = args.max_steps.map_or(total, |m| m.min(total));
        if resume {
            println!("resuming {} from step {} of {}", run.root().display(), state.step, total_steps);
        }
        Ok(Self {
            args,
            run,
            model,
            model_config,
            spec,
            head,
            head_trained,
            vocab,
            train,
            held_out,
            optimizer,
            state,
            micro_per_epoch,
            total_steps,
        })
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Trains to the end (or the time budget); returns the updates done.
    pub fn run(self) -> Result<usize> {
        self.run_until(None)
    }

    /// Trains until `stop` updates are done, as if the process were killed there (tests).
    pub fn run_until(mut self, stop: Option<usize>) -> Result<usize> {
        let header = ["step", "epoch", "loss", "lr", "grad_norm", "heldout_loss", "heldout_perplexity"];
        let keep = (self.state.step > 0).then_some(self.state.step);
        let mut metrics = CsvLog::open(&self.run.metrics_csv(), &header, keep)?;
        let steps_per_epoch = self.micro_per_epoch.div_ceil(self.args.grad_accumulation);
        let eval_every = self.args.eval_every.unwrap_or(steps_per_epoch).max(1);
        let save_every = self.args.save_every.unwrap_or(eval_every).max(1);
        if self.state.step == 0 {
            self.log_held_out(&mut metrics, 0)?;
        }
        self.set_trainable();
        let params = self.trainable_params();
        let bar = progress_bar("train-lang", self.total_steps, self.state.step, self.args.quiet);
        let session = Instant::now();
        let spent_before = self.state.seconds;
        let budget = self.args.max_hours * 3600.0;
        let mut order = EpochOrder::new(self.args.seed, self.train.len(), self.args.batch_size);
        while self.state.step < self.total_steps {
            let step = self.state.step;
            if stop == Some(step) {
                return Ok(step);
            }
            if spent_before + session.elapsed().as_secs_f64() >= budget {
                bar.suspend(|| eprintln!("--max-hours {}: training time spent, stopping at step {step}", self.args.max_hours));
                break;
            }
            dropout::reseed(stream_seed(self.args.seed, Purpose::Dropout, step as u64));
            for (_, p) in &params {
                p.shallow_clone().zero_grad();
            }
            let mut loss_sum = 0.0;
            let mut epoch = 0;
            for a in 0..self.args.grad_accumulation {
                let micro = step * self.args.grad_accumulation + a;
                let (micro_epoch, indices) = order.batch(micro);
                epoch = micro_epoch;
                // Masks are drawn anew each epoch, per block: the same on every resume.
                let epoch_seed = stream_seed(self.args.seed, Purpose::Masking, epoch as u64);
                let batch = masked_batch(&self.train, indices, &self.vocab, self.masking(), |i| derive_seed(epoch_seed, 0, i as u64));
                let loss = self.loss(&batch, true) / self.args.grad_accumulation as f64;
                loss.backward();
                loss_sum += loss.double_value(&[]);
            }
            let grad_norm = clip_grad_norm(&params, self.args.max_grad_norm);
            let lr = scheduled_lr(self.args.lr, self.args.lr_schedule, self.args.warmup_steps, self.total_steps, step);
            self.optimizer.step(&params, lr);
            self.state.step = step + 1;
            let done = self.state.step;
            let last = done == self.total_steps;
            let held = if done.is_multiple_of(eval_every) || last { self.held_out_loss()? } else { None };
            metrics.row(&[
                done.to_string(),
                epoch.to_string(),
                format!("{loss_sum:.6}"),
                format!("{lr:e}"),
                format!("{grad_norm:.6}"),
                held.map(|l| format!("{l:.6}")).unwrap_or_default(),
                held.map(|l| format!("{:.4}", l.exp())).unwrap_or_default(),
            ])?;
            bar.set_position(done as u64);
            let ppl = held.map(|l| format!("  held-out ppl {:.2}", l.exp())).unwrap_or_default();
            bar.set_message(format!("loss {loss_sum:.4} lr {lr:.2e}{ppl}"));
            if done.is_multiple_of(save_every) || last {
                self.state.seconds = spent_before + session.elapsed().as_secs_f64();
                self.save(&self.run.last(), true)?;
            }
        }
        bar.finish_and_clear();
        self.state.seconds = spent_before + session.elapsed().as_secs_f64();
        self.save(&self.run.last(), true)?;
        self.save(&self.run.root().join("adapter"), false)?;
        Ok(self.state.step)
    }

    fn masking(&self) -> Masking {
        Masking { probability: self.args.mlm_probability, whole_word: self.args.whole_word_mask }
    }

    fn loss(&self, batch: &MlmBatch, train: bool) -> Tensor {
        mlm_loss(&self.model, &self.head, batch, train)
    }

    /// Mean loss over every predicted token of the held-out blocks, with the same masks at
    /// every evaluation, dropout off; `None` without held-out text.
    pub fn held_out_loss(&self) -> Result<Option<f64>> {
        let Some(held) = &self.held_out else { return Ok(None) };
        let seed = stream_seed(self.args.seed, Purpose::HeldOut, u64::MAX);
        let (mut total, mut count) = (0.0, 0usize);
        let all: Vec<usize> = (0..held.len()).collect();
        for chunk in all.chunks(self.args.batch_size) {
            let batch = masked_batch(held, chunk, &self.vocab, self.masking(), |i| derive_seed(seed, 0, i as u64));
            let n = batch.labels.iter().filter(|&&l| l != mlm::IGNORED).count();
            if n == 0 {
                continue;
            }
            let loss = tch::no_grad(|| self.loss(&batch, false)).double_value(&[]);
            total += loss * n as f64;
            count += n;
        }
        Ok((count > 0).then(|| total / count as f64))
    }

    fn log_held_out(&self, metrics: &mut CsvLog, step: usize) -> Result<()> {
        if let Some(l) = self.held_out_loss()? {
            let empty = String::new();
            metrics.row(&[step.to_string(), empty.clone(), empty.clone(), empty.clone(), empty, format!("{l:.6}"), format!("{:.4}", l.exp())])?;
        }
        Ok(())
    }

    /// requires-grad on exactly the language adapter (and a new head); the base is frozen.
    fn set_trainable(&self) {
        self.model.require_grad_only(&self.trainable_params());
    }

    /// The language adapter's variables, and the head's when it is trained.
    pub fn trainable_params(&self) -> Vec<(String, Tensor)> {
        let mut params = self.model.adapter_vars(&self.spec);
        params.extend(self.head_vars().into_iter().filter(|_| self.head_trained));
        params
    }

    fn head_vars(&self) -> Vec<(String, Tensor)> {
        let names = MlmHeadNames::of(self.model_config.arch).tensors();
        self.model.vs.variables().into_iter().filter(|(n, _)| names.contains(n)).collect()
    }

    /// `dir` = the adapter in AdapterHub layout (+ the trained head), with `resumable` the
    /// optimizer and trainer state too; built in a staging directory and renamed into place.
    fn save(&self, dir: &Path, resumable: bool) -> Result<()> {
        let staging = Staging::new(dir, None)?;
        write_adapter(staging.dir(), &self.model, &self.spec, &self.model_config)?;
        if self.head_trained {
            let head: Vec<_> = self.head_vars().into_iter().map(|(n, t)| (n, to_stored(&t))).collect();
            write_tensors(&staging.dir().join(HEAD_FILE), &head)?;
        }
        if resumable {
            let steps = write_optimizer(staging.dir(), &self.optimizer)?;
            let state = LangState { optimizer_steps: steps, ..self.state.clone() };
            write_json(&staging.dir().join(STATE_FILE), &serde_json::to_value(&state)?)?;
        }
        staging.commit()
    }
}

/// The encoder with the language adapter of `composed` and an MLM head, every variable filled
/// from `composed.weights` (which must hold the head: `mlm_head::read_pretrained`) except
/// those under the `fresh` prefixes, which keep their new initialisation.
pub fn build_mlm_model(composed: ComposedModel, device: tch::Device, fresh: &[String]) -> Result<(MadxModel, MlmHead)> {
    let model = MadxModel::build(&composed, device, &composed.weights)?;
    let head = MlmHead::new(&model.vs.root(), &composed.config);
    model.copy_weights(composed.weights, fresh)?;
    Ok((model, head))
}

/// The mean MLM loss of a batch over its predicted positions (the `*ForMaskedLM` loss).
pub fn mlm_loss(model: &MadxModel, head: &MlmHead, batch: &MlmBatch, train: bool) -> Tensor {
    let shape = [batch.rows as i64, batch.cols as i64];
    let t = |v: &[i64]| Tensor::from_slice(v).reshape(shape).to_device(model.device());
    let hidden = model.encoder.forward(&t(&batch.input_ids), &t(&batch.attention_mask), None, train, None, false);
    let embeddings = model.encoder.embeddings.word_embeddings();
    head.loss(&hidden, &t(&batch.labels), embeddings, model.encoder.invertible.as_ref())
}

/// The blocks `indices` of `corpus`, masked with the seed `seed_of(block index)`, padded.
fn masked_batch(corpus: &Corpus, indices: &[usize], vocab: &MlmVocab, masking: Masking, seed_of: impl Fn(usize) -> u64) -> MlmBatch {
    let masked: Vec<(Vec<i64>, Vec<i64>)> = indices.iter().map(|&i| mlm::mask_block(&corpus.block(i), vocab, masking, seed_of(i))).collect();
    mlm::collate(&masked, vocab.pad_id)
}

fn adapter_config(args: &LangArgs) -> Result<AdapterConfig> {
    let value = if Path::new(&args.adapter_config).is_file() {
        let text = std::fs::read_to_string(&args.adapter_config).with_context(|| format!("reading {}", args.adapter_config))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", args.adapter_config))?
    } else {
        serde_json::Value::String(args.adapter_config.clone())
    };
    let config = AdapterConfig::from_json(&value).with_context(|| format!("--adapter-config {}", args.adapter_config))?;
    Ok(AdapterConfig { reduction_factor: args.reduction_factor, ..config })
}

fn check_args(args: &LangArgs) -> Result<()> {
    if !(args.mlm_probability > 0.0 && args.mlm_probability < 1.0) {
        bail!("--mlm-probability {} must lie between 0 and 1", args.mlm_probability);
    }
    if !(0.0..1.0).contains(&args.validation_fraction) {
        bail!("--validation-fraction {} must lie in [0, 1)", args.validation_fraction);
    }
    if args.batch_size == 0 || args.grad_accumulation == 0 || args.max_length < 2 || args.epochs == 0 {
        bail!("--batch-size, --grad-accumulation and --epochs must be at least 1, --max-length at least 2");
    }
    if args.max_hours.is_nan() || args.max_hours <= 0.0 {
        bail!("--max-hours {} must be positive", args.max_hours);
    }
    for path in args.text.iter().chain(&args.validation_text) {
        if !path.is_file() {
            bail!("{}: no such text file", path.display());
        }
    }
    Ok(())
}

/// Writes the run's settings, or on resume checks that they have not changed.
fn check_config(run: &RunDir, args: &LangArgs, resume: bool) -> Result<()> {
    let path = run.config_toml();
    if resume && path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let stored: LangArgs = toml::from_str(&text).with_context(|| format!("{}: corrupt config", path.display()))?;
        let ignored = LangArgs { device: args.device, threads: args.threads, quiet: args.quiet, ..stored };
        if &ignored != args {
            bail!("{} holds a run with other settings; resume with the same settings or choose another --out", run.root().display());
        }
        return Ok(());
    }
    let header = format!(
        "# train-lang settings of this run (toolkit {}, git {}).\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("TOOLKIT_GIT_COMMIT").unwrap_or("unknown")
    );
    crate::fsx::write_atomic(&path, (header + &toml::to_string(args)?).as_bytes())
}

fn corpus_path(run: &RunDir, name: &str) -> PathBuf {
    run.root().join("data").join(name)
}

/// Tokenises the texts into the run's data/ once (a resumed run reuses them): the training
/// lines and the held-out ones (--validation-text, or a seeded share of the lines).
fn prepare_corpus(run: &RunDir, args: &LangArgs, tok: &tokenizers::Tokenizer, blocking: Blocking) -> Result<()> {
    let done = run.root().join("data").join("counts.json");
    if done.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(run.root().join("data"))?;
    let spinner = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
    let on_line = |n: u64| spinner.set_message(format!("tokenising: {n} lines"));
    let train = corpus_path(run, "train");
    let held_path = corpus_path(run, "heldout");
    let seed = stream_seed(args.seed, Purpose::HeldOut, 0);
    let fraction = args.validation_fraction;
    let held_out = move |i: u64| SeedStream::new(derive_seed(seed, 0, i)).next_unit() < fraction;
    let (train_counts, held_counts) = if args.validation_text.is_empty() && fraction > 0.0 {
        mlm::tokenize_corpus(tok, &args.text, blocking, Split::HoldOut { path: &held_path, chosen: &held_out }, &train, &on_line)?
    } else {
        let (t, _) = mlm::tokenize_corpus(tok, &args.text, blocking, Split::All, &train, &on_line)?;
        let (h, _) = mlm::tokenize_corpus(tok, &args.validation_text, blocking, Split::All, &held_path, &on_line)?;
        (t, h)
    };
    spinner.finish_and_clear();
    let counts = serde_json::json!({
        "train": {"lines": train_counts.lines, "tokens": train_counts.tokens},
        "heldout": {"lines": held_counts.lines, "tokens": held_counts.tokens},
    });
    println!(
        "tokenised {} training lines ({} tokens), {} held-out lines ({} tokens)",
        train_counts.lines, train_counts.tokens, held_counts.lines, held_counts.tokens
    );
    write_json(&done, &counts)
}

pub fn run(args: LangArgs) -> Result<()> {
    let out = args.out.clone();
    let steps = LangTrainer::new(args)?.run()?;
    println!("trained {steps} steps; the adapter is in {}", out.join("adapter").display());
    Ok(())
}
