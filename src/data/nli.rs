//! Natural language inference pairs: MultiNLI and XNLI.
//!
//! Formats read:
//! - JSON lines as MultiNLI and XNLI ship them (`sentence1`, `sentence2`, `gold_label`,
//!   `pairID`, and `language` in XNLI's); pairs whose annotators reached no consensus have
//!   `gold_label` "-" and are counted as skipped.
//! - JSON lines as Hugging Face `datasets` writes them (`premise`, `hypothesis`, `label` with
//!   the class ids of [`NliLabel::ALL`]; -1 marks an unlabelled pair).
//! - XNLI's `xnli.{dev,test}.tsv`: a header row, tab-separated fields, no quoting (sentences
//!   contain bare quotes), and a `language` column.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::lines::{parse_json_line, read_lines};
use super::{Loaded, OnMalformed};

/// The three NLI classes, in the order of the Hugging Face `ClassLabel` of MultiNLI and XNLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NliLabel {
    Entailment,
    Neutral,
    Contradiction,
}

impl NliLabel {
    pub const ALL: [NliLabel; 3] = [NliLabel::Entailment, NliLabel::Neutral, NliLabel::Contradiction];

    pub fn as_str(self) -> &'static str {
        match self {
            NliLabel::Entailment => "entailment",
            NliLabel::Neutral => "neutral",
            NliLabel::Contradiction => "contradiction",
        }
    }

    fn parse(name: &str) -> Option<NliLabel> {
        NliLabel::ALL.into_iter().find(|label| label.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NliExample {
    /// `pairID` where the file has one, else `line N`.
    pub id: String,
    pub premise: String,
    pub hypothesis: String,
    pub label: NliLabel,
}

const NO_CONSENSUS: &str = "no gold label (annotators disagreed: \"-\")";
const UNLABELLED: &str = "no gold label (label -1)";

/// Reads `path`, choosing the format by its extension (`.tsv`, else JSON lines). With
/// `language`, keeps only that language's records of a multilingual file (XNLI's).
pub fn read(path: &Path, language: Option<&str>, policy: OnMalformed) -> Result<Loaded<NliExample>> {
    read_filtered(path, language.map_or(Filter::All, Filter::Only), policy)
}

/// Reads a source-language file: where the file names each record's language (XNLI's dev
/// set), only `language`'s records; where it does not (MultiNLI's), every record.
pub fn read_source(path: &Path, language: &str, policy: OnMalformed) -> Result<Loaded<NliExample>> {
    read_filtered(path, Filter::WhereNamed(language), policy)
}

#[derive(Clone, Copy)]
enum Filter<'a> {
    All,
    Only(&'a str),
    WhereNamed(&'a str),
}

fn read_filtered(path: &Path, filter: Filter<'_>, policy: OnMalformed) -> Result<Loaded<NliExample>> {
    let language = match filter {
        Filter::All => None,
        Filter::Only(l) | Filter::WhereNamed(l) => Some(l),
    };
    let loaded = if path.extension().is_some_and(|ext| ext == "tsv") {
        read_xnli_tsv(path, language, policy)?
    } else {
        read_jsonl(path, filter, policy)?
    };
    if loaded.records.is_empty() && loaded.skipped.is_empty() {
        match language {
            Some(lang) => bail!("{}: no records for language {lang}", path.display()),
            None => bail!("{}: no records", path.display()),
        }
    }
    Ok(loaded)
}

/// One JSON line in either the MultiNLI/XNLI or the Hugging Face field names.
#[derive(Deserialize)]
struct JsonRecord {
    #[serde(alias = "premise")]
    sentence1: String,
    #[serde(alias = "hypothesis")]
    sentence2: String,
    gold_label: Option<String>,
    label: Option<i64>,
    #[serde(rename = "pairID")]
    pair_id: Option<String>,
    language: Option<String>,
}

enum Gold {
    Label(NliLabel),
    Missing(&'static str),
}

fn read_jsonl(path: &Path, filter: Filter<'_>, policy: OnMalformed) -> Result<Loaded<NliExample>> {
    let mut loaded = Loaded::default();
    for line in read_lines(path)? {
        let (number, line) = line?;
        let at = || format!("{}:{number}", path.display());
        let record = parse_json_line::<JsonRecord>(path, number, &line).and_then(|record| {
            match (filter, &record.language) {
                (Filter::Only(lang) | Filter::WhereNamed(lang), Some(l)) if l != lang => return Ok(None),
                (Filter::Only(lang), None) => bail!("{}: no `language` field to select {lang} by", at()),
                _ => {}
            }
            let gold = match (&record.gold_label, record.label) {
                (Some(name), _) if name == "-" => Gold::Missing(NO_CONSENSUS),
                (Some(name), _) => Gold::Label(
                    NliLabel::parse(name).with_context(|| format!("{}: unknown gold_label {name:?}", at()))?,
                ),
                (None, Some(-1)) => Gold::Missing(UNLABELLED),
                (None, Some(id)) => Gold::Label(
                    usize::try_from(id)
                        .ok()
                        .and_then(|i| NliLabel::ALL.get(i).copied())
                        .with_context(|| format!("{}: label {id} is not 0, 1 or 2", at()))?,
                ),
                (None, None) => bail!("{}: neither gold_label nor label", at()),
            };
            Ok(Some((record, gold)))
        });
        match record {
            Ok(None) => {}
            Ok(Some((_, Gold::Missing(reason)))) => loaded.skipped.add(reason, at()),
            Ok(Some((record, Gold::Label(label)))) => loaded.records.push(NliExample {
                id: record.pair_id.unwrap_or_else(|| format!("line {number}")),
                premise: record.sentence1,
                hypothesis: record.sentence2,
                label,
            }),
            Err(err) => loaded.push_or_skip(Err(err), policy)?,
        }
    }
    Ok(loaded)
}

/// XNLI's TSV files. The columns are found by the header's names.
fn read_xnli_tsv(path: &Path, language: Option<&str>, policy: OnMalformed) -> Result<Loaded<NliExample>> {
    let mut lines = read_lines(path)?;
    let Some(header) = lines.next() else {
        bail!("{}: empty file", path.display());
    };
    let (_, header) = header?;
    let names: Vec<&str> = header.split('\t').collect();
    let column = |name: &str| {
        names.iter().position(|n| *n == name).with_context(|| format!("{}:1: no `{name}` column", path.display()))
    };
    let (lang_col, gold_col, s1_col, s2_col) =
        (column("language")?, column("gold_label")?, column("sentence1")?, column("sentence2")?);
    let pair_col = names.iter().position(|n| *n == "pairID");

    let mut loaded = Loaded::default();
    for line in lines {
        let (number, line) = line?;
        let at = || format!("{}:{number}", path.display());
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != names.len() {
            let err = anyhow::anyhow!("{}: {} fields, the header has {}", at(), fields.len(), names.len());
            loaded.push_or_skip(Err(err), policy)?;
            continue;
        }
        if language.is_some_and(|lang| fields[lang_col] != lang) {
            continue;
        }
        let gold = fields[gold_col];
        if gold == "-" {
            loaded.skipped.add(NO_CONSENSUS, at());
            continue;
        }
        let record =
            NliLabel::parse(gold).with_context(|| format!("{}: unknown gold_label {gold:?}", at())).map(|label| {
                NliExample {
                    id: pair_col.map_or_else(|| format!("line {number}"), |c| fields[c].to_string()),
                    premise: fields[s1_col].to_string(),
                    hypothesis: fields[s2_col].to_string(),
                    label,
                }
            });
        loaded.push_or_skip(record, policy)?;
    }
    Ok(loaded)
}
