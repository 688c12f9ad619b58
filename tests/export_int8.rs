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
use toolkit::export::{export, Dtype, ExportManifest, ExportPlan, Int8Activations, Int8Cpu};
use toolkit::runtime::SharedWeights;
use toolkit_onnx::onnx::tensor_shape_proto::dimension::Value as DimValue;
use toolkit_onnx::onnx::type_proto::Value;
use toolkit_onnx::onnx::ModelProto;
use toolkit_onnx::prost::Message;

/// Exports `case` (its language adapter as language `xx`, if it has one) into `root/export`.
fn export_case(case: &Case, root: &Path, dtype: Dtype, int8_cpu: Int8Cpu, int8_activations: Int8Activations) -> PathBuf {
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
        int8_cpu,
        int8_activations,
        max_seq_len: None,
        tokenizer_dir: tokenizer,
        out: root.join("export"),
    };
    let summary = export(&plan).unwrap_or_else(|e| panic!("{} ({dtype:?}): {e:#}", case.name()));
    assert_eq!(summary.manifest.dtype, dtype);
    plan.out.join(&summary.manifest.models[0].file)
}

fn load_model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// A first-order bound on how far the int8 export's outputs move from the fp32 export's: each
/// integer projection rounds its weights to at most 1/254 of the column's largest weight and its
/// activations (8 bits) to at most 1/510 of the token's range, so its output moves by at most
/// about (1/254 + 1/510) of its own size; errors of projections in series add up. The longest path
/// through the graph passes every integer projection but two of Q, K, V per layer; the bound
/// is that many times the per-projection error, relative to the largest fp32 output.
/// (First order: LayerNorm and softmax are taken as not amplifying the error.)
fn int8_bound(int8_model: &Path, largest_output: f64) -> f64 {
    let graph = load_model(int8_model).graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
    let in_series = count("MatMulIntegerToFloat") - 2 * count("Softmax");
    in_series as f64 * (1.0 / 254.0 + 1.0 / 510.0) * largest_output
}

#[test]
fn int8_exports_stay_close_to_fp32_exports() {
    let mut report = Vec::new();
    for dir in parity_cases() {
        let case = Case::load(&dir);
        let (fp32_root, int8_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let fp32 = common::run_onnx(&export_case(&case, fp32_root.path(), Dtype::Fp32, Int8Cpu::Auto, Int8Activations::Token), &case);
        let int8_model = export_case(&case, int8_root.path(), Dtype::Int8, Int8Cpu::Auto, Int8Activations::Token);
        let int8 = common::run_onnx(&int8_model, &case);
        for (name, (exact, _)) in &fp32 {
            let diff = max_abs_diff(&int8[name].0, exact);
            let bound = int8_bound(&int8_model, exact.iter().fold(0f64, |m, v| m.max(v.abs())));
            report.push(format!("{:<24} {name:<13} {diff:.2e} (bound {bound:.2e})", case.name()));
            assert!(diff < bound, "{}: `{name}` moved by {diff:e}, over the bound {bound:e}", case.name());
        }
    }
    eprintln!("int8 vs fp32 export, max abs diff per case:\n{}", report.join("\n"));
}

/// Every projection of the encoder and the adapters is an integer MatMul on 8-bit weights (int8
/// for `--int8-cpu vnni`, uint8 with zero point 128 for `any`); only
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
        for (int8_cpu, suffix, data_type, inputs) in [(Int8Cpu::Vnni, ".weight.T.int8", 3, 4), (Int8Cpu::Any, ".weight.T.uint8", 2, 6)] {
            let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
            let root = tempfile::tempdir().unwrap();
            let graph = load_model(&export_case(&case, root.path(), Dtype::Int8, int8_cpu, Int8Activations::Token)).graph.unwrap();
            let ops = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
            assert_eq!(ops("MatMulIntegerToFloat"), projections, "{name}");
            // `any` gives each its weights' zero point (6th input; no activation zero point, 5th).
            let integer = graph.node.iter().filter(|n| n.op_type() == "MatMulIntegerToFloat");
            assert!(integer.clone().all(|n| n.input.len() == inputs), "{name} {int8_cpu:?}");
            let weights = graph.initializer.iter().filter(|t| t.name().ends_with(suffix));
            assert!(weights.clone().all(|t| t.data_type == Some(data_type)), "{name} {int8_cpu:?}: {suffix} type");
            assert_eq!(weights.count(), projections, "{name} {int8_cpu:?}: one {suffix} weight per projection");
            assert_eq!(ops("MatMulInteger"), 0, "{name}");
            // One per-token quantisation per projection input: Q, K and V share theirs, except
            // in a last layer that computes only the first token's output (classification).
            let first_token_only =
                graph.node.iter().filter(|n| n.name().starts_with("encoder.") && n.name().ends_with("/first_token")).count();
            assert_eq!(first_token_only, usize::from(!name.contains("_qa_")), "{name}");
            assert_eq!(ops("QuantizeLinear"), projections - 2 * layers + first_token_only, "{name}");
            // The shapes declared for the integer products: ONNX Runtime plans its buffers by
            // them, so a first-token product declared with the `sequence` axis would be wrong.
            let last = format!("encoder.layer.{}.", layers - 1);
            for info in graph.value_info.iter().filter(|v| v.name().ends_with("MatMulIntegerToFloat/out")) {
                let tensor = info.name();
                let single = first_token_only == 1 && tensor.starts_with(&last) && !tensor.contains(".key/") && !tensor.contains(".value/");
                let Some(Value::TensorType(t)) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else { panic!("{tensor}: no tensor type") };
                let axis = &t.shape.as_ref().unwrap().dim[1].value;
                let expected = if single { DimValue::DimValue(1) } else { DimValue::DimParam("sequence".into()) };
                assert_eq!(axis.as_ref(), Some(&expected), "{name}: {tensor}");
            }
            // A ReLU output (every one feeds a projection here) has no minimum or zero point to find.
            assert_eq!(ops("ReduceMin"), ops("QuantizeLinear") - ops("Relu"), "{name}");
            assert_eq!(ops("DynamicQuantizeLinear"), 0, "{name}");
            assert_eq!(ops("MatMul"), 2 * layers + head_matmuls(&graph), "{name}");
            for t in &graph.initializer {
                let tensor = t.name();
                if tensor.ends_with(".weight.T") {
                    let float_ok = tensor.starts_with("heads.") || tensor.starts_with("pooler.") || tensor.starts_with("qa_outputs.") || tensor.starts_with("classifier.");
                    assert!(float_ok, "{name}: `{tensor}` left in float");
                }
            }
        }
    }
}

