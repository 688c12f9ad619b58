//! The fuzzing kit of `tests/fuzz_inputs.rs`: edits that damage a valid seed file (bytes, lines,
//! JSON structure), generated JSON and TOML values, the runner, and the checks every reader's
//! error must pass.
//!
//! CI runs each property with a fixed seed and a few hundred cases; `scripts/fuzz.sh` sets
//! `PROPTEST_CASES` and a fresh `PROPTEST_RNG_SEED` per round for long runs. Each property
//! prints `fuzz: NAME: N cases` (seen with `--nocapture`), which fuzz.sh adds up.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;

/// The seed of CI's runs, so that CI sees the same inputs every time.
const CI_SEED: u64 = 0x5eed_f022;

/// Runs `test` on `cases` inputs of `strategy` (CI), or on `PROPTEST_CASES` inputs with
/// `PROPTEST_RNG_SEED` when those are set. A panic inside `test` is a failure, reported with
/// the shrunk input.
pub fn run<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut config = Config { failure_persistence: None, ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(CI_SEED);
    }
    let total = config.cases;
    let mut runner = TestRunner::new(config);
    if let Err(err) = runner.run(&strategy, test) {
        panic!("fuzz: {name}: {err}");
    }
    println!("fuzz: {name}: {total} cases");
}

/// One damaging edit of a file's bytes. Positions are fractions of the current length, so an
/// edit fits any seed.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    Token(Index, &'static [u8]),
}

/// Byte sequences that readers treat specially: delimiters, escapes, numbers at the edges of
/// their types, invalid UTF-8, a byte-order mark, path tricks.
const TOKENS: &[&[u8]] = &[
    b"\"", b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\t", b"\r\n", b"\\", b"\\u0000", b"\\ud800", b"-1", b"0",
    b"1e999", b"-0.0", b"18446744073709551616", b"18446744073709551615", b"9223372036854775807", b"-9223372036854775808",
    b"4294967296", b"null", b"true", b"\"\"", b"[]", b"{}", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"=", b"[[", b"]]", b"#",
    b"'''", b"\"\"\"", b"../", b"/", b"\x00",
];

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Remove(at, n)),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        (any::<Index>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Token(at, t)),
    ]
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..6)
}

/// `bytes` with `edits` applied in order.
pub fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for edit in edits {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
        match edit {
            Edit::Flip(i, bit) if !b.is_empty() => {
                let i = at(i, b.len());
                b[i] ^= 1 << bit;
            }
            Edit::Flip(..) => {}
            Edit::Truncate(i) => b.truncate(at(i, b.len() + 1)),
            Edit::Insert(i, bytes) => {
                let i = at(i, b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = at(i, b.len() + 1);
                b.drain(i..(i + n).min(b.len()));
            }
            Edit::Duplicate(i, n) => {
                let i = at(i, b.len() + 1);
                let piece: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                b.splice(i..i, piece);
            }
            Edit::Token(i, token) => {
                let i = at(i, b.len() + 1);
                // Replace as many bytes as the token has (an overwrite), or insert at the end.
                let end = (i + token.len()).min(b.len());
                b.splice(i..end, token.iter().copied());
            }
        }
    }
    b
}

/// A JSON value of any type, with numbers and strings at the edges readers care about.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::sample::select(&[0i64, 1, 2, -1, 3, 100][..]).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Short strings: readable words, the names of the formats' fields and values, and any
/// characters (multi-byte ones, controls, the byte-order mark).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(str::to_string),
        proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        proptest::collection::vec(proptest::sample::select(&['a', 'é', '中', ' ', '\t', '\u{feff}', '"', '\\', '\n', '/', '.'][..]), 0..12)
            .prop_map(String::from_iter),
    ]
}

const WORDS: &[&str] = &[
    "", "-", "en", "de", "th", "entailment", "neutral", "contradiction", "cause", "effect", "bert", "xlm-roberta",
    "classification", "question_answering", "multiple_choice", "nice", "relu", "gelu", "tanh", "seq_bn", "pfeiffer",
    "standard", "gu", "fun", "order:11,10", "rand", "lpft", "gu-rev", "fp32", "fp16", "int8", "accuracy", "f1",
    "exact_match", "squad", "mlqa", "../x", "/etc/passwd", "a.onnx", "F32", "F16", "BF16", "F64", "I64", "nli", "copa", "qa",
];

/// One change to a JSON document at a place chosen by `path` (child indices, each taken
/// modulo the children there).
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace the value there.
    Set(Vec<Index>, Value),
    /// Remove the key or item there.
    Remove(Vec<Index>),
    /// Add a key to the object there.
    Add(Vec<Index>, String, Value),
    /// Write the object there with its first key twice (in the text: JSON allows it).
    DuplicateKey(Vec<Index>),
}

