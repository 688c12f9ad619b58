//! The benchmark readers (MultiNLI/XNLI, SQuAD-format QA, COPA) and the MLM text reader on
//! damaged fixtures and generated records.
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use toolkit::data::{copa, nli, squad, text, OnMalformed, Skipped};

use super::kit::{self, Edit, JsonEdit};
use crate::common;

/// How a seed file is damaged: its bytes, the JSON of one of its lines, or the JSON of the
/// whole file.
#[derive(Debug, Clone)]
enum Damage {
    Bytes(Vec<Edit>),
    Line(Index, Vec<JsonEdit>),
    Json(Vec<JsonEdit>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        kit::edits().prop_map(Damage::Bytes),
        (any::<Index>(), kit::json_edits()).prop_map(|(i, e)| Damage::Line(i, e)),
    ]
}

fn apply(seed: &[u8], damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Bytes(edits) => kit::apply(seed, edits),
        Damage::Json(edits) => {
            let value: Value = serde_json::from_slice(seed).expect("a JSON seed");
            kit::apply_json(&value, edits).into_bytes()
        }
        Damage::Line(at, edits) => {
            let text = String::from_utf8_lossy(seed);
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.is_empty() {
                return seed.to_vec();
            }
            let i = at.index(lines.len());
            if let Ok(value) = serde_json::from_str::<Value>(&lines[i]) {
                lines[i] = kit::apply_json(&value, edits);
            }
            (lines.join("\n") + "\n").into_bytes()
        }
    }
}

fn policy() -> impl Strategy<Value = OnMalformed> {
    prop_oneof![Just(OnMalformed::Error), Just(OnMalformed::Skip)]
}

/// Every record left out is shown with the file it came from.
fn assert_skips_name(skipped: &Skipped, path: &Path) {
    for location in skipped.first.values() {
        assert!(location.contains(&path.display().to_string()), "skipped record without its file: {location}");
    }
}

fn read_nli(path: &Path, filter: u8, policy: OnMalformed) {
    let result = match filter {
        0 => nli::read(path, None, policy),
        1 => nli::read(path, Some("de"), policy),
        _ => nli::read_source(path, "en", policy),
    };
    match result {
        Ok(loaded) => assert_skips_name(&loaded.skipped, path),
        Err(err) => kit::assert_names_line(&err, path, &["no records", "empty file"]),
    }
}

