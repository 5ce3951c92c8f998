//! The fiber-rs command line (`cargo xtask …`). Each subcommand parses its arguments here and
//! calls into the library crates; the functions are public so the end-to-end tests can run
//! the commands in-process.

pub mod bench;
pub mod data;
pub mod export;
pub mod fiber;
pub mod hf_forward;
pub mod infer;
pub mod tokenizer;
pub mod train;

use std::ffi::OsString;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// fiber-rs: FIBER vision-language models in Rust.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a HuggingFace-format checkpoint on inputs from a safetensors file (parity checks).
    HfForward(hf_forward::HfForwardArgs),
    /// Convert an original FIBER checkpoint (or HF RoBERTa + Swin weights) to the project's format.
    Convert(fiber::ConvertArgs),
    /// Run the FIBER fused or dual encoder on inputs from a safetensors file (parity checks).
    FiberForward(fiber::FiberForwardArgs),
    /// Dataset tools (`data check`).
    Data {
        /// The data subcommand.
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Time the forward pass of a backbone on a backend (random weights).
    Bench(bench::BenchArgs),
    /// Train a byte-level BPE tokenizer on a text corpus and save it as tokenizer.json.
    TrainTokenizer(tokenizer::TrainTokenizerArgs),
    /// Train FIBER (the main job): pre-train, fine-tune and evaluate on the built-in data.
    Train(train::TrainArgs),
    /// Evaluate a trained run on its data's test split (retrieval, VQA, captioning, MLM, NLVR2,
    /// detection, grounding, referring expressions).
    Eval(infer::EvalArgs),
    /// Rank images for texts with a trained run (ITC, then ITM re-ranking).
    Retrieve(infer::RetrieveArgs),
    /// Answer a question about an image with a trained run.
    Vqa(infer::VqaArgs),
    /// Caption images with a trained run.
    Caption(infer::CaptionArgs),
    /// Write a trained run's model as a model folder, the format the library crates load.
    Export(export::ExportArgs),
    /// Detect named classes on images with a run's grounding detector (COCO results + PNG).
    Detect(infer::DetectArgs),
    /// Ground each phrase of a caption on an image with a run's detector (JSON + PNG).
    Ground(infer::GroundArgs),
}

/// Parses `args` (program name first) and runs the command.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| {
        // --help and --version are not failures.
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            let _ = e.print();
            std::process::exit(0);
        }
        anyhow::anyhow!("{e}")
    })?;
    match cli.command {
        Command::HfForward(args) => hf_forward::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data { command } => data::run(command),
        Command::Convert(args) => fiber::convert(args),
        Command::FiberForward(args) => fiber::forward(args),
        Command::TrainTokenizer(args) => tokenizer::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => infer::eval(args),
        Command::Retrieve(args) => infer::retrieve(args),
        Command::Vqa(args) => infer::vqa(args),
        Command::Caption(args) => infer::caption(args),
        Command::Export(args) => export::run(args),
        Command::Detect(args) => infer::detect(args),
        Command::Ground(args) => infer::ground(args),
    }
}
