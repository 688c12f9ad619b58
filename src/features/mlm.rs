//! Masked-language-modelling inputs, as Hugging Face's `run_mlm.py` builds them: the corpus is
//! tokenised once (special tokens around every line) into a token file on disk, then cut into
//! blocks of `max_length` tokens over line boundaries (`group_texts`) or one block per line
//! (`--line_by_line`, truncated); each block is masked when it is drawn: 15% of its tokens
//! (special tokens never) chosen, of those 80% replaced by the mask token, 10% by a random
//! token, 10% kept (`DataCollatorForLanguageModeling`), or whole words chosen at once.
//!
//! Token files: `NAME.tokens` holds u32 little-endian ids, the top bit set on a token that
//! continues the word of the one before (for whole-word masking); `NAME.lines` holds each
//! line's first token position as u64 little-endian.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use crate::seed::SeedStream;

pub use crate::model::mlm_head::IGNORED;

const CONTINUES_WORD: u32 = 1 << 31;
/// Lines tokenised together: enough to keep the tokenizer's threads busy, little memory.
const LINES_PER_CHUNK: usize = 2000;

/// What masking needs to know of the tokenizer.
#[derive(Debug, Clone)]
pub struct MlmVocab {
    pub mask_id: u32,
    pub pad_id: u32,
    /// Replacement tokens are drawn uniformly from 0..size, as `torch.randint(len(tokenizer))`.
    pub size: u32,
    /// Never chosen for prediction (`all_special_ids`: CLS, SEP, PAD, UNK, MASK, ...), sorted.
    pub special: Vec<u32>,
}

impl MlmVocab {
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let mut special: Vec<u32> = tokenizer.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        special.sort_unstable();
        let mask_id = ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .context("the tokenizer has no mask token ([MASK] or <mask>)")?;
        let pad_id = crate::features::pad_id(tokenizer)? as u32;
        Ok(Self { mask_id, pad_id, size: tokenizer.get_vocab_size(true) as u32, special })
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.binary_search(&id).is_ok()
    }
}

/// How a corpus is cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    pub max_length: usize,
    /// One block per line (truncated to `max_length`) instead of grouped blocks.
    pub line_by_line: bool,
}

/// Where a line goes while a corpus is tokenised.
pub enum Split<'a> {
    /// All lines into the one file.
    All,
    /// Each line into the held-out file `path` when `chosen(line index)` says so.
    HoldOut { path: &'a Path, chosen: &'a dyn Fn(u64) -> bool },
}

/// Counts of a tokenised corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorpusCounts {
    pub lines: u64,
    pub tokens: u64,
}

/// A token file being written, renamed into place by `finish`.
struct TokenWriter {
    path: PathBuf,
    tokens: BufWriter<File>,
    lines: BufWriter<File>,
    counts: CorpusCounts,
}

impl TokenWriter {
    fn create(path: &Path) -> Result<Self> {
        let open = |ext: &str| -> Result<BufWriter<File>> {
            let p = tmp_path(path, ext);
            Ok(BufWriter::new(File::create(&p).with_context(|| format!("creating {}", p.display()))?))
        };
        Ok(Self { path: path.to_path_buf(), tokens: open("tokens")?, lines: open("lines")?, counts: CorpusCounts::default() })
    }

    fn push(&mut self, ids: &[u32], word_ids: &[Option<u32>]) -> Result<()> {
        self.lines.write_all(&self.counts.tokens.to_le_bytes())?;
        for (k, &id) in ids.iter().enumerate() {
            let continues = k > 0 && word_ids[k].is_some() && word_ids[k] == word_ids[k - 1];
            let stored = if continues { id | CONTINUES_WORD } else { id };
            self.tokens.write_all(&stored.to_le_bytes())?;
        }
        self.counts.lines += 1;
        self.counts.tokens += ids.len() as u64;
        Ok(())
    }

    fn finish(self) -> Result<CorpusCounts> {
        for (writer, ext) in [(self.tokens, "tokens"), (self.lines, "lines")] {
            let file = writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", self.path.display()))?;
            file.sync_all()?;
            std::fs::rename(tmp_path(&self.path, ext), self.path.with_extension(ext))
                .with_context(|| format!("writing {}", self.path.with_extension(ext).display()))?;
        }
        Ok(self.counts)
    }
}

fn tmp_path(path: &Path, ext: &str) -> PathBuf {
    path.with_extension(format!("{ext}.tmp"))
}

/// Tokenises the texts of `files` (streamed; see `data::text`) into the token file `out`
/// (and, with `Split::HoldOut`, the chosen lines into its file). `on_line` is told each
/// line's number, for progress. Returns the counts of `out` and of `held_out`.
pub fn tokenize_corpus(
    tokenizer: &Tokenizer,
    files: &[PathBuf],
    blocking: Blocking,
    split: Split,
    out: &Path,
    on_line: &dyn Fn(u64),
) -> Result<(CorpusCounts, CorpusCounts)> {
    let mut tokenizer = tokenizer.clone();
    // The model directory's tokenizer.json may pad or truncate; grouped blocks need the whole
    // line, padding is added per batch.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokenizer = if blocking.line_by_line { crate::features::tokenizer::truncating(tokenizer, blocking.max_length)? } else { tokenizer };
    let mut main = TokenWriter::create(out)?;
    let mut side = match split {
        Split::All => None,
        Split::HoldOut { path, .. } => Some(TokenWriter::create(path)?),
    };
    let mut index = 0u64;
    for file in files {
        let mut texts = crate::data::text::read_texts(file)?.peekable();
        while texts.peek().is_some() {
            let chunk: Vec<(usize, String)> = texts.by_ref().take(LINES_PER_CHUNK).collect::<Result<_>>()?;
            let inputs: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            let encodings = tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| anyhow::anyhow!("{}:{}: tokenising: {e}", file.display(), chunk[0].0))?;
            for ((number, _), enc) in chunk.iter().zip(&encodings) {
                let to_side = match split {
                    Split::HoldOut { chosen, .. } => chosen(index),
                    Split::All => false,
                };
                let writer = if to_side { side.as_mut().expect("held-out writer") } else { &mut main };
                writer.push(enc.get_ids(), enc.get_word_ids()).with_context(|| format!("{}:{number}", file.display()))?;
                index += 1;
            }
            on_line(index);
        }
    }
    let side_counts = match side {
        Some(w) => w.finish()?,
        None => CorpusCounts::default(),
    };
    Ok((main.finish()?, side_counts))
}

