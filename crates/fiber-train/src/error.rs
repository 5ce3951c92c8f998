//! Errors of training and evaluation.

/// What stopped a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss or gradient is NaN or infinite.
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// The optimiser state of a checkpoint is incomplete or does not fit the model.
    #[error("optimiser state: {0}")]
    OptimizerState(String),
    /// A task's own checkpointed state (e.g. the ITC queue) is incomplete.
    #[error("task state: {0}")]
    TaskState(String),
    /// A checkpoint's `trainer.json` cannot be read or does not match its folder.
    #[error("{folder}: trainer state: {message}")]
    TrainerState {
        /// The checkpoint folder.
        folder: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run has no checkpoint of the stage asked for.
    #[error("{run} has no `{stage}` checkpoint; train that stage first")]
    NoCheckpoint {
        /// The run folder.
        run: std::path::PathBuf,
        /// The stage folder.
        stage: String,
    },
    /// A fine-tuning stage run alone found neither `--init` nor the run's pre-training.
    #[error("--stage {stage} fine-tunes a pre-trained model: pass --init (a run, a checkpoint, a FIBER checkpoint or HuggingFace folders), or run --stage coarse first ({run} has no pre-training checkpoint)")]
    NoPretraining {
        /// The stage.
        stage: String,
        /// The run folder.
        run: std::path::PathBuf,
    },
    /// A downstream detector stage run alone found neither `--init` nor the run's fine-grained
    /// stage.
    #[error("--stage {stage} fine-tunes a grounding detector: pass --init (a run or checkpoint holding one, or a coarse model to build one on), or run --stage fine first ({run} has no fine-grained checkpoint)")]
    NoFineStage {
        /// The stage.
        stage: String,
        /// The run folder.
        run: std::path::PathBuf,
    },
    /// What `--init` (or `--tokenizer`) points at cannot start this run.
    #[error("{0}")]
    Init(String),
    /// An evaluation's inputs cannot be read or scored (e.g. a malformed COCO file).
    #[error("{0}")]
    Eval(String),
    /// Pre-training batches came without MLM masking.
    #[error("pre-training needs MLM masking in the collate step")]
    Unmasked,
    /// A JSON file of a run (e.g. `answers.json`) cannot be read or parsed.
    #[error(transparent)]
    Json(#[from] fiber_core::json::ConfigFileError),
    /// Reading or writing weights failed.
    #[error(transparent)]
    Weights(#[from] fiber_core::WeightError),
    /// The data pipeline failed.
    #[error(transparent)]
    Data(#[from] fiber_data::DataError),
    /// The run was stopped on request after this many steps (tests of resumption).
    #[error("stopped after step {0} as requested")]
    Stopped(u64),
    /// A model or detector folder could not be loaded or run.
    #[error(transparent)]
    Heads(#[from] fiber_heads::HeadsError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] fiber_fusion::FusionError),
    /// A Swin configuration is invalid.
    #[error(transparent)]
    Swin(#[from] fiber_swin::SwinError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] fiber_roberta::RobertaError),
    /// The device failed while running or reading back a computation.
    #[error("device: {0}")]
    Device(String),
    /// A data-parallel replica failed, or waited past its timeout for the others.
    #[error("replicas: {0}")]
    Replica(String),
    /// A configuration file is invalid (the file and what is wrong).
    #[error("configuration: {path}: {message}")]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of its range or missing (e.g. no data folder).
    #[error("configuration: {0}")]
    Setting(String),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
