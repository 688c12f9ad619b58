//! File and directory writes that never leave a half-written result behind: a file is written
//! beside its destination and renamed into place; a directory is built in a `Staging`
//! directory and moved into place when complete. What a killed process leaves beside a
//! destination (hidden `.NAME.tmp-PID`, `.NAME.staging-PID`, `.NAME.old-PID`) is cleared by
//! the next write of that destination, or by `clear_stale`.
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_all(&[(path, bytes)])
}

/// Writes each file as `write_atomic` does, but renames none into place before all are
/// written: a failure (a full disk) leaves every previous file as it was. The renames follow
/// the order given, so the file that marks a complete result goes last.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    let mut result = (|| -> Result<()> {
        for &(path, bytes) in files {
            clear_stale(path)?;
            let tmp = sibling(path, "tmp")?;
            written.push((tmp.clone(), path));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(bytes)?;
                file.sync_all()
            };
            write().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })();
    if result.is_ok() {
        result = written
            .iter()
            .try_for_each(|(tmp, path)| std::fs::rename(tmp, path).with_context(|| format!("writing {}", path.display())));
    }
    if result.is_err() {
        for (tmp, _) in &written {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// Removes what killed processes left beside `path` (see `sibling`): temporary files, staging
/// directories and a directory moved aside to be replaced. That last one is put back when
/// `path` is missing (the process died between the two renames of `replace_dir`), else
/// removed. Only leftovers of processes that are gone are touched.
pub fn clear_stale(path: &Path) -> Result<()> {
    let (Some(name), Some(parent)) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", parent.display())),
    };
    let prefix = format!(".{name}.");
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", parent.display()))?;
        let file_name = entry.file_name();
        let Some((purpose, pid)) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|r| r.rsplit_once('-')) else {
            continue;
        };
        if !["tmp", "staging", "old"].contains(&purpose) || !pid.parse().is_ok_and(process_gone) {
            continue;
        }
        let stale = entry.path();
        if purpose == "old" && !path.exists() {
            std::fs::rename(&stale, path).with_context(|| format!("restoring {} from {}", path.display(), stale.display()))?;
        } else if entry.file_type().with_context(|| format!("reading {}", stale.display()))?.is_dir() {
            std::fs::remove_dir_all(&stale).with_context(|| format!("removing stale {}", stale.display()))?;
        } else {
            std::fs::remove_file(&stale).with_context(|| format!("removing stale {}", stale.display()))?;
        }
    }
    Ok(())
}

/// Whether the process `pid` that named a leftover has ended: this very process id (an
/// earlier process that had it crashed), or, on Linux, one without a /proc entry. Without
/// /proc there is no portable check, and other processes' leftovers are kept.
fn process_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    pid == std::process::id() || (proc.join("self").exists() && !proc.join(pid.to_string()).exists())
}

/// A directory built beside its destination `out`; `commit` moves it into place, replacing the
/// previous `out`, so readers see either the previous or the complete new directory (or, for
/// the instant between `replace_dir`'s two renames, none: a process killed there leaves the
/// previous one moved aside, and `clear_stale` puts it back). Dropped without `commit` (a
/// failed write), it is removed and `out` is untouched.
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    parents: NewDirs,
    committed: bool,
}

impl Staging {
    /// Creates the staging directory for `out` (and `out`'s parent). With a `marker`, an
    /// existing non-empty `out` must hold that file, so that a mistyped output path never
    /// replaces unrelated files.
    pub fn new(out: &Path, marker: Option<&str>) -> Result<Self> {
        clear_stale(out)?;
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
        let parents = NewDirs::create(out.parent().unwrap_or(Path::new("")))?;
        let dir = sibling(out, "staging")?;
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, out: out.to_path_buf(), parents, committed: false })
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
            self.parents.remove();
        }
    }
}

