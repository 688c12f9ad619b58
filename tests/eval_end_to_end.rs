//! `toolkit eval` on tiny exported models (the parity fixtures, exported here): accuracy, F1
//! and exact match equal to values worked out from the fixtures' reference outputs (the
//! reference inputs written back as text, so the eval's tokenizer gives back the same ids),
//! QA answers mapped back to the context's own characters, results CSV with summary rows,
//! batching that does not change a prediction, and clear errors that leave nothing written.
#![cfg(feature = "eval")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Case;
use ort::value::Tensor;
use serde_json::json;
use toolkit::data::OnMalformed;
use toolkit::device::Device;
use toolkit::eval::{run, EvalArgs};
use toolkit::export::{export, Dtype, ExportPlan, Int8Activations, Int8Cpu};
use toolkit::report::results::{read_csv, ResultRow};
use toolkit::runtime::{self, SessionConfig, SharedWeights};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Words of the data fixtures, placed at the ids the tiny BERT models do not reserve.
const WORDS: &str = "the a an of in is was what where when who which how \
    university oxford england teaching 1096 rhein fluss alpen schweiz nordsee der die das ein den \
    man turned on faucet water flowed cat sofa animal there shop closed sunday owner tired \
    cause effect ? . , ! since been has research college city sleeping";

/// A word that is not in the vocabulary (the reference inputs' `[UNK]`).
const UNKNOWN_WORD: &str = "zebra";

/// The tiny BERT models' vocabulary of 120: `[PAD]` 0, `[UNK]` 100, `[CLS]` 101, `[SEP]` 102,
/// `[MASK]` 103 (as the reference inputs use them), `WORDS` from id 1, then `unusedN`.
fn vocab() -> Vec<String> {
    let mut words = WORDS.split_whitespace();
    (0..120)
        .map(|id| match id {
            0 => "[PAD]".to_string(),
            100 => "[UNK]".to_string(),
            101 => "[CLS]".to_string(),
            102 => "[SEP]".to_string(),
            103 => "[MASK]".to_string(),
            _ => words.next().map_or_else(|| format!("unused{id}"), str::to_string),
        })
        .collect()
}

/// The text whose tokens are `ids` (`[UNK]` as an unknown word).
fn text_of(ids: &[i64]) -> String {
    let vocab = vocab();
    ids.iter().map(|&id| if id == 100 { UNKNOWN_WORD.to_string() } else { vocab[id as usize].clone() }).collect::<Vec<_>>().join(" ")
}

/// The ids of space-separated vocabulary words.
fn ids_of(words: &str) -> Vec<i64> {
    let vocab = vocab();
    words.split_whitespace().map(|w| vocab.iter().position(|v| v == w).unwrap_or_else(|| panic!("{w} not in the vocabulary")) as i64).collect()
}

/// The rows of a reference case's input that hold a pair: (first segment, second segment)
/// without `[CLS]` and `[SEP]`, with the row's index.
fn reference_pairs(case: &Case) -> Vec<(usize, Vec<i64>, Vec<i64>)> {
    let (ids, shape) = case.input("input_ids").unwrap();
    let (types, _) = case.input("token_type_ids").unwrap();
    let (mask, _) = case.input("attention_mask").unwrap();
    let width = shape[1];
    let mut pairs = Vec::new();
    for row in 0..shape[0] {
        let range = row * width..(row + 1) * width;
        let real: Vec<(i64, i64)> = ids[range.clone()].iter().zip(&types[range.clone()]).zip(&mask[range]).filter(|(_, &m)| m == 1).map(|((&i, &t), _)| (i, t)).collect();
        let segment = |t: i64| -> Vec<i64> { real.iter().filter(|(i, ty)| *ty == t && *i != 101 && *i != 102).map(|(i, _)| *i).collect() };
        if real.iter().any(|(_, t)| *t == 1) {
            pairs.push((row, segment(0), segment(1)));
        }
    }
    pairs
}

