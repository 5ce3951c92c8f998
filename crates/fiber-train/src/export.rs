//! A trained run's model as a model folder, the format users load outside the run:
//! `fiber_heads::Fiber::load` for the coarse stages (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `inference.json`, and `answers.json` for VQA), and a detector folder for
//! `fiber_heads::grounding::Detector::load` (`config.json` with the backbone under `backbone`,
//! `model.safetensors` in the original fine-grained key layout, `tokenizer.json`,
//! `inference.json`, `categories.json` where the stage kept its class names) for the detector
//! stages.

use std::path::{Path, PathBuf};

use fiber_core::store::write_atomically;
use fiber_heads::grounding::pretrained::CATEGORIES_FILE;
use fiber_heads::pretrained::{
    InferenceSettings, ANSWERS_FILE, CONFIG_FILE, SETTINGS_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};

use crate::checkpoint::CheckpointDir;
use crate::error::TrainError;
use crate::run::RunFolder;
use crate::stages::Stage;

/// What [`export_model`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The stage whose model was exported.
    pub stage: Stage,
    /// The checkpoint folder it came from.
    pub checkpoint: PathBuf,
    /// The weights' file in that folder (`ema.safetensors` for a detector with a weight
    /// average, else `model.safetensors`).
    pub weights: &'static str,
    /// The files written, in the order written.
    pub files: Vec<PathBuf>,
}

/// Writes the final model of `stage` in `run` to the folder `to` (created; existing files of
/// the same names are replaced atomically). NLVR2 models take image pairs and are not
/// exported (the `eval` command evaluates them in the run).
pub fn export_model(run: &RunFolder, stage: Stage, to: &Path) -> Result<Exported, TrainError> {
    if stage == Stage::Nlvr2 {
        return Err(TrainError::Setting(
            "the NLVR2 model is not exported: a model folder serves retrieval, matching, VQA, captioning and the detector; evaluate NLVR2 in the run with `eval --task nlvr2`".into(),
        ));
    }
    let checkpoint = run.stage_checkpoint(stage.folder())?;
    std::fs::create_dir_all(to).map_err(|source| TrainError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<(), TrainError> {
        let path = to.join(name);
        write_atomically(&path, bytes)?;
        files.push(path);
        Ok(())
    };
    let fiber = run.fiber_config();
    let is_detector = matches!(stage, Stage::Fine | Stage::Detect | Stage::Ground);
    let weights = if is_detector {
        let weights = crate::init::detector_weights_file(&checkpoint);
        write(WEIGHTS_FILE, &CheckpointDir::read(&checkpoint, weights)?)?;
        let config = run.config.detector.detector_config(&fiber);
        write(CONFIG_FILE, to_json(&config)?.as_bytes())?;
        let settings = run.config.detector.inference();
        write(SETTINGS_FILE, to_json(&settings)?.as_bytes())?;
        weights
    } else {
        write(
            WEIGHTS_FILE,
            &CheckpointDir::read(&checkpoint, WEIGHTS_FILE)?,
        )?;
        write(CONFIG_FILE, to_json(&fiber)?.as_bytes())?;
        let settings = InferenceSettings {
            max_text_len: run.config.model.max_text_len,
            beam_size: run.config.eval.beam_size,
            max_caption_len: run.config.eval.max_caption_len,
        };
        write(SETTINGS_FILE, to_json(&settings)?.as_bytes())?;
        WEIGHTS_FILE
    };
    write(TOKENIZER_FILE, run.tokenizer.to_json()?.as_bytes())?;
    let kept = match stage {
        Stage::Vqa => Some((ANSWERS_FILE, run.dir.join(ANSWERS_FILE))),
        Stage::Fine | Stage::Detect | Stage::Ground => Some((
            CATEGORIES_FILE,
            run.dir.join(stage.folder()).join(CATEGORIES_FILE),
        )),
        _ => None,
    };
    if let Some((name, path)) = kept {
        match std::fs::read(&path) {
            Ok(bytes) => write(name, &bytes)?,
            // A VQA model without its answers cannot answer; a detector without the class
            // names it was trained on is still prompted with the names a user gives.
            Err(_) if stage != Stage::Vqa => {}
            Err(source) => return Err(TrainError::Io { path, source }),
        }
    }
    Ok(Exported {
        stage,
        checkpoint,
        weights,
        files,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, TrainError> {
    serde_json::to_string_pretty(value).map_err(|e| TrainError::Setting(e.to_string()))
}