/// Float MatMuls on the head's and pooler's weights.
fn head_matmuls(graph: &toolkit_onnx::onnx::GraphProto) -> usize {
    graph.node.iter().filter(|n| n.op_type() == "MatMul" && n.input[1].ends_with(".weight.T")).count()
}

/// Against scripts/checks/int8_reference.py: the reference model (transformers + adapters) with
/// its encoder and adapter Linear layers computed in numpy integers under the export's rules.
/// Both sides quantise the same activations the same way, so only float rounding is left
/// (measured: at most 3e-7 of the largest output; bound 1e-5 of it), unless an activation lies
/// within float rounding of a half step (the reference counts these near ties): then ONNX
/// Runtime may round it to the other step, one element one step off (measured once: 1.3e-2 on
/// xlmr_stack_qa_flex, whose adapters' 2-feature bottleneck magnifies it). Such a case is held
/// to the first-order int8 bound instead; most cases have none.
#[test]
fn int8_exports_match_a_numpy_reference_of_the_same_rules() {
    let Some(python) = common::reference_python("torch, transformers, adapters, numpy") else {
        eprintln!("skipping: no reference venv with torch, transformers and adapters (set REF_VENV)");
        return;
    };
    let _cores = common::exclusive();
    let cases = parity_cases();
    for (activations, flag) in [(Int8Activations::Token, "token"), (Int8Activations::Mixed, "mixed"), (Int8Activations::Tensor, "tensor")] {
        let out = std::process::Command::new(&python)
            .arg(common::repo().join("scripts/checks/int8_reference.py"))
            .args(["--activations", flag])
            .args(&cases)
            .output()
            .unwrap();
        assert!(out.status.success(), "int8_reference.py --activations {flag} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        #[derive(serde::Deserialize)]
        struct Reference {
            outputs: BTreeMap<String, Vec<f64>>,
            near_ties: usize,
        }
        let reference: BTreeMap<String, Reference> = serde_json::from_slice(&out.stdout).unwrap();
        let (mut report, mut tight) = (Vec::new(), 0);
        for dir in &cases {
            let case = Case::load(dir);
            let root = tempfile::tempdir().unwrap();
            let model = export_case(&case, root.path(), Dtype::Int8, Int8Cpu::Auto, activations);
            let ours = common::run_onnx(&model, &case);
            let expected = &reference[&case.name()];
            tight += usize::from(expected.near_ties == 0);
            for (name, values) in &expected.outputs {
                let diff = max_abs_diff(&ours[name].0, values);
                let largest = values.iter().fold(0f64, |m, v| m.max(v.abs()));
                let bound = if expected.near_ties == 0 { 1e-5 * largest } else { int8_bound(&model, largest) };
                let mark = if diff < bound { "" } else { "  OVER" };
                let ties = expected.near_ties;
                report.push(format!("{:<24} {name:<13} {diff:.2e} (bound {bound:.2e}, {ties} near ties){mark}", case.name()));
            }
        }
        let report = report.join("\n");
        eprintln!("int8 export ({flag} activations) vs numpy int8 reference, max abs diff per case:\n{report}");
        assert!(!report.contains("OVER"), "{flag}: over the bound:\n{report}");
        assert!(tight * 2 > cases.len(), "{flag}: only {tight} of {} cases without near ties:\n{report}", cases.len());
    }
}

/// ONNX Runtime's CPU optimizer keeps every integer projection an integer GEMM (its u8 x s8
/// kernel; none folded back to float) after its per-token QuantizeLinear; the residual Adds and
/// LayerNorms stay unfused on the CPU, as `runtime` asks.
#[test]
fn onnx_runtime_keeps_each_projection_integer() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    for activations in [Int8Activations::Token, Int8Activations::Mixed, Int8Activations::Tensor] {
        let root = tempfile::tempdir().unwrap();
        let model = export_case(&case, root.path(), Dtype::Int8, Int8Cpu::Auto, activations);
        let exported = load_model(&model).graph.unwrap();
        let exported_ops = |op: &str| exported.node.iter().filter(|n| n.op_type() == op).count();
        let mut ops: BTreeMap<String, usize> = BTreeMap::new();
        for node in &common::optimized_graph(&model, root.path()).node {
            *ops.entry(node.op_type().to_string()).or_default() += 1;
        }
        eprintln!("optimized int8 graph ops ({activations:?} activations): {ops:?}");
        let count = |op: &str| ops.get(op).copied().unwrap_or(0);
        let integer = count("MatMulInteger") + count("MatMulIntegerToFloat") + count("DynamicQuantizeMatMul");
        assert_eq!(integer, exported_ops("MatMulIntegerToFloat"), "{ops:?}");
        assert_eq!(count("QuantizeLinear"), exported_ops("QuantizeLinear"), "{ops:?}");
        if activations != Int8Activations::Token {
            // Each per-tensor quantisation with one consumer fused into it: only Q, K and V's
            // shared ones are left.
            let layers = 2;
            assert_eq!(count("DynamicQuantizeLinear"), layers, "{ops:?}");
        }
        assert_eq!(count("DequantizeLinear"), 0, "{ops:?}");
        assert_eq!(count("LayerNormalization"), 9, "{ops:?}");
        assert_eq!(count("SkipLayerNormalization"), 0, "{ops:?}");
    }
}

