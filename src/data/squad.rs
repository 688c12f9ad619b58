//! Extractive QA in the SQuAD v1.1 JSON format, which XQuAD and MLQA share:
//! `data[].paragraphs[].{context, qas[].{id, question, answers[].{text, answer_start}}}`.
//!
//! `answer_start` counts Unicode code points (Python string indices), as do the offsets the
//! features keep.
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use super::{Loaded, OnMalformed};

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    /// Character (code point) offset of the answer in the context.
    pub start: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub id: String,
    pub title: String,
    /// Shared by all questions about the same paragraph.
    pub context: Arc<str>,
    pub question: String,
    pub answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    #[serde(default)]
    title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    answers: Vec<RawAnswer>,
}

#[derive(Deserialize)]
struct RawAnswer {
    text: String,
    answer_start: usize,
}

const NO_ANSWER: &str = "question without answers";

/// Reads a SQuAD-format file. Structural errors name the file, line and column; a bad
/// question names the line its id is on.
pub fn read(path: &Path, policy: OnMalformed) -> Result<Loaded<QaExample>> {
    let text = super::read_text(path)?;
    let file: File = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .with_context(|| format!("{}: not a SQuAD-format file", path.display()))?;
    let line_of = |id: &str| {
        let quoted = serde_json::to_string(id).unwrap_or_default();
        text.find(&quoted).map_or_else(|| "?".to_string(), |at| (text[..at].matches('\n').count() + 1).to_string())
    };
    let mut ids = HashSet::new();
    let mut loaded = Loaded::default();
    for article in file.data {
        for paragraph in article.paragraphs {
            let context: Arc<str> = paragraph.context.into();
            let context_chars: Vec<usize> = context.char_indices().map(|(at, _)| at).collect();
            for qa in paragraph.qas {
                let at = || format!("{}:{} (question {})", path.display(), line_of(&qa.id), qa.id);
                if qa.answers.is_empty() {
                    loaded.skipped.add(NO_ANSWER, at());
                    continue;
                }
                let checked = check_answers(&context, &context_chars, &qa.answers)
                    .and_then(|()| {
                        ensure!(ids.insert(qa.id.clone()), "the id is used twice");
                        Ok(())
                    })
                    .with_context(at);
                let record = checked.map(|()| QaExample {
                    id: qa.id,
                    title: article.title.clone(),
                    context: context.clone(),
                    question: qa.question,
                    answers: qa.answers.into_iter().map(|a| Answer { text: a.text, start: a.answer_start }).collect(),
                });
                loaded.push_or_skip(record, policy)?;
            }
        }
    }
    Ok(loaded)
}

/// Each answer's text must be the context's text at `answer_start`: the training labels and
/// the evaluator's answer spans are computed from it.
fn check_answers(context: &str, char_starts: &[usize], answers: &[RawAnswer]) -> Result<()> {
    for answer in answers {
        let n = answer.text.chars().count();
        let Some(end) = answer.answer_start.checked_add(n).filter(|&end| end <= char_starts.len()) else {
            bail!("answer_start {} + {n} characters runs past the context", answer.answer_start);
        };
        let byte = |i: usize| char_starts.get(i).copied().unwrap_or(context.len());
        let found = &context[byte(answer.answer_start)..byte(end)];
        ensure!(
            found == answer.text,
            "answer {:?} is not at answer_start {} (the context has {found:?} there)",
            answer.text,
            answer.answer_start
        );
    }
    Ok(())
}
