//! Helpers shared by the integration tests: the reference fixtures' `case.json`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cli;
pub mod tiny;

use std::path::{Path, PathBuf};

use serde_json::Value;
use toolkit::model::ModelFiles;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real data sets (`TOOLKIT_DATA_DIR`, else `../shared/data`), or `None` with a message on
/// a checkout without them, so that tests needing them skip visibly.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("TOOLKIT_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is absent (real COPA/XCOPA/XQuAD files, mBERT vocabulary)", dir.display());
        None
    }
}

/// The reference venv (`REF_VENV`, else `.venv-ref`): PyPI's torch, transformers and adapters
/// for the parity tests that run the reference stack.
pub fn ref_venv() -> PathBuf {
    std::env::var_os("REF_VENV").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv-ref"))
}

/// The reference venv's interpreter, if it imports `modules` (e.g. "onnx, onnxruntime").
pub fn reference_python(modules: &str) -> Option<PathBuf> {
    let python = ref_venv().join("bin/python");
    let imports = std::process::Command::new(&python).args(["-c", &format!("import {modules}")]).output();
    imports.is_ok_and(|o| o.status.success()).then_some(python)
}

/// Small files in the benchmarks' real formats.
pub fn data_fixtures() -> PathBuf {
    repo().join("tests/fixtures/data")
}

pub fn parity_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/parity"))
        .expect("tests/fixtures/parity exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no parity fixtures");
    cases
}

/// A reference case: which files, which inputs, which outputs.
pub struct Case {
    pub dir: PathBuf,
    pub json: Value,
}

impl Case {
    pub fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
        Self { dir: dir.to_path_buf(), json: serde_json::from_str(&text).unwrap() }
    }

    pub fn name(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub fn files(&self) -> ModelFiles {
        let path = |key: &str| self.json[key].as_str().map(|p| self.dir.join(p));
        ModelFiles {
            model_dir: path("model_dir").unwrap(),
            lang_adapter: path("lang_adapter"),
            task_adapter: path("task_adapter"),
        }
    }

    /// An input as (flat data, shape).
    pub fn input(&self, name: &str) -> Option<(Vec<i64>, Vec<usize>)> {
        let v = self.json["inputs"].get(name)?;
        let (data, shape) = flatten(v);
        Some((data.into_iter().map(|x| x as i64).collect(), shape))
    }

    /// The reference outputs: (name, flat data, shape).
    pub fn outputs(&self) -> Vec<(String, Vec<f64>, Vec<usize>)> {
        let map = self.json["outputs"].as_object().unwrap();
        map.iter()
            .map(|(k, v)| {
                let (d, s) = flatten(v);
                (k.clone(), d, s)
            })
            .collect()
    }

    pub fn tensor(&self, key: &str) -> Option<(Vec<f64>, Vec<usize>)> {
        self.json.get(key).filter(|v| !v.is_null()).map(flatten)
    }
}

/// Nested JSON arrays of numbers to (row-major data, shape).
pub fn flatten(v: &Value) -> (Vec<f64>, Vec<usize>) {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut data = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().expect("number")),
        }
    }
    walk(v, &mut data);
    (data, shape)
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// libtorch's generator (used to initialise new adapters and heads) is one per process, and the
/// test harness runs tests in threads: one training run at a time keeps runs reproducible.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the parity tests run the models: the CPU, unless `TOOLKIT_TEST_DEVICE=cuda`
/// (scripts/check-gpu.sh runs them so on a GPU machine, against the same reference numbers).
pub fn test_device() -> toolkit::device::Device {
    use clap::ValueEnum;
    match std::env::var("TOOLKIT_TEST_DEVICE") {
        Err(_) => toolkit::device::Device::Cpu,
        Ok(name) => toolkit::device::Device::from_str(&name, true)
            .unwrap_or_else(|e| panic!("TOOLKIT_TEST_DEVICE={name}: {e} (cpu or cuda)")),
    }
}

/// The `--device` value for `test_device()`.
pub fn test_device_arg() -> String {
    use clap::ValueEnum;
    test_device().to_possible_value().expect("every device has a name").get_name().to_string()
}

/// Runs an exported model on the case's inputs (those the model takes) on `test_device()`;
/// returns each output as (flat data, shape).
#[cfg(feature = "eval")]
pub fn run_onnx(model: &Path, case: &Case) -> std::collections::BTreeMap<String, (Vec<f64>, Vec<usize>)> {
    use ort::value::Tensor;
    use toolkit::runtime::{self, SessionConfig};
    let config = SessionConfig { device: test_device(), intra_threads: Some(1), ..SessionConfig::default() };
    let mut session = runtime::session_with(model, &config).unwrap().session;
    let mut inputs: Vec<(String, Tensor<i64>)> = Vec::new();
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        if let Some((data, shape)) = case.input(name) {
            if session.inputs().iter().any(|i| i.name() == name) {
                inputs.push((name.to_string(), Tensor::from_array((shape, data)).unwrap()));
            }
        }
    }
    let outputs = session.run(inputs).unwrap();
    outputs
        .iter()
        .map(|(name, value)| {
            let (shape, data) = value.try_extract_tensor::<f32>().unwrap();
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            (name.to_string(), (data.iter().map(|&v| v as f64).collect(), shape))
        })
        .collect()
}

/// The graph ONNX Runtime's CPU session makes of `model` after its optimisations (fusions), as
/// it writes it to `dir/optimized.onnx`.
#[cfg(feature = "eval")]
pub fn optimized_graph(model: &Path, dir: &Path) -> toolkit_onnx::onnx::GraphProto {
    use toolkit::runtime::{self, Device, SessionConfig};
    use toolkit_onnx::prost::Message;
    let optimized = dir.join("optimized.onnx");
    let config = SessionConfig {
        device: Device::Cpu,
        intra_threads: Some(1),
        optimized_model: Some(optimized.clone()),
        ..SessionConfig::default()
    };
    runtime::session_with(model, &config).unwrap();
    let proto = toolkit_onnx::onnx::ModelProto::decode(std::fs::read(&optimized).unwrap().as_slice()).unwrap();
    proto.graph.unwrap()
}

/// An MLQA-format suite over the fixtures in tests/fixtures/data, sized for the tiny parity
/// models (16 positions).
pub const TINY_MLQA_SUITE: &str = r#"
name = "tiny-mlqa"
description = "MLQA fixtures on a 16-position model"
task = "question-answering"
source_language = "en"
languages = ["en", "de"]
split = "test"
metrics = ["f1", "exact_match"]
primary_metric = "f1"
answer_normalization = "mlqa-v1"
[features]
max_length = 16
doc_stride = 2
[data]
format = "squad"
path = "mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json"
"#;
