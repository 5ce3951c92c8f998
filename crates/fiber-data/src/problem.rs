//! Problems found in a dataset: collected, not fatal. A training run skips the affected record
//! and counts it; `--strict` (and `cargo xtask data check --strict`) turns any problem into a
//! failure.

use std::collections::{BTreeMap, HashMap};
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
    /// An entry has an image id that an earlier entry of the file already has.
    DuplicateId,
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

/// The first entry of a file for each image id: a later entry with an id already seen is
/// reported as [`ProblemKind::DuplicateId`], naming both entries, and is to be skipped (never
/// merged with the first or written over it).
#[derive(Debug, Default)]
pub(crate) struct FirstById {
    seen: HashMap<(&'static str, u64), String>,
}

impl FirstById {
    /// Whether `entry` (e.g. `images[4] (b.jpg)`, at `location` of `file`) is the first with
    /// `id` under the key `key` (e.g. "imgid"); when it is not, records the problem.
    pub fn claim(
        &mut self,
        key: &'static str,
        id: u64,
        entry: &str,
        file: &Path,
        location: &str,
        problems: &mut Problems,
    ) -> bool {
        match self.seen.get(&(key, id)) {
            Some(first) => {
                problems.push(
                    ProblemKind::DuplicateId,
                    file,
                    location,
                    format!("{key} {id} of {entry} is already that of {first}; {entry} skipped"),
                );
                false
            }
            None => {
                self.seen.insert((key, id), entry.to_string());
                true
            }
        }
    }
}
