//! Checkpoint files: safetensors headers, PyTorch pickles (zip and legacy containers), and the
//! JSON configs of a model directory and its adapters (`config.json`, `adapter_config.json`,
//! `head_config.json`), damaged and generated.
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use toolkit::model::{torch_pickle, ComposedModel, ModelFiles, Weights};

use super::kit::{self, Edit, JsonEdit};
use crate::common;

/// Indexes `path` and reads every tensor's values, as a model load does.
fn read_all(result: anyhow::Result<Weights>, path: &Path) {
    let weights = match result {
        Ok(w) => w,
        Err(err) => return kit::assert_names(&err, path),
    };
    for name in weights.names() {
        if let Err(err) = weights.entry(name).unwrap().tensor() {
            kit::assert_names(&err, path);
        }
    }
}

/// A safetensors file with one tensor of each float type, built by hand so that its header can
/// be damaged before the length prefix is written.
fn safetensors_header() -> (Value, Vec<u8>) {
    let header = json!({
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "h": {"dtype": "F16", "shape": [3], "data_offsets": [24, 30]},
        "b": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [30, 32]},
        "d": {"dtype": "F64", "shape": [2], "data_offsets": [32, 48]},
    });
    let data: Vec<u8> = (0..48u8).collect();
    (header, data)
}

fn safetensors_bytes(header: &str, length: Option<u64>, data: &[u8]) -> Vec<u8> {
    let mut bytes = length.unwrap_or(header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[derive(Debug, Clone)]
enum SafetensorsDamage {
    Bytes(Vec<Edit>),
    Header(Vec<JsonEdit>, Option<u64>),
    Length(u64),
}

#[test]
fn safetensors_damaged() {
    let (header, data) = safetensors_header();
    let text = header.to_string();
    let seed = safetensors_bytes(&text, None, &data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    kit::write(&path, &seed);
    assert_eq!(Weights::read_safetensors(&path, |n| Some(n.to_string())).unwrap().names().count(), 4, "the seed is valid");
    let edges = [0, 1, 7, 8, text.len() as u64 - 1, text.len() as u64 + 1, 1 << 40, u64::MAX, u64::MAX - 7, 100_000_000];
    let length = prop_oneof![proptest::sample::select(edges.to_vec()), any::<u64>()];
    let damage = prop_oneof![
        kit::edits().prop_map(SafetensorsDamage::Bytes),
        (kit::json_edits(), proptest::option::of(length.clone())).prop_map(|(e, l)| SafetensorsDamage::Header(e, l)),
        length.prop_map(SafetensorsDamage::Length),
    ];
    kit::run("safetensors_damaged", 1000, damage, |damage| {
        let bytes = match &damage {
            SafetensorsDamage::Bytes(edits) => kit::apply(&seed, edits),
            SafetensorsDamage::Header(edits, length) => safetensors_bytes(&kit::apply_json(&header, edits), *length, &data),
            SafetensorsDamage::Length(length) => safetensors_bytes(&text, Some(*length), &data),
        };
        kit::write(&path, &bytes);
        read_all(Weights::read_safetensors(&path, |n| Some(n.to_string())), &path);
        Ok(())
    });
}

/// A header entry of any shape and offsets, numbers at the edges of u64.
fn tensor_entry() -> impl Strategy<Value = Value> {
    let number = prop_oneof![0u64..64, Just(u64::MAX), Just(u64::MAX / 2), Just(1 << 32), any::<u64>()];
    let dtype = proptest::sample::select(&["F32", "F16", "BF16", "F64", "I64", "U8", "f32", ""][..]);
    (dtype, proptest::collection::vec(number.clone(), 0..4), number.clone(), number)
        .prop_map(|(dtype, shape, begin, end)| json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}))
}

#[test]
fn safetensors_generated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let header = proptest::collection::btree_map(kit::text(), tensor_entry(), 0..4);
    kit::run("safetensors_generated", 1000, (header, 0usize..200), |(header, data_len)| {
        let header: serde_json::Map<String, Value> = header.into_iter().collect();
        kit::write(&path, &safetensors_bytes(&Value::Object(header).to_string(), None, &vec![0x3c; data_len]));
        read_all(Weights::read_safetensors(&path, |n| Some(n.to_string())), &path);
        Ok(())
    });
}

