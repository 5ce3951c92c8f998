//! The detector on a user's own images (`cargo xtask detect` and `ground`): detections of
//! named classes as COCO results, each phrase of a caption grounded to its best boxes, and an
//! annotated PNG of each.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_data::annotate::{palette, write_annotated, BoxLabel};
use fiber_data::grounding::CharSpan;
use fiber_heads::grounding::phrases::phrase_spans;
use fiber_heads::grounding::{GroundingDetector, ImageDetection};
use serde::Serialize;

use crate::error::TrainError;
use crate::eval::grounding::coco_result;
use crate::run::RunFolder;
use crate::stages::Stage;

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
    let found = evaluator
        .pipeline()
        .detect(model, images, classes, device)?;
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
/// `fiber_heads::grounding::phrases::caption_phrases`) on `image`: its `top` best boxes;
/// writes `<out>/<stem>.json` and `<out>/<stem>.png`.
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
    let phrases = phrase_spans(caption, phrases)?;
    let evaluator = run.detector_evaluator();
    let spans: Vec<Vec<CharSpan>> = phrases.iter().map(|(_, s)| vec![*s]).collect();
    let found = evaluator.pipeline().ground(
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
