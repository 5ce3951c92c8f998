//! Errors of loading and using a model folder ([`crate::Fiber`]) or a detector folder
//! ([`crate::grounding::Detector`]).

use std::path::PathBuf;

use fiber_core::json::ConfigFileError;
use fiber_core::WeightError;
use fiber_fusion::FusionError;
use fiber_roberta::RobertaError;

/// What went wrong while loading a model folder or running one of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    /// A file the folder must hold is not there.
    #[error("{}: no {file} ({hint})", dir.display())]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The file's name.
        file: &'static str,
        /// What the file is and where it comes from.
        hint: &'static str,
    },
    /// The task needs a head whose weights the folder does not hold.
    #[error("{}: the model has no {head}, which {task} needs ({hint})", dir.display())]
    MissingHead {
        /// The model folder.
        dir: PathBuf,
        /// The head, with its checkpoint keys.
        head: &'static str,
        /// The task that needs it.
        task: &'static str,
        /// Which stage or checkpoint has it.
        hint: &'static str,
    },
    /// Inputs the task cannot take (their count or size, said in the message).
    #[error("{0}")]
    Invalid(String),
    /// The backbone or its configuration failed.
    #[error(transparent)]
    Fusion(#[from] FusionError),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] RobertaError),
    /// An image could not be read or prepared.
    #[error(transparent)]
    Data(#[from] fiber_data::DataError),
    /// A JSON file could not be read or parsed.
    #[error(transparent)]
    Json(#[from] ConfigFileError),
}
