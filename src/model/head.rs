//! Prediction heads: the Hugging Face ones (`*ForSequenceClassification`,
//! `*ForQuestionAnswering`, `*ForMultipleChoice`) and the `adapters` library's flex heads
//! (`heads.NAME.i.*` with `head_config.json`), which AdapterHub checkpoints use.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

/// Which head a new task adapter gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HeadStyle {
    /// The Hugging Face head the paper's released code trains for the model and task: one
    /// linear layer on every token for QA; a linear layer on the checkpoint's pretrained
    /// (frozen) pooler for multiple choice and BERT classification; dense + tanh + out_proj on
    /// `<s>` for XLM-R classification.
    #[default]
    Hf,
    /// The `adapters` library's flex head on the first token: `head_layers` linear layers
    /// with tanh between them.
    Mlp,
}


/// Choices per example of a new multiple-choice head (COPA). The toolkit reads the number of
/// choices off its inputs; the `adapters` library reshapes its logits by this one.
const NEW_HEAD_CHOICES: usize = 2;

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

impl HeadInput {
    /// Whether the head reads only the first token of the last layer, so that layer need not
    /// compute the other tokens' outputs.
    pub fn first_token_only(self) -> bool {
        self != HeadInput::Tokens
    }
}

/// A head as a plain stack: input, then linear layers with `activation` between them and
/// dropout before each.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub head_type: HeadType,
    pub input: HeadInput,
    pub layers: Vec<HeadLinear>,
    pub activation: Option<Activation>,
    pub labels: Vec<String>,
    /// The name of a flex head (`heads.NAME.i.*`), which is saved with its task adapter;
    /// `None` for the head of a `*For...` checkpoint, which lives in the model.
    pub flex_name: Option<String>,
    pub dropout: f64,
    /// Multiple choice: the `num_choices` the `adapters` library reshapes its logits by (the
    /// toolkit reads the number of choices off its inputs).
    pub num_choices: Option<usize>,
}

/// A Hugging Face head class as the `adapters` library maps it onto a flex head
/// (`STATIC_TO_FLEX_HEAD_MAP` in adapters/head_utils.py): the same computation, with the
/// checkpoint names of its linear layers in order.
struct HfHead {
    head_type: HeadType,
    input: HeadInput,
    linears: &'static [&'static str],
    activation: Option<Activation>,
    /// `*ForQuestionAnswering` has no dropout; the others drop before each linear layer.
    dropout: bool,
}

impl HfHead {
    fn new(arch: Arch, head_type: HeadType) -> Self {
        let (input, linears, activation, dropout): (_, &'static [&'static str], _, _) = match (head_type, arch) {
            (HeadType::Classification, Arch::Bert) => (HeadInput::Pooler, &["classifier"], None, true),
            (HeadType::Classification, Arch::XlmRoberta) => {
                (HeadInput::FirstToken, &["classifier.dense", "classifier.out_proj"], Some(Activation::Tanh), true)
            }
            (HeadType::MultipleChoice, _) => (HeadInput::Pooler, &["classifier"], None, true),
            (HeadType::QuestionAnswering, _) => (HeadInput::Tokens, &["qa_outputs"], None, false),
        };
        Self { head_type, input, linears, activation, dropout }
    }

    /// The head type of a class name such as `BertForSequenceClassification`.
    fn head_type(class: &str) -> Option<HeadType> {
        if class.ends_with("ForSequenceClassification") {
            Some(HeadType::Classification)
        } else if class.ends_with("ForQuestionAnswering") {
            Some(HeadType::QuestionAnswering)
        } else if class.ends_with("ForMultipleChoice") {
            Some(HeadType::MultipleChoice)
        } else {
            None
        }
    }

    /// This head on the tensor names `prefixes` (one per linear layer).
    fn head(&self, prefixes: Vec<String>, config: &ModelConfig, num_labels: usize, labels: &[String], flex_name: Option<&str>) -> Head {
        let dropout = if self.dropout { default_dropout(config) } else { 0.0 };
        Head {
            head_type: self.head_type,
            input: self.input,
            layers: linears(prefixes, config.hidden_size, outputs(self.head_type, num_labels), true),
            activation: self.activation,
            labels: head_labels(self.head_type, labels, num_labels),
            flex_name: flex_name.map(str::to_string),
            dropout,
            num_choices: (self.head_type == HeadType::MultipleChoice).then_some(num_labels),
        }
    }

    /// This head as the flex head `name`, numbered as the library numbers its modules.
    fn flex_head(&self, name: &str, config: &ModelConfig, num_labels: usize, labels: &[String]) -> Head {
        let prefixes = flex_prefixes(name, self.linears.len(), self.activation.is_some());
        self.head(prefixes, config, num_labels, labels, Some(name))
    }
}

