//! RoBERTa text backbone for FIBER (docs/model.md §1.2, §2.4), generic over the Burn backend.
//!
//! Module and field names mirror the HuggingFace checkpoint keys (`embeddings`,
//! `encoder.layer.{i}.attention.self.query`, …) so that [`weights`] needs no remap table
//! beyond stripping the optional `roberta.` prefix. The layer exposes the self-attention output
//! before its residual and LayerNorm, and the encoder can run any range of layers: the fusion
//! backbone interleaves layers 6–11 with Swin blocks and inserts its cross-attention there.
//!
//! Main types: [`RobertaConfig`], [`RobertaModel`] and [`RobertaForMaskedLm`]
//! (`from_pretrained` reads a HuggingFace folder: `config.json` + `model.safetensors`),
//! [`RobertaTokenizer`] (a HuggingFace `tokenizer.json`, or `vocab.json` + `merges.txt`) and
//! the MLM masker.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use fiber_roberta::{RobertaConfig, RobertaModel};
//!
//! # fn main() -> Result<(), fiber_roberta::RobertaError> {
//! let device = Default::default();
//! // A HuggingFace folder instead: RobertaModel::<NdArray>::from_pretrained("roberta-base", &device)?
//! let config = RobertaConfig::from_hf_json_str(
//!     r#"{"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 2,
//!         "num_attention_heads": 2, "intermediate_size": 32}"#,
//! )?;
//! let model = RobertaModel::<NdArray>::new(&config, true, &device);
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[0, 11, 12, 2]], &device); // <s> … </s>
//! let mask = Tensor::<NdArray, 2, Int>::ones([1, 4], &device);
//! let output = model.forward(ids, mask, false);
//! assert_eq!(output.last_hidden_state.dims(), [1, 4, 16]);
//! # Ok(()) }
//! ```

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
