//! `cargo xtask train-tokenizer`: byte-level BPE training on a text corpus.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use fiber_roberta::RobertaTokenizer;

/// Arguments of `train-tokenizer`.
#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// Text file with one training text per line.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub output: PathBuf,
    /// Vocabulary size, special tokens and the 256 byte symbols included.
    #[arg(long, default_value_t = 8000)]
    pub vocab_size: usize,
    /// Minimum pair frequency for a merge.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
}

/// Trains and saves the tokenizer, printing its vocabulary size.
pub fn run(args: TrainTokenizerArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading corpus {}", args.corpus.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(
        !lines.is_empty(),
        "corpus {} has no non-empty line",
        args.corpus.display()
    );
    let tokenizer = RobertaTokenizer::train(lines.iter(), args.vocab_size, args.min_frequency)?;
    tokenizer.save(&args.output)?;
    println!(
        "trained on {} lines: vocabulary of {} tokens written to {}",
        lines.len(),
        tokenizer.vocab_size(),
        args.output.display()
    );
    Ok(())
}
