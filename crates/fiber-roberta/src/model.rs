//! The RoBERTa encoder with its optional pooler (docs/model.md §1.2).

use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::attention::{causal_mask, padding_mask};
use fiber_core::init::linear_normal;
use fiber_core::weights::{join_key, visit_linear, WeightVisitor};

use crate::config::RobertaConfig;
use crate::embeddings::RobertaEmbeddings;
use crate::encoder::RobertaEncoder;

/// `pooler.dense` followed by tanh, applied to the first token (`<s>`).
#[derive(Module, Debug)]
pub struct RobertaPooler<B: Backend> {
    /// `Linear(hidden → hidden)`.
    pub dense: Linear<B>,
}

impl<B: Backend> RobertaPooler<B> {
    /// `[batch, len, hidden]` → `[batch, hidden]`: `tanh(dense(hidden[:, 0]))`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, _, width] = hidden.dims();
        let first = hidden.slice([0..batch, 0..1]).reshape([batch, width]);
        self.dense.forward(first).tanh()
    }
}

/// What [`RobertaModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct RobertaModelOutput<B: Backend> {
    /// `[batch, len, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`, present when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

/// RoBERTa: embeddings, encoder and (optionally) the pooler; keys mirror HuggingFace
/// `RobertaModel` (`embeddings.*`, `encoder.layer.{i}.*`, `pooler.dense.*`).
#[derive(Module, Debug)]
pub struct RobertaModel<B: Backend> {
    /// Token, position and type embeddings.
    pub embeddings: RobertaEmbeddings<B>,
    /// The layer stack.
    pub encoder: RobertaEncoder<B>,
    /// The pooler; `None` for checkpoints without one (masked-LM models).
    pub pooler: Option<RobertaPooler<B>>,
}

impl<B: Backend> RobertaModel<B> {
    /// A freshly initialised model, with or without pooler.
    pub fn new(config: &RobertaConfig, with_pooler: bool, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Self {
            embeddings: RobertaEmbeddings::new(config, device),
            encoder: RobertaEncoder::new(config, device),
            pooler: with_pooler.then(|| RobertaPooler {
                dense: linear_normal(h, h, true, config.initializer_range, device),
            }),
        }
    }

    /// The additive attention mask for a padding mask `[batch, len]` (1 = token, 0 = pad),
    /// combined with a causal mask when `causal` (left-to-right decoding, captioning) →
    /// `[batch, 1, 1|len, len]`.
    pub fn attention_mask(&self, attention_mask: Tensor<B, 2, Int>, causal: bool) -> Tensor<B, 4> {
        let [_, len] = attention_mask.dims();
        let device = attention_mask.device();
        let mask = padding_mask(attention_mask);
        if causal {
            mask + causal_mask::<B>(len, &device)
        } else {
            mask
        }
    }

    /// Token ids and padding mask `[batch, len]` → hidden states `[batch, len, hidden]` and the
    /// pooled `<s>` state `[batch, hidden]`. With `causal`, token i only attends to tokens ≤ i.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        causal: bool,
    ) -> RobertaModelOutput<B> {
        let mask = self.attention_mask(attention_mask, causal);
        let hidden = self.embeddings.forward(input_ids, None);
        let last_hidden_state = self.encoder.forward(hidden, Some(mask));
        let pooler_output = self
            .pooler
            .as_ref()
            .map(|p| p.forward(last_hidden_state.clone()));
        RobertaModelOutput {
            last_hidden_state,
            pooler_output,
        }
    }

    /// Walks every parameter under `prefix` (empty for HuggingFace `RobertaModel` files).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        self.embeddings
            .visit_weights(v, &join_key(prefix, "embeddings"));
        self.encoder.visit_weights(v, &join_key(prefix, "encoder"));
        if let Some(pooler) = &mut self.pooler {
            visit_linear(v, &join_key(prefix, "pooler.dense"), &mut pooler.dense);
        }
    }
}
