//! Old AdapterHub / Hugging Face releases: PyTorch pickles (`pytorch_adapter.bin`,
//! `pytorch_model.bin`) with legacy key names and v1 adapter configs without `version`, against
//! the reference stack loading the same files (`tests/fixtures/legacy`, written by
//! `scripts/fixtures/make_legacy_fixture.py` from the parity case `bert_stack_cls_hf`).
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{repo, Case};
use toolkit::model::adapter_config::InvAdapterConfig;
use toolkit::model::{torch_pickle, Activation, ComposedModel, Weights};

fn legacy_case() -> Case {
    Case::load(&repo().join("tests/fixtures/legacy/bert_stack_cls_hf_bin"))
}

fn original_dir() -> PathBuf {
    repo().join("tests/fixtures/parity/bert_stack_cls_hf")
}

/// A legacy stored name as the original case's safetensors spell it (`None`: not a weight).
fn modern_name(stored: &str) -> Option<String> {
    if stored.ends_with("position_ids") {
        return None;
    }
    Some(
        stored
            .replace("layer_text_lang_adapters.en.", "adapters.lang.")
            .replace("layer_text_task_adapters.sst.", "adapters.task.")
            .replace("invertible_lang_adapters.en.", "invertible_adapters.lang.")
            .replace("LayerNorm.gamma", "LayerNorm.weight")
            .replace("LayerNorm.beta", "LayerNorm.bias"),
    )
}

