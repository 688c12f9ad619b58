//! Training gradients and Fisher traces against the reference stack (PyTorch + adapters) on
//! the fixtures with `train_ref.safetensors`.
#![cfg(feature = "train")]

mod common;

use common::Case;
use tch::{Device, Tensor};
use toolkit::model::torch::{Inputs, MadxModel};
use toolkit::model::{ComposedModel, Weights};
use toolkit::train::batch::{loss, Labels, TrainBatch};
use toolkit::train::fisher::{fisher_traces, FisherEstimator, FisherLabels, FisherOptions, QaReduction};

/// Every head type, with Hugging Face heads (in the model checkpoint) and flex heads (saved
/// with the task adapter), for both architectures.
const CASES: [&str; 10] = [
    "bert_stack_cls_flex",
    "xlmr_stack_cls_hf",
    "bert_stack_qa_hf",
    "bert_stack_qa_flex",
    "xlmr_stack_qa_hf",
    "xlmr_stack_qa_flex",
    "bert_stack_mc_hf",
    "bert_stack_mc_flex",
    "xlmr_stack_mc_hf",
    "xlmr_stack_mc_flex",
];

fn setup(name: &str) -> (Case, ComposedModel, MadxModel, TrainBatch) {
    let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
    let composed = ComposedModel::load(&case.files()).unwrap();
    let model = MadxModel::load(composed.clone(), Device::Cpu).unwrap();
    let t = |n: &str| {
        case.input(n).map(|(d, s)| Tensor::from_slice(&d).reshape(s.iter().map(|&x| x as i64).collect::<Vec<_>>()))
    };
    let ints = |v: &serde_json::Value| Tensor::from_slice(&v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>());
    // QA labels are answer start and end positions, the others a class (or choice) each.
    let gold = &case.json["labels"];
    let labels = match gold.get("start") {
        Some(start) => Labels::Span { start: ints(start), end: ints(&gold["end"]) },
        None => Labels::Class(ints(gold)),
    };
    let batch = TrainBatch {
        inputs: Inputs { input_ids: t("input_ids").unwrap(), attention_mask: t("attention_mask").unwrap(), token_type_ids: t("token_type_ids") },
        labels,
    };
    for (_, v) in model.vs.variables() {
        let _ = v.set_requires_grad(false);
    }
    (case, composed, model, batch)
}

fn trainable(model: &MadxModel) -> Vec<(String, Tensor)> {
    let mut vars = model.head_vars();
    for l in 0..model.num_layers {
        vars.extend(model.task_adapter_vars(l));
    }
    vars
}

