//! The paper's three tasks, one type from the data to the head: each task knows its reader,
//! its features' default length, its head and its class names, and has one spelling (`nli`,
//! `qa`, `copa`) in every file the toolkit reads or writes (training configs, suites, run
//! directories). The older suite spellings (`classification`, `question-answering`,
//! `multiple-choice`) are still read.
use std::fmt;
use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::{self, CopaExample, Loaded, NliExample, OnMalformed, QaExample, Skipped};
use crate::model::head::HeadType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Natural language inference: MultiNLI / XNLI (3 classes).
    #[serde(alias = "classification")]
    Nli,
    /// Extractive question answering: SQuAD / XQuAD / MLQA.
    #[serde(alias = "question-answering", alias = "question_answering")]
    Qa,
    /// Causal commonsense reasoning: COPA / XCOPA (2 choices).
    #[serde(alias = "multiple-choice", alias = "multiple_choice")]
    Copa,
}

/// Which records of a file to keep, by the language each record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Languages<'a> {
    All,
    /// Only this language's records of a multilingual file; the file must name languages.
    Only(&'a str),
    /// This language's records where the file names languages (XNLI dev as validation), every
    /// record where it does not (MultiNLI's own dev set).
    Source(&'a str),
}

/// A file's records, by task.
#[derive(Debug, Clone)]
pub enum Records {
    Nli(Loaded<NliExample>),
    Qa(Loaded<QaExample>),
    Copa(Loaded<CopaExample>),
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Nli => "nli",
            Task::Qa => "qa",
            Task::Copa => "copa",
        }
    }

    /// The head that answers the task.
    pub fn head_type(self) -> HeadType {
        match self {
            Task::Nli => HeadType::Classification,
            Task::Qa => HeadType::QuestionAnswering,
            Task::Copa => HeadType::MultipleChoice,
        }
    }

    /// Sequence length of the paper's code for the task.
    pub fn default_max_length(self) -> usize {
        match self {
            Task::Nli => crate::features::NLI_MAX_LENGTH,
            Task::Qa => crate::features::QA_MAX_LENGTH,
            Task::Copa => crate::features::COPA_MAX_LENGTH,
        }
    }

    /// Class names in the order of the head's outputs (classification only).
    pub fn labels(self) -> Vec<String> {
        match self {
            Task::Nli => data::nli::NliLabel::ALL.iter().map(|l| l.as_str().to_string()).collect(),
            Task::Qa | Task::Copa => Vec::new(),
        }
    }

    /// Reads `path` in the task's format: MultiNLI / XNLI jsonl or XNLI tsv, SQuAD v1.1 json,
    /// or COPA jsonl.
    pub fn read(self, path: &Path, languages: Languages<'_>, policy: OnMalformed) -> Result<Records> {
        if self != Task::Nli && languages != Languages::All {
            bail!("{}: {} files name no languages to select by", path.display(), self);
        }
        Ok(match self {
            Task::Nli => Records::Nli(match languages {
                Languages::All => data::nli::read(path, None, policy)?,
                Languages::Only(lang) => data::nli::read(path, Some(lang), policy)?,
                Languages::Source(lang) => data::nli::read_source(path, lang, policy)?,
            }),
            Task::Qa => Records::Qa(data::squad::read(path, policy)?),
            Task::Copa => Records::Copa(data::copa::read(path, policy)?),
        })
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Nli(l) => l.records.len(),
            Records::Qa(l) => l.records.len(),
            Records::Copa(l) => l.records.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn skipped(&self) -> &Skipped {
        match self {
            Records::Nli(l) => &l.skipped,
            Records::Qa(l) => &l.skipped,
            Records::Copa(l) => &l.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_and_the_old_ones() {
        #[derive(Deserialize)]
        struct T {
            task: Task,
        }
        for (text, task) in [
            ("nli", Task::Nli),
            ("classification", Task::Nli),
            ("qa", Task::Qa),
            ("question-answering", Task::Qa),
            ("question_answering", Task::Qa),
            ("copa", Task::Copa),
            ("multiple-choice", Task::Copa),
        ] {
            assert_eq!(toml::from_str::<T>(&format!("task = {text:?}")).unwrap().task, task, "{text}");
        }
        for task in [Task::Nli, Task::Qa, Task::Copa] {
            assert_eq!(toml::Value::try_from(task).unwrap().as_str(), Some(task.as_str()));
        }
    }
}
