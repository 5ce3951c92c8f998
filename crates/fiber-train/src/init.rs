//! Where a stage's model starts (`cargo xtask train --init …`): one of our runs or
//! checkpoints, a FIBER checkpoint (original `.ckpt`/`.pt`/`.pth`/`.safetensors` file or a
//! folder written by `cargo xtask convert`), or a pair of HuggingFace folders (RoBERTa + Swin,
//! docs/model.md §6.3). The source also fixes the model's configuration and its tokenizer.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_core::weights::{LoadReport, WeightCollector, WeightLoader};
use fiber_core::TensorStore;
use fiber_fusion::weights::{has_caption_adapters, FiberCheckpoint};
use fiber_fusion::{FiberBackbone, FiberConfig};
use fiber_heads::grounding::weights::{CoarseTransfer, DetectorCheckpoint};
use fiber_heads::grounding::{DetectorConfig, GroundingDetector};
use fiber_heads::FiberModel;
use fiber_roberta::{RobertaConfig, RobertaTokenizer};
use fiber_swin::SwinConfig;

use crate::checkpoint::CheckpointDir;
use crate::config::DetectorSettings;
use crate::error::TrainError;
use crate::model_io::{load_model, VisitWeights};
use crate::run::RunFolder;
use crate::stages::Stage;

/// A model to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitSource {
    /// A stage of one of our runs (`runs/<name>` holds `config.toml` and `tokenizer.json`): the
    /// latest checkpoint of `stage`.
    Run {
        /// The run folder.
        dir: PathBuf,
        /// The stage folder (`pretrain`, `vqa`, …).
        stage: String,
        /// Whether the stage folder was named (`runs/<name>/<stage>`) rather than the run's
        /// default meant (`runs/<name>`: the pre-training, or for a downstream detector stage
        /// the fine-grained stage).
        named: bool,
    },
    /// One checkpoint folder of ours (`runs/<name>/<stage>/checkpoints/step-NNNNNN`).
    Checkpoint {
        /// The run folder holding it.
        run: PathBuf,
        /// The checkpoint folder.
        folder: PathBuf,
    },
    /// A FIBER checkpoint: an original file or a converted folder.
    Fiber(PathBuf),
    /// HuggingFace `RobertaModel` and `SwinModel` folders (`config.json` + weights).
    HuggingFace {
        /// The RoBERTa folder (its tokenizer is used unless `--tokenizer` names another).
        roberta: PathBuf,
        /// The Swin folder.
        swin: PathBuf,
    },
}

/// A model built from an [`InitSource`], with its configuration and tokenizer.
pub struct Initialised<B: Backend> {
    /// The model (task heads of other stages are not part of it).
    pub model: FiberModel<B>,
    /// Its configuration (the vocabulary size is the tokenizer's).
    pub config: FiberConfig,
    /// Its tokenizer.
    pub tokenizer: RobertaTokenizer,
    /// What was loaded, for the log.
    pub notes: Vec<String>,
}

fn hf_model_type(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("model_type")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// The weights file of a HuggingFace folder.
fn hf_weights(dir: &Path) -> Result<TensorStore, TrainError> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let path = dir.join(name);
        if path.exists() {
            return Ok(TensorStore::read_any(&path)?);
        }
    }
    Err(TrainError::Init(format!(
        "{}: neither model.safetensors nor pytorch_model.bin found",
        dir.display()
    )))
}

impl InitSource {
    /// Recognises what `paths` (the `--init` values) point at.
    pub fn parse(paths: &[PathBuf]) -> Result<Self, TrainError> {
        let err = |m: String| Err(TrainError::Init(m));
        match paths {
            [] => err("--init needs a path".into()),
            [a, b] => {
                let (ta, tb) = (hf_model_type(a), hf_model_type(b));
                match (ta.as_deref(), tb.as_deref()) {
                    (Some("roberta"), Some("swin")) => Ok(Self::HuggingFace {
                        roberta: a.clone(),
                        swin: b.clone(),
                    }),
                    (Some("swin"), Some("roberta")) => Ok(Self::HuggingFace {
                        roberta: b.clone(),
                        swin: a.clone(),
                    }),
                    _ => err(format!(
                        "two --init paths must be a HuggingFace RoBERTa folder and a Swin folder \
                         (config.json with model_type \"roberta\" and \"swin\"); got {} ({}) and {} ({})",
                        a.display(),
                        ta.as_deref().unwrap_or("no model_type"),
                        b.display(),
                        tb.as_deref().unwrap_or("no model_type")
                    )),
                }
            }
            [path] => Self::parse_one(path),
            _ => err(format!(
                "--init takes one path, or two (HuggingFace RoBERTa + Swin); got {}",
                paths.len()
            )),
        }
    }

