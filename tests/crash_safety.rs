//! Crash safety of the commands as a user runs them. `toolkit train`, `export` and `eval` are
//! killed with SIGKILL at random points (delays drawn from a seeded stream; some aimed at the
//! checkpoint written right after a logged step) and run again: training resumes to the
//! weights and metric rows of an uninterrupted run, and an export or a results CSV is either
//! absent, the previous one or the complete new one. A full disk (a size-limited tmpfs)
//! during a checkpoint, an export and an eval is a clear error that keeps the previous files.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{self, Tiny};
use toolkit::seed::SeedStream;

/// FUN with tr(F) tracking and validation, a checkpoint after every update: 20 updates.
const TRAIN: &str = "schedule = \"fun\"\nunfreeze_every = 5\nfisher_every = 5\nfisher_batches = 1\nmax_steps = 20\n\
                     save_every = 1\neval_every = 5\n";

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("the toolkit binary starts")
}

/// SIGKILL, then reap the process (a zombie would still count as running). Returns whether
/// the kill landed inside a write: the process left a temporary file or staging directory
/// (named with its process id) in `dir`.
fn kill(mut child: Child, dir: &Path) -> bool {
    child.kill().unwrap();
    child.wait().unwrap();
    let suffix = format!("-{}", child.id());
    cli::leftovers(dir).iter().any(|name| name.ends_with(&suffix))
}

