//! The run's CSV files (metrics, Fisher traces, validation, schedule): appended row by row and
//! flushed, so a killed run keeps what it logged; a resumed run first drops the rows logged
//! after its checkpoint, so its files equal those of an uninterrupted run.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsx;

pub struct CsvLog {
    path: PathBuf,
    file: File,
}

impl CsvLog {
    /// Opens `path` with `header`. With `keep_through`, keeps only rows whose first column (the
    /// step) is at most that step; without, starts the file afresh.
    pub fn open(path: &Path, header: &[&str], keep_through: Option<usize>) -> Result<Self> {
        let head = header.join(",");
        let mut text = format!("{head}\n");
        if let (Some(step), true) = (keep_through, path.exists()) {
            let old = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mut lines = old.split_inclusive('\n');
            if lines.next().map(|l| l.trim_end_matches('\n')) != Some(head.as_str()) {
                bail!("{}: header differs from `{head}`; was it written by another version?", path.display());
            }
            for line in lines {
                // A row without its newline was cut short by a kill (`12,0,0.5` may end as `1`).
                let Some(line) = line.strip_suffix('\n') else { continue };
                let first = line.split(',').next().unwrap_or_default();
                let row_step: usize = first.parse().with_context(|| format!("{}: bad step `{first}`", path.display()))?;
                if row_step <= step {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        fsx::write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    pub fn row(&mut self, fields: &[String]) -> Result<()> {
        let line = fields.join(",") + "\n";
        self.file.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_rows_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut log = CsvLog::open(&path, &["step", "loss"], None).unwrap();
        for s in 1..=5 {
            log.row(&[s.to_string(), "0.5".into()]).unwrap();
        }
        drop(log);
        let mut log = CsvLog::open(&path, &["step", "loss"], Some(3)).unwrap();
        log.row(&["4".into(), "0.25".into()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "step,loss\n1,0.5\n2,0.5\n3,0.5\n4,0.25\n");

        // Killed while appending the row of step 12: a cut-off `1` is not the row of step 1.
        std::fs::write(&path, format!("{text}1")).unwrap();
        CsvLog::open(&path, &["step", "loss"], Some(4)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
