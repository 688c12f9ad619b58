//! The results CSV in tidy form: one row per (run, base model, method, seed, suite, language,
//! metric) with its value in percent, plus summary rows per metric: `avg` (the mean over the
//! target languages, without the source language: the paper's "Average") and `lowest` (the
//! worst target language, named in `lowest_language`). `pandas.read_csv` reads it as it is.
use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

pub const AVG: &str = "avg";
pub const LOWEST: &str = "lowest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub run: String,
    pub base_model: String,
    pub method: String,
    pub seed: Option<u64>,
    pub suite: String,
    /// A language code, or `avg` / `lowest`.
    pub language: String,
    pub metric: String,
    pub value: f64,
    /// For `lowest` rows: the language with that score.
    pub lowest_language: Option<String>,
}

impl ResultRow {
    pub fn is_summary(&self) -> bool {
        self.language == AVG || self.language == LOWEST
    }
}

/// The `avg` and `lowest` rows for each metric of `rows` (the per-language rows of one run and
/// suite), over the languages other than `source_language`.
pub fn summary_rows(rows: &[ResultRow], source_language: &str) -> Vec<ResultRow> {
    let mut metrics: Vec<&str> = Vec::new();
    for row in rows {
        if !metrics.contains(&row.metric.as_str()) {
            metrics.push(&row.metric);
        }
    }
    let mut out = Vec::new();
    for metric in metrics {
        let targets: Vec<&ResultRow> =
            rows.iter().filter(|r| r.metric == metric && r.language != source_language && !r.is_summary()).collect();
        let Some(first) = targets.first() else { continue };
        let mean = targets.iter().map(|r| r.value).sum::<f64>() / targets.len() as f64;
        let lowest = targets.iter().min_by(|a, b| a.value.total_cmp(&b.value)).expect("targets is not empty");
        out.push(ResultRow { language: AVG.into(), value: mean, lowest_language: None, ..(*first).clone() });
        out.push(ResultRow {
            language: LOWEST.into(),
            value: lowest.value,
            lowest_language: Some(lowest.language.clone()),
            ..(*first).clone()
        });
    }
    out
}

/// The CSV text of `rows`, header first.
pub fn to_csv(rows: &[ResultRow]) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.into_inner().context("writing CSV")
}

/// Reads a results CSV written by `toolkit eval`.
pub fn read_csv(path: &Path) -> Result<Vec<ResultRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize().enumerate() {
        // Line 1 is the header.
        rows.push(row.with_context(|| format!("{}:{}: not a results row", path.display(), i + 2))?);
    }
    ensure!(!rows.is_empty(), "{}: no results rows", path.display());
    Ok(rows)
}
