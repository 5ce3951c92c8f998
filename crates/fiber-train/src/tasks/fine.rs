//! Fine-grained pre-training of the grounding detector (docs/model.md §5.5): the detector on
//! the run's coarse backbone, trained with ATSS targets and the grounding, GIoU and centerness
//! losses on phrase-grounded captions (MDETR) and on detection images turned into class-name
//! prompts (GLIP's recipe); evaluated by COCO box mAP and phrase-grounding recall.

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_core::weights::WeightCollector;
use fiber_data::detection_batch::{
    collate_detection, prepare_sample, DetectionBatch, DetectionBatchConfig,
};
use fiber_data::grounding::{detection_prompt, DetectionImage, GroundingRecord, PromptConfig};
use fiber_data::image::load_rgb;
use fiber_data::layout::{DataSource, GroundingSplits};
use fiber_data::loader::{Loader, LoaderConfig, LoaderPosition};
use fiber_data::Problems;
use fiber_heads::grounding::atss::{
    DetectionLossConfig, DetectionTargets, ImageTargets, LossNormalisers,
};
use fiber_heads::grounding::box_coder::BoxCoderConfig;
use fiber_heads::grounding::loss::detection_losses;
use fiber_heads::grounding::GroundingDetector;
use fiber_heads::FiberModel;
use fiber_roberta::RobertaTokenizer;

use crate::config::StageConfig;
use crate::error::TrainError;
use crate::eval::grounding::{detection_tensors, DetectorEvaluator};
use crate::input::StageData;
use crate::model_io::VisitWeights;
use crate::optim::ParamGroups;
use crate::report::Report;
use crate::stage::{MicroStep, StageTask};
use crate::stages::Stage;
use crate::step::StepLoss;
use crate::tasks::JobTask;
use crate::workspace::Workspace;
use fiber_data::loader::Shard;

impl StageData for GroundingSplits {
    const READS: &'static str = "the grounding and detection files";

    fn read(source: &DataSource, problems: &mut Problems) -> Result<Self, TrainError> {
        Ok(GroundingSplits::read(source, problems)?)
    }
}

/// One training sample of the detector: a grounded caption, or a detection image whose prompt
/// is drawn when it is loaded.
#[derive(Debug, Clone)]
pub enum GroundingSample {
    /// An MDETR record (caption, boxes and the spans naming them).
    Caption(GroundingRecord),
    /// A detection image and its dataset's class names.
    Detection {
        /// The image and its labelled boxes.
        image: DetectionImage,
        /// The dataset's cleaned class names.
        categories: Arc<Vec<String>>,
    },
}

impl GroundingSample {
    /// Every training sample of `splits`: the captions, then each detection image.
    pub fn training(splits: &GroundingSplits) -> Vec<Self> {
        let mut samples = Self::captions(splits);
        samples.extend(Self::detections(splits));
        samples
    }

    /// The training captions of `splits`.
    pub fn captions(splits: &GroundingSplits) -> Vec<Self> {
        splits.train.iter().cloned().map(Self::Caption).collect()
    }

    /// Each training detection image of `splits`, with its dataset's class names.
    pub fn detections(splits: &GroundingSplits) -> Vec<Self> {
        let mut samples = Vec::new();
        for dataset in &splits.detection_train {
            let categories = Arc::new(dataset.categories.clone());
            samples.extend(dataset.images.iter().map(|image| Self::Detection {
                image: image.clone(),
                categories: categories.clone(),
            }));
        }
        samples
    }
}

/// What the fine-grained stage loads: its samples, tokenised and batched as the detector
/// trains on them.
#[derive(Clone)]
pub struct DetectionInput {
    /// The samples.
    pub samples: Arc<Vec<GroundingSample>>,
    /// The run's tokenizer.
    pub tokenizer: RobertaTokenizer,
    /// Resizing, flipping, padding and the prompt length.
    pub batch: DetectionBatchConfig,
    /// How detection images become prompts.
    pub prompts: PromptConfig,
    /// Batch size, seed, strictness.
    pub loader: LoaderConfig,
}

