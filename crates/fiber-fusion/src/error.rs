//! Errors of the fusion backbone.

use fiber_core::json::ConfigFileError;
use fiber_core::WeightError;
use fiber_roberta::RobertaError;
use fiber_swin::SwinError;

/// What went wrong while building or loading the fused backbone.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    /// A JSON configuration file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The configuration is inconsistent.
    #[error("invalid FIBER configuration: {0}")]
    InvalidConfig(String),
    /// The image backbone failed.
    #[error(transparent)]
    Swin(#[from] SwinError),
    /// The text backbone failed.
    #[error(transparent)]
    Roberta(#[from] RobertaError),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
}
