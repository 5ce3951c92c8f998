//! Errors raised while reading, checking and writing weights.

use std::fmt;
use std::path::PathBuf;

/// A weight file could not be read or written, or its keys do not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid weight file, or holds a tensor of a type we cannot use.
    #[error("{path}: {message}")]
    Format {
        /// The file concerned (empty for in-memory buffers).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Keys are missing, unexpected or of the wrong shape; every such key is listed.
    #[error("{0}")]
    Keys(KeyProblems),
}

/// A key whose stored shape differs from the shape the model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The checkpoint key.
    pub key: String,
    /// The shape the model expects, in checkpoint (PyTorch) order.
    pub expected: Vec<usize>,
    /// The shape found in the checkpoint.
    pub found: Vec<usize>,
}

/// Every problem found while matching a checkpoint to a model, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyProblems {
    /// Keys the model needs but the checkpoint lacks, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Keys in the checkpoint that the model does not use, with their shape.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Keys present in both with different shapes.
    pub mismatched: Vec<ShapeMismatch>,
    /// Keys stored as integers where the model needs floats (or the reverse).
    pub wrong_dtype: Vec<String>,
}

impl KeyProblems {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.wrong_dtype.is_empty()
    }
}

impl fmt::Display for KeyProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checkpoint does not fit the model: {} missing, {} unexpected, {} with the wrong shape, {} with the wrong dtype",
            self.missing.len(),
            self.unexpected.len(),
            self.mismatched.len(),
            self.wrong_dtype.len()
        )?;
        for m in &self.mismatched {
            writeln!(
                f,
                "  wrong shape: {} expected {:?}, checkpoint has {:?}",
                m.key, m.expected, m.found
            )?;
        }
        for (key, shape) in &self.missing {
            writeln!(f, "  missing:     {key} expected {shape:?}")?;
        }
        for (key, shape) in &self.unexpected {
            writeln!(f, "  unexpected:  {key} {shape:?}")?;
        }
        for key in &self.wrong_dtype {
            writeln!(f, "  wrong dtype: {key}")?;
        }
        Ok(())
    }
}
