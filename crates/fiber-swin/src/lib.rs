//! Swin Transformer (v1) image backbone for FIBER (docs/model.md §1.1, §2.1–§2.3), generic over the Burn
//! backend.
//!
//! Module fields mirror the original Microsoft/timm checkpoint keys (`patch_embed`,
//! `layers.{s}.blocks.{b}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
//! `layers.{s}.downsample`, `norm`), which FIBER's own checkpoints use under `vit_model.`;
//! [`weights`] maps HuggingFace `SwinModel` files onto the same modules. Blocks can run one at a
//! time and expose their attention output before the residual, so the fusion backbone can
//! interleave them with text layers and add its cross-attention.
//!
//! Main types: [`SwinConfig`] and [`SwinModel`] (`from_pretrained` reads a HuggingFace
//! folder: `config.json` + `model.safetensors`), whose forward pass gives a [`SwinOutput`].
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use fiber_swin::{SwinConfig, SwinModel};
//!
//! # fn main() -> Result<(), fiber_swin::SwinError> {
//! let device = Default::default();
//! // A HuggingFace folder instead: SwinModel::<NdArray>::from_pretrained("swin-base", &device)?
//! let config = SwinConfig::from_hf_json_str(
//!     r#"{"image_size": 32, "embed_dim": 8, "depths": [2, 2], "num_heads": [2, 4], "window_size": 4}"#,
//! )?;
//! let model = SwinModel::<NdArray>::new(&config, &device);
//! let output = model.forward(Tensor::zeros([1, 3, 32, 32], &device));
//! assert_eq!(output.pooler_output.dims(), [1, 16]); // [batch, channels of the last stage]
//! # Ok(()) }
//! ```

pub mod block;
pub mod config;
pub mod drop_path;
pub mod embeddings;
pub mod error;
pub mod merging;
pub mod model;
pub mod padding;
pub mod stage;
pub mod weights;
pub mod window;
pub mod window_attention;

pub use block::SwinBlock;
pub use config::SwinConfig;
pub use error::SwinError;
pub use model::{FeatureMap, SwinModel, SwinOutput};
pub use stage::SwinStage;
pub use window_attention::WindowAttention;