/// The reference output `name` as rows.
fn reference_rows(case: &Case, name: &str) -> Vec<Vec<f64>> {
    let (_, data, shape) = case.outputs().into_iter().find(|(n, _, _)| n == name).unwrap();
    data.chunks(shape[shape.len() - 1]).map(<[f64]>::to_vec).collect()
}

/// Exports the parity fixture `case` for `languages` into `root/export`.
fn export_fixture(root: &Path, case: &str, languages: &[&str]) -> PathBuf {
    let lang = repo().join("tests/fixtures/parity").join(case).join("lang");
    export_fixture_with(root, case, languages.iter().map(|l| (*l, lang.clone())).collect())
}

/// Exports the parity fixture `case` into `root/export` with a language adapter per language.
fn export_fixture_with(root: &Path, case: &str, languages: Vec<(&str, PathBuf)>) -> PathBuf {
    let case_dir = repo().join("tests/fixtures/parity").join(case);
    let tokenizer = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).unwrap();
    std::fs::write(tokenizer.join("vocab.txt"), vocab().join("\n")).unwrap();
    std::fs::write(tokenizer.join("tokenizer_config.json"), r#"{"do_lower_case": true}"#).unwrap();
    let out = root.join("export");
    export(&ExportPlan {
        model_dir: case_dir.join("model"),
        task_adapter: Some(case_dir.join("task")),
        languages: languages.into_iter().map(|(l, adapter)| (Some(l.to_string()), Some(adapter))).collect(),
        dtype: Dtype::Fp32,
        int8_lang_adapters: false,
        int8_cpu: Int8Cpu::Auto,
        int8_activations: Int8Activations::Token,
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
        share_weights: false,
        on_malformed: OnMalformed::Error,
    }
}

fn value(rows: &[ResultRow], language: &str, metric: &str) -> f64 {
    rows.iter().find(|r| r.language == language && r.metric == metric).unwrap_or_else(|| panic!("no {language} {metric} in {rows:?}")).value
}

fn assert_close(got: f64, expected: f64, what: &str) {
    assert!((got - expected).abs() < 1e-9, "{what}: {got}, expected {expected}");
}

#[test]
fn qa_suite_writes_results_and_predictions_independent_of_batching() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let suite = write_suite(root.path(), common::TINY_MLQA_SUITE);
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

/// With a core to spare (1 ONNX Runtime thread), `de` is read, tokenised and opened while `en`
/// is scored; the results CSV rows and the predictions are those of each language scored alone,
/// where nothing runs beside it, and those of sessions sharing their weights (`--share-weights`).
#[test]
fn overlapped_languages_give_the_sequential_results() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let suite = write_suite(root.path(), common::TINY_MLQA_SUITE);
    let data = repo().join("tests/fixtures/data");

    let together = root.path().join("together/results.csv");
    run(&args(suite.clone(), models.clone(), data.clone(), together.clone())).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(together.with_extension("json")).unwrap()).unwrap();
    let spare_core = std::thread::available_parallelism().unwrap().get() > 1;
    assert_eq!(summary["languages"]["de"]["overlapped"], spare_core, "de was prepared beside en's scoring");
    assert_eq!(summary["languages"]["en"]["overlapped"], false, "the first language has nothing to overlap");

    let rows = read_csv(&together).unwrap();
    for lang in ["en", "de"] {
        let alone = root.path().join(format!("{lang}/results.csv"));
        run(&EvalArgs { lang: vec![lang.to_string()], ..args(suite.clone(), models.clone(), data.clone(), alone.clone()) })
            .unwrap();
        let ours: Vec<&ResultRow> = rows.iter().filter(|r| r.language == lang).collect();
        assert_eq!(ours.len(), 2, "{lang}: f1 and exact_match");
        let alone_rows = read_csv(&alone).unwrap();
        let theirs: Vec<&ResultRow> = alone_rows.iter().filter(|r| r.language == lang).collect();
        assert_eq!(ours, theirs, "{lang}: rows differ from scoring it alone");
        let predictions = |csv: &Path| std::fs::read(csv.with_extension("predictions").join(format!("{lang}.json"))).unwrap();
        assert_eq!(predictions(&together), predictions(&alone), "{lang}: predictions differ from scoring it alone");
    }

    // The languages' sessions sharing one copy of the weights change no result.
    let shared = root.path().join("shared/results.csv");
    run(&EvalArgs { share_weights: true, ..args(suite.clone(), models.clone(), data.clone(), shared.clone()) }).unwrap();
    assert_eq!(read_csv(&shared).unwrap(), rows);
    let cuda = root.path().join("cuda/results.csv");
    let err = run(&EvalArgs { share_weights: true, device: Device::Cuda, ..args(suite, models, data, cuda.clone()) }).unwrap_err();
    assert!(format!("{err:#}").contains("--share-weights"), "{err:#}");
    assert!(!cuda.exists());
}