fn error_of<T>(result: anyhow::Result<T>, what: &str) -> String {
    match result {
        Ok(_) => panic!("{what}: read without an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn every_tensor_of_the_pickles_equals_the_original_safetensors() {
    let case = legacy_case();
    let stored = case.json["stored"].as_object().expect("case.json lists how tensors were stored");
    let names_of = |kind: &str| -> Vec<String> {
        stored[kind].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
    };
    // The fixture exercises every storage variant the reader handles.
    for kind in ["float16", "bfloat16", "float64", "non_contiguous", "shared_storage", "storage_offset", "not_float"] {
        assert!(!names_of(kind).is_empty(), "{kind}");
    }
    let rounding: BTreeMap<String, fn(f32) -> f32> = names_of("float16")
        .iter()
        .map(|n| (modern_name(n).unwrap(), (|x| half::f16::from_f32(x).to_f32()) as fn(f32) -> f32))
        .chain(names_of("bfloat16").iter().map(|n| (modern_name(n).unwrap(), (|x| half::bf16::from_f32(x).to_f32()) as fn(f32) -> f32)))
        .collect();

    let mut compared = 0;
    for (bin, safetensors) in [
        ("model/pytorch_model.bin", "model/model.safetensors"),
        ("lang/pytorch_adapter.bin", "lang/adapter.safetensors"),
        ("task/pytorch_adapter.bin", "task/adapter.safetensors"),
    ] {
        let got = torch_pickle::read(&case.dir.join(bin), modern_name).unwrap_or_else(|e| panic!("{bin}: {e:#}"));
        let want = Weights::read_safetensors(&original_dir().join(safetensors), |n| Some(n.to_string())).unwrap();
        assert_eq!(got.names().collect::<Vec<_>>(), want.names().collect::<Vec<_>>(), "{bin}");
        for name in want.names() {
            let (g, w) = (got.entry(name).unwrap().tensor().unwrap(), want.entry(name).unwrap().tensor().unwrap());
            assert_eq!(g.shape, w.shape, "{name}");
            match rounding.get(name) {
                Some(round) => {
                    let expected: Vec<f32> = w.data.iter().map(|&x| round(x)).collect();
                    assert_ne!(expected, w.data, "{name}: rounding changes nothing, so the test proves nothing");
                    assert_eq!(g.data, expected, "{name}");
                }
                None => assert_eq!(g.data, w.data, "{name}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 41 + 16 + 8);
}

#[test]
fn legacy_configs_keep_the_old_meaning_of_their_names() {
    let case = legacy_case();
    let model = ComposedModel::load(&case.files()).unwrap_or_else(|e| panic!("{e:#}"));
    let (lang, task) = (model.lang.as_ref().unwrap(), model.task.as_ref().unwrap());
    // Our loader keeps the saved names; the reference loaded them as `lang` / `task`.
    assert_eq!((lang.name.as_str(), task.name.as_str()), ("en", "sst"));
    // `gelu` is the tanh approximation, `gelu_orig` the erf GELU; NICE uses the adapter's own.
    assert_eq!(lang.config.non_linearity, Activation::GeluTanh);
    let nice = InvAdapterConfig { reduction_factor: 2.0, non_linearity: Activation::GeluTanh };
    assert_eq!(lang.config.inv_adapter, Some(nice));
    assert_eq!(task.config.non_linearity, Activation::Gelu);
    assert!(model.weights.contains("invertible_adapters.en.F.0.weight"));
    assert!(model.weights.contains("encoder.layer.1.output.adapters.sst.adapter_up.bias"));
    assert!(model.weights.contains("embeddings.LayerNorm.weight"));
    assert!(!model.weights.names().any(|n| n.contains("position_ids")));
}

/// `pytorch_model_head.bin` in place of `model_head.safetensors` gives the same flex head.
#[test]
fn flex_head_reads_from_pytorch_model_head_bin() {
    let original = Case::load(&repo().join("tests/fixtures/parity/bert_stack_cls_flex"));
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task");
    std::fs::create_dir_all(&task).unwrap();
    for file in ["adapter.safetensors", "adapter_config.json", "head_config.json"] {
        std::fs::copy(original.dir.join("task").join(file), task.join(file)).unwrap();
    }
    let bin = repo().join("tests/fixtures/legacy/bert_stack_cls_flex_head/pytorch_model_head.bin");
    std::fs::copy(bin, task.join("pytorch_model_head.bin")).unwrap();
    let mut files = original.files();
    let want = ComposedModel::load(&files).unwrap();
    files.task_adapter = Some(task.clone());
    let got = ComposedModel::load(&files).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(got.head, want.head);
    assert_eq!(got.weights.names().collect::<Vec<_>>(), want.weights.names().collect::<Vec<_>>());
    for name in want.weights.names() {
        assert_eq!(got.weights.entry(name).unwrap().tensor().unwrap(), want.weights.entry(name).unwrap().tensor().unwrap(), "{name}");
    }
    assert_eq!(*got.weights.entry("heads.task.1.weight").unwrap().file, task.join("pytorch_model_head.bin"));
}

#[cfg(feature = "train")]
#[test]
fn tch_model_matches_reference_logits() {
    use tch::{Device, Kind, Tensor};
    use toolkit::model::torch::{Inputs, MadxModel};

    let case = legacy_case();
    let composed = ComposedModel::load(&case.files()).unwrap_or_else(|e| panic!("{e:#}"));
    let model = MadxModel::load(composed, Device::Cpu).unwrap_or_else(|e| panic!("{e:#}"));
    let t = |name: &str| {
        case.input(name).map(|(data, shape)| {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Tensor::from_slice(&data).reshape(shape)
        })
    };
    let inputs =
        Inputs { input_ids: t("input_ids").unwrap(), attention_mask: t("attention_mask").unwrap(), token_type_ids: t("token_type_ids") };
    let to_vec = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();

    let (expected, _) = case.tensor("last_hidden_state").unwrap();
    let hidden = tch::no_grad(|| model.encode(&inputs));
    let diff = common::max_abs_diff(&to_vec(&hidden), &expected);
    assert!(diff < 1e-5, "last_hidden_state differs by {diff:e}");

    let logits = tch::no_grad(|| model.forward(&inputs, false)).unwrap();
    let ours = logits.named();
    for (name, expected, shape) in case.outputs() {
        let (_, t) = ours.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no output {name}"));
        assert_eq!(t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(), shape, "{name}");
        let diff = common::max_abs_diff(&to_vec(t), &expected);
        assert!(diff < 1e-5, "{name} differs by {diff:e}");
    }
}

/// The exported ONNX models (tanh GELU built from primitive ops) against the same reference.
#[cfg(feature = "eval")]
#[test]
fn onnx_export_matches_reference_logits() {
    use ort::value::Tensor;
    use toolkit::export::{export, Dtype, ExportPlan, Int8Activations, Int8Cpu};
    use toolkit::runtime::{self, Device, SessionConfig};

    let case = legacy_case();
    // fp32 is tight enough to tell the GELUs apart: the erf GELU in the lang adapter would move
    // the logits by 1.5e-4.
    for (dtype, tolerance) in [(Dtype::Fp32, 1e-5), (Dtype::Fp16, 1e-2)] {
        let root = tempfile::tempdir().unwrap();
        let tokenizer_dir = root.path().join("tokenizer");
        std::fs::create_dir_all(&tokenizer_dir).unwrap();
        std::fs::write(tokenizer_dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n").unwrap();
        let files = case.files();
        let plan = ExportPlan {
            model_dir: files.model_dir,
            task_adapter: files.task_adapter,
            languages: vec![(Some("xx".into()), files.lang_adapter)],
            dtype,
            int8_lang_adapters: false,
            int8_cpu: Int8Cpu::Auto,
            int8_activations: Int8Activations::Token,
            max_seq_len: None,
            tokenizer_dir,
            out: root.path().join("export"),
        };
        let summary = export(&plan).unwrap_or_else(|e| panic!("{dtype:?}: {e:#}"));
        let model = plan.out.join(&summary.manifest.models[0].file);
        let config = SessionConfig { device: Device::Cpu, intra_threads: Some(1), ..SessionConfig::default() };
        let mut session = runtime::session_with(&model, &config).unwrap().session;
        let inputs: Vec<(String, Tensor<i64>)> = ["input_ids", "attention_mask", "token_type_ids"]
            .into_iter()
            .filter_map(|name| case.input(name).map(|(data, shape)| (name.to_string(), Tensor::from_array((shape, data)).unwrap())))
            .collect();
        let outputs = session.run(inputs).unwrap();
        let (_, expected, _) = &case.outputs()[0];
        let (_, got) = outputs["logits"].try_extract_tensor::<f32>().unwrap();
        let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        let diff = common::max_abs_diff(&got, expected);
        assert!(diff < tolerance, "{dtype:?}: logits differ by {diff:e}");
    }
}

// ---- errors ----------------------------------------------------------------------------------

/// A zip checkpoint `archive/data.pkl` holding `pickle`, as torch writes it (stored entries).
fn write_zip(path: &Path, pickle: &[u8]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    zip.finish().unwrap();
}

#[test]
fn truncated_checkpoints_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for bin in ["task/pytorch_adapter.bin", "model/pytorch_model.bin"] {
        let bytes = std::fs::read(legacy_case().dir.join(bin)).unwrap();
        let path = dir.path().join("pytorch_adapter.bin");
        // Every cut in the first 600 bytes, then every 97th.
        for len in (0..bytes.len()).filter(|&n| n < 600 || n % 97 == 0) {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = error_of(torch_pickle::read(&path, modern_name), &format!("{bin} cut at {len}"));
            assert!(err.contains(&path.display().to_string()), "{bin} cut at {len}: {err}");
        }
    }
    let path = dir.path().join("pytorch_adapter.bin");
    let bytes = std::fs::read(legacy_case().dir.join("task/pytorch_adapter.bin")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = error_of(torch_pickle::read(&path, |n| Some(n.to_string())), "half a zip");
    assert!(err.contains("not a readable zip archive"), "{err}");
}

#[test]
fn an_unknown_global_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_adapter.bin");
    // {'a': os.system('true')}
    write_zip(&path, b"\x80\x02}q\x00X\x01\x00\x00\x00acos\nsystem\nX\x04\x00\x00\x00true\x85Rs.");
    let err = error_of(torch_pickle::read(&path, |n| Some(n.to_string())), "os.system");
    assert!(err.contains("unsupported global `os.system`") && err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_value_that_is_no_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_adapter.bin");
    write_zip(&path, b"\x80\x02}q\x00(X\x05\x00\x00\x00epochK\x03u.");
    let err = error_of(torch_pickle::read(&path, |n| Some(n.to_string())), "{'epoch': 3}");
    assert!(err.contains("tensor `epoch`: the value is the int 3, not a tensor"), "{err}");
    write_zip(&path, b"\x80\x02]q\x00.");
    let err = error_of(torch_pickle::read(&path, |n| Some(n.to_string())), "[]");
    assert!(err.contains("expected a dict of tensors"), "{err}");
}

#[test]
fn a_kept_integer_tensor_and_duplicate_names_are_errors() {
    let path = legacy_case().dir.join("model/pytorch_model.bin");
    let err = error_of(torch_pickle::read(&path, |n| Some(n.to_string())), "position_ids kept");
    assert!(err.contains("tensor `bert.embeddings.position_ids`: dtype int64 is not a float type"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let path = legacy_case().dir.join("task/pytorch_adapter.bin");
    let err = error_of(torch_pickle::read(&path, |n| Some(n.rsplit_once('.').unwrap().1.to_string())), "one name for all");
    assert!(err.contains("both map to `"), "{err}");
}

#[test]
fn a_directory_without_weights_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task");
    std::fs::create_dir_all(&task).unwrap();
    let src = legacy_case().dir.join("task/adapter_config.json");
    std::fs::copy(src, task.join("adapter_config.json")).unwrap();
    let mut files = legacy_case().files();
    files.task_adapter = Some(task);
    let err = error_of(ComposedModel::load(&files), "no weights");
    assert!(err.contains("no adapter.safetensors (nor pytorch_adapter.bin)"), "{err}");
}
