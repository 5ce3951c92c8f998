//! Errors of the data pipeline.

use std::path::PathBuf;

/// What went wrong while reading or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An image file could not be decoded (corrupt, truncated or of an unsupported format).
    #[error("{path}: cannot decode image: {message}")]
    Decode {
        /// The file concerned.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A JSON file could not be read or parsed (file, line and column).
    #[error(transparent)]
    Json(#[from] fiber_core::json::ConfigFileError),
    /// A file that the data folder's layout requires is not there (the message names it and
    /// the folder).
    #[error("{0}")]
    Missing(String),
    /// An argument is out of its valid range (e.g. a zero target size).
    #[error("{0}")]
    Invalid(String),
}
