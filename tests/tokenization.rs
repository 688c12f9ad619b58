//! Tokenization parity with Hugging Face's `BertTokenizerFast` on the real mBERT vocabulary:
//! ids, token types, sequence ids and character offsets, truncation included, and the QA
//! sliding windows with their answer labels. Skips when `../shared/data` is absent.

mod common;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokenizers::{TruncationParams, TruncationStrategy};
use toolkit::data::{Answer, QaExample};
use toolkit::features::{encode_pairs, qa_features, tokenizer, Truncation};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The mBERT vocabulary folder, or `None` (with a message) when it is absent.
fn mbert_dir() -> Option<PathBuf> {
    let dir = common::shared_data()?.join("vocab/bert-base-multilingual-cased");
    if dir.join("vocab.txt").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is absent (the real mBERT vocab.txt)", dir.display());
        None
    }
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    text: String,
    text_pair: Option<String>,
    max_length: Option<usize>,
    truncation: Option<String>,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    sequence_ids: Vec<Option<usize>>,
    offsets: Vec<(usize, usize)>,
}

#[test]
fn mbert_matches_bert_tokenizer_fast() {
    let Some(dir) = mbert_dir() else { return };
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/tokenization/mbert_cased.json")).unwrap(),
    )
    .unwrap();
    let tokenizer = tokenizer::load(&dir).unwrap();
    assert!(fixture.cases.len() >= 30);
    for case in &fixture.cases {
        let strategy = match case.truncation.as_deref() {
            None | Some("longest_first") => TruncationStrategy::LongestFirst,
            Some("only_second") => TruncationStrategy::OnlySecond,
            Some(other) => panic!("{}: unknown truncation {other}", case.id),
        };
        let encoding = match &case.text_pair {
            Some(pair) => {
                let truncation = Truncation { max_length: case.max_length.unwrap_or(512), strategy, stride: 0, windows: false };
                encode_pairs(&tokenizer, vec![(case.text.clone(), pair.clone())], truncation).unwrap().remove(0)
            }
            None => {
                let mut tokenizer = tokenizer.clone();
                let truncation =
                    case.max_length.map(|max_length| TruncationParams { max_length, ..Default::default() });
                tokenizer.with_truncation(truncation).unwrap();
                tokenizer.encode_char_offsets(case.text.as_str(), true).unwrap()
            }
        };
        assert_eq!(encoding.get_ids(), case.input_ids, "{}: ids", case.id);
        assert_eq!(encoding.get_type_ids(), case.token_type_ids, "{}: token types", case.id);
        assert_eq!(encoding.get_sequence_ids(), case.sequence_ids, "{}: sequence ids", case.id);
        assert_eq!(encoding.get_offsets(), case.offsets, "{}: offsets", case.id);
    }
}

#[derive(Deserialize)]
struct QaFixture {
    cases: Vec<QaCase>,
}

#[derive(Deserialize)]
struct QaCase {
    id: String,
    question: String,
    context: String,
    answer: QaAnswer,
    max_length: usize,
    doc_stride: usize,
    windows: Vec<Window>,
}

#[derive(Deserialize)]
struct QaAnswer {
    text: String,
    answer_start: usize,
}

#[derive(Deserialize)]
struct Window {
    input_ids: Vec<i64>,
    token_type_ids: Vec<i64>,
    context_offsets: Vec<Option<(usize, usize)>>,
    start_position: usize,
    end_position: usize,
}

#[test]
fn qa_windows_match_run_qa_preprocessing() {
    let Some(dir) = mbert_dir() else { return };
    let fixture: QaFixture = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/data/qa_windows_mbert.json")).unwrap(),
    )
    .unwrap();
    let tokenizer = tokenizer::load(&dir).unwrap();
    for case in &fixture.cases {
        let example = QaExample {
            id: case.id.clone(),
            title: String::new(),
            context: Arc::from(case.context.as_str()),
            question: case.question.clone(),
            answers: vec![Answer { text: case.answer.text.clone(), start: case.answer.answer_start }],
        };
        let features = qa_features(&tokenizer, &[example], case.max_length, case.doc_stride).unwrap();
        assert_eq!(features.len(), case.windows.len(), "{}: windows", case.id);
        assert!(case.windows.iter().any(|w| w.start_position != 0), "{}: some window holds the answer", case.id);
        for (i, (feature, window)) in features.iter().zip(&case.windows).enumerate() {
            assert_eq!(feature.example, 0);
            assert_eq!(feature.sequence.input_ids, window.input_ids, "{} window {i}: ids", case.id);
            assert_eq!(feature.sequence.token_type_ids, window.token_type_ids, "{} window {i}: types", case.id);
            assert_eq!(feature.context_offsets, window.context_offsets, "{} window {i}: offsets", case.id);
            assert_eq!(
                (feature.start_position, feature.end_position),
                (window.start_position, window.end_position),
                "{} window {i}: answer span",
                case.id
            );
        }
    }
}
