//! DyHead's task-aware activation, DyReLU-B with two pieces (docs/model.md §5.1):
//! global average pooling → `Linear(C → C/r)` → ReLU → `Linear(C/r → 4C)` → hard sigmoid gives
//! `(a1, b1, a2, b2)` per channel; `a1 ← 2(a1 − ½) + 1`, `a2 ← 2(a2 − ½)`, `b ← b − ½`;
//! the output is `max(x·a1 + b1, x·a2 + b2)`.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use fiber_core::activation::hard_sigmoid;
use fiber_core::weights::{join_key, visit_linear, WeightVisitor};

/// DyReLU; keys `{key}.fc.0` (squeeze) and `{key}.fc.2` (excitation), as the original's
/// `nn.Sequential`.
#[derive(Module, Debug)]
pub struct DyRelu<B: Backend> {
    /// `Linear(C → C/r)`.
    pub squeeze: Linear<B>,
    /// `Linear(C/r → 4C)`.
    pub excite: Linear<B>,
}

impl<B: Backend> DyRelu<B> {
    /// Fresh layers for `channels` with reduction `reduction` (PyTorch's default `Linear`
    /// initialisation, as the original leaves them).
    pub fn new(channels: usize, reduction: usize, device: &B::Device) -> Self {
        let squeeze = channels / reduction;
        Self {
            squeeze: torch_linear(channels, squeeze, device),
            excite: torch_linear(squeeze, 4 * channels, device),
        }
    }

    /// `[batch, C, H, W]` → `[batch, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, _, _] = x.dims();
        let pooled = x.clone().mean_dim(3).mean_dim(2).reshape([b, c]);
        let y = hard_sigmoid(self.excite.forward(relu(self.squeeze.forward(pooled))));
        let part = |i: usize| {
            y.clone()
                .slice([0..b, i * c..(i + 1) * c])
                .reshape([b, c, 1, 1])
        };
        let a1 = part(0).sub_scalar(0.5).mul_scalar(2.0).add_scalar(1.0);
        let b1 = part(1).sub_scalar(0.5);
        let a2 = part(2).sub_scalar(0.5).mul_scalar(2.0);
        let b2 = part(3).sub_scalar(0.5);
        (x.clone() * a1 + b1).max_pair(x * a2 + b2)
    }

    /// Walks `{key}.fc.0.*` and `{key}.fc.2.*`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_linear(v, &join_key(key, "fc.0"), &mut self.squeeze);
        visit_linear(v, &join_key(key, "fc.2"), &mut self.excite);
    }
}

/// `Linear(d_in → d_out)` initialised as PyTorch's `nn.Linear`: weight and bias uniform in
/// ±1/√d_in (Burn's default Kaiming-uniform with gain 1/√3).
pub(crate) fn torch_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).init(device)
}