    fn parse_one(path: &Path) -> Result<Self, TrainError> {
        let is_run =
            |dir: &Path| dir.join("config.toml").exists() && dir.join("tokenizer.json").exists();
        if !path.exists() {
            return Err(TrainError::Init(format!(
                "--init {}: no such file or folder",
                path.display()
            )));
        }
        if path.is_dir() {
            if is_run(path) {
                return Ok(Self::Run {
                    dir: path.to_path_buf(),
                    stage: Stage::Coarse.folder().into(),
                    named: false,
                });
            }
            if let Some(run) = path.parent().filter(|p| is_run(p)) {
                let stage = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                return Ok(Self::Run {
                    dir: run.to_path_buf(),
                    stage: stage.to_string(),
                    named: true,
                });
            }
            if path.join("model.safetensors").exists()
                && path.join("optimizer.safetensors").exists()
            {
                let run = path.ancestors().nth(3).filter(|p| is_run(p)).ok_or_else(|| {
                    TrainError::Init(format!(
                        "{} is a checkpoint folder outside a run folder (runs/<name>/<stage>/checkpoints/step-N); its configuration and tokenizer are unknown",
                        path.display()
                    ))
                })?;
                return Ok(Self::Checkpoint {
                    run: run.to_path_buf(),
                    folder: path.to_path_buf(),
                });
            }
            if let Some(kind @ ("roberta" | "swin")) = hf_model_type(path).as_deref() {
                let other = if kind == "roberta" { "Swin" } else { "RoBERTa" };
                return Err(TrainError::Init(format!(
                    "{} is a HuggingFace {kind} folder; starting from HuggingFace weights needs both backbones: --init ROBERTA_DIR --init SWIN_DIR (the {other} folder is missing)",
                    path.display()
                )));
            }
        }
        Ok(Self::Fiber(path.to_path_buf()))
    }

    /// One line saying where the model starts.
    pub fn describe(&self) -> String {
        match self {
            Self::Run { dir, stage, .. } => format!("stage `{stage}` of run {}", dir.display()),
            Self::Checkpoint { folder, .. } => format!("checkpoint {}", folder.display()),
            Self::Fiber(path) => format!("FIBER checkpoint {}", path.display()),
            Self::HuggingFace { roberta, swin } => format!(
                "HuggingFace RoBERTa {} + Swin {}",
                roberta.display(),
                swin.display()
            ),
        }
    }

