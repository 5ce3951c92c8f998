//! The training tasks of the coarse checkpoint: pre-training (ITC + ITM with hard negatives from
//! the queue + MLM, spec C), VQA fine-tuning (spec D.1) and captioning fine-tuning (spec D.4,
//! the MLE step). Each turns loader batches into a loss for [`crate::stage::StageRunner`].

use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use fiber_core::{StoredTensor, TensorStore};
use fiber_data::image::to_tensor;
use fiber_data::image::PixelImage;
use fiber_data::loader::{
    collate_image_text, stream_seed, ImageTextBatch, ImageTransform, Loader, LoaderConfig,
    LoaderPosition, TextCollate,
};
use fiber_data::vqa::{AnswerVocab, VqaRecord};
use fiber_heads::mlm::labels_tensor;
use fiber_heads::{ClassifierHead, FeatureQueue, FiberModel, PretrainBatch, PretrainLosses};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::TrainError;
use crate::stage::{StageTask, StepLoss, VisitWeights};

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

/// The pre-training losses' named parts (`itc`, `itm`, `mlm`) `[1]` each, outside the graph,
/// as the metrics log records them.
pub fn loss_parts<B: AutodiffBackend>(
    losses: &PretrainLosses<B>,
) -> Vec<(&'static str, Tensor<B::InnerBackend, 1>)> {
    vec![
        ("itc", losses.itc.clone().inner()),
        ("itm", losses.itm.clone().inner()),
        ("mlm", losses.mlm.clone().inner()),
    ]
}

/// `[batch, len]` integer tensor from row-major values.
pub fn int_tensor<B: Backend>(values: &[i64], len: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len() / len.max(1), len]),
        device,
    )
}

/// Pixels `[n, 3, H, W]`, ids and mask `[n, len]` of a collated batch.
pub fn batch_tensors<B: Backend>(
    batch: &ImageTextBatch,
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>), TrainError> {
    let pixels = to_tensor::<B>(&batch.images, device)?;
    let len = batch.tokens.len;
    Ok((
        pixels,
        int_tensor(&batch.tokens.input_ids, len, device),
        int_tensor(&batch.tokens.attention_mask, len, device),
    ))
}

/// Coarse pre-training: ITC with a feature queue, ITM with hard negatives drawn over the batch
/// and the queue (queued samples are loaded again by dataset index), MLM.
pub struct PretrainTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// The ITC queue (dataset indices kept for hard negatives).
    pub queue: FeatureQueue<B>,
    /// Seed of the hard-negative sampling.
    pub seed: u64,
    /// Weights of `[itc, itm, mlm]`.
    pub loss_weights: [f64; 3],
    /// Queued samples that could not be loaded again (replaced by a blank image).
    pub refetch_failures: usize,
    pending: Option<(Tensor<B, 2>, Tensor<B, 2>, Vec<usize>)>,
    device: B::Device,
}

impl<B: AutodiffBackend> PretrainTask<B> {
    /// A task over `input` with an empty queue of `queue_size`.
    pub fn new(input: ImageTextInput, queue_size: usize, seed: u64, device: B::Device) -> Self {
        Self {
            input,
            queue: FeatureQueue::new(queue_size),
            seed,
            loss_weights: [1.0; 3],
            refetch_failures: 0,
            pending: None,
            device,
        }
    }

    /// Loads samples again by dataset index (hard negatives from the queue).
    fn fetch(
        &self,
        indices: &[usize],
    ) -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>, usize) {
        let size = match &self.input.transform {
            ImageTransform::Resize { size } | ImageTransform::Augment { size, .. } => *size,
        };
        let images: Vec<Result<PixelImage, fiber_data::DataError>> = indices
            .par_iter()
            .map(|&i| {
                let mut rng = StdRng::seed_from_u64(stream_seed(&[self.seed, i as u64, 0xFE]));
                ImageTransform::Resize { size }.load(&self.input.samples.images[i], &mut rng)
            })
            .collect();
        let mut failures = 0;
        let images: Vec<PixelImage> = images
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|e| {
                    eprintln!("warning: a queued hard negative could not be loaded again ({e}); a blank image stands in");
                    failures += 1;
                    PixelImage::filled(size, size, [0.0; 3])
                })
            })
            .collect();
        let texts: Vec<&str> = indices
            .iter()
            .map(|&i| self.input.samples.texts[i].as_str())
            .collect();
        let tokens = self
            .input
            .text
            .tokenizer
            .encode_batch(&texts, self.input.text.max_len)
            .expect("texts that tokenised once tokenise again");
        let pixels = to_tensor::<B>(&images, &self.device).expect("images of one size");
        let len = tokens.len;
        (
            pixels,
            int_tensor(&tokens.input_ids, len, &self.device),
            int_tensor(&tokens.attention_mask, len, &self.device),
            failures,
        )
    }
}

