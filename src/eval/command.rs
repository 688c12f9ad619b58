//! `toolkit eval`: every language of a suite through the export's models; the results CSV,
//! predictions and a run summary written only once all languages are done.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::exported::ExportedModels;
use super::language::{score_language, Batching, LanguageInputs, Throughput};
use super::Suite;
use crate::data::{OnMalformed, Skipped};
use crate::device::Device;
use crate::fsx::{write_atomic_all, NewDirs};
use crate::report::results::{summary_rows, to_csv, ResultRow};
use crate::runtime::{self, RuntimeSession, SessionConfig, SharedWeights};

/// `--batch-tokens` when not given (see there).
pub const DEFAULT_BATCH_TOKENS: usize = 2048;

/// Score an exported model on a benchmark suite (XNLI, XQuAD, MLQA, XCOPA) with ONNX Runtime.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Examples:
  toolkit eval --suite xcopa --models exports/copa-fun --data-dir ../shared/data
  toolkit eval --suite xquad --models exports/qa-fun --lang de,zh --device cuda \\
      --run-name qa-fun-s1 --method fun --seed 1 --out results/qa-fun-s1.csv
  toolkit eval --suite my-suites/xnli-dev.toml --models exports/nli --batch-tokens 1024

Writes OUT (the tidy results CSV: one row per language and metric, plus `avg` over the
target languages and `lowest`), OUT with .json (throughput, padding, skipped records per
language) and OUT with .predictions/{lang}.json, one prediction per item: {question id: answer}
for QA (the format of the official scripts), {pairID: label} for NLI, {idx: 0 or 1} for COPA.
Nothing is written unless every language succeeds.

Suites are TOML files in eval-suites/ (a name) or anywhere (a path); they name each
language's file under --data-dir (see scripts/download-data.sh for the layout).")]
pub struct EvalArgs {
    /// Suite name (eval-suites/NAME.toml) or path to a suite file.
    #[arg(long)]
    pub suite: String,

    /// Export folder written by `toolkit export` ({lang}.onnx or model.onnx, export.json,
    /// tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub models: PathBuf,

    /// Folder the suite's file paths are relative to.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Only these languages of the suite, comma-separated (then no `avg`/`lowest` rows unless
    /// all target languages are included).
    #[arg(long, value_name = "LANGS", value_delimiter = ',')]
    pub lang: Vec<String>,

    /// Where to run: `auto` takes a CUDA GPU when ONNX Runtime can use one.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,

    /// Results CSV [default: results/RUN_NAME/SUITE.csv].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Run label for the results [default: the export folder's name].
    #[arg(long)]
    pub run_name: Option<String>,

    /// Method label (e.g. fun, gu, lpft, full).
    #[arg(long, default_value = "unspecified")]
    pub method: String,

    /// Seed label.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Base model label [default: the name of the base model folder recorded in the export].
    #[arg(long)]
    pub base_model: Option<String>,

    /// Most tokens per batch, padding included; batches hold examples of similar length. The
    /// default keeps a batch's activations in the CPU's cache: e5-small in fp32 on 2 threads
    /// of an AMD EPYC scored 36 examples/s at 2048 against 29 at 4096 (1024: 37); a GPU
    /// gains from larger batches.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_TOKENS)]
    pub batch_tokens: usize,

    /// Threads per operator on the CPU [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// One copy of the export's projection weights for every language's session, packed for
    /// ONNX Runtime's GEMM once instead of once per language (CPU). It holds that copy for the
    /// whole eval: on XCOPA with e5-small (12 languages, 2 threads, AMD EPYC) it saved 0.02 s
    /// per language and cost 80 MB of peak memory; it pays with larger models and many
    /// languages.
    #[arg(long)]
    pub share_weights: bool,

    /// What to do with a malformed record: stop with an error naming file and line, or skip
    /// it (counted in the summary).
    #[arg(long, value_enum, default_value_t = OnMalformed::Error)]
    pub on_malformed: OnMalformed,
}

/// One language's entry in the run summary.
#[derive(Serialize)]
struct LanguageSummary {
    file: PathBuf,
    split: String,
    model: PathBuf,
    provider: String,
    /// Reading the records and opening the model; both ran while the previous language was
    /// scored when `overlapped`.
    read_seconds: f64,
    session_seconds: f64,
    overlapped: bool,
    metrics: BTreeMap<String, f64>,
    skipped: Skipped,
    throughput: Throughput,
}

