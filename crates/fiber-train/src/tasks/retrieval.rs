//! Retrieval fine-tuning (docs/model.md §4.3): the ITC model is fine-tuned with the contrastive
//! loss alone (with the feature queue of §3.2), the ITM model with the matching loss alone on
//! random negatives (§3.3); both are evaluated by retrieval on the held-out captions.

use burn::module::AutodiffModule;

use burn::tensor::backend::AutodiffBackend;
use fiber_core::TensorStore;
use fiber_data::loader::{ImageTextBatch, Loader, LoaderPosition};
use fiber_fusion::{ImageState, TextState};
use fiber_heads::itc::itc_loss;
use fiber_heads::FiberModel;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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

/// Which retrieval model is fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalObjective {
    /// The dual encoder, with ITC over the batch and the feature queue.
    Itc,
    /// The fusion encoder, with ITM: a random half of the batch is paired with another image
    /// of the batch (a uniformly drawn image of the shuffled dataset) as negatives.
    Itm,
}

/// ITC-only or ITM-only fine-tuning on image–caption pairs.
#[derive(Clone)]
pub struct RetrievalTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: ImageTextInput,
    /// The objective.
    pub objective: RetrievalObjective,
    /// The ITC feature queue (unused by ITM).
    pub queue: TaskQueue<B>,
    /// Seed of the negative sampling.
    pub seed: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> RetrievalTask<B> {
    /// A task over `input`; `queue_size` features are kept for ITC.
    pub fn new(
        input: ImageTextInput,
        objective: RetrievalObjective,
        queue_size: usize,
        seed: u64,
        device: B::Device,
    ) -> Self {
        Self {
            input,
            objective,
            queue: TaskQueue::new(queue_size),
            seed,
            device,
        }
    }
}

/// ITM rows: positives first, then each chosen row's text with another row's image. Returns
/// the row order of images and texts and the number of positives.
fn itm_rows(n: usize, rng: &mut impl Rng) -> (Vec<usize>, Vec<usize>, usize) {
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(rng);
    let negatives = if n >= 2 { n / 2 } else { 0 };
    let (negative_rows, positive_rows) = rows.split_at(negatives);
    let mut images: Vec<usize> = positive_rows.to_vec();
    let mut texts: Vec<usize> = positive_rows.to_vec();
    for &row in negative_rows {
        // Any other row of the batch, uniformly.
        let other = (row + rng.random_range(1..n)) % n;
        images.push(other);
        texts.push(row);
    }
    (images, texts, n - negatives)
}

impl<B: AutodiffBackend> StageTask<B> for RetrievalTask<B> {
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
        let (pixels, ids, mask) = batch_tensors::<B>(&batch, &self.device)?;
        let image = model.backbone.image_prefix(pixels);
        let text = model.backbone.text_prefix(ids, mask);
        match self.objective {
            RetrievalObjective::Itc => {
                let (image_feats, text_feats) = model.itc_features(&image, &text);
                let itc = itc_loss(
                    image_feats.clone(),
                    text_feats.clone(),
                    &self.queue.queue,
                    model.temperature.value(),
                );
                self.queue
                    .hold(image_feats.detach(), text_feats.detach(), batch.indices);
                Ok(StepLoss {
                    loss: itc.loss,
                    parts: Vec::new(),
                })
            }
            RetrievalObjective::Itm => {
                let mut rng = StdRng::seed_from_u64(micro.seed(&[self.seed, 0x1D]));
                let (images, texts, positives) = itm_rows(batch.indices.len(), &mut rng);
                let fused = model.backbone.fused_suffix(
                    &ImageState::select(&image, &images),
                    &TextState::select(&text, &texts),
                );
                let logits = model.itm_score.forward(model.cls_feats(&fused));
                Ok(StepLoss {
                    loss: model.itm_score.loss(logits, positives),
                    parts: Vec::new(),
                })
            }
        }
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

/// A retrieval fine-tuning stage: ITM when `ITM`, else ITC.
pub struct RetrievalStage<const ITM: bool>;

/// ITC retrieval fine-tuning (`--stage retrieval-itc`).
pub type RetrievalItcStage = RetrievalStage<false>;

/// ITM retrieval fine-tuning (`--stage retrieval-itm`).
pub type RetrievalItmStage = RetrievalStage<true>;

impl<const ITM: bool> JobTask for RetrievalStage<ITM> {
    const STAGE: Stage = if ITM {
        Stage::RetrievalItm
    } else {
        Stage::RetrievalItc
    };
    type Data = CaptionSplits;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = FiberModel<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &CaptionSplits,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let objective = if ITM {
            RetrievalObjective::Itm
        } else {
            RetrievalObjective::Itc
        };
        let input = ws.input(ImageTextSamples::captions(&data.train), Self::STAGE, false);
        let mut task = RetrievalTask::<B>::new(
            input,
            objective,
            ws.config.queue_size,
            ws.config.seed,
            device.clone(),
        );
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
        report.retrieval = Some(evaluator.retrieval(&trained.valid(), &held_out, device)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itm_rows_pair_half_the_texts_with_another_image() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [1, 2, 5, 8] {
            let (images, texts, positives) = itm_rows(n, &mut rng);
            assert_eq!((images.len(), texts.len()), (n, n));
            assert_eq!(positives, n - if n >= 2 { n / 2 } else { 0 });
            for k in 0..n {
                assert_eq!(images[k] == texts[k], k < positives, "row {k} of {n}");
            }
            let mut seen = texts.clone();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every text once");
        }
    }
}
