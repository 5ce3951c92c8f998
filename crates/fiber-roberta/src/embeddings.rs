//! RoBERTa embeddings: word + position + token type, LayerNorm, dropout (docs/model.md §1.2).

use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::prelude::*;
use fiber_core::init::{embedding_normal, layer_norm};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_embedding, visit_layer_norm, WeightVisitor};

use crate::config::RobertaConfig;

/// Embedding tables; keys mirror `embeddings.*` of HuggingFace checkpoints.
#[derive(Module, Debug)]
pub struct RobertaEmbeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub word_embeddings: Embedding<B>,
    /// `[max_positions, hidden]`; row `pad_token_id` serves padding.
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab, hidden]`.
    pub token_type_embeddings: Embedding<B>,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    /// Dropout after the LayerNorm (training only).
    pub dropout: Dropout,
    /// Id of `<pad>`, the padding index of the position table.
    pub padding_idx: usize,
}

impl<B: Backend> RobertaEmbeddings<B> {
    /// Fresh tables initialised as HuggingFace does (N(0, init²), padding rows zero).
    pub fn new(config: &RobertaConfig, device: &B::Device) -> Self {
        let std = config.initializer_range;
        let h = config.hidden_size;
        let pad = Some(config.pad_token_id);
        Self {
            word_embeddings: embedding_normal(config.vocab_size, h, std, pad, device),
            position_embeddings: embedding_normal(
                config.max_position_embeddings,
                h,
                std,
                pad,
                device,
            ),
            token_type_embeddings: embedding_normal(config.type_vocab_size, h, std, None, device),
            layer_norm: layer_norm(h, config.layer_norm_eps, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            padding_idx: config.pad_token_id,
        }
    }

    /// RoBERTa position ids from token ids `[batch, len]`: padding tokens get `padding_idx`,
    /// the others count up from `padding_idx + 1` → `[batch, len]`.
    pub fn position_ids(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
        let not_pad = input_ids.not_equal_elem(self.padding_idx as i64).int();
        (not_pad.clone().cumsum(1) * not_pad).add_scalar(self.padding_idx as i64)
    }

    /// Token ids `[batch, len]` (token types all 0 when `None`) → embeddings `[batch, len, hidden]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        let positions = self.position_ids(input_ids.clone());
        let token_types = token_type_ids.unwrap_or_else(|| input_ids.zeros_like());
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_types)
            + self.position_embeddings.forward(positions);
        self.dropout.forward(self.layer_norm.forward(x))
    }

    /// Walks the parameters under `{key}.word_embeddings`, … `{key}.LayerNorm`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_embedding(
            v,
            &format!("{key}.word_embeddings"),
            &mut self.word_embeddings,
        );
        visit_embedding(
            v,
            &format!("{key}.position_embeddings"),
            &mut self.position_embeddings,
        );
        visit_embedding(
            v,
            &format!("{key}.token_type_embeddings"),
            &mut self.token_type_embeddings,
        );
        visit_layer_norm(v, &format!("{key}.LayerNorm"), &mut self.layer_norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn position_ids_skip_padding_and_start_after_the_padding_index() {
        let device = Default::default();
        let config = RobertaConfig::new(20, 8, 1, 2, 16);
        let embeddings = RobertaEmbeddings::<B>::new(&config, &device);
        let ids = Tensor::<B, 2, Int>::from_ints([[0, 5, 6, 2], [0, 7, 2, 1]], &device);
        let positions: Vec<i64> = embeddings
            .position_ids(ids)
            .into_data()
            .convert::<i64>()
            .into_vec()
            .unwrap();
        assert_eq!(positions, vec![2, 3, 4, 5, 2, 3, 4, 1]);
    }
}
