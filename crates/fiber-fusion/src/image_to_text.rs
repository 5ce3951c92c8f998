//! docs/model.md §2.3: image-to-text cross-attention inside a fused Swin block. The image tokens query
//! the text; the result is gated by `alpha_i2t` (initialised to 0) and added to the block's
//! window self-attention output `S` before the block's residual.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_trunc_normal};
use fiber_core::kernels::{linear, multi_head_attention};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, Layout, WeightVisitor};

use crate::config::FusionVersion;

/// The i2t modules of one fused Swin block; keys mirror the original `attn.qkv_text_i2t`,
/// `attn.qkv_i2t`, `attn.proj_i2t`, `attn.norm_i2t_i` and `attn.alpha_i2t`.
#[derive(Module, Debug)]
pub struct ImageToTextAttention<B: Backend> {
    /// `Linear(text_width → 2C)`: keys (first C outputs) and values (next C) from the text.
    pub qkv_text_i2t: Linear<B>,
    /// `Linear(C → C)`: queries from the (normalised) self-attention output.
    pub qkv_i2t: Linear<B>,
    /// `Linear(C → C)`: output projection.
    pub proj_i2t: Linear<B>,
    /// LayerNorm on the query input (v1); absent in the detector's v2.
    pub norm_i2t_i: Option<LayerNorm<B>>,
    /// The gate `[1]`, initialised to 0.
    pub alpha_i2t: Param<Tensor<B, 1>>,
    /// Heads (the Swin block's).
    pub num_heads: usize,
}

impl<B: Backend> ImageToTextAttention<B> {
    /// New modules for image width `dim` and text width `text_dim`, initialised as timm does
    /// (truncated normal of standard deviation `std`, 0.02 in FIBER; zero biases; LayerNorm
    /// (1, 0)) with the gate at `gate` (0 in FIBER; docs/model.md §6.3).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        text_dim: usize,
        num_heads: usize,
        version: FusionVersion,
        eps: f64,
        std: f64,
        gate: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            qkv_text_i2t: linear_trunc_normal(text_dim, 2 * dim, true, std, device),
            qkv_i2t: linear_trunc_normal(dim, dim, true, std, device),
            proj_i2t: linear_trunc_normal(dim, dim, true, std, device),
            norm_i2t_i: (version == FusionVersion::V1).then(|| layer_norm(dim, eps, device)),
            alpha_i2t: Param::from_tensor(Tensor::full([1], gate, device)),
            num_heads,
        }
    }

    /// The modules with the output projection `proj_i2t` at zero (weight and bias).
    pub fn with_zero_output(mut self) -> Self {
        self.proj_i2t = fiber_core::init::zeroed(self.proj_i2t);
        self
    }

    /// `S + α·Y`, with `Y = proj(softmax(Q·Kᵀ/√d + text_mask)·V)`, `Q` from `S` `[batch, n, C]`,
    /// `K, V` from `text` `[batch, l, text_width]`; `text_mask` is the additive padding mask
    /// `[batch, 1, 1, l]` → `[batch, n, C]`.
    pub fn forward(
        &self,
        attention_output: Tensor<B, 3>,
        text: Tensor<B, 3>,
        text_mask: Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [batch, len, _] = text.dims();
        let dim = attention_output.dims()[2];
        let query_input = match &self.norm_i2t_i {
            Some(norm) => norm.forward(attention_output.clone()),
            None => attention_output.clone(),
        };
        let q = linear(&self.qkv_i2t, query_input);
        let kv = linear(&self.qkv_text_i2t, text);
        let k = kv.clone().slice([0..batch, 0..len, 0..dim]);
        let v = kv.slice([0..batch, 0..len, dim..2 * dim]);
        let scale = ((dim / self.num_heads) as f64).powf(-0.5);
        let attended = multi_head_attention(q, k, v, self.num_heads, scale, &[text_mask], None);
        let y = linear(&self.proj_i2t, attended);
        attention_output + y * self.alpha_i2t.val().unsqueeze::<3>()
    }

    /// Walks the parameters under `{key}.qkv_text_i2t`, … `{key}.alpha_i2t` (`key` = `….attn`).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_linear(v, &format!("{key}.qkv_text_i2t"), &mut self.qkv_text_i2t);
        visit_linear(v, &format!("{key}.qkv_i2t"), &mut self.qkv_i2t);
        visit_linear(v, &format!("{key}.proj_i2t"), &mut self.proj_i2t);
        if let Some(norm) = &mut self.norm_i2t_i {
            visit_layer_norm(v, &format!("{key}.norm_i2t_i"), norm);
        }
        v.visit(
            &format!("{key}.alpha_i2t"),
            &mut self.alpha_i2t,
            Layout::Same,
        );
    }
}
