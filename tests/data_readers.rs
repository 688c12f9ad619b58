//! The readers on fixtures in the real formats, on the real COPA/XCOPA/XQuAD files when
//! `../shared/data` is present, and on malformed input.

mod common;

use std::path::PathBuf;

use toolkit::data::nli::{self, NliLabel};
use toolkit::data::{copa, squad, CopaQuestion, OnMalformed};

fn write_temp(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn multinli_jsonl_skips_pairs_without_gold_label_and_counts_them() {
    let path = common::data_fixtures().join("multinli/multinli_1.0/multinli_1.0_dev_matched.jsonl");
    let loaded = nli::read(&path, None, OnMalformed::Error).unwrap();
    assert_eq!(loaded.records.len(), 4);
    assert_eq!(loaded.skipped.total(), 1);
    let shown = loaded.skipped.to_string();
    assert!(shown.contains("annotators disagreed") && shown.contains("multinli_1.0_dev_matched.jsonl:4"), "{shown}");
    let first = &loaded.records[0];
    assert_eq!(first.id, "10001e");
    assert_eq!(first.premise, "The harbour was full of small fishing boats.");
    assert_eq!(first.hypothesis, "There were boats in the harbour.");
    assert_eq!(first.label, NliLabel::Entailment);
    assert_eq!(loaded.records[1].label, NliLabel::Contradiction);
    assert_eq!(loaded.records[2].label, NliLabel::Neutral);
}

#[test]
fn huggingface_style_jsonl_maps_class_ids_and_skips_unlabelled() {
    let loaded = nli::read(&common::data_fixtures().join("multinli/hf_train.jsonl"), None, OnMalformed::Error).unwrap();
    let labels: Vec<_> = loaded.records.iter().map(|r| r.label).collect();
    assert_eq!(labels, [NliLabel::Entailment, NliLabel::Contradiction, NliLabel::Neutral]);
    assert_eq!(loaded.records[0].premise, "A dog runs across the park.");
    assert_eq!(loaded.records[0].id, "line 1");
    assert_eq!(loaded.skipped.total(), 1);
}

#[test]
fn xnli_tsv_selects_a_language_and_keeps_bare_quotes() {
    let path = common::data_fixtures().join("xnli/XNLI-1.0/xnli.test.tsv");
    let de = nli::read(&path, Some("de"), OnMalformed::Error).unwrap();
    assert_eq!(de.records.len(), 2);
    assert_eq!(de.records[1].premise, "Er sagte \"vielleicht\" und ging.");
    assert_eq!(de.records[1].label, NliLabel::Contradiction);
    assert_eq!(de.records[0].id, "1001e");
    let all = nli::read(&path, None, OnMalformed::Error).unwrap();
    assert_eq!(all.records.len(), 30);
    let err = nli::read(&path, Some("xx"), OnMalformed::Error).unwrap_err();
    assert!(format!("{err:#}").contains("no records for language xx"), "{err:#}");
}

#[test]
fn xnli_jsonl_matches_the_tsv() {
    let dir = common::data_fixtures().join("xnli/XNLI-1.0");
    for lang in ["ar", "zh", "en"] {
        let tsv = nli::read(&dir.join("xnli.test.tsv"), Some(lang), OnMalformed::Error).unwrap();
        let jsonl = nli::read(&dir.join("xnli.test.jsonl"), Some(lang), OnMalformed::Error).unwrap();
        assert_eq!(tsv.records, jsonl.records, "{lang}");
    }
}

#[test]
fn a_source_language_file_keeps_its_language_where_records_name_one() {
    // XNLI as a validation file: only the English pairs (the paper's model selection).
    let dir = common::data_fixtures().join("xnli/XNLI-1.0");
    for file in ["xnli.test.tsv", "xnli.test.jsonl"] {
        let en = nli::read_source(&dir.join(file), "en", OnMalformed::Error).unwrap();
        assert_eq!(en.records, nli::read(&dir.join(file), Some("en"), OnMalformed::Error).unwrap().records, "{file}");
        assert!(en.records.len() < 30, "{file}");
    }
    // MultiNLI names no languages: every pair is English.
    let path = common::data_fixtures().join("multinli/multinli_1.0/multinli_1.0_dev_matched.jsonl");
    assert_eq!(nli::read_source(&path, "en", OnMalformed::Error).unwrap().records.len(), 4);
    // An explicit language on such a file is an error, not a silent read of everything.
    let err = nli::read(&path, Some("en"), OnMalformed::Error).unwrap_err();
    assert!(format!("{err:#}").contains("no `language` field"), "{err:#}");
}

#[test]
fn malformed_jsonl_line_is_an_error_naming_file_and_line() {
    let good = r#"{"premise": "a", "hypothesis": "b", "label": 0}"#;
    let text = format!("{good}\n{good}\n{{\"premise\": \"a\", \"label\": 0}}\n");
    let (_dir, path) = write_temp("broken.jsonl", &text);
    let err = nli::read(&path, None, OnMalformed::Error).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("broken.jsonl:3") && msg.contains("missing field"), "{msg}");

    let loaded = nli::read(&path, None, OnMalformed::Skip).unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.skipped.reasons.get("malformed record"), Some(&1));
    assert!(loaded.skipped.to_string().contains("broken.jsonl:3"));
}

