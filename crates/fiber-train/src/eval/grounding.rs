//! Evaluation of the grounding detector (docs/model.md §5.6): detection with class-name
//! prompts scored by COCO box mAP, and phrase grounding scored by Recall@1/5/10 with the MDETR
//! protocol; each with a baseline measured the same way. Also the detection and grounding of
//! single images that the inference commands use.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_data::detection_batch::DetectionBatch;
use fiber_data::grounding::{CharSpan, DetectionDataset, GroundingRecord};
use fiber_data::transforms::BoxXyxy;
use fiber_heads::grounding::box_coder::BoxCoderConfig;
use fiber_heads::grounding::{DetectorInferenceSettings, DetectorPipeline, GroundingDetector};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{DetectorSettings, RunConfig};
use crate::error::TrainError;
use crate::eval::detection::CocoBoxStats;

/// Pixels `[n, 3, H, W]`, ids and mask `[n, L]` of a collated detection batch.
pub fn detection_tensors<B: Backend>(
    batch: &DetectionBatch,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let n = batch.image_sizes.len();
    let (h, w) = batch.padded_size;
    let pixels = Tensor::from_data(
        TensorData::new(batch.pixel_values.clone(), [n, 3, h, w]),
        device,
    );
    let ids = Tensor::from_data(
        TensorData::new(batch.input_ids.clone(), [n, batch.len]),
        device,
    );
    let mask = Tensor::from_data(
        TensorData::new(batch.attention_mask.clone(), [n, batch.len]),
        device,
    );
    (pixels, ids, mask)
}

/// The COCO statistics of the detector on a held-out detection file, next to a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionReport {
    /// The twelve COCOeval statistics of the detector.
    #[serde(flatten)]
    pub stats: CocoBoxStats,
    /// The same statistics of the prior-box baseline: on every image, one box per class at
    /// the training boxes' mean centre and size, scored by the class's training frequency.
    pub baseline: CocoBoxStats,
    /// Images evaluated.
    pub images: usize,
    /// Class names per prompt (the classes are evaluated in prompts of this many).
    pub classes_per_prompt: usize,
    /// The detections written in COCO results format.
    pub detections_file: PathBuf,
}

/// Recall@1/5/10 of phrase grounding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecallAtK {
    /// A phrase's best box hits one of its boxes.
    #[serde(rename = "r@1")]
    pub r1: f64,
    /// One of its 5 best boxes hits.
    #[serde(rename = "r@5")]
    pub r5: f64,
    /// One of its 10 best boxes hits.
    #[serde(rename = "r@10")]
    pub r10: f64,
}

/// Phrase grounding on held-out captions with the MDETR protocol: a phrase is found at k when
/// one of its k best boxes has IoU ≥ 0.5 with one of its ground-truth boxes (boxes named by the
/// same spans form one phrase; no box merging, MDETR's "separate" ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundingReport {
    /// The detector's recalls.
    #[serde(flatten)]
    pub recall: RecallAtK,
    /// The recalls of random boxes (uniform centres, sizes of training boxes), the chance level.
    pub chance: RecallAtK,
    /// The recalls of a perfect object detector that cannot tell phrases apart: each phrase
    /// ranks the ground-truth boxes of all the caption's phrases in random order.
    pub any_object: RecallAtK,
    /// Phrases evaluated (phrases cut off by the prompt length count as misses).
    pub phrases: usize,
}

/// Plain IoU of two `(x0, y0, x1, y1)` boxes (as MDETR's evaluation computes it).
pub fn box_iou(a: BoxXyxy, b: BoxXyxy) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: BoxXyxy| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Recall@1/5/10 over phrases, from each phrase's ranked boxes and its ground-truth boxes.
pub fn recall_at_k(phrases: &[(Vec<BoxXyxy>, Vec<BoxXyxy>)]) -> RecallAtK {
    let found = |k: usize| {
        let hits = phrases
            .iter()
            .filter(|(ranked, truth)| {
                ranked
                    .iter()
                    .take(k)
                    .any(|p| truth.iter().any(|t| box_iou(*p, *t) >= 0.5))
            })
            .count();
        hits as f64 / phrases.len().max(1) as f64
    };
    RecallAtK {
        r1: found(1),
        r5: found(5),
        r10: found(10),
    }
}

