//! The tch model against the reference stack (transformers + adapters) on the committed
//! fixtures: every architecture, head type and adapter stack within 1e-5 (fp32).
#![cfg(feature = "train")]

mod common;

use common::{max_abs_diff, parity_cases, Case};
use tch::{Device, Kind, Tensor};
use toolkit::model::head::HeadType;
use toolkit::model::torch::{Inputs, MadxModel};
use toolkit::model::ComposedModel;

const TOLERANCE: f64 = 1e-5;

fn inputs(case: &Case) -> Inputs {
    let t = |name: &str| {
        case.input(name).map(|(data, shape)| {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Tensor::from_slice(&data).reshape(shape)
        })
    };
    Inputs {
        input_ids: t("input_ids").unwrap(),
        attention_mask: t("attention_mask").unwrap(),
        token_type_ids: t("token_type_ids"),
    }
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

#[test]
fn tch_model_matches_reference_logits() {
    let mut report = Vec::new();
    for dir in parity_cases() {
        let case = Case::load(&dir);
        let composed = ComposedModel::load(&case.files()).unwrap_or_else(|e| panic!("{}: {e:#}", case.name()));
        // Every case stores a head's outputs: a head that was not found, or found as another
        // type, is a failure, not a case with nothing to compare.
        let expected_type: HeadType = serde_json::from_value(case.json["head"]["type"].clone())
            .unwrap_or_else(|e| panic!("{}: case.json head.type: {e}", case.name()));
        let found_type = composed.head.as_ref().map(|h| h.head_type);
        assert_eq!(found_type, Some(expected_type), "{}: head detected", case.name());
        let model = MadxModel::load(composed, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e:#}", case.name()));
        let inputs = inputs(&case);
        let (expected, _) = case.tensor("last_hidden_state").unwrap_or_else(|| panic!("{}: no last_hidden_state", case.name()));
        let hidden = tch::no_grad(|| model.encode(&inputs));
        let diff = max_abs_diff(&to_vec(&hidden), &expected);
        assert!(diff < TOLERANCE, "{}: last_hidden_state differs by {diff:e}", case.name());
        let logits = tch::no_grad(|| model.forward(&inputs, false)).unwrap();
        let ours = logits.named();
        let outputs = case.outputs();
        assert_eq!(outputs.len(), expected_type.outputs().len(), "{}: reference outputs", case.name());
        for (name, expected, shape) in outputs {
            let (_, t) = ours.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{}: no output {name}", case.name()));
            let got_shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            assert_eq!(got_shape, shape, "{}: {name} shape", case.name());
            let diff = max_abs_diff(&to_vec(t), &expected);
            report.push(format!("{} {name}: {diff:.2e}", case.name()));
            assert!(diff < TOLERANCE, "{}: {name} differs by {diff:e}", case.name());
        }
    }
    println!("{}", report.join("\n"));
}