pub fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let path = proptest::collection::vec(any::<Index>(), 0..5);
    prop_oneof![
        3 => (path.clone(), json_value()).prop_map(|(p, v)| JsonEdit::Set(p, v)),
        2 => path.clone().prop_map(JsonEdit::Remove),
        1 => (path.clone(), text(), json_value()).prop_map(|(p, k, v)| JsonEdit::Add(p, k, v)),
        1 => path.prop_map(JsonEdit::DuplicateKey),
    ]
}

pub fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    proptest::collection::vec(json_edit(), 1..4)
}

/// The text of `value` after `edits` (a duplicated key is written into the text).
pub fn apply_json(value: &Value, edits: &[JsonEdit]) -> String {
    let mut v = value.clone();
    let mut duplicate: Option<Vec<Index>> = None;
    for edit in edits {
        match edit {
            JsonEdit::Set(path, new) => *walk(&mut v, path) = new.clone(),
            JsonEdit::Remove(path) => {
                let Some((last, parent)) = path.split_last() else { continue };
                match walk(&mut v, parent) {
                    Value::Object(map) if !map.is_empty() => {
                        let key = map.keys().nth(last.index(map.len())).cloned().expect("in range");
                        map.remove(&key);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        let i = last.index(items.len());
                        items.remove(i);
                    }
                    _ => {}
                }
            }
            JsonEdit::Add(path, key, new) => {
                if let Value::Object(map) = walk(&mut v, path) {
                    map.insert(key.clone(), new.clone());
                }
            }
            JsonEdit::DuplicateKey(path) => duplicate = Some(path.clone()),
        }
    }
    let mut text = serde_json::to_string(&v).expect("serialises");
    if let Some(path) = duplicate {
        if let Value::Object(map) = walk(&mut v, &path) {
            if let Some((key, value)) = map.iter().next() {
                let pair = format!("{}:{}", serde_json::to_string(key).unwrap(), value);
                if let Some(at) = text.find(&pair) {
                    text.insert_str(at, &format!("{pair},"));
                }
            }
        }
    }
    text
}

/// The value at `path`, each index choosing among the children there; stops at a leaf.
fn walk<'a>(v: &'a mut Value, path: &[Index]) -> &'a mut Value {
    let Some((first, rest)) = path.split_first() else { return v };
    let n = match &*v {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if n == 0 {
        return v;
    }
    let child = match v {
        Value::Object(map) => map.values_mut().nth(first.index(n)).expect("in range"),
        Value::Array(items) => &mut items[first.index(n)],
        _ => unreachable!("only containers have children"),
    };
    walk(child, rest)
}

/// A TOML value of any type, for config keys.
pub fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<i64>().prop_map(toml::Value::Integer),
        proptest::sample::select(&[0i64, 1, 2, -1, 16, 100][..]).prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        text().prop_map(toml::Value::String),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
            proptest::collection::vec((text(), inner), 0..3).prop_map(|kv| toml::Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// A TOML table of `keys` (a few, each with a value of any type) plus, sometimes, a key of any
/// name.
pub fn toml_table(keys: &'static [&'static str]) -> impl Strategy<Value = toml::Table> {
    let known = proptest::collection::vec((proptest::sample::select(keys).prop_map(str::to_string), toml_value()), 0..8);
    let other = proptest::collection::vec((text(), toml_value()), 0..2);
    (known, other).prop_map(|(a, b)| a.into_iter().chain(b).collect())
}

/// `err` names `path`; when it is about a place in the text, it says which.
pub fn assert_names(err: &anyhow::Error, path: &Path) {
    let msg = format!("{err:#}");
    assert!(msg.contains(&path.display().to_string()), "the error does not name {}: {msg}", path.display());
}

/// `err` names `path` followed by `:LINE`, unless it is about the whole file (one of
/// `whole_file`).
pub fn assert_names_line(err: &anyhow::Error, path: &Path, whole_file: &[&str]) {
    assert_names(err, path);
    let msg = format!("{err:#}");
    if whole_file.iter().any(|w| msg.contains(w)) {
        return;
    }
    let prefix = format!("{}:", path.display());
    let has_line = msg.match_indices(&prefix).any(|(at, _)| msg[at + prefix.len()..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(has_line, "the error names no line of {}: {msg}", path.display());
}

/// `err`, about a parse error of a text format, says where: serde_json's and the toml crate's
/// "line N" (TOML: "line N, column M").
pub fn assert_names_position(err: &anyhow::Error, path: &Path) {
    assert_names(err, path);
    let msg = format!("{err:#}");
    assert!(msg.contains("line "), "the error names no position in {}: {msg}", path.display());
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
