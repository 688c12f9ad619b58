//! `toolkit export`: the composed model (base encoder, a target language's invertible and
//! language adapter, the trained task adapter and its head) as one ONNX model per language.
//! The base and task weights are written once, to `shared.bin`, which every `{lang}.onnx`
//! references as external data; each model file holds only its language adapter.
pub mod graph;
pub mod lang_adapters;
pub mod manifest;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use toolkit_onnx::ModelInfo;

pub use graph::{Dtype, Int8Activations, Int8Cpu};
use lang_adapters::LangAdapters;
pub use manifest::{ExportManifest, ExportedModel};
use manifest::{MANIFEST, NO_LANG_MODEL, SHARED_DATA, TOKENIZER};
use write::{Placement, SharedData};

use crate::fsx::Staging;
use crate::model::{Arch, ComposedModel, Head, ModelFiles};
use crate::run_dir::RunDir;

/// Export the composed model to ONNX, one model per target language.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Examples:
  toolkit export --run runs/copa-fun --lang-adapters adapters/ --lang all \\
      --out exports/copa-fun
  toolkit export --model models/mbert --task-adapter runs/copa/best \\
      --lang-adapters adapters.toml --lang th,sw,zh --dtype fp16 --out exports/copa-fp16
  toolkit export --model models/mbert --task-adapter runs/copa/best \\
      --no-lang-adapter --out exports/copa-en

The output folder holds {lang}.onnx per language (model.onnx with --no-lang-adapter),
shared.bin (the base and task weights, referenced by every model), tokenizer.json and
export.json. It is built beside --out and moved into place when complete; an earlier
export in --out is replaced.")]
pub struct ExportArgs {
    /// Training run folder: the base model is `model` in RUN/config.toml, the task adapter
    /// is RUN/best.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,

    /// Base encoder folder (Hugging Face: config.json, model.safetensors, tokenizer files);
    /// overrides the run's.
    #[arg(long, value_name = "DIR", required_unless_present = "run")]
    pub model: Option<PathBuf>,

    /// Trained task adapter folder (AdapterHub format, with its head). Without it (and
    /// without --run) the base checkpoint's own head is exported.
    #[arg(long, value_name = "DIR", conflicts_with = "run")]
    pub task_adapter: Option<PathBuf>,

    /// Language adapters: a folder with one adapter folder per language (th/, sw/, ...), or a
    /// TOML file of `th = "path/to/adapter"` lines.
    #[arg(long, value_name = "DIR_OR_TOML")]
    pub lang_adapters: Option<PathBuf>,

    /// Target languages, comma-separated (`th,sw,zh`), or `all` for every language of
    /// --lang-adapters.
    #[arg(long, value_name = "LANGS", requires = "lang_adapters")]
    pub lang: Option<String>,

    /// Export without a language adapter (one model.onnx).
    #[arg(long, conflicts_with_all = ["lang", "lang_adapters"])]
    pub no_lang_adapter: bool,

    /// Weight and activation type: fp16 is for GPU inference; int8 is for CPU scoring (int8
    /// weights and dynamically quantised activations in the encoder's and adapters'
    /// projections, run by ONNX Runtime's integer kernels; lossy: logits move a little).
    #[arg(long, value_enum, default_value_t = Dtype::Fp32)]
    pub dtype: Dtype,

    /// Store each language adapter's projection weights as int8, one float32 scale per
    /// output feature (restored by DequantizeLinear in the graph): one byte per weight
    /// instead of four (fp32) or two (fp16) in the per-language files. Lossy: logits move a
    /// little (the README lists measured sizes and errors); the base model and the task
    /// adapter stay exact.
    #[arg(long, requires = "lang_adapters")]
    pub int8_lang_adapters: bool,

