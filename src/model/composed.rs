//! A composed MAD-X model as files on disk: the encoder checkpoint, an optional language
//! adapter (with its invertible adapter), an optional task adapter and a head. Everything is
//! read into one `Weights` under canonical names; the tch model and the ONNX exporter both
//! build from this.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::adapter_config::{AdapterConfig, SavedAdapterConfig};
use super::config::ModelConfig;
use super::head::{Head, HeadStyle, HeadType};
use super::torch_pickle;
use super::weights::Weights;

/// One adapter of the stack: its name (as used in tensor names) and config.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub name: String,
    pub config: AdapterConfig,
    pub dir: PathBuf,
}

impl AdapterSpec {
    /// Canonical prefix of the bottleneck adapter in `layer`.
    pub fn layer_prefix(&self, layer: usize) -> String {
        format!("encoder.layer.{layer}.output.adapters.{}", self.name)
    }

    pub fn invertible_prefix(&self) -> String {
        format!("invertible_adapters.{}", self.name)
    }

    pub fn in_layer(&self, layer: usize) -> bool {
        !self.config.leave_out.contains(&layer)
    }
}

#[derive(Debug, Clone)]
pub struct ComposedModel {
    pub config: ModelConfig,
    pub model_dir: PathBuf,
    /// The encoder checkpoint file read from `model_dir`.
    pub model_file: PathBuf,
    pub weights: Weights,
    /// The language adapter sits under the task adapter (Stack(lang, task)).
    pub lang: Option<AdapterSpec>,
    pub task: Option<AdapterSpec>,
    pub head: Option<Head>,
}

/// Which files make up a model.
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    pub model_dir: PathBuf,
    pub lang_adapter: Option<PathBuf>,
    pub task_adapter: Option<PathBuf>,
}

impl ComposedModel {
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let model_dir = super::hub::resolve(&files.model_dir)?;
        let config = ModelConfig::load(&model_dir.join("config.json"))?;
        let (model_file, mut weights) = read_encoder_weights(&model_dir, &config)?;

        let mut head = Head::from_hf_architecture(&config, hf_num_labels(&weights));
        let lang = match &files.lang_adapter {
            Some(dir) => Some(read_adapter(dir, &config, &mut weights)?),
            None => None,
        };
        let task = match &files.task_adapter {
            Some(dir) => {
                let spec = read_adapter(dir, &config, &mut weights)?;
                if let Some(saved) = read_task_head(dir, &spec.name, &config, &mut weights)? {
                    if saved.needs_pooler() && !weights.contains(POOLER_WEIGHT) {
                        bail!(
                            "the head saved in {} reads the pooler, but {} has no `{POOLER_WEIGHT}`",
                            dir.display(),
                            model_file.display()
                        );
                    }
                    head = Some(saved);
                }
                Some(spec)
            }
            None => None,
        };
        if let (Some(l), Some(t)) = (&lang, &task) {
            if l.name == t.name {
                bail!(
                    "the language adapter ({}) and the task adapter ({}) are both named `{}`",
                    l.dir.display(),
                    t.dir.display(),
                    l.name
                );
            }
        }
        Ok(Self { config, model_dir, model_file, weights, lang, task, head })
    }

    /// A new task head `name` for training (`Head::new_task_head`) and its `head_config.json`.
    /// A Hugging Face head on the pooler needs the checkpoint's pretrained pooler.
    pub fn new_task_head(
        &self,
        style: HeadStyle,
        head_type: HeadType,
        labels: &[String],
        name: &str,
        mlp_layers: usize,
    ) -> Result<(Head, Value)> {
        let (head, json) = Head::new_task_head(style, head_type, &self.config, labels, name, mlp_layers)?;
        if head.needs_pooler() && !self.weights.contains(POOLER_WEIGHT) {
            bail!(
                "{} has no `{POOLER_WEIGHT}`: the Hugging Face head for {} (`head = \"hf\"`) is a linear layer on \
                 the checkpoint's pretrained pooler, which this model does not have; set `head = \"mlp\"` for a head \
                 on the first token",
                self.model_file.display(),
                match head_type {
                    HeadType::Classification => "classification",
                    HeadType::MultipleChoice => "multiple choice",
                    HeadType::QuestionAnswering => "question answering",
                }
            );
        }
        Ok((head, json))
    }

    /// The adapters in stack order, bottom first.
    pub fn stack(&self) -> Vec<&AdapterSpec> {
        self.lang.iter().chain(self.task.iter()).collect()
    }

    /// The invertible adapter of the stack's first adapter, which is the only one applied.
    pub fn invertible(&self) -> Option<&AdapterSpec> {
        self.stack().into_iter().next().filter(|a| a.config.inv_adapter.is_some())
    }
}

/// The pooler's dense layer (its bias comes with it), in the base checkpoint.
const POOLER_WEIGHT: &str = "pooler.dense.weight";

fn hf_num_labels(weights: &Weights) -> Option<usize> {
    ["classifier.weight", "classifier.out_proj.weight"]
        .iter()
        .find_map(|n| weights.entry(n))
        .map(|e| e.shape[0])
}

