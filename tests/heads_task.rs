//! New task heads: Hugging Face's initialisation, saved in the `adapters` library's layout
//! and loaded back with the same logits, and a clear error where the pooler they need is
//! missing; Hugging Face heads saved with a task adapter that are incomplete are named.
#![cfg(feature = "train")]

mod common;

use std::path::Path;

use common::Case;
use tch::{Device, Kind, Tensor};
use toolkit::model::adapter_config::AdapterConfig;
use toolkit::model::head::{HeadStyle, HeadType};
use toolkit::model::torch::{Inputs, Logits, MadxModel};
use toolkit::model::weights::write_safetensors;
use toolkit::model::{AdapterSpec, ComposedModel, ModelConfig, ModelFiles, Tensor as StoredTensor, Weights};
use toolkit::train::checkpoint;

fn case(name: &str) -> Case {
    Case::load(&common::repo().join("tests/fixtures/parity").join(name))
}

fn inputs(case: &Case) -> Inputs {
    let t = |name: &str| case.input(name).map(|(d, s)| Tensor::from_slice(&d).reshape(s.iter().map(|&x| x as i64).collect::<Vec<_>>()));
    Inputs { input_ids: t("input_ids").unwrap(), attention_mask: t("attention_mask").unwrap(), token_type_ids: t("token_type_ids") }
}

fn values(logits: &Logits) -> Vec<f64> {
    logits.named().iter().flat_map(|(_, t)| Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()).collect()
}

/// The fixture's base model and language adapter with a new task adapter `task` and a new head,
/// as the trainer sets them up.
fn with_new_head(case: &Case, style: HeadStyle, head_type: HeadType, layers: usize) -> (MadxModel, ModelConfig, serde_json::Value) {
    let files = ModelFiles { task_adapter: None, ..case.files() };
    let mut composed = ComposedModel::load(&files).unwrap();
    let labels: Vec<String> = match head_type {
        HeadType::Classification => ["a", "b", "c"].map(String::from).to_vec(),
        _ => Vec::new(),
    };
    let (head, json) = composed.new_task_head(style, head_type, &labels, "task", layers).unwrap();
    let spec = AdapterSpec { name: "task".into(), config: AdapterConfig::seq_bn(), dir: case.dir.join("unused") };
    let fresh: Vec<String> =
        (0..composed.config.num_hidden_layers).map(|l| spec.layer_prefix(l)).chain(head.layers.iter().map(|l| l.prefix.clone())).collect();
    composed.task = Some(spec);
    composed.head = Some(head);
    let model = MadxModel::build(&composed, Device::Cpu, &composed.weights).unwrap();
    model.copy_weights(composed.weights, &fresh).unwrap();
    (model, composed.config, json)
}

#[test]
fn new_heads_start_as_hugging_face_initialises_them() {
    tch::manual_seed(3);
    let (model, _, _) = with_new_head(&case("bert_stack_cls_flex"), HeadStyle::Mlp, HeadType::Classification, 2);
    let vars = model.head_vars();
    let weights: Vec<f64> = vars
        .iter()
        .filter(|(n, _)| n.ends_with(".weight"))
        .flat_map(|(_, t)| Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap())
        .collect();
    let mean = weights.iter().sum::<f64>() / weights.len() as f64;
    let std = (weights.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / weights.len() as f64).sqrt();
    // initializer_range of the fixture's config.json: 0.02; 1120 draws.
    assert!((std - 0.02).abs() < 0.002 && mean.abs() < 0.002, "mean {mean}, std {std}");
    for (name, t) in vars.iter().filter(|(n, _)| n.ends_with(".bias")) {
        assert_eq!(t.abs().max().double_value(&[]), 0.0, "{name}");
    }
}

