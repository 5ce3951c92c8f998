//! Image–text–box data for the fine-grained stage (docs/model.md §5.4): MDETR-style grounding annotations
//! (COCO JSON whose `images` carry a `caption` and whose boxes carry `tokens_positive` character
//! spans) and COCO detection annotations turned into grounding prompts the way GLIP does it
//! (cleaned class names joined with ". ", positives plus sampled negatives, shuffled).
//! Boxes are `[x0, y0, x1, y1]` in pixels; a box outside its image, of zero area or with a span
//! outside its caption is reported and dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use crate::error::DataError;
use crate::paths::resolve_under;
use crate::problem::{FirstById, ProblemKind, Problems};
use crate::transforms::{box_problem, BoxXyxy};

/// A character range `[start, end)` of a caption (Python string indices).
pub type CharSpan = (usize, usize);

/// One box and the caption phrases that refer to it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundedBox {
    /// The box, `[x0, y0, x1, y1]` in pixels of the original image.
    pub xyxy: BoxXyxy,
    /// The caption's character spans that name this box (at least one).
    pub spans: Vec<CharSpan>,
    /// The detection category, when the annotation has one.
    pub category: Option<u64>,
}

/// An image with a caption and the boxes its phrases refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundingRecord {
    /// The annotation's image id (one per image–caption pair in MDETR files).
    pub id: u64,
    /// Resolved image path.
    pub path: PathBuf,
    /// Image height in pixels, as annotated.
    pub height: usize,
    /// Image width in pixels, as annotated.
    pub width: usize,
    /// The caption or prompt.
    pub caption: String,
    /// The grounded boxes.
    pub boxes: Vec<GroundedBox>,
}

impl GroundingRecord {
    /// Number of distinct phrases (spans) that ground at least one box.
    pub fn phrase_count(&self) -> usize {
        let mut spans: Vec<CharSpan> = self
            .boxes
            .iter()
            .flat_map(|b| b.spans.iter().copied())
            .collect();
        spans.sort_unstable();
        spans.dedup();
        spans.len()
    }
}

/// Which tokens of an encoded caption each box refers to: `map[box][position]` is true when the
/// token at `position` (counting `<s>` as position 0, as the model sees the sequence) overlaps one
/// of the box's spans. `tokens` are the caption's tokens with their character ranges
/// (`RobertaTokenizer::encode_with_char_offsets`); tokens beyond `max_len - 1` are cut off as the
/// encoder truncates them. A span that meets no token (e.g. cut off) leaves its row without it.
pub fn token_map(
    boxes: &[GroundedBox],
    tokens: &[(u32, CharSpan)],
    max_len: usize,
) -> Vec<Vec<bool>> {
    let body = tokens.len().min(max_len.saturating_sub(2));
    boxes
        .iter()
        .map(|b| {
            let mut row = vec![false; max_len];
            for (t, (_, (start, end))) in tokens[..body].iter().enumerate() {
                if b.spans.iter().any(|&(s, e)| *start < e && *end > s) {
                    row[t + 1] = true;
                }
            }
            row
        })
        .collect()
}

fn array<'a>(value: &'a Value, key: &str, file: &Path) -> Result<&'a Vec<Value>, DataError> {
    value.get(key).and_then(Value::as_array).ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: no `{key}` array at the top level",
            file.display()
        ))
    })
}

/// The entries of the top-level array `key` that deserialise as `T`, each with its location
/// (`key[i]`); the others are reported as malformed.
fn records<T: serde::de::DeserializeOwned>(
    value: &Value,
    key: &str,
    file: &Path,
    problems: &mut Problems,
) -> Result<Vec<(String, T)>, DataError> {
    let mut out = Vec::new();
    for (i, entry) in array(value, key, file)?.iter().enumerate() {
        let location = format!("{key}[{i}]");
        match serde_json::from_value::<T>(entry.clone()) {
            Ok(record) => out.push((location, record)),
            Err(e) => problems.push(ProblemKind::MalformedRecord, file, location, e.to_string()),
        }
    }
    Ok(out)
}

/// The image index of a non-crowd box, or `None` (crowd boxes silently, unknown images reported).
fn box_image(
    by_id: &HashMap<u64, usize>,
    image_id: u64,
    iscrowd: u8,
    file: &Path,
    location: &str,
    problems: &mut Problems,
) -> Option<usize> {
    if iscrowd != 0 {
        return None;
    }
    let index = by_id.get(&image_id).copied();
    if index.is_none() {
        problems.push(
            ProblemKind::UnknownImage,
            file,
            location,
            format!("image_id {image_id} is not in `images`"),
        );
    }
    index
}

