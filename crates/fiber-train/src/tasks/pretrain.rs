//! Coarse-grained pre-training (docs/model.md §3): ITC with a feature queue, ITM with hard
//! negatives drawn over the batch and the queue, MLM; evaluated by retrieval and masked-token
//! accuracy.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_core::host::int_matrix;
use fiber_core::TensorStore;
use fiber_data::image::{to_tensor, PixelImage};
use fiber_data::loader::{stream_seed, ImageTextBatch, ImageTransform, Loader, LoaderPosition};
use fiber_heads::{FetchedInputs, FiberModel, PretrainBatch, PretrainLosses};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::TrainError;
use crate::input::{batch_tensors, CaptionSplits, ImageTextInput, ImageTextSamples};
use crate::replica::Replica;
use crate::report::Report;
use crate::stage::{MicroStep, StageTask};
use crate::stages::Stage;
use crate::step::StepLoss;
use crate::tasks::queue::TaskQueue;
use crate::tasks::JobTask;
use crate::workspace::Workspace;
use fiber_data::loader::Shard;

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

/// The uniform share of the ITM negative draw at step `step` (0-based) of `steps`: linear from
/// `first` at the first step to `last` at the last.
pub fn uniform_negative_share([first, last]: [f64; 2], step: u64, steps: u64) -> f64 {
    let progress = match steps {
        0 | 1 => 1.0,
        steps => step.min(steps - 1) as f64 / (steps - 1) as f64,
    };
    first + (last - first) * progress
}

/// Coarse pre-training: ITC with a feature queue, ITM with hard negatives drawn over the batch
/// and the queue (queued samples are loaded again by dataset index), MLM.
#[derive(Clone)]
pub struct PretrainTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// The ITC queue (dataset indices kept for hard negatives).
    pub queue: TaskQueue<B>,
    /// Seed of the hard-negative sampling.
    pub seed: u64,
    /// Weights of `[itc, itm, mlm]`.
    pub loss_weights: [f64; 3],
    /// Uniform share of the ITM negative draw at the first and the last step.
    pub uniform_negatives: [f64; 2],
    /// Steps of the stage (the uniform share is interpolated over them).
    pub steps: u64,
    /// Queued samples that could not be loaded again (replaced by a blank image).
    pub refetch_failures: usize,
    device: B::Device,
}

impl<B: AutodiffBackend> PretrainTask<B> {
    /// A task over `input` with an empty queue of `queue_size`.
    pub fn new(input: ImageTextInput, queue_size: usize, seed: u64, device: B::Device) -> Self {
        Self {
            input,
            queue: TaskQueue::new(queue_size),
            seed,
            loss_weights: [1.0; 3],
            uniform_negatives: [0.0; 2],
            steps: 1,
            refetch_failures: 0,
            device,
        }
    }

    /// The uniform share of step `step` (0-based), see [`uniform_negative_share`].
    pub fn uniform_negative_share(&self, step: u64) -> f64 {
        uniform_negative_share(self.uniform_negatives, step, self.steps)
    }

    /// Loads samples again by dataset index (hard negatives from the queue).
    fn fetch(&self, indices: &[usize]) -> Result<(FetchedInputs<B>, usize), TrainError> {
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
        let (ids, mask) = self
            .input
            .text
            .tokenizer
            .encode_batch(&texts, self.input.text.max_len)?
            .to_tensors(&self.device);
        let pixels = to_tensor::<B>(&images, &self.device)?;
        Ok(((pixels, ids, mask), failures))
    }
}

impl<B: AutodiffBackend> StageTask<B> for PretrainTask<B> {
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
            queue: self.queue.on_device(device),
            device: device.clone(),
            ..self.clone()
        }
    }

    fn before_step(&mut self, model: FiberModel<B>) -> FiberModel<B> {
        model.clamp_temperature()
    }

    fn loss(
        &mut self,
        model: &FiberModel<B>,
        batch: ImageTextBatch,
        micro: &MicroStep<'_>,
    ) -> Result<StepLoss<B>, TrainError> {
        let device = self.device.clone();
        let (pixels, input_ids, attention_mask) = batch_tensors::<B>(&batch, &device)?;
        let masked = batch.masked.as_ref().ok_or(TrainError::Unmasked)?;
        let len = batch.tokens.len;
        let pretrain = PretrainBatch {
            pixels,
            input_ids,
            attention_mask,
            masked_ids: int_matrix(&masked.input_ids, len, &device),
            mlm_labels: int_matrix(&masked.labels, len, &device),
            indices: batch.indices.clone(),
            uniform_negative_share: self.uniform_negative_share(micro.step),
        };
        let failures = std::cell::Cell::new(0);
        let fetch = |indices: &[usize]| {
            let (inputs, f) = self.fetch(indices)?;
            failures.set(failures.get() + f);
            Ok::<_, TrainError>(inputs)
        };
        let mut rng = StdRng::seed_from_u64(micro.seed(&[self.seed, 0x17]));
        let losses =
            model.pretrain_losses_with_queue(&pretrain, &self.queue.queue, &fetch, &mut rng)?;
        self.refetch_failures += failures.get();
        let parts = loss_parts(&losses);
        let (image, text) = losses.itc_features;
        self.queue
            .hold(image.detach(), text.detach(), batch.indices);
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

    fn after_step(&mut self, replica: &Replica) -> Result<(), TrainError> {
        self.queue.enter_held(replica)
    }

    fn state(&self) -> TensorStore {
        self.queue.state()
    }

    fn load_state(&mut self, store: &TensorStore) -> Result<(), TrainError> {
        self.queue.load_state(store, &self.device)
    }
}

/// The pre-training stage: trains on the training captions; evaluates retrieval (ITC and ITM
/// re-ranking) and masked-token accuracy on the held-out ones.
pub struct PretrainStage;

impl JobTask for PretrainStage {
    const STAGE: Stage = Stage::Coarse;
    type Data = CaptionSplits;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = FiberModel<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &CaptionSplits,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let input = ws.input(ImageTextSamples::captions(&data.train), Self::STAGE, true);
        let mut task =
            PretrainTask::<B>::new(input, ws.config.queue_size, ws.config.seed, device.clone());
        task.loss_weights = ws.config.loss_weights;
        task.uniform_negatives = ws.config.uniform_negatives;
        task.steps = ws.config.pretrain.steps;
        let model = ws.train(Self::STAGE, &mut task, fiber, device)?;
        ws.add_skipped(task.refetch_failures);
        Ok(model)
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
        let model = trained.valid();
        report.retrieval = Some(evaluator.retrieval(&model, &held_out, device)?);
        report.mlm = Some(evaluator.mlm(&model, &held_out, &data.train, device)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::uniform_negative_share;

    #[test]
    fn the_uniform_share_goes_linearly_from_the_first_to_the_last_step() {
        let share = |step| uniform_negative_share([1.0, 0.2], step, 5);
        assert_eq!(share(0), 1.0);
        assert!((share(2) - 0.6).abs() < 1e-12);
        assert!((share(4) - 0.2).abs() < 1e-12);
        assert!(
            (share(9) - 0.2).abs() < 1e-12,
            "past the end it stays at the last value"
        );
        assert_eq!(
            uniform_negative_share([0.0, 0.0], 3, 5),
            0.0,
            "FIBER's draw"
        );
        assert_eq!(uniform_negative_share([1.0, 0.5], 0, 1), 0.5);
    }
}
