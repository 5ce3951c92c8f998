//! FIBER's fusion in the backbone (docs/model.md §2): Swin and RoBERTa with gated co-attention in their
//! last blocks and layers, run in lock-step pairs, as a fusion encoder, a dual encoder and a
//! captioning decoder on one set of weights.

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