fn xywh_to_xyxy(b: [f32; 4]) -> BoxXyxy {
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

/// An image side as published: a JSON number, or a string holding one (MDETR's Flickr30k
/// Entities files write `"height": "500"`); anything else is an error.
fn image_side<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    use serde::de::Error;
    let value = Value::deserialize(d)?;
    let side = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    side.map(|s| s as usize).ok_or_else(|| {
        D::Error::custom(format!(
            "an image height or width must be a whole number of pixels or a string holding one, not {value}"
        ))
    })
}

#[derive(Deserialize)]
struct MdetrImage {
    id: u64,
    file_name: String,
    #[serde(deserialize_with = "image_side")]
    height: usize,
    #[serde(deserialize_with = "image_side")]
    width: usize,
    caption: String,
}

/// The `images` entries that deserialise as `T` and are the first with their id (`key` gives
/// an entry's id and file name; later ones are reported, see [`FirstById`]).
fn unique_images<T: serde::de::DeserializeOwned>(
    value: &Value,
    file: &Path,
    problems: &mut Problems,
    key: impl Fn(&T) -> (u64, &str),
) -> Result<Vec<(String, T)>, DataError> {
    let mut first = FirstById::default();
    let entries = records::<T>(value, "images", file, problems)?;
    Ok(entries
        .into_iter()
        .filter(|(location, image)| {
            let (id, name) = key(image);
            let entry = format!("{location} ({name})");
            first.claim("id", id, &entry, file, location, problems)
        })
        .collect())
}

#[derive(Deserialize)]
struct MdetrBox {
    image_id: u64,
    bbox: [f32; 4],
    tokens_positive: Vec<[usize; 2]>,
    #[serde(default)]
    category_id: Option<u64>,
    #[serde(default)]
    iscrowd: u8,
}

/// Reads an MDETR grounding file (`final_*.json`): one `images` entry per image–caption pair,
/// boxes in `annotations` with `bbox` `[x, y, w, h]` and `tokens_positive` character spans.
/// Image `file_name`s resolve under `image_root`. Crowd boxes are skipped silently, as MDETR does.
pub fn read_mdetr(
    file: &Path,
    image_root: &Path,
    problems: &mut Problems,
) -> Result<Vec<GroundingRecord>, DataError> {
    let value: Value = fiber_core::json::read_json(file)?;
    let mut out: Vec<GroundingRecord> = Vec::new();
    let mut by_id = HashMap::new();
    let images = unique_images(&value, file, problems, |i: &MdetrImage| {
        (i.id, &i.file_name)
    })?;
    for (location, image) in images {
        if image.caption.trim().is_empty() {
            problems.push(
                ProblemKind::EmptyText,
                file,
                location,
                "empty caption dropped",
            );
            continue;
        }
        match resolve_under(image_root, &image.file_name) {
            Ok(path) => {
                by_id.insert(image.id, out.len());
                out.push(GroundingRecord {
                    id: image.id,
                    path,
                    height: image.height,
                    width: image.width,
                    caption: image.caption,
                    boxes: Vec::new(),
                });
            }
            Err(message) => problems.push(ProblemKind::PathOutsideRoot, file, location, message),
        }
    }
    for (location, annotation) in records::<MdetrBox>(&value, "annotations", file, problems)? {
        let Some(index) = box_image(
            &by_id,
            annotation.image_id,
            annotation.iscrowd,
            file,
            &location,
            problems,
        ) else {
            continue;
        };
        let record = &mut out[index];
        let xyxy = xywh_to_xyxy(annotation.bbox);
        if let Some(message) = box_problem(&xyxy, record.height, record.width) {
            problems.push(
                ProblemKind::BadBox,
                file,
                location,
                format!("{message}; box dropped"),
            );
            continue;
        }
        let length = record.caption.chars().count();
        let spans: Vec<CharSpan> = annotation
            .tokens_positive
            .iter()
            .map(|s| (s[0], s[1]))
            .collect();
        if spans.is_empty() {
            problems.push(
                ProblemKind::MalformedRecord,
                file,
                location,
                "box has no `tokens_positive` span; dropped",
            );
            continue;
        }
        if let Some(&(s, e)) = spans.iter().find(|&&(s, e)| s >= e || e > length) {
            problems.push(
                ProblemKind::MalformedRecord,
                file,
                location,
                format!(
                    "span [{s}, {e}) does not lie in the {length}-character caption; box dropped"
                ),
            );
            continue;
        }
        record.boxes.push(GroundedBox {
            xyxy,
            spans,
            category: annotation.category_id,
        });
    }
    Ok(out)
}

