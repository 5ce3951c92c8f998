//! The detector on a user's own images (`cargo xtask detect` and `ground`): detections of
//! named classes as COCO results, each phrase of a caption grounded to its best boxes, and an
//! annotated PNG of each.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_data::annotate::{palette, write_annotated, BoxLabel};
use fiber_data::grounding::CharSpan;
use fiber_heads::grounding::GroundingDetector;
use serde::Serialize;

use crate::error::TrainError;
use crate::eval::grounding::{coco_result, ImageDetection};
use crate::run::RunFolder;
use crate::stages::Stage;

/// The class names of a prompt written as the original writes them, `"person. bicycle. dog"`
/// (names separated by full stops; blanks trimmed, empty names dropped).
pub fn parse_classes(text: &str) -> Vec<String> {
    text.split('.')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words that end a phrase (prepositions, conjunctions and verbs of place).
const PHRASE_BREAKS: [&str; 28] = [
    "on", "in", "at", "of", "with", "and", "or", "to", "from", "by", "under", "over", "above",
    "below", "behind", "beside", "near", "next", "is", "are", "was", "were", "has", "have", "sits",
    "stands", "holding", "into",
];

/// Words dropped at the start of a phrase.
const ARTICLES: [&str; 5] = ["a", "an", "the", "some", "two"];

/// The phrases of a caption with their character spans: runs of words between punctuation and
/// break words (prepositions and conjunctions: "on", "and", "with", …), without leading
/// articles ("a red cup on a wooden table" → "red cup", "wooden table"). A simple stand-in for the noun-phrase chunker of GLIP's demo;
/// pass the phrases explicitly where it splits wrongly.
pub fn caption_phrases(caption: &str) -> Vec<(String, CharSpan)> {
    let chars: Vec<char> = caption.chars().collect();
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut breaks_after: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_alphanumeric() || chars[i] == '-' || chars[i] == '\'' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '-' || chars[i] == '\'')
            {
                i += 1;
            }
            words.push((start, i));
            breaks_after.push(false);
        } else {
            if !chars[i].is_whitespace() {
                if let Some(last) = breaks_after.last_mut() {
                    *last = true;
                }
            }
            i += 1;
        }
    }
    let text = |(s, e): (usize, usize)| chars[s..e].iter().collect::<String>();
    let mut phrases = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut flush = |current: &mut Vec<(usize, usize)>| {
        while current
            .first()
            .is_some_and(|&w| ARTICLES.contains(&text(w).to_lowercase().as_str()))
        {
            current.remove(0);
        }
        if let (Some(first), Some(last)) = (current.first(), current.last()) {
            let span = (first.0, last.1);
            phrases.push((text(span), span));
        }
        current.clear();
    };
    for (w, &word) in words.iter().enumerate() {
        if PHRASE_BREAKS.contains(&text(word).to_lowercase().as_str()) {
            flush(&mut current);
        } else {
            current.push(word);
        }
        if breaks_after[w] {
            flush(&mut current);
        }
    }
    flush(&mut current);
    phrases
}

/// The class names a run's detector was trained on (`detect/categories.json` when the run
/// fine-tuned for detection, else `fine/categories.json`), if it kept them.
pub fn run_classes(run: &RunFolder) -> Result<Option<Vec<String>>, TrainError> {
    for stage in [Stage::Detect, Stage::Fine] {
        let path = run.dir.join(stage.folder()).join("categories.json");
        if path.exists() {
            return Ok(Some(fiber_core::json::read_json(&path)?));
        }
    }
    Ok(None)
}

/// What `detect` wrote for one image.
#[derive(Debug, Clone, Serialize)]
pub struct DetectOutput {
    /// The image.
    pub image: PathBuf,
    /// The detections as COCO results (`category_id` = class index + 1, with its `category`).
    pub detections: Vec<serde_json::Value>,
    /// The results file written.
    pub json: PathBuf,
    /// The annotated copy written.
    pub png: PathBuf,
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_string()
}

/// Detects `classes` on each of `images` and keeps detections scoring at least `threshold`;
/// writes `<out>/<stem>.json` (COCO results, `image_id` 1) and `<out>/<stem>.png` (boxes with
/// class names and scores) per image.
pub fn detect_objects<B: Backend>(
    run: &RunFolder,
    model: &GroundingDetector<B>,
    images: &[PathBuf],
    classes: &[String],
    threshold: f32,
    out: &Path,
    device: &B::Device,
) -> Result<Vec<DetectOutput>, TrainError> {
    if classes.is_empty() {
        return Err(TrainError::Setting(
            "no class names: pass --classes \"person. bicycle. dog\"".into(),
        ));
    }
    let evaluator = run.detector_evaluator();
    let found = evaluator.detect(model, images, classes, device)?;
    let mut outputs = Vec::new();
    for (image, detections) in images.iter().zip(found) {
        let kept: Vec<ImageDetection> = detections
            .into_iter()
            .filter(|d| d.score >= threshold)
            .collect();
        let results: Vec<serde_json::Value> = kept
            .iter()
            .map(|d| {
                let mut r = coco_result(1, d.class as u64 + 1, d.bbox, d.score);
                r["category"] = classes[d.class].clone().into();
                r
            })
            .collect();
        let labels: Vec<BoxLabel> = kept
            .iter()
            .rev()
            .map(|d| BoxLabel {
                bbox: d.bbox,
                label: format!("{} {:.2}", classes[d.class], d.score),
                colour: palette(d.class),
            })
            .collect();
        let json = out.join(format!("{}.json", stem(image)));
        let png = out.join(format!("{}.png", stem(image)));
        fiber_core::json::write_json_atomically(&results, &json)?;
        write_annotated(image, &labels, &png)?;
        outputs.push(DetectOutput {
            image: image.clone(),
            detections: results,
            json,
            png,
        });
    }
    Ok(outputs)
}