#[derive(Serialize)]
struct RunSummary {
    suite: String,
    models: PathBuf,
    data_dir: PathBuf,
    batch_tokens: usize,
    seconds: f64,
    examples_per_second: f64,
    languages: BTreeMap<String, LanguageSummary>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let start = Instant::now();
    let suite = Suite::load(&args.suite)?;
    let languages = select_languages(&suite, &args.lang)?;
    let models = ExportedModels::open(&args.models, &suite, &languages)?;
    check_data_files(&suite, &args.data_dir, &languages)?;
    let run_name = args.run_name.clone().unwrap_or_else(|| folder_name(&args.models));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&run_name).join(format!("{}.csv", suite.name)));

    let bars = MultiProgress::new();
    let overall = bars.add(
        ProgressBar::new(languages.len() as u64)
            .with_style(style("{prefix:>8} [{bar:30}] {pos}/{len} languages {elapsed}")),
    );
    overall.set_prefix(suite.name.clone());
    let mut rows = Vec::new();
    let mut summary = BTreeMap::new();
    let mut predictions = BTreeMap::new();
    // Languages after the first reuse the first's packed weights. CUDA copies the weights to
    // the GPU per session and packs nothing.
    if args.share_weights && args.device == Device::Cuda {
        bail!("--share-weights shares packed CPU weights; it does nothing with --device cuda");
    }
    let share = args.share_weights && languages.len() > 1;
    let shared = match (share, languages.first()) {
        (true, Some(first)) => Some(SharedWeights::load(&models.model_path(first)?)?),
        _ => None,
    };
    let config = SessionConfig { device: args.device, intra_threads: args.threads, shared, ..SessionConfig::default() };
    let overlap = spare_cores(args.threads);
    let prepare = |lang: &str| Prepared::new(args, &suite, &models, &config, lang, overlap);
    std::thread::scope(|scope| -> Result<()> {
        // With a core to spare, the next language's records, tokens and session are made on a
        // second thread while this one scores; they do not change a batch, so the results are
        // the sequential ones. Without one, that thread only slows ONNX Runtime's down.
        let mut pending = None;
        for (i, lang) in languages.iter().enumerate() {
            let overlapped = pending.is_some();
            let prepared = match pending.take() {
                Some(handle) => join(handle),
                None => prepare(lang),
            };
            if overlap {
                pending = languages.get(i + 1).map(|lang| scope.spawn(move || prepare(lang)));
            }
            let Prepared { inputs, mut session, source, model_path, read_seconds, session_seconds } = prepared?;
            let bar = bars.add(
                ProgressBar::new(0).with_style(style("{prefix:>8} [{bar:30}] {pos}/{len} inputs {per_sec} {msg}")),
            );
            bar.set_prefix(lang.clone());
            if let Some(reason) = &session.fallback_reason {
                bars.println(format!("note: running on the CPU: {reason}"))?;
            }
            let scores = score_language(
                &mut session.session,
                &models,
                &suite,
                lang,
                &inputs,
                !overlapped,
                Batching { token_budget: args.batch_tokens },
                &bar,
            )
            .with_context(|| format!("scoring {lang} ({})", source.path.display()))?;
            let provider = session.provider.to_string();
            // Freed before the next language is scored: two models are open only while one is prepared.
            drop(session);
            let shown: Vec<String> = scores.metrics.iter().map(|(m, v)| format!("{} {v:.2}", m.as_str())).collect();
            bar.finish_with_message(format!(
                "{} | {:.0} ex/s, padding {:.1}%",
                shown.join(", "),
                scores.throughput.examples_per_second,
                100.0 * scores.throughput.padding_fraction
            ));
            let records = &inputs.records;
            if !records.skipped().is_empty() {
                bars.println(format!("{lang}: {}", records.skipped()))?;
            }
            for (metric, value) in &scores.metrics {
                rows.push(ResultRow {
                    run: run_name.clone(),
                    base_model: args.base_model.clone().unwrap_or_else(|| models.base_model_name()),
                    method: args.method.clone(),
                    seed: args.seed,
                    suite: suite.name.clone(),
                    language: lang.clone(),
                    metric: metric.as_str().to_string(),
                    value: *value,
                    lowest_language: None,
                });
            }
            predictions.insert(lang.clone(), scores.predictions);
            summary.insert(
                lang.clone(),
                LanguageSummary {
                    file: source.path,
                    split: source.split,
                    model: model_path,
                    provider,
                    read_seconds,
                    session_seconds,
                    overlapped,
                    metrics: scores.metrics.iter().map(|(m, v)| (m.as_str().to_string(), *v)).collect(),
                    skipped: records.skipped().clone(),
                    throughput: scores.throughput,
                },
            );
            overall.inc(1);
        }
        Ok(())
    })?;
    overall.finish();

    if suite.targets().all(|t| languages.iter().any(|l| l == t)) {
        let summary_rows = summary_rows(&rows, &suite.source_language);
        rows.extend(summary_rows);
    } else {
        eprintln!("note: not every target language was scored, so no avg/lowest rows were written");
    }
    let seconds = start.elapsed().as_secs_f64();
    let examples: usize = summary.values().map(|l| l.throughput.examples).sum();
    let run_summary = RunSummary {
        suite: suite.name.clone(),
        models: args.models.clone(),
        data_dir: args.data_dir.clone(),
        batch_tokens: args.batch_tokens,
        seconds,
        examples_per_second: examples as f64 / seconds,
        languages: summary,
    };
    write_outputs(&out, &rows, &run_summary, &predictions)?;
    print_table(&rows);
    println!(
        "{examples} examples in {seconds:.1} s ({:.1} examples/s); results in {}",
        examples as f64 / seconds,
        out.display()
    );
    Ok(())
}

