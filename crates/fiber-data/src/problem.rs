//! Problems found in a dataset: collected, not fatal. A training run skips the affected record
//! and counts it; `--strict` (and `cargo xtask data check --strict`) turns any problem into a
//! failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What kind of problem a record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The image file does not exist.
    MissingImage,
    /// The image file exists but cannot be decoded.
    CorruptImage,
    /// An image path leads outside the dataset's root folder.
    PathOutsideRoot,
    /// A caption, sentence or question is empty.
    EmptyText,
    /// A record lacks a field or has one of the wrong type.
    MalformedRecord,
    /// A record refers to an image id that the file does not define.
    UnknownImage,
    /// A box lies outside its image or has zero area.
    BadBox,
}

/// One problem, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The kind.
    pub kind: ProblemKind,
    /// The file that holds the record (annotation file or image).
    pub file: PathBuf,
    /// Where in the file: a record index, a JSONL line, an image id.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found while reading a dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Problems {
    /// The problems, in the order they were found.
    pub items: Vec<Problem>,
}

impl Problems {
    /// Records a problem.
    pub fn push(
        &mut self,
        kind: ProblemKind,
        file: &Path,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.items.push(Problem {
            kind,
            file: file.to_path_buf(),
            location: location.into(),
            message: message.into(),
        });
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Problems grouped by kind, in kind order.
    pub fn by_kind(&self) -> BTreeMap<ProblemKind, Vec<&Problem>> {
        let mut groups: BTreeMap<ProblemKind, Vec<&Problem>> = BTreeMap::new();
        for p in &self.items {
            groups.entry(p.kind).or_default().push(p);
        }
        groups
    }
}
