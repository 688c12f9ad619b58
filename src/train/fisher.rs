//! The trace of the Fisher information of each task adapter,
//! tr(F_l) = E_x E_{y ~ p(y|x)} ||grad_{theta_l} log p(y|x)||^2,
//! measured with dropout off and without touching parameter gradients, the optimizer or the
//! training random streams. FUN unfreezes by it; `--fisher-every` tracks it.
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::batch::{log_likelihood, model_labels, TrainBatch};
use crate::model::torch::{Logits, MadxModel, Tap};

/// Where y comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FisherLabels {
    /// y ~ p(y|x): the true Fisher (Eq. 1 of the paper).
    Sampled,
    /// y = argmax p(y|x): what the paper's released code computes.
    Argmax,
    /// the gold label: the empirical Fisher.
    Gold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FisherEstimator {
    /// ||grad of the batch-mean log-likelihood||^2 / batch size (Algorithm 2 of the paper).
    Batch,
    /// the mean over examples of ||grad log p(y_i|x_i)||^2: exact, from one backward pass.
    PerExample,
}

/// How a QA example's two log-likelihoods, of its start and its end, make one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QaReduction {
    /// log p(start) + log p(end): the log-likelihood of the pair, Eq. 1 as written.
    #[default]
    Sum,
    /// Their mean, as the released code's loss (the Hugging Face QA loss) takes it: gradients
    /// halve, traces are a quarter of `sum`'s, rankings are the same.
    Mean,
}

/// How tr(F) is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FisherOptions {
    pub labels: FisherLabels,
    pub estimator: FisherEstimator,
    pub qa: QaReduction,
}

/// tr(F) of the task adapter in every layer (0 where a layer has none), averaged over
/// `batches`. `seed` fixes the sampled labels.
pub fn fisher_traces<'a>(
    model: &MadxModel,
    batches: impl IntoIterator<Item = &'a TrainBatch>,
    options: FisherOptions,
    seed: u64,
) -> Result<Vec<f64>> {
    let layers = model.num_layers;
    let mut sums = vec![0f64; layers];
    let mut count = 0usize;
    // The task adapters must be in the autograd graph even while frozen for training. Every
    // other variable is set not to require a gradient: the flags decide which backward
    // computations run, and with them the order of some float sums (traces moved in the 6th
    // digit), and a run resumed at a FUN step must measure exactly what the uninterrupted run
    // measured. The flags are put back.
    let task: Vec<(String, Tensor)> = (0..layers).flat_map(|l| model.task_adapter_vars(l)).collect();
    let flags = model.require_grad_only(&task);
    let result = (|| -> Result<()> {
        for (i, batch) in batches.into_iter().enumerate() {
            let batch_seed = crate::seed::derive_seed(seed, 0, i as u64);
            let traces = batch_traces(model, batch, options, batch_seed)?;
            for (s, t) in sums.iter_mut().zip(traces) {
                *s += t;
            }
            count += 1;
        }
        Ok(())
    })();
    MadxModel::restore_requires_grad(flags);
    result?;
    Ok(sums.into_iter().map(|s| s / count.max(1) as f64).collect())
}

fn batch_traces(model: &MadxModel, batch: &TrainBatch, options: FisherOptions, seed: u64) -> Result<Vec<f64>> {
    let FisherOptions { labels, estimator, qa } = options;
    let mut taps: Vec<Option<Tap>> = Vec::new();
    let logits = model.forward_tapped(&batch.inputs, false, Some(&mut taps))?;
    let y = match labels {
        FisherLabels::Gold => batch.labels.to_device(model.device()),
        FisherLabels::Sampled => model_labels(&logits, Some(seed)),
        FisherLabels::Argmax => model_labels(&logits, None),
    };
    // Summing per-example log-likelihoods makes the gradient at each example's activations
    // that example's own gradient.
    let mut total = log_likelihood(&logits, &y).sum(Kind::Float);
    if qa == QaReduction::Mean && matches!(logits, Logits::Span { .. }) {
        total *= 0.5;
    }
    let present: Vec<(usize, &Tap)> = taps.iter().enumerate().filter_map(|(l, t)| t.as_ref().map(|t| (l, t))).collect();
    let wrt: Vec<Tensor> = present.iter().flat_map(|(_, t)| [t.u.shallow_clone(), t.y.shallow_clone()]).collect();
    let grads = Tensor::run_backward(&[total], &wrt, false, false);
    let n = batch.len() as i64;
    let mut traces = vec![0f64; model.num_layers];
    for (k, (layer, tap)) in present.iter().enumerate() {
        let (du, dy) = (&grads[2 * k], &grads[2 * k + 1]);
        // Rows of one example (its choices, for multiple choice) belong together.
        // In float32 whatever the compute type: these products and sums are tr(F) itself.
        let per_example = |t: &Tensor| t.to_kind(Kind::Float).reshape([n, -1, *t.size().last().expect("3-d activation")]);
        let (du, dy, z, a) = (per_example(du), per_example(dy), per_example(&tap.z), per_example(&tap.a));
        let g = [
            du.transpose(1, 2).bmm(&z),
            du.sum_dim_intlist(1, false, Kind::Float),
            dy.transpose(1, 2).bmm(&a),
            dy.sum_dim_intlist(1, false, Kind::Float),
        ];
        traces[*layer] = match estimator {
            FisherEstimator::PerExample => {
                g.iter().map(|gi| gi.square().sum(Kind::Double).double_value(&[])).sum::<f64>() / n as f64
            }
            FisherEstimator::Batch => {
                let mean_sq: f64 = g
                    .iter()
                    .map(|gi| (gi.sum_dim_intlist(0, false, Kind::Float) / n as f64).square().sum(Kind::Double).double_value(&[]))
                    .sum();
                mean_sq / n as f64
            }
        };
    }
    Ok(traces)
}

/// The `count` still-frozen layers with the largest traces, largest first (ties: the higher
/// layer first).
pub fn largest_frozen(traces: &[f64], trainable: &[usize], count: usize) -> Vec<usize> {
    let mut frozen: Vec<usize> = (0..traces.len()).filter(|l| !trainable.contains(l)).collect();
    frozen.sort_by(|&a, &b| traces[b].partial_cmp(&traces[a]).unwrap_or(std::cmp::Ordering::Equal).then(b.cmp(&a)));
    frozen.truncate(count);
    frozen
}

#[cfg(test)]
mod tests {
    use super::largest_frozen;

    #[test]
    fn fun_picks_the_largest_frozen_traces() {
        let traces = [0.5, 3.0, 2.0, 9.0, 2.0];
        assert_eq!(largest_frozen(&traces, &[3], 1), vec![1]);
        assert_eq!(largest_frozen(&traces, &[3], 2), vec![1, 4]);
        assert_eq!(largest_frozen(&traces, &[3, 1], 3), vec![4, 2, 0]);
        assert_eq!(largest_frozen(&traces, &[0, 1, 2, 3, 4], 1), Vec::<usize>::new());
        // A NaN trace never wins over a number it cannot be compared with, and nothing panics.
        assert_eq!(largest_frozen(&[f64::NAN, 1.0], &[], 2).len(), 2);
    }
}
