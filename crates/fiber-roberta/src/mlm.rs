//! RoBERTa with its masked-language-modelling head (HuggingFace `RobertaForMaskedLM`).

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_normal};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{join_key, visit_layer_norm, visit_linear, Layout, WeightVisitor};
use fiber_core::Activation;

use crate::config::RobertaConfig;
use crate::model::RobertaModel;

/// `lm_head`: dense → GELU → LayerNorm → decoder + bias; keys `lm_head.dense`,
/// `lm_head.layer_norm`, `lm_head.decoder.weight` and `lm_head.bias`.
#[derive(Module, Debug)]
pub struct RobertaLmHead<B: Backend> {
    /// `Linear(hidden → hidden)`.
    pub dense: Linear<B>,
    /// LayerNorm after the activation.
    pub layer_norm: LayerNorm<B>,
    /// `Linear(hidden → vocab)` without bias (the bias is [`Self::bias`]).
    pub decoder: Linear<B>,
    /// Output bias `[vocab]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> RobertaLmHead<B> {
    /// A fresh head initialised as HuggingFace does.
    pub fn new(config: &RobertaConfig, device: &B::Device) -> Self {
        Self::with_sizes(
            config.hidden_size,
            config.vocab_size,
            config.layer_norm_eps,
            config.initializer_range,
            device,
        )
    }

    /// A fresh head for width `hidden` and `vocab` outputs, LayerNorm epsilon `eps`, weights
    /// from N(0, std²), zero biases (also FIBER's `mlm_score`, with eps 1e-12).
    pub fn with_sizes(hidden: usize, vocab: usize, eps: f64, std: f64, device: &B::Device) -> Self {
        Self {
            dense: linear_normal(hidden, hidden, true, std, device),
            layer_norm: layer_norm(hidden, eps, device),
            decoder: linear_normal(hidden, vocab, false, std, device),
            bias: Param::from_tensor(Tensor::zeros([vocab], device)),
        }
    }

    /// `[batch, len, hidden]` → logits `[batch, len, vocab]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self
            .layer_norm
            .forward(Activation::Gelu.forward(self.dense.forward(hidden)));
        self.decoder.forward(x) + self.bias.val().unsqueeze::<3>()
    }

    /// Walks the parameters under `{key}.dense`, `{key}.layer_norm`, `{key}.decoder`, `{key}.bias`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_linear(v, &format!("{key}.dense"), &mut self.dense);
        visit_layer_norm(v, &format!("{key}.layer_norm"), &mut self.layer_norm);
        visit_linear(v, &format!("{key}.decoder"), &mut self.decoder);
        v.visit(&format!("{key}.bias"), &mut self.bias, Layout::Same);
    }
}

/// RoBERTa without pooler plus `lm_head`; keys `roberta.*` and `lm_head.*`.
#[derive(Module, Debug)]
pub struct RobertaForMaskedLm<B: Backend> {
    /// The encoder (no pooler).
    pub roberta: RobertaModel<B>,
    /// The prediction head.
    pub lm_head: RobertaLmHead<B>,
}

impl<B: Backend> RobertaForMaskedLm<B> {
    /// A freshly initialised model.
    pub fn new(config: &RobertaConfig, device: &B::Device) -> Self {
        Self {
            roberta: RobertaModel::new(config, false, device),
            lm_head: RobertaLmHead::new(config, device),
        }
    }

    /// Token ids and padding mask `[batch, len]` → (`last_hidden_state` `[batch, len, hidden]`,
    /// logits `[batch, len, vocab]`).
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let hidden = self
            .roberta
            .forward(input_ids, attention_mask, false)
            .last_hidden_state;
        let logits = self.lm_head.forward(hidden.clone());
        (hidden, logits)
    }

    /// Walks every parameter: the encoder under `{prefix}roberta`, the head under `{prefix}lm_head`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        self.roberta.visit_weights(v, &join_key(prefix, "roberta"));
        self.lm_head.visit_weights(v, &join_key(prefix, "lm_head"));
    }
}
