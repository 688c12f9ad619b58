//! `export.json`: what an export folder holds, for the evaluator. Each model also carries the
//! same facts in its ONNX `metadata_props`.
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::graph::{Dtype, Int8Activations, Int8Cpu};
use crate::model::{Arch, HeadType};

pub const MANIFEST: &str = "export.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const SHARED_DATA: &str = "shared.bin";
/// The model file of an export without a language adapter.
pub const NO_LANG_MODEL: &str = "model.onnx";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format_version: u32,
    pub toolkit_version: String,
    pub arch: Arch,
    pub head_type: HeadType,
    /// Label names in id order (classification only).
    pub labels: Vec<String>,
    /// Graph inputs in order; int64, `[batch, sequence]` (`[batch, choices, sequence]` for
    /// multiple choice).
    pub inputs: Vec<String>,
    /// Graph outputs, float32.
    pub outputs: Vec<String>,
    pub dtype: Dtype,
    /// Language adapter weights stored as int8 (`--int8-lang-adapters`).
    #[serde(default)]
    pub int8_lang_adapters: bool,
    /// The CPUs an int8 export's integer MatMuls are made for (`--int8-cpu`, resolved);
    /// `None` for other dtypes and for int8 exports made before the option (7-bit
    /// activations, exact on every CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_cpu: Option<Int8Cpu>,
    /// An int8 export's activation scales (`--int8-activations`); `None` for other dtypes and
    /// for int8 exports made before the option (per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_activations: Option<Int8Activations>,
    /// Longest input the model takes (position embeddings).
    pub max_seq_len: usize,
    /// File names inside the export folder (`load` refuses paths).
    pub tokenizer: String,
    pub shared_data: String,
    /// Where the export was made from, as given then: shown in results, never opened.
    pub base_model: PathBuf,
    pub task_adapter: Option<PathBuf>,
    pub models: Vec<ExportedModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedModel {
    /// `None` for the export without a language adapter.
    pub language: Option<String>,
    /// A file name inside the export folder.
    pub file: String,
    /// As given to `toolkit export`: shown, never opened.
    pub lang_adapter: Option<PathBuf>,
    /// Adapter names in stack order, bottom first.
    pub adapters: Vec<String>,
}

impl ExportManifest {
    pub const FORMAT_VERSION: u32 = 1;

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is {} a `toolkit export` folder?)", path.display(), dir.display()))?;
        let manifest: Self =
            serde_json::from_str(&text).with_context(|| format!("{}: not a valid export manifest", path.display()))?;
        if manifest.format_version != Self::FORMAT_VERSION {
            bail!(
                "{}: export format {} is not supported by this toolkit (expects {}); export again",
                path.display(),
                manifest.format_version,
                Self::FORMAT_VERSION
            );
        }
        // The evaluator opens these in the folder; a manifest from elsewhere must not lead it
        // to files outside (`../`, absolute paths), so each must be a plain file name.
        let models = manifest.models.iter().enumerate().map(|(i, m)| (format!("models[{i}].file"), &m.file));
        let files = [("tokenizer".to_string(), &manifest.tokenizer), ("shared_data".to_string(), &manifest.shared_data)];
        for (entry, name) in files.into_iter().chain(models) {
            let mut parts = Path::new(name).components();
            if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
                bail!("{}: {entry} = {name:?} is not a file name inside the export folder", path.display());
            }
        }
        Ok(manifest)
    }

    /// The model of `language` (`None`: the one without a language adapter).
    pub fn model(&self, language: Option<&str>) -> Result<&ExportedModel> {
        self.models.iter().find(|m| m.language.as_deref() == language).with_context(|| {
            let have: Vec<String> = self
                .models
                .iter()
                .map(|m| m.language.clone().unwrap_or_else(|| "(no language adapter)".into()))
                .collect();
            format!(
                "the export has no model for {}; it has: {}",
                language.unwrap_or("(no language adapter)"),
                have.join(", ")
            )
        })
    }

    pub fn languages(&self) -> Vec<&str> {
        self.models.iter().filter_map(|m| m.language.as_deref()).collect()
    }
}
