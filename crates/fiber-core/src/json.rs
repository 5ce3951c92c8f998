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

/// `defaults` (a serialised configuration object) with each of its keys that `given` also has
/// taken from `given`, recursively for nested objects (a nested configuration that names only
/// some of its settings keeps the defaults of the others); keys only `given` has (other
/// programs' settings) are ignored. This is how a configuration file that names only some
/// settings is read over the defaults.
pub(crate) fn overlay_known(
    mut defaults: serde_json::Value,
    given: &serde_json::Value,
) -> serde_json::Value {
    if let (Some(defaults), Some(given)) = (defaults.as_object_mut(), given.as_object()) {
        for (key, value) in defaults.iter_mut() {
            if let Some(v) = given.get(key) {
                *value = if value.is_object() && v.is_object() {
                    overlay_known(value.take(), v)
                } else {
                    v.clone()
                };
            }
        }
    }
    defaults
}

/// `given` (read from `path`) read over `defaults`: each setting `given` names replaces the
/// default's, key by key in nested objects; the others keep their default values.
pub fn read_over_defaults<T: serde::Serialize + DeserializeOwned>(
    defaults: &T,
    given: &serde_json::Value,
    path: &Path,
) -> Result<T, ConfigFileError> {
    let defaults = serde_json::to_value(defaults).map_err(|e| ConfigFileError::Structure {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    from_value(overlay_known(defaults, given), path)
}

/// Reads the text file at `path`; bytes that are not UTF-8 are an error naming the line, the
/// column (in characters, 1-based) and the byte offset of the first bad byte.
pub fn read_text(path: &Path) -> Result<String, ConfigFileError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        // Everything before `offset` is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ConfigFileError::Parse {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: format!(
                "invalid UTF-8: byte 0x{:02x} at byte offset {offset} (the file must be UTF-8)",
                bytes[offset]
            ),
        }
    })
}

/// Reads and parses the JSON file at `path` (UTF-8, see [`read_text`]).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    parse_json(&read_text(path)?, path)
}

/// Writes a configuration `value` as pretty JSON to `path` (a temporary sibling file, then a
/// rename, so a reader never sees half a file).
pub fn write_json_atomically<T: serde::Serialize>(
    value: &T,
    path: &Path,
) -> Result<(), crate::error::WeightError> {
    let text = serde_json::to_string_pretty(value).expect("a configuration serialises to JSON");
    crate::store::write_atomically(path, text.as_bytes())
}
