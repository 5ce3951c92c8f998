//! Errors of the text backbone: configuration files, weights and tokenizers.

use fiber_core::json::ConfigFileError;
use fiber_core::WeightError;

/// What went wrong while building, loading or tokenising for RoBERTa.
#[derive(Debug, thiserror::Error)]
pub enum RobertaError {
    /// A JSON configuration file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The configuration is readable but inconsistent (e.g. hidden size not divisible by heads).
    #[error("invalid RoBERTa configuration: {0}")]
    InvalidConfig(String),
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer files could not be used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
