//! File and directory writes that never leave a half-written result behind: a file is written
//! beside its destination and renamed into place; a directory is built in a `Staging`
//! directory and moved into place when complete.
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, "tmp")?;
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

/// A directory built beside its destination `out`; `commit` moves it into place, replacing the
/// previous `out` in one rename, so readers see either the previous or the complete new
/// directory. Dropped without `commit` (a failed write), it is removed and `out` is untouched.
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates the staging directory for `out` (and `out`'s parent). With a `marker`, an
    /// existing non-empty `out` must hold that file, so that a mistyped output path never
    /// replaces unrelated files.
    pub fn new(out: &Path, marker: Option<&str>) -> Result<Self> {
        if let Some(marker) = marker {
            if out.exists() {
                let is_empty_dir = out.is_dir() && std::fs::read_dir(out)?.next().is_none();
                if !out.join(marker).exists() && !is_empty_dir {
                    bail!(
                        "{} exists and holds no {marker}, so it is not an earlier output of this command; \
                         choose another output folder or remove it",
                        out.display()
                    );
                }
            }
        }
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let dir = sibling(out, "staging")?;
        // Only a crashed earlier process with this process's id can have left it.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, out: out.to_path_buf(), committed: false })
    }

    /// Where to write the new directory's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the finished directory to `out`, replacing the previous one.
    pub fn commit(mut self) -> Result<()> {
        replace_dir(&self.dir, &self.out)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `.NAME.PURPOSE-PID` beside `path`: hidden, and not shared with another process.
fn sibling(path: &Path, purpose: &str) -> Result<PathBuf> {
    let name = path.file_name().with_context(|| format!("{}: no file or folder name", path.display()))?;
    let mut sibling = OsString::from(".");
    sibling.push(name);
    sibling.push(format!(".{purpose}-{}", std::process::id()));
    Ok(path.with_file_name(sibling))
}

/// Replaces the directory `dir` with `staging`. An existing `dir` is moved aside first (a
/// directory cannot be renamed over a non-empty one) and moved back if `staging` cannot take
/// its place.
fn replace_dir(staging: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return std::fs::rename(staging, dir).with_context(|| format!("moving {} into place", dir.display()));
    }
    let old = sibling(dir, "old")?;
    std::fs::rename(dir, &old).with_context(|| format!("moving aside {}", dir.display()))?;
    if let Err(err) = std::fs::rename(staging, dir) {
        let _ = std::fs::rename(&old, dir);
        return Err(err).with_context(|| format!("moving {} into place", dir.display()));
    }
    std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn staging_is_removed_unless_committed_and_unrelated_dirs_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("exp");
        {
            let staging = Staging::new(&out, Some("export.json")).unwrap();
            std::fs::write(staging.dir().join("x"), b"half").unwrap();
        }
        assert!(names(root.path()).is_empty(), "a failed write left files");

        let staging = Staging::new(&out, Some("export.json")).unwrap();
        std::fs::write(staging.dir().join("export.json"), b"{}").unwrap();
        staging.commit().unwrap();
        assert!(out.join("export.json").exists());
        assert!(Staging::new(&out, Some("export.json")).is_ok(), "an earlier output may be replaced");

        let other = root.path().join("notes");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("keep.txt"), b"mine").unwrap();
        let err = Staging::new(&other, Some("export.json")).err().unwrap();
        assert!(format!("{err:#}").contains("not an earlier output"), "{err:#}");
    }

    /// A checkpoint (`last/`, no marker) rewritten after every interval: a write that fails
    /// half-way leaves the previous checkpoint as it was and no staging directory.
    #[test]
    fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let last = root.path().join("run/last");
        let write = |text: &str, fail: bool| -> Result<()> {
            let staging = Staging::new(&last, None)?;
            std::fs::write(staging.dir().join("adapter.safetensors"), text)?;
            if fail {
                bail!("the disk is full");
            }
            std::fs::write(staging.dir().join("trainer_state.json"), text)?;
            staging.commit()
        };
        write("step 10", false).unwrap();
        write("step 20", true).unwrap_err();
        assert_eq!(names(&root.path().join("run")), ["last"]);
        assert_eq!(names(&last), ["adapter.safetensors", "trainer_state.json"]);
        assert_eq!(std::fs::read_to_string(last.join("adapter.safetensors")).unwrap(), "step 10");

        write("step 30", false).unwrap();
        assert_eq!(names(&root.path().join("run")), ["last"]);
        assert_eq!(std::fs::read_to_string(last.join("trainer_state.json")).unwrap(), "step 30");
    }

    #[test]
    fn a_failed_replacement_puts_the_previous_directory_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.json"), b"old").unwrap();
        let err = replace_dir(&root.path().join("never-built"), &dir).unwrap_err();
        assert!(format!("{err:#}").contains("model"), "{err:#}");
        assert_eq!(names(root.path()), ["model"]);
        assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"old");
    }

    #[test]
    fn atomic_writes_leave_only_the_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("metrics.csv");
        write_atomic(&path, b"step\n").unwrap();
        write_atomic(&path, b"step\n1\n").unwrap();
        assert_eq!(names(root.path()), ["metrics.csv"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"step\n1\n");
        assert!(write_atomic(&root.path().join("missing/metrics.csv"), b"").is_err());
        assert_eq!(names(root.path()), ["metrics.csv"]);
    }
}
