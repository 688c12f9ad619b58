//! `toolkit export` against the reference stack (transformers + adapters): each fixture case
//! is exported and run in ONNX Runtime on its padded batch of mixed lengths; the outputs
//! match the stored reference within 1e-5 (fp32; an independent re-implementation agrees to
//! 1.6e-6, a wrong LayerNorm epsilon shows at 2.5e-5) and 1e-2 (fp16). Also: several languages
//! share one external data file, metadata and manifest, atomic failure, and which fusions
//! ONNX Runtime's optimizer makes.
#![cfg(feature = "eval")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{max_abs_diff, parity_cases, Case};
use toolkit::export::{export, Dtype, ExportManifest, ExportPlan, Int8Activations, Int8Cpu};
use toolkit::model::weights::{write_safetensors, Tensor as WeightTensor, Weights};
use toolkit::runtime::{self, Device, Provider};
use toolkit_onnx::onnx::ModelProto;
use toolkit_onnx::prost::Message;

const FP32_TOLERANCE: f64 = 1e-5;
const FP16_TOLERANCE: f64 = 1e-2;

/// A WordPiece vocabulary, so that the export can ship a tokenizer (the fixture models have none).
fn tokenizer_dir(root: &Path) -> PathBuf {
    let dir = root.join("tokenizer");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n").unwrap();
    dir
}

fn plan(case: &Case, root: &Path, languages: &[&str], dtype: Dtype) -> ExportPlan {
    let files = case.files();
    let languages = match &files.lang_adapter {
        Some(dir) => languages.iter().map(|l| (Some(l.to_string()), Some(dir.clone()))).collect(),
        None => vec![(None, None)],
    };
    ExportPlan {
        model_dir: files.model_dir,
        task_adapter: files.task_adapter,
        languages,
        dtype,
        int8_lang_adapters: false,
        int8_cpu: Int8Cpu::Auto,
        int8_activations: Int8Activations::Token,
        max_seq_len: None,
        tokenizer_dir: tokenizer_dir(root),
        out: root.join("export"),
    }
}

/// Exports every case and compares; returns (case, output, max abs diff) rows.
fn check_all_cases(dtype: Dtype, tolerance: f64) -> Vec<String> {
    let mut report = Vec::new();
    for dir in parity_cases() {
        let case = Case::load(&dir);
        let root = tempfile::tempdir().unwrap();
        let plan = plan(&case, root.path(), &["xx"], dtype);
        let summary = export(&plan).unwrap_or_else(|e| panic!("{}: {e:#}", case.name()));
        let model = plan.out.join(&summary.manifest.models[0].file);
        let ours = common::run_onnx(&model, &case);
        for (name, expected, shape) in case.outputs() {
            let (got, got_shape) = ours.get(&name).unwrap_or_else(|| panic!("{}: no output `{name}`", case.name()));
            assert_eq!(got_shape, &shape, "{}: shape of `{name}`", case.name());
            let diff = max_abs_diff(got, &expected);
            report.push(format!("{:<24} {name:<13} {diff:.2e}", case.name()));
            assert!(diff < tolerance, "{}: `{name}` differs by {diff:e} ({dtype:?})", case.name());
        }
    }
    report
}

#[test]
fn fp32_exports_match_reference_outputs() {
    let report = check_all_cases(Dtype::Fp32, FP32_TOLERANCE);
    eprintln!("fp32 max abs diff per case:\n{}", report.join("\n"));
}

#[test]
fn fp16_exports_match_reference_outputs() {
    let report = check_all_cases(Dtype::Fp16, FP16_TOLERANCE);
    eprintln!("fp16 max abs diff per case:\n{}", report.join("\n"));
}

