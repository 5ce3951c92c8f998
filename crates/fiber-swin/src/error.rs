//! Errors of the image backbone: configuration files and weights.

use fiber_core::json::ConfigFileError;
use fiber_core::WeightError;

/// What went wrong while building or loading Swin.
#[derive(Debug, thiserror::Error)]
pub enum SwinError {
    /// A JSON configuration file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The configuration is readable but inconsistent or unsupported.
    #[error("invalid Swin configuration: {0}")]
    InvalidConfig(String),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
}