    /// Builds the model. `tokenizer` overrides the source's tokenizer (required for a FIBER
    /// checkpoint, which carries none); `num_fuse_block` is used for HuggingFace sources.
    pub fn load<B: Backend>(
        &self,
        tokenizer: Option<&Path>,
        num_fuse_block: usize,
        device: &B::Device,
    ) -> Result<Initialised<B>, TrainError> {
        let explicit = tokenizer
            .map(RobertaTokenizer::from_dir_or_file)
            .transpose()?;
        let (model, config, tokenizer, notes) = match self {
            Self::Run { dir, stage, .. } => {
                let run = RunFolder::open(dir)?;
                let store = run.stage_store(stage)?;
                let (model, notes) = our_model(&run, store, device)?;
                (
                    model,
                    run.fiber_config(),
                    explicit.unwrap_or(run.tokenizer),
                    notes,
                )
            }
            Self::Checkpoint { run, folder } => {
                let run = RunFolder::open(run)?;
                let store = checkpoint_weights(folder)?;
                let (model, notes) = our_model(&run, store, device)?;
                (
                    model,
                    run.fiber_config(),
                    explicit.unwrap_or(run.tokenizer),
                    notes,
                )
            }
            Self::Fiber(path) => {
                let tokenizer = explicit.ok_or_else(|| {
                    TrainError::Init(format!(
                        "{} carries no tokenizer: pass --tokenizer with a RoBERTa folder (tokenizer.json or vocab.json + merges.txt)",
                        path.display()
                    ))
                })?;
                let checkpoint = FiberCheckpoint::read(path, None)?;
                let mut model = FiberModel::new(
                    &checkpoint.config,
                    has_caption_adapters(&checkpoint.store),
                    device,
                )?;
                let report = model.load_store_with(checkpoint.store, true)?;
                let mut notes: Vec<String> =
                    checkpoint.assumed.iter().map(|a| a.to_string()).collect();
                notes.extend(skipped_notes(&report));
                (model, checkpoint.config, tokenizer, notes)
            }
            Self::HuggingFace { roberta, swin } => {
                let tokenizer = match explicit {
                    Some(t) => t,
                    None => RobertaTokenizer::from_dir(roberta)?,
                };
                let config = FiberConfig::new(
                    SwinConfig::from_hf_json_file(swin.join("config.json"))?,
                    RobertaConfig::from_hf_json_file(roberta.join("config.json"))?,
                )
                .with_num_fuse_block(num_fuse_block);
                config.validate()?;
                let (backbone, report) = FiberBackbone::from_unimodal(
                    &config,
                    hf_weights(roberta)?,
                    hf_weights(swin)?,
                    true,
                    device,
                )?;
                let mut model = FiberModel::new(&config, true, device)?;
                model.backbone = backbone;
                let mut notes = skipped_notes(&report);
                notes
                    .push("both backbones loaded; the fusion modules and the heads are new".into());
                (model, config, tokenizer, notes)
            }
        };
        if tokenizer.vocab_size() > config.roberta.vocab_size {
            return Err(TrainError::Init(format!(
                "the tokenizer has {} tokens but the model's word embeddings ({}) have {} rows; use the tokenizer the model was trained with",
                tokenizer.vocab_size(),
                self.describe(),
                config.roberta.vocab_size
            )));
        }
        Ok(Initialised {
            model,
            config,
            tokenizer,
            notes,
        })
    }
}

/// A grounding detector initialised from a coarse model by the longest-suffix rule.
pub struct DetectorInit<B: Backend> {
    /// The detector (its stage norms, FPN and head fresh).
    pub model: GroundingDetector<B>,
    /// Its configuration.
    pub config: DetectorConfig,
    /// The source's tokenizer (`None` for a FIBER checkpoint without `--tokenizer`).
    pub tokenizer: Option<RobertaTokenizer>,
    /// Which detector keys came from which coarse keys, and what stayed fresh.
    pub transfer: CoarseTransfer,
}

impl InitSource {
    /// The coarse model's weights in the original FIBER key layout (`vit_model.*`,
    /// `text_transformer.*`, heads), its backbone configuration and its tokenizer where the
    /// source has one (`tokenizer` overrides it). `fiber_config` gives the sizes of an original
    /// checkpoint file that does not determine them; `num_fuse_block` is used for HuggingFace
    /// sources, whose fusion modules are new.
    pub fn coarse_weights(
        &self,
        tokenizer: Option<&Path>,
        fiber_config: Option<&Path>,
        num_fuse_block: usize,
    ) -> Result<(TensorStore, FiberConfig, Option<RobertaTokenizer>), TrainError> {
        let explicit = tokenizer
            .map(RobertaTokenizer::from_dir_or_file)
            .transpose()?;
        let (store, config, own_tokenizer) = match self {
            Self::Run { dir, stage, .. } => {
                let run = RunFolder::open(dir)?;
                (
                    run.stage_store(stage)?,
                    run.fiber_config(),
                    Some(run.tokenizer),
                )
            }
            Self::Checkpoint { run, folder } => {
                let run = RunFolder::open(run)?;
                let store = checkpoint_weights(folder)?;
                (store, run.fiber_config(), Some(run.tokenizer))
            }
            Self::Fiber(path) => {
                let checkpoint = FiberCheckpoint::read(path, fiber_config)?;
                (checkpoint.store, checkpoint.config, None)
            }
            Self::HuggingFace { .. } => {
                type Cpu = burn::backend::NdArray<f32>;
                let Initialised {
                    mut model,
                    config,
                    tokenizer,
                    ..
                } = self.load::<Cpu>(tokenizer, num_fuse_block, &Default::default())?;
                let mut collector = WeightCollector::new();
                model.backbone.visit_weights(&mut collector, "");
                (collector.into_store(), config, Some(tokenizer))
            }
        };
        Ok((store, config, explicit.or(own_tokenizer)))
    }

