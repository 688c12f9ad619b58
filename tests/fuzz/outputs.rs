//! Files one toolkit command writes and another reads back, which a user may also edit or
//! receive from elsewhere: `export.json`, the language-adapter map of `toolkit export`, and
//! results CSVs.
use proptest::prelude::*;
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
    }

    #[test]
    fn export_manifests_damaged() {
        let seed: Value = serde_json::from_str(MANIFEST).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        kit::write(&path, MANIFEST.as_bytes());
        ExportManifest::load(dir.path()).expect("the seed is valid");
        let damage = prop_oneof![1 => kit::edits().prop_map(Damage::Bytes), 2 => kit::json_edits().prop_map(Damage::Json)];
        kit::run("export_manifests_damaged", 1000, damage, |damage| {
            let bytes = match &damage {
                Damage::Bytes(edits) => kit::apply(MANIFEST.as_bytes(), edits),
                Damage::Json(edits) => kit::apply_json(&seed, edits).into_bytes(),
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
    /// map's folder.
    #[test]
    fn lang_adapter_maps() {
        let dir = tempfile::tempdir().unwrap();
        for lang in ["th", "sw"] {
            std::fs::create_dir_all(dir.path().join("adapters").join(lang)).unwrap();
            kit::write(&dir.path().join("adapters").join(lang).join("adapter_config.json"), b"{}");
        }
        let seed = "th = \"adapters/th\"\nsw = \"adapters/sw\"\n";
        let path = dir.path().join("lang-adapters.toml");
        let generated = proptest::collection::btree_map(
            kit::text(),
            prop_oneof![
                proptest::sample::select(&["adapters/th", "adapters/sw", "./adapters/th", "adapters/../adapters/th", "../x", "/tmp", ""][..])
                    .prop_map(toml::Value::from),
                kit::toml_value(),
            ],
            0..4,
        )
        .prop_map(|m| toml::to_string(&m.into_iter().collect::<toml::Table>()).unwrap().into_bytes());
        let file = prop_oneof![kit::edits().prop_map(|e| kit::apply(seed.as_bytes(), &e)), generated];
        kit::run("lang_adapter_maps", 800, file, |bytes| {
            kit::write(&path, &bytes);
            match LangAdapters::load(&path) {
                Ok(map) => {
                    for adapter in map.adapters.values() {
                        assert!(adapter.starts_with(dir.path()), "{} leaves {}", adapter.display(), dir.path().display());
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
