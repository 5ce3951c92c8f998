//! Captioning fine-tuning, MLE step (docs/model.md §4.4): next-token cross-entropy through the
//! causal text path with text-to-image attention only; evaluated with beam-search captions.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use fiber_data::loader::{ImageTextBatch, Loader, LoaderPosition};
use fiber_heads::FiberModel;

use crate::error::TrainError;
use crate::input::{batch_tensors, CaptionSplits, ImageTextInput, ImageTextSamples};
use crate::report::Report;
use crate::stage::{MicroStep, StageTask};
use crate::stages::Stage;
use crate::step::StepLoss;
use crate::tasks::JobTask;
use crate::workspace::Workspace;
use fiber_data::loader::Shard;

/// The captioning loss of a loader batch.
#[derive(Clone)]
pub struct CaptionTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> StageTask<B> for CaptionTask<B> {
    type Model = FiberModel<B>;
    type Batch = ImageTextBatch;

    fn loader(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<ImageTextBatch>, TrainError> {
        self.input.spawn(position, shard)
    }

    fn replica(&self, device: &B::Device) -> Self {
        Self {
            device: device.clone(),
            ..self.clone()
        }
    }

    fn loss(
        &mut self,
        model: &FiberModel<B>,
        batch: ImageTextBatch,
        _micro: &MicroStep<'_>,
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

/// The captioning stage: trains on the training captions, captions held-out images.
pub struct CaptionStage;

impl JobTask for CaptionStage {
    const STAGE: Stage = Stage::Caption;
    type Data = CaptionSplits;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = FiberModel<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &CaptionSplits,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let samples = ImageTextSamples::captions(&data.train);
        let mut task = CaptionTask::<B> {
            input: ws.input(samples, Self::STAGE, false),
            device: device.clone(),
        };
        ws.train(Self::STAGE, &mut task, fiber, device)
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &FiberModel<B>,
        data: &CaptionSplits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let evaluator = ws.evaluator();
        let held_out = evaluator.held_out(&data.test)?;
        report.captioning = Some(evaluator.captioning(&trained.valid(), &held_out, device)?);
        Ok(())
    }
}
