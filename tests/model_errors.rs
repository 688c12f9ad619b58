//! Bad checkpoints give one clear error naming the file and the tensor or key, never a panic.
mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use toolkit::model::weights::{write_safetensors, Tensor};
use toolkit::model::{ComposedModel, ModelFiles, Weights};

/// A private copy of a fixture case to damage.
fn copy_case(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = common::repo().join("tests/fixtures/parity").join(name);
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&src, &tmp.path().join(name));
    let dir = tmp.path().join(name);
    (tmp, dir)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let target = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files(dir: &Path) -> ModelFiles {
    ModelFiles {
        model_dir: dir.join("model"),
        lang_adapter: Some(dir.join("lang")),
        task_adapter: Some(dir.join("task")),
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites a safetensors file with `edit` applied to its tensors (by stored name).
fn edit_tensors(path: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let w = Weights::read_safetensors(path, |n| Some(n.to_string())).unwrap();
    let mut tensors: Vec<(String, Tensor)> =
        w.names().map(|n| (n.to_string(), w.entry(n).unwrap().tensor().unwrap().clone())).collect();
    edit(&mut tensors);
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    write_safetensors(path, &refs, None).unwrap();
}

fn load_error(files: &ModelFiles) -> String {
    let err = ComposedModel::load(files).and_then(|m| check_tensors(&m)).unwrap_err();
    format!("{err:#}")
}

/// Loading resolves files and configs; shapes are checked when a backend asks for tensors,
/// so ask for every tensor the way the model builders do.
fn check_tensors(m: &ComposedModel) -> anyhow::Result<()> {
    #[cfg(feature = "train")]
    {
        toolkit::model::torch::MadxModel::load(m.clone(), tch::Device::Cpu)?;
    }
    #[cfg(not(feature = "train"))]
    {
        let h = m.config.hidden_size;
        m.weights.get("embeddings.word_embeddings.weight", &[m.config.vocab_size, h])?;
        for spec in m.stack() {
            let p = spec.layer_prefix(0);
            m.weights.get(&format!("{p}.adapter_up.bias"), &[h])?;
        }
    }
    Ok(())
}

#[test]
fn missing_config_key_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    edit_json(&dir.join("model/config.json"), |v| {
        v.as_object_mut().unwrap().remove("num_attention_heads");
    });
    let msg = load_error(&files(&dir));
    assert!(msg.contains("config.json") && msg.contains("missing key `num_attention_heads`"), "{msg}");
}

#[test]
fn adapter_hidden_size_mismatch_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    edit_json(&dir.join("task/adapter_config.json"), |v| v["hidden_size"] = 768.into());
    let msg = load_error(&files(&dir));
    assert!(msg.contains("task/adapter_config.json") && msg.contains("hidden size 768"), "{msg}");
}

#[test]
fn unknown_adapter_config_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    edit_json(&dir.join("task/adapter_config.json"), |v| v["config"] = "prefix_tuning".into());
    let msg = load_error(&files(&dir));
    assert!(msg.contains("task/adapter_config.json") && msg.contains("unknown adapter config `prefix_tuning`"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    let gone = "bert.encoder.layer.1.output.adapters.task.adapter_up.bias";
    edit_tensors(&dir.join("task/adapter.safetensors"), |t| t.retain(|(n, _)| n != gone));
    // Layer 1 only exists in the tch check; the eval-only check looks at layer 0.
    let gone_l0 = "bert.encoder.layer.0.output.adapters.task.adapter_up.bias";
    if cfg!(not(feature = "train")) {
        edit_tensors(&dir.join("task/adapter.safetensors"), |t| t.retain(|(n, _)| n != gone_l0));
    }
    let msg = load_error(&files(&dir));
    assert!(msg.contains("missing tensor `encoder.layer.") && msg.contains("adapter_up.bias"), "{msg}");
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    let name = "bert.encoder.layer.0.output.adapters.task.adapter_up.bias";
    edit_tensors(&dir.join("task/adapter.safetensors"), |t| {
        let (_, tensor) = t.iter_mut().find(|(n, _)| n == name).unwrap();
        *tensor = Tensor::new(vec![7], vec![0.0; 7]);
    });
    let msg = load_error(&files(&dir));
    assert!(msg.contains("task/adapter.safetensors") && msg.contains(name), "{msg}");
    assert!(msg.contains("[7]") && msg.contains("expected [32]"), "{msg}");
}

#[test]
fn corrupt_safetensors_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    std::fs::write(dir.join("lang/adapter.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let msg = load_error(&files(&dir));
    assert!(msg.contains("lang/adapter.safetensors") && msg.contains("not a valid safetensors"), "{msg}");
}

#[test]
fn foreign_tensor_in_adapter_file_is_named() {
    let (_tmp, dir) = copy_case("bert_stack_cls_hf");
    edit_tensors(&dir.join("task/adapter.safetensors"), |t| {
        t.push(("bert.encoder.layer.0.output.adapters.other.adapter_up.bias".into(), Tensor::new(vec![1], vec![0.0])));
    });
    let msg = load_error(&files(&dir));
    assert!(msg.contains("adapters.other.adapter_up.bias") && msg.contains("not part of adapter `task`"), "{msg}");
}