/// A language made ready to score: its records read and tokenised, its model open.
struct Prepared {
    inputs: LanguageInputs,
    session: RuntimeSession,
    source: super::suite::LanguageSource,
    model_path: PathBuf,
    read_seconds: f64,
    session_seconds: f64,
}

impl Prepared {
    fn new(
        args: &EvalArgs,
        suite: &Suite,
        models: &ExportedModels,
        config: &SessionConfig,
        lang: &str,
        overlap: bool,
    ) -> Result<Prepared> {
        let source = suite.source(&args.data_dir, lang);
        let start = Instant::now();
        let records = suite.read(&args.data_dir, lang, args.on_malformed)?;
        let read_seconds = start.elapsed().as_secs_f64();
        let model_path = models.model_path(lang)?;
        let open = || {
            let start = Instant::now();
            runtime::session_with(&model_path, config).map(|session| (session, start.elapsed().as_secs_f64()))
        };
        let tokenize = || {
            LanguageInputs::tokenize(records, models, suite)
                .with_context(|| format!("tokenizing {lang} ({})", source.path.display()))
        };
        // ONNX Runtime loads and optimises the model mostly on one thread, so a spare core
        // tokenises beside it.
        let (inputs, opened) = if overlap {
            std::thread::scope(|scope| {
                let opening = scope.spawn(open);
                (tokenize(), join(opening))
            })
        } else {
            (tokenize(), open())
        };
        let (session, session_seconds) = opened?;
        let inputs = inputs?;
        Ok(Prepared { inputs, session, source, model_path, read_seconds, session_seconds })
    }
}

/// Whether ONNX Runtime leaves a core free for preparing inputs beside it: only when told to
/// use fewer threads than the machine has (by default it takes one per core). Measured on the
/// 2-core AMD EPYC with 2 threads, preparing the next language beside the scoring made a
/// 3-language eval 8% slower.
fn spare_cores(threads: Option<usize>) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads.is_some_and(|n| n < cores)
}

/// A scoped thread's result, its panic passed on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template").progress_chars("=> ")
}

fn folder_name(dir: &Path) -> String {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned())
}

/// `--lang`, in the suite's order, or all of the suite's languages.
fn select_languages(suite: &Suite, wanted: &[String]) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(suite.languages.clone());
    }
    if let Some(unknown) = wanted.iter().find(|l| !suite.languages.contains(l)) {
        bail!("suite {} has no language {unknown:?}; it has {}", suite.name, suite.languages.join(","));
    }
    Ok(suite.languages.iter().filter(|l| wanted.contains(l)).cloned().collect())
}

/// Every language's file must exist before the first one is scored.
fn check_data_files(suite: &Suite, data_dir: &Path, languages: &[String]) -> Result<()> {
    let missing: Vec<String> = languages
        .iter()
        .map(|lang| (lang, suite.source(data_dir, lang).path))
        .filter(|(_, path)| !path.is_file())
        .map(|(lang, path)| format!("  {lang}: {}", path.display()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "suite {}: data files missing under --data-dir {} (scripts/download-data.sh fetches them):\n{}",
            suite.name,
            data_dir.display(),
            missing.join("\n")
        );
    }
    Ok(())
}

/// OUT, OUT.json and OUT.predictions/{lang}.json, all written before any replaces a previous
/// file (a full disk keeps the previous results whole), OUT last: a results CSV is only there
/// with its summary and predictions beside it.
fn write_outputs(
    out: &Path,
    rows: &[ResultRow],
    summary: &RunSummary,
    predictions: &BTreeMap<String, std::collections::HashMap<String, String>>,
) -> Result<()> {
    let predictions_dir = out.with_extension("predictions");
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for (lang, answers) in predictions {
        let sorted: BTreeMap<&String, &String> = answers.iter().collect();
        files.push((predictions_dir.join(format!("{lang}.json")), serde_json::to_vec_pretty(&sorted)?));
    }
    files.push((out.with_extension("json"), serde_json::to_vec_pretty(summary)?));
    files.push((out.to_path_buf(), to_csv(rows)?));

    let mut dirs = vec![NewDirs::create(out.parent().unwrap_or(Path::new("")))?];
    if !predictions.is_empty() {
        dirs.push(NewDirs::create(&predictions_dir)?);
    }
    let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (p.as_path(), b.as_slice())).collect();
    let written = write_atomic_all(&refs);
    if written.is_err() {
        dirs.iter().rev().for_each(NewDirs::remove);
    }
    written
}

fn print_table(rows: &[ResultRow]) {
    for row in rows {
        let lowest = row.lowest_language.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
        println!("{:<8} {:<12} {:>7.2}{lowest}", row.language, row.metric, row.value);
    }
}
