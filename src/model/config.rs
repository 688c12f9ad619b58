//! The encoder's `config.json`, as Hugging Face writes it for BERT and XLM-R.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The two encoder families: they differ in position ids, token types and the HF heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "bert")]
    Bert,
    #[serde(rename = "xlm-roberta")]
    XlmRoberta,
}

impl Arch {
    /// The prefix Hugging Face puts before encoder tensors in models with a head, and the
    /// `adapters` library before every adapter tensor.
    pub fn prefix(self) -> &'static str {
        match self {
            Arch::Bert => "bert.",
            Arch::XlmRoberta => "roberta.",
        }
    }

    /// `model_type` in Hugging Face's `config.json` and in AdapterHub configs.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::XlmRoberta => "xlm-roberta",
        }
    }

    /// RoBERTa-style models number positions from `pad_token_id + 1`, skipping pads.
    pub fn offsets_positions(self) -> bool {
        self == Arch::XlmRoberta
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "relu")]
    Relu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: HiddenAct,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default)]
    pad_token_id: Option<i64>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    classifier_dropout: Option<f64>,
    #[serde(default = "default_initializer_range")]
    initializer_range: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    // Keys Hugging Face writes that do not change the computation.
    #[serde(flatten)]
    _ignored: BTreeMap<String, serde_json::Value>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}

/// What the encoder needs to know about itself, read from `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub pad_token_id: i64,
    /// `architectures[0]` of the checkpoint, e.g. `BertForSequenceClassification`.
    pub architecture: Option<String>,
    /// Label names in id order, when the checkpoint has a classification head.
    pub labels: Vec<String>,
    pub classifier_dropout: Option<f64>,
    /// Standard deviation of new weights (Hugging Face's `_init_weights`).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        // Parse to a value first so that a missing key is reported by name.
        let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        for key in [
            "model_type",
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ] {
            if value.get(key).is_none() {
                bail!("missing key `{key}`");
            }
        }
        let raw: RawConfig = serde_json::from_value(value).context("invalid value")?;
        let arch = match raw.model_type.as_str() {
            "bert" => Arch::Bert,
            "xlm-roberta" | "roberta" => Arch::XlmRoberta,
            other => bail!("model_type `{other}` is not supported (expected `bert` or `xlm-roberta`)"),
        };
        if let Some(kind) = raw.position_embedding_type.as_deref() {
            if kind != "absolute" {
                bail!("position_embedding_type `{kind}` is not supported (expected `absolute`)");
            }
        }
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size,
                raw.num_attention_heads
            );
        }
        let labels = match &raw.id2label {
            None => Vec::new(),
            Some(map) => {
                let mut pairs = map
                    .iter()
                    .map(|(k, v)| k.parse::<usize>().map(|k| (k, v.clone())))
                    .collect::<Result<Vec<_>, _>>()
                    .context("id2label keys must be integers")?;
                pairs.sort();
                pairs.into_iter().map(|(_, v)| v).collect()
            }
        };
        Ok(Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            hidden_act: raw.hidden_act,
            hidden_dropout_prob: raw.hidden_dropout_prob,
            attention_probs_dropout_prob: raw.attention_probs_dropout_prob,
            pad_token_id: raw.pad_token_id.unwrap_or(match arch {
                Arch::Bert => 0,
                Arch::XlmRoberta => 1,
            }),
            architecture: raw.architectures.and_then(|a| a.into_iter().next()),
            labels,
            classifier_dropout: raw.classifier_dropout,
            initializer_range: raw.initializer_range,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_is_named() {
        let err = ModelConfig::parse(r#"{"model_type": "bert", "vocab_size": 10}"#).unwrap_err();
        assert!(format!("{err:#}").contains("missing key `hidden_size`"), "{err:#}");
    }

    #[test]
    fn unsupported_model_type_is_named() {
        let text = r#"{"model_type": "gpt2", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 4, "max_position_embeddings": 8}"#;
        let err = ModelConfig::parse(text).unwrap_err();
        assert!(format!("{err:#}").contains("`gpt2`"), "{err:#}");
    }
}
