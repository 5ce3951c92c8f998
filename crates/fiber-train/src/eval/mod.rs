//! Evaluation on held-out data (docs/model.md §4), each metric with the chance or baseline
//! level it must beat: retrieval, VQA, NLVR2, captioning and masked-token accuracy, one module
//! each, and the held-out images and captions they share.

use std::path::PathBuf;

use fiber_data::image::PixelImage;
use fiber_data::loader::ImageTransform;
use fiber_data::CaptionDataset;
use rand::rngs::StdRng;
use rand::SeedableRng;

use burn::prelude::*;
use fiber_data::loader::TextCollate;
use fiber_data::nlvr2::Nlvr2Record;
use fiber_data::vqa::{AnswerVocab, VqaRecord};
use fiber_heads::{FiberModel, Nlvr2Model, VqaModel};
use fiber_roberta::RobertaTokenizer;

use crate::config::{EvalConfig, RunConfig};
use crate::error::TrainError;

pub mod caption;
pub mod detection;
pub mod grounding;
pub mod mlm;
pub mod nlvr2;
pub mod retrieval;
pub mod vqa;

pub use caption::{decode_config, evaluate_captions, generate_caption_text, CaptionReport};
pub use grounding::{DetectionReport, DetectorEvaluator, GroundingReport, RecallAtK};
pub use mlm::{evaluate_mlm, most_frequent_token, MlmReport};
pub use nlvr2::{evaluate_nlvr2, Nlvr2Report};
pub use retrieval::{evaluate_retrieval, Recalls, RetrievalReport};
pub use vqa::{evaluate_vqa, VqaReport};

/// Images read and preprocessed as evaluation and inference do (square resize to `size`,
/// ImageNet normalisation), in parallel.
pub fn load_images(paths: &[PathBuf], size: usize) -> Result<Vec<PixelImage>, TrainError> {
    use rayon::prelude::*;
    let transform = ImageTransform::Resize { size };
    paths
        .par_iter()
        .map(|p| {
            transform
                .load(p, &mut StdRng::seed_from_u64(0))
                .map_err(TrainError::from)
        })
        .collect()
}

/// The held-out captioned images that retrieval, MLM and captioning evaluate on: the first
/// `retrieval_candidates` test images with a caption (their first caption each) and the first
/// `caption_images` of them (with all their captions as references). Images without a usable
/// caption cannot be retrieved or scored and are left out.
pub struct HeldOutCaptions {
    /// The images (resized, normalised), the first `max(candidates, caption images)`.
    pub images: Vec<PixelImage>,
    /// The first caption of each of the first `candidates` images.
    pub texts: Vec<String>,
    /// Every caption of each of the first `caption_images` images.
    pub references: Vec<Vec<String>>,
}

impl HeldOutCaptions {
    /// Chooses and loads the held-out set of `test` for images of `size`.
    pub fn new(test: &CaptionDataset, eval: &EvalConfig, size: usize) -> Result<Self, TrainError> {
        let captions_of = |i: usize| {
            test.captions
                .iter()
                .filter(|c| c.image == i)
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
        };
        let captioned: Vec<usize> = (0..test.images.len())
            .filter(|&i| !captions_of(i).is_empty())
            .collect();
        let n = eval.retrieval_candidates.min(captioned.len());
        let k = eval.caption_images.min(captioned.len());
        let chosen = &captioned[..n.max(k)];
        let paths: Vec<PathBuf> = chosen
            .iter()
            .map(|&i| test.images[i].path.clone())
            .collect();
        Ok(Self {
            images: load_images(&paths, size)?,
            texts: chosen[..n]
                .iter()
                .map(|&i| captions_of(i).swap_remove(0))
                .collect(),
            references: chosen[..k].iter().map(|&i| captions_of(i)).collect(),
        })
    }

    /// The retrieval candidates: images and their captions (caption `j` belongs to image `j`).
    pub fn retrieval(&self) -> (&[PixelImage], &[String]) {
        (&self.images[..self.texts.len()], &self.texts)
    }