/// Language adapters stored as int8 compute what the float graph computes with the
/// language adapter's linear weights rounded to their int8 grid. The reference here rounds them
/// itself (per output feature, scale = max |w| / 127, w = round(w / scale) * scale), writes
/// that adapter and exports it without int8: the outputs agree within the fp32 tolerance, while
/// the rounding moves them by far more (so the int8 weights are really used).
#[test]
fn int8_language_adapters_compute_the_rounded_weights_exactly() {
    let mut report = Vec::new();
    for dir in parity_cases() {
        let case = Case::load(&dir);
        let Some(lang_dir) = case.files().lang_adapter else { continue };
        let root = tempfile::tempdir().unwrap();
        let rounded_dir = root.path().join("rounded-lang");
        write_rounded_adapter(&lang_dir, &rounded_dir);
        for (dtype, tolerance) in [(Dtype::Fp32, FP32_TOLERANCE), (Dtype::Fp16, FP16_TOLERANCE)] {
            let outputs = |name: &str, int8: bool, lang: &Path| {
                let mut plan = plan(&case, &root.path().join(name), &["xx"], dtype);
                plan.languages = vec![(Some("xx".into()), Some(lang.to_path_buf()))];
                plan.int8_lang_adapters = int8;
                let summary = export(&plan).unwrap_or_else(|e| panic!("{}: {e:#}", case.name()));
                common::run_onnx(&plan.out.join(&summary.manifest.models[0].file), &case)
            };
            let int8 = outputs(&format!("int8-{dtype:?}"), true, &lang_dir);
            let rounded = outputs(&format!("rounded-{dtype:?}"), false, &rounded_dir);
            let exact = outputs(&format!("exact-{dtype:?}"), false, &lang_dir);
            for (name, (got, _)) in &int8 {
                let vs_rounded = max_abs_diff(got, &rounded[name].0);
                let rounding = max_abs_diff(&rounded[name].0, &exact[name].0);
                report.push(format!("{:<24} {dtype:?} {name:<13} vs rounded {vs_rounded:.2e}, rounding moved {rounding:.2e}", case.name()));
                assert!(vs_rounded < tolerance, "{}: `{name}` ({dtype:?}) differs from the rounded-weight export by {vs_rounded:e}", case.name());
                if dtype == Dtype::Fp32 {
                    assert!(rounding > 10.0 * tolerance, "{}: `{name}`: rounding to int8 moved the outputs only by {rounding:e}", case.name());
                }
            }
        }
    }
    assert!(report.len() >= 6, "too few cases with a language adapter: {report:?}");
    eprintln!("int8 language adapters:\n{}", report.join("\n"));

    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let (exact, int8) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let exact_plan = plan(&case, exact.path(), &["th"], Dtype::Fp32);
    let mut int8_plan = plan(&case, int8.path(), &["th"], Dtype::Fp32);
    int8_plan.int8_lang_adapters = true;
    let (exact_summary, int8_summary) = (export(&exact_plan).unwrap(), export(&int8_plan).unwrap());
    assert!(int8_summary.manifest.int8_lang_adapters);
    assert_eq!(exact_summary.shared_bytes, int8_summary.shared_bytes, "base and task weights are not quantised");
    let graph = load_model(&int8_plan.out.join("th.onnx")).graph.unwrap();
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap();
        if name.contains(".adapters.lang.") && name.ends_with(".weight.T.int8") {
            assert_eq!(t.data_type, Some(3), "`{name}` is int8"); // TensorProto.DataType.INT8
        }
        assert!(!(name.contains(".adapters.lang.") && name.ends_with(".weight.T")), "`{name}` left in float");
    }
}

/// A copy of the adapter in `from` whose linear weights (`[out, in]`) hold their int8-rounded
/// values: per output feature (row), scale = max |w| / 127 and w = round(w / scale) * scale.
fn write_rounded_adapter(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("adapter_config.json"), to.join("adapter_config.json")).unwrap();
    let weights = Weights::read_safetensors(&from.join("adapter.safetensors"), |n| Some(n.to_string())).unwrap();
    let mut tensors: Vec<(String, WeightTensor)> = Vec::new();
    for name in weights.names() {
        let mut t = weights.entry(name).unwrap().tensor().unwrap().clone();
        if name.ends_with(".weight") && t.shape.len() == 2 {
            for row in t.data.chunks_mut(t.shape[1]) {
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                row.iter_mut().for_each(|v| *v = (*v / scale).round() * scale);
            }
        }
        tensors.push((name.to_string(), t));
    }
    let refs: Vec<(String, &WeightTensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    write_safetensors(&to.join("adapter.safetensors"), &refs, None).unwrap();
}

fn load_model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

