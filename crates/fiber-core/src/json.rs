//! Reading JSON configuration files with errors that point at the file, line and column.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The text is not valid JSON for the expected structure (or lacks a required field).
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file concerned (empty for in-memory text).
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Valid JSON whose values do not have the expected structure (no position to give).
    #[error("{path}: {message}")]
    Structure {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Parses JSON `text`; errors name `path` (may be empty for in-memory text), line and column.
pub fn parse_json<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigFileError> {
    serde_json::from_str(text).map_err(|e| ConfigFileError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// `value` (read from `path`) as a `T`; errors name `path`.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    path: &Path,
) -> Result<T, ConfigFileError> {
    serde_json::from_value(value).map_err(|e| ConfigFileError::Structure {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads and parses the JSON file at `path`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_json(&text, path)
}