/// The phrases of a grounding record: its boxes grouped by the spans that name them.
pub fn record_phrases(record: &GroundingRecord) -> Vec<(Vec<CharSpan>, Vec<BoxXyxy>)> {
    let mut phrases: Vec<(Vec<CharSpan>, Vec<BoxXyxy>)> = Vec::new();
    for b in &record.boxes {
        let mut spans = b.spans.clone();
        spans.sort_unstable();
        match phrases.iter_mut().find(|(s, _)| *s == spans) {
            Some((_, boxes)) => boxes.push(b.xyxy),
            None => phrases.push((spans, vec![b.xyxy])),
        }
    }
    phrases
}

/// The detector's evaluation and inference settings with the run's tokenizer.
pub struct DetectorEvaluator<'a> {
    /// Sizes, prompts and post-processing.
    pub settings: DetectorSettings,
    /// `settings` as the pipeline reads them (prompt length, image size, post-processing).
    pub inference: DetectorInferenceSettings,
    /// The run's tokenizer.
    pub tokenizer: &'a RobertaTokenizer,
    /// The detector's box coding.
    pub coder: BoxCoderConfig,
    /// Seed of the chance baselines.
    pub seed: u64,
}

impl<'a> DetectorEvaluator<'a> {
    /// The evaluator of a run.
    pub fn new(config: &'a RunConfig, tokenizer: &'a RobertaTokenizer) -> Self {
        Self {
            settings: config.detector.clone(),
            inference: config.detector.inference(),
            tokenizer,
            coder: config
                .detector
                .detector_config(&config.model.fiber)
                .box_coder,
            seed: config.seed,
        }
    }

    /// Prompts, image preparation and post-processing (shared with
    /// `fiber_heads::grounding::Detector`).
    pub fn pipeline(&self) -> DetectorPipeline<'_> {
        DetectorPipeline {
            settings: &self.inference,
            tokenizer: self.tokenizer,
            coder: &self.coder,
        }
    }

    /// COCO box mAP of the detector on the images of `dataset` (read from `gt_file`), with the
    /// prior-box baseline from the training datasets; both results files are written to `dir`.
    pub fn detection<B: Backend>(
        &self,
        model: &GroundingDetector<B>,
        gt_file: &Path,
        dataset: &DetectionDataset,
        train: &[DetectionDataset],
        dir: &Path,
        device: &B::Device,
    ) -> Result<DetectionReport, TrainError> {
        let paths: Vec<PathBuf> = dataset.images.iter().map(|i| i.path.clone()).collect();
        let detections = self
            .pipeline()
            .detect(model, &paths, &dataset.categories, device)?;
        let results: Vec<serde_json::Value> = dataset
            .images
            .iter()
            .zip(&detections)
            .flat_map(|(image, found)| {
                found.iter().map(move |d| {
                    coco_result(image.id, dataset.category_ids[d.class], d.bbox, d.score)
                })
            })
            .collect();
        let detections_file = dir.join("detections_test.json");
        let stats = score_results(gt_file, &detections_file, &results)?;
        let baseline = prior_box_results(dataset, train);
        let baseline_file = dir.join("baseline_detections_test.json");
        let baseline = score_results(gt_file, &baseline_file, &baseline)?;
        Ok(DetectionReport {
            stats,
            baseline,
            images: dataset.images.len(),
            classes_per_prompt: self.settings.classes_per_prompt,
            detections_file,
        })
    }

    /// Phrase-grounding recall of the detector on `records`, with the chance level of random
    /// boxes sized as the boxes of `train`.
    pub fn grounding<B: Backend>(
        &self,
        model: &GroundingDetector<B>,
        records: &[GroundingRecord],
        train: &[GroundingRecord],
        device: &B::Device,
    ) -> Result<GroundingReport, TrainError> {
        let mut ranked: Vec<(Vec<BoxXyxy>, Vec<BoxXyxy>)> = Vec::new();
        let mut random: Vec<(Vec<BoxXyxy>, Vec<BoxXyxy>)> = Vec::new();
        let sizes: Vec<(f32, f32)> = train
            .iter()
            .flat_map(|r| {
                r.boxes.iter().map(move |b| {
                    (
                        (b.xyxy[2] - b.xyxy[0]) / r.width as f32,
                        (b.xyxy[3] - b.xyxy[1]) / r.height as f32,
                    )
                })
            })
            .collect();
        let mut objects: Vec<(Vec<BoxXyxy>, Vec<BoxXyxy>)> = Vec::new();
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x6A0D);
        for record in records {
            let phrases = record_phrases(record);
            let all: Vec<BoxXyxy> = record.boxes.iter().map(|b| b.xyxy).collect();
            for (_, truth) in &phrases {
                let mut shuffled = all.clone();
                shuffled.shuffle(&mut rng);
                objects.push((shuffled, truth.clone()));
            }
            let spans: Vec<Vec<CharSpan>> = phrases.iter().map(|(s, _)| s.clone()).collect();
            let found = self.pipeline().ground(
                model,
                &record.path,
                &record.caption,
                &spans,
                &self.settings.grounding_postprocess,
                device,
            )?;
            for ((_, truth), boxes) in phrases.into_iter().zip(found) {
                ranked.push((boxes.iter().map(|d| d.bbox).collect(), truth.clone()));
                let guesses = (0..10)
                    .map(|_| random_box(&sizes, record.width, record.height, &mut rng))
                    .collect();
                random.push((guesses, truth));
            }
        }
        Ok(GroundingReport {
            recall: recall_at_k(&ranked),
            chance: recall_at_k(&random),
            any_object: recall_at_k(&objects),
            phrases: ranked.len(),
        })
    }
}