impl Head {
    /// The head of a Hugging Face `*For...` checkpoint, from its `architectures` entry, on the
    /// checkpoint's own tensor names. A classifier has as many labels as `classifier_rows`
    /// (the rows of its output weight) when known; otherwise, and for the choices of a
    /// multiple-choice head, the config's labels count (`num_labels`).
    pub fn from_hf_architecture(config: &ModelConfig, classifier_rows: Option<usize>) -> Option<Head> {
        let head_type = HfHead::head_type(config.architecture.as_deref()?)?;
        let hf = HfHead::new(config.arch, head_type);
        let from_config = config.labels.len().max(2);
        let num_labels = match head_type {
            HeadType::Classification => classifier_rows.unwrap_or(from_config),
            _ => from_config,
        };
        let prefixes = hf.linears.iter().map(|p| p.to_string()).collect();
        Some(hf.head(prefixes, config, num_labels, &config.labels, None))
    }

    /// A Hugging Face head saved with a task adapter (`head_config.json` with `"config": null`
    /// and `model_class`, tensors `classifier.*` / `qa_outputs.*`), as the `adapters` library
    /// loads it into a model with flex heads: the flex head `name` of the same computation.
    /// Also returns (saved prefix, flex prefix) per linear layer, for renaming its tensors.
    pub fn from_static(saved: &Value, config: &ModelConfig, name: &str) -> Result<(Head, Vec<(String, String)>)> {
        let class = saved.get("model_class").and_then(Value::as_str).context("missing key `model_class`")?;
        let head_type = HfHead::head_type(class).with_context(|| {
            format!("head class `{class}` is not supported (*ForSequenceClassification, *ForQuestionAnswering, *ForMultipleChoice)")
        })?;
        // As the library: `num_labels`, else as many as `label2id` names, else 2.
        let labels = labels_by_id(saved.get("label2id"));
        let num_labels = match count(saved, "num_labels")? {
            Some(n) => n,
            None if !labels.is_empty() => labels.len(),
            None => 2,
        };
        let hf = HfHead::new(config.arch, head_type);
        let head = hf.flex_head(name, config, num_labels, &labels);
        let renames = hf.linears.iter().map(|p| p.to_string()).zip(head.layers.iter().map(|l| l.prefix.clone())).collect();
        Ok((head, renames))
    }