#[test]
fn unknown_nli_label_and_short_tsv_row_are_errors() {
    let (_dir, path) =
        write_temp("labels.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"gold_label\": \"maybe\"}\n");
    let msg = format!("{:#}", nli::read(&path, None, OnMalformed::Error).unwrap_err());
    assert!(msg.contains("labels.jsonl:1") && msg.contains("maybe"), "{msg}");

    let tsv = "language\tgold_label\tsentence1\tsentence2\nen\tneutral\ta\tb\nen\tneutral\ta\n";
    let (_dir, path) = write_temp("short.tsv", tsv);
    let msg = format!("{:#}", nli::read(&path, None, OnMalformed::Error).unwrap_err());
    assert!(msg.contains("short.tsv:3") && msg.contains("3 fields"), "{msg}");
}

#[test]
fn mlqa_files_read_as_squad_format() {
    let dir = common::data_fixtures().join("mlqa/MLQA_V1/test");
    for lang in ["en", "ar", "de", "es", "hi", "vi", "zh"] {
        let path = dir.join(format!("test-context-{lang}-question-{lang}.json"));
        let loaded = squad::read(&path, OnMalformed::Error).unwrap();
        assert_eq!(loaded.records.len(), 2, "{lang}");
        assert!(loaded.skipped.is_empty());
        for example in &loaded.records {
            assert_eq!(example.id.len(), 40);
            let answer = &example.answers[0];
            let found: String = example.context.chars().skip(answer.start).take(answer.text.chars().count()).collect();
            assert_eq!(found, answer.text);
        }
    }
    let zh = squad::read(&dir.join("test-context-zh-question-zh.json"), OnMalformed::Error).unwrap();
    assert_eq!(zh.records[1].answers[0].text, "三千多年");
    assert_eq!(zh.records[1].answers[0].start, 27, "answer_start counts characters, not bytes");
}

#[test]
fn squad_answer_not_at_its_start_is_an_error_naming_the_question() {
    let text = r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.",
      "qas": [
        {"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "q2", "question": "What?", "answers": [{"text": "Paris", "answer_start": 3}]},
        {"id": "q3", "question": "None?", "answers": []}
      ]}]}]}"#;
    let (_dir, path) = write_temp("bad.json", text);
    let msg = format!("{:#}", squad::read(&path, OnMalformed::Error).unwrap_err());
    assert!(msg.contains("bad.json:4") && msg.contains("q2") && msg.contains("answer_start 3"), "{msg}");
    let loaded = squad::read(&path, OnMalformed::Skip).unwrap();
    assert_eq!(loaded.records.len(), 1);
    assert_eq!(loaded.skipped.total(), 2);

    let (_dir, path) = write_temp("syntax.json", "{\"data\": [{\"paragraphs\": [{\"qas\": []}]}]}");
    let msg = format!("{:#}", squad::read(&path, OnMalformed::Error).unwrap_err());
    assert!(msg.contains("syntax.json") && msg.contains("context") && msg.contains("line 1"), "{msg}");
}

#[test]
fn copa_bad_label_is_an_error_and_unlabelled_is_counted() {
    let line = |label: &str| {
        format!(r#"{{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", {label}"idx": 0}}"#)
    };
    let text = format!("{}\n{}\n{}\n", line("\"label\": 1, "), line(""), line("\"label\": 2, "));
    let (_dir, path) = write_temp("copa.jsonl", &text);
    let msg = format!("{:#}", copa::read(&path, OnMalformed::Error).unwrap_err());
    assert!(msg.contains("copa.jsonl:3") && msg.contains("label 2"), "{msg}");
    let loaded = copa::read(&path, OnMalformed::Skip).unwrap();
    assert_eq!(loaded.records.len(), 1);
    assert_eq!(loaded.skipped.reasons.get("no label"), Some(&1));
    assert_eq!(loaded.skipped.reasons.get("malformed record"), Some(&1));
}

#[test]
fn real_copa_and_xcopa_files() {
    let Some(data) = common::shared_data() else { return };
    let train = copa::read(&data.join("copa/train.jsonl"), OnMalformed::Error).unwrap();
    let val = copa::read(&data.join("copa/val.jsonl"), OnMalformed::Error).unwrap();
    assert_eq!((train.records.len(), val.records.len()), (400, 100));
    assert_eq!(val.records[0].premise, "The man turned on the faucet.");
    assert_eq!(val.records[0].question, CopaQuestion::Effect);
    for lang in ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"] {
        let test = copa::read(&data.join(format!("xcopa/{lang}/test.{lang}.jsonl")), OnMalformed::Error).unwrap();
        let val = copa::read(&data.join(format!("xcopa/{lang}/val.{lang}.jsonl")), OnMalformed::Error).unwrap();
        assert_eq!((test.records.len(), val.records.len()), (500, 100), "{lang}");
        assert!(test.skipped.is_empty() && val.skipped.is_empty());
    }
}

#[test]
fn real_xquad_files() {
    let Some(data) = common::shared_data() else { return };
    for lang in ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"] {
        let loaded = squad::read(&data.join(format!("xquad/xquad.{lang}.json")), OnMalformed::Error).unwrap();
        assert_eq!(loaded.records.len(), 1190, "{lang}");
        assert!(loaded.skipped.is_empty());
    }
}