    /// A grounding detector whose backbone starts from this coarse source (docs/model.md §6.4).
    /// `config` gives the detector's sizes; without it the coarse backbone's sizes are used with
    /// the detection defaults ([`DetectorConfig::for_coarse_backbone`]). `tokenizer` and
    /// `fiber_config` are as in [`Self::coarse_weights`].
    pub fn detector<B: Backend>(
        &self,
        config: Option<DetectorConfig>,
        tokenizer: Option<&Path>,
        fiber_config: Option<&Path>,
        device: &B::Device,
    ) -> Result<DetectorInit<B>, TrainError> {
        let num_fuse_block = config
            .as_ref()
            .map_or(FiberConfig::fiber_base_384().num_fuse_block, |c| {
                c.backbone.num_fuse_block
            });
        let (store, coarse, tokenizer) =
            self.coarse_weights(tokenizer, fiber_config, num_fuse_block)?;
        let config = config.unwrap_or_else(|| DetectorConfig::for_coarse_backbone(&coarse));
        let mut model = GroundingDetector::new(&config, device)?;
        let transfer = model.init_from_coarse(store);
        if transfer.transferred.is_empty() {
            return Err(TrainError::Init(format!(
                "no weight of {} matches the detector ({} keys with another shape, e.g. {:?}): it is not a coarse FIBER model of these sizes",
                self.describe(),
                transfer.shape_mismatch.len(),
                transfer.shape_mismatch.first().map(|m| &m.0)
            )));
        }
        Ok(DetectorInit {
            model,
            config,
            tokenizer,
            transfer,
        })
    }
}

/// The detector a downstream stage (`--stage detect` / `ground`) fine-tunes, with what it was
/// built with.
pub struct DownstreamStart<B: Backend> {
    /// The detector.
    pub model: GroundingDetector<B>,
    /// Its backbone configuration.
    pub fiber: FiberConfig,
    /// The detector settings of the run that trained it (`None` when it was built here from a
    /// coarse model with the run's own settings).
    pub settings: Option<DetectorSettings>,
    /// Its tokenizer.
    pub tokenizer: RobertaTokenizer,
    /// What was loaded, for the log.
    pub notes: Vec<String>,
}

impl InitSource {
    /// Where a downstream stage of run `dir` starts by default: its fine-grained stage.
    pub fn fine_stage_of(dir: &Path) -> Self {
        Self::Run {
            dir: dir.to_path_buf(),
            stage: Stage::Fine.folder().into(),
            named: true,
        }
    }

    /// The detector a downstream stage starts from. A run folder given whole means its
    /// fine-grained stage when it has one. A stage or checkpoint of ours that holds a detector
    /// is loaded as it is (its weight average when it kept one), with the sizes of the run that
    /// trained it; any other source is a coarse model, and the detector is built on it by the
    /// suffix rule (docs/model.md §6.4) with `settings`, its new modules seeded with `seed`.
    pub fn downstream_detector<B: Backend>(
        &self,
        settings: &DetectorSettings,
        tokenizer: Option<&Path>,
        num_fuse_block: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<DownstreamStart<B>, TrainError> {
        let explicit = tokenizer
            .map(RobertaTokenizer::from_dir_or_file)
            .transpose()?;
        let source = match self {
            Self::Run {
                dir, named: false, ..
            } => {
                let fine =
                    CheckpointDir::new(dir.join(Stage::Fine.folder()).join("checkpoints"), 1);
                if fine.latest()?.is_some() {
                    Self::fine_stage_of(dir)
                } else {
                    self.clone()
                }
            }
            other => other.clone(),
        };
        let ours = match &source {
            Self::Run { dir, stage, .. } => {
                let run = RunFolder::open(dir)?;
                let folder = run.stage_checkpoint(stage)?;
                Some((run, folder))
            }
            Self::Checkpoint { run, folder } => Some((RunFolder::open(run)?, folder.clone())),
            _ => None,
        };
        if let Some((run, folder)) = ours {
            let (store, copy) = detector_weights(&folder)?;
            if DetectorCheckpoint::is_detector_store(&store) {
                let config = run.config.detector.detector_config(&run.fiber_config());
                let mut model = GroundingDetector::new(&config, device)?;
                load_model(&mut model, store)?;
                return Ok(DownstreamStart {
                    model,
                    fiber: run.fiber_config(),
                    settings: Some(run.config.detector.clone()),
                    tokenizer: explicit.unwrap_or(run.tokenizer),
                    notes: vec![format!("the detector of {} ({copy})", folder.display())],
                });
            }
        }
        let (store, coarse, own) = source.coarse_weights(tokenizer, None, num_fuse_block)?;
        let tokenizer = own.ok_or_else(|| {
            TrainError::Init(format!(
                "{} carries no tokenizer: pass --tokenizer with a RoBERTa folder",
                source.describe()
            ))
        })?;
        let config = settings.detector_config(&coarse);
        B::seed(device, seed);
        let mut model = GroundingDetector::new(&config, device)?;
        let transfer = model.init_from_coarse(store);
        if transfer.transferred.is_empty() {
            return Err(TrainError::Init(format!(
                "{} holds neither a detector nor a coarse FIBER model of these sizes",
                source.describe()
            )));
        }
        let mut notes = vec![format!(
            "{} is a coarse model: the detector is built on it",
            source.describe()
        )];
        notes.extend(transfer.summary());
        Ok(DownstreamStart {
            model,
            fiber: coarse,
            settings: None,
            tokenizer,
            notes,
        })
    }
}

/// The file of a detector checkpoint folder that holds its weights for evaluation and use:
/// the moving average (`ema.safetensors`) when the stage kept one, else `model.safetensors`.
pub(crate) fn detector_weights_file(folder: &Path) -> &'static str {
    if folder.join("ema.safetensors").exists() {
        "ema.safetensors"
    } else {
        "model.safetensors"
    }
}

