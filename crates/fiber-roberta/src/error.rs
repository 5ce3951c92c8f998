//! Errors of the text backbone: configuration files, weights and tokenizers.

use std::path::PathBuf;

use fiber_core::WeightError;

/// What went wrong while building, loading or tokenising for RoBERTa.
#[derive(Debug, thiserror::Error)]
pub enum RobertaError {
    /// A file could not be read or written.
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
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The configuration is readable but inconsistent (e.g. hidden size not divisible by heads).
    #[error("invalid RoBERTa configuration: {0}")]
    InvalidConfig(String),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer files could not be used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
