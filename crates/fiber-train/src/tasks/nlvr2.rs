//! NLVR2 fine-tuning (docs/model.md §4.2): a statement about a pair of images is true or false.
//! The sentence is fused with each image separately; the two `cls_feats` are concatenated and
//! classified by `nlvr2_classifier` (4H → 2H → 2) with cross-entropy. Evaluated by accuracy on
//! the held-out statements.

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_data::loader::{ImageTransform, Loader, LoaderConfig, LoaderPosition, TextCollate};
use fiber_data::nlvr2::Nlvr2Record;
use fiber_heads::{FiberModel, Nlvr2Model};

use crate::error::TrainError;
use crate::input::{Nlvr2Splits, PairBatch};
use crate::report::Report;
use crate::stage::{MicroStep, StageTask};
use crate::stages::Stage;
use crate::step::StepLoss;
use crate::tasks::JobTask;
use crate::workspace::Workspace;
use fiber_data::loader::Shard;

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
}

/// The NLVR2 loss of a loader batch: cross-entropy of the classifier over the truth value.
#[derive(Clone)]
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

    fn loader(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<PairBatch>, TrainError> {
        let (samples, transform, text) = (
            self.samples.clone(),
            self.transform.clone(),
            self.text.clone(),
        );
        Ok(Loader::spawn(
            self.samples.len(),
            LoaderConfig {
                shard,
                ..self.loader.clone()
            },
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

    fn replica(&self, device: &B::Device) -> Self {
        Self {
            device: device.clone(),
            ..self.clone()
        }
    }

    fn loss(
        &mut self,
        model: &Nlvr2Model<B>,
        batch: PairBatch,
        _micro: &MicroStep<'_>,
    ) -> Result<StepLoss<B>, TrainError> {
        let (left, right, ids, mask) = batch.tensors(&self.device)?;
        let logits = model.logits(left, right, ids, mask);
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

/// The NLVR2 stage: trains on `train`, evaluates on the held-out split (`test1`, else `dev`).
pub struct Nlvr2Stage;

impl JobTask for Nlvr2Stage {
    const STAGE: Stage = Stage::Nlvr2;
    type Data = Nlvr2Splits;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = Nlvr2Model<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &Nlvr2Splits,
        device: &B::Device,
    ) -> Result<Nlvr2Model<B>, TrainError> {
        B::seed(device, ws.config.nlvr2_head_seed());
        let std = ws.config.model.fiber.head_initializer_range;
        let model = Nlvr2Model::new(fiber, std, device);
        let mut task = Nlvr2Task::<B> {
            samples: PairSamples::from_records(&data.train),
            transform: ws.image_transform(),
            text: ws.text(false),
            loader: ws.loader_config(Self::STAGE),
            device: device.clone(),
        };
        ws.train(Self::STAGE, &mut task, model, device)
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &Nlvr2Model<B>,
        data: &Nlvr2Splits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        report.nlvr2 = Some(ws.evaluator().nlvr2(&trained.valid(), &data.test, device)?);
        Ok(())
    }
}
