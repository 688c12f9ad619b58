//! Prediction heads: the Hugging Face ones (`*ForSequenceClassification`,
//! `*ForQuestionAnswering`, `*ForMultipleChoice`) and the `adapters` library's flex heads
//! (`heads.NAME.i.*` with `head_config.json`), which AdapterHub checkpoints use.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::adapter_config::Activation;
use super::config::{Arch, ModelConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadType {
    Classification,
    QuestionAnswering,
    MultipleChoice,
}

impl HeadType {
    /// Output names, as written into ONNX graphs and predictions.
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            HeadType::QuestionAnswering => &["start_logits", "end_logits"],
            _ => &["logits"],
        }
    }
}

/// One linear layer of a head, by canonical tensor prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadLinear {
    pub prefix: String,
    pub in_dim: usize,
    pub out_dim: usize,
    pub bias: bool,
}

/// What feeds the head: the first token's hidden state, the BERT pooler (dense + tanh on the
/// first token), or every token (QA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInput {
    FirstToken,
    Pooler,
    Tokens,
}

/// A head as a plain stack: input, then linear layers with `activation` between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub head_type: HeadType,
    pub input: HeadInput,
    pub layers: Vec<HeadLinear>,
    pub activation: Option<Activation>,
    pub labels: Vec<String>,
    /// Flex heads are saved with the task adapter; Hugging Face heads live in the model.
    pub flex_name: Option<String>,
    pub dropout: f64,
}

impl Head {
    /// The head of a Hugging Face `*For...` checkpoint, from its `architectures` entry.
    pub fn from_hf_architecture(config: &ModelConfig, num_labels_hint: Option<usize>) -> Result<Option<Head>> {
        let Some(arch_name) = config.architecture.as_deref() else { return Ok(None) };
        let h = config.hidden_size;
        let lin = |prefix: &str, i: usize, o: usize| HeadLinear { prefix: prefix.into(), in_dim: i, out_dim: o, bias: true };
        let num_labels = num_labels_hint.unwrap_or(config.labels.len().max(2));
        let dropout = config.classifier_dropout.unwrap_or(config.hidden_dropout_prob);
        let (head_type, input, layers, activation) = if arch_name.ends_with("ForSequenceClassification") {
            match config.arch {
                Arch::Bert => (HeadType::Classification, HeadInput::Pooler, vec![lin("classifier", h, num_labels)], None),
                Arch::XlmRoberta => (
                    HeadType::Classification,
                    HeadInput::FirstToken,
                    vec![lin("classifier.dense", h, h), lin("classifier.out_proj", h, num_labels)],
                    Some(Activation::Tanh),
                ),
            }
        } else if arch_name.ends_with("ForQuestionAnswering") {
            (HeadType::QuestionAnswering, HeadInput::Tokens, vec![lin("qa_outputs", h, 2)], None)
        } else if arch_name.ends_with("ForMultipleChoice") {
            (HeadType::MultipleChoice, HeadInput::Pooler, vec![lin("classifier", h, 1)], None)
        } else {
            return Ok(None);
        };
        let labels = if head_type == HeadType::Classification { label_names(&config.labels, num_labels) } else { Vec::new() };
        Ok(Some(Head { head_type, input, layers, activation, labels, flex_name: None, dropout }))
    }

    /// A flex head from `head_config.json`.
    pub fn load_flex(path: &Path, config: &ModelConfig) -> Result<Head> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::flex_from_json(&value, config).with_context(|| format!("in head config {}", path.display()))
    }

    pub fn flex_from_json(value: &Value, config: &ModelConfig) -> Result<Head> {
        let name = value.get("name").and_then(Value::as_str).context("missing key `name`")?;
        let cfg = value.get("config").context("missing key `config`")?;
        let kind = cfg.get("head_type").and_then(Value::as_str).context("missing key `config.head_type`")?;
        let num_layers = cfg.get("layers").and_then(Value::as_u64).context("missing key `config.layers`")? as usize;
        if num_layers == 0 {
            bail!("`config.layers` must be at least 1");
        }
        let activation = match cfg.get("activation_function") {
            None | Some(Value::Null) => None,
            Some(Value::String(a)) => Some(
                parse_activation(a).with_context(|| format!("head activation `{a}` is not supported"))?,
            ),
            Some(other) => bail!("`config.activation_function` must be a string, found {other}"),
        };
        let bias = cfg.get("bias").and_then(Value::as_bool).unwrap_or(true);
        let use_pooler = cfg.get("use_pooler").and_then(Value::as_bool).unwrap_or(false);
        let dropout = cfg.get("dropout_prob").and_then(Value::as_f64).unwrap_or(config.hidden_dropout_prob);
        let (head_type, out_dim) = match kind {
            "classification" => {
                let n = cfg.get("num_labels").and_then(Value::as_u64).context("missing key `config.num_labels`")?;
                (HeadType::Classification, n as usize)
            }
            "multiple_choice" => (HeadType::MultipleChoice, 1),
            "question_answering" => (HeadType::QuestionAnswering, 2),
            other => bail!("head_type `{other}` is not supported (classification, question_answering, multiple_choice)"),
        };
        let input = match (head_type, use_pooler) {
            (HeadType::QuestionAnswering, _) => HeadInput::Tokens,
            (_, true) => HeadInput::Pooler,
            (_, false) => HeadInput::FirstToken,
        };
        // The library numbers a head's modules in order: per layer a Dropout, then the Linear,
        // then (between layers) the activation.
        let h = config.hidden_size;
        let mut index = 0;
        let mut layers = Vec::new();
        for l in 0..num_layers {
            index += 1; // dropout
            let last = l + 1 == num_layers;
            layers.push(HeadLinear {
                prefix: format!("heads.{name}.{index}"),
                in_dim: h,
                out_dim: if last { out_dim } else { h },
                bias: if last { bias } else { true },
            });
            index += 1;
            if !last && activation.is_some() {
                index += 1;
            }
        }
        let labels = match cfg.get("label2id") {
            Some(Value::Object(map)) => {
                let mut pairs: Vec<(u64, String)> =
                    map.iter().filter_map(|(k, v)| v.as_u64().map(|i| (i, k.clone()))).collect();
                pairs.sort();
                pairs.into_iter().map(|(_, k)| k).collect()
            }
            _ => Vec::new(),
        };
        let labels = if head_type == HeadType::Classification { label_names(&labels, out_dim) } else { Vec::new() };
        Ok(Head { head_type, input, layers, activation, labels, flex_name: Some(name.to_string()), dropout })
    }

    pub fn needs_pooler(&self) -> bool {
        self.input == HeadInput::Pooler
    }

    pub fn num_outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }
}

fn parse_activation(name: &str) -> Option<Activation> {
    match name {
        "tanh" => Some(Activation::Tanh),
        "relu" => Some(Activation::Relu),
        "gelu" => Some(Activation::Gelu),
        "silu" | "swish" => Some(Activation::Silu),
        _ => None,
    }
}

fn label_names(known: &[String], n: usize) -> Vec<String> {
    if known.len() == n {
        known.to_vec()
    } else {
        (0..n).map(|i| format!("LABEL_{i}")).collect()
    }
}
