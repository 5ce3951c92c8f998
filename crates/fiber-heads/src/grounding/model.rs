//! The whole grounding detector (docs/model.md §5): detection backbone → FPN → DyHead tower →
//! box, centerness and region–token outputs per level, with the anchors of every level.

use burn::prelude::*;
use fiber_core::store::StoredTensor;
use fiber_core::weights::{join_key, WeightVisitor};
use fiber_core::TensorStore;
use fiber_fusion::{DetectionBackbone, FusionError};

use super::anchors::level_anchors;
use super::config::DetectorConfig;
use super::dyhead::DyHeadTower;
use super::fpn::Fpn;
use super::head::GroundingHead;

/// Everything one forward computes, level by level (P3 first).
#[derive(Debug, Clone)]
pub struct DetectorOutput<B: Backend> {
    /// FPN levels `[batch, C, H_l, W_l]`.
    pub fpn: Vec<Tensor<B, 4>>,
    /// The DyHead tower's levels `[batch, C, H_l, W_l]`.
    pub tower: Vec<Tensor<B, 4>>,
    /// Box deltas after the level scale `[batch, 4, H_l, W_l]`.
    pub bbox_reg: Vec<Tensor<B, 4>>,
    /// Centerness logits `[batch, 1, H_l, W_l]`.
    pub centerness: Vec<Tensor<B, 4>>,
    /// Region–token logits `[batch, H_l·W_l, len]`.
    pub logits: Vec<Tensor<B, 3>>,
    /// Anchors of each level, `[H_l·W_l][4]` as (x0, y0, x1, y1) in input pixels.
    pub anchors: Vec<Vec<[f32; 4]>>,
    /// The last text layer's output `[batch, len, D]`.
    pub text_hidden: Tensor<B, 3>,
}

impl<B: Backend> DetectorOutput<B> {
    /// Every output as a named f32 tensor, level `l` = 0..4 for P3..P7: `fpn.{l}`, `tower.{l}`
    /// `[B, C, H_l, W_l]`, `bbox_reg.{l}` `[B, 4, H_l, W_l]`, `centerness.{l}` `[B, 1, H_l, W_l]`,
    /// `logits.{l}` `[B, H_l·W_l, L]`, `anchors.{l}` `[H_l·W_l, 4]` and `text_hidden` `[B, L, D]`
    /// (the interface of `fiber-forward --mode detect`).
    pub fn into_store(self) -> TensorStore {
        let mut store = TensorStore::new();
        let levels = self
            .fpn
            .into_iter()
            .zip(self.tower)
            .zip(self.bbox_reg)
            .zip(self.centerness)
            .zip(self.logits.into_iter().zip(self.anchors));
        for (l, ((((fpn, tower), bbox_reg), centerness), (logits, anchors))) in levels.enumerate() {
            for (name, map) in [
                ("fpn", fpn),
                ("tower", tower),
                ("bbox_reg", bbox_reg),
                ("centerness", centerness),
            ] {
                store.insert(format!("{name}.{l}"), StoredTensor::from_tensor(map));
            }
            store.insert(format!("logits.{l}"), StoredTensor::from_tensor(logits));
            let n = anchors.len();
            store.insert(
                format!("anchors.{l}"),
                StoredTensor::f32(vec![n, 4], anchors.into_iter().flatten().collect()),
            );
        }
        store.insert("text_hidden", StoredTensor::from_tensor(self.text_hidden));
        store
    }
}

/// FIBER's fine-grained model; keys of the original checkpoint: `fusion_backbone.*` (backbone
/// and FPN under `fusion_backbone.backbone.fpn`) and `rpn.head.*`.
#[derive(Module, Debug)]
pub struct GroundingDetector<B: Backend> {
    /// Swin + RoBERTa with fusion, and the stage norms.
    pub backbone: DetectionBackbone<B>,
    /// P3–P7.
    pub fpn: Fpn<B>,
    /// DyConv blocks.
    pub tower: DyHeadTower<B>,
    /// Output layers.
    pub head: GroundingHead<B>,
    /// Stride of each level.
    pub strides: Vec<usize>,
    /// Anchor side as a multiple of the stride.
    pub anchor_stride_multiple: usize,
}

impl<B: Backend> GroundingDetector<B> {
    /// A freshly initialised detector.
    pub fn new(config: &DetectorConfig, device: &B::Device) -> Result<Self, FusionError> {
        config.validate()?;
        Ok(Self {
            backbone: DetectionBackbone::new(&config.backbone, device)?,
            fpn: Fpn::new(config, device),
            tower: DyHeadTower::new(config, device),
            head: GroundingHead::new(config, device),
            strides: config.strides(),
            anchor_stride_multiple: config.anchor_stride_multiple,
        })
    }

    /// Pixels `[batch, 3, H, W]` (normalised; H and W multiples of the largest backbone stride),
    /// token ids and padding mask `[batch, len]` → every output of every level.
    pub fn forward(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> DetectorOutput<B> {
        let features = self
            .backbone
            .forward(pixels, input_ids, attention_mask.clone());
        let fpn = self.fpn.forward(&features.maps);
        let tower = self.tower.forward(fpn.clone());
        let queries = self
            .head
            .token_queries(features.text.clone(), attention_mask);
        let mut output = DetectorOutput {
            fpn,
            tower: tower.clone(),
            bbox_reg: Vec::with_capacity(tower.len()),
            centerness: Vec::with_capacity(tower.len()),
            logits: Vec::with_capacity(tower.len()),
            anchors: Vec::with_capacity(tower.len()),
            text_hidden: features.text,
        };
        for (l, map) in tower.into_iter().enumerate() {
            let [_, _, h, w] = map.dims();
            let level = self.head.level(l, map, &queries);
            output.bbox_reg.push(level.bbox_reg);
            output.centerness.push(level.centerness);
            output.logits.push(level.logits);
            output.anchors.push(level_anchors(
                h,
                w,
                self.strides[l],
                self.anchor_stride_multiple,
            ));
        }
        output
    }

    /// Walks every parameter with the original fine-grained checkpoint keys (without the
    /// `module.` prefix of a distributed run).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.backbone.visit_weights(v, "fusion_backbone");
        self.fpn
            .visit_weights(v, &join_key("fusion_backbone", "backbone.fpn"));
        self.tower.visit_weights(v, "rpn.head.dyhead_tower");
        self.head.visit_weights(v, "rpn.head");
    }
}