/// Every path under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Waits until `child` has started writing under `dir` (anything there changed) or has ended.
fn wait_for_writing(child: &mut Child, dir: &Path, before: &[(PathBuf, u64, std::time::SystemTime)]) {
    while child.try_wait().unwrap().is_none() && snapshot(dir) == before {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The step of `run`'s last checkpoint, 0 without one.
fn checkpoint_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("last/trainer_state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["step"].as_u64())
        .unwrap_or(0)
}

/// Waits until `child` has logged a step after its checkpoint (the checkpoint of that step is
/// written next) or has ended; false when it ended.
fn wait_for_a_new_step(child: &mut Child, run: &Path, after: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let rows = std::fs::read_to_string(run.join("metrics.csv")).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0);
        if rows as u64 > after {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{}: no step logged within a minute", run.display());
}

/// What a reader of a run folder relies on reads back: the configuration, and each checkpoint
/// that is in place (a checkpoint moved aside mid-replacement is put back by the next run).
fn assert_readable(run: &Path) {
    if run.join("config.toml").exists() {
        toolkit::run_dir::RunDir::new(run).read_config().unwrap();
    }
    for dir in [run.join("last"), run.join("best")] {
        if dir.exists() {
            for file in ["adapter.safetensors", "model_head.safetensors"] {
                toolkit::model::Weights::read_safetensors(&dir.join(file), |n| Some(n.to_string()))
                    .unwrap_or_else(|e| panic!("{}: {e:#}", dir.join(file).display()));
            }
            for file in ["adapter_config.json", "head_config.json"] {
                let text = std::fs::read_to_string(dir.join(file)).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
            }
        }
    }
    if run.join("last").exists() {
        toolkit::train::checkpoint::load_state(&run.join("last")).unwrap();
    }
}

/// Every file under `dir` (relative path, bytes), but `skip`.
fn files(dir: &Path, skip: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.is_dir() {
                stack.push(path);
            } else if !skip.iter().any(|s| rel == Path::new(s)) {
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The same files with the same bytes: weights, optimizer state, metric rows, schedule.
fn assert_same_files(expected: &Path, got: &Path, skip: &[&str]) {
    let (a, b) = (files(expected, skip), files(got, skip));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{} vs {}: other files", expected.display(), got.display());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{}: {} differs from the uninterrupted result", got.display(), name.display());
    }
}

/// A run's files but config.toml, which names the run's own folder.
const RUN_SKIP: &[&str] = &["config.toml"];

#[test]
fn training_killed_at_random_points_resumes_to_the_uninterrupted_result() {
    let _guard = common::exclusive();
    let tiny = Tiny::new();
    let config = tiny.train_config("fun", TRAIN);
    let reference = tiny.root.join("reference");
    let started = Instant::now();
    cli::succeed(&mut tiny.train(&config, &reference));
    let full_run = started.elapsed();

    let mut delays = SeedStream::new(13);
    let (mut kills, mut in_write, mut after_end) = (0, 0, 0);
    // Four trials, and more (up to twelve) until a kill has landed inside a write: where the
    // kills land is a matter of timing, and once in twenty none did (CI, AVX2 AMD EPYC).
    let mut trial = 0;
    while trial < 4 || (in_write == 0 && trial < 12) {
        let run = tiny.root.join(format!("trial{trial}"));
        for k in 0..5 {
            let mut child = spawn(&mut tiny.train(&config, &run));
            if k % 2 == 0 {
                // Anywhere in the run, start-up included.
                std::thread::sleep(full_run.mul_f64(0.6 * delays.next_unit()));
            } else if wait_for_a_new_step(&mut child, &run, checkpoint_step(&run)) {
                // Aimed at the checkpoint written after the step just logged.
                std::thread::sleep(Duration::from_millis(60).mul_f64(delays.next_unit()));
            }
            after_end += usize::from(child.try_wait().unwrap().is_some());
            in_write += usize::from(kill(child, &run));
            kills += 1;
            assert_readable(&run);
        }
        cli::succeed(&mut tiny.train(&config, &run));
        assert_same_files(&reference, &run, RUN_SKIP);
        assert_eq!(cli::leftovers(&run), Vec::<String>::new(), "{}: leftovers of the kills", run.display());
        trial += 1;
    }
    eprintln!("{kills} kills: {in_write} inside a write, {after_end} after the process had ended; one run {full_run:.1?}");
    assert!(in_write > 0, "no kill landed inside a write: the test did not test what it says");
}

#[test]
fn killed_exports_and_evals_never_leave_a_partial_result() {
    let _guard = common::exclusive();
    let tiny = Tiny::new();
    let run = tiny.root.join("run");
    cli::succeed(&mut tiny.train(&tiny.train_config("short", "max_steps = 2\n"), &run));
    let mut delays = SeedStream::new(17);

    let reference = tiny.root.join("reference-export");
    let started = Instant::now();
    cli::succeed(&mut tiny.export(&run, &reference));
    let export_time = started.elapsed();
    let exports = tiny.root.join("exports");
    let out = exports.join("tiny");
    let mut in_write = 0;
    for k in 0..6 {
        let before = snapshot(&exports);
        let mut child = spawn(&mut tiny.export(&run, &out));
        if k % 2 == 0 {
            std::thread::sleep(export_time.mul_f64(1.2 * delays.next_unit()));
        } else {
            // Aimed at the writing of the files.
            wait_for_writing(&mut child, &exports, &before);
            std::thread::sleep(Duration::from_millis(20).mul_f64(delays.next_unit()));
        }
        in_write += usize::from(kill(child, &exports));
        // Never a partial export: none yet, or a complete one.
        if out.exists() {
            assert_same_files(&reference, &out, &[]);
        }
    }
    cli::succeed(&mut tiny.export(&run, &out));
    assert_same_files(&reference, &out, &[]);
    assert_eq!(cli::leftovers(&exports), Vec::<String>::new());
    eprintln!("6 export kills: {in_write} inside a write; one export {export_time:.1?}");

    let reference = tiny.root.join("reference-results/tiny.csv");
    let started = Instant::now();
    cli::succeed(&mut tiny.eval(&out, &reference));
    let eval_time = started.elapsed();
    let expected = std::fs::read(&reference).unwrap();
    let results = tiny.root.join("results");
    let csv = results.join("tiny.csv");
    let mut in_write = 0;
    for _ in 0..6 {
        let child = spawn(&mut tiny.eval(&out, &csv));
        std::thread::sleep(eval_time.mul_f64(1.2 * delays.next_unit()));
        in_write += usize::from(kill(child, &results));
        // A results CSV is only there complete, with its summary beside it.
        if csv.exists() {
            assert_eq!(std::fs::read(&csv).unwrap(), expected);
            let summary = std::fs::read_to_string(csv.with_extension("json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&summary).unwrap();
        }
    }
    cli::succeed(&mut tiny.eval(&out, &csv));
    assert_eq!(std::fs::read(&csv).unwrap(), expected);
    assert_eq!(cli::leftovers(&results), Vec::<String>::new());
    eprintln!("6 eval kills: {in_write} inside a write; one eval {eval_time:.1?}");
}

/// A size-limited tmpfs on a fresh folder, unmounted when dropped (a failing test too).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, after saying why, where mounting is not allowed (not root).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).output();
        match out {
            Ok(out) if out.status.success() => Some(Self { dir }),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(err) => {
                eprintln!("skipped: cannot run `mount`: {err}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with one file; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            while file.write_all(&zeros).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let unmounted = Command::new("umount").arg(path).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

#[test]
fn a_full_disk_during_a_checkpoint_an_export_and_an_eval_keeps_the_previous_files() {
    let _guard = common::exclusive();
    let Some(disk) = Tmpfs::mount("8m") else { return };
    let tiny = Tiny::new();
    let config = tiny.train_config("gu", "schedule = \"gu\"\nunfreeze_every = 10\nmax_steps = 40\nsave_every = 1\neval_every = 10\n");
    let reference = tiny.root.join("reference");
    cli::succeed(&mut tiny.train(&config, &reference));

    // The disk fills after the first checkpoint; a later one fails.
    let run = disk.path().join("run");
    let mut child = tiny.train(&config, &run).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    while checkpoint_step(&run) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    let filler = disk.fill();
    let out = child.wait_with_output().unwrap();
    cli::assert_fails(&out, &["No space left on device", "saving the checkpoint", &run.display().to_string()]);
    let step = checkpoint_step(&run);
    assert!((1..40).contains(&step), "the last checkpoint is at step {step}");
    assert_readable(&run);
    assert_eq!(cli::leftovers(&run), Vec::<String>::new());
    // With room again, the run resumes from that checkpoint to the uninterrupted result.
    std::fs::remove_file(&filler).unwrap();
    cli::succeed(&mut tiny.train(&config, &run));
    assert_same_files(&reference, &run, RUN_SKIP);

    // An export over an earlier one.
    let export = disk.path().join("export");
    cli::succeed(&mut tiny.export(&run, &export));
    let before = files(&export, &[]);
    let filler = disk.fill();
    cli::assert_fails(&tiny.export(&run, &export).output().unwrap(), &["No space left on device"]);
    assert!(files(&export, &[]) == before, "the earlier export changed");
    assert_eq!(cli::leftovers(disk.path()), Vec::<String>::new());

    // Results over earlier ones.
    std::fs::remove_file(&filler).unwrap();
    let results = disk.path().join("results");
    let csv = results.join("tiny.csv");
    cli::succeed(&mut tiny.eval(&export, &csv));
    let before = files(&results, &[]);
    disk.fill();
    cli::assert_fails(&tiny.eval(&export, &csv).output().unwrap(), &["No space left on device", "tiny."]);
    assert!(files(&results, &[]) == before, "the earlier results changed");
    assert_eq!(cli::leftovers(&results), Vec::<String>::new());
}
