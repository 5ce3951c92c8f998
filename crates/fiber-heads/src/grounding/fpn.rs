//! The feature pyramid (docs/model.md §5.1; RetinaNet style, GLIP's `FPN` with
//! `LastLevelP6P7`): lateral 1×1 convolutions of C3…C5, a top-down path of nearest-neighbour
//! upsampling and sums, 3×3 output convolutions, then P6 = 3×3/2 on P5 and P7 = 3×3/2 on
//! ReLU(P6). No norms, no activations, kaiming-uniform (a = 1) weights and zero biases.

use burn::prelude::*;
use burn::tensor::activation::relu;
use fiber_core::conv::{Conv2dLayer, ConvInit};
use fiber_core::resample::resize_nearest;
use fiber_core::weights::{join_key, WeightVisitor};

use super::config::DetectorConfig;
use super::drop_block::DropBlock;

/// The FPN; keys `fpn_inner{i}`, `fpn_layer{i}` (i = 2, 3, 4 for C3, C4, C5) and
/// `top_blocks.p6`, `top_blocks.p7`.
#[derive(Module, Debug)]
pub struct Fpn<B: Backend> {
    /// Lateral 1×1 convolutions, one per backbone level (C3 first).
    pub inner: Vec<Conv2dLayer<B>>,
    /// 3×3 output convolutions, one per backbone level.
    pub layer: Vec<Conv2dLayer<B>>,
    /// Extra levels: `p6` on the top backbone level's output, `p7` on ReLU of the previous one.
    pub top: Vec<Conv2dLayer<B>>,
    /// DropBlock before the output convolution of every level but the top backbone one, in
    /// training.
    pub drop_block: Option<DropBlock>,
}

impl<B: Backend> Fpn<B> {
    /// A fresh FPN for `config`'s backbone widths and channels.
    pub fn new(config: &DetectorConfig, device: &B::Device) -> Self {
        let c = config.channels;
        let init = ConvInit::KaimingUniform { a: 1.0 };
        let widths = config.backbone_widths();
        Self {
            inner: widths
                .iter()
                .map(|&w| Conv2dLayer::new(w, c, 1, 1, init, device))
                .collect(),
            layer: widths
                .iter()
                .map(|_| Conv2dLayer::new(c, c, 3, 1, init, device))
                .collect(),
            top: (0..config.extra_levels)
                .map(|_| Conv2dLayer::new(c, c, 3, 2, init, device))
                .collect(),
            drop_block: config.drop_block.then(|| DropBlock {
                prob: config.drop_block_prob,
                block: config.drop_block_size,
            }),
        }
    }

    /// Backbone maps C3… `[batch, C_s, H_s, W_s]` (finest first) → levels P3…P7
    /// `[batch, channels, H_l, W_l]`, finest first.
    pub fn forward(&self, features: &[Tensor<B, 4>]) -> Vec<Tensor<B, 4>> {
        let n = features.len();
        let mut last_inner = self.inner[n - 1].forward(features[n - 1].clone());
        let mut results = vec![self.layer[n - 1].forward(last_inner.clone())];
        for i in (0..n - 1).rev() {
            let lateral = self.inner[i].forward(features[i].clone());
            let [_, _, h, w] = lateral.dims();
            let [_, _, th, tw] = last_inner.dims();
            let top_down = if (th, tw) == (h, w) {
                last_inner
            } else {
                resize_nearest(last_inner, (h, w))
            };
            last_inner = lateral + top_down;
            let merged = match &self.drop_block {
                Some(drop) => drop.forward(last_inner.clone()),
                None => last_inner.clone(),
            };
            results.insert(0, self.layer[i].forward(merged));
        }
        let mut previous = results[n - 1].clone();
        for (k, conv) in self.top.iter().enumerate() {
            let input = if k == 0 { previous } else { relu(previous) };
            previous = conv.forward(input);
            results.push(previous.clone());
        }
        results
    }

    /// Walks the parameters under `{prefix}.fpn_inner{i}`, `{prefix}.fpn_layer{i}` and
    /// `{prefix}.top_blocks.p{6,7}`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        for (i, conv) in self.inner.iter_mut().enumerate() {
            conv.visit_weights(v, &join_key(prefix, &format!("fpn_inner{}", i + 2)));
        }
        for (i, conv) in self.layer.iter_mut().enumerate() {
            conv.visit_weights(v, &join_key(prefix, &format!("fpn_layer{}", i + 2)));
        }
        let first_top = 3 + self.inner.len();
        for (k, conv) in self.top.iter_mut().enumerate() {
            conv.visit_weights(
                v,
                &join_key(prefix, &format!("top_blocks.p{}", first_top + k)),
            );
        }
    }
}
