//! NLVR2 fine-tuning (spec D.2): a statement about a pair of images is true or false. The
//! sentence is fused with each image separately; the two `cls_feats` are concatenated and
//! classified by `nlvr2_classifier` (4H → 2H → 2) with cross-entropy.

use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_core::weights::WeightVisitor;
use fiber_data::image::{to_tensor, PixelImage};
use fiber_data::loader::{ImageTransform, Loader, LoaderConfig, LoaderPosition, TextCollate};
use fiber_data::nlvr2::Nlvr2Record;
use fiber_heads::{ClassifierHead, FiberModel};
use fiber_roberta::EncodedBatch;

use crate::error::TrainError;
use crate::stage::{StageTask, StepLoss, VisitWeights};
use crate::tasks::int_tensor;

/// FIBER with the NLVR2 classifier (`nlvr2_classifier.*`).
#[derive(Module, Debug)]
pub struct Nlvr2Model<B: Backend> {
    /// The pre-trained model.
    pub fiber: FiberModel<B>,
    /// Linear(4H → 2H) → LayerNorm → GELU → Linear(2H → 2) over both `cls_feats`.
    pub nlvr2_classifier: ClassifierHead<B>,
}

impl<B: Backend> Nlvr2Model<B> {
    /// A new classifier on top of `fiber`.
    pub fn new(fiber: FiberModel<B>, hidden_size: usize, device: &B::Device) -> Self {
        Self {
            fiber,
            nlvr2_classifier: ClassifierHead::nlvr2(2 * hidden_size, device),
        }
    }

    /// Logits `[n, 2]` (column 1: the statement is true) of left and right images
    /// `[n, 3, H, W]` and the sentences' ids and mask `[n, len]`.
    pub fn logits(
        &self,
        left: Tensor<B, 4>,
        right: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        self.nlvr2_classifier.forward(self.fiber.nlvr2_features(
            left,
            right,
            input_ids,
            attention_mask,
        ))
    }
}

impl<B: Backend> VisitWeights<B> for Nlvr2Model<B> {
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.fiber.visit_weights(v);
        self.nlvr2_classifier.visit_weights(v, "nlvr2_classifier");
    }
}

/// Image pairs with a statement and its truth value, shared with the loader threads.
#[derive(Clone)]
pub struct PairSamples {
    /// Left images.
    pub left: Arc<Vec<PathBuf>>,
    /// Right images.
    pub right: Arc<Vec<PathBuf>>,
    /// Statements.
    pub texts: Arc<Vec<String>>,
    /// Whether each statement is true.
    pub labels: Arc<Vec<bool>>,
}

impl PairSamples {
    /// The samples of NLVR2 records.
    pub fn from_records(records: &[Nlvr2Record]) -> Self {
        let field = |f: &dyn Fn(&Nlvr2Record) -> PathBuf| Arc::new(records.iter().map(f).collect());
        Self {
            left: field(&|r| r.left.clone()),
            right: field(&|r| r.right.clone()),
            texts: Arc::new(records.iter().map(|r| r.sentence.clone()).collect()),
            labels: Arc::new(records.iter().map(|r| r.label).collect()),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
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

/// NLVR2 fine-tuning: cross-entropy of the classifier over the truth value.
pub struct Nlvr2Task<B: AutodiffBackend> {
    /// The pairs.
    pub samples: PairSamples,
    /// Image transform (applied to both images).
    pub transform: ImageTransform,
    /// Tokenisation.
    pub text: TextCollate,
    /// Loader settings.
    pub loader: LoaderConfig,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> StageTask<B> for Nlvr2Task<B> {
    type Model = Nlvr2Model<B>;
    type Batch = PairBatch;

    fn loader(&self, position: LoaderPosition) -> Result<Loader<PairBatch>, TrainError> {
        let (samples, transform, text) = (
            self.samples.clone(),
            self.transform.clone(),
            self.text.clone(),
        );
        Ok(Loader::spawn(
            self.samples.len(),
            self.loader.clone(),
            position,
            move |i, rng| {
                Ok((
                    transform.load(&samples.left[i], rng)?,
                    transform.load(&samples.right[i], rng)?,
                    samples.texts[i].clone(),
                    samples.labels[i],
                ))
            },
            move |loaded, rng| {
                let n = loaded.len();
                let (mut left, mut right) = (Vec::with_capacity(n), Vec::with_capacity(n));
                let (mut texts, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
                for (_, (l, r, sentence, label)) in loaded {
                    left.push(l);
                    right.push(r);
                    texts.push(sentence);
                    labels.push(label);
                }
                Ok(PairBatch {
                    left,
                    right,
                    tokens: text.collate(&texts, rng)?.0,
                    labels,
                })
            },
        )?)
    }

    fn loss(
        &mut self,
        model: &Nlvr2Model<B>,
        batch: PairBatch,
        _step: u64,
    ) -> Result<StepLoss<B>, TrainError> {
        let logits = pair_logits(model, &batch, &self.device)?;
        let n = batch.labels.len();
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                batch.labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
                [n],
            ),
            &self.device,
        );
        Ok(StepLoss {
            loss: model.nlvr2_classifier.nlvr2_loss(logits, labels),
            parts: Vec::new(),
        })
    }
}

/// Logits `[n, 2]` of a collated batch.
pub fn pair_logits<B: Backend>(
    model: &Nlvr2Model<B>,
    batch: &PairBatch,
    device: &B::Device,
) -> Result<Tensor<B, 2>, TrainError> {
    let len = batch.tokens.len;
    Ok(model.logits(
        to_tensor::<B>(&batch.left, device)?,
        to_tensor::<B>(&batch.right, device)?,
        int_tensor(&batch.tokens.input_ids, len, device),
        int_tensor(&batch.tokens.attention_mask, len, device),
    ))
}
