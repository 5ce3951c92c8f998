//! Swin Transformer (v1) image backbone for FIBER (docs/model.md §1.1, §2.1–§2.3), generic over the Burn
//! backend.
//!
//! Module fields mirror the original Microsoft/timm checkpoint keys (`patch_embed`,
//! `layers.{s}.blocks.{b}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
//! `layers.{s}.downsample`, `norm`), which FIBER's own checkpoints use under `vit_model.`;
//! [`weights`] maps HuggingFace `SwinModel` files onto the same modules. Blocks can run one at a
//! time and expose their attention output before the residual, so the fusion backbone can
//! interleave them with text layers and add its cross-attention.

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
