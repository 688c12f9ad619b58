//! File writes that never leave a half-written file behind.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A sibling name for an in-progress write of `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Replaces the directory `dir` with the one built in `staging` in one rename, so readers see
/// either the old or the complete new directory.
pub fn replace_dir(staging: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".{}.old", std::process::id()));
        let old = dir.with_file_name(name);
        std::fs::rename(dir, &old).with_context(|| format!("moving aside {}", dir.display()))?;
        std::fs::rename(staging, dir).with_context(|| format!("moving {} into place", dir.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    } else {
        std::fs::rename(staging, dir).with_context(|| format!("moving {} into place", dir.display()))?;
    }
    Ok(())
}
