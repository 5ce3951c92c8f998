//! Multi-head scaled dot-product attention of RoBERTa (`attention.self`), also used with a
//! different key/value width as FIBER's text-to-image cross-attention (docs/model.md §2.4).

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use fiber_core::init::linear_normal;
use fiber_core::kernels::{linear, multi_head_attention};
use fiber_core::weights::{visit_linear, WeightVisitor};

/// Query/key/value projections and attention; keys mirror `attention.self.{query,key,value}`.
#[derive(Module, Debug)]
pub struct RobertaSelfAttention<B: Backend> {
    /// `Linear(hidden → hidden)` for queries.
    pub query: Linear<B>,
    /// `Linear(kv_dim → hidden)` for keys.
    pub key: Linear<B>,
    /// `Linear(kv_dim → hidden)` for values.
    pub value: Linear<B>,
    /// Dropout on the attention probabilities (training only).
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> RobertaSelfAttention<B> {
    /// New attention with weights from N(0, init_std²): queries from `hidden`-wide states,
    /// keys and values from `kv_dim`-wide states (`kv_dim == hidden` for self-attention).
    pub fn new(
        hidden: usize,
        kv_dim: usize,
        num_heads: usize,
        dropout: f64,
        init_std: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            query: linear_normal(hidden, hidden, true, init_std, device),
            key: linear_normal(kv_dim, hidden, true, init_std, device),
            value: linear_normal(kv_dim, hidden, true, init_std, device),
            dropout: DropoutConfig::new(dropout).init(),
            num_heads,
        }
    }

    /// Attends from `queries` `[batch, lq, hidden]` to `context` `[batch, lk, kv_dim]` with an
    /// additive `mask` broadcastable to `[batch, heads, lq, lk]` → `[batch, lq, hidden]`
    /// (the concatenated heads, before the output projection).
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        context: Tensor<B, 3>,
        mask: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let q = linear(&self.query, queries);
        let k = linear(&self.key, context.clone());
        let v = linear(&self.value, context);
        let head_dim = q.dims()[2] / self.num_heads;
        let masks: Vec<Tensor<B, 4>> = mask.into_iter().collect();
        multi_head_attention(
            q,
            k,
            v,
            self.num_heads,
            1.0 / (head_dim as f64).sqrt(),
            &masks,
            Some(&self.dropout),
        )
    }

    /// Walks the parameters under `{key}.query`, `{key}.key`, `{key}.value`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_linear(v, &format!("{key}.query"), &mut self.query);
        visit_linear(v, &format!("{key}.key"), &mut self.key);
        visit_linear(v, &format!("{key}.value"), &mut self.value);
    }
}
