//! LayerNorm as a module whose forward pass runs the fused CPU kernel where it can.

use burn::module::Param;
use burn::prelude::*;

use crate::kernels;

/// Layer normalisation over the last dimension, `y = (x − mean)/√(var + ε)·γ + β`; the fields
/// and checkpoint keys (`weight` = γ, `bias` = β) are those of `burn::nn::LayerNorm` and of
/// PyTorch's `nn.LayerNorm`. Build it with [`crate::init::layer_norm`].
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// γ `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// β `[C]`, absent for a norm without bias.
    pub beta: Option<Param<Tensor<B, 1>>>,
    /// ε added to the variance.
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// `[..., C]` → `[..., C]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::layer_norm(
            x,
            self.gamma.val(),
            self.beta.as_ref().map(|b| b.val()),
            self.epsilon,
        )
    }
}
