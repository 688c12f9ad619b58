//! Loading the encoder's tokenizer: `tokenizer.json` when the model directory has one, else a
//! WordPiece `vocab.txt` set up exactly like Hugging Face's `BertTokenizerFast`.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{decoders, Tokenizer};

/// The tokenizer of the model in `dir`.
pub fn load(dir: &Path) -> Result<Tokenizer> {
    let dir = &crate::model::hub::resolve(dir)?;
    let json = dir.join("tokenizer.json");
    if json.exists() {
        return Tokenizer::from_file(&json).map_err(|e| anyhow!("{}: {e}", json.display()));
    }
    let vocab = dir.join("vocab.txt");
    if vocab.exists() {
        return from_wordpiece_vocab(&vocab, lowercase_setting(dir)?);
    }
    anyhow::bail!("{}: neither tokenizer.json nor vocab.txt found", dir.display())
}

/// `BertTokenizerFast(vocab_file, do_lower_case=lowercase)`: BERT normaliser (clean text,
/// Chinese characters split, accents stripped only when lowercasing), BERT pre-tokeniser,
/// WordPiece with `[UNK]` and 100 chars per word, `[CLS] A [SEP] B [SEP]` template.
pub fn from_wordpiece_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer> {
    let path = vocab.to_str().with_context(|| format!("{}: path is not UTF-8", vocab.display()))?;
    let model = WordPiece::from_file(path)
        .unk_token("[UNK]".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow!("{}: {e}", vocab.display()))?;
    let id = |token: &str| {
        model_token_id(&model, token).with_context(|| format!("{}: special token {token} missing", vocab.display()))
    };
    let cls = id("[CLS]")?;
    let sep = id("[SEP]")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| anyhow!("{}: {e}", vocab.display()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    tokenizer.with_decoder(Some(decoders::wordpiece::WordPiece::default()));
    Ok(tokenizer)
}

fn model_token_id(model: &WordPiece, token: &str) -> Option<u32> {
    use tokenizers::Model;
    model.token_to_id(token)
}

/// `do_lower_case` from `tokenizer_config.json`; without one, Hugging Face's default (true)
/// unless the directory is named as a cased model.
fn lowercase_setting(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        return Ok(value.get("do_lower_case").and_then(|v| v.as_bool()).unwrap_or(true));
    }
    let name = dir.to_string_lossy().to_lowercase();
    Ok(!name.contains("cased") || name.contains("uncased"))
}

/// `tokenizer` set to cut inputs to `max_length` tokens, Hugging Face's `longest_first`
/// strategy for pairs (specials included in the count).
pub fn truncating(mut tokenizer: Tokenizer, max_length: usize) -> Result<Tokenizer> {
    let params = tokenizers::TruncationParams {
        max_length,
        strategy: tokenizers::TruncationStrategy::LongestFirst,
        ..Default::default()
    };
    tokenizer.with_truncation(Some(params)).map_err(|e| anyhow!("truncation to {max_length}: {e}"))?;
    Ok(tokenizer)
}
