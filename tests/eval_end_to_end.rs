//! `toolkit eval` on tiny exported models (the parity fixtures, exported here) and the data
//! fixtures: results CSV with summary rows, QA predictions, batching that does not change a
//! prediction, and clear errors that leave nothing written.
#![cfg(feature = "eval")]
use std::path::{Path, PathBuf};

use toolkit::data::OnMalformed;
use toolkit::device::Device;
use toolkit::eval::{run, EvalArgs};
use toolkit::export::{export, Dtype, ExportPlan};
use toolkit::report::results::read_csv;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Words of the fixtures; the tiny models have a vocabulary of 120.
const VOCAB: &str = "[PAD] [UNK] [CLS] [SEP] [MASK] the a an of in is was what where when who which how \
    university oxford england teaching 1096 rhein fluss alpen schweiz nordsee der die das ein in den \
    man turned on faucet water flowed cat sofa animal there shop closed sunday owner tired \
    cause effect ? . , ! since been has research college city sleeping";

/// Exports the parity fixture `case` for `languages` into `root/export`.
fn export_fixture(root: &Path, case: &str, languages: &[&str]) -> PathBuf {
    let case_dir = repo().join("tests/fixtures/parity").join(case);
    let tokenizer = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).unwrap();
    std::fs::write(tokenizer.join("vocab.txt"), VOCAB.split_whitespace().collect::<Vec<_>>().join("\n")).unwrap();
    std::fs::write(tokenizer.join("tokenizer_config.json"), r#"{"do_lower_case": true}"#).unwrap();
    let out = root.join("export");
    export(&ExportPlan {
        model_dir: case_dir.join("model"),
        task_adapter: Some(case_dir.join("task")),
        languages: languages.iter().map(|l| (Some(l.to_string()), Some(case_dir.join("lang")))).collect(),
        dtype: Dtype::Fp32,
        int8_lang_adapters: false,
        max_seq_len: None,
        tokenizer_dir: tokenizer,
        out: out.clone(),
    })
    .unwrap();
    out
}

/// A suite file for the tiny models (16 positions) over `path` under the fixtures.
fn write_suite(root: &Path, body: &str) -> String {
    let path = root.join("suite.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

fn args(suite: String, models: PathBuf, data_dir: PathBuf, out: PathBuf) -> EvalArgs {
    EvalArgs {
        suite,
        models,
        data_dir,
        lang: Vec::new(),
        device: Device::Cpu,
        out: Some(out),
        run_name: Some("tiny".into()),
        method: "fun".into(),
        seed: Some(3),
        base_model: None,
        batch_tokens: 4096,
        threads: Some(1),
        on_malformed: OnMalformed::Error,
    }
}

const QA_SUITE: &str = r#"
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

#[test]
fn qa_suite_writes_results_and_predictions_independent_of_batching() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let suite = write_suite(root.path(), QA_SUITE);
    let data = repo().join("tests/fixtures/data");

    let big = root.path().join("big/results.csv");
    run(&args(suite.clone(), models.clone(), data.clone(), big.clone())).unwrap();
    // One window per batch: no padding at all.
    let small = root.path().join("small/results.csv");
    run(&EvalArgs { batch_tokens: 16, ..args(suite, models, data, small.clone()) }).unwrap();

    for lang in ["en", "de"] {
        let read = |csv: &Path| -> serde_json::Value {
            serde_json::from_str(
                &std::fs::read_to_string(csv.with_extension("predictions").join(format!("{lang}.json"))).unwrap(),
            )
            .unwrap()
        };
        let (a, b) = (read(&big), read(&small));
        assert_eq!(a.as_object().unwrap().len(), 2, "{lang}: one answer per question");
        assert_eq!(a, b, "{lang}: padding changed a prediction");
    }
    let rows = read_csv(&big).unwrap();
    let keys: Vec<(String, String)> = rows.iter().map(|r| (r.language.clone(), r.metric.clone())).collect();
    for key in [("en", "f1"), ("en", "exact_match"), ("de", "f1"), ("avg", "f1"), ("lowest", "exact_match")] {
        assert!(keys.contains(&(key.0.into(), key.1.into())), "{key:?} in {keys:?}");
    }
    let de_f1 = rows.iter().find(|r| r.language == "de" && r.metric == "f1").unwrap();
    let avg_f1 = rows.iter().find(|r| r.language == "avg" && r.metric == "f1").unwrap();
    assert_eq!(avg_f1.value, de_f1.value, "the average leaves out the source language");
    let lowest = rows.iter().find(|r| r.language == "lowest" && r.metric == "f1").unwrap();
    assert_eq!(lowest.lowest_language.as_deref(), Some("de"));
    assert!(rows.iter().all(|r| r.run == "tiny" && r.method == "fun" && r.seed == Some(3) && r.base_model == "model"));
    assert_eq!(rows, read_csv(&small).unwrap());

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(big.with_extension("json")).unwrap()).unwrap();
    let en = &summary["languages"]["en"]["throughput"];
    assert_eq!(en["examples"], 2);
    assert!(en["sequences"].as_u64().unwrap() > 2, "contexts longer than 16 tokens are split into windows");
    assert_eq!(summary["languages"]["de"]["provider"], "CPUExecutionProvider");
}