/// `--int8-activations tensor`: one DynamicQuantizeLinear per projection input (Q, K and V
/// share theirs) and nothing around the integer products: each MatMulIntegerToFloat takes the
/// activation scale and zero point and adds its bias.
#[test]
fn int8_tensor_activations_leave_nothing_around_the_products() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_qa_hf"));
    let (layers, projections) = (2, 2 * (6 + 2 * 2) + 4);
    for int8_cpu in [Int8Cpu::Vnni, Int8Cpu::Any] {
        let root = tempfile::tempdir().unwrap();
        let export = export_case(&case, root.path(), Dtype::Int8, int8_cpu, Int8Activations::Tensor);
        let graph = load_model(&export).graph.unwrap();
        let ops = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
        assert_eq!(ops("MatMulIntegerToFloat"), projections);
        assert_eq!(ops("DynamicQuantizeLinear"), projections - 2 * layers);
        for op in ["QuantizeLinear", "ReduceMin", "ReduceMax", "Round"] {
            assert_eq!(ops(op), 0, "{int8_cpu:?}: {op}");
        }
        for node in graph.node.iter().filter(|n| n.op_type() == "MatMulIntegerToFloat") {
            assert_eq!(node.input.len(), 7, "{int8_cpu:?} {}: {:?}", node.name(), node.input);
            assert!(!node.input[4].is_empty(), "{}: no activation zero point", node.name());
            assert_eq!(node.input[5].is_empty(), int8_cpu == Int8Cpu::Vnni, "{}: weight zero point", node.name());
            assert!(node.input[6].ends_with(".bias"), "{}: bias {}", node.name(), node.input[6]);
        }
        let manifest = ExportManifest::load(export.parent().unwrap()).unwrap();
        assert_eq!(manifest.int8_activations, Some(Int8Activations::Tensor));
    }
}

