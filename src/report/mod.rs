//! Results tables and plots: the tidy results CSV `toolkit eval` writes, and `toolkit report`,
//! which turns runs into the paper's tables (Markdown and LaTeX) and figures (SVG and PNG).
pub mod plots;
pub mod results;
pub mod tables;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::fsx::write_atomic_all;
use crate::run_dir::RunDir;
pub use results::{summary_rows, ResultRow};
use tables::{build_tables, language_table, summary_table, Format};

/// Aggregate results CSVs into the paper's tables, and plot training runs' tr(F) and
/// unfreezing schedules.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Examples:
  toolkit report results/*/xcopa.csv --out report/xcopa
  toolkit report results/*/*.csv --run-dir runs/copa-fun-s1 --run-dir runs/copa-gu-s1 --out report

Tables: per suite and metric, the summary table (En, Lowest (language), Average over the
target languages, each mean ± std over the seeds of a base model and method) and the
per-language table, in OUT/tables.md and OUT/tables.tex.
Figures (from each --run-dir): OUT/fisher-RUN.{svg,png} from RUN/fisher.csv (tr(F) of each
layer's task adapter, moving average) and OUT/schedules.{svg,png} from the runs'
schedule.csv (when each layer starts training). Plots need a TrueType font (Debian:
fonts-dejavu-core, or TOOLKIT_FONT=FILE.ttf).")]
pub struct ReportArgs {
    /// Results CSVs written by `toolkit eval`.
    #[arg(value_name = "RESULTS_CSV")]
    pub results: Vec<PathBuf>,

    /// Training run folders whose fisher.csv and schedule.csv to plot.
    #[arg(long = "run-dir", value_name = "DIR")]
    pub run_dirs: Vec<PathBuf>,

    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,

    /// Moving-average window of the tr(F) curves, in logged points.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub smooth: usize,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    ensure!(!args.results.is_empty() || !args.run_dirs.is_empty(), "give results CSVs and/or --run-dir folders");
    // Every input is read (and a font found) before the output folder is made, so that a bad
    // input leaves no partial report.
    let mut rows = Vec::new();
    for path in &args.results {
        rows.extend(results::read_csv(path)?);
    }
    let runs = run_files(&args.run_dirs)?;
    if !args.run_dirs.is_empty() {
        plots::load_font()?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if !rows.is_empty() {
        let tables = build_tables(&rows);
        let texts: Vec<(PathBuf, Vec<u8>)> = [(Format::Markdown, "tables.md"), (Format::Latex, "tables.tex")]
            .into_iter()
            .map(|(format, file)| {
                let text: Vec<String> =
                    tables.iter().flat_map(|t| [summary_table(t, format), language_table(t, format)]).collect();
                (args.out.join(file), text.join("\n").into_bytes())
            })
            .collect();
        write_atomic_all(&texts.iter().map(|(p, t)| (p.as_path(), t.as_slice())).collect::<Vec<_>>())?;
        for (path, _) in &texts {
            println!("wrote {} ({} tables)", path.display(), 2 * tables.len());
        }
    }
    plot_runs(&runs, args)
}

/// A run folder's name and the figures' inputs it has, each checked to read.
struct RunFiles {
    name: String,
    fisher: Option<PathBuf>,
    schedule: Option<PathBuf>,
}

fn run_files(dirs: &[PathBuf]) -> Result<Vec<RunFiles>> {
    let mut runs = Vec::new();
    for dir in dirs {
        ensure!(dir.is_dir(), "--run-dir {}: no such folder", dir.display());
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let run = RunDir::new(dir);
        let fisher = Some(run.fisher_csv()).filter(|p| p.is_file());
        let schedule = Some(run.schedule_csv()).filter(|p| p.is_file());
        match &fisher {
            Some(path) => {
                plots::read_rows::<plots::FisherRow>(path)?;
            }
            None => eprintln!("note: {} has no fisher.csv", dir.display()),
        }
        match &schedule {
            Some(path) => {
                plots::read_rows::<plots::ScheduleRow>(path)?;
            }
            None => eprintln!("note: {} has no schedule.csv", dir.display()),
        }
        runs.push(RunFiles { name, fisher, schedule });
    }
    Ok(runs)
}

fn plot_runs(runs: &[RunFiles], args: &ReportArgs) -> Result<()> {
    for run in runs {
        if let Some(fisher) = &run.fisher {
            let stem = plots::fisher_figure(fisher, &run.name, args.smooth, &args.out)?;
            println!("wrote {}.{{svg,png}}", stem.display());
        }
    }
    let schedules: Vec<(String, PathBuf)> =
        runs.iter().filter_map(|r| r.schedule.clone().map(|s| (r.name.clone(), s))).collect();
    if !schedules.is_empty() {
        let stem = plots::schedule_figure(&schedules, &args.out)?;
        println!("wrote {}.{{svg,png}}", stem.display());
    }
    Ok(())
}