/// A detector checkpoint folder's weights: its moving average when it kept one, else its
/// weights; with the file read.
pub(crate) fn detector_weights(folder: &Path) -> Result<(TensorStore, &'static str), TrainError> {
    let file = detector_weights_file(folder);
    let store = TensorStore::from_safetensors_bytes(&CheckpointDir::read(folder, file)?)?;
    Ok((store, file))
}

/// The weights of one of our checkpoint folders.
fn checkpoint_weights(folder: &Path) -> Result<TensorStore, TrainError> {
    Ok(TensorStore::from_safetensors_bytes(&CheckpointDir::read(
        folder,
        "model.safetensors",
    )?)?)
}

/// Our model from one of our checkpoints; the heads of other fine-tuning tasks are skipped.
fn our_model<B: Backend>(
    run: &RunFolder,
    store: TensorStore,
    device: &B::Device,
) -> Result<(FiberModel<B>, Vec<String>), TrainError> {
    let mut model = FiberModel::new(&run.fiber_config(), true, device)?;
    let mut loader = WeightLoader::new(store).skip_unused("head of another task", |k| {
        k.starts_with("vqa_classifier.") || k.starts_with("nlvr2_classifier.")
    });
    model.visit_weights_with(&mut loader);
    let report = loader.finish()?;
    Ok((model, skipped_notes(&report)))
}

/// One line per reason: how many checkpoint keys were skipped and the first of them.
fn skipped_notes(report: &LoadReport) -> Vec<String> {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &report.skipped {
        by_reason.entry(&s.reason).or_default().push(&s.key);
    }
    by_reason
        .into_iter()
        .map(|(reason, keys)| format!("skipped {} key(s) ({reason}), e.g. {}", keys.len(), keys[0]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_paths_are_recognised_or_refused_with_a_reason() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let roberta = fixtures.join("roberta/tiny");
        let swin = fixtures.join("swin/tiny");
        assert_eq!(
            InitSource::parse(&[swin.clone(), roberta.clone()]).unwrap(),
            InitSource::HuggingFace {
                roberta: roberta.clone(),
                swin: swin.clone()
            }
        );
        let err = InitSource::parse(std::slice::from_ref(&roberta))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs both backbones"), "{err}");
        let err = InitSource::parse(&[roberta.clone(), roberta.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RoBERTa folder and a Swin folder"), "{err}");
        let err = InitSource::parse(&[fixtures.join("nothing-here")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        let ckpt = fixtures.join("fusion/tiny/fiber_tiny.ckpt");
        assert_eq!(
            InitSource::parse(std::slice::from_ref(&ckpt)).unwrap(),
            InitSource::Fiber(ckpt.clone())
        );
        let err = InitSource::Fiber(ckpt)
            .load::<burn::backend::NdArray>(None, 2, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--tokenizer"), "{err}");
    }
}
