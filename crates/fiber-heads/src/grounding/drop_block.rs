//! DropBlock (Ghiasi et al., 2018) as GLIP's FPN applies it in training (docs/model.md §5.1):
//! block centres are drawn with probability `γ = p / block²`, each centre zeroes a
//! `block × block` square in every channel, and the kept values are rescaled by
//! `numel / kept`.

use burn::prelude::*;
use burn::tensor::module::max_pool2d;
use burn::tensor::Distribution;

/// DropBlock over `[batch, C, H, W]` maps; the identity when not training or `prob == 0`.
#[derive(Module, Debug, Clone)]
pub struct DropBlock {
    /// Drop probability `p`.
    pub prob: f64,
    /// Side of a dropped square.
    pub block: usize,
}

impl DropBlock {
    /// Applies DropBlock to `x` `[batch, C, H, W]` when gradients are tracked (training).
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.prob == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let [b, _, h, w] = x.dims();
        let gamma = self.prob / (self.block * self.block) as f64;
        let centres =
            Tensor::<B, 4>::random([b, 1, h, w], Distribution::Bernoulli(gamma), &x.device());
        let pad = self.block / 2;
        let mut covered = max_pool2d(
            centres,
            [self.block, self.block],
            [1, 1],
            [pad, pad],
            [1, 1],
            false,
        );
        if self.block % 2 == 0 {
            covered = covered.slice([0..b, 0..1, 0..h, 0..w]);
        }
        let keep = covered.neg().add_scalar(1.0).detach();
        let kept: f32 = keep.clone().sum().into_scalar().elem();
        let scale = (b * h * w) as f64 / (kept as f64).max(1.0);
        x * keep.mul_scalar(scale)
    }
}
