//! Evaluating a saved run (`cargo xtask eval`): one task's metrics on the run's data, from the
//! final checkpoint of the stage that trained it.

use burn::prelude::*;
use fiber_data::layout::{DataSource, GroundingSplits, VqaFolder};
use fiber_data::{DataError, Problems};

use crate::error::TrainError;
use crate::input::CaptionSplits;
use crate::input::Nlvr2Splits;
use crate::input::StageData;
use crate::run::RunFolder;
use crate::stages::Stage;

/// Which evaluation `cargo xtask eval` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalTask {
    /// ITC and ITC + ITM retrieval (pre-trained model).
    Retrieval,
    /// VQA accuracy (VQA model).
    Vqa,
    /// BLEU-4 and CIDEr-D (captioning model).
    Caption,
    /// Masked-token accuracy (pre-trained model).
    Mlm,
    /// NLVR2 accuracy (NLVR2 model).
    Nlvr2,
    /// COCO box mAP of the fine-grained detector on the held-out detection file.
    Detection,
    /// Phrase-grounding Recall@1/5/10 of the detector on the held-out MDETR captions.
    Grounding,
    /// Referring-expression top-1 accuracy of the detector on the held-out MDETR records.
    Refexp,
}

fn json<T: serde::Serialize>(report: T) -> serde_json::Value {
    serde_json::to_value(report).expect("reports serialise")
}

/// Evaluates a saved run on its data's held-out split; the result as JSON. `stage` names the
/// stage folder whose model is evaluated for retrieval, MLM and captioning (default: `pretrain`,
/// and `caption` for captioning). Detection evaluates the `detect` stage's detector when the
/// run has one, grounding and referring expressions the `ground` stage's, else the fine-grained
/// stage's; the result names it under `stage`.
pub fn evaluate_saved<B: Backend>(
    run: &RunFolder,
    source: &DataSource,
    task: EvalTask,
    stage: Option<&str>,
    device: &B::Device,
) -> Result<serde_json::Value, TrainError> {
    let mut problems = Problems::default();
    let evaluator = run.evaluator();
    let model = |default: Stage| run.model::<B>(stage.unwrap_or(default.folder()), device);
    Ok(match task {
        EvalTask::Nlvr2 => {
            let data = Nlvr2Splits::read(source, &mut problems)?;
            json(evaluator.nlvr2(&run.nlvr2_model::<B>(device)?, &data.test, device)?)
        }
        EvalTask::Vqa => {
            let folder = VqaFolder::read(source, &mut problems)?;
            if let Some(missing) = folder.missing_held_out() {
                return Err(DataError::Missing(missing).into());
            }
            let (model, vocab) = run.vqa_model::<B>(device)?;
            json(evaluator.vqa(&model, &vocab, &folder.held_out, device)?)
        }
        EvalTask::Detection | EvalTask::Grounding | EvalTask::Refexp => {
            let data = GroundingSplits::read(source, &mut problems)?;
            let (model, trained_by) = run.detector_for::<B>(
                if task == EvalTask::Detection {
                    Stage::Detect
                } else {
                    Stage::Ground
                },
                device,
            )?;
            let evaluator = run.detector_evaluator();
            let mut result = match task {
                EvalTask::Detection => {
                    let (file, dataset) = data.detection_held_out.as_ref().ok_or_else(|| {
                        DataError::Missing(
                            "a held-out COCO detection file (a name without `train`: instances_test.json or instances_val.json)".into(),
                        )
                    })?;
                    let dir = run.dir.join(trained_by.folder());
                    json(evaluator.detection(
                        &model,
                        file,
                        dataset,
                        &data.detection_train,
                        &dir,
                        device,
                    )?)
                }
                _ if data.held_out.is_empty() => {
                    return Err(DataError::Missing(
                        "held-out MDETR records (a final_*.json file without `train` in its name)"
                            .into(),
                    )
                    .into())
                }
                EvalTask::Grounding => {
                    json(evaluator.grounding(&model, &data.held_out, &data.train, device)?)
                }
                _ => json(evaluator.refexp(&model, &data.held_out, device)?),
            };
            result["stage"] = trained_by.name().into();
            result
        }
        EvalTask::Retrieval | EvalTask::Mlm | EvalTask::Caption => {
            let data = CaptionSplits::read(source, &mut problems)?;
            let held_out = evaluator.held_out(&data.test)?;
            match task {
                EvalTask::Retrieval => {
                    json(evaluator.retrieval(&model(Stage::Coarse)?, &held_out, device)?)
                }
                EvalTask::Mlm => {
                    json(evaluator.mlm(&model(Stage::Coarse)?, &held_out, &data.train, device)?)
                }
                _ => json(evaluator.captioning(&model(Stage::Caption)?, &held_out, device)?),
            }
        }
    })
}
