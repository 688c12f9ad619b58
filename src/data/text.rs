//! Raw text for masked language modelling, streamed line by line (a Wikipedia dump is never
//! held in memory): plain text with one document or paragraph per line, or JSON lines with a
//! string field `text` (wikiextractor's `--json` output), either of them optionally `.gz`.
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::Value;

use super::lines::{parse_json_line, read_lines};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    Plain,
    /// One JSON object per line, the text in its `text` field.
    JsonLines,
}

impl TextFormat {
    /// By file name: `.jsonl` / `.json` (before an optional `.gz`) is JSON lines, anything
    /// else plain text.
    pub fn of(path: &Path) -> Self {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".jsonl") || name.ends_with(".json") {
            TextFormat::JsonLines
        } else {
            TextFormat::Plain
        }
    }
}

/// The texts of `path` with their 1-based line numbers, in file order, read as they are
/// consumed. Blank lines and JSON records with an empty `text` are passed over; a JSON line
/// that is not an object with a string `text` is an error naming the file and line.
pub fn read_texts(path: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
    let format = TextFormat::of(path);
    let lines = read_lines(path)?;
    Ok(lines.filter_map(move |line| {
        let (number, line) = match line {
            Ok(l) => l,
            Err(err) => return Some(Err(err)),
        };
        match format {
            TextFormat::Plain => Some(Ok((number, line))),
            TextFormat::JsonLines => match json_text(path, number, &line) {
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some(Ok((number, text))),
                Err(err) => Some(Err(err)),
            },
        }
    }))
}

fn json_text(path: &Path, number: usize, line: &str) -> Result<String> {
    let record: Value = parse_json_line(path, number, line)?;
    match record.get("text") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => bail!("{}:{number}: field `text` is not a string but {other}", path.display()),
        None => bail!("{}:{number}: the record has no field `text`", path.display()),
    }
}
