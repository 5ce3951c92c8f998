//! Downstream fine-tuning of a grounding detector (docs/model.md §5.5): detection on the
//! detection files' class-name prompts (`--stage detect`, FIBER's COCO and LVIS fine-tuning) and
//! phrase grounding on the MDETR captions (`--stage ground`, its Flickr30k and RefCOCO
//! fine-tuning). Both start from the fine-grained stage's detector and train it with the same
//! targets and losses under the downstream optimisation (`detect` and `ground` in the
//! configuration).

use std::marker::PhantomData;

use burn::tensor::backend::AutodiffBackend;
use fiber_data::layout::GroundingSplits;
use fiber_heads::grounding::GroundingDetector;

use crate::error::TrainError;
use crate::report::Report;
use crate::stages::Stage;
use crate::tasks::fine::{train_detector, FineStage, GroundingSample};
use crate::tasks::JobTask;
use crate::workspace::Workspace;

/// What one downstream detector stage trains on.
pub trait DownstreamData {
    /// The stage.
    const STAGE: Stage;
    /// The files the stage needs, named in the error when the data has none of them.
    const MISSING: &'static str;
    /// The stage's training samples.
    fn samples(data: &GroundingSplits) -> Vec<GroundingSample>;
}

/// A downstream fine-tuning stage of the detector trained on `D`'s samples; evaluated as the
/// fine-grained stage is (COCO box mAP and phrase-grounding recall on the held-out files).
pub struct Downstream<D>(PhantomData<D>);

/// The training detection images as class-name prompts (`--stage detect`).
pub struct DetectionPrompts;

impl DownstreamData for DetectionPrompts {
    const STAGE: Stage = Stage::Detect;
    const MISSING: &'static str =
        "--stage detect trains on COCO-format detection files (annotations/instances_*train*.json); the data has none";
    fn samples(data: &GroundingSplits) -> Vec<GroundingSample> {
        GroundingSample::detections(data)
    }
}

/// The training MDETR captions, not flipped by default (`--stage ground`).
pub struct GroundingCaptions;

impl DownstreamData for GroundingCaptions {
    const STAGE: Stage = Stage::Ground;
    const MISSING: &'static str =
        "--stage ground trains on MDETR grounding files (mdetr_annotations/final_*train*.json); the data has none";
    fn samples(data: &GroundingSplits) -> Vec<GroundingSample> {
        GroundingSample::captions(data)
    }
}

/// Detection fine-tuning (FIBER's COCO and LVIS fine-tuning).
pub type DetectStage = Downstream<DetectionPrompts>;
/// Phrase-grounding fine-tuning (FIBER's Flickr30k and RefCOCO fine-tuning).
pub type GroundStage = Downstream<GroundingCaptions>;

impl<D: DownstreamData> JobTask for Downstream<D> {
    const STAGE: Stage = D::STAGE;
    type Data = GroundingSplits;
    type Start<B: AutodiffBackend> = GroundingDetector<B>;
    type Trained<B: AutodiffBackend> = GroundingDetector<B>;

    fn train<B: AutodiffBackend>(
        ws: &mut Workspace<'_>,
        detector: GroundingDetector<B>,
        data: &GroundingSplits,
        device: &B::Device,
    ) -> Result<GroundingDetector<B>, TrainError> {
        let samples = D::samples(data);
        if samples.is_empty() {
            return Err(TrainError::Setting(D::MISSING.into()));
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