/// One grounded phrase.
#[derive(Debug, Clone, Serialize)]
pub struct GroundedPhrase {
    /// The phrase.
    pub phrase: String,
    /// Its character span in the caption.
    pub span: CharSpan,
    /// Its best boxes, best first: `{bbox: [x0, y0, x1, y1], score}`.
    pub boxes: Vec<serde_json::Value>,
}

/// What `ground` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GroundOutput {
    /// The caption.
    pub caption: String,
    /// Each phrase with its best boxes.
    pub phrases: Vec<GroundedPhrase>,
    /// The JSON file written.
    pub json: PathBuf,
    /// The annotated copy written (each phrase's best box, one colour per phrase).
    pub png: PathBuf,
}

/// Grounds each phrase of `caption` (the `phrases` given, found in it, else
/// [`caption_phrases`]) on `image`: its `top` best boxes; writes `<out>/<stem>.json` and
/// `<out>/<stem>.png`.
#[allow(clippy::too_many_arguments)]
pub fn ground_caption<B: Backend>(
    run: &RunFolder,
    model: &GroundingDetector<B>,
    image: &Path,
    caption: &str,
    phrases: &[String],
    top: usize,
    out: &Path,
    device: &B::Device,
) -> Result<GroundOutput, TrainError> {
    let phrases: Vec<(String, CharSpan)> = if phrases.is_empty() {
        caption_phrases(caption)
    } else {
        phrases
            .iter()
            .map(|p| {
                let start = caption.find(p.as_str()).ok_or_else(|| {
                    TrainError::Setting(format!("the phrase `{p}` is not in the caption"))
                })?;
                let start = caption[..start].chars().count();
                Ok((p.clone(), (start, start + p.chars().count())))
            })
            .collect::<Result<_, TrainError>>()?
    };
    if phrases.is_empty() {
        return Err(TrainError::Setting(format!(
            "no phrase found in the caption `{caption}`; name them with --phrase"
        )));
    }
    let evaluator = run.detector_evaluator();
    let spans: Vec<Vec<CharSpan>> = phrases.iter().map(|(_, s)| vec![*s]).collect();
    let found = evaluator.ground(
        model,
        image,
        caption,
        &spans,
        &evaluator.settings.grounding_postprocess,
        device,
    )?;
    let mut labels = Vec::new();
    let grounded: Vec<GroundedPhrase> = phrases
        .into_iter()
        .zip(found)
        .enumerate()
        .map(|(i, ((phrase, span), boxes))| {
            if let Some(best) = boxes.first() {
                labels.push(BoxLabel {
                    bbox: best.bbox,
                    label: format!("{phrase} {:.2}", best.score),
                    colour: palette(i),
                });
            }
            GroundedPhrase {
                phrase,
                span,
                boxes: boxes
                    .iter()
                    .take(top)
                    .map(|d| serde_json::json!({"bbox": d.bbox, "score": d.score}))
                    .collect(),
            }
        })
        .collect();
    let json = out.join(format!("{}.json", stem(image)));
    let png = out.join(format!("{}.png", stem(image)));
    let output = GroundOutput {
        caption: caption.to_string(),
        phrases: grounded,
        json: json.clone(),
        png: png.clone(),
    };
    fiber_core::json::write_json_atomically(&output, &json)?;
    write_annotated(image, &labels, &png)?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_split_into_phrases_at_prepositions_and_punctuation() {
        let phrases = caption_phrases("a red cup on a wooden table");
        assert_eq!(
            phrases,
            vec![
                ("red cup".to_string(), (2, 9)),
                ("wooden table".to_string(), (15, 27))
            ]
        );
        let shapes =
            caption_phrases("a small red circle, a large blue square and a green triangle.");
        let names: Vec<&str> = shapes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["small red circle", "large blue square", "green triangle"]
        );
        assert!(caption_phrases("on the ...").is_empty());
        assert_eq!(
            parse_classes("person. bicycle.  hot dog. "),
            ["person", "bicycle", "hot dog"]
        );
    }
}