/// The entries of a zip archive, in order.
fn unzip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().to_string(), bytes)
        })
        .collect()
}

fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// One pickle opcode with operands: the ones a state dict uses, the ones it may not, and
/// lengths that claim more than there is.
fn opcode() -> impl Strategy<Value = Vec<u8>> {
    let single = proptest::sample::select(&b"(}])Nt\x85\x86\x87ldsuae\x94QR\x81b.\x93\x88\x89"[..]).prop_map(|op| vec![op]);
    let with_u8 = (proptest::sample::select(&b"Kqh\x80"[..]), any::<u8>()).prop_map(|(op, a)| vec![op, a]);
    let with_u32 = (proptest::sample::select(&b"rjJMX\x8bB"[..]), prop_oneof![0u32..8, any::<u32>()])
        .prop_map(|(op, n)| [vec![op], n.to_le_bytes().to_vec()].concat());
    let short = (proptest::sample::select(&b"\x8c\x8aC"[..]), kit::text())
        .prop_map(|(op, s)| [vec![op, s.len().min(255) as u8], s.into_bytes()].concat());
    let wide = prop_oneof![Just(u64::MAX), Just(1u64 << 40), 0u64..4].prop_map(|n| [vec![0x8d], n.to_le_bytes().to_vec()].concat());
    let globals = proptest::sample::select(
        &[
            "collections\nOrderedDict\n",
            "torch._utils\n_rebuild_tensor_v2\n",
            "torch._utils\n_rebuild_parameter\n",
            "torch\nFloatStorage\n",
            "torch\nLongStorage\n",
            "os\nsystem\n",
            "builtins\neval\n",
            "torch\n",
        ][..],
    )
    .prop_map(|g| [b"c".to_vec(), g.as_bytes().to_vec()].concat());
    let float = any::<f64>().prop_map(|f| [vec![b'G'], f.to_be_bytes().to_vec()].concat());
    prop_oneof![4 => single, 2 => with_u8, 1 => with_u32, 1 => short, 1 => wide, 1 => globals, 1 => float]
}

#[derive(Debug, Clone)]
enum PickleDamage {
    Bytes(Vec<Edit>),
    /// Opcodes spliced in at a place.
    Opcodes(Index, Vec<Vec<u8>>),
    /// A pickle of nothing but generated opcodes.
    Fresh(Vec<Vec<u8>>),
    /// A storage entry cut short.
    Storage(Index, Index),
    /// The raw zip archive damaged.
    Archive(Vec<Edit>),
}

/// A real `torch.save` zip archive (the task adapter of the legacy fixture), its `data.pkl`
/// damaged, and the archive written again with valid checksums, so the damage reaches the
/// unpickler rather than the zip reader's CRC check.
#[test]
fn pickle_zip_damaged() {
    let fixture = common::repo().join("tests/fixtures/legacy/bert_stack_cls_hf_bin/task/pytorch_adapter.bin");
    let seed = std::fs::read(&fixture).unwrap();
    let entries = unzip(&fixture);
    let pickle = entries.iter().position(|(n, _)| n.ends_with("/data.pkl")).unwrap();
    let storages: Vec<usize> = entries.iter().enumerate().filter(|(_, (n, _))| n.contains("/data/")).map(|(i, _)| i).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_adapter.bin");
    let damage = prop_oneof![
        2 => kit::edits().prop_map(PickleDamage::Bytes),
        2 => (any::<Index>(), proptest::collection::vec(opcode(), 1..12)).prop_map(|(i, ops)| PickleDamage::Opcodes(i, ops)),
        1 => proptest::collection::vec(opcode(), 1..24).prop_map(PickleDamage::Fresh),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(s, n)| PickleDamage::Storage(s, n)),
        1 => kit::edits().prop_map(PickleDamage::Archive),
    ];
    kit::run("pickle_zip_damaged", 1000, damage, |damage| {
        let mut entries = entries.clone();
        let bytes = match &damage {
            PickleDamage::Bytes(edits) => {
                entries[pickle].1 = kit::apply(&entries[pickle].1, edits);
                zip(&entries)
            }
            PickleDamage::Opcodes(at, ops) => {
                let p = &mut entries[pickle].1;
                let i = at.index(p.len() + 1);
                p.splice(i..i, ops.concat());
                zip(&entries)
            }
            PickleDamage::Fresh(ops) => {
                entries[pickle].1 = [b"\x80\x02".to_vec(), ops.concat(), b".".to_vec()].concat();
                zip(&entries)
            }
            PickleDamage::Storage(which, len) => {
                let s = &mut entries[storages[which.index(storages.len())]].1;
                s.truncate(len.index(s.len() + 1));
                zip(&entries)
            }
            PickleDamage::Archive(edits) => kit::apply(&seed, edits),
        };
        kit::write(&path, &bytes);
        read_all(torch_pickle::read(&path, |n| Some(n.to_string())), &path);
        Ok(())
    });
}