/// The best answer span of a reference row, by brute force over every (start, end) of the
/// context tokens (`context` = positions of the second segment, `[SEP]` excluded): at most 11
/// tokens, so the 20-best lists of the real extraction cannot leave a span out.
fn best_reference_span(start: &[f64], end: &[f64], context: std::ops::Range<usize>) -> (usize, usize) {
    let mut best = (f64::NEG_INFINITY, 0, 0);
    for s in context.clone() {
        for e in s..context.end {
            if start[s] + end[e] > best.0 {
                best = (start[s] + end[e], s, e);
            }
        }
    }
    (best.1, best.2)
}

/// The reference QA rows as SQuAD questions, with gold answers chosen so that exact match
/// and F1 (the maximum over a question's gold answers) differ by language and from 0 and 100.
#[test]
fn qa_scores_and_answers_follow_the_reference_logits() {
    let case = Case::load(&repo().join("tests/fixtures/parity/bert_stack_qa_hf"));
    let pairs = reference_pairs(&case);
    assert_eq!(pairs.len(), 2);
    let (starts, ends) = (reference_rows(&case, "start_logits"), reference_rows(&case, "end_logits"));
    // Contexts keep their own spacing and case: the answer is cut from the context text.
    let mut contexts = Vec::new();
    let mut answers = Vec::new();
    for (row, question, context) in &pairs {
        let words: Vec<String> = text_of(context).split(' ').map(str::to_string).collect();
        let first = question.len() + 2; // [CLS] question [SEP]
        let (s, e) = best_reference_span(&starts[*row], &ends[*row], first..first + context.len());
        let styled: Vec<String> = words.iter().enumerate().map(|(i, w)| if i % 2 == 0 { w.to_uppercase() } else { w.clone() }).collect();
        let text = styled.join("  ");
        let answer = styled[s - first..=e - first].join("  ");
        assert!(text.contains(&answer));
        contexts.push(text);
        answers.push(answer);
    }
    // Worked out by hand from the reference logits: row 0 answers with its last two context
    // tokens, row 1 with its first alone (the scores below depend on it).
    assert_eq!(answers[0].split_whitespace().count(), 2);
    assert_eq!(answers[1].split_whitespace().count(), 1);
    let context_words: Vec<Vec<String>> = contexts.iter().map(|c| c.split_whitespace().map(str::to_string).collect()).collect();
    assert_eq!(answers[0], context_words[0][2..].join("  "));
    assert_eq!(answers[1], context_words[1][0]);

    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gold = |q: usize, text: String| json!({"text": text, "answer_start": contexts[q].find(&text).unwrap()});
    // en: q0 exact (EM 1, F1 1); q1 gold = answer + the next word (EM 0, F1 2/3).
    // de: q0 golds "unused107" (F1 0) and "den  UNUSED119" (MLQA's German normalisation drops
    // the article "den": F1 2/3, where SQuAD's would give 1/2); q1 gold = the next word (0).
    let (w0, w1) = (&context_words[0], &context_words[1]);
    assert_eq!(w0[1], "den", "the vocabulary puts an article at reference id 28");
    let golds: [(&str, [Vec<serde_json::Value>; 2]); 2] = [
        ("en", [vec![gold(0, answers[0].clone())], vec![gold(1, format!("{}  {}", w1[0], w1[1]))]]),
        ("de", [vec![gold(0, w0[0].clone()), gold(0, format!("{}  {}", w0[1], w0[2]))], vec![gold(1, w1[1].clone())]]),
    ];
    for (lang, golds) in &golds {
        let qas: Vec<serde_json::Value> = (0..2)
            .map(|q| json!({"paragraphs": [{"context": contexts[q], "qas": [{"id": format!("q{q}"), "question": text_of(&pairs[q].1), "answers": golds[q]}]}], "title": format!("t{q}")}))
            .collect();
        std::fs::write(data.join(format!("{lang}.json")), json!({"data": qas, "version": "1.1"}).to_string()).unwrap();
    }
    let suite = write_suite(root.path(), &common::TINY_MLQA_SUITE.replace("mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json", "{lang}.json"));
    let out = root.path().join("qa/results.csv");
    run(&args(suite, models, data, out.clone())).unwrap();

    for lang in ["en", "de"] {
        let predictions: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(out.with_extension("predictions").join(format!("{lang}.json"))).unwrap()).unwrap();
        assert_eq!(predictions, BTreeMap::from([("q0".to_string(), answers[0].clone()), ("q1".to_string(), answers[1].clone())]), "{lang}");
    }
    let rows = read_csv(&out).unwrap();
    assert_close(value(&rows, "en", "exact_match"), 50.0, "en EM");
    assert_close(value(&rows, "en", "f1"), 100.0 * (1.0 + 2.0 / 3.0) / 2.0, "en F1");
    assert_close(value(&rows, "de", "exact_match"), 0.0, "de EM");
    assert_close(value(&rows, "de", "f1"), 100.0 * (2.0 / 3.0) / 2.0, "de F1");
    assert_close(value(&rows, "avg", "f1"), 100.0 / 3.0, "avg F1 (de only)");
}

