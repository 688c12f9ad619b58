//! The panics and hangs the properties found, each as the smallest input that showed it.
use serde_json::json;
use toolkit::data::{squad, OnMalformed};
use toolkit::model::{ComposedModel, ModelFiles};

use crate::common;

/// `answer_start` + the answer's length overflowed usize (a panic in debug builds).
#[test]
fn squad_answer_start_at_the_end_of_u64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.json");
    let answer = json!({"text": "-", "answer_start": u64::MAX});
    let file = json!({"data": [{"title": "t", "paragraphs": [{"context": "", "qas": [{"id": "q1", "question": "why?", "answers": [answer]}]}]}]});
    std::fs::write(&path, file.to_string()).unwrap();
    let err = format!("{:#}", squad::read(&path, OnMalformed::Error).unwrap_err());
    assert!(err.contains(&format!("{}:1 (question q1)", path.display())) && err.contains("runs past the context"), "{err}");
}

/// A SQuAD file with a byte that is not UTF-8 named the file but not where.
#[test]
fn squad_file_that_is_not_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.json");
    std::fs::write(&path, b"{\"data\": [\n{\"title\": \"\x80\"}]}").unwrap();
    let err = format!("{:#}", squad::read(&path, OnMalformed::Error).unwrap_err());
    assert!(err.contains(&format!("{}:2: not UTF-8 text (byte 22)", path.display())), "{err}");
}

/// A head config claiming 2^64 - 1 layers made a vector of that capacity (capacity overflow),
/// and one of 2^40 labels looped making label names.
#[test]
fn head_configs_claiming_huge_counts() {
    let root = tempfile::tempdir().unwrap();
    let case = root.path().join("case");
    super::models::copy_dir(&common::repo().join("tests/fixtures/parity/bert_stack_cls_flex"), &case);
    let path = case.join("task/head_config.json");
    let seed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let files = ModelFiles { model_dir: case.join("model"), lang_adapter: None, task_adapter: Some(case.join("task")) };
    for (key, value) in [("layers", u64::MAX), ("num_labels", 1 << 40)] {
        let mut config = seed.clone();
        config["config"][key] = value.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let err = format!("{:#}", ComposedModel::load(&files).unwrap_err());
        assert!(err.contains(&path.display().to_string()) && err.contains(&format!("`{key}` = {value} is not a count")), "{err}");
    }
}

/// A model config with neither hidden size nor attention heads passed the multiple check
/// (0 is a multiple of 0) and divided by zero where the head size is computed.
#[test]
fn model_config_without_attention_heads() {
    let root = tempfile::tempdir().unwrap();
    let case = root.path().join("case");
    super::models::copy_dir(&common::repo().join("tests/fixtures/parity/bert_stack_cls_flex"), &case);
    let path = case.join("model/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_size"] = 0.into();
    config["num_attention_heads"] = 0.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let files = ModelFiles { model_dir: case.join("model"), ..ModelFiles::default() };
    let err = format!("{:#}", ComposedModel::load(&files).unwrap_err());
    assert!(err.contains(&path.display().to_string()) && err.contains("num_attention_heads 0"), "{err}");
}

/// A sweep grid of 10 keys with 10 values each, 10^10 runs, was expanded in memory.
#[cfg(feature = "train")]
#[test]
fn sweep_grid_too_large_to_expand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.toml");
    let keys = ["seed", "lr", "epochs", "batch_size", "unfreeze_every", "fisher_batches", "warmup_steps", "eval_every", "save_every", "max_length"];
    let grid: String = keys.iter().map(|k| format!("{k} = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n")).collect();
    let text = format!(
        "name = \"g\"\nconfig = \"scripts/configs/copa-e5.toml\"\nout = \"unused\"\n[grid]\n{grid}[eval]\nsuites = [\"xcopa\"]\ndata_dir = \"d\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", toolkit::sweep::file::Sweep::load(&path).unwrap_err());
    assert!(err.contains(&path.display().to_string()) && err.contains("[grid] has more than 100000 runs"), "{err}");
}

/// Config files with a byte that is not UTF-8 named the file but not where ("stream did not
/// contain valid UTF-8").
#[cfg(feature = "train")]
#[test]
fn configs_that_are_not_utf8_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    std::fs::write(&path, b"a = 1\nb = \"\xff\"\n").unwrap();
    let errors = [
        toolkit::train::TrainConfig::resolve(Some(&path), toml::Table::new()).map(|_| ()),
        toolkit::sweep::file::Sweep::load(&path).map(|_| ()),
        toolkit::eval::Suite::load(path.to_str().unwrap()).map(|_| ()),
        toolkit::export::lang_adapters::LangAdapters::load(&path).map(|_| ()),
        toolkit::model::AdapterConfig::load(&path).map(|_| ()),
    ];
    for err in errors {
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains(&format!("{}:2: not UTF-8 text (byte 11)", path.display())), "{err}");
    }
}
