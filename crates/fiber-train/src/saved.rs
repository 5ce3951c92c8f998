//! Evaluating a saved run (`cargo xtask eval`): one task's metrics on the run's data, from the
//! final checkpoint of the stage that trained it.

use burn::prelude::*;
use fiber_data::layout::{DataSource, VqaFolder};
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
}

fn json<T: serde::Serialize>(report: T) -> serde_json::Value {
    serde_json::to_value(report).expect("reports serialise")
}

/// Evaluates a saved run on its data's held-out split; the result as JSON. `stage` names the
/// stage folder whose model is evaluated for retrieval, MLM and captioning (default: `pretrain`,
/// and `caption` for captioning).
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
