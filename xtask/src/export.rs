//! `export`: a trained run's model as a model folder, the format the library crates load
//! (`fiber_heads::Fiber::load` for the coarse stages, a detector folder for the detector
//! stages).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fiber_train::export::export_model;
use fiber_train::run::RunFolder;
use fiber_train::stages::Stage;

/// Arguments of `export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The run folder (`runs/<name>`).
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// The stage whose final model is exported: `coarse` (retrieval and matching), `vqa`,
    /// `caption`, `retrieval-itc`, `retrieval-itm`, or a detector stage (`fine`, `detect`,
    /// `ground`).
    #[arg(long, default_value = "coarse")]
    pub stage: Stage,
    /// The folder to write (created).
    #[arg(long)]
    pub to: PathBuf,
}

/// Runs `export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let run = RunFolder::open(&args.run)?;
    let exported = export_model(&run, args.stage, &args.to)?;
    println!(
        "exported the {} stage of {} ({} of {}) to {}",
        exported.stage.name(),
        args.run.display(),
        exported.weights,
        exported.checkpoint.display(),
        args.to.display()
    );
    for file in &exported.files {
        println!("  {}", file.display());
    }
    Ok(())
}