/// An image of a detection dataset with its boxes and their category indices.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionImage {
    /// COCO image id.
    pub id: u64,
    /// Resolved image path.
    pub path: PathBuf,
    /// Height in pixels, as annotated.
    pub height: usize,
    /// Width in pixels, as annotated.
    pub width: usize,
    /// Boxes `[x0, y0, x1, y1]`.
    pub boxes: Vec<BoxXyxy>,
    /// Index into [`DetectionDataset::categories`] of each box.
    pub labels: Vec<usize>,
}

/// A COCO-style detection dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionDataset {
    /// Category ids, in file order.
    pub category_ids: Vec<u64>,
    /// Cleaned category names (lower case, `_` as space, parenthesised parts removed, as GLIP cleans them), parallel to `category_ids`.
    pub categories: Vec<String>,
    /// The images (also those without boxes).
    pub images: Vec<DetectionImage>,
}

/// A class name as GLIP puts it into a prompt: lower case, `_` as space, parenthesised parts
/// removed, runs of spaces collapsed.
pub(crate) fn clean_name(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '_' if depth == 0 => out.push(' '),
            c if depth == 0 => out.extend(c.to_lowercase()),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    #[serde(deserialize_with = "image_side")]
    height: usize,
    #[serde(deserialize_with = "image_side")]
    width: usize,
}

#[derive(Deserialize)]
struct CocoBox {
    image_id: u64,
    bbox: [f32; 4],
    category_id: u64,
    #[serde(default)]
    iscrowd: u8,
}

/// Reads a COCO `instances_*.json` file whose images lie under `image_root`. Crowd boxes are
/// skipped silently (as GLIP does for training).
pub fn read_coco_detection(
    file: &Path,
    image_root: &Path,
    problems: &mut Problems,
) -> Result<DetectionDataset, DataError> {
    let value: Value = fiber_core::json::read_json(file)?;
    let mut out = DetectionDataset::default();
    let mut category_index = HashMap::new();
    for (location, c) in records::<CocoCategory>(&value, "categories", file, problems)? {
        if clean_name(&c.name).is_empty() {
            problems.push(
                ProblemKind::EmptyText,
                file,
                location,
                "category without a name",
            );
            continue;
        }
        category_index.insert(c.id, out.categories.len());
        out.category_ids.push(c.id);
        out.categories.push(clean_name(&c.name));
    }
    let mut by_id = HashMap::new();
    let images = unique_images(&value, file, problems, |i: &CocoImage| (i.id, &i.file_name))?;
    for (location, image) in images {
        match resolve_under(image_root, &image.file_name) {
            Ok(path) => {
                by_id.insert(image.id, out.images.len());
                out.images.push(DetectionImage {
                    id: image.id,
                    path,
                    height: image.height,
                    width: image.width,
                    boxes: Vec::new(),
                    labels: Vec::new(),
                });
            }
            Err(message) => problems.push(ProblemKind::PathOutsideRoot, file, location, message),
        }
    }
    for (location, annotation) in records::<CocoBox>(&value, "annotations", file, problems)? {
        let Some(index) = box_image(
            &by_id,
            annotation.image_id,
            annotation.iscrowd,
            file,
            &location,
            problems,
        ) else {
            continue;
        };
        let Some(&label) = category_index.get(&annotation.category_id) else {
            problems.push(
                ProblemKind::MalformedRecord,
                file,
                location,
                format!(
                    "category_id {} is not in `categories`",
                    annotation.category_id
                ),
            );
            continue;
        };
        let image = &mut out.images[index];
        let xyxy = xywh_to_xyxy(annotation.bbox);
        if let Some(message) = box_problem(&xyxy, image.height, image.width) {
            problems.push(
                ProblemKind::BadBox,
                file,
                location,
                format!("{message}; box dropped"),
            );
            continue;
        }
        image.boxes.push(xyxy);
        image.labels.push(label);
    }
    Ok(out)
}

