//! An XLM-R style SentencePiece Unigram tokenizer (`tokenizer.json` for the tokenizers crate)
//! built from raw pieces, scores and a per-code-point normalisation map.
//!
//! The pipeline gives `e5.c`'s ids, except in the rare cases listed at [`build`]:
//! 1. normaliser: the map as a `Precompiled` charsmap, then runs of 2+ spaces -> one space;
//! 2. pre-tokeniser: Metaspace (spaces -> `▁`, a `▁` prepended unless the text starts with
//!    one, split before each `▁`), then every character that no piece contains is isolated;
//! 3. model: Unigram (Viterbi over the pieces' scores; a character without a piece is `<unk>`);
//! 4. post-processor: `<s> A </s>` and `<s> A </s></s> B </s>`, all type ids 0.
use anyhow::{anyhow, bail, ensure, Context, Result};
use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::charsmap;
use super::q4_format::Vocabulary;

/// The metaspace marker SentencePiece puts in place of spaces.
pub const METASPACE: char = '▁';

/// The tokenizer for `vocab` with the normaliser `norm_map` (code point -> replacement).
///
/// Where the tokenizers crate's building blocks differ from `e5.c`, and what is done about it:
/// - Unigram fuses a run of unknown characters into one `<unk>`; `e5.c` emits one `<unk>` per
///   character. Every character outside the pieces is therefore isolated by the pre-tokeniser.
///   This is exact: no piece contains such a character, so no split can cut a piece.
/// - `Precompiled` looks up a whole grapheme cluster shorter than 6 bytes first and, if its
///   first character is mapped, replaces the whole cluster with that character's replacement.
///   A mapped character followed by a combining mark (e.g. NBSP or a fullwidth letter followed
///   by U+0301) thus loses the mark, where `e5.c` keeps it. Hugging Face's XLM-R tokenizer
///   does the same. Left as is: none of the 36,960 XCOPA and XQuAD texts has such a pair.
/// - `e5.c` sums Viterbi path scores in f32 over the whole text, the Unigram model in f64 per
///   word, so a near-tie (a score difference around 1e-5) can go the other way; ours is then
///   the true optimum. Seen once in those 36,960 texts.
/// - Special tokens typed as text (`<s>`, `<mask>`, ...) are split off before normalisation
///   here, as in Hugging Face's tokenizer; `e5.c` leaves them to the Viterbi search (and never
///   matches `<unk>`), so the ids next to them differ.
pub fn build(vocab: &Vocabulary, norm_map: &[(char, String)]) -> Result<Tokenizer> {
    let id = |i: u32| vocab.pieces.get(i as usize).map(|(p, _)| p.clone()).context("special id out of range");
    let (bos, eos, pad, unk) = (id(vocab.bos)?, id(vocab.eos)?, id(vocab.pad)?, id(vocab.unk)?);
    // Splitting at each `▁` before the Viterbi search (as e5.c does not) is exact only if no
    // piece has a `▁` after its first character.
    if let Some((p, _)) = vocab.pieces.iter().find(|(p, _)| p.char_indices().any(|(i, c)| c == METASPACE && i > 0)) {
        bail!("piece {p:?} has a `▁` after its start; splitting words at `▁` would change the segmentation");
    }

    let pieces: Vec<(String, f64)> = vocab.pieces.iter().map(|(p, s)| (p.clone(), f64::from(*s))).collect();
    let model = Unigram::from(pieces, Some(vocab.unk as usize), false).map_err(|e| anyhow!("Unigram model: {e}"))?;

    let charsmap = charsmap::build(norm_map)?;
    let precompiled = Precompiled::from(&charsmap).map_err(|e| anyhow!("charsmap: {e}"))?;
    for (from, to) in norm_map {
        ensure!(
            precompiled.transform(&from.to_string()) == Some(to.as_str()),
            "charsmap does not map U+{:04X} to {to:?}",
            *from as u32
        );
    }
    let collapse = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()), " ")
        .map_err(|e| anyhow!("space collapse: {e}"))?;
    let normalizer = NormalizerSequence::new(vec![precompiled.into(), collapse.into()]);

    let metaspace = Metaspace::new(METASPACE, PrependScheme::Always, true);
    let unknown = Split::new(SplitPattern::Regex(unknown_char_class(vocab)?), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| anyhow!("unknown-character split: {e}"))?;
    let pre_tokenizer = PreTokenizerSequence::new(vec![metaspace.clone().into(), unknown.into()]);

    let template = TemplateProcessing::builder()
        .try_single(format!("{bos} $A {eos}"))
        .map_err(|e| anyhow!("template: {e}"))?
        .try_pair(format!("{bos} $A {eos} {eos} $B {eos}"))
        .map_err(|e| anyhow!("template: {e}"))?
        .special_tokens(vec![(bos.as_str(), vocab.bos), (eos.as_str(), vocab.eos)])
        .build()
        .map_err(|e| anyhow!("template: {e}"))?;

    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(normalizer)).map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_post_processor(Some(template));
    tokenizer.with_decoder(Some(metaspace));
    let mut specials: Vec<AddedToken> =
        [bos, pad, eos, unk].into_iter().map(|t| AddedToken::from(t, true).normalized(false)).collect();
    // XLM-R's mask token, when the vocabulary has it, swallows the space before it.
    if vocab.pieces.last().is_some_and(|(p, _)| p == "<mask>") {
        specials.push(AddedToken::from("<mask>", true).normalized(false).lstrip(true));
    }
    tokenizer.add_special_tokens(specials).map_err(|e| anyhow!("special tokens: {e}"))?;
    Ok(tokenizer)
}

/// A regex character class that matches one character that no piece contains.
///
/// Isolating those characters is exact only if every character that some piece contains has a
/// single-character piece of its own (else the Viterbi search could still fall back to
/// `<unk>` inside a word, where the Unigram model fuses runs); this checks that.
fn unknown_char_class(vocab: &Vocabulary) -> Result<String> {
    let specials = [vocab.bos, vocab.eos, vocab.pad, vocab.unk];
    let ordinary = || vocab.pieces.iter().enumerate().filter(|(i, _)| !specials.contains(&(*i as u32))).map(|(_, (p, _))| p);
    let mut known: Vec<char> = ordinary().flat_map(|p| p.chars()).collect();
    known.sort_unstable();
    known.dedup();
    let single: std::collections::HashSet<char> =
        ordinary().filter(|p| p.chars().count() == 1).filter_map(|p| p.chars().next()).collect();
    if let Some(c) = known.iter().find(|c| !single.contains(c)) {
        bail!("U+{:04X} occurs in pieces but has no piece of its own", *c as u32);
    }
    let mut class = String::from("[^");
    let mut i = 0;
    while i < known.len() {
        let start = known[i];
        while i + 1 < known.len() && known[i + 1] as u32 == known[i] as u32 + 1 {
            i += 1;
        }
        let end = known[i];
        class.push_str(&format!("\\x{{{:X}}}", start as u32));
        if end != start {
            class.push_str(&format!("-\\x{{{:X}}}", end as u32));
        }
        i += 1;
    }
    class.push(']');
    Ok(class)
}
