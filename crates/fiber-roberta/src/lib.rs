//! RoBERTa text backbone for FIBER (docs/model.md §1.2, §2.4), generic over the Burn backend.
//!
//! Module and field names mirror the HuggingFace checkpoint keys (`embeddings`,
//! `encoder.layer.{i}.attention.self.query`, …) so that [`weights`] needs no remap table
//! beyond stripping the optional `roberta.` prefix. The layer exposes the self-attention output
//! before its residual and LayerNorm, and the encoder can run any range of layers: the fusion
//! backbone interleaves layers 6–11 with Swin blocks and inserts its cross-attention there.

pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod error;
pub mod layer;
pub mod masking;
pub mod mlm;
pub mod model;
pub mod self_attention;
pub mod tokenizer;
pub mod weights;

pub use config::RobertaConfig;
pub use embeddings::RobertaEmbeddings;
pub use encoder::RobertaEncoder;
pub use error::RobertaError;
pub use layer::RobertaLayer;
pub use masking::{MaskedBatch, MlmMasker, IGNORE_INDEX};
pub use mlm::{RobertaForMaskedLm, RobertaLmHead};
pub use model::{RobertaModel, RobertaModelOutput, RobertaPooler};
pub use self_attention::RobertaSelfAttention;
pub use tokenizer::{EncodedBatch, RobertaTokenizer, SpecialTokens};