/// How detection annotations become grounding prompts (GLIP's recipe, docs/model.md §5.4).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptConfig {
    /// Most negative class names added to a prompt (`RANDOM_SAMPLE_NEG`, 85).
    pub random_sample_negative: usize,
    /// Probabilities of the options: one negative only, one positive only, all positives and
    /// all sampled negatives, and (inside the remaining case) dropping some positives.
    pub control_probabilities: [f64; 4],
    /// Text between class names (". ").
    pub separator: String,
    /// Token budget of the prompt, `<s>` and `</s>` included (256).
    pub max_tokens: usize,
    /// Whether the classes are shuffled (off for evaluation prompts).
    pub shuffle: bool,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            random_sample_negative: 85,
            control_probabilities: [0.05, 0.05, 0.5, 0.2],
            separator: ". ".into(),
            max_tokens: 256,
            shuffle: true,
        }
    }
}

/// How many positive and negative classes a training prompt gets (GLIP's control options).
fn control_counts(
    config: &PromptConfig,
    positives: usize,
    negatives: usize,
    rng: &mut impl Rng,
) -> (usize, usize) {
    let [one_negative, one_positive, full, drop_positive] = config.control_probabilities;
    let draw: f64 = rng.random();
    if draw < one_negative {
        (0, 1.min(negatives))
    } else if draw < one_negative + one_positive {
        (1.min(positives), 0)
    } else if draw < one_negative + one_positive + full {
        (positives, negatives)
    } else {
        let n = if negatives == 0 {
            0
        } else {
            rng.random_range(1..=negatives)
        };
        let p = if positives > 0 && rng.random_bool(drop_positive) {
            rng.random_range(1..=positives)
        } else {
            positives
        };
        (p, n)
    }
}

/// Joins `names` (class indices into `categories`) with the separator while the token budget
/// allows (`count_tokens` counts a piece of text without special tokens); returns the prompt and
/// the character span of each included class.
fn join_classes(
    names: &[usize],
    categories: &[String],
    config: &PromptConfig,
    count_tokens: &dyn Fn(&str) -> usize,
) -> (String, HashMap<usize, CharSpan>) {
    let mut prompt = String::new();
    let mut spans = HashMap::new();
    let mut used = 2;
    for &class in names {
        let piece = format!("{}{}", categories[class], config.separator);
        let cost = count_tokens(&piece);
        if used + cost > config.max_tokens {
            continue;
        }
        used += cost;
        let start = prompt.chars().count();
        spans.insert(class, (start, start + categories[class].chars().count()));
        prompt.push_str(&piece);
    }
    (prompt, spans)
}

/// A training prompt for a detection image: its positive classes (possibly fewer, per the
/// control options) and sampled negative classes, shuffled, joined by the separator, within
/// the token budget (positives are placed first in the budget). Boxes of classes left out are
/// dropped; every kept box is grounded on its class name's span.
pub fn detection_prompt(
    image: &DetectionImage,
    categories: &[String],
    config: &PromptConfig,
    count_tokens: &dyn Fn(&str) -> usize,
    rng: &mut impl Rng,
) -> GroundingRecord {
    let mut positives: Vec<usize> = image.labels.clone();
    positives.sort_unstable();
    positives.dedup();
    let mut negatives: Vec<usize> = (0..categories.len())
        .filter(|c| positives.binary_search(c).is_err())
        .collect();
    let full_negative = config.random_sample_negative.min(negatives.len());
    let (num_positive, num_negative) = control_counts(config, positives.len(), full_negative, rng);
    positives.shuffle(rng);
    positives.truncate(num_positive);
    negatives.shuffle(rng);
    negatives.truncate(num_negative);
    let ordered: Vec<usize> = positives.into_iter().chain(negatives).collect();
    let (_, fitting) = join_classes(&ordered, categories, config, count_tokens);
    // Pieces are counted one by one, so the classes that fit in this order fit in any order.
    let mut chosen: Vec<usize> = ordered
        .into_iter()
        .filter(|c| fitting.contains_key(c))
        .collect();
    if config.shuffle {
        chosen.shuffle(rng);
    }
    let (caption, spans) = join_classes(&chosen, categories, config, count_tokens);
    let boxes = image
        .boxes
        .iter()
        .zip(&image.labels)
        .filter_map(|(b, label)| {
            spans.get(label).map(|&span| GroundedBox {
                xyxy: *b,
                spans: vec![span],
                category: Some(*label as u64),
            })
        })
        .collect();
    GroundingRecord {
        id: image.id,
        path: image.path.clone(),
        height: image.height,
        width: image.width,
        caption,
        boxes,
    }
}

