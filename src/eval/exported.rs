//! An export folder (`toolkit export`) as the evaluator sees it: its manifest, tokenizer and
//! per-language models, checked against the suite before anything runs.
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tokenizers::Tokenizer;

use super::{Suite, Task};
use crate::export::{ExportManifest, Int8Cpu};
use crate::features::tokenizer;

pub struct ExportedModels {
    pub dir: PathBuf,
    pub manifest: ExportManifest,
    pub tokenizer: Tokenizer,
    /// For each class id of the model's logits, the suite's class name.
    pub class_names: Vec<String>,
}

impl ExportedModels {
    /// Opens `dir` and checks that it fits `suite`: head type, labels, input length, and a
    /// model for each of `languages`.
    pub fn open(dir: &Path, suite: &Suite, languages: &[String]) -> Result<ExportedModels> {
        let manifest = ExportManifest::load(dir)?;
        if manifest.int8_cpu == Some(Int8Cpu::Vnni) && !crate::device::cpu_u8s8_exact() {
            bail!(
                "{}: this int8 export is for CPUs with VNNI (`--int8-cpu vnni`: int8 weights), and this CPU has \
                 none (AVX512-VNNI, AVX-VNNI): ONNX Runtime's kernel would saturate its products and give wrong \
                 scores. Export again with `--int8-cpu any` (or `auto` on this machine)",
                dir.display()
            );
        }
        let misfit = |what: String| format!("{}: the export does not fit suite {}: {what}", dir.display(), suite.name);
        let expected = suite.task.head_type();
        if manifest.head_type != expected {
            bail!(misfit(format!("its head is {:?}, the suite needs {:?}", manifest.head_type, expected)));
        }
        if suite.features.max_length > manifest.max_seq_len {
            bail!(misfit(format!(
                "the suite's inputs are up to {} tokens, the export takes at most {} (export with --max-seq-len)",
                suite.features.max_length, manifest.max_seq_len
            )));
        }
        let class_names = match suite.task {
            Task::Nli => class_names(&manifest.labels, suite.labels.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!(misfit(e)))?,
            _ => Vec::new(),
        };
        let models = ExportedModels {
            tokenizer: tokenizer::load(dir).with_context(|| format!("{}: the export's tokenizer", dir.display()))?,
            dir: dir.to_path_buf(),
            manifest,
            class_names,
        };
        for lang in languages {
            let path = models.model_path(lang)?;
            ensure!(path.is_file(), "{}: missing (listed in {})", path.display(), dir.join("export.json").display());
        }
        Ok(models)
    }

    /// `{lang}.onnx`, or the export's language-agnostic `model.onnx` when it has no model for
    /// `lang`.
    pub fn model_path(&self, lang: &str) -> Result<PathBuf> {
        let model = self.manifest.model(Some(lang)).or_else(|err| self.manifest.model(None).map_err(|_| err))?;
        Ok(self.dir.join(&model.file))
    }

    /// The base model's name, for the results.
    pub fn base_model_name(&self) -> String {
        self.manifest
            .base_model
            .file_name()
            .map_or_else(|| self.manifest.base_model.display().to_string(), |name| name.to_string_lossy().into_owned())
    }
}

/// Maps the model's class ids to the suite's class names: by name when the export's labels
/// are the suite's (in any order), by position when the export has only generic names
/// (`LABEL_0`, ...) for the same number of classes.
fn class_names(model_labels: &[String], suite_labels: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut sorted_model = model_labels.to_vec();
    let mut sorted_suite = suite_labels.to_vec();
    sorted_model.sort();
    sorted_suite.sort();
    if sorted_model == sorted_suite {
        return Ok(model_labels.to_vec());
    }
    let generic = model_labels.iter().enumerate().all(|(i, l)| *l == format!("LABEL_{i}"));
    if generic && model_labels.len() == suite_labels.len() {
        return Ok(suite_labels.to_vec());
    }
    Err(format!("its labels are {model_labels:?}, the suite's are {suite_labels:?}"))
}

#[cfg(test)]
mod tests {
    use super::class_names;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_map_by_name_then_by_position_for_generic_names() {
        let suite = strings(&["entailment", "neutral", "contradiction"]);
        let model = strings(&["contradiction", "entailment", "neutral"]);
        assert_eq!(class_names(&model, &suite).unwrap(), model);
        assert_eq!(class_names(&strings(&["LABEL_0", "LABEL_1", "LABEL_2"]), &suite).unwrap(), suite);
        assert!(class_names(&strings(&["LABEL_0", "LABEL_1"]), &suite).is_err());
        assert!(class_names(&strings(&["yes", "no", "maybe"]), &suite).is_err());
    }
}