/// Reads the checkpoint `safetensors` of `dir`, or else the PyTorch pickle `bin` that older
/// releases ship in its place, renaming each tensor with `rename` either way. Returns the
/// file it read, for error messages.
pub(super) fn read_checkpoint(
    dir: &Path,
    safetensors: &str,
    bin: &str,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<(PathBuf, Weights)> {
    let path = dir.join(safetensors);
    if path.exists() {
        return Ok((path.clone(), Weights::read_safetensors(&path, rename)?));
    }
    let path = dir.join(bin);
    if path.exists() {
        return Ok((path.clone(), torch_pickle::read(&path, rename)?));
    }
    bail!("{}: no {safetensors} (nor {bin})", dir.display())
}

/// Reads the weights of a Hugging Face directory, dropping the `bert.`/`roberta.` prefix and
/// pre-training heads (`mlm_head::read_pretrained` reads the MLM head where it is trained
/// on). Returns the file it read too.
fn read_encoder_weights(dir: &Path, config: &ModelConfig) -> Result<(PathBuf, Weights)> {
    let prefix = config.arch.prefix();
    read_checkpoint(dir, "model.safetensors", "pytorch_model.bin", |name| {
        let name = name.strip_prefix(prefix).unwrap_or(name);
        if name.starts_with("cls.") || name.starts_with("lm_head.") || name.ends_with("position_ids") {
            return None;
        }
        Some(name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"))
    })
}

/// Reads an AdapterHub adapter directory into `weights`, renaming legacy keys of old Hub
/// releases and checking every tensor's place and the hidden size.
fn read_adapter(dir: &Path, config: &ModelConfig, weights: &mut Weights) -> Result<AdapterSpec> {
    let saved = AdapterConfig::load(&dir.join("adapter_config.json"))?;
    let SavedAdapterConfig { config: adapter_config, name, hidden_size, .. } = saved;
    if let Some(h) = hidden_size {
        if h != config.hidden_size {
            bail!(
                "{}: adapter `{name}` was trained for hidden size {h}, but the model has hidden size {}",
                dir.join("adapter_config.json").display(),
                config.hidden_size
            );
        }
    }
    let prefix = config.arch.prefix();
    let layer_key = format!(".adapters.{name}.");
    let inv_key = format!("invertible_adapters.{name}.");
    let (path, adapter) = read_checkpoint(dir, "adapter.safetensors", "pytorch_adapter.bin", |stored| {
        let n = stored.strip_prefix(prefix).unwrap_or(stored);
        Some(
            n.replace("layer_text_lang_adapters", "adapters")
                .replace("layer_text_task_adapters", "adapters")
                .replace("invertible_lang_adapters", "invertible_adapters"),
        )
    })?;
    for n in adapter.names() {
        let known = (n.starts_with("encoder.layer.") && n.contains(&layer_key) && n.contains(".output.adapters."))
            || n.starts_with(&inv_key);
        if !known {
            let entry = adapter.entry(n).expect("name from this map");
            bail!(
                "{}: tensor `{}` is not part of adapter `{name}` (expected `{}encoder.layer.N.output.adapters.{name}.*` or `{}invertible_adapters.{name}.*`)",
                path.display(),
                entry.stored_name,
                prefix,
                prefix
            );
        }
    }
    let spec = AdapterSpec { name, config: adapter_config, dir: dir.to_path_buf() };
    if spec.config.inv_adapter.is_some() && !adapter.names().any(|n| n.starts_with(&inv_key)) {
        bail!("{}: config asks for an invertible adapter, but no `{inv_key}*` tensor is stored", path.display());
    }
    weights.merge(adapter)?;
    Ok(spec)
}

/// The head saved with the task adapter `adapter` in `dir`, if there is one: a flex head
/// (`heads.NAME.*`), or a Hugging Face head (`"config": null`, tensors `classifier.*` /
/// `qa_outputs.*`), which is loaded as the `adapters` library loads it into a model with flex
/// heads: as the flex head of the same computation, named after the adapter.
fn read_task_head(dir: &Path, adapter: &str, config: &ModelConfig, weights: &mut Weights) -> Result<Option<Head>> {
    let config_path = dir.join("head_config.json");
    if !config_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let saved: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let (head, renames) = if saved.get("config").is_some_and(Value::is_null) {
        Head::from_static(&saved, config, adapter).with_context(|| format!("in head config {}", config_path.display()))?
    } else {
        let head = Head::flex_from_json(&saved, config).with_context(|| format!("in head config {}", config_path.display()))?;
        (head, Vec::new())
    };
    let name = head.flex_name.clone().context("task adapter heads are flex heads")?;
    let renamed = |stored: &str| {
        let (prefix, leaf) = stored.rsplit_once('.')?;
        renames.iter().find(|(from, _)| from == prefix).map(|(_, to)| format!("{to}.{leaf}"))
    };
    let (path, head_weights) = read_checkpoint(dir, "model_head.safetensors", "pytorch_model_head.bin", |n| {
        Some(renamed(n).unwrap_or_else(|| n.to_string()))
    })
    .with_context(|| format!("reading the head `{name}`"))?;
    for n in head_weights.names() {
        if !n.starts_with(&format!("heads.{name}.")) {
            bail!("{}: tensor `{n}` is not part of head `{name}`", path.display());
        }
    }
    for layer in &head.layers {
        let leaves: &[&str] = if layer.bias { &["weight", "bias"] } else { &["weight"] };
        for leaf in leaves {
            if !head_weights.contains(&format!("{}.{leaf}", layer.prefix)) {
                let stored = renames.iter().find(|(_, to)| *to == layer.prefix).map_or(layer.prefix.as_str(), |(from, _)| from);
                bail!("{}: no tensor `{stored}.{leaf}` for head `{name}`", path.display());
            }
        }
    }
    weights.merge(head_weights)?;
    Ok(Some(head))
}
