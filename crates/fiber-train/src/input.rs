//! What the tasks read: each stage's data from a data folder ([`StageData`], through
//! `fiber_data::layout`), samples shared with the loader threads, how they are loaded and
//! collated, and how a collated batch becomes device tensors.

use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use fiber_data::image::{to_tensor, PixelImage};
use fiber_data::layout::{DataSource, Nlvr2Folder, VqaFolder};
use fiber_data::loader::{
    collate_image_text, ImageTextBatch, ImageTransform, Loader, LoaderConfig, LoaderPosition,
    Shard, TextCollate,
};
use fiber_data::nlvr2::Nlvr2Record;
use fiber_data::{CaptionDataset, DataError, Problems};
use fiber_roberta::EncodedBatch;

use crate::error::TrainError;

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
    /// A loader of the samples starting at `position`, producing `shard`'s batches.
    pub fn spawn(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.samples.loader(
            self.transform.clone(),
            self.text.clone(),
            LoaderConfig {
                shard,
                ..self.loader.clone()
            },
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

/// Pixels `[n, 3, H, W]`, ids and mask `[n, len]` of a collated batch.
pub fn batch_tensors<B: Backend>(
    batch: &ImageTextBatch,
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>), TrainError> {
    let pixels = to_tensor::<B>(&batch.images, device)?;
    let (ids, mask) = batch.tokens.to_tensors(device);
    Ok((pixels, ids, mask))
}

/// A collated batch of image pairs.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Left images.
    pub left: Vec<PixelImage>,
    /// Right images.
    pub right: Vec<PixelImage>,
    /// Tokenised statements `[batch, len]`.
    pub tokens: EncodedBatch,
    /// Truth values.
    pub labels: Vec<bool>,
}

/// Left and right pixels `[n, 3, H, W]`, token ids and attention mask `[n, len]` of a
/// [`PairBatch`].
pub type PairTensors<B> = (
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 2, Int>,
    Tensor<B, 2, Int>,
);

impl PairBatch {
    /// Left and right pixels `[n, 3, H, W]`, the statements' ids and mask `[n, len]`.
    pub fn tensors<B: Backend>(&self, device: &B::Device) -> Result<PairTensors<B>, TrainError> {
        let (ids, mask) = self.tokens.to_tensors(device);
        Ok((
            to_tensor::<B>(&self.left, device)?,
            to_tensor::<B>(&self.right, device)?,
            ids,
            mask,
        ))
    }
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

    /// Reads the source's Karpathy file.
    fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, TrainError> {
        let (train, test) = fiber_data::layout::read_caption_splits(source, problems)?;
        Ok(Self { train, test })
    }
}

/// What a stage reads from a data folder (through `fiber_data::layout`): its training and
/// held-out data.
pub trait StageData: Sized {
    /// What the files read are called in warnings and `--strict` errors.
    const READS: &'static str;
    /// Reads `source`, recording unusable records in `problems`.
    fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, TrainError>;
}

/// The NLVR2 statements a stage reads: `train` and the held-out split.
pub struct Nlvr2Splits {
    /// Training statements.
    pub train: Vec<Nlvr2Record>,
    /// Held-out statements (`test1`, else `dev`).
    pub test: Vec<Nlvr2Record>,
}

impl StageData for Nlvr2Splits {
    const READS: &'static str = "the NLVR2 files";

    /// Reads `nlvr2/` (or the folder itself, or the files given); both splits must be there.
    fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, TrainError> {
        let (train, test) = Nlvr2Folder::read(source, problems)?.into_splits()?;
        Ok(Self { train, test })
    }
}

impl StageData for VqaFolder {
    const READS: &'static str = "the annotations";

    /// Reads the training and held-out splits; a folder without either cannot train VQA.
    fn read(source: &DataSource, problems: &mut Problems) -> Result<VqaFolder, TrainError> {
        let folder = VqaFolder::read(source, problems)?;
        let missing = folder.missing();
        if missing.is_empty() {
            Ok(folder)
        } else {
            Err(DataError::Missing(missing.join("; ")).into())
        }
    }
}