impl DetectorEvaluator<'_> {
    /// Referring-expression accuracy (RefCOCO/+/g in MDETR's format): each record's first
    /// phrase is the expression; it counts as found when the best box has IoU ≥ 0.5 with one
    /// of its boxes (post-processed with `refexp_postprocess`).
    pub fn refexp<B: Backend>(
        &self,
        model: &GroundingDetector<B>,
        records: &[GroundingRecord],
        device: &B::Device,
    ) -> Result<RefexpReport, TrainError> {
        let mut ranked = Vec::new();
        for record in records {
            let Some((spans, truth)) = record_phrases(record).into_iter().next() else {
                continue;
            };
            let found = self.pipeline().ground(
                model,
                &record.path,
                &record.caption,
                &[spans],
                &self.settings.refexp_postprocess,
                device,
            )?;
            ranked.push((found[0].iter().map(|d| d.bbox).collect(), truth));
        }
        Ok(RefexpReport {
            accuracy: recall_at_k(&ranked).r1,
            expressions: ranked.len(),
        })
    }
}

/// Top-1 accuracy on referring expressions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefexpReport {
    /// Share of expressions whose best box has IoU ≥ 0.5 with their box.
    pub accuracy: f64,
    /// Expressions evaluated (records with at least one box).
    pub expressions: usize,
}

/// One detection in COCO results format (`bbox` as `[x, y, w, h]`).
pub fn coco_result(image_id: u64, category_id: u64, b: BoxXyxy, score: f32) -> serde_json::Value {
    json!({
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
        "score": score,
    })
}

/// Writes `results` to `file` and scores them against `gt_file`.
fn score_results(
    gt_file: &Path,
    file: &Path,
    results: &[serde_json::Value],
) -> Result<CocoBoxStats, TrainError> {
    fiber_core::json::write_json_atomically(&results, file)?;
    CocoBoxStats::evaluate_files(gt_file, file)
}