    /// A new head `name` for training a task adapter: with `HeadStyle::Hf` the Hugging Face head
    /// of the model and task, with `HeadStyle::Mlp` a flex head of `mlp_layers` layers with
    /// tanh between them, on the first token (every token for QA). Both are flex heads, saved
    /// with the task adapter; the JSON is their `head_config.json`.
    pub fn new_task_head(
        style: HeadStyle,
        head_type: HeadType,
        config: &ModelConfig,
        labels: &[String],
        name: &str,
        mlp_layers: usize,
    ) -> Result<(Head, Value)> {
        let num_labels = match head_type {
            HeadType::Classification => labels.len().max(2),
            HeadType::MultipleChoice => NEW_HEAD_CHOICES,
            HeadType::QuestionAnswering => 2,
        };
        let head = match style {
            HeadStyle::Hf => HfHead::new(config.arch, head_type).flex_head(name, config, num_labels, labels),
            HeadStyle::Mlp => {
                if mlp_layers == 0 {
                    bail!("`head_layers` must be at least 1");
                }
                let activation = Some(Activation::Tanh);
                let prefixes = flex_prefixes(name, mlp_layers, activation.is_some());
                Head {
                    head_type,
                    input: if head_type == HeadType::QuestionAnswering { HeadInput::Tokens } else { HeadInput::FirstToken },
                    layers: linears(prefixes, config.hidden_size, outputs(head_type, num_labels), true),
                    activation,
                    labels: head_labels(head_type, labels, num_labels),
                    flex_name: Some(name.to_string()),
                    dropout: default_dropout(config),
                    num_choices: (head_type == HeadType::MultipleChoice).then_some(num_labels),
                }
            }
        };
        let json = head.config_json(config)?;
        Ok((head, json))
    }

    /// A flex head from its `head_config.json`.
    pub fn flex_from_json(value: &Value, config: &ModelConfig) -> Result<Head> {
        let name = value.get("name").and_then(Value::as_str).context("missing key `name`")?;
        let cfg = value.get("config").context("missing key `config`")?;
        let kind = cfg.get("head_type").and_then(Value::as_str).context("missing key `config.head_type`")?;
        let num_layers = count(cfg, "layers")?.context("missing key `config.layers`")?;
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
        let dropout = cfg.get("dropout_prob").and_then(Value::as_f64).unwrap_or_else(|| default_dropout(config));
        let (head_type, num_labels) = match kind {
            "classification" => {
                (HeadType::Classification, count(cfg, "num_labels")?.context("missing key `config.num_labels`")?)
            }
            // The library's MultipleChoiceHead defaults to two choices.
            "multiple_choice" => (HeadType::MultipleChoice, count(cfg, "num_choices")?.unwrap_or(2)),
            "question_answering" => (HeadType::QuestionAnswering, 2),
            other => bail!("head_type `{other}` is not supported (classification, question_answering, multiple_choice)"),
        };
        let input = match (head_type, use_pooler) {
            (HeadType::QuestionAnswering, _) => HeadInput::Tokens,
            (_, true) => HeadInput::Pooler,
            (_, false) => HeadInput::FirstToken,
        };
        let prefixes = flex_prefixes(name, num_layers, activation.is_some());
        let labels = labels_by_id(cfg.get("label2id"));
        Ok(Head {
            head_type,
            input,
            layers: linears(prefixes, config.hidden_size, outputs(head_type, num_labels), bias),
            activation,
            labels: head_labels(head_type, &labels, num_labels),
            flex_name: Some(name.to_string()),
            dropout,
            num_choices: (head_type == HeadType::MultipleChoice).then_some(num_labels),
        })
    }

    /// `head_config.json` of this flex head, as the `adapters` library writes it for a model
    /// with flex heads (`config` holds exactly the arguments of the library's head class).
    pub fn config_json(&self, config: &ModelConfig) -> Result<Value> {
        let name = self.flex_name.as_deref().context("the head of a *For... checkpoint is not a flex head")?;
        let label2id = match self.labels.is_empty() {
            true => Value::Null,
            false => Value::Object(self.labels.iter().enumerate().map(|(i, l)| (l.clone(), i.into())).collect()),
        };
        let mut head = json!({
            "layers": self.layers.len(),
            "activation_function": self.activation,
            "label2id": label2id,
            "dropout_prob": self.dropout,
        });
        let fields = head.as_object_mut().expect("a JSON object");
        let use_pooler = self.input == HeadInput::Pooler;
        let bias = self.layers.last().is_none_or(|l| l.bias);
        let typed = match self.head_type {
            HeadType::Classification => json!({
                "head_type": "classification", "num_labels": self.num_outputs(), "use_pooler": use_pooler, "bias": bias,
            }),
            HeadType::MultipleChoice => json!({"head_type": "multiple_choice", "num_choices": self.num_choices, "use_pooler": use_pooler}),
            HeadType::QuestionAnswering => json!({"head_type": "question_answering", "num_labels": 2}),
        };
        fields.extend(typed.as_object().expect("a JSON object").clone());
        let model_class = match config.arch {
            Arch::Bert => "BertAdapterModel",
            Arch::XlmRoberta => "XLMRobertaAdapterModel",
        };
        Ok(json!({
            "config": head,
            "hidden_size": config.hidden_size,
            "model_class": model_class,
            "model_name": Value::Null,
            "model_type": config.arch.model_type(),
            "name": name,
            "version": "adapters.1.3.0",
        }))
    }