impl<B: AutodiffBackend> StageTask<B> for PretrainTask<B> {
    type Model = FiberModel<B>;
    type Batch = ImageTextBatch;

    fn loader(&self, position: LoaderPosition) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.input.spawn(position)
    }

    fn before_step(&mut self, model: FiberModel<B>) -> FiberModel<B> {
        model.clamp_temperature()
    }

    fn loss(
        &mut self,
        model: &FiberModel<B>,
        batch: ImageTextBatch,
        step: u64,
    ) -> Result<StepLoss<B>, TrainError> {
        let device = self.device.clone();
        let (pixels, input_ids, attention_mask) = batch_tensors::<B>(&batch, &device)?;
        let masked = batch.masked.as_ref().ok_or_else(|| {
            TrainError::Config("pre-training needs MLM masking in the collate step".into())
        })?;
        let len = batch.tokens.len;
        let pretrain = PretrainBatch {
            pixels,
            input_ids,
            attention_mask,
            masked_ids: int_tensor(&masked.input_ids, len, &device),
            mlm_labels: labels_tensor(&masked.labels, batch.indices.len(), len, &device),
            indices: batch.indices.clone(),
        };
        let failures = std::cell::Cell::new(0);
        let fetch = |indices: &[usize]| {
            let (p, i, m, f) = self.fetch(indices);
            failures.set(failures.get() + f);
            (p, i, m)
        };
        let mut rng = StdRng::seed_from_u64(stream_seed(&[self.seed, 0x17, step]));
        let losses = model.pretrain_losses(&pretrain, &self.queue, Some(&fetch), &mut rng);
        self.refetch_failures += failures.get();
        let parts = loss_parts(&losses);
        let (image, text) = losses.itc_features;
        self.pending = Some((image.detach(), text.detach(), batch.indices));
        let [w_itc, w_itm, w_mlm] = self.loss_weights;
        let loss = if self.loss_weights == [1.0; 3] {
            losses.total
        } else {
            losses.itc.mul_scalar(w_itc)
                + losses.itm.mul_scalar(w_itm)
                + losses.mlm.mul_scalar(w_mlm)
        };
        Ok(StepLoss { loss, parts })
    }

    fn after_step(&mut self) {
        if let Some((image, text, indices)) = self.pending.take() {
            self.queue.push(image, text, &indices);
        }
    }

    fn state(&self) -> TensorStore {
        queue_state(&self.queue)
    }

    fn load_state(&mut self, store: &TensorStore) -> Result<(), TrainError> {
        self.queue = restore_queue(self.queue.capacity, store, &self.device)?;
        Ok(())
    }
}

/// The ITC queue as checkpoint tensors: dataset indices and, when not empty, the features.
pub(crate) fn queue_state<B: Backend>(queue: &FeatureQueue<B>) -> TensorStore {
    let mut store = TensorStore::new();
    store.insert(
        "queue.indices",
        StoredTensor::i64(
            vec![queue.len()],
            queue.indices().iter().map(|&i| i as i64).collect(),
        ),
    );
    if let (Some(image), Some(text)) = (queue.image(), queue.text()) {
        store.insert("queue.image", StoredTensor::from_tensor(image));
        store.insert("queue.text", StoredTensor::from_tensor(text));
    }
    store
}

/// A queue of `capacity` restored from [`queue_state`]'s tensors.
pub(crate) fn restore_queue<B: Backend>(
    capacity: usize,
    store: &TensorStore,
    device: &B::Device,
) -> Result<FeatureQueue<B>, TrainError> {
    let missing = |k: &str| TrainError::Checkpoint(format!("the task state lacks `{k}`"));
    let indices: Vec<usize> = store
        .get("queue.indices")
        .and_then(|t| t.as_i64())
        .ok_or_else(|| missing("queue.indices"))?
        .iter()
        .map(|&i| i as usize)
        .collect();
    let mut queue = FeatureQueue::new(capacity);
    if indices.is_empty() {
        return Ok(queue);
    }
    let read = |k: &str| -> Result<Tensor<B, 2>, TrainError> {
        let t = store.get(k).ok_or_else(|| missing(k))?;
        let values = t.as_f32().ok_or_else(|| missing(k))?;
        Ok(Tensor::from_data(
            TensorData::new(values.to_vec(), t.shape.clone()),
            device,
        ))
    };
    queue.push(read("queue.image")?, read("queue.text")?, &indices);
    Ok(queue)
}

