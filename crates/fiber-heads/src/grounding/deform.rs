//! DyHead's modulated deformable 3×3 convolution followed by GroupNorm (GLIP's `Conv3x3Norm`
//! with `ModulatedDeformConv`, DCNv2; docs/model.md §5.7), and the original's reuse of one
//! level's offsets on the next level.
//!
//! Offsets follow torchvision's and the original kernel's layout: for kernel tap `k = i·3 + j`
//! channel `2k` is Δy, `2k + 1` is Δx, and mask channel `k` the modulation.

use burn::module::Param;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use burn::tensor::module::deform_conv2d;
use burn::tensor::ops::DeformConvOptions;
use burn::tensor::Distribution;
use fiber_core::weights::{join_key, Layout, WeightVisitor};

/// Offset channels of a 3×3 kernel (Δy, Δx per tap).
pub const OFFSET_CHANNELS: usize = 18;
/// Mask channels of a 3×3 kernel (one modulation per tap).
pub const MASK_CHANNELS: usize = 9;

/// Where each tap of a deformable convolution samples: offsets `[batch, 18, H_out, W_out]`
/// and the sigmoid modulation mask `[batch, 9, H_out, W_out]`.
#[derive(Debug, Clone)]
pub struct SamplingOffsets<B: Backend> {
    /// Δy, Δx per tap.
    pub offset: Tensor<B, 4>,
    /// Modulation per tap, in (0, 1).
    pub mask: Tensor<B, 4>,
}

impl<B: Backend> SamplingOffsets<B> {
    /// Offsets for an output of `(height, width)`. When the size differs from the one they were
    /// computed at, each image's buffer is read as the original CUDA kernel reads it: its first
    /// `18·height·width` offset values (and `9·height·width` mask values) laid out at the new
    /// size (docs/model.md §5.7).
    pub fn as_size(&self, (height, width): (usize, usize)) -> Self {
        let [b, _, h, w] = self.offset.dims();
        if (h, w) == (height, width) {
            return self.clone();
        }
        assert!(
            height * width <= h * w,
            "offsets of a {h}×{w} map cannot be read for a larger {height}×{width} output"
        );
        let prefix = |x: Tensor<B, 4>, channels: usize| {
            x.reshape([b, channels * h * w])
                .slice([0..b, 0..channels * height * width])
                .reshape([b, channels, height, width])
        };
        Self {
            offset: prefix(self.offset.clone(), OFFSET_CHANNELS),
            mask: prefix(self.mask.clone(), MASK_CHANNELS),
        }
    }

    /// Height and width the offsets are laid out at.
    pub fn size(&self) -> (usize, usize) {
        let [_, _, h, w] = self.offset.dims();
        (h, w)
    }
}

/// A modulated deformable 3×3 convolution (padding 1, one offset group) and a GroupNorm; keys
/// `{key}.conv.{weight,bias}` and `{key}.bn.{weight,bias}`.
#[derive(Module, Debug)]
pub struct DeformConvNorm<B: Backend> {
    /// `[C_out, C_in, 3, 3]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[C_out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Stride (1, or 2 for the convolution on the finer level).
    pub stride: usize,
    /// GroupNorm over the output channels.
    pub norm: GroupNorm<B>,
}

impl<B: Backend> DeformConvNorm<B> {
    /// A fresh convolution `C_in → C_out`: weight uniform in ±1/√(C_in·9), zero bias (the
    /// original's own reset, which DyHead's initialisation loop does not reach).
    pub fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        groups: usize,
        device: &B::Device,
    ) -> Self {
        let bound = 1.0 / ((c_in * 9) as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [c_out, c_in, 3, 3],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([c_out], device)),
            stride,
            norm: GroupNormConfig::new(groups, c_out).init(device),
        }
    }

    /// Output size on an `(h, w)` input.
    pub fn output_size(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let len = |n: usize| (n + 2 - 3) / self.stride + 1;
        (len(h), len(w))
    }

    /// `[batch, C_in, H, W]` sampled at `offsets` (laid out at the output size, see
    /// [`SamplingOffsets::as_size`]) → `[batch, C_out, H_out, W_out]`, normalised.
    pub fn forward(&self, x: Tensor<B, 4>, offsets: &SamplingOffsets<B>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let offsets = offsets.as_size(self.output_size((h, w)));
        let y = deform_conv2d(
            x,
            offsets.offset,
            self.weight.val(),
            Some(offsets.mask),
            Some(self.bias.val()),
            DeformConvOptions::new([self.stride; 2], [1, 1], [1, 1], 1, 1),
        );
        self.norm.forward(y)
    }

    /// Walks `{key}.conv.weight`, `{key}.conv.bias`, `{key}.bn.weight`, `{key}.bn.bias`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        v.visit(
            &join_key(key, "conv.weight"),
            &mut self.weight,
            Layout::Same,
        );
        v.visit(&join_key(key, "conv.bias"), &mut self.bias, Layout::Same);
        if let Some(gamma) = &mut self.norm.gamma {
            v.visit(&join_key(key, "bn.weight"), gamma, Layout::Same);
        }
        if let Some(beta) = &mut self.norm.beta {
            v.visit(&join_key(key, "bn.bias"), beta, Layout::Same);
        }
    }
}
