//! The detector on images from files (docs/model.md §5.6): prompts encoded with each phrase's
//! token positions, images resized and normalised as evaluation prepares them, one forward
//! pass per batch and prompt, post-processing, and the boxes scaled back to each image's own
//! pixels. [`DetectorPipeline`] borrows its parts, so that a trainer's evaluation and
//! [`super::Detector`] share it.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_data::grounding::{evaluation_prompt, token_map, CharSpan, GroundedBox, PromptConfig};
use fiber_data::image::{load_rgb, normalize, pad_batch, Normalization, PixelImage};
use fiber_data::transforms::{detection_resize, BoxXyxy};
use fiber_roberta::RobertaTokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::box_coder::BoxCoderConfig;
use super::model::GroundingDetector;
use super::postprocess::{postprocess, Detection, PostProcessConfig};
use crate::error::HeadsError;

/// How a detector folder's detector is run; `inference.json`, each field optional. The
/// defaults are FIBER-Base's evaluation settings (docs/model.md §5.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorInferenceSettings {
    /// Token positions of a prompt, `<s>` and `</s>` included (256).
    pub max_text_len: usize,
    /// Class names per prompt: more classes are detected in several prompts (80).
    pub classes_per_prompt: usize,
    /// Images are resized to this shorter side (800) …
    pub shorter_side: usize,
    /// … unless their longer side would exceed this (1333).
    pub max_longer: usize,
    /// Images per forward pass (1).
    pub batch_size: usize,
    /// Post-processing of detection.
    pub postprocess: PostProcessConfig,
    /// Post-processing of phrase grounding (no score threshold: every phrase gets ranked
    /// boxes).
    pub grounding_postprocess: PostProcessConfig,
    /// Post-processing of referring expressions (no score threshold, 3000 candidates per
    /// level).
    pub refexp_postprocess: PostProcessConfig,
}

impl Default for DetectorInferenceSettings {
    fn default() -> Self {
        Self {
            max_text_len: 256,
            classes_per_prompt: 80,
            shorter_side: 800,
            max_longer: 1333,
            batch_size: 1,
            postprocess: PostProcessConfig::new(),
            grounding_postprocess: PostProcessConfig::new().with_score_threshold(0.0),
            refexp_postprocess: PostProcessConfig::new()
                .with_score_threshold(0.0)
                .with_pre_nms_top_n(3000),
        }
    }
}

/// A prompt as the detector reads it: token ids (`<s>` … `</s>`) and, for each of its
/// phrases (class names), the token positions that name it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPrompt {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// Each phrase's token positions (empty where the prompt's length cut the phrase off).
    pub phrases: Vec<Vec<usize>>,
}

/// A detection in the original image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageDetection {
    /// `(x0, y0, x1, y1)`.
    pub bbox: BoxXyxy,
    /// `sqrt(class score · sigmoid(centerness))`.
    pub score: f32,
    /// Index of the class (or phrase) in the list given.
    pub class: usize,
}

/// An image prepared for the detector, with the scale back to its own pixels.
struct PreparedImage {
    pixels: PixelImage,
    /// `(height, width)` of the original image.
    original: (usize, usize),
}

impl PreparedImage {
    /// A box in the resized image's pixels, in the original image's pixels.
    fn to_original(&self, b: [f32; 4]) -> BoxXyxy {
        let sx = self.original.1 as f32 / self.pixels.width as f32;
        let sy = self.original.0 as f32 / self.pixels.height as f32;
        [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
    }
}

/// The detector's prompts, image preparation and post-processing, over borrowed settings and
/// tokenizer; the model is passed to each call.
#[derive(Debug, Clone, Copy)]
pub struct DetectorPipeline<'a> {
    /// Prompt length, image size, batch and post-processing.
    pub settings: &'a DetectorInferenceSettings,
    /// The tokenizer the detector was trained with.
    pub tokenizer: &'a RobertaTokenizer,
    /// The detector's box coding (`DetectorConfig::box_coder`).
    pub coder: &'a BoxCoderConfig,
}

