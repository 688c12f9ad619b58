//! `toolkit export --dtype int8`: the encoder's and adapters' projections as integer MatMuls.
//! On every parity fixture the int8 export's outputs stay within a stated bound of the fp32
//! export's; the graph keeps only the head, the pooler and attention's activation products in
//! float; ONNX Runtime fuses each integer projection into one operator; the models pass the
//! ONNX checker and run in the evaluator.
#![cfg(feature = "eval")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{max_abs_diff, parity_cases, Case};
use ort::value::Tensor;
use toolkit::export::{export, Dtype, ExportPlan};
use toolkit::runtime::{self, Device, SessionConfig};
use toolkit_onnx::onnx::ModelProto;
use toolkit_onnx::prost::Message;

/// Exports `case` (its language adapter as language `xx`, if it has one) into `root/export`.
fn export_case(case: &Case, root: &Path, dtype: Dtype) -> PathBuf {
    let files = case.files();
    let tokenizer = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).unwrap();
    std::fs::write(tokenizer.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n").unwrap();
    let languages = match &files.lang_adapter {
        Some(dir) => vec![(Some("xx".to_string()), Some(dir.clone()))],
        None => vec![(None, None)],
    };
    let plan = ExportPlan {
        model_dir: files.model_dir,
        task_adapter: files.task_adapter,
        languages,
        dtype,
        int8_lang_adapters: false,
        max_seq_len: None,
        tokenizer_dir: tokenizer,
        out: root.join("export"),
    };
    let summary = export(&plan).unwrap_or_else(|e| panic!("{} ({dtype:?}): {e:#}", case.name()));
    assert_eq!(summary.manifest.dtype, dtype);
    plan.out.join(&summary.manifest.models[0].file)
}

/// The model's outputs on the case's padded batch, by name.
fn run(model: &Path, case: &Case) -> BTreeMap<String, Vec<f64>> {
    let config = SessionConfig { device: Device::Cpu, intra_threads: Some(1), ..SessionConfig::default() };
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
            let (_, data) = value.try_extract_tensor::<f32>().unwrap();
            (name.to_string(), data.iter().map(|&v| v as f64).collect())
        })
        .collect()
}

fn load_model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// A first-order bound on how far the int8 export's outputs move from the fp32 export's: each
/// integer projection rounds its weights to at most 1/254 of the column's largest weight and its
/// activations to at most 1/510 of the tensor's range, so its output moves by at most about
/// (1/254 + 1/510) of its own size; errors of projections in series add up. The longest path
/// through the graph passes every integer projection but two of Q, K, V per layer; the bound
/// is that many times the per-projection error, relative to the largest fp32 output.
/// (First order: LayerNorm and softmax are taken as not amplifying the error.)
fn int8_bound(int8_model: &Path, largest_output: f64) -> f64 {
    let graph = load_model(int8_model).graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
    let in_series = count("MatMulInteger") - 2 * count("Softmax");
    in_series as f64 * (1.0 / 254.0 + 1.0 / 510.0) * largest_output
}

#[test]
fn int8_exports_stay_close_to_fp32_exports() {
    let mut report = Vec::new();
    for dir in parity_cases() {
        let case = Case::load(&dir);
        let (fp32_root, int8_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let fp32 = run(&export_case(&case, fp32_root.path(), Dtype::Fp32), &case);
        let int8_model = export_case(&case, int8_root.path(), Dtype::Int8);
        let int8 = run(&int8_model, &case);
        for (name, exact) in &fp32 {
            let diff = max_abs_diff(&int8[name], exact);
            let bound = int8_bound(&int8_model, exact.iter().fold(0f64, |m, v| m.max(v.abs())));
            report.push(format!("{:<24} {name:<13} {diff:.2e} (bound {bound:.2e})", case.name()));
            assert!(diff < bound, "{}: `{name}` moved by {diff:e}, over the bound {bound:e}", case.name());
        }
    }
    eprintln!("int8 vs fp32 export, max abs diff per case:\n{}", report.join("\n"));
}

/// Every projection of the encoder and the adapters is an integer MatMul on int8 weights; only
/// the head and pooler keep float weights; attention's two activation products stay float
/// MatMuls.
#[test]
fn int8_graph_has_integer_projections_only() {
    for (name, layers, projections) in [
        // 2 layers x (Q, K, V, attention output, FFN up, FFN down, 2 per adapter), invertible F and G.
        ("bert_stack_qa_hf", 2, 2 * (6 + 2 * 2) + 4),
        ("xlmr_task_only_cls_hf", 2, 2 * (6 + 2)),
        ("bert_base_cls_hf", 2, 2 * 6),
    ] {
        let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
        let root = tempfile::tempdir().unwrap();
        let graph = load_model(&export_case(&case, root.path(), Dtype::Int8)).graph.unwrap();
        let ops = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
        assert_eq!(ops("MatMulInteger"), projections, "{name}");
        assert_eq!(ops("DynamicQuantizeLinear"), projections, "{name}");
        assert_eq!(ops("MatMul"), 2 * layers + head_matmuls(&graph), "{name}");
        for t in &graph.initializer {
            let tensor = t.name();
            if tensor.ends_with(".weight.T.int8") {
                assert_eq!(t.data_type, Some(3), "{name}: `{tensor}` is int8"); // TensorProto.DataType.INT8
            }
            if tensor.ends_with(".weight.T") {
                let float_ok = tensor.starts_with("heads.") || tensor.starts_with("pooler.") || tensor.starts_with("qa_outputs.") || tensor.starts_with("classifier.");
                assert!(float_ok, "{name}: `{tensor}` left in float");
            }
        }
    }
}

/// Float MatMuls on the head's and pooler's weights.
fn head_matmuls(graph: &toolkit_onnx::onnx::GraphProto) -> usize {
    graph.node.iter().filter(|n| n.op_type() == "MatMul" && n.input[1].ends_with(".weight.T")).count()
}