    /// The images to caption and their references.
    pub fn captioning(&self) -> (&[PixelImage], &[Vec<String>]) {
        (&self.images[..self.references.len()], &self.references)
    }
}

/// What every evaluation of a run takes besides the model and the data: the run's settings and
/// tokenizer. Training (through the workspace) and `cargo xtask eval` (through a saved run)
/// evaluate through it alike.
pub struct Evaluator<'a> {
    /// The run's configuration (image size, text length, evaluation settings, seed).
    pub config: &'a RunConfig,
    /// The run's tokenizer.
    pub tokenizer: &'a RobertaTokenizer,
}

impl Evaluator<'_> {
    /// The held-out captioned images of `test`, loaded at the model's image size.
    pub fn held_out(&self, test: &CaptionDataset) -> Result<HeldOutCaptions, TrainError> {
        HeldOutCaptions::new(
            test,
            &self.config.eval,
            self.config.model.fiber.swin.image_size,
        )
    }

    /// Retrieval with ITC and ITC + ITM re-ranking among the held-out images.
    pub fn retrieval<B: Backend>(
        &self,
        model: &FiberModel<B>,
        held_out: &HeldOutCaptions,
        device: &B::Device,
    ) -> Result<RetrievalReport, TrainError> {
        let (images, texts) = held_out.retrieval();
        evaluate_retrieval(
            model,
            images,
            texts,
            self.tokenizer,
            self.config.model.max_text_len,
            self.config.eval.itm_rerank_k,
            device,
        )
    }

    /// Masked-token accuracy on the held-out retrieval captions; `train` gives the baseline.
    pub fn mlm<B: Backend>(
        &self,
        model: &FiberModel<B>,
        held_out: &HeldOutCaptions,
        train: &CaptionDataset,
        device: &B::Device,
    ) -> Result<MlmReport, TrainError> {
        let (images, texts) = held_out.retrieval();
        let max_len = self.config.model.max_text_len;
        evaluate_mlm(
            model,
            images,
            texts,
            most_frequent_token(train, self.tokenizer, max_len)?,
            &TextCollate::default_masker(self.tokenizer),
            self.tokenizer,
            max_len,
            self.config.mlm_eval_seed(),
            device,
        )
    }

    /// BLEU-4 and CIDEr-D of beam-search captions of the held-out images.
    pub fn captioning<B: Backend>(
        &self,
        model: &FiberModel<B>,
        held_out: &HeldOutCaptions,
        device: &B::Device,
    ) -> Result<CaptionReport, TrainError> {
        let (images, references) = held_out.captioning();
        evaluate_captions(
            model,
            images,
            references,
            self.tokenizer,
            &decode_config(self.tokenizer, &self.config.eval),
            device,
        )
    }

    /// VQA accuracy on `records` (answers from `vocab`, the most frequent first).
    pub fn vqa<B: Backend>(
        &self,
        model: &VqaModel<B>,
        vocab: &AnswerVocab,
        records: &[VqaRecord],
        device: &B::Device,
    ) -> Result<VqaReport, TrainError> {
        let images = load_images(
            &records.iter().map(|r| r.image.clone()).collect::<Vec<_>>(),
            self.config.model.fiber.swin.image_size,
        )?;
        let majority = vocab.answers.first().cloned().unwrap_or_default();
        evaluate_vqa(
            model,
            records,
            &images,
            vocab,
            &majority,
            self.tokenizer,
            self.config.model.max_text_len,
            self.config.eval.vqa_batch_size,
            device,
        )
    }

    /// NLVR2 accuracy on `records`.
    pub fn nlvr2<B: Backend>(
        &self,
        model: &Nlvr2Model<B>,
        records: &[Nlvr2Record],
        device: &B::Device,
    ) -> Result<Nlvr2Report, TrainError> {
        evaluate_nlvr2(
            model,
            records,
            self.config.model.fiber.swin.image_size,
            self.tokenizer,
            self.config.model.max_text_len,
            self.config.eval.nlvr2_batch_size,
            device,
        )
    }
}