/// The legacy `torch.save` stream (PyTorch < 1.6) of the fixture's model, damaged anywhere:
/// it has no checksum, so every byte reaches the reader.
#[test]
fn pickle_legacy_damaged() {
    let seed = std::fs::read(common::repo().join("tests/fixtures/legacy/bert_stack_cls_hf_bin/model/pytorch_model.bin")).unwrap();
    // The stream's five pickles come first; damage there reaches the unpickler more often.
    let pickles_end = seed.len().min(8192);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    let damage = prop_oneof![
        kit::edits().prop_map(PickleDamage::Bytes),
        (any::<Index>(), proptest::collection::vec(opcode(), 1..12)).prop_map(|(i, ops)| PickleDamage::Opcodes(i, ops)),
    ];
    kit::run("pickle_legacy_damaged", 600, damage, |damage| {
        let bytes = match &damage {
            PickleDamage::Opcodes(at, ops) => {
                let mut b = seed.clone();
                let i = at.index(pickles_end);
                b.splice(i..i, ops.concat());
                b
            }
            PickleDamage::Bytes(edits) => {
                let mut head = kit::apply(&seed[..pickles_end], edits);
                head.extend_from_slice(&seed[pickles_end..]);
                head
            }
            _ => unreachable!("not generated here"),
        };
        kit::write(&path, &bytes);
        read_all(torch_pickle::read(&path, |n| Some(n.to_string())), &path);
        Ok(())
    });
}

/// Copies of the flex-head case and the static-head case (whose model is the flex case's),
/// in the fixtures' relative layout.
fn model_cases(root: &Path) -> (PathBuf, PathBuf) {
    for case in ["bert_stack_cls_flex", "bert_stack_cls_static"] {
        copy_dir(&common::repo().join("tests/fixtures/parity").join(case), &root.join(case));
    }
    (root.join("bert_stack_cls_flex"), root.join("bert_stack_cls_static"))
}

pub(crate) fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let target = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "case.json" && entry.file_name() != "train_ref.safetensors" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[derive(Debug, Clone)]
enum ConfigDamage {
    Bytes(Vec<Edit>),
    Json(Vec<JsonEdit>),
}

