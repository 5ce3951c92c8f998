//! Errors of the fusion backbone.

use std::path::PathBuf;

use fiber_core::WeightError;
use fiber_roberta::RobertaError;
use fiber_swin::SwinError;

/// What went wrong while building or loading the fused backbone.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A configuration file is malformed.
    #[error("{path}:{line}:{column}: {message}")]
    Config {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid FIBER configuration: {0}")]
    InvalidConfig(String),
    /// The image backbone failed.
    #[error(transparent)]
    Swin(#[from] SwinError),
    /// The text backbone failed.
    #[error(transparent)]
    Roberta(#[from] RobertaError),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
}
