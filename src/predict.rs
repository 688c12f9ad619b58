//! `toolkit predict`: run a composed model (tch) on a JSONL file and write JSONL outputs. A
//! quick sanity check for users, and the reference the ONNX export is compared with.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::device::Device;
use crate::features::{FeatureBatch, Sequence};
use crate::model::torch::{Inputs, Logits, MadxModel};
use crate::model::{ComposedModel, HeadType, ModelFiles};

#[derive(Debug, clap::Args)]
#[command(after_help = "Input lines (one JSON object each), either token ids or text:
  {\"input_ids\": [101, 7592, 102, 0], \"token_type_ids\": [0, 0, 0, 0], \"attention_mask\": [1, 1, 1, 0]}
  {\"text\": \"A man is eating.\", \"text_pair\": \"Someone eats.\"}
  {\"choices\": [{\"text\": \"...\", \"text_pair\": \"...\"}, ...]}   (multiple choice)
An \"id\" is copied to the output line; any other key is an error. A padded row's attention_mask
must be right padding (ones, then zeros): the pads are dropped, and QA logits cover the kept tokens.
Output lines: {\"logits\": [...], \"label\": \"entailment\"} or {\"start_logits\": [...], \"end_logits\": [...]}

Example:
  toolkit predict --model models/multilingual-e5-small --lang-adapter adapters/th \\
      --task-adapter runs/copa/best --input examples.jsonl --output predictions.jsonl")]
pub struct PredictArgs {
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer) or Hub id.
    #[arg(long, default_value = crate::model::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Language adapter directory (AdapterHub layout), stacked under the task adapter.
    #[arg(long)]
    pub lang_adapter: Option<PathBuf>,
    /// Task adapter directory (AdapterHub layout; the head saved with it, flex or Hugging Face, is
    /// used).
    #[arg(long)]
    pub task_adapter: Option<PathBuf>,
    /// JSONL inputs.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write JSONL outputs (default: standard output).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Truncation length for text inputs.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let files = ModelFiles {
        model_dir: args.model.clone(),
        lang_adapter: args.lang_adapter.clone(),
        task_adapter: args.task_adapter.clone(),
    };
    let composed = ComposedModel::load(&files)?;
    let head = composed.head.clone().context("the model has no head: give a task adapter with a head, or a *For... checkpoint")?;
    let pad = composed.config.pad_token_id;
    let model = MadxModel::load(composed, crate::device::torch_device(args.device)?)?;
    let tokenizer = match crate::features::tokenizer::load(&args.model) {
        Ok(t) => Some(crate::features::tokenizer::truncating(t, args.max_length)?),
        Err(_) => None,
    };
    let examples = read_inputs(&args.input, tokenizer.as_ref())?;
    let mut lines = Vec::with_capacity(examples.len());
    for batch in examples.chunks(args.batch_size.max(1)) {
        let inputs = pad_batch(batch, pad, head.head_type == HeadType::MultipleChoice, model.device())?;
        let logits = tch::no_grad(|| model.forward(&inputs, false))?;
        lines.extend(output_lines(&logits, &head.labels, batch)?);
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    match &args.output {
        Some(path) => crate::fsx::write_atomic(path, text.as_bytes()),
        None => std::io::stdout().write_all(text.as_bytes()).context("writing to standard output"),
    }
}

/// One tokenised example: one sequence, or one per choice, and the id it came with.
#[derive(Debug, Clone)]
struct Example {
    seqs: Vec<Sequence>,
    id: Option<Value>,
}

/// The keys an input line may have; any other is an error, not silently dropped.
const LINE_KEYS: [&str; 7] = ["id", "choices", "input_ids", "token_type_ids", "attention_mask", "text", "text_pair"];
const SEQUENCE_KEYS: [&str; 5] = ["input_ids", "token_type_ids", "attention_mask", "text", "text_pair"];

fn check_keys(v: &Value, known: &[&str]) -> Result<()> {
    if let Some(key) = v.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !known.contains(&k.as_str())) {
        bail!("unknown key `{key}` (known: {})", known.join(", "));
    }
    Ok(())
}

fn read_inputs(path: &Path, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<Vec<Example>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: reading", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let value: Value = serde_json::from_str(&line).with_context(|| format!("{}: not valid JSON", at()))?;
        check_keys(&value, &LINE_KEYS).with_context(at)?;
        let seqs = match value.get("choices") {
            Some(Value::Array(choices)) => choices
                .iter()
                .map(|c| check_keys(c, &SEQUENCE_KEYS).and_then(|_| sequence(c, tokenizer)))
                .collect::<Result<Vec<_>>>(),
            Some(_) => Err(anyhow::anyhow!("`choices` must be a list")),
            None => sequence(&value, tokenizer).map(|s| vec![s]),
        }
        .with_context(at)?;
        out.push(Example { seqs, id: value.get("id").cloned() });
    }
    Ok(out)
}

fn sequence(v: &Value, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<Sequence> {
    let ints = |key: &str| -> Result<Option<Vec<i64>>> {
        match v.get(key) {
            None => Ok(None),
            Some(x) => Ok(Some(serde_json::from_value(x.clone()).with_context(|| format!("`{key}` must be a list of integers"))?)),
        }
    };
    if let Some(mut ids) = ints("input_ids")? {
        let mut types = ints("token_type_ids")?.unwrap_or_else(|| vec![0; ids.len()]);
        if types.len() != ids.len() {
            bail!("`token_type_ids` has {} entries, `input_ids` {}", types.len(), ids.len());
        }
        // A row padded the way tokenizers pad it: keep the tokens the mask keeps. predict pads
        // each batch itself, so only right padding (ones, then zeros) can be honoured exactly.
        if let Some(mask) = ints("attention_mask")? {
            if mask.len() != ids.len() {
                bail!("`attention_mask` has {} entries, `input_ids` {}", mask.len(), ids.len());
            }
            let kept = mask.iter().take_while(|&&m| m == 1).count();
            if mask[kept..].iter().any(|&m| m != 0) {
                bail!("`attention_mask` must be ones followed by zeros (right padding), found {mask:?}");
            }
            ids.truncate(kept);
            types.truncate(kept);
        }
        return Ok(Sequence { input_ids: ids, token_type_ids: types });
    }
    if v.get("attention_mask").is_some() {
        bail!("`attention_mask` goes with `input_ids`; text inputs are tokenised here");
    }
    let Some(text) = v.get("text").and_then(Value::as_str) else {
        bail!("expected `input_ids`, `text` or `choices`");
    };
    let tokenizer = tokenizer.context("text input needs a tokenizer (tokenizer.json or vocab.txt) in the model directory")?;
    let pair = v.get("text_pair").and_then(Value::as_str);
    let encoding = match pair {
        Some(p) => tokenizer.encode((text, p), true),
        None => tokenizer.encode(text, true),
    }
    .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    Ok(Sequence::from_encoding(&encoding))
}

fn pad_batch(batch: &[Example], pad: i64, multiple_choice: bool, device: tch::Device) -> Result<Inputs> {
    let choices = batch[0].seqs.len();
    if batch.iter().any(|e| e.seqs.len() != choices) {
        bail!("all examples in a batch need the same number of choices");
    }
    let rows: Vec<&[Sequence]> = batch.iter().map(|e| e.seqs.as_slice()).collect();
    let padded = FeatureBatch::pad(&rows, pad);
    let mut shape: Vec<i64> = padded.shape.iter().map(|&d| d as i64).collect();
    if multiple_choice && shape.len() == 2 {
        // One choice per example still has a choices axis.
        shape.insert(1, 1);
    }
    let t = |v: &[i64]| Tensor::from_slice(v).reshape(shape.as_slice()).to_device(device);
    Ok(Inputs {
        input_ids: t(&padded.input_ids),
        attention_mask: t(&padded.attention_mask),
        token_type_ids: Some(t(&padded.token_type_ids)),
    })
}

fn output_lines(logits: &Logits, labels: &[String], batch: &[Example]) -> Result<Vec<Value>> {
    let mut lines = logit_lines(logits, labels, batch)?;
    for (line, example) in lines.iter_mut().zip(batch) {
        if let Some(id) = &example.id {
            line["id"] = id.clone();
        }
    }
    Ok(lines)
}

fn logit_lines(logits: &Logits, labels: &[String], batch: &[Example]) -> Result<Vec<Value>> {
    let rows = |t: &Tensor| -> Result<Vec<Vec<f32>>> {
        Ok(Vec::<Vec<f32>>::try_from(t.to_kind(Kind::Float).to_device(tch::Device::Cpu))?)
    };
    Ok(match logits {
        Logits::Classes(t) => rows(t)?
            .into_iter()
            .map(|row| {
                let best = argmax(&row);
                match labels.get(best) {
                    Some(label) => json!({"logits": row, "label": label}),
                    None => json!({"logits": row, "prediction": best}),
                }
            })
            .collect(),
        Logits::Span { start, end } => rows(start)?
            .into_iter()
            .zip(rows(end)?)
            .zip(batch)
            .map(|((s, e), ex)| {
                // Drop the pad positions of this batch so each line matches its own input.
                let len = ex.seqs[0].len();
                json!({"start_logits": &s[..len], "end_logits": &e[..len]})
            })
            .collect(),
    })
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}