/// FIBER with the VQA classifier (`vqa_classifier.*`, spec D.1).
#[derive(Module, Debug)]
pub struct VqaModel<B: Backend> {
    /// The pre-trained model.
    pub fiber: FiberModel<B>,
    /// Linear → LayerNorm → GELU → Linear over `cls_feats`.
    pub vqa_classifier: ClassifierHead<B>,
}

impl<B: Backend> VqaModel<B> {
    /// Answer logits `[n, answers]`.
    pub fn logits(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let out = self
            .fiber
            .backbone
            .forward_fused(pixels, input_ids, attention_mask);
        self.vqa_classifier.forward(self.fiber.cls_feats(&out))
    }
}

impl<B: Backend> VisitWeights<B> for VqaModel<B> {
    fn visit_weights_with<V: fiber_core::weights::WeightVisitor<B>>(&mut self, v: &mut V) {
        self.fiber.visit_weights(v);
        self.vqa_classifier.visit_weights(v, "vqa_classifier");
    }
}

/// VQA questions as image–text samples with their soft targets.
pub fn vqa_samples(
    records: &[VqaRecord],
    vocab: &AnswerVocab,
) -> (ImageTextSamples, Arc<Vec<Vec<(usize, f32)>>>) {
    let kept: Vec<&VqaRecord> = records
        .iter()
        .filter(|r| !vocab.targets(r).is_empty())
        .collect();
    let samples = ImageTextSamples {
        images: Arc::new(kept.iter().map(|r| r.image.clone()).collect()),
        texts: Arc::new(kept.iter().map(|r| r.question.clone()).collect()),
    };
    (
        samples,
        Arc::new(kept.iter().map(|r| vocab.targets(r)).collect()),
    )
}

/// VQA fine-tuning: BCE with logits against the soft scores, × answers (spec D.1).
pub struct VqaTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// Soft targets of each sample.
    pub targets: Arc<Vec<Vec<(usize, f32)>>>,
    /// Number of answers.
    pub answers: usize,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> StageTask<B> for VqaTask<B> {
    type Model = VqaModel<B>;
    type Batch = ImageTextBatch;

    fn loader(&self, position: LoaderPosition) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.input.spawn(position)
    }

    fn loss(
        &mut self,
        model: &VqaModel<B>,
        batch: ImageTextBatch,
        _step: u64,
    ) -> Result<StepLoss<B>, TrainError> {
        let (pixels, ids, mask) = batch_tensors::<B>(&batch, &self.device)?;
        let n = batch.indices.len();
        let mut soft = vec![0.0f32; n * self.answers];
        for (row, &i) in batch.indices.iter().enumerate() {
            for &(answer, score) in &self.targets[i] {
                soft[row * self.answers + answer] = score;
            }
        }
        let soft =
            Tensor::<B, 2>::from_data(TensorData::new(soft, [n, self.answers]), &self.device);
        let loss = model
            .vqa_classifier
            .vqa_loss(model.logits(pixels, ids, mask), soft);
        Ok(StepLoss {
            loss,
            parts: Vec::new(),
        })
    }
}

/// Captioning fine-tuning, MLE step (spec D.4): next-token cross-entropy through the causal
/// text path with text-to-image attention only.
pub struct CaptionTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> StageTask<B> for CaptionTask<B> {
    type Model = FiberModel<B>;
    type Batch = ImageTextBatch;

    fn loader(&self, position: LoaderPosition) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.input.spawn(position)
    }

    fn loss(
        &mut self,
        model: &FiberModel<B>,
        batch: ImageTextBatch,
        _step: u64,
    ) -> Result<StepLoss<B>, TrainError> {
        let (pixels, ids, mask) = batch_tensors::<B>(&batch, &self.device)?;
        let image = model.backbone.caption_image(pixels);
        let logits = model.caption_logits(&image, ids.clone(), mask.clone())?;
        Ok(StepLoss {
            loss: model.caption_loss(logits, ids, mask),
            parts: Vec::new(),
        })
    }
}
