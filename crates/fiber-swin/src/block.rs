//! One Swin block: (shifted) window attention and MLP, each with a pre-norm residual.
//!
//! The block is split where FIBER inserts its image-to-text cross-attention (docs/model.md §2.3):
//! [`SwinBlock::attention_output`] returns the window self-attention output `S` in token order
//! (windows reversed, shift undone, padding cropped), [`SwinBlock::finish`] adds the residuals
//! and the MLP. A fused block computes `S + α·CrossAttn(S, text)` between the two calls;
//! [`SwinBlock::forward`] is the plain block.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_trunc_normal};
use fiber_core::kernels::{add, gather_rows, linear, linear_activation};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, WeightVisitor};
use fiber_core::Activation;

use crate::config::SwinConfig;
use crate::drop_path::DropPath;
use crate::padding::round_up;
use crate::window::{shifted_window_mask, shifted_window_rows, window_token_rows};
use crate::window_attention::WindowAttention;

/// A Swin block; keys mirror the original `norm1`, `attn`, `norm2`, `mlp.fc1`, `mlp.fc2`.
#[derive(Module, Debug)]
pub struct SwinBlock<B: Backend> {
    /// LayerNorm before attention.
    pub norm1: LayerNorm<B>,
    /// Window attention.
    pub attn: WindowAttention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// `mlp.fc1`: `Linear(C → ratio·C)`.
    pub fc1: Linear<B>,
    /// `mlp.fc2`: `Linear(ratio·C → C)`.
    pub fc2: Linear<B>,
    /// Dropout after attention and MLP outputs (training only).
    pub dropout: Dropout,
    /// Stochastic depth of both residual branches.
    pub drop_path: DropPath,
    /// Configured window side.
    pub window_size: usize,
    /// Configured cyclic shift (0 for even blocks, window/2 for odd ones).
    pub shift_size: usize,
    /// MLP activation.
    #[module(skip)]
    pub activation: Activation,
    /// Whether the window shrinks to grids no larger than it (`SwinConfig::clamp_window`).
    pub clamp_window: bool,
}

impl<B: Backend> SwinBlock<B> {
    /// Block `index` of stage `stage`, with stochastic-depth rate `drop_path`.
    pub fn new(
        config: &SwinConfig,
        stage: usize,
        index: usize,
        drop_path: f64,
        device: &B::Device,
    ) -> Self {
        let dim = config.stage_dim(stage);
        let hidden = (dim as f64 * config.mlp_ratio) as usize;
        let eps = config.layer_norm_eps;
        Self {
            norm1: layer_norm(dim, eps, device),
            attn: WindowAttention::new(
                dim,
                config.num_heads[stage],
                config.stage_window(stage),
                config.qkv_bias,
                config.attention_probs_dropout_prob,
                device,
            ),
            norm2: layer_norm(dim, eps, device),
            fc1: linear_trunc_normal(dim, hidden, true, 0.02, device),
            fc2: linear_trunc_normal(hidden, dim, true, 0.02, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            drop_path: DropPath { prob: drop_path },
            window_size: config.window_size,
            shift_size: if index % 2 == 1 {
                config.window_size / 2
            } else {
                0
            },
            activation: config.hidden_act,
            clamp_window: config.clamp_window,
        }
    }

    /// Window side and shift used on a `(h, w)` grid: with `clamp_window`, when the grid's
    /// smaller side is at most the window, the window shrinks to it and the shift is turned off.
    pub fn effective_window(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let side = h.min(w);
        if self.clamp_window && side <= self.window_size {
            (side, 0)
        } else {
            (self.window_size, self.shift_size)
        }
    }

    /// Window self-attention output `S` of `LN1(x)`: tokens `[batch, h·w, C]` on grid `(h, w)`
    /// → `[batch, h·w, C]` (before any residual). The grid is zero-padded at the bottom/right
    /// to a multiple of the window; padded tokens take part in attention and are cropped after.
    pub fn attention_output(&self, x: Tensor<B, 3>, (h, w): (usize, usize)) -> Tensor<B, 3> {
        let [b, _, c] = x.dims();
        let (ws, shift) = self.effective_window((h, w));
        assert!(
            ws <= self.attn.table_window,
            "a {h}×{w} grid needs {ws}×{ws} windows but this block's relative-position table was built for \
             {t}×{t}; configure image_size for the resolution you run at",
            t = self.attn.table_window
        );
        let (hp, wp) = (round_up(h, ws), round_up(w, ws));
        let windows = (hp / ws) * (wp / ws);
        // Pad, shift and partition in one gather of token rows, and back in another.
        let tokens = self.norm1.forward(x).reshape([b * h * w, c]);
        let partitioned = gather_rows(tokens, &shifted_window_rows(b, (h, w), ws, shift))
            .reshape([b * windows, ws * ws, c]);
        let mask =
            (shift > 0).then(|| shifted_window_mask::<B>(hp, wp, ws, shift, &partitioned.device()));
        let attended = self
            .attn
            .forward(partitioned, ws, mask)
            .reshape([b * windows * ws * ws, c]);
        let grid = gather_rows(attended, &window_token_rows(b, (h, w), ws, shift));
        self.dropout.forward(grid.reshape([b, h * w, c]))
    }

    /// Residuals and MLP: `x₁ = x + DropPath(attention)`, `x₁ + DropPath(MLP(LN2(x₁)))`.
    pub fn finish(&self, x: Tensor<B, 3>, attention: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = add(x, self.drop_path.forward(attention));
        let hidden = linear_activation(
            &self.fc1,
            self.norm2.forward(x.clone()),
            Some(self.activation),
        );
        let mlp = linear(&self.fc2, hidden);
        add(x, self.drop_path.forward(self.dropout.forward(mlp)))
    }

    /// The plain block: `[batch, h·w, C]` → `[batch, h·w, C]`.
    pub fn forward(&self, x: Tensor<B, 3>, grid: (usize, usize)) -> Tensor<B, 3> {
        let attention = self.attention_output(x.clone(), grid);
        self.finish(x, attention)
    }

    /// Walks the parameters under `{key}.norm1`, `{key}.attn.*`, `{key}.norm2`, `{key}.mlp.*`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_layer_norm(v, &format!("{key}.norm1"), &mut self.norm1);
        self.attn.visit_weights(v, &format!("{key}.attn"));
        visit_layer_norm(v, &format!("{key}.norm2"), &mut self.norm2);
        visit_linear(v, &format!("{key}.mlp.fc1"), &mut self.fc1);
        visit_linear(v, &format!("{key}.mlp.fc2"), &mut self.fc2);
    }
}
