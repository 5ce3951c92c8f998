//! Decoding every image a dataset refers to, in parallel, recording the ones that are missing
//! or corrupt.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::DataError;
use crate::image::load_rgb;
use crate::problem::{ProblemKind, Problems};

/// Decodes every file of `paths` (in parallel); returns the indices of the unusable ones and
/// records a problem for each.
pub fn check_images(paths: &[PathBuf], problems: &mut Problems) -> BTreeSet<usize> {
    let results: Vec<(usize, Result<(), DataError>)> = paths
        .par_iter()
        .enumerate()
        .map(|(i, p)| (i, load_rgb(p).map(|_| ())))
        .collect();
    let mut bad = BTreeSet::new();
    for (i, result) in results {
        match result {
            Ok(()) => {}
            Err(DataError::Io { path, source }) => {
                bad.insert(i);
                problems.push(ProblemKind::MissingImage, &path, "file", source.to_string());
            }
            Err(DataError::Decode { message, .. }) => {
                bad.insert(i);
                problems.push(
                    ProblemKind::CorruptImage,
                    &paths[i],
                    "file",
                    format!("cannot decode image: {message}"),
                );
            }
            Err(e) => {
                bad.insert(i);
                problems.push(ProblemKind::CorruptImage, &paths[i], "file", e.to_string());
            }
        }
    }
    bad
}