/// `--int8-activations mixed`: the feed-forward block's two projections per token (a
/// QuantizeLinear each, their scaling and zero point after the product), every other one per
/// tensor.
#[test]
fn int8_mixed_activations_quantise_the_feed_forward_inputs_per_token() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_qa_hf"));
    let (layers, projections) = (2, 2 * (6 + 2 * 2) + 4);
    let root = tempfile::tempdir().unwrap();
    let graph = load_model(&export_case(&case, root.path(), Dtype::Int8, Int8Cpu::Auto, Int8Activations::Mixed)).graph.unwrap();
    let ops = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
    assert_eq!(ops("MatMulIntegerToFloat"), projections);
    let per_token: Vec<&str> = graph.node.iter().filter(|n| n.op_type() == "QuantizeLinear").map(|n| n.name()).collect();
    assert_eq!(per_token.len(), 2 * layers, "{per_token:?}");
    assert!(per_token.iter().all(|n| n.contains(".intermediate.dense/") || n.contains(".output.dense/") && !n.contains("attention")), "{per_token:?}");
    assert_eq!(ops("DynamicQuantizeLinear"), projections - 2 * layers - 2 * layers);
}

#[test]
fn int8_exports_pass_the_onnx_full_checker() {
    let Some(python) = common::reference_python("onnx, onnxruntime") else {
        eprintln!("skipping: no reference venv with `onnx` (set REF_VENV; see scripts/checks/check-onnx.py)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for name in ["bert_stack_cls_hf", "bert_stack_mc_flex", "xlmr_stack_qa_hf", "xlmr_task_only_cls_hf"] {
        let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
        models.push(export_case(&case, &root.path().join(name), Dtype::Int8, Int8Cpu::Auto, Int8Activations::Token).parent().unwrap().to_path_buf());
        let tensor = root.path().join(format!("{name}-tensor"));
        models.push(export_case(&case, &tensor, Dtype::Int8, Int8Cpu::Auto, Int8Activations::Tensor).parent().unwrap().to_path_buf());
    }
    // Without --fusions: the offline transformer optimizer's Attention fusion expects float
    // projections, and the session optimizer's fusions are checked above.
    let out = std::process::Command::new(python).arg(common::repo().join("scripts/checks/check-onnx.py")).args(&models).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-onnx.py failed:\n{text}");
}

/// `toolkit eval` reads the int8 export (its manifest says int8; no flag) and scores the QA
/// fixtures with it: a row per language and metric, an answer per question, the same answers
/// with `--share-weights`, and the same answers from both weight kinds where both are exact.
/// An `--int8-cpu vnni` export on a CPU without VNNI is refused with the fix named.
#[test]
fn int8_export_runs_in_the_evaluator() {
    let case_dir = common::repo().join("tests/fixtures/parity/bert_stack_qa_hf");
    let root = tempfile::tempdir().unwrap();
    let tokenizer = root.path().join("tokenizer");
    std::fs::create_dir_all(&tokenizer).unwrap();
    // Words of the MLQA fixtures, within the tiny model's vocabulary of 120.
    let words = "[PAD] [UNK] [CLS] [SEP] [MASK] the a an of in is was what where when who which how university \
        oxford england teaching 1096 rhein fluss alpen schweiz nordsee der die das ein den research college city";
    std::fs::write(tokenizer.join("vocab.txt"), words.split_whitespace().collect::<Vec<_>>().join("\n")).unwrap();
    std::fs::write(tokenizer.join("tokenizer_config.json"), r#"{"do_lower_case": true}"#).unwrap();
    let suite = root.path().join("suite.toml");
    std::fs::write(
        &suite,
        common::TINY_MLQA_SUITE,
    )
    .unwrap();
    let eval = |export: &Path, csv: &Path, share_weights: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"));
        command.args(["eval", "--device", "cpu", "--threads", "1", "--run-name", "tiny", "--suite"]).arg(&suite);
        command.arg("--models").arg(export).arg("--data-dir").arg(common::data_fixtures()).arg("--out").arg(csv);
        if share_weights {
            command.arg("--share-weights");
        }
        assert!(command.status().unwrap().success(), "{}: toolkit eval failed", export.display());
        ["en", "de"].map(|lang| {
            let predictions = std::fs::read_to_string(csv.with_extension("predictions").join(format!("{lang}.json"))).unwrap();
            let predictions: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&predictions).unwrap();
            assert_eq!(predictions.len(), 2, "{} {lang}: one answer per question", export.display());
            predictions
        })
    };
    let mut scores = Vec::new();
    let mut int8_answers = Vec::new();
    let token = Int8Activations::Token;
    let variants = [
        (Dtype::Fp32, Int8Cpu::Auto, token),
        (Dtype::Int8, Int8Cpu::Any, token),
        (Dtype::Int8, Int8Cpu::Vnni, token),
        (Dtype::Int8, Int8Cpu::Auto, Int8Activations::Mixed),
        (Dtype::Int8, Int8Cpu::Auto, Int8Activations::Tensor),
    ];
    for (dtype, int8_cpu, int8_activations) in variants {
        let out = root.path().join(format!("{dtype:?}-{int8_cpu:?}-{int8_activations:?}"));
        let summary = export(&ExportPlan {
            model_dir: case_dir.join("model"),
            task_adapter: Some(case_dir.join("task")),
            languages: ["en", "de"].iter().map(|l| (Some(l.to_string()), Some(case_dir.join("lang")))).collect(),
            dtype,
            int8_lang_adapters: false,
            int8_cpu,
            int8_activations,
            max_seq_len: None,
            tokenizer_dir: tokenizer.clone(),
            out: out.join("export"),
        })
        .unwrap();
        let csv = out.join("results.csv");
        if dtype == Dtype::Int8 {
            assert_eq!(summary.manifest.int8_cpu, Some(int8_cpu.resolve()));
            assert_eq!(summary.manifest.int8_activations, Some(int8_activations));
            // What the languages share: every integer projection's 8-bit weight.
            let shared = SharedWeights::load(&out.join("export/en.onnx")).unwrap();
            let integer = shared.initializers.iter().filter(|(name, _)| name.ends_with("int8")).count();
            assert_eq!(integer, 2 * (6 + 2), "{:?}", shared.initializers.iter().map(|(n, _)| n).collect::<Vec<_>>());
            if int8_cpu == Int8Cpu::Vnni && !toolkit::device::cpu_u8s8_exact() {
                let refused = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"))
                    .args(["eval", "--device", "cpu", "--run-name", "tiny", "--suite"])
                    .arg(&suite)
                    .arg("--models")
                    .arg(out.join("export"))
                    .arg("--data-dir")
                    .arg(common::data_fixtures())
                    .arg("--out")
                    .arg(&csv)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                assert!(!refused.status.success() && stderr.contains("--int8-cpu any"), "not refused: {stderr}");
                assert!(!csv.exists(), "a refused export wrote {}", csv.display());
                eprintln!("vnni export refused on this CPU, as it should be: {}", stderr.trim());
                continue;
            }
        }
        let predictions = eval(&out.join("export"), &csv, false);
        // The languages' sessions sharing one packed copy of the integer weights answer the same.
        let shared = eval(&out.join("export"), &out.join("results-shared.csv"), true);
        assert_eq!(shared, predictions, "{dtype:?} {int8_cpu:?}: --share-weights changed the answers");
        if dtype == Dtype::Int8 && int8_activations == token {
            int8_answers.push(predictions);
        }
        scores.push(std::fs::read_to_string(&csv).unwrap());
    }
    if let [any, vnni] = &int8_answers[..] {
        assert_eq!(any, vnni, "int8 weights and uint8 weights answered differently on an exact CPU");
    }
    eprintln!("fp32:\n{}\nint8:\n{}", scores[0], scores[1]);
}
