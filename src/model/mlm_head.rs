//! The masked-language-modelling head of a pretrained checkpoint: BERT's `cls.predictions.*`,
//! RoBERTa/XLM-R's `lm_head.*` (dense + activation + LayerNorm, then the decoder, whose weight
//! is the word embeddings and whose bias is the head's `bias`). `model.safetensors` files of
//! encoders published without one (multilingual-e5-small) lack these tensors.
use std::path::Path;

/// The label of positions the MLM loss leaves out (not masked, or padding), as in PyTorch's
/// `ignore_index`.
pub const IGNORED: i64 = -100;

use anyhow::Result;

use super::composed::read_checkpoint;
use super::config::{Arch, ModelConfig};
use super::weights::Weights;

/// The head's tensor-name prefixes, as Hugging Face's `*ForMaskedLM` state dicts name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlmHeadNames {
    pub dense: &'static str,
    pub layer_norm: &'static str,
    /// The decoder's bias (`.bias` appended).
    pub bias_owner: &'static str,
}

impl MlmHeadNames {
    pub fn of(arch: Arch) -> Self {
        match arch {
            Arch::Bert => Self {
                dense: "cls.predictions.transform.dense",
                layer_norm: "cls.predictions.transform.LayerNorm",
                bias_owner: "cls.predictions",
            },
            Arch::XlmRoberta => Self { dense: "lm_head.dense", layer_norm: "lm_head.layer_norm", bias_owner: "lm_head" },
        }
    }

    /// Every tensor of the head (the tied decoder weight is the word embeddings, not listed).
    pub fn tensors(&self) -> Vec<String> {
        let mut names = Vec::new();
        for owner in [self.dense, self.layer_norm] {
            names.push(format!("{owner}.weight"));
            names.push(format!("{owner}.bias"));
        }
        names.push(format!("{}.bias", self.bias_owner));
        names
    }
}

/// The head's tensors in the checkpoint of `dir` (none for a checkpoint without a head). A
/// stored decoder (`*.decoder.weight` / `*.decoder.bias`) is the tied copy of the embeddings
/// and the bias and is not read.
pub fn read_pretrained(dir: &Path, config: &ModelConfig) -> Result<Weights> {
    let wanted = MlmHeadNames::of(config.arch).tensors();
    let (_, weights) = read_checkpoint(dir, "model.safetensors", "pytorch_model.bin", |name| {
        let name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias");
        wanted.contains(&name).then_some(name)
    })?;
    Ok(weights)
}

/// Whether `weights` hold a complete pretrained head; a partial one is reported by name.
pub fn is_complete(weights: &Weights, config: &ModelConfig, file: &Path) -> Result<bool> {
    let wanted = MlmHeadNames::of(config.arch).tensors();
    let present: Vec<&String> = wanted.iter().filter(|n| weights.contains(n)).collect();
    if !present.is_empty() && present.len() < wanted.len() {
        let missing: Vec<&String> = wanted.iter().filter(|n| !weights.contains(n)).collect();
        anyhow::bail!("{}: the MLM head is incomplete: no {}", file.display(), missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
    }
    Ok(present.len() == wanted.len())
}
