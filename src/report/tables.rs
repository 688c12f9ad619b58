//! The paper's tables from results rows: per suite and metric, the summary table (Table 2:
//! En, Lowest (language), Average, each mean ± standard deviation over seeds) and the
//! per-language table, as Markdown and LaTeX.
use std::collections::BTreeMap;

use super::results::{ResultRow, AVG};

/// The language the task adapter was trained on, reported in the En column.
const SOURCE_LANGUAGE: &str = "en";

/// Mean and sample standard deviation (0 for a single value) of one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        Some(Stat { mean, std, n })
    }

    fn text(&self, plus_minus: &str) -> String {
        if self.n > 1 {
            format!("{:.1}{plus_minus}{:.1}", self.mean, self.std)
        } else {
            format!("{:.1}", self.mean)
        }
    }
}

/// One (base model, method) row: its values per language and its per-seed averages.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResults {
    pub base_model: String,
    pub method: String,
    /// Language -> values over seeds (runs).
    pub languages: BTreeMap<String, Vec<f64>>,
    /// The `avg` row of each seed.
    pub averages: Vec<f64>,
}

impl MethodResults {
    pub fn language(&self, lang: &str) -> Option<Stat> {
        self.languages.get(lang).and_then(|v| Stat::of(v))
    }

    /// The target language with the lowest mean over seeds.
    pub fn lowest(&self) -> Option<(String, Stat)> {
        self.languages
            .keys()
            .filter(|l| *l != SOURCE_LANGUAGE)
            .filter_map(|l| self.language(l).map(|s| (l.clone(), s)))
            .min_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
    }
}

/// The rows of one suite and metric, by (base model, method), in first-seen order.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteTable {
    pub suite: String,
    pub metric: String,
    /// Languages in first-seen order.
    pub languages: Vec<String>,
    pub methods: Vec<MethodResults>,
}

/// Groups rows into one table per (suite, metric), in first-seen order.
pub fn build_tables(rows: &[ResultRow]) -> Vec<SuiteTable> {
    let mut tables: Vec<SuiteTable> = Vec::new();
    for row in rows {
        let at = match tables.iter().position(|t| t.suite == row.suite && t.metric == row.metric) {
            Some(at) => at,
            None => {
                tables.push(SuiteTable {
                    suite: row.suite.clone(),
                    metric: row.metric.clone(),
                    languages: Vec::new(),
                    methods: Vec::new(),
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[at];
        let method = match table.methods.iter().position(|m| m.base_model == row.base_model && m.method == row.method) {
            Some(i) => i,
            None => {
                table.methods.push(MethodResults {
                    base_model: row.base_model.clone(),
                    method: row.method.clone(),
                    languages: BTreeMap::new(),
                    averages: Vec::new(),
                });
                table.methods.len() - 1
            }
        };
        let entry = &mut table.methods[method];
        if row.language == AVG {
            entry.averages.push(row.value);
        } else if !row.is_summary() {
            entry.languages.entry(row.language.clone()).or_default().push(row.value);
            if !table.languages.contains(&row.language) {
                table.languages.push(row.language.clone());
            }
        }
    }
    tables
}

/// Plain text for Markdown, or LaTeX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Latex,
}

impl Format {
    fn plus_minus(self) -> &'static str {
        match self {
            Format::Markdown => " ± ",
            Format::Latex => " $\\pm$ ",
        }
    }

    fn escape(self, text: &str) -> String {
        match self {
            Format::Markdown => text.replace('|', "\\|"),
            Format::Latex => text.chars().fold(String::new(), |mut out, c| {
                if "&%$#_{}".contains(c) {
                    out.push('\\');
                }
                out.push(c);
                out
            }),
        }
    }

    fn render(self, caption: &str, header: &[String], rows: &[Vec<String>]) -> String {
        match self {
            Format::Markdown => {
                let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
                let mut out = format!("**{caption}**\n\n");
                out.push_str(&line(header));
                out.push_str(&line(&header.iter().map(|_| "---".to_string()).collect::<Vec<_>>()));
                for row in rows {
                    out.push_str(&line(row));
                }
                out
            }
            Format::Latex => {
                let columns = format!("ll{}", "r".repeat(header.len().saturating_sub(2)));
                let mut out = format!("\\begin{{table}}[t]\n\\centering\n\\begin{{tabular}}{{{columns}}}\n\\toprule\n");
                out.push_str(&format!("{} \\\\\n\\midrule\n", header.join(" & ")));
                for row in rows {
                    out.push_str(&format!("{} \\\\\n", row.join(" & ")));
                }
                out.push_str(&format!("\\bottomrule\n\\end{{tabular}}\n\\caption{{{caption}}}\n\\end{{table}}\n"));
                out
            }
        }
    }
}

fn cell(stat: Option<Stat>, format: Format) -> String {
    stat.map_or_else(|| "–".to_string(), |s| s.text(format.plus_minus()))
}

fn n_seeds(table: &SuiteTable) -> usize {
    table.methods.iter().flat_map(|m| m.languages.values().map(Vec::len)).max().unwrap_or(0)
}

/// Table 2: En, Lowest (language) and Average (over target languages, per seed) per method.
pub fn summary_table(table: &SuiteTable, format: Format) -> String {
    let header: Vec<String> = ["Model", "Method", "En", "Lowest", "Average"].iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = table
        .methods
        .iter()
        .map(|m| {
            let lowest = m
                .lowest()
                .map_or_else(|| "–".to_string(), |(lang, s)| format!("{} ({lang})", s.text(format.plus_minus())));
            vec![
                format.escape(&m.base_model),
                format.escape(&m.method),
                cell(m.language(SOURCE_LANGUAGE), format),
                lowest,
                cell(Stat::of(&m.averages), format),
            ]
        })
        .collect();
    let caption = format!(
        "{}: {}, mean and standard deviation over {} seed(s); Average over the target languages, without En",
        table.suite,
        table.metric,
        n_seeds(table)
    );
    format.render(&format.escape(&caption), &header, &rows)
}

/// Every language of the suite, and the average, per method.
pub fn language_table(table: &SuiteTable, format: Format) -> String {
    let mut header: Vec<String> = vec!["Model".into(), "Method".into()];
    header.extend(table.languages.iter().map(|l| format.escape(l)));
    header.push("Avg".into());
    let rows: Vec<Vec<String>> = table
        .methods
        .iter()
        .map(|m| {
            let mut row = vec![format.escape(&m.base_model), format.escape(&m.method)];
            row.extend(table.languages.iter().map(|l| cell(m.language(l), format)));
            row.push(cell(Stat::of(&m.averages), format));
            row
        })
        .collect();
    let caption = format!("{}: {} per language", table.suite, table.metric);
    format.render(&format.escape(&caption), &header, &rows)
}
