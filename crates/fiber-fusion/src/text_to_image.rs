//! docs/model.md §2.4: text-to-image cross-attention inside a fused RoBERTa layer. The self-attention
//! output `a` (before residual and LayerNorm) queries the image tokens; the result is gated by
//! `alpha_t2i` (initialised to 0) and added to `a`, then the layer's own residual and LayerNorm
//! follow.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use fiber_core::init::linear_normal;
use fiber_core::kernels::linear;
use fiber_core::weights::{visit_linear, Layout, WeightVisitor};
use fiber_roberta::{RobertaConfig, RobertaSelfAttention};

/// The t2i modules of one fused text layer; keys mirror the original
/// `crossattention_t2i.self.{query,key,value}`, `crossattention_t2i.output.dense` and
/// `alpha_t2i` under `encoder.layer.{i}`.
#[derive(Module, Debug)]
pub struct TextToImageAttention<B: Backend> {
    /// Queries from the text (`hidden → hidden`), keys and values from the image (`C → hidden`).
    pub attention: RobertaSelfAttention<B>,
    /// `Linear(hidden → hidden)` after the attention.
    pub output_dense: Linear<B>,
    /// Dropout after the output projection (training only).
    pub dropout: Dropout,
    /// The gate `[1]`, initialised to 0.
    pub alpha_t2i: Param<Tensor<B, 1>>,
}

impl<B: Backend> TextToImageAttention<B> {
    /// New modules attending to image tokens of width `image_dim`, initialised as HuggingFace
    /// does (N(0, `std`), 0.02 in FIBER; zero biases) with the gate at `gate` (0 in FIBER;
    /// docs/model.md §6.3).
    pub fn new(
        config: &RobertaConfig,
        image_dim: usize,
        std: f64,
        gate: f64,
        device: &B::Device,
    ) -> Self {
        let h = config.hidden_size;
        Self {
            attention: RobertaSelfAttention::new(
                h,
                image_dim,
                config.num_attention_heads,
                config.attention_probs_dropout_prob,
                std,
                device,
            ),
            output_dense: linear_normal(h, h, true, std, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            alpha_t2i: Param::from_tensor(Tensor::full([1], gate, device)),
        }
    }

    /// The modules with the output projection `output.dense` at zero (weight and bias).
    pub fn with_zero_output(mut self) -> Self {
        self.output_dense = fiber_core::init::zeroed(self.output_dense);
        self
    }

    /// `a + α·Dropout(Dense(CrossAttn(a, image)))`: `a` `[batch, l, hidden]`, image tokens
    /// `[batch, n, C]` (no mask) → `[batch, l, hidden]`.
    pub fn forward(&self, attention_output: Tensor<B, 3>, image: Tensor<B, 3>) -> Tensor<B, 3> {
        let context = self
            .attention
            .forward(attention_output.clone(), image, None);
        let c = self.dropout.forward(linear(&self.output_dense, context));
        attention_output + c * self.alpha_t2i.val().unsqueeze::<3>()
    }

    /// Walks the parameters under `{key}.crossattention_t2i.*` and `{key}.alpha_t2i`
    /// (`key` = `….encoder.layer.{i}`).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        self.attention
            .visit_weights(v, &format!("{key}.crossattention_t2i.self"));
        visit_linear(
            v,
            &format!("{key}.crossattention_t2i.output.dense"),
            &mut self.output_dense,
        );
        v.visit(
            &format!("{key}.alpha_t2i"),
            &mut self.alpha_t2i,
            Layout::Same,
        );
    }
}
