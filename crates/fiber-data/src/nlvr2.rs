//! NLVR2 (docs/model.md §4.2): JSONL files, one statement about a pair of images per line.
//!
//! Layout: `{split}.json` (official names `train.json`, `dev.json`, `test1.json`) with images
//! under `images/{split}/` — in a sub-folder named by the record's `directory` field when it has
//! one (the training set) — as `{identifier without its last part}-img0.png` and `-img1.png`
//! (or `.jpg` when only that exists).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::DataError;
use crate::paths::resolve_under;
use crate::problem::{ProblemKind, Problems};

/// One NLVR2 example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlvr2Record {
    /// The example's identifier (e.g. `dev-850-0-0`).
    pub identifier: String,
    /// The statement.
    pub sentence: String,
    /// Whether the statement is true of the image pair.
    pub label: bool,
    /// Left image.
    pub left: PathBuf,
    /// Right image.
    pub right: PathBuf,
}

#[derive(Deserialize)]
struct Line {
    identifier: String,
    sentence: String,
    label: String,
    #[serde(default)]
    directory: Option<serde_json::Value>,
}

/// Reads `file` (JSONL); images are resolved under `split_images`, the folder of this split's
/// images (`images/{split}` in the layout above). A line that is not valid JSON or lacks a
/// field is reported with its line number and skipped.
pub fn read_nlvr2(
    file: &Path,
    split_images: &Path,
    problems: &mut Problems,
) -> Result<Vec<Nlvr2Record>, DataError> {
    let text = fiber_core::json::read_text(file)?;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let location = format!("line {}", n + 1);
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = match serde_json::from_str(raw) {
            Ok(line) => line,
            Err(e) => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    location,
                    format!("column {}: {e}", e.column()),
                );
                continue;
            }
        };
        let label = match line.label.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            other => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    location,
                    format!("label `{other}` is neither True nor False"),
                );
                continue;
            }
        };
        if line.sentence.trim().is_empty() {
            problems.push(
                ProblemKind::EmptyText,
                file,
                location,
                "empty sentence dropped",
            );
            continue;
        }
        let prefix = match line.identifier.rsplit_once('-') {
            Some((prefix, _)) => prefix.to_string(),
            None => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    location,
                    format!("identifier `{}` has no `-<n>` suffix", line.identifier),
                );
                continue;
            }
        };
        let folder = match &line.directory {
            Some(serde_json::Value::Number(d)) => format!("{d}/"),
            Some(serde_json::Value::String(d)) => format!("{d}/"),
            _ => String::new(),
        };
        let resolve = |side: usize| {
            resolve_under(split_images, &format!("{folder}{prefix}-img{side}.png")).map(|png| {
                let jpg = png.with_extension("jpg");
                if !png.exists() && jpg.exists() {
                    jpg
                } else {
                    png
                }
            })
        };
        match (resolve(0), resolve(1)) {
            (Ok(left), Ok(right)) => out.push(Nlvr2Record {
                identifier: line.identifier,
                sentence: line.sentence.trim().to_string(),
                label,
                left,
                right,
            }),
            (Err(message), _) | (_, Err(message)) => {
                problems.push(ProblemKind::PathOutsideRoot, file, location, message)
            }
        }
    }
    Ok(out)
}
