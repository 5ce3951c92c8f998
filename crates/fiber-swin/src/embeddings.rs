//! Patch embedding: strided convolution plus LayerNorm (`patch_embed.*`, docs/model.md §1.1).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use fiber_core::init::layer_norm;
use fiber_core::kernels::affine;
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_conv2d, visit_layer_norm, WeightVisitor};

use crate::config::SwinConfig;
use crate::padding::{pad_end, round_up};

/// Patch embedding; keys mirror the original `patch_embed.{proj,norm}`.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `Conv2d(channels → embed_dim, kernel = stride = patch)`.
    pub proj: Conv2d<B>,
    /// LayerNorm over `embed_dim` (eps 1e-5).
    pub norm: LayerNorm<B>,
    /// Patch side.
    pub patch_size: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// Fresh patch embedding for `config`.
    pub fn new(config: &SwinConfig, device: &B::Device) -> Self {
        let p = config.patch_size;
        Self {
            proj: Conv2dConfig::new([config.num_channels, config.embed_dim], [p, p])
                .with_stride([p, p])
                .init(device),
            norm: layer_norm(config.embed_dim, 1e-5, device),
            patch_size: p,
        }
    }

    /// Pixels `[batch, channels, H, W]` (zero-padded at the bottom/right to a multiple of the
    /// patch) → tokens `[batch, h·w, embed_dim]` and the grid `(h, w)`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> (Tensor<B, 3>, (usize, usize)) {
        let [_, _, height, width] = pixels.dims();
        let p = self.patch_size;
        let pixels = pad_end(
            pad_end(pixels, 3, round_up(width, p)),
            2,
            round_up(height, p),
        );
        // A convolution whose kernel equals its stride is one matrix product over the
        // non-overlapping patches (Burn's direct CPU convolution is several times slower).
        let [b, channels, height, width] = pixels.dims();
        let (h, w) = (height / p, width / p);
        let patches = pixels
            .reshape([b, channels, h, p, w, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, h * w, channels * p * p]);
        let weight = self.proj.weight.val();
        let out = weight.dims()[0];
        let weight = weight.reshape([out, channels * p * p]).transpose();
        let bias = self.proj.bias.as_ref().map(|bias| bias.val());
        let tokens = affine(patches, weight, bias, None);
        (self.norm.forward(tokens), (h, w))
    }

    /// Walks the parameters under `{key}.proj`, `{key}.norm`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        visit_conv2d(v, &format!("{key}.proj"), &mut self.proj);
        visit_layer_norm(v, &format!("{key}.norm"), &mut self.norm);
    }
}
