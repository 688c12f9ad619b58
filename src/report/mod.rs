//! Results tables and plots: the tidy results CSV `toolkit eval` writes, and `toolkit report`,
//! which turns runs into the paper's tables (Markdown and LaTeX) and figures (SVG and PNG).
pub mod plots;
pub mod results;
pub mod tables;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::fsx::write_atomic;
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
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if !args.results.is_empty() {
        let mut rows = Vec::new();
        for path in &args.results {
            rows.extend(results::read_csv(path)?);
        }
        let tables = build_tables(&rows);
        for (format, file) in [(Format::Markdown, "tables.md"), (Format::Latex, "tables.tex")] {
            let text: Vec<String> =
                tables.iter().flat_map(|t| [summary_table(t, format), language_table(t, format)]).collect();
            let path = args.out.join(file);
            write_atomic(&path, text.join("\n").as_bytes())?;
            println!("wrote {} ({} tables)", path.display(), 2 * tables.len());
        }
    }
    if !args.run_dirs.is_empty() {
        plot_runs(args)?;
    }
    Ok(())
}

fn plot_runs(args: &ReportArgs) -> Result<()> {
    plots::load_font()?;
    let mut schedules = Vec::new();
    for dir in &args.run_dirs {
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let run = RunDir::new(dir);
        let fisher = run.fisher_csv();
        if fisher.is_file() {
            let stem = plots::fisher_figure(&fisher, &name, args.smooth, &args.out)?;
            println!("wrote {}.{{svg,png}}", stem.display());
        } else {
            eprintln!("note: {} has no fisher.csv", dir.display());
        }
        let schedule = run.schedule_csv();
        if schedule.is_file() {
            schedules.push((name, schedule));
        } else {
            eprintln!("note: {} has no schedule.csv", dir.display());
        }
    }
    if !schedules.is_empty() {
        let stem = plots::schedule_figure(&schedules, &args.out)?;
        println!("wrote {}.{{svg,png}}", stem.display());
    }
    Ok(())
}
