//! Shared building blocks of fiber-rs, below the model crates: named tensor stores read from
//! and written to safetensors, the visitor that moves weights between a store and Burn modules
//! with one error listing every mismatched key, activations named as in HuggingFace configs,
//! attention-mask helpers, the one host-to-tensor path for integer batches, the run-time
//! choice of compute backend, and the fused CPU kernels (linear layers, LayerNorm, attention)
//! the models' forward passes go through.
//!
//! Main types: [`TensorStore`] (named tensors, read from safetensors or PyTorch files),
//! [`WeightLoader`] / [`WeightCollector`] (a module's parameters from and into a store, by
//! checkpoint key), [`Activation`], and the kernels of [`kernels`].
//!
//! ```
//! use fiber_core::{StoredTensor, TensorStore};
//!
//! let mut store = TensorStore::new();
//! store.insert("dense.weight", StoredTensor::f32(vec![2, 3], vec![0.5; 6]));
//! let bytes = store.to_safetensors_bytes()?;
//! let back = TensorStore::from_safetensors_bytes(&bytes)?;
//! assert_eq!(back.get("dense.weight").unwrap().shape, vec![2, 3]);
//! # Ok::<(), fiber_core::WeightError>(())
//! ```

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