#[test]
fn gradients_of_trainable_adapters_match_reference() {
    let mut report = Vec::new();
    for name in CASES {
        let (case, composed, model, batch) = setup(name);
        let vars = trainable(&model);
        for (_, v) in &vars {
            let _ = v.set_requires_grad(true);
        }
        let logits = model.forward(&batch.inputs, false).unwrap();
        let l = loss(&logits, &batch.labels);
        let expected_loss = case.json["loss_gold"].as_f64().unwrap();
        assert!((l.double_value(&[]) - expected_loss).abs() < 1e-5, "{name}: loss {} vs {expected_loss}", l.double_value(&[]));
        l.backward();
        let reference = Weights::read_safetensors(&case.dir.join("train_ref.safetensors"), |n| {
            n.strip_prefix("grad.").map(|k| k.strip_prefix(composed.config.arch.prefix()).unwrap_or(k).to_string())
        })
        .unwrap();
        let mut checked = 0;
        let mut worst = 0f32;
        for (var_name, v) in &vars {
            let r = reference.entry(var_name).unwrap_or_else(|| panic!("{name}: no reference gradient for {var_name}"));
            let ours = Vec::<f32>::try_from(v.grad().flatten(0, -1)).unwrap();
            let diff = ours.iter().zip(&r.tensor().unwrap().data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{name}: grad of {var_name} differs by {diff:e}");
            worst = worst.max(diff);
            checked += 1;
        }
        assert_eq!(checked, reference.names().count(), "{name}: every reference gradient is checked");
        report.push(format!("{name}: {checked} gradients, max |diff| {worst:.2e}"));
    }
    println!("{}", report.join("\n"));
}

/// tr(F) measured as FUN measures it, QA log-likelihoods summed over start and end.
fn options(labels: FisherLabels, estimator: FisherEstimator) -> FisherOptions {
    FisherOptions { labels, estimator, qa: QaReduction::Sum }
}

#[test]
fn fisher_traces_match_reference() {
    let mut report = Vec::new();
    for name in CASES {
        let (case, _, model, batch) = setup(name);
        let fisher = &case.json["fisher"];
        let list = |k: &str| -> Vec<f64> { fisher[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
        let n = batch.len() as f64;
        let batch_est = fisher_traces(&model, [&batch], options(FisherLabels::Argmax, FisherEstimator::Batch), 0).unwrap();
        let gold = fisher_traces(&model, [&batch], options(FisherLabels::Gold, FisherEstimator::Batch), 0).unwrap();
        let per_example = fisher_traces(&model, [&batch], options(FisherLabels::Argmax, FisherEstimator::PerExample), 0).unwrap();
        let mut worst = 0f64;
        for (ours, key) in [
            (batch_est.iter().map(|t| t * n).collect::<Vec<_>>(), "batch_mean_grad_sq_norm"),
            (gold.iter().map(|t| t * n).collect(), "batch_mean_grad_sq_norm_gold"),
            (per_example, "fisher_per_example"),
        ] {
            let expected = list(key);
            for (o, e) in ours.iter().zip(&expected) {
                let relative = (o - e).abs() / e.abs().max(1e-3);
                assert!(relative <= 1e-5, "{name} {key}: {ours:?} vs {expected:?}");
                worst = worst.max(relative);
            }
        }
        report.push(format!("{name}: max relative tr(F) diff {worst:.2e}"));
        // Measuring leaves no gradient behind and restores the frozen flags.
        for (_, v) in model.vs.variables() {
            assert!(!v.requires_grad());
            assert!(!v.grad().defined());
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn estimators_agree_for_batch_size_one() {
    let (_, _, model, batch) = setup("bert_stack_cls_flex");
    let one = |t: &Tensor| t.narrow(0, 1, 1);
    let single = TrainBatch {
        inputs: Inputs {
            input_ids: one(&batch.inputs.input_ids),
            attention_mask: one(&batch.inputs.attention_mask),
            token_type_ids: batch.inputs.token_type_ids.as_ref().map(one),
        },
        labels: match &batch.labels {
            Labels::Class(y) => Labels::Class(one(y)),
            _ => unreachable!(),
        },
    };
    for labels in [FisherLabels::Gold, FisherLabels::Argmax, FisherLabels::Sampled] {
        let a = fisher_traces(&model, [&single], options(labels, FisherEstimator::Batch), 9).unwrap();
        let b = fisher_traces(&model, [&single], options(labels, FisherEstimator::PerExample), 9).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1e-6), "{labels:?}: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn qa_reduction_mean_is_a_quarter_of_sum_and_leaves_other_tasks_alone() {
    // The released code's QA loss is the mean of the start and end losses: gradients halve.
    for (name, factor) in [("bert_stack_qa_hf", 0.25), ("xlmr_stack_qa_flex", 0.25), ("bert_stack_cls_flex", 1.0)] {
        let (_, _, model, batch) = setup(name);
        let with = |qa| fisher_traces(&model, [&batch], FisherOptions { labels: FisherLabels::Gold, estimator: FisherEstimator::Batch, qa }, 0).unwrap();
        let (sum, mean) = (with(QaReduction::Sum), with(QaReduction::Mean));
        for (s, m) in sum.iter().zip(&mean) {
            assert!(*s > 0.0, "{name}: {sum:?}");
            assert!((m - factor * s).abs() <= 1e-6 * s.abs(), "{name}: {mean:?} vs {factor} x {sum:?}");
        }
    }
}
