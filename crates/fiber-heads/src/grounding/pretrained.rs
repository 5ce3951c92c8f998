//! The grounding detector for inference from a detector folder: [`Detector`] detects named
//! classes on images (open-vocabulary detection) and grounds the phrases of a caption
//! (docs/model.md §5.6).
//!
//! A detector folder holds
//! - `config.json`: the [`DetectorConfig`], with the fused backbone's sizes under `backbone`;
//! - `model.safetensors`: the weights under the original fine-grained checkpoint keys
//!   (docs/model.md §6.4);
//! - `tokenizer.json`: the HuggingFace RoBERTa tokenizer the detector was trained with;
//! - `categories.json` (optional): the class names it was trained to detect;
//! - `inference.json` (optional): [`DetectorInferenceSettings`].
//!
//! `cargo xtask export --stage fine` (or `detect`, `ground`) writes one from a trained run.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_data::grounding::CharSpan;
use fiber_roberta::RobertaTokenizer;
use serde::Serialize;

use super::config::DetectorConfig;
use super::inference::{DetectorInferenceSettings, DetectorPipeline, ImageDetection};
use super::model::GroundingDetector;
use super::phrases::phrase_spans;
use super::weights::{DetectorCheckpoint, WeightCopy};
use crate::error::HeadsError;
use crate::pretrained::{
    check_text_len, load_tokenizer, read_or_default, require_files, CONFIG_FILE, SETTINGS_FILE,
    TOKENIZER_FILE, TOKENIZER_HINT, WEIGHTS_FILE,
};

/// The class names' file in a detector folder (a JSON list).
pub const CATEGORIES_FILE: &str = "categories.json";

/// One phrase of a caption with its boxes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundedPhrase {
    /// The phrase.
    pub phrase: String,
    /// Its character span `[start, end)` in the caption.
    pub span: CharSpan,
    /// Its boxes in the image's pixels, best first (`class` is the phrase's index).
    pub boxes: Vec<ImageDetection>,
}

/// A grounding detector ready for inference, with its tokenizer and settings: one type for
/// open-vocabulary detection and phrase grounding on image files.
#[derive(Debug)]
pub struct Detector<B: Backend> {
    model: GroundingDetector<B>,
    config: DetectorConfig,
    tokenizer: RobertaTokenizer,
    settings: DetectorInferenceSettings,
    categories: Option<Vec<String>>,
    device: B::Device,
}

impl<B: Backend> Detector<B> {
    /// Loads the detector folder `dir` (see the module documentation) onto `device`. A missing
    /// file, a configuration without `backbone`, weights that do not fit the configuration
    /// (each bad key with both shapes) or a tokenizer larger than the embedding table is an
    /// error.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, HeadsError> {
        let dir = dir.as_ref().to_path_buf();
        require_files(
            &dir,
            &[
                (
                    CONFIG_FILE,
                    "the detector configuration, with the backbone under `backbone`",
                ),
                (
                    WEIGHTS_FILE,
                    "the weights under the original fine-grained checkpoint keys",
                ),
                (TOKENIZER_FILE, TOKENIZER_HINT),
            ],
        )?;
        let checkpoint = DetectorCheckpoint::read(&dir, None, WeightCopy::Model)?;
        let (model, _) = checkpoint.detector(device)?;
        let config = checkpoint.config;
        let tokenizer = load_tokenizer(&dir, config.backbone.roberta.vocab_size)?;
        let settings_path = dir.join(SETTINGS_FILE);
        let settings: DetectorInferenceSettings = read_or_default(&settings_path)?;
        check_text_len(
            &settings_path,
            settings.max_text_len,
            3,
            config.backbone.roberta.max_text_len(),
        )?;
        let categories_path = dir.join(CATEGORIES_FILE);
        let categories = if categories_path.is_file() {
            Some(fiber_core::json::read_json(&categories_path)?)
        } else {
            None
        };
        Ok(Self {
            model,
            config,
            tokenizer,
            settings,
            categories,
            device: device.clone(),
        })
    }

    /// The detector's network.
    pub fn model(&self) -> &GroundingDetector<B> {
        &self.model
    }

    /// The detector's sizes.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The tokenizer prompts are encoded with.
    pub fn tokenizer(&self) -> &RobertaTokenizer {
        &self.tokenizer
    }

    /// Prompt length, image size and post-processing.
    pub fn settings(&self) -> &DetectorInferenceSettings {
        &self.settings
    }

    /// The class names the detector was trained on (`categories.json`), if the folder has them.
    pub fn categories(&self) -> Option<&[String]> {
        self.categories.as_deref()
    }

    /// The prompts, image preparation and post-processing this detector runs with.
    pub fn pipeline(&self) -> DetectorPipeline<'_> {
        DetectorPipeline {
            settings: &self.settings,
            tokenizer: &self.tokenizer,
            coder: &self.config.box_coder,
        }
    }

    /// Detections of `classes` (names, e.g. from `phrases::parse_classes("person. dog")`) on
    /// each image file, best first, in each image's own pixels; `class` indexes `classes`.
    /// Boxes pass the `postprocess` settings' score threshold; unreadable images and empty
    /// class lists are errors.
    pub fn detect<P: AsRef<Path>, S: AsRef<str>>(
        &self,
        images: &[P],
        classes: &[S],
    ) -> Result<Vec<Vec<ImageDetection>>, HeadsError> {
        let paths: Vec<PathBuf> = images.iter().map(|p| p.as_ref().to_path_buf()).collect();
        self.pipeline()
            .detect(&self.model, &paths, classes, &self.device)
    }

    /// The phrases of `caption` on one image file, each with its boxes, best first: the
    /// `phrases` given (each must occur in the caption), or, when none are given, those
    /// `phrases::caption_phrases` finds.
    pub fn ground<S: AsRef<str>>(
        &self,
        image: impl AsRef<Path>,
        caption: &str,
        phrases: &[S],
    ) -> Result<Vec<GroundedPhrase>, HeadsError> {
        let phrases = phrase_spans(caption, phrases)?;
        let spans: Vec<Vec<CharSpan>> = phrases.iter().map(|(_, s)| vec![*s]).collect();
        let found = self.pipeline().ground(
            &self.model,
            image.as_ref(),
            caption,
            &spans,
            &self.settings.grounding_postprocess,
            &self.device,
        )?;
        Ok(phrases
            .into_iter()
            .zip(found)
            .map(|((phrase, span), boxes)| GroundedPhrase {
                phrase,
                span,
                boxes,
            })
            .collect())
    }
}
