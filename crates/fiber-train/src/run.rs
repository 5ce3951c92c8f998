//! A run folder (`runs/<name>`) as the evaluation and inference commands use it: its
//! configuration, tokenizer, answer vocabulary and the final model of each stage.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_data::image::PixelImage;
use fiber_data::vqa::AnswerVocab;
use fiber_fusion::FiberConfig;
use fiber_heads::grounding::GroundingDetector;
use fiber_heads::{DecodeConfig, FiberModel, Nlvr2Model, VqaModel};
use fiber_roberta::RobertaTokenizer;

use crate::checkpoint::CheckpointDir;
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::model_io::load_model;
use crate::stages::Stage;

/// A trained run.
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its configuration (`config.toml`).
    pub config: RunConfig,
    /// Its tokenizer (`tokenizer.json`).
    pub tokenizer: RobertaTokenizer,
}

impl RunFolder {
    /// Opens `dir` (it must hold `config.toml` and `tokenizer.json`).
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let config = RunConfig::from_toml_file(&dir.join("config.toml"))?;
        let tokenizer = RobertaTokenizer::from_file(dir.join("tokenizer.json"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
        })
    }

    /// The backbone configuration (its vocabulary is the tokenizer's, set when the run started).
    pub fn fiber_config(&self) -> FiberConfig {
        self.config.model.fiber.clone()
    }

    /// The folder of a stage's latest checkpoint.
    pub fn stage_checkpoint(&self, stage: &str) -> Result<PathBuf, TrainError> {
        let checkpoints = CheckpointDir::new(self.dir.join(stage).join("checkpoints"), 1);
        let (_, folder) = checkpoints
            .latest()?
            .ok_or_else(|| TrainError::NoCheckpoint {
                run: self.dir.clone(),
                stage: stage.to_string(),
            })?;
        Ok(folder)
    }

    /// The weights of a stage's latest checkpoint.
    pub(crate) fn stage_store(&self, stage: &str) -> Result<fiber_core::TensorStore, TrainError> {
        let folder = self.stage_checkpoint(stage)?;
        Ok(fiber_core::TensorStore::from_safetensors_bytes(
            &CheckpointDir::read(&folder, "model.safetensors")?,
        )?)
    }

    /// The grounding detector of detector stage `stage` (`fine`, `detect` or `ground`): its
    /// weight average when the stage kept one (`ema.safetensors`), else its weights.
    pub fn detector_of<B: Backend>(
        &self,
        stage: Stage,
        device: &B::Device,
    ) -> Result<GroundingDetector<B>, TrainError> {
        let folder = self.stage_checkpoint(stage.folder())?;
        let (store, _) = crate::init::detector_weights(&folder)?;
        let config = self.config.detector.detector_config(&self.fiber_config());
        let mut model = GroundingDetector::new(&config, device)?;
        load_model(&mut model, store)?;
        Ok(model)
    }

    /// The detector for `task` (`Stage::Detect` or `Stage::Ground`): that stage's when the run
    /// has fine-tuned one, else the fine-grained stage's; with the stage it came from.
    pub fn detector_for<B: Backend>(
        &self,
        task: Stage,
        device: &B::Device,
    ) -> Result<(GroundingDetector<B>, Stage), TrainError> {
        let checkpoints = CheckpointDir::new(self.dir.join(task.folder()).join("checkpoints"), 1);
        let stage = if checkpoints.latest()?.is_some() {
            task
        } else {
            Stage::Fine
        };
        Ok((self.detector_of(stage, device)?, stage))
    }

    /// The run's detector evaluation settings and tokenizer.
    pub fn detector_evaluator(&self) -> crate::eval::DetectorEvaluator<'_> {
        crate::eval::DetectorEvaluator::new(&self.config, &self.tokenizer)
    }

    /// The model of stage `stage` (`pretrain` or `caption`).
    pub fn model<B: Backend>(
        &self,
        stage: &str,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let mut model = FiberModel::new(&self.fiber_config(), true, device)?;
        load_model(&mut model, self.stage_store(stage)?)?;
        Ok(model)
    }

    /// The VQA model and its answers (`answers.json`).
    pub fn vqa_model<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(VqaModel<B>, AnswerVocab), TrainError> {
        let path = self.dir.join("answers.json");
        let answers: Vec<String> = fiber_core::json::read_json(&path)?;
        let vocab = AnswerVocab::from_answers(answers);
        let config = self.fiber_config();
        let fiber = FiberModel::new(&config, true, device)?;
        let mut model = VqaModel::new(fiber, vocab.len(), config.head_initializer_range, device);
        load_model(&mut model, self.stage_store(Stage::Vqa.folder())?)?;
        Ok((model, vocab))
    }

    /// The NLVR2 model.
    pub fn nlvr2_model<B: Backend>(&self, device: &B::Device) -> Result<Nlvr2Model<B>, TrainError> {
        let config = self.fiber_config();
        let fiber = FiberModel::new(&config, true, device)?;
        let mut model = Nlvr2Model::new(fiber, config.head_initializer_range, device);
        load_model(&mut model, self.stage_store(Stage::Nlvr2.folder())?)?;
        Ok(model)
    }

    /// Reads and preprocesses images as evaluation does (square resize, ImageNet normalisation).
    pub fn load_images(&self, paths: &[PathBuf]) -> Result<Vec<PixelImage>, TrainError> {
        crate::eval::load_images(paths, self.config.model.fiber.swin.image_size)
    }

    /// The run's evaluation settings and tokenizer.
    pub fn evaluator(&self) -> crate::eval::Evaluator<'_> {
        crate::eval::Evaluator {
            config: &self.config,
            tokenizer: &self.tokenizer,
        }
    }

    /// Beam-search decoding settings of the run.
    pub fn decode_config(&self) -> DecodeConfig {
        crate::eval::decode_config(&self.tokenizer, &self.config.eval)
    }
}
