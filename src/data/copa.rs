//! COPA and XCOPA in the SuperGLUE JSON-lines format: `premise`, `choice1`, `choice2`,
//! `question` ("cause" or "effect"), `label` (0 or 1), `idx`. XCOPA adds `changed`, which is
//! ignored. A record without `label` (SuperGLUE's unlabelled test split) is counted as skipped.
use std::path::Path;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::lines::{parse_json_line, read_lines};
use super::{Loaded, OnMalformed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopaQuestion {
    Cause,
    Effect,
}

impl CopaQuestion {
    pub fn as_str(self) -> &'static str {
        match self {
            CopaQuestion::Cause => "cause",
            CopaQuestion::Effect => "effect",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopaExample {
    pub idx: i64,
    pub premise: String,
    pub choices: [String; 2],
    pub question: CopaQuestion,
    /// Index of the more plausible choice.
    pub label: usize,
}

#[derive(Deserialize)]
struct Record {
    premise: String,
    choice1: String,
    choice2: String,
    question: CopaQuestion,
    label: Option<i64>,
    idx: i64,
}

const UNLABELLED: &str = "no label";

pub fn read(path: &Path, policy: OnMalformed) -> Result<Loaded<CopaExample>> {
    let mut loaded = Loaded::default();
    for line in read_lines(path)? {
        let (number, line) = line?;
        let at = || format!("{}:{number}", path.display());
        let record = parse_json_line::<Record>(path, number, &line).and_then(|r| {
            let label = match r.label {
                None | Some(-1) => return Ok(None),
                Some(label @ (0 | 1)) => label as usize,
                Some(other) => bail!("{}: label {other} is not 0 or 1", at()),
            };
            Ok(Some(CopaExample {
                idx: r.idx,
                premise: r.premise,
                choices: [r.choice1, r.choice2],
                question: r.question,
                label,
            }))
        });
        match record {
            Ok(None) => loaded.skipped.add(UNLABELLED, at()),
            Ok(Some(example)) => loaded.records.push(example),
            Err(err) => loaded.push_or_skip(Err(err), policy)?,
        }
    }
    if loaded.records.is_empty() && loaded.skipped.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(loaded)
}