#[test]
fn nli_jsonl_damaged() {
    let root = common::data_fixtures();
    let seeds: Vec<Vec<u8>> = ["multinli/multinli_1.0/multinli_1.0_dev_matched.jsonl", "multinli/hf_train.jsonl", "xnli/XNLI-1.0/xnli.test.jsonl"]
        .iter()
        .map(|p| std::fs::read(root.join(p)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let strategy = (0..seeds.len(), damage(), 0u8..3, policy());
    kit::run("nli_jsonl_damaged", 600, strategy, |(seed, damage, filter, policy)| {
        kit::write(&path, &apply(&seeds[seed], &damage));
        read_nli(&path, filter, policy);
        Ok(())
    });
}

/// A TSV line with one field replaced, removed or doubled.
#[derive(Debug, Clone)]
enum TsvDamage {
    Bytes(Vec<Edit>),
    Field(Index, Index, Option<String>),
    Drop(Index, Index),
    Double(Index, Index),
}

#[test]
fn xnli_tsv_damaged() {
    let seed = std::fs::read_to_string(common::data_fixtures().join("xnli/XNLI-1.0/xnli.test.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xnli.test.tsv");
    let damage = prop_oneof![
        kit::edits().prop_map(TsvDamage::Bytes),
        (any::<Index>(), any::<Index>(), proptest::option::of(kit::text())).prop_map(|(l, f, t)| TsvDamage::Field(l, f, t)),
        (any::<Index>(), any::<Index>()).prop_map(|(l, f)| TsvDamage::Drop(l, f)),
        (any::<Index>(), any::<Index>()).prop_map(|(l, f)| TsvDamage::Double(l, f)),
    ];
    kit::run("xnli_tsv_damaged", 600, (damage, 0u8..3, policy()), |(damage, filter, policy)| {
        let bytes = match &damage {
            TsvDamage::Bytes(edits) => kit::apply(seed.as_bytes(), edits),
            TsvDamage::Field(line, field, _) | TsvDamage::Drop(line, field) | TsvDamage::Double(line, field) => {
                let mut lines: Vec<Vec<String>> = seed.lines().map(|l| l.split('\t').map(str::to_string).collect()).collect();
                let row = &mut lines[line.index(seed.lines().count())];
                let f = field.index(row.len());
                match &damage {
                    TsvDamage::Field(.., Some(text)) => row[f] = text.clone(),
                    TsvDamage::Field(.., None) => row[f] = "-".into(),
                    TsvDamage::Drop(..) => drop(row.remove(f)),
                    _ => row.insert(f, row[f].clone()),
                }
                lines.iter().map(|r| r.join("\t")).collect::<Vec<_>>().join("\n").into_bytes()
            }
        };
        kit::write(&path, &bytes);
        read_nli(&path, filter, policy);
        Ok(())
    });
}

const NLI_KEYS: &[&str] = &["sentence1", "sentence2", "premise", "hypothesis", "gold_label", "label", "pairID", "language"];

/// A JSON-lines record: some of `keys`, each with a plausible or an arbitrary value.
fn record(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let value = prop_oneof![kit::text().prop_map(Value::from), (-2i64..4).prop_map(Value::from), kit::json_value()];
    proptest::collection::btree_map(proptest::sample::select(keys).prop_map(str::to_string), value, 0..keys.len() + 1)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// JSON lines of `records`, with blank lines and a byte-order mark here and there.
fn json_lines(records: &[Value], bom: bool, blank_every: usize) -> Vec<u8> {
    let mut text = if bom { "\u{feff}".to_string() } else { String::new() };
    for (i, r) in records.iter().enumerate() {
        text.push_str(&r.to_string());
        text.push('\n');
        if blank_every > 0 && i % blank_every == 0 {
            text.push_str("  \n");
        }
    }
    text.into_bytes()
}

#[test]
fn nli_jsonl_generated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let strategy = (proptest::collection::vec(record(NLI_KEYS), 0..6), any::<bool>(), 0usize..3, 0u8..3, policy());
    kit::run("nli_jsonl_generated", 800, strategy, |(records, bom, blank, filter, policy)| {
        kit::write(&path, &json_lines(&records, bom, blank));
        read_nli(&path, filter, policy);
        Ok(())
    });
}

fn read_squad(path: &Path, policy: OnMalformed) {
    match squad::read(path, policy) {
        Ok(loaded) => assert_skips_name(&loaded.skipped, path),
        Err(err) => {
            let msg = format!("{err:#}");
            if msg.contains("not a SQuAD-format file") {
                kit::assert_names_position(&err, path);
            } else if msg.contains("(question ") {
                // A question's error names the line of its id (`?` where the id is not
                // written as serde_json writes it) and the id.
                assert!(msg.contains(&format!("{}:", path.display())), "no file and line: {msg}");
            } else {
                kit::assert_names_line(&err, path, &[]);
            }
        }
    }
}

#[test]
fn squad_damaged() {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(common::data_fixtures().join("mlqa/MLQA_V1/test")).unwrap() {
        seeds.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.json");
    let damage = prop_oneof![kit::edits().prop_map(Damage::Bytes), kit::json_edits().prop_map(Damage::Json)];
    kit::run("squad_damaged", 800, (0..seeds.len(), damage, policy()), |(seed, damage, policy)| {
        let bytes = apply(&seeds[seed], &damage);
        kit::write(&path, &bytes);
        read_squad(&path, policy);
        Ok(())
    });
}

/// A question whose answers are spans of the context (a valid one) or anything at any offset.
fn qa(context: &str) -> impl Strategy<Value = Value> {
    let chars = context.chars().count();
    let span = (0..chars + 1, 0..chars + 1).prop_map({
        let context = context.to_string();
        move |(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            json!({"text": context.chars().skip(a).take(b - a).collect::<String>(), "answer_start": a})
        }
    });
    let any_answer = (kit::text(), prop_oneof![any::<u64>(), 0..(chars as u64 + 3), Just(u64::MAX)])
        .prop_map(|(text, start)| json!({"text": text, "answer_start": start}));
    let answer = prop_oneof![2 => span, 1 => any_answer];
    (prop_oneof![Just("q1".to_string()), Just("q2".to_string()), kit::text()], proptest::collection::vec(answer, 0..3))
        .prop_map(|(id, answers)| json!({"id": id, "question": "why?", "answers": answers}))
}

#[test]
fn squad_generated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.json");
    let paragraph = kit::text()
        .prop_flat_map(|context| proptest::collection::vec(qa(&context), 0..4).prop_map(move |qas| json!({"context": context, "qas": qas})));
    let file = proptest::collection::vec(paragraph, 0..3).prop_map(|ps| json!({"data": [{"title": "t", "paragraphs": ps}]}));
    kit::run("squad_generated", 800, (file, policy()), |(file, policy)| {
        kit::write(&path, file.to_string().as_bytes());
        read_squad(&path, policy);
        Ok(())
    });
}

fn read_copa(path: &Path, policy: OnMalformed) {
    match copa::read(path, policy) {
        Ok(loaded) => assert_skips_name(&loaded.skipped, path),
        Err(err) => kit::assert_names_line(&err, path, &["no records"]),
    }
}

#[test]
fn copa_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.jsonl");
    common::tiny::write_copa(&seed_path, 6, 1);
    let seed = std::fs::read(&seed_path).unwrap();
    let path = dir.path().join("copa.jsonl");
    kit::run("copa_damaged", 600, (damage(), policy()), |(damage, policy)| {
        kit::write(&path, &apply(&seed, &damage));
        read_copa(&path, policy);
        Ok(())
    });
}

const COPA_KEYS: &[&str] = &["premise", "choice1", "choice2", "question", "label", "idx", "changed"];

#[test]
fn copa_generated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copa.jsonl");
    let strategy = (proptest::collection::vec(record(COPA_KEYS), 0..6), any::<bool>(), 0usize..3, policy());
    kit::run("copa_generated", 800, strategy, |(records, bom, blank, policy)| {
        kit::write(&path, &json_lines(&records, bom, blank));
        read_copa(&path, policy);
        Ok(())
    });
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Plain text and JSON lines, each also gzipped, damaged as bytes (of the .gz where gzipped).
#[test]
fn text_damaged() {
    let plain = "Ein Satz.\n\nZweiter Absatz mit Umlauten: äöü.\n中文句子。\n".as_bytes().to_vec();
    let jsonl = json_lines(&[json!({"id": "1", "text": "first article"}), json!({"id": "2", "text": ""}), json!({"text": "third"})], false, 2);
    let seeds = [("t.txt", plain.clone()), ("t.jsonl", jsonl.clone()), ("t.txt.gz", gzip(&plain)), ("t.jsonl.gz", gzip(&jsonl))];
    let dir = tempfile::tempdir().unwrap();
    kit::run("text_damaged", 800, (0..seeds.len(), damage()), |(seed, damage)| {
        let (name, bytes) = &seeds[seed];
        let path = dir.path().join(name);
        kit::write(&path, &apply(bytes, &damage));
        let texts = match text::read_texts(&path) {
            Ok(texts) => texts,
            Err(err) => panic!("opening a file that exists failed: {err:#}"),
        };
        // As the MLM reader does: stop at the first error. A reader that never ended would
        // hang here; none of these files has more than a few dozen lines.
        for (n, item) in texts.enumerate() {
            assert!(n < 10_000, "{}: the reader does not end", path.display());
            if let Err(err) = item {
                kit::assert_names_line(&err, &path, &[]);
                break;
            }
        }
        Ok(())
    });
}
