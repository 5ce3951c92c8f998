//! VQA fine-tuning (docs/model.md §4.1): the VQA classifier on `cls_feats`, BCE with logits
//! against the annotators' soft scores, over the answer vocabulary of the training questions;
//! evaluated by VQA accuracy on the held-out questions.

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use fiber_data::layout::VqaFolder;
use fiber_data::loader::{ImageTextBatch, Loader, LoaderPosition};
use fiber_data::vqa::{AnswerVocab, VqaRecord};
use fiber_heads::{FiberModel, VqaModel};

use crate::error::TrainError;
use crate::input::{batch_tensors, ImageTextInput, ImageTextSamples};
use crate::report::Report;
use crate::stage::{MicroStep, StageTask};
use crate::stages::Stage;
use crate::step::StepLoss;
use crate::tasks::JobTask;
use crate::workspace::Workspace;
use fiber_data::loader::Shard;

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

/// The VQA loss of a loader batch: BCE with logits against the soft scores, × answers.
#[derive(Clone)]
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
        model: &VqaModel<B>,
        batch: ImageTextBatch,
        _micro: &MicroStep<'_>,
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

/// A trained VQA model and the answers of its classes.
pub struct TrainedVqa<B: Backend> {
    /// The model.
    pub model: VqaModel<B>,
    /// Its answer vocabulary (also saved as the run's `answers.json`).
    pub vocab: AnswerVocab,
}

/// The answer vocabulary VQA trains with (answers seen at least `min_count` times in the
/// training questions), or an error saying why there is none and which setting to change.
pub fn training_vocabulary(data: &VqaFolder, min_count: usize) -> Result<AnswerVocab, TrainError> {
    match data.empty_vocabulary(min_count) {
        Some(why) => Err(TrainError::Data(fiber_data::DataError::Missing(format!(
            "cannot train VQA: {why}"
        )))),
        None => Ok(data.vocabulary(min_count)),
    }
}

/// The VQA stage: trains on the training questions (train + val), evaluates on the held-out
/// ones.
pub struct VqaStage;

impl JobTask for VqaStage {
    const STAGE: Stage = Stage::Vqa;
    type Data = VqaFolder;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = TrainedVqa<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &VqaFolder,
        device: &B::Device,
    ) -> Result<TrainedVqa<B>, TrainError> {
        let vocab = training_vocabulary(data, ws.config.vqa_min_answer_count)?;
        let answers_json = serde_json::to_string_pretty(&vocab.answers).expect("answers serialise");
        if ws.writes() {
            fiber_core::store::write_atomically(
                &ws.run_dir.join("answers.json"),
                answers_json.as_bytes(),
            )?;
        }
        let (samples, targets) = vqa_samples(&data.training, &vocab);
        B::seed(device, ws.config.vqa_head_seed());
        let std = ws.config.model.fiber.head_initializer_range;
        let model = VqaModel::new(fiber, vocab.len(), std, device);
        let mut task = VqaTask::<B> {
            input: ws.input(samples, Self::STAGE, false),
            targets,
            answers: vocab.len(),
            device: device.clone(),
        };
        let model = ws.train(Self::STAGE, &mut task, model, device)?;
        Ok(TrainedVqa { model, vocab })
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &TrainedVqa<B>,
        data: &VqaFolder,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        report.vqa = Some(ws.evaluator().vqa(
            &trained.model.valid(),
            &trained.vocab,
            &data.held_out,
            device,
        )?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiber_data::layout::DataSource;

    #[test]
    fn vqa_refuses_an_empty_answer_vocabulary_naming_the_threshold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/vqa");
        let mut problems = fiber_data::Problems::default();
        let data = VqaFolder::read(&DataSource::folder(dir), &mut problems).unwrap();
        let err = training_vocabulary(&data, 9).unwrap_err().to_string();
        assert!(
            err.contains("cannot train VQA") && err.contains("at least 9 times"),
            "{err}"
        );
        assert!(!training_vocabulary(&data, 1).unwrap().is_empty());
    }
}
