//! Window multi-head self-attention with relative position bias (`attn.*`, docs/model.md §1.1).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use fiber_core::init::linear_trunc_normal;
use fiber_core::kernels::{linear, multi_head_attention};
use fiber_core::weights::{visit_linear, Layout, WeightVisitor};

use crate::window::relative_position_index;

/// Attention inside windows; keys mirror the original `attn.{qkv,proj,relative_position_bias_table}`.
#[derive(Module, Debug)]
pub struct WindowAttention<B: Backend> {
    /// Fused `Linear(C → 3C)`, rows of the output: query, key, value.
    pub qkv: Linear<B>,
    /// Output projection `Linear(C → C)`.
    pub proj: Linear<B>,
    /// `[(2W−1)², heads]`: one learned bias per relative offset and head.
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    /// Dropout on attention probabilities (training only).
    pub attn_drop: Dropout,
    /// Heads.
    pub num_heads: usize,
    /// Window side `W` the table is built for.
    pub table_window: usize,
}

impl<B: Backend> WindowAttention<B> {
    /// Fresh attention for width `dim`, initialised as timm does (truncated normal 0.02).
    pub fn new(
        dim: usize,
        num_heads: usize,
        table_window: usize,
        qkv_bias: bool,
        attn_drop: f64,
        device: &B::Device,
    ) -> Self {
        let side = 2 * table_window - 1;
        let table = Tensor::<B, 2>::random(
            [side * side, num_heads],
            Distribution::Normal(0.0, 0.02),
            device,
        )
        .clamp(-0.04, 0.04);
        Self {
            qkv: linear_trunc_normal(dim, 3 * dim, qkv_bias, 0.02, device),
            proj: linear_trunc_normal(dim, dim, true, 0.02, device),
            relative_position_bias_table: Param::from_tensor(table.detach()),
            attn_drop: DropoutConfig::new(attn_drop).init(),
            num_heads,
            table_window,
        }
    }

    /// Relative position bias for windows of side `ws ≤ W`: `[1, heads, ws², ws²]`.
    pub fn relative_position_bias(&self, ws: usize) -> Tensor<B, 4> {
        let table = self.relative_position_bias_table.val();
        let device = table.device();
        let index = relative_position_index(ws, self.table_window);
        let n = index.len();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
        let area = ws * ws;
        table
            .select(0, index)
            .reshape([area, area, self.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    /// Self-attention within each window: `windows` `[batch·nw, ws², C]`, optional shift mask
    /// `[nw, ws², ws²]` → `[batch·nw, ws², C]` (after the output projection).
    pub fn forward(
        &self,
        windows: Tensor<B, 3>,
        ws: usize,
        shift_mask: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let [n, len, c] = windows.dims();
        let heads = self.num_heads;
        let qkv = linear(&self.qkv, windows);
        let q = qkv.clone().slice([0..n, 0..len, 0..c]);
        let k = qkv.clone().slice([0..n, 0..len, c..2 * c]);
        let v = qkv.slice([0..n, 0..len, 2 * c..3 * c]);
        let scale = ((c / heads) as f64).powf(-0.5);
        let mut additive = vec![self.relative_position_bias(ws)];
        additive.extend(shift_mask.map(|mask| mask.unsqueeze_dim::<4>(1)));
        let attended =
            multi_head_attention(q, k, v, heads, scale, &additive, Some(&self.attn_drop));
        linear(&self.proj, attended)
    }

    /// Walks the parameters under `{key}.qkv`, `{key}.proj`, `{key}.relative_position_bias_table`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_linear(v, &format!("{key}.qkv"), &mut self.qkv);
        visit_linear(v, &format!("{key}.proj"), &mut self.proj);
        v.visit(
            &format!("{key}.relative_position_bias_table"),
            &mut self.relative_position_bias_table,
            Layout::Same,
        );
    }
}