#[test]
fn languages_share_one_external_data_file() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let root = tempfile::tempdir().unwrap();
    let plan = plan(&case, root.path(), &["th", "sw", "zh"], Dtype::Fp32);
    let summary = export(&plan).unwrap();

    let mut files: Vec<String> =
        std::fs::read_dir(&plan.out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["export.json", "shared.bin", "sw.onnx", "th.onnx", "tokenizer.json", "zh.onnx"]);

    let manifest = ExportManifest::load(&plan.out).unwrap();
    assert_eq!(manifest, summary.manifest);
    assert_eq!(manifest.languages(), ["th", "sw", "zh"]);
    assert_eq!(manifest.inputs, ["input_ids", "attention_mask", "token_type_ids"]);
    assert_eq!(manifest.labels, ["LABEL_0", "LABEL_1", "LABEL_2"]);

    for lang in ["th", "sw", "zh"] {
        let model = load_model(&plan.out.join(format!("{lang}.onnx")));
        let graph = model.graph.as_ref().unwrap();
        for t in &graph.initializer {
            let name = t.name.as_deref().unwrap();
            let external = !t.external_data.is_empty();
            let lang_tensor = name.contains(".adapters.lang.") || name.starts_with("invertible_adapters.lang.");
            assert_eq!(external, !lang_tensor && t.raw_data.is_none(), "{lang}: `{name}`");
            if external {
                let location = t.external_data.iter().find(|e| e.key.as_deref() == Some("location")).unwrap();
                assert_eq!(location.value.as_deref(), Some("shared.bin"));
            }
        }
        let meta: BTreeMap<String, String> =
            model.metadata_props.iter().map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap())).collect();
        assert_eq!(meta["language"], lang);
        assert_eq!(meta["head_type"], "\"classification\"");
        assert_eq!(meta["labels"], r#"["LABEL_0","LABEL_1","LABEL_2"]"#);
        assert_eq!(meta["tokenizer"], "tokenizer.json");
        assert!(meta["adapters"].contains(r#""role":"language""#) && meta["adapters"].contains(r#""role":"task""#));
        assert!(meta.contains_key("base_model") && meta.contains_key("max_seq_len"));
        assert_eq!(model.opset_import[0].version, Some(17));

        // Every language's model runs from the shared file.
        let expected = &case.outputs()[0].1;
        let got = &common::run_onnx(&plan.out.join(format!("{lang}.onnx")), &case)["logits"].0;
        assert!(max_abs_diff(got, expected) < FP32_TOLERANCE, "{lang}");
    }
    // The shared file is written once: its size is that of one language's shared weights.
    let single_root = tempfile::tempdir().unwrap();
    let single = export(&self::plan(&case, single_root.path(), &["th"], Dtype::Fp32)).unwrap();
    assert_eq!(summary.shared_bytes, single.shared_bytes);
    assert_eq!(summary.model_bytes[0].1, single.model_bytes[0].1);
}

#[test]
fn a_failed_export_leaves_nothing_and_keeps_the_previous_one() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let root = tempfile::tempdir().unwrap();
    let good = plan(&case, root.path(), &["th"], Dtype::Fp32);
    export(&good).unwrap();
    let before = std::fs::read(good.out.join("th.onnx")).unwrap();

    // The second language's adapter is broken: the export fails after writing the first.
    let broken = root.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("adapter_config.json"), "{ not json").unwrap();
    let mut bad = good.clone();
    bad.languages.push((Some("sw".into()), Some(broken)));
    let err = export(&bad).unwrap_err();
    assert!(format!("{err:#}").contains("`sw`"), "{err:#}");

    assert_eq!(std::fs::read(good.out.join("th.onnx")).unwrap(), before);
    assert!(!good.out.join("sw.onnx").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Asks ONNX Runtime for its optimised graph and lists the fused operators in it.
#[test]
fn onnx_runtime_fuses_the_exported_patterns() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let root = tempfile::tempdir().unwrap();
    let plan = plan(&case, root.path(), &["th"], Dtype::Fp32);
    export(&plan).unwrap();
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for node in &common::optimized_graph(&plan.out.join("th.onnx"), root.path()).node {
        let domain = node.domain.clone().unwrap_or_default();
        let op = if domain.is_empty() { node.op_type().to_string() } else { format!("{domain}.{}", node.op_type()) };
        *ops.entry(op).or_default() += 1;
    }
    eprintln!("optimized graph ops: {ops:?}");
    let count = |op: &str| ops.get(op).copied().unwrap_or(0);
    // Per layer (two here): the intermediate bias + GELU. The scaled QK^T MatMul takes the
    // 1/sqrt(d) Div in. The toolkit's CPU sessions leave every residual Add + LayerNorm
    // (attention output, one before each of the two adapters, layer output) unfused, as
    // `runtime` asks: with the embedding LayerNorm, nine.
    assert_eq!(count("com.microsoft.BiasGelu"), 2, "{ops:?}");
    assert_eq!(count("Erf"), 0, "{ops:?}");
    assert_eq!(count("com.microsoft.SkipLayerNormalization"), 0, "{ops:?}");
    assert_eq!(count("LayerNormalization"), 9, "{ops:?}");
    assert_eq!(count("com.microsoft.FusedMatMul"), 2, "{ops:?}");
    assert_eq!(count("Div"), 0, "{ops:?}");
    // CUDA sessions keep that fusion, so the eight residual patterns must still match it: ONNX
    // Runtime's default session (the reference venv's) fuses all eight.
    let Some(python) = common::reference_python("onnx, onnxruntime, sympy") else {
        eprintln!("skipping the default-session fusion check: no reference venv with onnx and onnxruntime");
        return;
    };
    let default_optimized = root.path().join("default-optimized.onnx");
    let script = "import sys, onnx, onnxruntime as ort\n\
                  o = ort.SessionOptions(); o.optimized_model_filepath = sys.argv[2]\n\
                  ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n\
                  g = onnx.load(sys.argv[2], load_external_data=False).graph\n\
                  print(sum(n.op_type == 'SkipLayerNormalization' for n in g.node))";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(plan.out.join("th.onnx"))
        .arg(&default_optimized)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
}

