//! Shared building blocks of fiber-rs, below the model crates: named tensor stores read from
//! and written to safetensors, the visitor that moves weights between a store and Burn modules
//! with one error listing every mismatched key, activations named as in HuggingFace configs,
//! attention-mask helpers, the one host-to-tensor path for integer batches, the run-time
//! choice of compute backend, and the fused CPU kernels (linear layers, LayerNorm, attention)
//! the models' forward passes go through.

pub mod activation;
pub mod attention;
pub mod backend;
pub mod compare;
pub mod conv;
pub mod dtype;
pub mod error;
pub mod host;
pub mod init;
pub mod interpolate;
pub mod json;
pub mod kernels;
pub mod norm;
pub mod resample;
pub mod store;
pub mod weights;

pub use activation::Activation;
pub use error::{KeyProblems, ShapeMismatch, WeightError};
pub use store::{StoredTensor, StoredValues, TensorStore};
pub use weights::{LoadReport, SkippedKey, WeightCollector, WeightLoader, WeightVisitor};
