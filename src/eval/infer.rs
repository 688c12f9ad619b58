//! Running batches of features through an ONNX model.
use anyhow::{anyhow, bail, Context, Result};
use ort::session::Session;
use ort::value::Tensor;

use crate::features::FeatureBatch;

const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// A model's outputs for one batch, by the names asked for: flat row-major data and shape.
pub struct Outputs {
    pub tensors: Vec<(Vec<f32>, Vec<usize>)>,
}

/// Feeds the inputs `session` declares (BERT takes token types, XLM-R does not) and returns
/// `outputs` in the order given.
pub fn run_batch(session: &mut Session, batch: &FeatureBatch, outputs: &[&str]) -> Result<Outputs> {
    let shape: Vec<i64> = batch.shape.iter().map(|&d| d as i64).collect();
    let mut inputs: Vec<(String, Tensor<i64>)> = Vec::new();
    for input in session.inputs() {
        let data = match input.name() {
            "input_ids" => &batch.input_ids,
            "attention_mask" => &batch.attention_mask,
            "token_type_ids" => &batch.token_type_ids,
            other => bail!("the model has an input `{other}`; the evaluator feeds only {INPUTS:?}"),
        };
        let tensor = Tensor::from_array((shape.clone(), data.clone()))
            .map_err(|e| anyhow!("building `{}`: {e}", input.name()))?;
        inputs.push((input.name().to_string(), tensor));
    }
    let results = session.run(inputs).map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
    let mut tensors = Vec::with_capacity(outputs.len());
    for name in outputs {
        let value = results.get(*name).with_context(|| format!("the model has no output `{name}`"))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| anyhow!("output `{name}`: {e}"))?;
        tensors.push((data.to_vec(), shape.iter().map(|&d| d as usize).collect()));
    }
    Ok(Outputs { tensors })
}
