//! The DyHead tower (docs/model.md §5.1; GLIP's `DyConv` without vision–language fusion in the
//! head, since FIBER fuses in the backbone).
//!
//! One block, for every level `l` of the pyramid:
//! 1. offsets and mask: a 3×3 convolution `C → 27` of level `l`; channels 0–17 are the offsets,
//!    the sigmoid of 18–26 the mask;
//! 2. three modulated deformable convolutions, each with a GroupNorm: `mid` on level `l`,
//!    `down` (stride 2) on level `l − 1`, `up` on level `l + 1` followed by bilinear
//!    upsampling (`align_corners = True`) to level `l`'s size; all three sample with level
//!    `l`'s offsets (see [`DetectorConfig::reuse_level_offsets`]);
//! 3. scale-aware attention: each result `r` is weighted by
//!    `hard_sigmoid(ReLU(Conv1×1(GAP(r))))` and the weighted results are averaged;
//! 4. task-aware attention: DyReLU.

use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use fiber_core::activation::hard_sigmoid;
use fiber_core::conv::{Conv2dLayer, ConvInit};
use fiber_core::resample::resize_bilinear_aligned;
use fiber_core::weights::{join_key, WeightVisitor};

use super::config::DetectorConfig;
use super::deform::{DeformConvNorm, SamplingOffsets, MASK_CHANNELS, OFFSET_CHANNELS};
use super::dyrelu::DyRelu;

/// One DyConv block; keys `DyConv.0` (up), `DyConv.1` (mid), `DyConv.2` (down),
/// `AttnConv.1`, `relu.fc.*` and `offset`.
#[derive(Module, Debug)]
pub struct DyConvBlock<B: Backend> {
    /// On level `l + 1`, then upsampled (`DyConv.0`).
    pub up: DeformConvNorm<B>,
    /// On level `l` (`DyConv.1`).
    pub mid: DeformConvNorm<B>,
    /// Stride 2 on level `l − 1` (`DyConv.2`).
    pub down: DeformConvNorm<B>,
    /// Scale attention `Conv1×1(C → 1)` (`AttnConv.1`).
    pub attention: Conv2dLayer<B>,
    /// Task-aware activation (`relu`).
    pub dyrelu: DyRelu<B>,
    /// Offsets and mask `Conv3×3(C → 27)` (`offset`).
    pub offset: Conv2dLayer<B>,
    /// Reuse level `l`'s offsets for level `l + 1` as the original does.
    pub reuse_level_offsets: bool,
}

impl<B: Backend> DyConvBlock<B> {
    /// A fresh block for `config`.
    pub fn new(config: &DetectorConfig, device: &B::Device) -> Self {
        let c = config.channels;
        let g = config.group_norm_groups;
        Self {
            up: DeformConvNorm::new(c, c, 1, g, device),
            mid: DeformConvNorm::new(c, c, 1, g, device),
            down: DeformConvNorm::new(c, c, 2, g, device),
            attention: Conv2dLayer::new(
                c,
                1,
                1,
                1,
                ConvInit::Normal {
                    std: 0.01,
                    bias: 0.0,
                },
                device,
            ),
            dyrelu: DyRelu::new(c, config.dyrelu_reduction, device),
            offset: Conv2dLayer::new(
                c,
                OFFSET_CHANNELS + MASK_CHANNELS,
                3,
                1,
                ConvInit::TorchDefault,
                device,
            ),
            reuse_level_offsets: config.reuse_level_offsets,
        }
    }

    /// Offsets and mask of one level `[batch, C, H, W]`.
    fn sampling_offsets(&self, level: Tensor<B, 4>) -> SamplingOffsets<B> {
        let om = self.offset.forward(level);
        let [b, _, h, w] = om.dims();
        SamplingOffsets {
            offset: om.clone().slice([0..b, 0..OFFSET_CHANNELS, 0..h, 0..w]),
            mask: sigmoid(om.slice([
                0..b,
                OFFSET_CHANNELS..OFFSET_CHANNELS + MASK_CHANNELS,
                0..h,
                0..w,
            ])),
        }
    }

    /// Scale-aware weight `[batch, 1, 1, 1]` of one result.
    fn scale_weight(&self, r: Tensor<B, 4>) -> Tensor<B, 4> {
        let pooled = r.mean_dim(3).mean_dim(2);
        hard_sigmoid(relu(self.attention.forward(pooled)))
    }

    /// Levels `[batch, C, H_l, W_l]` (finest first) → the same shapes.
    pub fn forward(&self, levels: &[Tensor<B, 4>]) -> Vec<Tensor<B, 4>> {
        let n = levels.len();
        let offsets: Vec<SamplingOffsets<B>> = levels
            .iter()
            .map(|l| self.sampling_offsets(l.clone()))
            .collect();
        (0..n)
            .map(|l| {
                let own = &offsets[l];
                let size = own.size();
                let mut results = vec![self.mid.forward(levels[l].clone(), own)];
                if l > 0 {
                    results.push(self.down.forward(levels[l - 1].clone(), own));
                }
                if l + 1 < n {
                    let offsets_up = if self.reuse_level_offsets {
                        own
                    } else {
                        &offsets[l + 1]
                    };
                    let up = self.up.forward(levels[l + 1].clone(), offsets_up);
                    results.push(resize_bilinear_aligned(up, size));
                }
                let count = results.len() as f64;
                let weighted = results
                    .into_iter()
                    .map(|r| r.clone() * self.scale_weight(r))
                    .reduce(|a, b| a + b)
                    .expect("every level has its own result");
                self.dyrelu.forward(weighted.div_scalar(count))
            })
            .collect()
    }

    /// Walks the parameters under `key` with the original names.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        self.up.visit_weights(v, &join_key(key, "DyConv.0"));
        self.mid.visit_weights(v, &join_key(key, "DyConv.1"));
        self.down.visit_weights(v, &join_key(key, "DyConv.2"));
        self.attention
            .visit_weights(v, &join_key(key, "AttnConv.1"));
        self.dyrelu.visit_weights(v, &join_key(key, "relu"));
        self.offset.visit_weights(v, &join_key(key, "offset"));
    }
}

/// The tower of DyConv blocks; keys `dyhead_tower.{i}.*`.
#[derive(Module, Debug)]
pub struct DyHeadTower<B: Backend> {
    /// The blocks, in order.
    pub blocks: Vec<DyConvBlock<B>>,
}

impl<B: Backend> DyHeadTower<B> {
    /// A fresh tower of `config.num_dyhead_blocks` blocks.
    pub fn new(config: &DetectorConfig, device: &B::Device) -> Self {
        Self {
            blocks: (0..config.num_dyhead_blocks)
                .map(|_| DyConvBlock::new(config, device))
                .collect(),
        }
    }

    /// FPN levels → the tower's output levels (same shapes).
    pub fn forward(&self, levels: Vec<Tensor<B, 4>>) -> Vec<Tensor<B, 4>> {
        self.blocks
            .iter()
            .fold(levels, |levels, block| block.forward(&levels))
    }

    /// Walks `{prefix}.{i}.*` for every block.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        for (i, block) in self.blocks.iter_mut().enumerate() {
            block.visit_weights(v, &join_key(prefix, &i.to_string()));
        }
    }
}
