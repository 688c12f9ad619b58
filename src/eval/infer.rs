//! Running batches of features through an ONNX model.
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::Session;
use ort::value::Tensor;

use super::language::Phases;
use crate::features::FeatureBatch;

const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// A model's outputs for one batch, by the names asked for: flat row-major data and shape.
pub struct Outputs {
    pub tensors: Vec<(Vec<f32>, Vec<usize>)>,
}

/// Feeds the inputs `session` declares (BERT takes token types, XLM-R does not) and returns
/// `outputs` in the order given. The batch's vectors become the input tensors without a copy;
/// the time of building them, of `session.run` and of copying the outputs out is added to
/// `phases`.
pub fn run_batch(session: &mut Session, batch: FeatureBatch, outputs: &[&str], phases: &mut Phases) -> Result<Outputs> {
    let start = Instant::now();
    let shape: Vec<i64> = batch.shape.iter().map(|&d| d as i64).collect();
    let FeatureBatch { input_ids, attention_mask, token_type_ids, .. } = batch;
    let mut data = [Some(input_ids), Some(attention_mask), Some(token_type_ids)];
    let mut inputs: Vec<(String, Tensor<i64>)> = Vec::new();
    for input in session.inputs() {
        let Some(slot) = INPUTS.iter().position(|name| *name == input.name()) else {
            bail!("the model has an input `{}`; the evaluator feeds only {INPUTS:?}", input.name());
        };
        let values = data[slot].take().with_context(|| format!("the model declares input `{}` twice", input.name()))?;
        let tensor = Tensor::from_array((shape.clone(), values)).map_err(|e| anyhow!("building `{}`: {e}", input.name()))?;
        inputs.push((input.name().to_string(), tensor));
    }
    let ran = Instant::now();
    phases.tensors += (ran - start).as_secs_f64();
    let results = session.run(inputs).map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
    let copied = Instant::now();
    phases.run += (copied - ran).as_secs_f64();
    let mut tensors = Vec::with_capacity(outputs.len());
    for name in outputs {
        let value = results.get(*name).with_context(|| format!("the model has no output `{name}`"))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| anyhow!("output `{name}`: {e}"))?;
        tensors.push((data.to_vec(), shape.iter().map(|&d| d as usize).collect()));
    }
    drop(results);
    phases.outputs += copied.elapsed().as_secs_f64();
    Ok(Outputs { tensors })
}