/// Accuracy on NLI pairs whose predictions are known: the reference inputs written back as
/// text (expected: the reference logits' argmax) and pairs of vocabulary words (expected: the
/// exported model run here on token ids built by hand), for two models.
#[test]
fn classification_accuracy_follows_the_reference_logits() {
    // Pairs 0 and 1 are reference rows 0 and 1; then word pairs.
    let word_pairs = [("the man turned on the faucet", "water flowed"), ("cat sleeping", "the shop closed"), ("owner", "tired tired"), ("sunday", "the city of rhein")];
    // Gold labels per language, as (pair, label) items.
    let items: [(&str, &[(usize, &str)]); 3] = [
        ("en", &[(0, "entailment"), (1, "entailment"), (0, "neutral"), (2, "neutral"), (3, "contradiction")]),
        ("de", &[(1, "entailment"), (0, "neutral"), (1, "neutral"), (4, "neutral"), (5, "contradiction"), (2, "entailment")]),
        ("fr", &[(0, "neutral"), (1, "entailment"), (0, "entailment"), (1, "contradiction"), (5, "neutral"), (3, "entailment")]),
    ];
    let labels = ["entailment", "neutral", "contradiction"];
    let argmax = |row: &[f64]| row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
    let (mut reference_classes, mut distinct_classes) = (Vec::new(), Vec::new());
    for case_name in ["bert_stack_cls_hf", "bert_stack_cls_custom"] {
        let case = Case::load(&repo().join("tests/fixtures/parity").join(case_name));
        let root = tempfile::tempdir().unwrap();
        let models = export_fixture(root.path(), case_name, &["en", "de", "fr"]);
        let mut pairs: Vec<(String, String, &str)> = Vec::new();
        let logits = reference_rows(&case, "logits");
        for (row, premise, hypothesis) in reference_pairs(&case) {
            pairs.push((text_of(&premise), text_of(&hypothesis), labels[argmax(&logits[row])]));
        }
        reference_classes.push(pairs.iter().map(|p| p.2).collect::<Vec<_>>());
        let rows: Vec<(Vec<i64>, Vec<i64>)> = word_pairs.iter().map(|(a, b)| pair_row(a, b)).collect();
        let word_logits = model_logits(&models.join("en.onnx"), &rows, false);
        for ((a, b), row) in word_pairs.iter().zip(word_logits.chunks(3)) {
            let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            pairs.push((a.to_string(), b.to_string(), labels[argmax(&row)]));
        }
        distinct_classes.push(pairs.iter().map(|p| p.2).collect::<std::collections::BTreeSet<_>>().len());

        let mut lines = String::new();
        for (lang, items) in &items {
            for (i, (pair, label)) in items.iter().enumerate() {
                let (premise, hypothesis, _) = &pairs[*pair];
                let record = json!({"language": lang, "gold_label": label, "sentence1": premise, "sentence2": hypothesis, "pairID": format!("{lang}{i}")});
                lines.push_str(&format!("{record}\n"));
            }
        }
        std::fs::write(root.path().join("xnli.test.jsonl"), lines).unwrap();
        let suite = write_suite(
            root.path(),
            r#"
name = "tiny-xnli"
description = "the reference inputs as XNLI pairs"
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
path = "xnli.test.jsonl"
select_language = true
"#,
        );
        let out = root.path().join("xnli.csv");
        run(&args(suite, models, root.path().to_path_buf(), out.clone())).unwrap();
        let rows = read_csv(&out).unwrap();
        assert_eq!(rows.len(), 3 + 2);
        let mut targets = Vec::new();
        for (lang, items) in &items {
            let right = items.iter().filter(|(pair, label)| pairs[*pair].2 == *label).count();
            let expected = 100.0 * right as f64 / items.len() as f64;
            assert_close(value(&rows, lang, "accuracy"), expected, &format!("{case_name} {lang}"));
            if *lang != "en" {
                targets.push(expected);
            }
        }
        assert_close(value(&rows, "avg", "accuracy"), targets.iter().sum::<f64>() / 2.0, &format!("{case_name} avg"));
        // Each pair's predicted label, under its pairID.
        for (lang, items) in &items {
            let file = out.with_extension("predictions").join(format!("{lang}.json"));
            let predictions: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let expected: BTreeMap<String, String> =
                items.iter().enumerate().map(|(i, (pair, _))| (format!("{lang}{i}"), pairs[*pair].2.to_string())).collect();
            assert_eq!(predictions, expected, "{case_name} {lang}");
        }
    }
    // The two models' reference rows get different classes, so one fixed answer cannot pass
    // both; and the first model's pairs get several, so predictions given to the wrong items
    // would show.
    assert_ne!(reference_classes[0], reference_classes[1]);
    assert!(distinct_classes[0] >= 2, "{distinct_classes:?}");
}