/// The prior-box baseline: on every image of `dataset`, one box per class at the mean centre
/// and size (relative to the image) of the training boxes, scored by the class's share of them.
fn prior_box_results(
    dataset: &DetectionDataset,
    train: &[DetectionDataset],
) -> Vec<serde_json::Value> {
    let mut sum = [0.0f64; 4];
    let mut count = 0usize;
    let mut per_class = vec![0usize; dataset.categories.len()];
    for data in train {
        for image in &data.images {
            for (b, &label) in image.boxes.iter().zip(&image.labels) {
                let (w, h) = (image.width as f64, image.height as f64);
                let rel = [
                    (b[0] + b[2]) as f64 / 2.0 / w,
                    (b[1] + b[3]) as f64 / 2.0 / h,
                    (b[2] - b[0]) as f64 / w,
                    (b[3] - b[1]) as f64 / h,
                ];
                for (s, r) in sum.iter_mut().zip(rel) {
                    *s += r;
                }
                count += 1;
                // Classes are matched by name: the training file may number them otherwise.
                if let Some(c) = dataset
                    .categories
                    .iter()
                    .position(|n| *n == data.categories[label])
                {
                    per_class[c] += 1;
                }
            }
        }
    }
    let mean = sum.map(|s| s / count.max(1) as f64);
    dataset
        .images
        .iter()
        .flat_map(|image| {
            let (w, h) = (image.width as f64, image.height as f64);
            let b = [
                ((mean[0] - mean[2] / 2.0) * w) as f32,
                ((mean[1] - mean[3] / 2.0) * h) as f32,
                ((mean[0] + mean[2] / 2.0) * w) as f32,
                ((mean[1] + mean[3] / 2.0) * h) as f32,
            ];
            let per_class = &per_class;
            dataset
                .category_ids
                .iter()
                .enumerate()
                .map(move |(c, &id)| {
                    let score = (per_class[c] as f32 + 1.0) / (count as f32 + 1.0);
                    coco_result(image.id, id, b, score)
                })
        })
        .collect()
}

/// A box of a random training size (relative to the image) at a uniform centre.
fn random_box(sizes: &[(f32, f32)], width: usize, height: usize, rng: &mut StdRng) -> BoxXyxy {
    let (w, h) = if sizes.is_empty() {
        (0.25, 0.25)
    } else {
        sizes[rng.random_range(0..sizes.len())]
    };
    let (cx, cy): (f32, f32) = (rng.random(), rng.random());
    let (w, h) = (w * width as f32, h * height as f32);
    let (cx, cy) = (cx * width as f32, cy * height as f32);
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiber_data::grounding::GroundedBox;

    #[test]
    fn a_phrase_is_found_at_k_when_one_of_its_k_best_boxes_overlaps_one_of_its_boxes() {
        let truth = vec![[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let miss = [50.0, 50.0, 60.0, 60.0];
        let phrases = vec![
            // Best box on the second ground-truth box: found at 1.
            (vec![[21.0, 21.0, 30.0, 30.0]], truth.clone()),
            // Found at 5 only.
            (vec![miss, miss, miss, [0.0, 0.0, 9.0, 10.0]], truth.clone()),
            // IoU 0.25 only: never found; and no boxes at all.
            (vec![[0.0, 0.0, 5.0, 5.0]], truth.clone()),
            (vec![], truth),
        ];
        let r = recall_at_k(&phrases);
        assert_eq!((r.r1, r.r5, r.r10), (0.25, 0.5, 0.5));
        assert!((box_iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn boxes_named_by_the_same_spans_form_one_phrase() {
        let b = |x: f32, spans: Vec<CharSpan>| GroundedBox {
            xyxy: [x, 0.0, x + 1.0, 1.0],
            spans,
            category: None,
        };
        let record = GroundingRecord {
            id: 1,
            path: PathBuf::from("a.jpg"),
            height: 10,
            width: 10,
            caption: "two dogs and a cat".into(),
            boxes: vec![
                b(0.0, vec![(0, 8)]),
                b(2.0, vec![(0, 8)]),
                b(4.0, vec![(15, 18)]),
            ],
        };
        let phrases = record_phrases(&record);
        assert_eq!(phrases.len(), 2);
        assert_eq!(phrases[0].1.len(), 2);
        assert_eq!(phrases[1].0, vec![(15, 18)]);
    }
}
