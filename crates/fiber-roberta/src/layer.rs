//! One post-LN RoBERTa layer, split at the point where FIBER inserts text-to-image
//! cross-attention (docs/model.md §2.4): `a = Dropout(Dense_o(SelfAttn(H)))` is exposed before the
//! residual and LayerNorm, so a fused layer can add `α·CrossAttn(a, image)` to it.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_normal};
use fiber_core::kernels::{add, linear, linear_activation};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, WeightVisitor};
use fiber_core::Activation;

use crate::config::RobertaConfig;
use crate::self_attention::RobertaSelfAttention;

/// A RoBERTa layer; keys mirror `encoder.layer.{i}.*` of HuggingFace checkpoints.
#[derive(Module, Debug)]
pub struct RobertaLayer<B: Backend> {
    /// `attention.self`.
    pub self_attention: RobertaSelfAttention<B>,
    /// `attention.output.dense`: `Linear(hidden → hidden)`.
    pub attention_dense: Linear<B>,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm<B>,
    /// `intermediate.dense`: `Linear(hidden → intermediate)`.
    pub intermediate: Linear<B>,
    /// `output.dense`: `Linear(intermediate → hidden)`.
    pub output_dense: Linear<B>,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm<B>,
    /// Dropout after each dense output (training only).
    pub dropout: Dropout,
    /// Feed-forward activation.
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> RobertaLayer<B> {
    /// A fresh layer initialised as HuggingFace does.
    pub fn new(config: &RobertaConfig, device: &B::Device) -> Self {
        let (h, std, eps) = (
            config.hidden_size,
            config.initializer_range,
            config.layer_norm_eps,
        );
        Self {
            self_attention: RobertaSelfAttention::new(
                h,
                h,
                config.num_attention_heads,
                config.attention_probs_dropout_prob,
                std,
                device,
            ),
            attention_dense: linear_normal(h, h, true, std, device),
            attention_norm: layer_norm(h, eps, device),
            intermediate: linear_normal(h, config.intermediate_size, true, std, device),
            output_dense: linear_normal(config.intermediate_size, h, true, std, device),
            output_norm: layer_norm(h, eps, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            activation: config.hidden_act,
        }
    }

    /// The self-attention sub-layer output before residual and LayerNorm:
    /// `Dropout(Dense_o(SelfAttn(hidden)))`, `[batch, len, hidden]` → `[batch, len, hidden]`.
    pub fn self_attention_output(
        &self,
        hidden: Tensor<B, 3>,
        mask: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let context = self.self_attention.forward(hidden.clone(), hidden, mask);
        self.dropout.forward(linear(&self.attention_dense, context))
    }

    /// Residual and LayerNorm of the attention sub-layer: `LN(attention_output + hidden)`.
    pub fn attention_residual(
        &self,
        attention_output: Tensor<B, 3>,
        hidden: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        self.attention_norm.forward(add(attention_output, hidden))
    }

    /// Feed-forward sub-layer with residual: `LN(W₂·act(W₁·h) + h)`; with `final_norm = false`
    /// the LayerNorm is skipped (FIBER's last fused text layer, a quirk of docs/model.md §2.2).
    pub fn feed_forward(&self, hidden: Tensor<B, 3>, final_norm: bool) -> Tensor<B, 3> {
        let inner = linear_activation(&self.intermediate, hidden.clone(), Some(self.activation));
        let out = add(
            self.dropout.forward(linear(&self.output_dense, inner)),
            hidden,
        );
        if final_norm {
            self.output_norm.forward(out)
        } else {
            out
        }
    }

    /// The whole layer: `[batch, len, hidden]` with an additive mask → `[batch, len, hidden]`.
    pub fn forward(&self, hidden: Tensor<B, 3>, mask: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let a = self.self_attention_output(hidden.clone(), mask);
        self.feed_forward(self.attention_residual(a, hidden), true)
    }

    /// Walks the parameters under `{key}.attention.self.*`, … `{key}.output.LayerNorm`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        self.self_attention
            .visit_weights(v, &format!("{key}.attention.self"));
        visit_linear(
            v,
            &format!("{key}.attention.output.dense"),
            &mut self.attention_dense,
        );
        visit_layer_norm(
            v,
            &format!("{key}.attention.output.LayerNorm"),
            &mut self.attention_norm,
        );
        visit_linear(
            v,
            &format!("{key}.intermediate.dense"),
            &mut self.intermediate,
        );
        visit_linear(v, &format!("{key}.output.dense"), &mut self.output_dense);
        visit_layer_norm(v, &format!("{key}.output.LayerNorm"), &mut self.output_norm);
    }
}
