//! Answer normalisation of the official QA evaluation scripts, reproduced character class by
//! character class (Python's `str.lower`, `str.split`, `re`'s Unicode `\b`), since a
//! different notion of "punctuation" or "word boundary" changes the scores.
//!
//! - SQuAD v1.1 (`evaluate-v1.1.py`): lower-case; drop ASCII punctuation (Python's
//!   `string.punctuation`); replace the words a/an/the by a space; split on whitespace.
//! - MLQA (`mlqa_evaluation_v1.py`, by answer language): lower-case; drop every Unicode
//!   punctuation character (general category P*) and ASCII punctuation; replace the
//!   language's articles by a space (Arabic: every occurrence of "ال", also inside words, as
//!   the script's regular expression does); split on whitespace, or for Chinese, make each
//!   CJK ideograph (U+4E00-U+9FA5) and punctuation character a token of its own.
//! - FUN's Chinese variant (the paper's code, `utils/squad/evaluate.py`, used for zh): ASCII
//!   punctuation only, no articles, Chinese segmentation as MLQA's, so full-width punctuation
//!   is kept as separate tokens.
use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// The official script whose normalisation a suite uses, named in the suite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerScheme {
    #[serde(rename = "squad-v1.1")]
    SquadV11,
    #[serde(rename = "mlqa-v1")]
    MlqaV1,
    #[serde(rename = "fun-zh")]
    FunZh,
}

impl fmt::Display for AnswerScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerScheme::SquadV11 => "squad-v1.1",
            AnswerScheme::MlqaV1 => "mlqa-v1",
            AnswerScheme::FunZh => "fun-zh",
        })
    }
}

impl AnswerScheme {
    /// The normalisation for answers in `lang`. MLQA's script knows only its seven languages
    /// and fails on others; so does this.
    pub fn for_language(self, lang: &str) -> Result<AnswerNormalization> {
        Ok(match self {
            AnswerScheme::SquadV11 => AnswerNormalization::SQUAD,
            AnswerScheme::FunZh => AnswerNormalization::FUN_ZH,
            AnswerScheme::MlqaV1 => {
                let (articles, segmentation) = match lang {
                    "en" => (Articles::Words(&["a", "an", "the"]), Segmentation::Whitespace),
                    "es" => (
                        Articles::Words(&["un", "una", "unos", "unas", "el", "la", "los", "las"]),
                        Segmentation::Whitespace,
                    ),
                    "vi" => (Articles::Words(&["của", "là", "cái", "chiếc", "những"]), Segmentation::Whitespace),
                    "de" => (
                        Articles::Words(&[
                            "ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des",
                        ]),
                        Segmentation::Whitespace,
                    ),
                    "ar" => (Articles::Substring("ال"), Segmentation::Whitespace),
                    "hi" => (Articles::None, Segmentation::Whitespace),
                    "zh" => (Articles::None, Segmentation::Chinese),
                    other => bail!(
                        "the MLQA metric has no normalisation for language {other:?} (it knows en es hi vi de ar zh)"
                    ),
                };
                AnswerNormalization { punctuation: Punctuation::Unicode, articles, segmentation }
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Punctuation {
    Ascii,
    /// General category P* plus ASCII punctuation (which includes the symbols $+<=>^`|~).
    Unicode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Articles {
    None,
    /// Whole words, as `\b(w1|w2|...)\b` matches them.
    Words(&'static [&'static str]),
    /// Every occurrence.
    Substring(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segmentation {
    Whitespace,
    /// MLQA's `mixed_segmentation`.
    Chinese,
}

/// One script's normalisation for one answer language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerNormalization {
    punctuation: Punctuation,
    articles: Articles,
    segmentation: Segmentation,
}

impl AnswerNormalization {
    pub const SQUAD: AnswerNormalization = AnswerNormalization {
        punctuation: Punctuation::Ascii,
        articles: Articles::Words(&["a", "an", "the"]),
        segmentation: Segmentation::Whitespace,
    };
    pub const FUN_ZH: AnswerNormalization = AnswerNormalization {
        punctuation: Punctuation::Ascii,
        articles: Articles::None,
        segmentation: Segmentation::Chinese,
    };

    /// The normalised answer: its tokens joined by single spaces.
    pub fn normalize(&self, text: &str) -> String {
        self.tokens(text).join(" ")
    }

    /// The tokens F1 counts (the normalised answer split on whitespace).
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let lowered = text.to_lowercase();
        let unpunctuated: String = lowered.chars().filter(|&c| !self.is_punctuation(c)).collect();
        let stripped = match self.articles {
            Articles::None => unpunctuated,
            Articles::Words(words) => replace_words(&unpunctuated, words),
            Articles::Substring(article) => unpunctuated.replace(article, " "),
        };
        match self.segmentation {
            Segmentation::Whitespace => split_whitespace(&stripped),
            Segmentation::Chinese => self.mixed_segmentation(&stripped),
        }
    }

    fn is_punctuation(&self, c: char) -> bool {
        c.is_ascii_punctuation() || (self.punctuation == Punctuation::Unicode && is_unicode_punctuation(c))
    }

    /// CJK ideographs and punctuation become tokens of their own; runs of other characters
    /// are split on whitespace. The punctuation set here is always the Unicode one: the FUN
    /// variant removes only ASCII punctuation but segments with MLQA's full set.
    fn mixed_segmentation(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        let mut pending = String::new();
        for c in text.chars() {
            if ('\u{4e00}'..='\u{9fa5}').contains(&c) || c.is_ascii_punctuation() || is_unicode_punctuation(c) {
                tokens.extend(split_whitespace(&pending));
                pending.clear();
                tokens.push(c.to_string());
            } else {
                pending.push(c);
            }
        }
        tokens.extend(split_whitespace(&pending));
        tokens
    }
}

fn is_unicode_punctuation(c: char) -> bool {
    matches!(
        get_general_category(c),
        Gc::ConnectorPunctuation
            | Gc::DashPunctuation
            | Gc::OpenPunctuation
            | Gc::ClosePunctuation
            | Gc::InitialPunctuation
            | Gc::FinalPunctuation
            | Gc::OtherPunctuation
    )
}

/// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C-U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`.
fn split_whitespace(text: &str) -> Vec<String> {
    text.split(is_python_space).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// A character of Python's Unicode `\w`: letters, numbers (`str.isalnum()`) and "_".
fn is_word_char(c: char) -> bool {
    c == '_'
        || matches!(
            get_general_category(c),
            Gc::UppercaseLetter
                | Gc::LowercaseLetter
                | Gc::TitlecaseLetter
                | Gc::ModifierLetter
                | Gc::OtherLetter
                | Gc::DecimalNumber
                | Gc::LetterNumber
                | Gc::OtherNumber
        )
}

/// `re.sub(r"\b(w1|w2|...)\b", " ", text)`. Each article is made of word characters only, so
/// a match is exactly a maximal run of word characters equal to an article.
fn replace_words(text: &str, words: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let is_word = rest.starts_with(is_word_char);
        let end = rest.find(|c: char| is_word_char(c) != is_word).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        if is_word && words.contains(&run) {
            out.push(' ');
        } else {
            out.push_str(run);
        }
        rest = tail;
    }
    out
}
