//! Errors of training and evaluation.

/// What stopped a training or evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss or gradient is NaN or infinite.
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// A checkpoint or optimiser state is missing, incomplete or inconsistent.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Reading or writing weights failed.
    #[error(transparent)]
    Weights(#[from] fiber_core::WeightError),
    /// The data pipeline failed.
    #[error(transparent)]
    Data(#[from] fiber_data::DataError),
    /// The run was stopped on request after this many steps (tests of resumption).
    #[error("stopped after step {0} as requested")]
    Stopped(u64),
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
    /// A configuration file is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
