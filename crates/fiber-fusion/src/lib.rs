//! FIBER's fusion in the backbone (docs/model.md §2): Swin and RoBERTa with gated co-attention in their
//! last blocks and layers, run in lock-step pairs, as a fusion encoder, a dual encoder and a
//! captioning decoder on one set of weights.
//!
//! Main types: [`FiberConfig`], [`FiberBackbone`] (prefix and suffix entry points that let a
//! training step or a retrieval index compute each image's and text's uni-modal part once),
//! [`FiberCheckpoint`] (an original checkpoint or a converted folder) and the detection
//! backbone.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use fiber_fusion::FiberCheckpoint;
//!
//! # fn main() -> Result<(), fiber_fusion::FusionError> {
//! let device = Default::default();
//! // An original `.ckpt` or a folder written by `cargo xtask convert`.
//! let checkpoint = FiberCheckpoint::read("weights/fiber-itc", None)?;
//! let (backbone, _report) = checkpoint.backbone::<NdArray>(&device)?;
//! let size = checkpoint.config.swin.image_size;
//! let pixels = Tensor::<NdArray, 4>::zeros([1, 3, size, size], &device);
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[0, 10, 2]], &device);
//! let mask = Tensor::<NdArray, 2, Int>::ones([1, 3], &device);
//! let fused = backbone.forward_fused(pixels, ids, mask); // text and image states, fused
//! # Ok(()) }
//! ```

pub mod backbone;
pub mod config;
pub mod detection;
pub mod error;
pub mod image_to_text;
pub mod text_to_image;
pub mod weights;

pub use backbone::{BackboneOutput, FiberBackbone, ImageState, TextState};
pub use config::{FiberConfig, FusedPair, FusionVersion};
pub use detection::{DetectionBackbone, DetectionFeatures};
pub use error::FusionError;
pub use image_to_text::ImageToTextAttention;
pub use text_to_image::TextToImageAttention;
pub use weights::{infer_config, FiberCheckpoint};