    pub fn needs_pooler(&self) -> bool {
        self.input == HeadInput::Pooler
    }

    pub fn num_outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_dim)
    }
}

/// Tensor prefixes of a flex head's linear layers. The library numbers a head's modules in
/// order (PredictionHead.build): per layer a Dropout, then the Linear, then between layers
/// the activation.
fn flex_prefixes(name: &str, layers: usize, activation: bool) -> Vec<String> {
    let mut index = 0;
    let mut prefixes = Vec::with_capacity(layers);
    for l in 0..layers {
        index += 1; // dropout
        prefixes.push(format!("heads.{name}.{index}"));
        index += 1;
        if l + 1 < layers && activation {
            index += 1;
        }
    }
    prefixes
}

/// hidden -> hidden layers, then hidden -> `outputs`; `last_bias` for the output layer.
fn linears(prefixes: Vec<String>, hidden: usize, outputs: usize, last_bias: bool) -> Vec<HeadLinear> {
    let n = prefixes.len();
    prefixes
        .into_iter()
        .enumerate()
        .map(|(i, prefix)| {
            let last = i + 1 == n;
            HeadLinear { prefix, in_dim: hidden, out_dim: if last { outputs } else { hidden }, bias: !last || last_bias }
        })
        .collect()
}

/// Width of a head's output layer: a logit per label, one score per choice, start and end.
fn outputs(head_type: HeadType, num_labels: usize) -> usize {
    match head_type {
        HeadType::Classification => num_labels,
        HeadType::MultipleChoice => 1,
        HeadType::QuestionAnswering => 2,
    }
}

/// The dropout before a head's layers, chosen as Hugging Face's classifiers and the
/// library's heads choose it.
fn default_dropout(config: &ModelConfig) -> f64 {
    config.classifier_dropout.unwrap_or(config.hidden_dropout_prob)
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

/// A head's layers, labels and choices are counts in its config file, and names are made for
/// each before any tensor is read: far more than any head has is an error, not an allocation.
const MAX_COUNT: u64 = 1 << 16;

/// The count `key` of a head config object: `None` when absent or null.
fn count(config: &Value, key: &str) -> Result<Option<usize>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n <= MAX_COUNT => Ok(Some(n as usize)),
            _ => bail!("`{key}` = {value} is not a count from 0 to {MAX_COUNT}"),
        },
    }
}

/// Label names in id order from a `label2id` object; empty when there is none.
fn labels_by_id(label2id: Option<&Value>) -> Vec<String> {
    let Some(Value::Object(map)) = label2id else { return Vec::new() };
    let mut pairs: Vec<(u64, String)> = map.iter().filter_map(|(k, v)| v.as_u64().map(|i| (i, k.clone()))).collect();
    pairs.sort();
    pairs.into_iter().map(|(_, k)| k).collect()
}