/// The exported model's logits for `rows` of (input ids, token types), right-padded into one
/// batch of shape `[rows]` (classification) or `[1, rows]` (the choices of one item).
fn model_logits(model: &Path, rows: &[(Vec<i64>, Vec<i64>)], choices: bool) -> Vec<f32> {
    model_logits_with(model, rows, choices, None)
}

/// `model_logits` of a session given `shared` weights.
fn model_logits_with(model: &Path, rows: &[(Vec<i64>, Vec<i64>)], choices: bool, shared: Option<&SharedWeights>) -> Vec<f32> {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap();
    assert!(width <= 16, "the tiny model has 16 positions");
    let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (row_ids, row_types) in rows {
        let pad = width - row_ids.len();
        ids.extend(row_ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
        types.extend(row_types.iter().copied().chain(std::iter::repeat_n(0, pad)));
        mask.extend(std::iter::repeat_n(1, row_ids.len()).chain(std::iter::repeat_n(0, pad)));
    }
    let config = SessionConfig {
        device: toolkit::runtime::Device::Cpu,
        intra_threads: Some(1),
        shared: shared.cloned(),
        ..SessionConfig::default()
    };
    let mut session = runtime::session_with(model, &config).unwrap().session;
    let shape = if choices { vec![1, rows.len(), width] } else { vec![rows.len(), width] };
    let inputs: Vec<(String, Tensor<i64>)> = [("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)]
        .into_iter()
        .map(|(name, data)| (name.to_string(), Tensor::from_array((shape.clone(), data)).unwrap()))
        .collect();
    let outputs = session.run(inputs).unwrap();
    outputs["logits"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

/// Every language's session of an eval takes the export's projection weights from the first
/// language's model (one copy, packed once): each language still computes with its own language
/// adapter, to the bit what a session reading its own file computes, and the eval's results are
/// those without sharing.
#[test]
fn languages_share_projection_weights_and_keep_their_adapters() {
    let case_name = "bert_stack_cls_hf";
    let case_dir = repo().join("tests/fixtures/parity").join(case_name);
    let root = tempfile::tempdir().unwrap();
    // de's language adapter: en's with every weight scaled, so the two models differ.
    let de_adapter = root.path().join("lang-de");
    std::fs::create_dir_all(&de_adapter).unwrap();
    std::fs::copy(case_dir.join("lang/adapter_config.json"), de_adapter.join("adapter_config.json")).unwrap();
    let bytes = std::fs::read(case_dir.join("lang/adapter.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let scaled: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view.data().chunks_exact(4).flat_map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 1.5).to_le_bytes()).collect();
            (name, data, view.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = scaled
        .iter()
        .map(|(name, data, shape)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(de_adapter.join("adapter.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let models = export_fixture_with(root.path(), case_name, vec![("en", case_dir.join("lang")), ("de", de_adapter)]);

    let shared = SharedWeights::load(&models.join("en.onnx")).unwrap();
    let names: Vec<&str> = shared.initializers.iter().map(|(n, _)| n.as_str()).collect();
    // Per layer q, k, v, attention output, intermediate, output and the task adapter's two
    // projections, then the pooler and the classifier; no language adapter weight.
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case_dir.join("model/config.json")).unwrap()).unwrap();
    let per_layer = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "output.adapters.task.adapter_down.0",
        "output.adapters.task.adapter_up",
    ];
    let expected: Vec<String> = (0..config["num_hidden_layers"].as_u64().unwrap())
        .flat_map(|l| per_layer.iter().map(move |p| format!("encoder.layer.{l}.{p}.weight.T")))
        .chain(["pooler.dense.weight.T".to_string(), "classifier.weight.T".to_string()])
        .collect();
    assert_eq!(names, expected);

    let rows = vec![pair_row("the cat", "a sofa"), pair_row("owner", "the shop closed")];
    let en = model_logits(&models.join("en.onnx"), &rows, false);
    let de = model_logits(&models.join("de.onnx"), &rows, false);
    assert_ne!(en, de, "the two language adapters give different logits");
    assert_eq!(model_logits_with(&models.join("en.onnx"), &rows, false, Some(&shared)), en);
    assert_eq!(model_logits_with(&models.join("de.onnx"), &rows, false, Some(&shared)), de, "de computed with its own adapter");
}

/// `[CLS] first [SEP] second [SEP]` with token types 0 then 1, from vocabulary words.
fn pair_row(first: &str, second: &str) -> (Vec<i64>, Vec<i64>) {
    let (a, b) = (ids_of(&format!("[CLS] {first} [SEP]")), ids_of(&format!("{second} [SEP]")));
    let types = [vec![0; a.len()], vec![1; b.len()]].concat();
    ([a, b].concat(), types)
}

/// The exported model's logits for one COPA item, built by hand: `[CLS] premise what was the
/// cause|effect ? [SEP] choice [SEP]` per choice.
fn choice_logits(model: &Path, premise: &str, question: &str, choices: [&str; 2]) -> Vec<f32> {
    let rows: Vec<(Vec<i64>, Vec<i64>)> =
        choices.iter().map(|c| pair_row(&format!("{premise} what was the {question} ?"), c)).collect();
    model_logits(model, &rows, true)
}

/// COPA items through the eval against the same items run through the exported model by hand
/// (token ids built here): exact accuracy, choice order and question word included.
#[test]
fn multiple_choice_accuracy_follows_the_model_on_hand_built_inputs() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_mc_hf", &["en", "xx"]);
    // (premise, question, choice1, choice2); the third is the first with its choices swapped,
    // the fourth the second with the other question.
    let items = [
        ("the shop closed", "effect", "the owner was tired", "water flowed"),
        ("the man turned on the faucet", "cause", "water flowed", "cat sleeping"),
        ("the shop closed", "effect", "water flowed", "the owner was tired"),
        ("the man turned on the faucet", "effect", "water flowed", "cat sleeping"),
    ];
    let expected: Vec<usize> = items
        .iter()
        .map(|(premise, question, c1, c2)| {
            let logits = choice_logits(&models.join("en.onnx"), premise, question, [c1, c2]);
            assert_ne!(logits[0], logits[1]);
            usize::from(logits[1] > logits[0])
        })
        .collect();
    assert_ne!(expected[0], expected[2], "swapping the choices swaps the prediction");

    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // en: the fourth label is wrong (75); xx: the first three are (25).
    let wrong: [(&str, &[usize]); 2] = [("en", &[3]), ("xx", &[0, 1, 2])];
    for (lang, wrong) in wrong {
        let lines: String = items
            .iter()
            .enumerate()
            .map(|(i, (premise, question, c1, c2))| {
                let label = if wrong.contains(&i) { 1 - expected[i] } else { expected[i] };
                format!("{}\n", json!({"premise": premise, "choice1": c1, "choice2": c2, "question": question, "label": label, "idx": i}))
            })
            .collect();
        std::fs::write(data.join(format!("{lang}.jsonl")), lines).unwrap();
    }
    let suite = write_suite(
        root.path(),
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
    let out = root.path().join("xcopa.csv");
    run(&args(suite.clone(), models.clone(), data.clone(), out.clone())).unwrap();
    let rows = read_csv(&out).unwrap();
    assert_close(value(&rows, "en", "accuracy"), 75.0, "en");
    assert_close(value(&rows, "xx", "accuracy"), 25.0, "xx");
    // Each item's chosen choice, under its idx.
    for lang in ["en", "xx"] {
        let file = out.with_extension("predictions").join(format!("{lang}.json"));
        let predictions: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let chosen: BTreeMap<String, String> = expected.iter().enumerate().map(|(i, c)| (i.to_string(), c.to_string())).collect();
        assert_eq!(predictions, chosen, "{lang}");
    }

    // Two items with one idx: their predictions could not be told apart.
    let first = std::fs::read_to_string(data.join("xx.jsonl")).unwrap().lines().next().unwrap().to_string();
    std::fs::write(data.join("xx.jsonl"), format!("{first}\n{first}\n")).unwrap();
    let again = root.path().join("again.csv");
    let err = format!("{:#}", run(&args(suite, models, data, again.clone())).unwrap_err());
    assert!(err.contains("two items have the id `0`"), "{err}");
    assert!(!again.exists());
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let models = export_fixture(root.path(), "bert_stack_qa_hf", &["en", "de"]);
    let out = root.path().join("out/results.csv");
    let fixtures = repo().join("tests/fixtures/data");

    // A language file that is not there.
    let suite = write_suite(root.path(), &common::TINY_MLQA_SUITE.replace("test-context-{lang}", "missing-{lang}"));
    let err = format!("{:#}", run(&args(suite, models.clone(), fixtures.clone(), out.clone())).unwrap_err());
    assert!(err.contains("missing-de-question-de.json") && err.contains("data files missing"), "{err}");

    // An export that has no model for a language of the suite.
    let suite = write_suite(root.path(), &common::TINY_MLQA_SUITE.replace(r#"["en", "de"]"#, r#"["en", "de", "ar"]"#));
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
    let suite = write_suite(root.path(), common::TINY_MLQA_SUITE);
    let err = format!("{:#}", run(&args(suite, models, data, out.clone())).unwrap_err());
    assert!(err.contains("test-context-de-question-de.json:1") && err.contains("answer_start 53"), "{err}");
    assert!(!out.parent().unwrap().exists() || std::fs::read_dir(out.parent().unwrap()).unwrap().next().is_none());
}
