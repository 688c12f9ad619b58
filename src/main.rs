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
///   toolkit train --config scripts/configs/copa-e5-fun.toml
///   toolkit export --run runs/copa-fun --lang all --out exports/copa-fun
///   toolkit eval --suite xcopa --models exports/copa-fun --data-dir ../shared/data
#[derive(Parser)]
#[command(name = "toolkit", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {}
}