/// Classification heads name their labels (`LABEL_i` when the known names do not fit);
/// the other heads have none.
fn head_labels(head_type: HeadType, known: &[String], n: usize) -> Vec<String> {
    match head_type {
        HeadType::Classification if known.len() == n => known.to_vec(),
        HeadType::Classification => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arch: Arch) -> ModelConfig {
        let model_type = match arch {
            Arch::Bert => "bert",
            Arch::XlmRoberta => "xlm-roberta",
        };
        ModelConfig::parse(&format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16,
                "hidden_dropout_prob": 0.1, "classifier_dropout": 0.3}}"#
        ))
        .unwrap()
    }

    const TYPES: [HeadType; 3] = [HeadType::Classification, HeadType::QuestionAnswering, HeadType::MultipleChoice];

    fn labels(head_type: HeadType) -> Vec<String> {
        match head_type {
            HeadType::Classification => ["entailment", "neutral", "contradiction"].map(String::from).to_vec(),
            _ => Vec::new(),
        }
    }

    fn prefixes(head: &Head) -> Vec<&str> {
        head.layers.iter().map(|l| l.prefix.as_str()).collect()
    }

    #[test]
    fn new_hf_heads_are_the_released_codes_heads() {
        for arch in [Arch::Bert, Arch::XlmRoberta] {
            let c = config(arch);
            for head_type in TYPES {
                let (head, _) = Head::new_task_head(HeadStyle::Hf, head_type, &c, &labels(head_type), "t", 2).unwrap();
                let expected_input = match (head_type, arch) {
                    (HeadType::QuestionAnswering, _) => HeadInput::Tokens,
                    (HeadType::Classification, Arch::XlmRoberta) => HeadInput::FirstToken,
                    _ => HeadInput::Pooler,
                };
                assert_eq!(head.input, expected_input, "{arch:?} {head_type:?}");
                // The library's module numbering: [Dropout, Linear] or [Dropout, Linear, Tanh, Dropout, Linear].
                let expected: &[&str] = if expected_input == HeadInput::FirstToken { &["heads.t.1", "heads.t.4"] } else { &["heads.t.1"] };
                assert_eq!(prefixes(&head), expected, "{arch:?} {head_type:?}");
                // Hugging Face's QA head has no dropout; the others use classifier_dropout.
                let dropout = if head_type == HeadType::QuestionAnswering { 0.0 } else { 0.3 };
                assert_eq!(head.dropout, dropout, "{arch:?} {head_type:?}");
                assert_eq!(head.num_outputs(), [3, 2, 1][TYPES.iter().position(|t| *t == head_type).unwrap()]);
            }
        }
    }

    #[test]
    fn new_mlp_heads_read_the_first_token() {
        let c = config(Arch::Bert);
        let (head, _) = Head::new_task_head(HeadStyle::Mlp, HeadType::MultipleChoice, &c, &[], "copa", 3).unwrap();
        assert_eq!(head.input, HeadInput::FirstToken);
        assert_eq!(prefixes(&head), ["heads.copa.1", "heads.copa.4", "heads.copa.7"]);
        assert_eq!(head.activation, Some(Activation::Tanh));
        let (one, _) = Head::new_task_head(HeadStyle::Mlp, HeadType::QuestionAnswering, &c, &[], "qa", 1).unwrap();
        assert_eq!((one.input, prefixes(&one)), (HeadInput::Tokens, vec!["heads.qa.1"]));
        let err = Head::new_task_head(HeadStyle::Mlp, HeadType::Classification, &c, &[], "x", 0).unwrap_err();
        assert!(format!("{err}").contains("head_layers"), "{err}");
    }

    /// What is saved is what is loaded back: every new head survives its `head_config.json`.
    #[test]
    fn saved_head_configs_load_back_as_the_same_head() {
        for arch in [Arch::Bert, Arch::XlmRoberta] {
            let c = config(arch);
            for head_type in TYPES {
                for (style, layers) in [(HeadStyle::Hf, 2), (HeadStyle::Mlp, 1), (HeadStyle::Mlp, 2)] {
                    let (head, json) = Head::new_task_head(style, head_type, &c, &labels(head_type), "task", layers).unwrap();
                    assert_eq!(Head::flex_from_json(&json, &c).unwrap(), head, "{arch:?} {head_type:?} {style:?} {layers}");
                    assert_eq!(json["model_type"], arch.model_type());
                }
            }
        }
    }

    /// `config` holds exactly the keyword arguments of the library's head classes, which
    /// `add_prediction_head_from_config` passes on (an unknown key is a TypeError there).
    #[test]
    fn saved_head_configs_have_the_library_keys() {
        let c = config(Arch::Bert);
        let keys = |head_type| {
            let (_, json) = Head::new_task_head(HeadStyle::Hf, head_type, &c, &labels(head_type), "t", 2).unwrap();
            let mut k: Vec<String> = json["config"].as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let common = ["activation_function", "dropout_prob", "head_type", "label2id", "layers"];
        let with = |extra: &[&str]| {
            let mut k: Vec<String> = common.iter().chain(extra).map(|s| s.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(HeadType::Classification), with(&["bias", "num_labels", "use_pooler"]));
        assert_eq!(keys(HeadType::MultipleChoice), with(&["num_choices", "use_pooler"]));
        assert_eq!(keys(HeadType::QuestionAnswering), with(&["num_labels"]));
        let cls = HeadType::Classification;
        let (_, json) = Head::new_task_head(HeadStyle::Hf, cls, &c, &labels(cls), "t", 2).unwrap();
        assert_eq!(json["config"]["use_pooler"], true);
        assert_eq!(json["config"]["label2id"]["contradiction"], 2);
        assert_eq!(json["model_class"], "BertAdapterModel");
    }

    #[test]
    fn static_heads_become_the_flex_heads_the_library_makes() {
        let saved = |class: &str| json!({"config": null, "model_class": class, "num_labels": 3, "label2id": {"a": 0, "b": 1, "c": 2}});
        let (head, renames) = Head::from_static(&saved("XLMRobertaForSequenceClassification"), &config(Arch::XlmRoberta), "task").unwrap();
        assert_eq!(
            renames,
            [("classifier.dense".to_string(), "heads.task.1".to_string()), ("classifier.out_proj".to_string(), "heads.task.4".to_string())]
        );
        assert_eq!((head.input, head.num_outputs()), (HeadInput::FirstToken, 3));
        assert_eq!(head.labels, ["a", "b", "c"]);
        let (head, renames) = Head::from_static(&saved("BertForMultipleChoice"), &config(Arch::Bert), "copa").unwrap();
        assert_eq!(renames, [("classifier".to_string(), "heads.copa.1".to_string())]);
        assert_eq!((head.input, head.num_outputs(), head.num_choices), (HeadInput::Pooler, 1, Some(3)));
        let (head, renames) = Head::from_static(&saved("BertForQuestionAnswering"), &config(Arch::Bert), "qa").unwrap();
        assert_eq!(renames, [("qa_outputs".to_string(), "heads.qa.1".to_string())]);
        assert_eq!((head.input, head.dropout), (HeadInput::Tokens, 0.0));
        let err = Head::from_static(&saved("BertForTokenClassification"), &config(Arch::Bert), "x").unwrap_err();
        assert!(format!("{err}").contains("BertForTokenClassification"), "{err}");
    }

    #[test]
    fn flex_heads_drop_as_the_library_does() {
        let c = config(Arch::Bert);
        let value = |dropout: Value| {
            json!({"name": "t", "config": {"head_type": "classification", "num_labels": 2, "layers": 1, "dropout_prob": dropout}})
        };
        assert_eq!(Head::flex_from_json(&value(Value::Null), &c).unwrap().dropout, 0.3, "classifier_dropout first");
        assert_eq!(Head::flex_from_json(&value(json!(0.05)), &c).unwrap().dropout, 0.05);
    }
}
