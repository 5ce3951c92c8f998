//! Patch merging between stages (`downsample.*`, docs/model.md §1.1).

use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_trunc_normal};
use fiber_core::kernels::{gather_rows, linear};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, WeightVisitor};

/// Concatenates each 2×2 neighbourhood in the order (0,0), (1,0), (0,1), (1,1) [row, col],
/// normalises and halves the width: `C → 2C`, resolution `(h, w) → (⌈h/2⌉, ⌈w/2⌉)`.
#[derive(Module, Debug)]
pub struct PatchMerging<B: Backend> {
    /// LayerNorm over 4C (eps 1e-5).
    pub norm: LayerNorm<B>,
    /// `Linear(4C → 2C)` without bias.
    pub reduction: Linear<B>,
}

impl<B: Backend> PatchMerging<B> {
    /// Fresh merging for input width `dim`.
    pub fn new(dim: usize, device: &B::Device) -> Self {
        Self {
            norm: layer_norm(4 * dim, 1e-5, device),
            reduction: linear_trunc_normal(4 * dim, 2 * dim, false, 0.02, device),
        }
    }

    /// Tokens `[batch, h·w, C]` on grid `(h, w)` (odd sides zero-padded) →
    /// `[batch, ⌈h/2⌉·⌈w/2⌉, 2C]` and the new grid.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        (h, w): (usize, usize),
    ) -> (Tensor<B, 3>, (usize, usize)) {
        let [b, _, c] = x.dims();
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // One gather: merged token (i, j) concatenates the tokens at (2i + row, 2j + col) in
        // the order (row, col) = (0,0), (1,0), (0,1), (1,1), zeros beyond odd sides.
        let mut rows = Vec::with_capacity(b * h2 * w2 * 4);
        for batch in 0..b {
            for i in 0..h2 {
                for j in 0..w2 {
                    for (row, col) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (y, x) = (2 * i + row, 2 * j + col);
                        rows.push((y < h && x < w).then_some(batch * h * w + y * w + x));
                    }
                }
            }
        }
        let x = gather_rows(x.reshape([b * h * w, c]), &rows).reshape([b, h2 * w2, 4 * c]);
        (linear(&self.reduction, self.norm.forward(x)), (h2, w2))
    }

    /// Walks the parameters under `{key}.norm`, `{key}.reduction`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_layer_norm(v, &format!("{key}.norm"), &mut self.norm);
        visit_linear(v, &format!("{key}.reduction"), &mut self.reduction);
    }
}
