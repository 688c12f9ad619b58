//! Line-oriented files (JSON lines, TSV, plain text) read with each line's number kept for
//! error messages; a name ending in `.gz` is decompressed as it is read.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// The non-blank lines of `path` with their 1-based numbers, read as they are consumed (the
/// MultiNLI training file is 450 MB); a UTF-8 byte-order mark on the first line is dropped.
pub(crate) fn read_lines(path: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>> + '_> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        // Multi-member, as `cat a.gz b.gz` and many corpus dumps are.
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    Ok(reader.lines().enumerate().filter_map(move |(i, line)| match line {
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => {
            let line = if i == 0 { line.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(line) } else { line };
            Some(Ok((i + 1, line)))
        }
        Err(err) => Some(Err(err).with_context(|| format!("{}:{}: not UTF-8 text (or a damaged .gz)", path.display(), i + 1))),
    }))
}

/// Parses one JSON-lines record, naming the file and line on failure.
pub(crate) fn parse_json_line<T: serde::de::DeserializeOwned>(path: &Path, number: usize, line: &str) -> Result<T> {
    serde_json::from_str(line).with_context(|| format!("{}:{number}: malformed record", path.display()))
}

/// The whole of `path` as text. Bytes that are not UTF-8 are an error naming the line and the
/// byte they start at, as a parser's error would.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|err| {
        let at = err.utf8_error().valid_up_to();
        let line = err.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow!("{}:{line}: not UTF-8 text (byte {at})", path.display())
    })
}
