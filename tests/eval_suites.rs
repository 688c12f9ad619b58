//! The suite files in `eval-suites/`: they parse, name the paper's languages, and find their
#![cfg(feature = "eval")]
//! data (the fixtures for XNLI and MLQA, the real files for XCOPA and XQuAD).

mod common;

use std::path::Path;

use toolkit::data::OnMalformed;
use toolkit::eval::suite::Records;
use toolkit::eval::{Metric, Suite, Task};

fn suite(name: &str) -> Suite {
    Suite::load(&format!("{}/eval-suites/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn langs(suite: &Suite) -> Vec<&str> {
    suite.languages.iter().map(String::as_str).collect()
}

#[test]
fn suites_name_the_papers_languages_tasks_and_metrics() {
    let xnli = suite("xnli");
    assert_eq!(
        langs(&xnli),
        ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
    );
    assert_eq!((xnli.task, xnli.metrics.as_slice()), (Task::Nli, &[Metric::Accuracy][..]));
    assert_eq!(xnli.labels.as_deref().unwrap(), ["entailment", "neutral", "contradiction"]);
    assert_eq!(xnli.features.max_length, 128);

    let xquad = suite("xquad");
    assert_eq!(langs(&xquad), ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]);
    assert_eq!((xquad.task, xquad.primary_metric), (Task::Qa, Metric::F1));
    assert_eq!((xquad.features.max_length, xquad.features.doc_stride), (384, Some(128)));

    let mlqa = suite("mlqa");
    assert_eq!(langs(&mlqa), ["en", "ar", "de", "es", "hi", "vi", "zh"]);

    let xcopa = suite("xcopa");
    assert_eq!(langs(&xcopa), ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh", "en"]);
    assert_eq!(xcopa.task, Task::Copa);
    assert_eq!(xcopa.targets().count(), 11);
}

#[test]
fn suites_are_found_by_name_from_the_project_root() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    assert_eq!(Suite::load("xcopa").unwrap().name, "xcopa");
    let err = Suite::load("nope").unwrap_err();
    assert!(err.to_string().contains("eval-suites/nope.toml"), "{err}");
}

#[test]
fn per_language_overrides() {
    let root = Path::new("/data");
    let xcopa = suite("xcopa");
    let en = xcopa.source(root, "en");
    assert_eq!((en.path, en.split.as_str()), (root.join("copa/val.jsonl"), "val"));
    assert_eq!(xcopa.source(root, "qu").path, root.join("xcopa/qu/test.qu.jsonl"));

    let xnli = suite("xnli");
    let sw = xnli.source(root, "sw");
    assert_eq!(sw.language_filter.as_deref(), Some("sw"));
    assert_eq!(sw.path, root.join("xnli/XNLI-1.0/xnli.test.tsv"));

    let mlqa = suite("mlqa");
    assert_eq!(mlqa.source(root, "hi").path, root.join("mlqa/MLQA_V1/test/test-context-hi-question-hi.json"));
}

#[test]
fn a_missing_language_file_is_an_error_naming_it() {
    let err = suite("mlqa").read(Path::new("/nonexistent"), "de", OnMalformed::Error).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent/mlqa/MLQA_V1/test/test-context-de-question-de.json"), "{msg}");
}

#[test]
fn a_suite_that_does_not_fit_its_task_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{}/eval-suites/mlqa.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("languages = [\"en\",", "languages = [\"fr\", \"en\",")).unwrap();
    let err = Suite::load(bad.to_str().unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("\"fr\""), "{err:#}");
    std::fs::write(&bad, text.replace("metrics = [\"f1\", \"exact_match\"]", "metrics = [\"accuracy\"]")).unwrap();
    assert!(Suite::load(bad.to_str().unwrap()).is_err());
    // The older spellings: a kebab-case task and a `format` that must agree with it.
    let old = text.replace("task = \"qa\"", "task = \"question-answering\"").replace("[data]\n", "[data]\nformat = \"squad\"\n");
    std::fs::write(&bad, &old).unwrap();
    assert_eq!(Suite::load(bad.to_str().unwrap()).unwrap().task, Task::Qa);
    std::fs::write(&bad, old.replace("format = \"squad\"", "format = \"copa\"")).unwrap();
    let err = Suite::load(bad.to_str().unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("data.format = \"copa\" does not fit a qa task"), "{err:#}");
}

#[test]
fn xnli_and_mlqa_suites_read_the_fixtures() {
    let xnli = suite("xnli");
    for lang in &xnli.languages {
        let Records::Nli(loaded) = xnli.read(&common::data_fixtures(), lang, OnMalformed::Error).unwrap() else { panic!() };
        assert_eq!(loaded.records.len(), 2, "{lang}");
    }
    let mlqa = suite("mlqa");
    for lang in &mlqa.languages {
        let Records::Qa(loaded) = mlqa.read(&common::data_fixtures(), lang, OnMalformed::Error).unwrap() else { panic!() };
        assert_eq!(loaded.records.len(), 2, "{lang}");
        mlqa.answer_normalization(lang).unwrap();
    }
}

#[test]
fn xcopa_and_xquad_suites_read_the_real_files() {
    let Some(data) = common::shared_data() else { return };
    let xcopa = suite("xcopa");
    for lang in &xcopa.languages {
        let records = xcopa.read(&data, lang, OnMalformed::Error).unwrap();
        assert!(matches!(records, Records::Copa(_)));
        assert_eq!(records.len(), if lang == "en" { 100 } else { 500 }, "{lang}");
    }
    let xquad = suite("xquad");
    for lang in &xquad.languages {
        assert_eq!(xquad.read(&data, lang, OnMalformed::Error).unwrap().len(), 1190, "{lang}");
    }
}