/// `config.json`, the language and task adapters' `adapter_config.json` and both kinds of
/// `head_config.json`, damaged one at a time and loaded as a model; the error names a file of
/// the model.
#[test]
fn model_configs_damaged() {
    let root = tempfile::tempdir().unwrap();
    let (flex, static_) = model_cases(root.path());
    let targets: Vec<PathBuf> = vec![
        flex.join("model/config.json"),
        flex.join("lang/adapter_config.json"),
        flex.join("task/adapter_config.json"),
        flex.join("task/head_config.json"),
        static_.join("task/head_config.json"),
    ];
    let seeds: Vec<Value> = targets.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect();
    let files = |target: &Path| ModelFiles {
        model_dir: flex.join("model"),
        lang_adapter: Some(flex.join("lang")),
        task_adapter: Some(if target.starts_with(&static_) { static_.join("task") } else { flex.join("task") }),
    };
    for target in &targets {
        ComposedModel::load(&files(target)).unwrap_or_else(|e| panic!("the seed {} does not load: {e:#}", target.display()));
    }
    let damage = prop_oneof![1 => kit::edits().prop_map(ConfigDamage::Bytes), 2 => kit::json_edits().prop_map(ConfigDamage::Json)];
    kit::run("model_configs_damaged", 600, (0..targets.len(), damage), |(t, damage)| {
        let bytes = match &damage {
            ConfigDamage::Bytes(edits) => kit::apply(serde_json::to_string_pretty(&seeds[t]).unwrap().as_bytes(), edits),
            ConfigDamage::Json(edits) => kit::apply_json(&seeds[t], edits).into_bytes(),
        };
        // Every file as it was, but the one damaged now (a failed case leaves its damage).
        for (target, seed) in targets.iter().zip(&seeds) {
            kit::write(target, serde_json::to_string_pretty(seed).unwrap().as_bytes());
        }
        kit::write(&targets[t], &bytes);
        let result = ComposedModel::load(&files(&targets[t]));
        if let Err(err) = result {
            kit::assert_names(&err, root.path());
            let msg = format!("{err:#}");
            if msg.contains("not valid JSON") {
                kit::assert_names_position(&err, &targets[t]);
            }
        }
        Ok(())
    });
}

const HEAD_KEYS: &[&str] = &[
    "head_type", "layers", "num_labels", "num_choices", "activation_function", "bias", "use_pooler", "dropout_prob", "label2id",
];
const ADAPTER_KEYS: &[&str] = &[
    "reduction_factor", "non_linearity", "original_ln_before", "original_ln_after", "residual_before_ln",
    "adapter_residual_before_ln", "scaling", "dropout", "leave_out", "inv_adapter", "inv_adapter_reduction_factor",
    "invertible_adapter", "inv_adapter_non_linearity", "mh_adapter", "stochastic_depth", "output_adapter", "architecture",
];

/// `config` objects of head and adapter configs made of their real keys with values of any
/// type (numbers at the edges of u64 included: a head of 2^64 layers must be an error, not a
/// loop).
#[test]
fn adapter_and_head_configs_generated() {
    let root = tempfile::tempdir().unwrap();
    let (flex, _) = model_cases(root.path());
    let files = ModelFiles { model_dir: flex.join("model"), lang_adapter: Some(flex.join("lang")), task_adapter: Some(flex.join("task")) };
    let head_path = flex.join("task/head_config.json");
    let adapter_path = flex.join("task/adapter_config.json");
    let head_seed: Value = serde_json::from_str(&std::fs::read_to_string(&head_path).unwrap()).unwrap();
    let adapter_seed: Value = serde_json::from_str(&std::fs::read_to_string(&adapter_path).unwrap()).unwrap();
    let value = prop_oneof![
        kit::json_value(),
        prop_oneof![Just(u64::MAX), Just(1u64 << 40), 0u64..5].prop_map(Value::from),
        proptest::sample::select(&["classification", "multiple_choice", "question_answering", "tanh", "nice", "relu"][..]).prop_map(Value::from),
    ];
    let object = |keys: &'static [&'static str]| {
        proptest::collection::btree_map(proptest::sample::select(keys).prop_map(str::to_string), value.clone(), 0..keys.len())
    };
    let strategy = (any::<bool>(), object(HEAD_KEYS), object(ADAPTER_KEYS));
    kit::run("adapter_and_head_configs_generated", 500, strategy, |(head, head_config, adapter_config)| {
        kit::write(&head_path, head_seed.to_string().as_bytes());
        kit::write(&adapter_path, adapter_seed.to_string().as_bytes());
        let (path, seed, config) = if head { (&head_path, &head_seed, head_config) } else { (&adapter_path, &adapter_seed, adapter_config) };
        let mut v = seed.clone();
        v["config"] = Value::Object(config.into_iter().collect());
        kit::write(path, v.to_string().as_bytes());
        let result = ComposedModel::load(&files);
        if let Err(err) = result {
            kit::assert_names(&err, root.path());
        }
        Ok(())
    });
}