/// The folders `create` made for an output, so that a failed write can remove them again.
pub struct NewDirs {
    dir: PathBuf,
    /// The outermost folder that did not exist.
    outermost: Option<PathBuf>,
}

impl NewDirs {
    /// Creates `dir` and its missing parents.
    pub fn create(dir: &Path) -> Result<Self> {
        let outermost = dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.exists()).last().map(Path::to_path_buf);
        if outermost.is_some() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self { dir: dir.to_path_buf(), outermost })
    }

    /// Removes the folders made by `create` that are still empty.
    pub fn remove(&self) {
        let Some(outermost) = &self.outermost else { return };
        for dir in self.dir.ancestors() {
            if std::fs::remove_dir(dir).is_err() || dir == outermost {
                break;
            }
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
    // The new directory is in place; what is left of the old one goes with the next write.
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
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
        {
            let _staging = Staging::new(&root.path().join("exports/run/exp"), Some("export.json")).unwrap();
            assert_eq!(names(&root.path().join("exports/run")), [format!(".exp.staging-{}", std::process::id())]);
        }
        assert!(names(root.path()).is_empty(), "a failed write left the folders it made");

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

    /// What a process killed mid-write leaves: the leftovers of a process that is gone are
    /// cleared by the next write (a directory moved aside to be replaced is put back), those of
    /// a running process are not.
    #[test]
    fn leftovers_of_killed_processes_are_cleared_and_a_moved_aside_directory_restored() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let (gone, running) = (child.id(), 1);
        let run = root.path();
        let leftover = |name: &str, pid: u32| run.join(format!(".{name}-{pid}"));
        std::fs::create_dir(leftover("last.old", gone)).unwrap();
        std::fs::write(leftover("last.old", gone).join("trainer_state.json"), "step 4").unwrap();
        std::fs::create_dir(leftover("last.staging", gone)).unwrap();
        std::fs::create_dir(leftover("best.staging", running)).unwrap();
        std::fs::write(leftover("metrics.csv.tmp", gone), "step\n1").unwrap();
        std::fs::write(leftover("metrics.csv.tmp", running), "step\n1").unwrap();

        clear_stale(&run.join("last")).unwrap();
        assert_eq!(std::fs::read_to_string(run.join("last/trainer_state.json")).unwrap(), "step 4");
        let staging = Staging::new(&run.join("best"), None).unwrap();
        staging.commit().unwrap();
        write_atomic(&run.join("metrics.csv"), b"step\n").unwrap();
        let running_leftovers = [format!(".best.staging-{running}"), format!(".metrics.csv.tmp-{running}")];
        let mut expected: Vec<String> = ["best", "last", "metrics.csv"].iter().map(|s| s.to_string()).chain(running_leftovers).collect();
        expected.sort();
        assert_eq!(names(run), expected);

        // With the directory in place, a moved-aside copy is only removed.
        std::fs::create_dir(leftover("last.old", gone)).unwrap();
        Staging::new(&run.join("last"), None).unwrap();
        assert_eq!(std::fs::read_to_string(run.join("last/trainer_state.json")).unwrap(), "step 4");
        assert!(!leftover("last.old", gone).exists());
    }

    #[test]
    fn files_written_together_keep_all_previous_files_when_one_fails() {
        let root = tempfile::tempdir().unwrap();
        let (csv, json) = (root.path().join("r.csv"), root.path().join("r.json"));
        write_atomic_all(&[(&json, b"{1}"), (&csv, b"1")]).unwrap();
        let err = write_atomic_all(&[(&json, b"{2}"), (&root.path().join("missing/p.json"), b""), (&csv, b"2")]).unwrap_err();
        assert!(format!("{err:#}").contains("p.json"), "{err:#}");
        assert_eq!(names(root.path()), ["r.csv", "r.json"]);
        assert_eq!((std::fs::read(&json).unwrap(), std::fs::read(&csv).unwrap()), (b"{1}".to_vec(), b"1".to_vec()));
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