    /// Which CPUs a `--dtype int8` export is for. `vnni`: int8 weights, run by ONNX Runtime's
    /// VNNI and AMX kernels; CPUs without VNNI would saturate their products, so `toolkit eval`
    /// refuses the export there. `any`: uint8 weights, exact on every CPU, without VNNI's
    /// speed. `auto`: `vnni` if this CPU has VNNI (AVX512-VNNI, AVX-VNNI), else `any`. Both
    /// round alike (8-bit activations per token, 8-bit weights per output feature).
    #[arg(long, value_enum, default_value_t = Int8Cpu::Auto)]
    pub int8_cpu: Int8Cpu,

    /// What one activation scale covers in a `--dtype int8` export. `token`: each token has
    /// its own scale and zero point, so its result does not depend on its batch (closest to
    /// fp32). `tensor`: one per projection input, that is per batch, as ONNX Runtime's own
    /// dynamic quantisation does: fastest (one fused operator per projection), but padding and
    /// outlier tokens widen every token's steps and a text's scores depend on its batch.
    /// `mixed`: per token for the feed-forward projections, where per tensor loses most, per
    /// tensor for the rest: nearly as close to fp32 as `token`, most of `tensor`'s speed, and
    /// batch-dependent too (the README lists measured speeds and errors of all three).
    #[arg(long, value_enum, default_value_t = Int8Activations::Token)]
    pub int8_activations: Int8Activations,

    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Longest input the exported model is meant for, in tokens (recorded for the
    /// evaluator) [default: 512, or fewer if the model's position embeddings end sooner].
    #[arg(long, value_name = "N")]
    pub max_seq_len: Option<usize>,

    /// Folder with tokenizer.json or vocab.txt, when the base model folder has none.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
}

/// Everything an export needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub model_dir: PathBuf,
    pub task_adapter: Option<PathBuf>,
    /// (language, its adapter); one `(None, None)` entry for an export without one.
    pub languages: Vec<(Option<String>, Option<PathBuf>)>,
    pub dtype: Dtype,
    /// Language adapter weights stored as int8.
    pub int8_lang_adapters: bool,
    /// An int8 export's weight type (`Auto` is decided at export).
    pub int8_cpu: Int8Cpu,
    /// An int8 export's activation scales.
    pub int8_activations: Int8Activations,
    /// `None`: 512, or the model's limit when lower.
    pub max_seq_len: Option<usize>,
    pub tokenizer_dir: PathBuf,
    pub out: PathBuf,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub manifest: ExportManifest,
    pub shared_bytes: u64,
    /// (file name, size) of each model file.
    pub model_bytes: Vec<(String, u64)>,
    pub seconds: f64,
}