#[test]
fn exports_pass_the_onnx_full_checker() {
    let Some(python) = common::reference_python("onnx, onnxruntime, sympy") else {
        eprintln!("skipping: no reference venv with `onnx` and `onnxruntime` (set REF_VENV; see scripts/checks/check-onnx.py)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for (name, dtype) in [
        ("bert_stack_cls_hf", Dtype::Fp32),
        ("bert_stack_mc_flex", Dtype::Fp32),
        ("xlmr_stack_qa_hf", Dtype::Fp32),
        ("xlmr_base_cls_hf", Dtype::Fp32),
        ("xlmr_stack_mc_hf", Dtype::Fp16),
    ] {
        let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
        let case_root = root.path().join(format!("{name}-{dtype:?}"));
        let plan = plan(&case, &case_root, &["th", "sw"], dtype);
        export(&plan).unwrap();
        folders.push(plan.out);
    }
    let out = std::process::Command::new(python)
        .arg(common::repo().join("scripts/checks/check-onnx.py"))
        .arg("--fusions")
        .args(&folders)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-onnx.py failed:\n{text}");
}

/// `auto` always opens the model and says why it did not get CUDA; an explicit `cuda` either
/// runs on CUDA or is an error, never a silent CPU session.
#[test]
fn device_choice_is_explicit() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let root = tempfile::tempdir().unwrap();
    let plan = plan(&case, root.path(), &["th"], Dtype::Fp32);
    export(&plan).unwrap();
    let model = plan.out.join("th.onnx");

    let auto = runtime::session(&model, Device::Auto).unwrap();
    match auto.provider {
        Provider::Cpu => assert!(auto.fallback_reason.is_some()),
        Provider::Cuda => assert!(auto.fallback_reason.is_none()),
    }
    match runtime::session(&model, Device::Cuda) {
        Ok(cuda) => assert_eq!(cuda.provider, Provider::Cuda),
        Err(err) => {
            eprintln!("--device cuda here: {err:#}");
            assert_eq!(auto.provider, Provider::Cpu, "auto got CUDA but an explicit cuda request failed: {err:#}");
        }
    }
    assert_eq!(runtime::session(&model, Device::Cpu).unwrap().provider, Provider::Cpu);
}
