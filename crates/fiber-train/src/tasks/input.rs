//! What the image–text tasks read: samples shared with the loader threads, how they are loaded
//! and collated, and how a collated batch becomes device tensors.

use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use fiber_core::host::int_matrix;
use fiber_data::image::to_tensor;
use fiber_data::loader::{
    collate_image_text, ImageTextBatch, ImageTransform, Loader, LoaderConfig, LoaderPosition,
    TextCollate,
};
use fiber_data::{CaptionDataset, Problems};
use fiber_roberta::EncodedBatch;

use crate::error::TrainError;
use crate::tasks::StageData;

/// Images with one text each (a caption, a question), shared with the loader threads.
#[derive(Clone)]
pub struct ImageTextSamples {
    /// Image files.
    pub images: Arc<Vec<PathBuf>>,
    /// Texts, parallel to `images`.
    pub texts: Arc<Vec<String>>,
}

impl ImageTextSamples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// A loader of `(image, text)` batches, tokenised (and masked when `text` has a masker).
    pub fn loader(
        &self,
        transform: ImageTransform,
        text: TextCollate,
        config: LoaderConfig,
        position: LoaderPosition,
    ) -> Result<Loader<ImageTextBatch>, TrainError> {
        let (images, texts) = (self.images.clone(), self.texts.clone());
        Ok(Loader::spawn(
            self.len(),
            config,
            position,
            move |i, rng| Ok((transform.load(&images[i], rng)?, texts[i].clone())),
            move |samples, rng| collate_image_text(samples, &text, rng),
        )?)
    }
}

/// What a task's loader reads: the samples, the image transform, the text collation and the
/// loader settings.
#[derive(Clone)]
pub struct ImageTextInput {
    /// Images with one text each.
    pub samples: ImageTextSamples,
    /// Image transform.
    pub transform: ImageTransform,
    /// Tokenisation (and MLM masking when set).
    pub text: TextCollate,
    /// Loader settings.
    pub loader: LoaderConfig,
}

impl ImageTextInput {
    /// A loader of the samples starting at `position`.
    pub fn spawn(&self, position: LoaderPosition) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.samples.loader(
            self.transform.clone(),
            self.text.clone(),
            self.loader.clone(),
            position,
        )
    }
}

impl ImageTextSamples {
    /// Every caption of `data` with its image.
    pub fn captions(data: &CaptionDataset) -> Self {
        Self {
            images: Arc::new(
                data.captions
                    .iter()
                    .map(|c| data.images[c.image].path.clone())
                    .collect(),
            ),
            texts: Arc::new(data.captions.iter().map(|c| c.text.clone()).collect()),
        }
    }
}

/// Token ids and attention mask `[n, len]` of a tokenised batch.
pub fn token_tensors<B: Backend>(
    tokens: &EncodedBatch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    (
        int_matrix(&tokens.input_ids, tokens.len, device),
        int_matrix(&tokens.attention_mask, tokens.len, device),
    )
}

/// Pixels `[n, 3, H, W]`, ids and mask `[n, len]` of a collated batch.
pub fn batch_tensors<B: Backend>(
    batch: &ImageTextBatch,
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>), TrainError> {
    let pixels = to_tensor::<B>(&batch.images, device)?;
    let (ids, mask) = token_tensors(&batch.tokens, device);
    Ok((pixels, ids, mask))
}

/// The Karpathy captions of a data folder: the training split and the held-out test split.
pub struct CaptionSplits {
    /// Training captions (Karpathy `train` and `restval`).
    pub train: CaptionDataset,
    /// Held-out captions (Karpathy `test`).
    pub test: CaptionDataset,
}

impl StageData for CaptionSplits {
    const READS: &'static str = "the annotations";

    /// Reads the folder's Karpathy file.
    fn read(data_dir: &std::path::Path, problems: &mut Problems) -> Result<Self, TrainError> {
        let (train, test) = fiber_data::layout::read_caption_splits(data_dir, problems)?;
        Ok(Self { train, test })
    }
}