/// Every head type and style on both architectures: saved as the trainer saves `last/` and
/// `best/`, loaded back (as `toolkit predict`, `export` and resuming load it), same logits.
#[test]
fn saved_heads_load_back_with_the_same_logits() {
    for arch in ["bert", "xlmr"] {
        for (kind, head_type) in [("cls", HeadType::Classification), ("qa", HeadType::QuestionAnswering), ("mc", HeadType::MultipleChoice)] {
            let case = case(&format!("{arch}_stack_{kind}_flex"));
            for (style, layers) in [(HeadStyle::Hf, 2), (HeadStyle::Mlp, 2), (HeadStyle::Mlp, 1)] {
                let what = format!("{arch} {kind} {style:?} {layers}");
                tch::manual_seed(7);
                let (model, config, json) = with_new_head(&case, style, head_type, layers);
                let before = values(&tch::no_grad(|| model.forward(&inputs(&case), false)).unwrap());
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("last");
                checkpoint::save(&dir, &model, &config, &json, None).unwrap();

                let saved = Weights::read_safetensors(&dir.join("model_head.safetensors"), |n| Some(n.to_string())).unwrap();
                let mut names: Vec<&str> = saved.names().collect();
                names.sort();
                let head = ComposedModel::load(&ModelFiles { task_adapter: Some(dir.clone()), ..case.files() }).unwrap().head.unwrap();
                let mut expected: Vec<String> =
                    head.layers.iter().flat_map(|l| ["bias", "weight"].map(|leaf| format!("{}.{leaf}", l.prefix))).collect();
                expected.sort();
                assert_eq!(names, expected, "{what}");

                let files = ModelFiles { task_adapter: Some(dir), ..case.files() };
                let reloaded = MadxModel::load(ComposedModel::load(&files).unwrap(), Device::Cpu).unwrap();
                let after = values(&tch::no_grad(|| reloaded.forward(&inputs(&case), false)).unwrap());
                let diff = common::max_abs_diff(&before, &after);
                assert!(diff == 0.0, "{what}: logits moved by {diff:e}");
            }
        }
    }
}

/// Writes the tensors of the safetensors file `src`, changed by `edit`, to `dst`.
fn rewrite_tensors(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, StoredTensor)>)) {
    let stored = Weights::read_safetensors(src, |n| Some(n.to_string())).unwrap();
    let mut tensors: Vec<(String, StoredTensor)> =
        stored.names().map(|n| (n.to_string(), stored.entry(n).unwrap().tensor().unwrap().clone())).collect();
    edit(&mut tensors);
    let refs: Vec<(String, &StoredTensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    write_safetensors(dst, &refs, None).unwrap();
}

/// Copies the fixture's model to `dir`, leaving out the pooler (as multilingual-e5-small has none).
fn model_without_pooler(case: &Case, dir: &Path) {
    let src = case.files().model_dir;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    rewrite_tensors(&src.join("model.safetensors"), &dir.join("model.safetensors"), |t| t.retain(|(n, _)| !n.starts_with("pooler.")));
}

#[test]
fn hf_heads_on_the_pooler_need_the_pretrained_pooler() {
    let tmp = tempfile::tempdir().unwrap();
    let static_case = case("bert_stack_cls_static");
    model_without_pooler(&static_case, &tmp.path().join("model"));
    let files = ModelFiles { model_dir: tmp.path().join("model"), task_adapter: None, ..static_case.files() };
    let composed = ComposedModel::load(&files).unwrap();
    for head_type in [HeadType::Classification, HeadType::MultipleChoice] {
        let err = composed.new_task_head(HeadStyle::Hf, head_type, &[], "task", 2).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("model/model.safetensors") && msg.contains("`pooler.dense.weight`") && msg.contains("head = \"mlp\""), "{msg}");
        composed.new_task_head(HeadStyle::Mlp, head_type, &[], "task", 2).unwrap();
    }
    composed.new_task_head(HeadStyle::Hf, HeadType::QuestionAnswering, &[], "task", 2).unwrap();

    // A saved head that reads the pooler does not load on such a model either.
    let err = ComposedModel::load(&ModelFiles { task_adapter: static_case.files().task_adapter, ..files }).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("model/model.safetensors") && msg.contains("`pooler.dense.weight`") && msg.contains("task"), "{msg}");
}

#[test]
fn incomplete_static_heads_are_named() {
    let case = case("xlmr_stack_cls_static");
    for (edit, expected) in [
        ("drop", "no tensor `classifier.out_proj.bias`"),
        ("add", "tensor `pooler.dense.bias` is not part of head `task`"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let task = tmp.path().join("task");
        std::fs::create_dir_all(&task).unwrap();
        for f in ["adapter_config.json", "adapter.safetensors", "head_config.json"] {
            std::fs::copy(case.dir.join("task").join(f), task.join(f)).unwrap();
        }
        rewrite_tensors(&case.dir.join("task/model_head.safetensors"), &task.join("model_head.safetensors"), |t| match edit {
            "drop" => t.retain(|(n, _)| n != "classifier.out_proj.bias"),
            _ => t.push(("pooler.dense.bias".into(), StoredTensor::new(vec![32], vec![0.0; 32]))),
        });
        let err = ComposedModel::load(&ModelFiles { task_adapter: Some(task), ..case.files() }).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("task/model_head.safetensors") && msg.contains(expected), "{edit}: {msg}");
    }
}
