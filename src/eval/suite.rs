//! Benchmark suites: one TOML file per benchmark in `eval-suites/`, read at run time so that a
//! language, a file layout or a metric can be changed without recompiling.
//!
//! A suite names its task, languages, metrics and where each language's file lies relative to
//! `--data-dir` (`{lang}` and `{split}` are replaced by the language code and split).
//! `[overrides.LANG]` changes the path, split, format or answer normalisation for one language
//! (XCOPA's `en` row comes from COPA).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use crate::scoring::{AnswerNormalization, AnswerScheme};
use crate::data::OnMalformed;
pub use crate::task::{Languages, Records, Task};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    ExactMatch,
    F1,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::ExactMatch => "exact_match",
            Metric::F1 => "f1",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The file format; older suites name it (`nli`, `squad`, `copa`), the task decides it.
    pub format: Option<String>,
    /// Relative to `--data-dir`, with `{lang}` placeholders.
    pub path: String,
    /// The file holds every language; keep the records whose `language` field is the row's.
    #[serde(default)]
    pub select_language: bool,
}

/// What one language does differently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageOverride {
    pub format: Option<String>,
    pub path: Option<String>,
    pub split: Option<String>,
    pub select_language: Option<bool>,
    pub answer_normalization: Option<AnswerScheme>,
}

/// Feature settings; the defaults are the paper code's.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub max_length: usize,
    /// Overlap of consecutive QA windows, in tokens.
    pub doc_stride: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    pub description: String,
    pub task: Task,
    /// The language the task adapter was trained on: reported, but not part of the average.
    pub source_language: String,
    pub languages: Vec<String>,
    pub split: String,
    pub metrics: Vec<Metric>,
    /// The metric the paper's tables report, used for `avg` and `lowest`.
    pub primary_metric: Metric,
    /// Class names in the order the model's logits must have (classification only).
    pub labels: Option<Vec<String>>,
    /// Official script whose answer normalisation scores QA answers.
    pub answer_normalization: Option<AnswerScheme>,
    pub features: FeatureSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub overrides: BTreeMap<String, LanguageOverride>,
}

/// One language's file, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LanguageSource {
    pub path: PathBuf,
    pub split: String,
    pub language_filter: Option<String>,
}

impl Suite {
    /// Reads the suite `name_or_path`: a path to a TOML file, or a name looked up as
    /// `eval-suites/NAME.toml` in the current directory and above the executable.
    pub fn load(name_or_path: &str) -> Result<Suite> {
        let path = resolve(name_or_path)?;
        let text = crate::data::read_text(&path)?;
        let suite: Suite = toml::from_str(&text).with_context(|| format!("{}: not a valid suite", path.display()))?;
        suite.validate().with_context(|| format!("{}: not a valid suite", path.display()))?;
        Ok(suite)
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.languages.is_empty(), "no languages");
        ensure!(self.metrics.contains(&self.primary_metric), "primary_metric is not among the metrics");
        let metrics_fit = match self.task {
            Task::Nli | Task::Copa => self.metrics == [Metric::Accuracy],
            Task::Qa => self.metrics.iter().all(|m| *m != Metric::Accuracy),
        };
        ensure!(metrics_fit, "metrics {:?} do not fit a {} task", self.metrics, self.task);
        let format = file_format(self.task);
        let named = self.data.format.iter().map(|f| ("data.format".to_string(), f));
        let overridden = self.overrides.iter().filter_map(|(lang, o)| o.format.as_ref().map(|f| (format!("overrides.{lang}.format"), f)));
        for (key, name) in named.chain(overridden) {
            ensure!(name == format, "{key} = {name:?} does not fit a {} task, whose files are {format:?}", self.task);
        }
        for lang in self.overrides.keys() {
            ensure!(self.languages.contains(lang), "overrides.{lang}: {lang} is not among the languages");
        }
        match self.task {
            Task::Nli => ensure!(self.labels.as_ref().is_some_and(|l| !l.is_empty()), "an nli suite needs labels"),
            Task::Qa => {
                ensure!(self.answer_normalization.is_some(), "a QA suite needs answer_normalization");
                for lang in &self.languages {
                    self.answer_normalization(lang)?;
                }
                ensure!(self.features.doc_stride.is_some(), "a QA suite needs features.doc_stride");
            }
            Task::Copa => {}
        }
        Ok(())
    }

    /// The target languages: all but the source language.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.languages.iter().map(String::as_str).filter(|l| *l != self.source_language)
    }

    /// How `lang`'s answers are normalised before scoring (QA suites).
    pub fn answer_normalization(&self, lang: &str) -> Result<AnswerNormalization> {
        let scheme = self.overrides.get(lang).and_then(|o| o.answer_normalization).or(self.answer_normalization);
        let scheme = scheme.with_context(|| format!("suite {}: no answer_normalization", self.name))?;
        scheme.for_language(lang).with_context(|| format!("suite {}, language {lang}", self.name))
    }

    /// Where `lang`'s records lie under `data_dir`.
    pub fn source(&self, data_dir: &Path, lang: &str) -> LanguageSource {
        let over = self.overrides.get(lang).cloned().unwrap_or_default();
        let split = over.split.unwrap_or_else(|| self.split.clone());
        let path = over.path.as_deref().unwrap_or(&self.data.path).replace("{lang}", lang).replace("{split}", &split);
        LanguageSource {
            path: data_dir.join(path),
            split,
            language_filter: over.select_language.unwrap_or(self.data.select_language).then(|| lang.to_string()),
        }
    }

    /// Reads `lang`'s records, failing with the file's name when it is missing.
    pub fn read(&self, data_dir: &Path, lang: &str, policy: OnMalformed) -> Result<Records> {
        let source = self.source(data_dir, lang);
        if !source.path.exists() {
            bail!(
                "suite {}: no data for language {lang}: {} does not exist (see scripts/download-data.sh)",
                self.name,
                source.path.display()
            );
        }
        let languages = source.language_filter.as_deref().map_or(Languages::All, Languages::Only);
        let records = self.task.read(&source.path, languages, policy)?;
        ensure!(!records.is_empty(), "{}: no usable records ({})", source.path.display(), records.skipped());
        Ok(records)
    }
}

/// The name older suites give the task's file format.
fn file_format(task: Task) -> &'static str {
    match task {
        Task::Nli => "nli",
        Task::Qa => "squad",
        Task::Copa => "copa",
    }
}

fn resolve(name_or_path: &str) -> Result<PathBuf> {
    let given = Path::new(name_or_path);
    if given.extension().is_some_and(|e| e == "toml") || name_or_path.contains(std::path::MAIN_SEPARATOR) {
        ensure!(given.is_file(), "suite file {} does not exist", given.display());
        return Ok(given.to_path_buf());
    }
    let file = format!("eval-suites/{name_or_path}.toml");
    let mut places: Vec<PathBuf> = vec![PathBuf::from(&file)];
    if let Ok(exe) = std::env::current_exe() {
        places.extend(exe.ancestors().skip(1).map(|dir| dir.join(&file)));
    }
    places.into_iter().find(|p| p.is_file()).with_context(|| {
        format!("no suite named {name_or_path:?}: looked for {file} here and above the toolkit executable")
    })
}
