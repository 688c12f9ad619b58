//! Files one toolkit command writes and another reads back, which a user may also edit or
//! receive from elsewhere: `export.json`, the language-adapter map of `toolkit export`, and
//! results CSVs.
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use toolkit::report::results::{read_csv, to_csv, ResultRow};

use super::kit::{self, Edit, JsonEdit};

#[cfg(feature = "eval")]
mod export {
    use super::*;
    use toolkit::export::lang_adapters::LangAdapters;
    use toolkit::export::ExportManifest;

    pub const MANIFEST: &str = r#"{
  "format_version": 1, "toolkit_version": "0.1.0", "arch": "bert", "head_type": "classification",
  "labels": ["entailment", "neutral", "contradiction"], "inputs": ["input_ids", "attention_mask", "token_type_ids"],
  "outputs": ["logits"], "dtype": "fp32", "int8_lang_adapters": false, "max_seq_len": 128,
  "tokenizer": "tokenizer.json", "shared_data": "shared.bin", "base_model": "models/mbert", "task_adapter": "runs/x/best",
  "models": [
    {"language": "th", "file": "th.onnx", "lang_adapter": "adapters/th", "adapters": ["th", "nli"]},
    {"language": null, "file": "model.onnx", "lang_adapter": null, "adapters": ["nli"]}
  ]
}"#;

    #[derive(Debug, Clone)]
    enum Damage {
        Bytes(Vec<Edit>),
        Json(Vec<JsonEdit>),
        /// One of the files the evaluator opens set to another path.
        File(Index, String),
    }

    /// Paths that stay in a folder and paths that leave it.
    fn file_path() -> impl Strategy<Value = String> {
        const NAMES: &[&str] = &["x.onnx", "./x.onnx", "../x.onnx", "/etc/passwd", "a/b.onnx", "a/../x.onnx", "..", ".", "", "th.onnx/"];
        prop_oneof![proptest::sample::select(NAMES).prop_map(str::to_string), kit::text()]
    }

    #[test]
    fn export_manifests_damaged() {
        let seed: Value = serde_json::from_str(MANIFEST).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        kit::write(&path, MANIFEST.as_bytes());
        ExportManifest::load(dir.path()).expect("the seed is valid");
        let damage = prop_oneof![
            1 => kit::edits().prop_map(Damage::Bytes),
            2 => kit::json_edits().prop_map(Damage::Json),
            1 => (any::<Index>(), file_path()).prop_map(|(i, p)| Damage::File(i, p)),
        ];
        kit::run("export_manifests_damaged", 1000, damage, |damage| {
            let bytes = match &damage {
                Damage::Bytes(edits) => kit::apply(MANIFEST.as_bytes(), edits),
                Damage::Json(edits) => kit::apply_json(&seed, edits).into_bytes(),
                Damage::File(which, file) => {
                    let mut v = seed.clone();
                    match which.index(4) {
                        0 => v["tokenizer"] = file.as_str().into(),
                        1 => v["shared_data"] = file.as_str().into(),
                        i => v["models"][i - 2]["file"] = file.as_str().into(),
                    }
                    v.to_string().into_bytes()
                }
            };
            kit::write(&path, &bytes);
            match ExportManifest::load(dir.path()) {
                Ok(manifest) => {
                    // What the evaluator opens stays inside the export folder.
                    for file in manifest.models.iter().map(|m| &m.file).chain([&manifest.tokenizer, &manifest.shared_data]) {
                        let joined = dir.path().join(file);
                        assert!(joined.parent() == Some(dir.path()), "{file:?} leaves the export folder");
                    }
                }
                Err(err) => {
                    kit::assert_names(&err, &path);
                    if format!("{err:#}").contains("not a valid export manifest") {
                        kit::assert_names_position(&err, &path);
                    }
                }
            }
            Ok(())
        });
    }

    /// `th = "path"` maps, damaged as text and generated; every adapter it yields lies in the
    /// map's folder, though there is one outside it too.
    #[test]
    fn lang_adapter_maps() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("maps");
        for adapter in [dir.join("adapters/th"), dir.join("adapters/sw"), root.path().join("elsewhere/th")] {
            std::fs::create_dir_all(&adapter).unwrap();
            kit::write(&adapter.join("adapter_config.json"), b"{}");
        }
        let seed = "th = \"adapters/th\"\nsw = \"adapters/sw\"\n";
        let path = dir.join("lang-adapters.toml");
        let outside = root.path().join("elsewhere/th").display().to_string();
        let paths = vec![
            "adapters/th".to_string(),
            "./adapters/sw".into(),
            "adapters/../adapters/th".into(),
            "../elsewhere/th".into(),
            "adapters/../../elsewhere/th".into(),
            outside,
            String::new(),
        ];
        let generated = proptest::collection::btree_map(
            kit::text(),
            prop_oneof![proptest::sample::select(paths).prop_map(toml::Value::from), kit::toml_value()],
            0..4,
        )
        .prop_map(|m| toml::to_string(&m.into_iter().collect::<toml::Table>()).unwrap().into_bytes());
        let file = prop_oneof![kit::edits().prop_map(|e| kit::apply(seed.as_bytes(), &e)), generated];
        kit::run("lang_adapter_maps", 800, file, |bytes| {
            kit::write(&path, &bytes);
            match LangAdapters::load(&path) {
                Ok(map) => {
                    let inside = dir.canonicalize().unwrap();
                    for adapter in map.adapters.values() {
                        let real = adapter.canonicalize().unwrap();
                        assert!(real.starts_with(&inside), "{} leaves {}", adapter.display(), dir.display());
                    }
                }
                Err(err) => kit::assert_names(&err, &path),
            }
            Ok(())
        });
    }
}

fn row() -> impl Strategy<Value = ResultRow> {
    let name = prop_oneof![kit::text(), proptest::sample::select(&["avg", "lowest", "en", "th", "accuracy"][..]).prop_map(str::to_string)];
    (
        (name.clone(), name.clone(), name.clone(), proptest::option::of(any::<u64>())),
        (name.clone(), name.clone(), name.clone()),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        proptest::option::of(name),
    )
        .prop_map(|((run, base_model, method, seed), (suite, language, metric), value, lowest_language)| ResultRow {
            run,
            base_model,
            method,
            seed,
            suite,
            language,
            metric,
            value,
            lowest_language,
        })
}

/// Results CSVs: written ones read back as they were; damaged ones are errors naming the file
/// and line.
#[test]
fn results_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.csv");
    let strategy = (proptest::collection::vec(row(), 1..5), proptest::option::of(kit::edits()));
    kit::run("results_csv", 800, strategy, |(rows, edits)| {
        let written = to_csv(&rows).unwrap();
        match &edits {
            None => {
                kit::write(&path, &written);
                let read = read_csv(&path).unwrap_or_else(|e| panic!("a written CSV does not read back: {e:#}"));
                // An empty string and a missing value are one thing in a CSV cell.
                let expected: Vec<ResultRow> = rows
                    .iter()
                    .map(|r| ResultRow { lowest_language: r.lowest_language.clone().filter(|l| !l.is_empty()), ..r.clone() })
                    .collect();
                prop_assert_eq!(read, expected);
            }
            Some(edits) => {
                kit::write(&path, &kit::apply(&written, edits));
                if let Err(err) = read_csv(&path) {
                    kit::assert_names_line(&err, &path, &["no results rows"]);
                }
            }
        }
        Ok(())
    });
}
