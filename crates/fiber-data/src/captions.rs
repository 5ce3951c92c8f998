//! Image–caption datasets: Karpathy splits (`dataset_coco.json`, `dataset_flickr30k.json`) and
//! COCO `captions_*.json` files. Records with problems are reported and dropped; a malformed
//! JSON file is an error naming file, line and column.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DataError;
use crate::paths::resolve_under;
use crate::problem::{FirstById, ProblemKind, Problems};

/// Dataset split of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data (Karpathy `train` and `restval`).
    Train,
    /// Validation data.
    Val,
    /// Test data.
    Test,
}

/// An image of a caption dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The dataset's id for the image (COCO id, Karpathy `cocoid`/`imgid`).
    pub id: u64,
    /// Resolved path under the data folder.
    pub path: PathBuf,
    /// Split.
    pub split: Split,
}

/// A caption of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRecord {
    /// Index into [`CaptionDataset::images`].
    pub image: usize,
    /// The caption text.
    pub text: String,
}

/// Images and their captions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptionDataset {
    /// The images.
    pub images: Vec<ImageRecord>,
    /// The captions, each pointing at an image.
    pub captions: Vec<CaptionRecord>,
}

impl CaptionDataset {
    /// The dataset restricted to one split (image indices renumbered).
    pub fn split(&self, split: Split) -> CaptionDataset {
        self.retain_images(|_, image| image.split == split)
    }

    /// The images for which `keep(index, image)` holds, with their captions (indices renumbered).
    fn retain_images(&self, keep: impl Fn(usize, &ImageRecord) -> bool) -> CaptionDataset {
        let mut out = CaptionDataset::default();
        let mut remap = vec![None; self.images.len()];
        for (i, image) in self
            .images
            .iter()
            .enumerate()
            .filter(|(i, im)| keep(*i, im))
        {
            remap[i] = Some(out.images.len());
            out.images.push(image.clone());
        }
        out.captions = self
            .captions
            .iter()
            .filter_map(|c| {
                remap[c.image].map(|image| CaptionRecord {
                    image,
                    text: c.text.clone(),
                })
            })
            .collect();
        out
    }
}

fn array<'a>(value: &'a Value, key: &str, file: &Path) -> Result<&'a Vec<Value>, DataError> {
    value.get(key).and_then(Value::as_array).ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: no `{key}` array at the top level",
            file.display()
        ))
    })
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

#[derive(Deserialize)]
struct KarpathyImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    #[serde(default)]
    cocoid: Option<u64>,
    #[serde(default)]
    imgid: Option<u64>,
    split: String,
    sentences: Vec<KarpathySentence>,
}

/// Reads a Karpathy split file (COCO or Flickr30k); image paths are `filepath/filename` (or
/// `filename`) under `image_root`.
pub fn read_karpathy(
    file: &Path,
    image_root: &Path,
    problems: &mut Problems,
) -> Result<CaptionDataset, DataError> {
    let value: Value = fiber_core::json::read_json(file)?;
    let mut out = CaptionDataset::default();
    let mut first = FirstById::default();
    for (i, record) in array(&value, "images", file)?.iter().enumerate() {
        let location = format!("images[{i}]");
        let image: KarpathyImage = match serde_json::from_value(record.clone()) {
            Ok(image) => image,
            Err(e) => {
                problems.push(ProblemKind::MalformedRecord, file, location, e.to_string());
                continue;
            }
        };
        // Retrieval ground truth is per image: two entries with one `imgid` or `cocoid`
        // would be one image with two files. The first is kept.
        let entry = format!("{location} ({})", image.filename);
        let ids = [("imgid", image.imgid), ("cocoid", image.cocoid)];
        if !ids.into_iter().all(|(key, id)| {
            id.is_none_or(|id| first.claim(key, id, &entry, file, &location, problems))
        }) {
            continue;
        }
        let split = match image.split.as_str() {
            "train" | "restval" => Split::Train,
            "val" => Split::Val,
            "test" => Split::Test,
            other => {
                problems.push(
                    ProblemKind::MalformedRecord,
                    file,
                    location,
                    format!("unknown split `{other}`"),
                );
                continue;
            }
        };
        let relative = match &image.filepath {
            Some(dir) => format!("{dir}/{}", image.filename),
            None => image.filename.clone(),
        };
        let path = match resolve_under(image_root, &relative) {
            Ok(path) => path,
            Err(message) => {
                problems.push(ProblemKind::PathOutsideRoot, file, location, message);
                continue;
            }
        };
        let index = out.images.len();
        out.images.push(ImageRecord {
            id: image.cocoid.or(image.imgid).unwrap_or(i as u64),
            path,
            split,
        });
        for (s, sentence) in image.sentences.into_iter().enumerate() {
            if sentence.raw.trim().is_empty() {
                problems.push(
                    ProblemKind::EmptyText,
                    file,
                    format!("{location}.sentences[{s}]"),
                    "empty caption dropped",
                );
            } else {
                out.captions.push(CaptionRecord {
                    image: index,
                    text: sentence.raw.trim().to_string(),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    image_id: u64,
    caption: String,
}

/// Reads a COCO `captions_*.json` file whose images lie under `image_root`, all in `split`.
pub fn read_coco_captions(
    file: &Path,
    image_root: &Path,
    split: Split,
    problems: &mut Problems,
) -> Result<CaptionDataset, DataError> {
    let value: Value = fiber_core::json::read_json(file)?;
    let mut out = CaptionDataset::default();
    let mut by_id = std::collections::HashMap::new();
    let mut first = FirstById::default();
    for (i, record) in array(&value, "images", file)?.iter().enumerate() {
        let location = format!("images[{i}]");
        match serde_json::from_value::<CocoImage>(record.clone()) {
            Ok(image)
                if !first.claim(
                    "id",
                    image.id,
                    &format!("{location} ({})", image.file_name),
                    file,
                    &location,
                    problems,
                ) => {}
            Ok(image) => match resolve_under(image_root, &image.file_name) {
                Ok(path) => {
                    by_id.insert(image.id, out.images.len());
                    out.images.push(ImageRecord {
                        id: image.id,
                        path,
                        split,
                    });
                }
                Err(message) => {
                    problems.push(ProblemKind::PathOutsideRoot, file, location, message)
                }
            },
            Err(e) => problems.push(ProblemKind::MalformedRecord, file, location, e.to_string()),
        }
    }
    for (i, record) in array(&value, "annotations", file)?.iter().enumerate() {
        let location = format!("annotations[{i}]");
        match serde_json::from_value::<CocoCaption>(record.clone()) {
            Ok(caption) if caption.caption.trim().is_empty() => problems.push(
                ProblemKind::EmptyText,
                file,
                location,
                "empty caption dropped",
            ),
            Ok(caption) => match by_id.get(&caption.image_id) {
                Some(&image) => out.captions.push(CaptionRecord {
                    image,
                    text: caption.caption.trim().to_string(),
                }),
                None => problems.push(
                    ProblemKind::UnknownImage,
                    file,
                    location,
                    format!("image_id {} is not in `images`", caption.image_id),
                ),
            },
            Err(e) => problems.push(ProblemKind::MalformedRecord, file, location, e.to_string()),
        }
    }
    Ok(out)
}