impl DetectionInput {
    /// A loader of the samples starting at `position`, producing `shard`'s batches: each
    /// sample's image is read, its prompt drawn (detection images) and prepared; the batch is
    /// padded together.
    pub fn spawn(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<DetectionBatch>, TrainError> {
        let samples = self.samples.clone();
        let tokenizer = self.tokenizer.clone();
        let batch = self.batch.clone();
        let prompts = self.prompts.clone();
        let pad = self.tokenizer.special().pad;
        let divisor = self.batch.size_divisor;
        let count = self.tokenizer.clone();
        Ok(Loader::spawn(
            samples.len(),
            LoaderConfig {
                shard,
                ..self.loader.clone()
            },
            position,
            move |index, rng| {
                let count_tokens = |text: &str| {
                    count
                        .encode_with_char_offsets(text)
                        .map(|t| t.len())
                        .unwrap_or(usize::MAX)
                };
                let (record, path) = match &samples[index] {
                    GroundingSample::Caption(record) => (record.clone(), record.path.clone()),
                    GroundingSample::Detection { image, categories } => (
                        detection_prompt(image, categories, &prompts, &count_tokens, rng),
                        image.path.clone(),
                    ),
                };
                let image = load_rgb(&path)?;
                prepare_sample(&record, &image, &tokenizer, &batch, rng)
            },
            move |loaded, _rng| {
                collate_detection(loaded.into_iter().map(|(_, s)| s).collect(), divisor, pad)
            },
        )?)
    }
}

/// The detector's training loss on a loader batch: ATSS targets, then the grounding, GIoU and
/// centerness losses (the total weighs GIoU by `loss.giou_weight`).
#[derive(Clone)]
pub struct FineTask<B: AutodiffBackend> {
    /// The samples and how they are loaded.
    pub input: DetectionInput,
    /// Assignment and loss settings.
    pub loss: DetectionLossConfig,
    /// The detector's box coding.
    pub coder: BoxCoderConfig,
    /// Boxes dropped so far because the truncated prompt kept none of their tokens.
    pub dropped_boxes: usize,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> StageTask<B> for FineTask<B> {
    type Model = GroundingDetector<B>;
    type Batch = DetectionBatch;

    fn loader(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<DetectionBatch>, TrainError> {
        self.input.spawn(position, shard)
    }

    fn replica(&self, device: &B::Device) -> Self {
        Self {
            device: device.clone(),
            ..self.clone()
        }
    }

    fn param_groups(&self, config: &StageConfig) -> ParamGroups {
        ParamGroups::detector(
            config.text_lr_multiplier,
            config.bias_lr_multiplier,
            config.frozen.clone(),
        )
    }

    fn loss(
        &mut self,
        model: &GroundingDetector<B>,
        batch: DetectionBatch,
        micro: &MicroStep<'_>,
    ) -> Result<StepLoss<B>, TrainError> {
        let (pixels, input_ids, attention_mask) = detection_tensors::<B>(&batch, &self.device);
        self.dropped_boxes += batch.dropped_boxes;
        let output = model.forward(pixels, input_ids, attention_mask.clone());
        let images: Vec<ImageTargets> = batch
            .boxes
            .iter()
            .zip(&batch.positive_map)
            .map(|(boxes, map)| ImageTargets {
                boxes: boxes.clone(),
                positive_map: map.clone(),
            })
            .collect();
        let len = attention_mask.dims()[1];
        let targets =
            DetectionTargets::build(&output.anchors, &images, len, &self.loss, &self.coder)?;
        // With several replicas the normalisers are averaged over them, as the original
        // averages its positive count and centerness sum over GPUs.
        let normalisers = if micro.replica.count() > 1 {
            let local = [
                targets.positives.len() as f32,
                targets.centerness_targets.iter().sum(),
            ];
            let mean = micro
                .replica
                .mean_host::<B::InnerBackend>(&local, &self.device)?;
            LossNormalisers {
                num_pos: mean[0].max(1.0),
                centerness_sum: mean[1],
            }
        } else {
            targets.local_normalisers()
        };
        let losses = detection_losses(
            &output,
            attention_mask,
            &targets,
            normalisers,
            &self.loss,
            &self.coder,
        );
        let parts = vec![
            ("grounding", losses.grounding.clone().inner()),
            ("giou", losses.giou.clone().inner()),
            ("centerness", losses.centerness.clone().inner()),
        ];
        Ok(StepLoss {
            loss: losses.total(&self.loss),
            parts,
        })
    }
}

/// Trains `detector` in detector stage `stage` on `samples` with the run's detector settings
/// (no flipping when the stage turns it off); keeps the class names of the first training
/// detection file of `data` for `detect`.
pub fn train_detector<B: AutodiffBackend>(
    ws: &mut Workspace<'_>,
    stage: Stage,
    samples: Vec<GroundingSample>,
    data: &GroundingSplits,
    detector: GroundingDetector<B>,
    device: &B::Device,
) -> Result<GroundingDetector<B>, TrainError> {
    let settings = ws.config.detector.clone();
    let mut batch = settings.train_batch();
    if !stage.config(&ws.config).flip {
        batch.flip_probability = 0.0;
    }
    let input = DetectionInput {
        samples: Arc::new(samples),
        tokenizer: ws.tokenizer.clone(),
        batch,
        prompts: settings.prompts(),
        loader: ws.loader_config(stage),
    };
    let mut task = FineTask::<B> {
        input,
        loss: settings.loss.clone(),
        coder: settings.detector_config(&ws.config.model.fiber).box_coder,
        dropped_boxes: 0,
        device: device.clone(),
    };
    if let Some(dataset) = data.detection_train.first().filter(|_| ws.writes()) {
        let path = ws.run_dir.join(stage.folder()).join("categories.json");
        fiber_core::json::write_json_atomically(&dataset.categories, &path)?;
    }
    let model = ws.train(stage, &mut task, detector, device)?;
    if task.dropped_boxes > 0 {
        println!(
            "{}: {} boxes dropped because their phrase fell beyond the prompt's {} tokens",
            stage.name(),
            task.dropped_boxes,
            settings.max_text_len
        );
    }
    Ok(model)
}

/// The detector on the run's backbone, its backbone taken from the coarse model `fiber` by the
/// original's suffix rule (docs/model.md §6.4); prints what transferred.
pub fn detector_from_coarse<B: Backend>(
    ws: &Workspace<'_>,
    fiber: FiberModel<B>,
    device: &B::Device,
) -> Result<GroundingDetector<B>, TrainError> {
    let config = ws.config.detector.detector_config(&ws.config.model.fiber);
    let mut collector = WeightCollector::new();
    let mut fiber = fiber;
    fiber.visit_weights_with(&mut collector);
    B::seed(device, ws.config.detector_init_seed());
    let mut detector = GroundingDetector::new(&config, device)?;
    let transfer = detector.init_from_coarse(collector.into_store());
    for line in transfer.summary() {
        println!("fine: {line}");
    }
    Ok(detector)
}

/// The fine-grained stage: trains the detector on the training captions and detection images;
/// evaluates COCO box mAP on the held-out detection file and phrase-grounding recall on the
/// held-out captions.
pub struct FineStage;

impl JobTask for FineStage {
    const STAGE: Stage = Stage::Fine;
    type Data = GroundingSplits;
    type Start<B: AutodiffBackend> = FiberModel<B>;
    type Trained<B: AutodiffBackend> = GroundingDetector<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        fiber: FiberModel<B>,
        data: &GroundingSplits,
        device: &B::Device,
    ) -> Result<GroundingDetector<B>, TrainError> {
        let detector = detector_from_coarse(ws, fiber, device)?;
        train_detector(
            ws,
            Self::STAGE,
            GroundingSample::training(data),
            data,
            detector,
            device,
        )
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &GroundingDetector<B>,
        data: &GroundingSplits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        Self::evaluate_in(ws, Self::STAGE, trained, data, report, device)
    }
}

impl FineStage {
    /// Evaluates the detector trained by detector stage `stage` into the report: COCO box mAP
    /// on the held-out detection file (its results written to the stage's folder) and
    /// phrase-grounding recall on the held-out captions.
    pub fn evaluate_in<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        stage: Stage,
        trained: &GroundingDetector<B>,
        data: &GroundingSplits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let model = trained.valid();
        let evaluator = DetectorEvaluator::new(&ws.config, &ws.tokenizer);
        let dir = ws.run_dir.join(stage.folder());
        if let Some((file, dataset)) = &data.detection_held_out {
            report.detection = Some(evaluator.detection(
                &model,
                file,
                dataset,
                &data.detection_train,
                &dir,
                device,
            )?);
        }
        if !data.held_out.is_empty() {
            report.grounding =
                Some(evaluator.grounding(&model, &data.held_out, &data.train, device)?);
        }
        Ok(())
    }
}
