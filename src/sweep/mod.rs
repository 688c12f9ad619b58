//! `toolkit sweep`: a grid of training runs (methods x seeds x k x subsets ...) from one
//! sweep file, each trained, exported and scored, on this machine or as Slurm job arrays,
//! resumable, with the paper's tables at the end (`toolkit report`).
pub mod file;
pub mod local;
pub mod slurm;
pub mod stage;

use std::path::PathBuf;

use anyhow::{bail, Result};

use file::Sweep;
use stage::{scored_suites, steps_done, trained, Stage};

#[derive(Debug, clap::Args)]
#[command(after_help = "A sweep file names a base training config and the train keys to vary:

  name = \"copa-e5\"                       # prefix of every run name
  config = \"scripts/configs/copa-e5.toml\" # its [per_schedule.*] / [per_train_subset.N] tables apply per run
  out = \"sweeps/copa-e5\"                  # runs/ exports/ results/ logs/ slurm/ report/
  [set]                                   # train keys for every run
  threads = 1
  [grid]                                  # any train key as a list: one run per combination
  schedule = [\"standard\", \"gu\", \"fun\"]
  seed = [1, 2]
  [export]                                # absent: no language adapter
  lang_adapters = \"adapters/mbert\"
  lang = \"all\"
  [eval]
  suites = [\"xcopa\"]
  data_dir = \"../shared/data\"
  [slurm]                                 # --backend slurm only
  throttle = 8                            # array tasks at once (--array=...%8)
  [slurm.train]                           # also [slurm.score], [slurm.report]
  partition = \"gpu\"
  gpus = 1
  cpus = 8
  mem = \"32G\"
  time = \"1-00:00:00\"
  extra = [\"--account=nlp\"]

Run names are the sweep name, then the schedule, n<train_subset>, <key><value> for other grid
keys, and s<seed> last (copa-e5-fun-s1). Every stage is skipped when its files say it is
complete (train: best/ and schedule.csv; score: every suite's results CSV) and training resumes
from last/, so `run` can be repeated after an interruption, a failure or a requeue.

Examples:
  toolkit sweep plan scripts/sweeps/copa-e5-cpu.toml
  toolkit sweep run scripts/sweeps/copa-e5-cpu.toml --backend local --jobs 2
  toolkit sweep run scripts/sweeps/paper/nli-mbert.toml --backend slurm --dry-run
  toolkit sweep status scripts/sweeps/paper/nli-mbert.toml
  toolkit sweep report scripts/sweeps/copa-e5-cpu.toml")]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SweepCommand {
    /// Print every run of the grid (name, method, seed, where it goes) and what is already done.
    Plan { file: PathBuf },
    /// Train, export and score every run that is not complete, then write the tables.
    Run {
        file: PathBuf,
        /// `local`: here, --jobs runs at a time; `slurm`: sbatch job arrays.
        #[arg(long, value_enum, default_value_t = Backend::Local)]
        backend: Backend,
        /// Runs at a time (local backend).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Slurm: print the scripts and sbatch commands, submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Each run's state, from its files and, for a Slurm submission, from squeue.
    Status { file: PathBuf },
    /// Cancel the last Slurm submission of the sweep (scancel).
    Cancel { file: PathBuf },
    /// The paper's tables (mean +- std over seeds, per language, average, lowest language) and
    /// the tr(F)/schedule figures of every scored run, in SWEEP_OUT/report.
    Report { file: PathBuf },
    /// One stage of one run (what each Slurm array task and local job runs).
    #[command(hide = true)]
    Task {
        file: PathBuf,
        #[arg(long, value_enum)]
        stage: Stage,
        #[arg(long)]
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Local,
    Slurm,
}

pub fn run(args: &SweepArgs) -> Result<()> {
    match &args.command {
        SweepCommand::Plan { file } => plan(&Sweep::load(file)?),
        SweepCommand::Run { file, backend, jobs, dry_run } => {
            let sweep = Sweep::load(file)?;
            match backend {
                Backend::Slurm => slurm::submit(&sweep, *dry_run),
                Backend::Local if *dry_run => bail!("--dry-run is for --backend slurm; `toolkit sweep plan` lists the runs"),
                Backend::Local => run_local(&sweep, *jobs),
            }
        }
        SweepCommand::Status { file } => status(&Sweep::load(file)?),
        SweepCommand::Cancel { file } => slurm::cancel(&Sweep::load(file)?),
        SweepCommand::Report { file } => report(&Sweep::load(file)?),
        SweepCommand::Task { file, stage, index } => {
            let sweep = Sweep::load(file)?;
            let Some(run) = sweep.runs.get(*index) else {
                bail!("{}: no run {index} (the grid has {})", file.display(), sweep.runs.len());
            };
            stage::run_stage(&sweep, run, *stage)
        }
    }
}

fn plan(sweep: &Sweep) -> Result<()> {
    println!("{}: {} runs in {}", sweep.file.display(), sweep.runs.len(), sweep.out.display());
    println!("{:>5}  {:<36} {:<16} {:>4}  {:<36} state", "index", "run", "method", "seed", "settings");
    for run in &sweep.runs {
        println!("{:>5}  {:<36} {:<16} {:>4}  {:<36} {}", run.index, run.name, run.method, run.config.seed, settings(run), run_state(sweep, run));
    }
    Ok(())
}

/// The resolved values that differ between the paper's methods and data sizes.
fn settings(run: &file::Run) -> String {
    let c = &run.config;
    let length = c.max_steps.map_or(format!("{} ep", c.epochs), |n| format!("{n} steps"));
    let subset = c.train_subset.map_or("all".to_string(), |n| n.to_string());
    let k = if c.schedule.kind() == "standard" { "-".to_string() } else { c.unfreeze_every.to_string() };
    format!("{length}, lr {:e}, batch {}, k {k}, n {subset}", c.lr, c.batch_size)
}

/// `done`, `scored 1/2`, `trained`, `training (step 40)`, `not started`.
fn run_state(sweep: &Sweep, run: &file::Run) -> String {
    let dir = sweep.run_dir(run);
    let scored = scored_suites(sweep, run);
    let suites = sweep.eval.suites.len();
    if scored == suites {
        "done".into()
    } else if trained(&dir) {
        if scored > 0 { format!("trained, scored {scored}/{suites}") } else { "trained".into() }
    } else {
        match steps_done(&dir) {
            Some(step) => format!("training (step {step})"),
            None => "not started".into(),
        }
    }
}

fn run_local(sweep: &Sweep, jobs: usize) -> Result<()> {
    let failures = local::run_all(sweep, jobs)?;
    let done = sweep.runs.iter().filter(|r| stage::complete(sweep, r, Stage::Score)).count();
    println!("{done} of {} runs complete", sweep.runs.len());
    if done > 0 {
        report(sweep)?;
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("failed: {} ({}), log {}", f.run, f.stage.as_str(), f.log.display());
        }
        bail!("{} of {} runs failed; fix and run again: complete stages are skipped", failures.len(), sweep.runs.len());
    }
    Ok(())
}

fn status(sweep: &Sweep) -> Result<()> {
    let jobs = slurm::read_jobs(sweep)?;
    let queue = match &jobs {
        Some(jobs) => match slurm::queue_states(jobs) {
            Ok(q) => Some(q),
            Err(err) => {
                println!("(no queue states: {err:#})");
                None
            }
        },
        None => None,
    };
    let mut counts = std::collections::BTreeMap::new();
    for run in &sweep.runs {
        let mut state = run_state(sweep, run);
        if let (Some(jobs), Some(queue)) = (&jobs, &queue) {
            let train = queue.get(&(jobs.train.clone(), Some(run.index)));
            let score = queue.get(&(jobs.score.clone(), Some(run.index)));
            if let Some(s) = train {
                state.push_str(&format!("; train task {}_{}: {s}", jobs.train, run.index));
            }
            if let Some(s) = score {
                state.push_str(&format!("; score task {}_{}: {s}", jobs.score, run.index));
            }
            if train.is_none() && score.is_none() && jobs.indices.contains(&run.index) && state != "done" {
                state.push_str(&format!("; not in the queue (failed or cancelled? see {})", sweep.log(run, "train").display()));
            }
        }
        let category = run_state(sweep, run).split([',', '(']).next().unwrap_or("").trim().to_string();
        *counts.entry(category).or_insert(0) += 1;
        println!("{:<40} {state}", run.name);
    }
    if let (Some(jobs), Some(queue)) = (&jobs, &queue) {
        if let Some(s) = queue.get(&(jobs.report.clone(), None)) {
            println!("report job {}: {s}", jobs.report);
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{} runs: {}", sweep.runs.len(), summary.join(", "));
    Ok(())
}

fn report(sweep: &Sweep) -> Result<()> {
    let mut results = Vec::new();
    let mut run_dirs = Vec::new();
    for run in &sweep.runs {
        results.extend(sweep.eval.suites.iter().map(|s| sweep.results_csv(run, s)).filter(|p| p.is_file()));
        // The figures plot tr(F), which a run records only with fisher_every > 0.
        if trained(&sweep.run_dir(run)) && run.config.fisher_every > 0 {
            run_dirs.push(run.config.out.clone());
        }
    }
    if results.is_empty() && run_dirs.is_empty() {
        bail!("{}: no run is trained or scored yet (`toolkit sweep status` shows where they are)", sweep.file.display());
    }
    let scored = sweep.runs.iter().filter(|r| stage::complete(sweep, r, Stage::Score)).count();
    if scored < sweep.runs.len() {
        println!("report over {scored} of {} runs (the others are not scored yet)", sweep.runs.len());
    }
    crate::report::run(&crate::report::ReportArgs { results, run_dirs, out: sweep.report_dir(), smooth: 5 })
}
