//! Errors of the image backbone: configuration files and weights.

use std::path::PathBuf;

use fiber_core::WeightError;

/// What went wrong while building or loading Swin.
#[derive(Debug, thiserror::Error)]
pub enum SwinError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON configuration file is malformed or lacks a required field.
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
    /// The configuration is readable but inconsistent or unsupported.
    #[error("invalid Swin configuration: {0}")]
    InvalidConfig(String),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
}
