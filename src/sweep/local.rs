//! `--backend local`: N runs at a time on this machine. Each stage runs as its own process
//! (`toolkit sweep task`, exactly what a Slurm array task runs), its output appended to the
//! run's log, so that one run's failure or crash leaves the others running.
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::file::{Run, Sweep};
use super::stage::{complete, Stage};

/// A run that failed: its stage and the log that says why.
pub struct Failure {
    pub run: String,
    pub stage: Stage,
    pub log: std::path::PathBuf,
}

/// Runs every incomplete stage of every run, `jobs` runs at a time; returns the failures.
pub fn run_all(sweep: &Sweep, jobs: usize) -> Result<Vec<Failure>> {
    let exe = std::env::current_exe().context("finding the toolkit executable")?;
    std::fs::create_dir_all(sweep.out.join("logs")).with_context(|| format!("creating {}/logs", sweep.out.display()))?;
    let todo: VecDeque<&Run> = sweep.runs.iter().filter(|r| !complete(sweep, r, Stage::Score)).collect();
    let skipped = sweep.runs.len() - todo.len();
    let bar = ProgressBar::new(sweep.runs.len() as u64)
        .with_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs {elapsed} {wide_msg}").expect("a valid template").progress_chars("=> "));
    bar.set_prefix(sweep.name.clone());
    bar.set_position(skipped as u64);
    if skipped > 0 {
        eprintln!("{skipped} of {} runs already complete", sweep.runs.len());
    }
    let queue = Mutex::new(todo);
    let failures = Mutex::new(Vec::new());
    let running = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(run) = queue.lock().unwrap().pop_front() else { break };
                running.lock().unwrap().push(run.name.clone());
                bar.set_message(running.lock().unwrap().join(" "));
                for stage in [Stage::Train, Stage::Score] {
                    if let Err(err) = run_task(&exe, sweep, run, stage) {
                        // println on the bar is dropped when stderr is not a terminal.
                        bar.suspend(|| eprintln!("FAILED {} ({}): {err:#}; log: {}", run.name, stage.as_str(), sweep.log(run, stage.as_str()).display()));
                        failures.lock().unwrap().push(Failure { run: run.name.clone(), stage, log: sweep.log(run, stage.as_str()) });
                        break;
                    }
                }
                running.lock().unwrap().retain(|n| n != &run.name);
                bar.set_message(running.lock().unwrap().join(" "));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    Ok(failures.into_inner().unwrap())
}

/// `toolkit sweep task FILE --stage S --index I`, output appended to the stage's log.
fn run_task(exe: &std::path::Path, sweep: &Sweep, run: &Run, stage: Stage) -> Result<()> {
    if complete(sweep, run, stage) {
        return Ok(());
    }
    let log_path = sweep.log(run, stage.as_str());
    let log = OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    let status = Command::new(exe)
        .args(["sweep", "task"])
        .arg(&sweep.file)
        .args(["--stage", stage.as_str(), "--index", &run.index.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    anyhow::ensure!(status.success(), "exited with {status}");
    Ok(())
}