#[test]
fn classification_suite_maps_generic_labels_and_multiple_choice_runs() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_cls_hf", &["en", "de", "fr"]);
    let suite = write_suite(
        root.path(),
        r#"
name = "tiny-xnli"
description = "XNLI fixtures"
task = "classification"
source_language = "en"
languages = ["en", "de", "fr"]
split = "test"
metrics = ["accuracy"]
primary_metric = "accuracy"
labels = ["entailment", "neutral", "contradiction"]
[features]
max_length = 16
[data]
format = "nli"
path = "xnli/XNLI-1.0/xnli.test.tsv"
select_language = true
"#,
    );
    let out = root.path().join("xnli.csv");
    run(&args(suite, models, repo().join("tests/fixtures/data"), out.clone())).unwrap();
    let rows = read_csv(&out).unwrap();
    assert_eq!(rows.len(), 3 + 2);
    assert!(rows.iter().all(|r| [0.0, 50.0, 100.0].contains(&r.value)), "2 pairs per language: {rows:?}");
    assert!(!out.with_extension("predictions").exists());

    let mc = tempfile::tempdir().unwrap();
    let models = export_fixture(mc.path(), "bert_stack_mc_hf", &["en", "xx"]);
    let data = mc.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let item = |label: u8| {
        format!(
            r#"{{"premise": "The man turned on the faucet.", "choice1": "Water flowed.", "choice2": "The cat was tired.", "question": "effect", "label": {label}, "idx": 0}}"#
        )
    };
    for lang in ["en", "xx"] {
        std::fs::write(data.join(format!("{lang}.jsonl")), format!("{}\n{}\n{}\n", item(0), item(1), item(0))).unwrap();
    }
    let suite = write_suite(
        mc.path(),
        r#"
name = "tiny-xcopa"
description = "COPA-format items"
task = "multiple-choice"
source_language = "en"
languages = ["xx", "en"]
split = "test"
metrics = ["accuracy"]
primary_metric = "accuracy"
[features]
max_length = 16
[data]
format = "copa"
path = "{lang}.jsonl"
"#,
    );
    let out = mc.path().join("xcopa.csv");
    run(&args(suite, models, data, out.clone())).unwrap();
    let rows = read_csv(&out).unwrap();
    let xx = rows.iter().find(|r| r.language == "xx").unwrap();
    // The same item with both labels: exactly one of the pair is right, the third repeats the first.
    assert!([100.0 / 3.0, 200.0 / 3.0].iter().any(|v| (xx.value - v).abs() < 1e-9), "{}", xx.value);
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let out = root.path().join("out/results.csv");
    let fixtures = repo().join("tests/fixtures/data");

    // A language file that is not there.
    let suite = write_suite(root.path(), &QA_SUITE.replace("test-context-{lang}", "missing-{lang}"));
    let err = format!("{:#}", run(&args(suite, models.clone(), fixtures.clone(), out.clone())).unwrap_err());
    assert!(err.contains("missing-de-question-de.json") && err.contains("data files missing"), "{err}");

    // An export that has no model for a language of the suite.
    let suite = write_suite(root.path(), &QA_SUITE.replace(r#"["en", "de"]"#, r#"["en", "de", "ar"]"#));
    let err = format!("{:#}", run(&args(suite, models.clone(), fixtures.clone(), out.clone())).unwrap_err());
    assert!(err.contains("no model for ar"), "{err}");

    // A QA export on a classification suite.
    let err = format!(
        "{:#}",
        run(&args(
            repo().join("eval-suites/xnli.toml").to_str().unwrap().into(),
            models.clone(),
            fixtures.clone(),
            out.clone()
        ))
        .unwrap_err()
    );
    assert!(err.contains("does not fit suite xnli") && err.contains("QuestionAnswering"), "{err}");

    // A malformed record: named by file and line; the earlier language's results are not written.
    let data = root.path().join("data");
    let dir = data.join("mlqa/MLQA_V1/test");
    std::fs::create_dir_all(&dir).unwrap();
    for lang in ["en", "de"] {
        let name = format!("test-context-{lang}-question-{lang}.json");
        let mut text = std::fs::read_to_string(fixtures.join("mlqa/MLQA_V1/test").join(&name)).unwrap();
        if lang == "de" {
            text = text.replace("\"answer_start\": 55", "\"answer_start\": 53");
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
    let suite = write_suite(root.path(), QA_SUITE);
    let err = format!("{:#}", run(&args(suite, models, data, out.clone())).unwrap_err());
    assert!(err.contains("test-context-de-question-de.json:1") && err.contains("answer_start 53"), "{err}");
    assert!(!out.parent().unwrap().exists() || std::fs::read_dir(out.parent().unwrap()).unwrap().next().is_none());
}