/// A tokenised corpus, memory-mapped, cut into blocks.
pub struct Corpus {
    tokens: memmap2::Mmap,
    /// (first token, length) of each block.
    blocks: Vec<(u64, u32)>,
}

impl Corpus {
    /// Opens the token file written by `tokenize_corpus` at `path`.
    pub fn open(path: &Path, blocking: Blocking) -> Result<Self> {
        let tokens_path = path.with_extension("tokens");
        let lines_path = path.with_extension("lines");
        let map = |p: &Path| -> Result<memmap2::Mmap> {
            let file = File::open(p).with_context(|| format!("reading {}", p.display()))?;
            // SAFETY: the token files are written once, renamed into place and never changed.
            unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", p.display()))
        };
        let tokens = map(&tokens_path)?;
        if tokens.len() % 4 != 0 {
            bail!("{}: {} bytes is not a whole number of u32 tokens (damaged file?)", tokens_path.display(), tokens.len());
        }
        let total = (tokens.len() / 4) as u64;
        let max = blocking.max_length as u64;
        let blocks = if blocking.line_by_line {
            let lines = map(&lines_path)?;
            let starts: Vec<u64> = lines.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
            let ends = starts.iter().skip(1).copied().chain(std::iter::once(total));
            starts.iter().zip(ends).filter(|(s, e)| e > s).map(|(&s, e)| (s, (e - s).min(max) as u32)).collect()
        } else {
            // group_texts: whole blocks only, the remainder dropped (kept when it is all).
            let n = total / max;
            if n == 0 && total > 0 {
                vec![(0, total as u32)]
            } else {
                (0..n).map(|i| (i * max, max as u32)).collect()
            }
        };
        Ok(Self { tokens, blocks })
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Block `i` as stored (ids with the word-continuation bit).
    pub fn block(&self, i: usize) -> Vec<u32> {
        let (start, len) = self.blocks[i];
        let bytes = &self.tokens[start as usize * 4..(start as usize + len as usize) * 4];
        bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Masking {
    /// Share of (non-special) tokens chosen for prediction: 0.15.
    pub probability: f64,
    /// Choose whole words (all pieces of a word together) instead of single tokens.
    pub whole_word: bool,
}

/// Masks one stored block with the draws of `seed`: (input ids, labels), labels `IGNORED`
/// where a token is not predicted.
pub fn mask_block(block: &[u32], vocab: &MlmVocab, masking: Masking, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut rng = SeedStream::new(seed);
    let mut inputs = Vec::with_capacity(block.len());
    let mut labels = Vec::with_capacity(block.len());
    let mut word_chosen = false;
    for &stored in block {
        let id = stored & !CONTINUES_WORD;
        let continues = stored & CONTINUES_WORD != 0;
        let chosen = if vocab.is_special(id) {
            false
        } else if masking.whole_word && continues {
            word_chosen
        } else {
            rng.next_unit() < masking.probability
        };
        word_chosen = chosen;
        if !chosen {
            inputs.push(i64::from(id));
            labels.push(IGNORED);
            continue;
        }
        let r = rng.next_unit();
        let input = if r < 0.8 {
            vocab.mask_id
        } else if r < 0.9 {
            (rng.next_u64() % u64::from(vocab.size)) as u32
        } else {
            id
        };
        inputs.push(i64::from(input));
        labels.push(i64::from(id));
    }
    (inputs, labels)
}

/// A padded batch of masked blocks, row-major [rows, cols].
#[derive(Debug, Clone, PartialEq)]
pub struct MlmBatch {
    pub rows: usize,
    pub cols: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub labels: Vec<i64>,
}

/// Pads masked blocks to the longest with `pad_id` (attention 0, label `IGNORED`).
pub fn collate(masked: &[(Vec<i64>, Vec<i64>)], pad_id: u32) -> MlmBatch {
    let cols = masked.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
    let mut batch = MlmBatch { rows: masked.len(), cols, input_ids: Vec::new(), attention_mask: Vec::new(), labels: Vec::new() };
    for (inputs, labels) in masked {
        let pad = cols - inputs.len();
        batch.input_ids.extend(inputs.iter().copied().chain(std::iter::repeat_n(i64::from(pad_id), pad)));
        batch.attention_mask.extend(std::iter::repeat_n(1, inputs.len()).chain(std::iter::repeat_n(0, pad)));
        batch.labels.extend(labels.iter().copied().chain(std::iter::repeat_n(IGNORED, pad)));
    }
    batch
}