/// The evaluation prompt: every class in order, joined by the separator, with each class's span
/// (docs/model.md §5.6). Classes that do not fit the token budget are left out (evaluate in chunks then).
pub fn evaluation_prompt(
    categories: &[String],
    config: &PromptConfig,
    count_tokens: &dyn Fn(&str) -> usize,
) -> (String, Vec<Option<CharSpan>>) {
    let all: Vec<usize> = (0..categories.len()).collect();
    let (prompt, spans) = join_classes(&all, categories, config, count_tokens);
    (prompt, all.iter().map(|c| spans.get(c).copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn class_names_are_cleaned_as_glip_does() {
        assert_eq!(clean_name("Traffic_Light"), "traffic light");
        assert_eq!(clean_name("bow (weapon)"), "bow");
        assert_eq!(clean_name("  hot  dog "), "hot dog");
    }

    #[test]
    fn tokens_overlapping_a_span_are_marked_after_the_start_token() {
        // "a red circle": tokens "a" [0,1), " red" [1,5), " circle" [5,12)
        let tokens = vec![(10, (0, 1)), (11, (1, 5)), (12, (5, 12))];
        let boxes = vec![
            GroundedBox {
                xyxy: [0.0; 4],
                spans: vec![(2, 5)],
                category: None,
            },
            GroundedBox {
                xyxy: [0.0; 4],
                spans: vec![(0, 12)],
                category: None,
            },
        ];
        let map = token_map(&boxes, &tokens, 6);
        assert_eq!(map[0], vec![false, false, true, false, false, false]);
        assert_eq!(map[1], vec![false, true, true, true, false, false]);
        let cut = token_map(&boxes, &tokens, 4);
        assert_eq!(
            cut[1],
            vec![false, true, true, false],
            "tokens beyond the budget are cut off"
        );
    }

    fn image(labels: Vec<usize>) -> DetectionImage {
        let boxes = labels.iter().map(|_| [0.0, 0.0, 1.0, 1.0]).collect();
        DetectionImage {
            id: 1,
            path: PathBuf::from("x.jpg"),
            height: 2,
            width: 2,
            boxes,
            labels,
        }
    }

    #[test]
    fn prompts_name_positives_and_negatives_and_ground_boxes_on_their_class() {
        let categories: Vec<String> = ["cat", "dog", "hot dog", "car", "bus"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let count = |s: &str| s.split_whitespace().count();
        let config = PromptConfig {
            control_probabilities: [0.0, 0.0, 1.0, 0.0],
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let record = detection_prompt(
            &image(vec![1, 2, 1]),
            &categories,
            &config,
            &count,
            &mut rng,
        );
        for name in &categories {
            assert!(
                record.caption.contains(&format!("{name}. ")),
                "full option names every class: {}",
                record.caption
            );
        }
        assert_eq!(record.boxes.len(), 3);
        for b in &record.boxes {
            let (s, e) = b.spans[0];
            let named: String = record.caption.chars().skip(s).take(e - s).collect();
            assert_eq!(named, categories[b.category.unwrap() as usize]);
        }
        // One negative only: no box survives.
        let config = PromptConfig {
            control_probabilities: [1.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        let record = detection_prompt(&image(vec![1]), &categories, &config, &count, &mut rng);
        assert!(record.boxes.is_empty());
        assert_eq!(record.caption.matches(". ").count(), 1);
        // A tight budget keeps the positives first.
        let config = PromptConfig {
            control_probabilities: [0.0, 0.0, 1.0, 0.0],
            max_tokens: 4,
            ..Default::default()
        };
        let record = detection_prompt(&image(vec![2]), &categories, &config, &count, &mut rng);
        assert_eq!(record.caption, "hot dog. ");
        assert_eq!(record.boxes.len(), 1);
    }

    #[test]
    fn evaluation_prompts_keep_the_class_order() {
        let categories: Vec<String> = ["cat", "dog"].iter().map(|s| s.to_string()).collect();
        let (prompt, spans) =
            evaluation_prompt(&categories, &PromptConfig::default(), &|s: &str| s.len());
        assert_eq!(prompt, "cat. dog. ");
        assert_eq!(spans, vec![Some((0, 3)), Some((5, 8))]);
    }
}
