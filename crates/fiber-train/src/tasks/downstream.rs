//! Downstream fine-tuning of a grounding detector (docs/model.md §5.5): detection on the
//! detection files' class-name prompts (`--stage detect`, FIBER's COCO and LVIS fine-tuning) and
//! phrase grounding on the MDETR captions (`--stage ground`, its Flickr30k and RefCOCO
//! fine-tuning). Both start from the fine-grained stage's detector and train it with the same
//! targets and losses under the downstream optimisation (`detect` and `ground` in the
//! configuration).

use burn::tensor::backend::AutodiffBackend;
use fiber_data::layout::GroundingSplits;
use fiber_heads::grounding::GroundingDetector;

use crate::error::TrainError;
use crate::report::Report;
use crate::stages::Stage;
use crate::tasks::fine::{train_detector, FineStage, GroundingSample};
use crate::tasks::JobTask;
use crate::workspace::Workspace;

/// Detection fine-tuning: the training detection images as class-name prompts; evaluated by
/// COCO box mAP on the held-out detection file and by phrase-grounding recall.
pub struct DetectStage;

impl JobTask for DetectStage {
    const STAGE: Stage = Stage::Detect;
    type Data = GroundingSplits;
    type Start<B: AutodiffBackend> = GroundingDetector<B>;
    type Trained<B: AutodiffBackend> = GroundingDetector<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        detector: GroundingDetector<B>,
        data: &GroundingSplits,
        device: &B::Device,
    ) -> Result<GroundingDetector<B>, TrainError> {
        let samples = GroundingSample::detections(data);
        if samples.is_empty() {
            return Err(TrainError::Setting(
                "--stage detect trains on COCO-format detection files (annotations/instances_*train*.json); the data has none".into(),
            ));
        }
        train_detector(ws, Self::STAGE, samples, data, detector, device)
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &GroundingDetector<B>,
        data: &GroundingSplits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        FineStage::evaluate_in(ws, Self::STAGE, trained, data, report, device)
    }
}

/// Phrase-grounding fine-tuning: the training MDETR captions, not flipped by default; evaluated
/// as the fine-grained stage is.
pub struct GroundStage;

impl JobTask for GroundStage {
    const STAGE: Stage = Stage::Ground;
    type Data = GroundingSplits;
    type Start<B: AutodiffBackend> = GroundingDetector<B>;
    type Trained<B: AutodiffBackend> = GroundingDetector<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        detector: GroundingDetector<B>,
        data: &GroundingSplits,
        device: &B::Device,
    ) -> Result<GroundingDetector<B>, TrainError> {
        let samples = GroundingSample::captions(data);
        if samples.is_empty() {
            return Err(TrainError::Setting(
                "--stage ground trains on MDETR grounding files (mdetr_annotations/final_*train*.json); the data has none".into(),
            ));
        }
        train_detector(ws, Self::STAGE, samples, data, detector, device)
    }

    fn evaluate<B: AutodiffBackend>(
        ws: &Workspace<'_>,
        trained: &GroundingDetector<B>,
        data: &GroundingSplits,
        report: &mut Report,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        FineStage::evaluate_in(ws, Self::STAGE, trained, data, report, device)
    }
}