impl DetectorPipeline<'_> {
    /// Encodes `text` with phrases at `phrases` (character spans each) within the prompt
    /// length; an empty prompt is an error.
    pub fn encode(
        &self,
        text: &str,
        phrases: &[Vec<CharSpan>],
    ) -> Result<EncodedPrompt, HeadsError> {
        if text.trim().is_empty() {
            return Err(HeadsError::Invalid("the prompt is empty".into()));
        }
        let tokens = self.tokenizer.encode_with_char_offsets(text)?;
        let len = (tokens.len() + 2).min(self.settings.max_text_len);
        let special = self.tokenizer.special();
        let mut input_ids = vec![special.bos as i64];
        input_ids.extend(tokens[..len - 2].iter().map(|(id, _)| *id as i64));
        input_ids.push(special.eos as i64);
        let boxes: Vec<GroundedBox> = phrases
            .iter()
            .map(|spans| GroundedBox {
                xyxy: [0.0; 4],
                spans: spans.clone(),
                category: None,
            })
            .collect();
        let phrases = token_map(&boxes, &tokens, len)
            .into_iter()
            .map(|row| (0..len).filter(|&t| row[t]).collect())
            .collect();
        Ok(EncodedPrompt { input_ids, phrases })
    }

    /// The class-name prompts of `categories`, joined as the original's evaluation prompts:
    /// each takes the next classes in order, at most `classes_per_prompt` and as many as fit
    /// the prompt length; each with the index of its first class. A class name too long for
    /// a prompt of its own is an error.
    pub fn class_prompts<S: AsRef<str>>(
        &self,
        categories: &[S],
    ) -> Result<Vec<(usize, EncodedPrompt)>, HeadsError> {
        let categories: Vec<String> = categories.iter().map(|c| c.as_ref().to_string()).collect();
        if categories.is_empty() {
            return Err(HeadsError::Invalid(
                "no class names to detect (write them as \"person. bicycle. dog\")".into(),
            ));
        }
        let per = self.settings.classes_per_prompt.max(1);
        let config = PromptConfig {
            max_tokens: self.settings.max_text_len,
            shuffle: false,
            ..PromptConfig::default()
        };
        let count = |text: &str| {
            self.tokenizer
                .encode_with_char_offsets(text)
                .map(|t| t.len())
                .unwrap_or(usize::MAX)
        };
        let mut prompts = Vec::new();
        let mut first = 0;
        while first < categories.len() {
            let mut n = per.min(categories.len() - first);
            let (text, spans) = loop {
                let (text, spans) =
                    evaluation_prompt(&categories[first..first + n], &config, &count);
                if spans.iter().all(Option::is_some) {
                    break (text, spans);
                }
                if n == 1 {
                    return Err(HeadsError::Invalid(format!(
                        "the class name `{}` does not fit a prompt of {} tokens",
                        categories[first], self.settings.max_text_len
                    )));
                }
                n -= 1;
            };
            let spans: Vec<Vec<CharSpan>> = spans.into_iter().flatten().map(|s| vec![s]).collect();
            prompts.push((first, self.encode(&text, &spans)?));
            first += n;
        }
        Ok(prompts)
    }

    /// Reads and prepares images (shorter side `shorter_side`, the detection normalisation),
    /// in parallel.
    fn prepare(&self, paths: &[PathBuf]) -> Result<Vec<PreparedImage>, HeadsError> {
        paths
            .par_iter()
            .map(|path| {
                let image = load_rgb(path)?;
                let (resized, _) = detection_resize(
                    &image,
                    &[],
                    self.settings.shorter_side,
                    self.settings.max_longer,
                )?;
                Ok(PreparedImage {
                    pixels: normalize(&resized, &Normalization::DETECTION_BGR255),
                    original: (image.height, image.width),
                })
            })
            .collect()
    }

    /// Detections of `images` (one batch) for one prompt, in original pixels.
    fn detect_batch<B: Backend>(
        &self,
        model: &GroundingDetector<B>,
        images: &[PreparedImage],
        prompt: &EncodedPrompt,
        config: &PostProcessConfig,
        device: &B::Device,
    ) -> Result<Vec<Vec<ImageDetection>>, HeadsError> {
        let pixels: Vec<PixelImage> = images.iter().map(|i| i.pixels.clone()).collect();
        let (values, (h, w)) = pad_batch(&pixels, 32)?;
        let n = images.len();
        let len = prompt.input_ids.len();
        let ids: Vec<i64> = (0..n).flat_map(|_| prompt.input_ids.clone()).collect();
        let output = model.forward(
            Tensor::from_data(TensorData::new(values, [n, 3, h, w]), device),
            Tensor::from_data(TensorData::new(ids, [n, len]), device),
            Tensor::ones([n, len], device),
        );
        // Phrases the prompt cut off have no tokens and get no box.
        let scored: Vec<usize> = (0..prompt.phrases.len())
            .filter(|&p| !prompt.phrases[p].is_empty())
            .collect();
        if scored.is_empty() {
            return Ok(vec![Vec::new(); n]);
        }
        let classes: Vec<Vec<usize>> = scored.iter().map(|&p| prompt.phrases[p].clone()).collect();
        let sizes: Vec<(usize, usize)> = images
            .iter()
            .map(|i| (i.pixels.height, i.pixels.width))
            .collect();
        let detections = postprocess(&output, &classes, &sizes, config, self.coder);
        Ok(detections
            .into_iter()
            .zip(images)
            .map(|(found, image)| {
                found
                    .into_iter()
                    .map(|Detection { bbox, score, class }| ImageDetection {
                        bbox: image.to_original(bbox),
                        score,
                        class: scored[class],
                    })
                    .collect()
            })
            .collect())
    }

    /// Detections of each image for every class of `categories` (detected in prompts of
    /// `classes_per_prompt` names), best first, at most `postprocess.detections_per_image`
    /// each (ties with the last kept).
    pub fn detect<B: Backend, S: AsRef<str>>(
        &self,
        model: &GroundingDetector<B>,
        paths: &[PathBuf],
        categories: &[S],
        device: &B::Device,
    ) -> Result<Vec<Vec<ImageDetection>>, HeadsError> {
        let prompts = self.class_prompts(categories)?;
        let config = &self.settings.postprocess;
        let mut all: Vec<Vec<ImageDetection>> = vec![Vec::new(); paths.len()];
        let per_batch = self.settings.batch_size.max(1);
        for (start, chunk) in paths.chunks(per_batch).enumerate() {
            let images = self.prepare(chunk)?;
            for (first, prompt) in &prompts {
                let found = self.detect_batch(model, &images, prompt, config, device)?;
                for (i, detections) in found.into_iter().enumerate() {
                    all[start * per_batch + i].extend(detections.into_iter().map(|mut d| {
                        d.class += first;
                        d
                    }));
                }
            }
        }
        for detections in &mut all {
            keep_best(detections, config.detections_per_image);
        }
        Ok(all)
    }

    /// The boxes of each phrase of `caption` (character spans each) on one image, best first,
    /// post-processed with `config` (`grounding_postprocess` or `refexp_postprocess`).
    pub fn ground<B: Backend>(
        &self,
        model: &GroundingDetector<B>,
        path: &Path,
        caption: &str,
        phrases: &[Vec<CharSpan>],
        config: &PostProcessConfig,
        device: &B::Device,
    ) -> Result<Vec<Vec<ImageDetection>>, HeadsError> {
        let prompt = self.encode(caption, phrases)?;
        let images = self.prepare(&[path.to_path_buf()])?;
        let found = self
            .detect_batch(model, &images, &prompt, config, device)?
            .remove(0);
        let mut by_phrase: Vec<Vec<ImageDetection>> = vec![Vec::new(); phrases.len()];
        for d in found {
            by_phrase[d.class].push(d);
        }
        for boxes in &mut by_phrase {
            boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        Ok(by_phrase)
    }
}

/// Keeps every detection scoring at least the `n`-th best score, best first.
fn keep_best(detections: &mut Vec<ImageDetection>, n: usize) {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    if detections.len() > n && n > 0 {
        let cut = detections[n - 1].score;
        detections.retain(|d| d.score >= cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_detections_are_kept_with_their_ties() {
        let d = |score| ImageDetection {
            bbox: [0.0; 4],
            score,
            class: 0,
        };
        let mut all = vec![d(0.1), d(0.9), d(0.5), d(0.5), d(0.2)];
        keep_best(&mut all, 3);
        let scores: Vec<f32> = all.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.5]);
        let mut tie = vec![d(0.5), d(0.9), d(0.5), d(0.5)];
        keep_best(&mut tie, 2);
        assert_eq!(tie.len(), 4);
    }
}