impl ExportSummary {
    pub fn total_bytes(&self) -> u64 {
        self.shared_bytes + self.model_bytes.iter().map(|(_, b)| b).sum::<u64>()
    }
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let plan = plan(args)?;
    let summary = export(&plan)?;
    for (file, bytes) in &summary.model_bytes {
        println!("  {file:<16} {:>10}", human_bytes(*bytes));
    }
    println!("  {SHARED_DATA:<16} {:>10}  (base and task weights, shared)", human_bytes(summary.shared_bytes));
    println!(
        "exported {} model(s) to {} in {:.1} s, {} in all",
        summary.model_bytes.len(),
        plan.out.display(),
        summary.seconds,
        human_bytes(summary.total_bytes())
    );
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Resolves the command line: the run's files, the languages and their adapters.
pub fn plan(args: &ExportArgs) -> Result<ExportPlan> {
    if args.int8_cpu != Int8Cpu::Auto && args.dtype != Dtype::Int8 {
        bail!("--int8-cpu chooses the weights of a --dtype int8 export; this export is {:?}", args.dtype);
    }
    if args.int8_activations != Int8Activations::Token && args.dtype != Dtype::Int8 {
        bail!("--int8-activations chooses the activation scales of a --dtype int8 export; this export is {:?}", args.dtype);
    }
    let (run_model, run_task) = match &args.run {
        Some(run) => {
            let (model, task) = read_run(&RunDir::new(run))?;
            (Some(model), Some(task))
        }
        None => (None, None),
    };
    let model_dir = args.model.clone().or(run_model).context("give --model or --run")?;
    let task_adapter = args.task_adapter.clone().or(run_task);
    let languages = if args.no_lang_adapter {
        vec![(None, None)]
    } else {
        let (Some(source), Some(spec)) = (&args.lang_adapters, &args.lang) else {
            bail!("give --lang-adapters DIR_OR_TOML and --lang LANGS (e.g. `th,sw` or `all`), or --no-lang-adapter");
        };
        LangAdapters::load(source)?.select(spec)?.into_iter().map(|(l, d)| (Some(l), Some(d))).collect()
    };
    Ok(ExportPlan {
        tokenizer_dir: args.tokenizer.clone().unwrap_or_else(|| model_dir.clone()),
        model_dir,
        task_adapter,
        languages,
        dtype: args.dtype,
        int8_lang_adapters: args.int8_lang_adapters,
        int8_cpu: args.int8_cpu,
        int8_activations: args.int8_activations,
        max_seq_len: args.max_seq_len,
        out: args.out.clone(),
    })
}

/// The base model and the task adapter of a training run: `model` in RUN/config.toml (a
/// relative path is taken from the current folder, where training ran) and RUN/best.
pub fn read_run(run: &RunDir) -> Result<(PathBuf, PathBuf)> {
    let model = run.read_config()?.model;
    let task = run.best();
    if !task.join("adapter_config.json").is_file() {
        bail!("{}: no trained task adapter (expected adapter_config.json there)", task.display());
    }
    Ok((model, task))
}

/// Writes the export described by `plan`, atomically.
pub fn export(plan: &ExportPlan) -> Result<ExportSummary> {
    let start = Instant::now();
    let staging = Staging::new(&plan.out, Some(MANIFEST))?;
    // The tokenizer first: a missing one fails the export before the slow part.
    let tokenizer = crate::features::tokenizer::load(&plan.tokenizer_dir).with_context(|| {
        format!(
            "loading the tokenizer to ship with the export (use --tokenizer DIR if {} has none)",
            plan.tokenizer_dir.display()
        )
    })?;
    tokenizer.save(staging.dir().join(TOKENIZER), false).map_err(|e| anyhow::anyhow!("writing {TOKENIZER}: {e}"))?;

    let mut shared = SharedData::create(staging.dir(), SHARED_DATA)?;
    let mut exported = Vec::new();
    for (language, lang_adapter) in &plan.languages {
        let one = export_language(plan, language.as_deref(), lang_adapter.as_deref(), &mut shared, staging.dir())
            .with_context(|| match language {
                Some(l) => format!("exporting `{l}`"),
                None => "exporting the model".to_string(),
            })?;
        exported.push(one);
    }
    // Every language has the same base model and task adapter, so the first tells the rest.
    let first = exported.first().context("no languages to export")?;
    let manifest = ExportManifest {
        format_version: ExportManifest::FORMAT_VERSION,
        toolkit_version: env!("CARGO_PKG_VERSION").into(),
        arch: first.arch,
        head_type: first.head.head_type,
        labels: first.head.labels.clone(),
        inputs: graph::input_names(first.arch).iter().map(|s| s.to_string()).collect(),
        outputs: first.head.head_type.outputs().iter().map(|s| s.to_string()).collect(),
        dtype: plan.dtype,
        int8_lang_adapters: plan.int8_lang_adapters,
        int8_cpu: (plan.dtype == Dtype::Int8).then(|| plan.int8_cpu.resolve()),
        int8_activations: (plan.dtype == Dtype::Int8).then_some(plan.int8_activations),
        max_seq_len: first.max_seq_len,
        tokenizer: TOKENIZER.into(),
        shared_data: SHARED_DATA.into(),
        base_model: plan.model_dir.clone(),
        task_adapter: plan.task_adapter.clone(),
        models: exported.iter().map(|e| e.model.clone()).collect(),
    };
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest serialises");
    std::fs::write(staging.dir().join(MANIFEST), json).with_context(|| format!("writing {MANIFEST}"))?;
    let shared_bytes = shared.finish()?;
    staging.commit()?;
    Ok(ExportSummary {
        manifest,
        shared_bytes,
        model_bytes: exported.into_iter().map(|e| (e.model.file, e.bytes)).collect(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One language's model file, and what the manifest needs to know of it.
struct LanguageExport {
    model: ExportedModel,
    bytes: u64,
    arch: Arch,
    head: Head,
    max_seq_len: usize,
}

/// Writes `{language}.onnx` (or `model.onnx`) into `dir`, its language adapter inline and all
/// other weights in `shared`.
fn export_language(
    plan: &ExportPlan,
    language: Option<&str>,
    lang_adapter: Option<&Path>,
    shared: &mut SharedData,
    dir: &Path,
) -> Result<LanguageExport> {
    let files = ModelFiles {
        model_dir: plan.model_dir.clone(),
        lang_adapter: lang_adapter.map(Path::to_path_buf),
        task_adapter: plan.task_adapter.clone(),
    };
    let model = ComposedModel::load(&files)?;
    let max_seq_len = checked_max_seq_len(&model, plan.max_seq_len)?;
    let file = match language {
        Some(l) => format!("{l}.onnx"),
        None => NO_LANG_MODEL.to_string(),
    };
    let inline_prefixes = match &model.lang {
        Some(lang) => graph::lang_adapter_prefixes(&model, lang),
        None => Vec::new(),
    };
    let graph = graph::encoder_graph(&model, plan.dtype, plan.int8_lang_adapters, plan.int8_cpu.resolve(), plan.int8_activations, &mut Placement { shared, inline_prefixes })
        .with_context(|| format!("building the graph of {file}"))?;
    let proto = toolkit_onnx::model(
        graph,
        &ModelInfo {
            producer_name: "toolkit".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: Some(describe(&model, language)),
            metadata: metadata(&model, language, plan, max_seq_len),
            ..ModelInfo::default()
        },
    );
    let bytes = write::write_model(&dir.join(&file), &proto)?;
    Ok(LanguageExport {
        model: ExportedModel {
            language: language.map(str::to_string),
            file,
            lang_adapter: lang_adapter.map(Path::to_path_buf),
            adapters: model.stack().iter().map(|a| a.name.clone()).collect(),
        },
        bytes,
        arch: model.config.arch,
        head: model.head.clone().expect("graph building checked the head"),
        max_seq_len,
    })
}

/// The sequence length to record: at most what the position embeddings cover (XLM-R
/// numbers positions from pad + 1).
fn checked_max_seq_len(model: &ComposedModel, wanted: Option<usize>) -> Result<usize> {
    let cfg = &model.config;
    let offset = if cfg.arch.offsets_positions() { cfg.pad_token_id as usize + 1 } else { 0 };
    let limit = cfg.max_position_embeddings.saturating_sub(offset);
    match wanted {
        None => Ok(limit.min(512)),
        Some(n) if n > limit => bail!("--max-seq-len {n} is longer than the model's {limit} positions"),
        Some(n) => Ok(n),
    }
}

fn metadata(
    model: &ComposedModel,
    language: Option<&str>,
    plan: &ExportPlan,
    max_seq_len: usize,
) -> Vec<(String, String)> {
    let head = model.head.as_ref().expect("graph building checked the head");
    let adapters: Vec<serde_json::Value> = model
        .lang
        .iter()
        .map(|a| ("language", a))
        .chain(model.task.iter().map(|a| ("task", a)))
        .map(|(role, a)| serde_json::json!({"role": role, "name": a.name, "dir": a.dir}))
        .collect();
    let json = |v: serde_json::Value| v.to_string();
    let mut metadata = vec![
        ("base_model".into(), plan.model_dir.display().to_string()),
        ("arch".into(), json(serde_json::to_value(model.config.arch).expect("serialises"))),
        ("head_type".into(), json(serde_json::to_value(head.head_type).expect("serialises"))),
        ("labels".into(), json(serde_json::to_value(&head.labels).expect("serialises"))),
        ("language".into(), language.unwrap_or("").to_string()),
        ("adapters".into(), json(serde_json::Value::Array(adapters))),
        ("max_seq_len".into(), max_seq_len.to_string()),
        ("tokenizer".into(), TOKENIZER.to_string()),
        ("dtype".into(), json(serde_json::to_value(plan.dtype).expect("serialises"))),
        ("lang_adapter_weights".into(), if plan.int8_lang_adapters && model.lang.is_some() { "int8" } else { "as dtype" }.into()),
    ];
    if plan.dtype == Dtype::Int8 {
        metadata.push(("int8_cpu".into(), json(serde_json::to_value(plan.int8_cpu.resolve()).expect("serialises"))));
        metadata.push(("int8_activations".into(), json(serde_json::to_value(plan.int8_activations).expect("serialises"))));
    }
    metadata
}

fn describe(model: &ComposedModel, language: Option<&str>) -> String {
    let stack: Vec<&str> = model.stack().iter().map(|a| a.name.as_str()).collect();
    format!(
        "{} encoder with adapters [{}] for language {}",
        serde_json::to_value(model.config.arch).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        stack.join(", "),
        language.unwrap_or("(none)")
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExportArgs,
    }

    fn parse(args: &[&str]) -> Result<ExportArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("export").chain(args.iter().copied())).map(|c| c.args)
    }

    fn adapter(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("adapter_config.json"), "{}").unwrap();
    }

    #[test]
    fn run_folder_gives_model_and_task_adapter() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("run");
        adapter(&run.join("best"));
        std::fs::write(run.join("config.toml"), "model = \"models/mbert\"\ntask = \"copa\"\nschedule = \"fun\"\nseed = 1\n").unwrap();
        adapter(&root.path().join("langs/th"));
        adapter(&root.path().join("langs/sw"));
        let langs = root.path().join("langs");
        let args = parse(&[
            "--run",
            run.to_str().unwrap(),
            "--lang-adapters",
            langs.to_str().unwrap(),
            "--lang",
            "all",
            "--out",
            "x",
        ])
        .unwrap();
        let plan = plan(&args).unwrap();
        assert_eq!(plan.model_dir, PathBuf::from("models/mbert"));
        assert_eq!(plan.tokenizer_dir, PathBuf::from("models/mbert"));
        assert_eq!(plan.task_adapter, Some(run.join("best")));
        let langs: Vec<_> = plan.languages.iter().map(|(l, _)| l.clone().unwrap()).collect();
        assert_eq!(langs, ["sw", "th"]);
    }

    #[test]
    fn command_line_mistakes_are_explained() {
        assert!(parse(&["--out", "x"]).is_err(), "--model or --run is required");
        assert!(parse(&["--model", "m", "--no-lang-adapter", "--lang", "th", "--out", "x"]).is_err());
        assert!(parse(&["--model", "m", "--lang", "th", "--out", "x"]).is_err(), "--lang needs --lang-adapters");
        let args = parse(&["--model", "m", "--out", "x"]).unwrap();
        let err = plan(&args).unwrap_err();
        assert!(format!("{err}").contains("--no-lang-adapter"), "{err}");
        let args = parse(&["--model", "m", "--no-lang-adapter", "--dtype", "fp16", "--out", "x"]).unwrap();
        let plan = plan(&args).unwrap();
        assert_eq!(plan.languages, vec![(None, None)]);
        assert_eq!(plan.dtype, Dtype::Fp16);
        for int8_option in [["--int8-cpu", "vnni"], ["--int8-activations", "tensor"]] {
            let args = parse(&[&["--model", "m", "--no-lang-adapter", "--out", "x"][..], &int8_option].concat()).unwrap();
            let err = super::plan(&args).unwrap_err();
            assert!(format!("{err}").contains("--dtype int8"), "{err}");
        }

        let root = tempfile::tempdir().unwrap();
        let err = read_run(&RunDir::new(root.path())).unwrap_err();
        assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    }
}
