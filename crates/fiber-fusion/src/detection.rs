//! The fused backbone as FIBER's detector runs it (docs/model.md §5.1): the same lock-step
//! pairs as the coarse fusion encoder, with the per-stage outputs the FPN reads.
//!
//! Differences from the coarse forward: the Swin is the detection variant (windows never shrink
//! to the grid, `SwinConfig::clamp_window = false`; every block pads to whole windows), the
//! image-to-text modules are v2 (no query LayerNorm), every text layer keeps its output
//! LayerNorm, there is no final Swin norm, and the outputs of stages 1, 2, … (before their patch
//! merging) pass through their own LayerNorms `norm1`, `norm2`, … and come out as NCHW maps
//! (C3, C4, C5 for a four-stage Swin, strides 8, 16, 32).

use burn::prelude::*;
use fiber_core::init::layer_norm;
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{join_key, visit_layer_norm, WeightVisitor};
use fiber_swin::FeatureMap;

use crate::backbone::{FiberBackbone, ImageState, TextState};
use crate::config::{FiberConfig, FusionVersion};
use crate::error::FusionError;

/// What the detection forward hands to the FPN and the grounding head.
#[derive(Debug, Clone)]
pub struct DetectionFeatures<B: Backend> {
    /// Outputs of stages 1.. after their LayerNorms, `[batch, C_s, H_s, W_s]` (C3, C4, C5).
    pub maps: Vec<Tensor<B, 4>>,
    /// The last text layer's output `[batch, len, hidden]`.
    pub text: Tensor<B, 3>,
}

/// The fused backbone with the stage-output LayerNorms; keys of the original fine-grained
/// checkpoint: `backbone.body.*` (Swin with its `attn.*_i2t` and `norm{s}`) and
/// `language_backbone.body.model.*` (RoBERTa with `crossattention_t2i.*` and `alpha_t2i` in
/// the fused layers), under `fusion_backbone`.
#[derive(Module, Debug)]
pub struct DetectionBackbone<B: Backend> {
    /// Swin, RoBERTa (without pooler) and the fusion modules.
    pub fused: FiberBackbone<B>,
    /// `norm{s}` for s = 1, 2, … (widths 2C, 4C, 8C).
    pub stage_norms: Vec<LayerNorm<B>>,
}

impl<B: Backend> DetectionBackbone<B> {
    /// A fresh detection backbone. The configuration must be the detection variant: fusion v2
    /// and windows that never shrink (`swin.clamp_window = false`).
    pub fn new(config: &FiberConfig, device: &B::Device) -> Result<Self, FusionError> {
        if config.fusion_version != FusionVersion::V2 || config.swin.clamp_window {
            return Err(FusionError::InvalidConfig(format!(
                "the detector's backbone is the detection variant: fusion_version v2 and swin.clamp_window false (got {:?}, clamp_window {})",
                config.fusion_version, config.swin.clamp_window
            )));
        }
        if config.swin.num_stages() < 2 {
            return Err(FusionError::InvalidConfig(format!(
                "the detector reads the outputs of Swin stages 1.., so it needs at least 2 stages (got {})",
                config.swin.num_stages()
            )));
        }
        let mut fused = FiberBackbone::new(config, false, device)?;
        fused.text_transformer.pooler = None;
        let stage_norms = (1..config.swin.num_stages())
            .map(|s| layer_norm(config.swin.stage_dim(s), 1e-5, device))
            .collect();
        Ok(Self { fused, stage_norms })
    }

    /// Pixels `[batch, 3, H, W]` (H, W multiples of the total stride), token ids and padding
    /// mask `[batch, len]` → the normalised stage outputs 1.. as NCHW maps and the last text
    /// layer's output.
    pub fn forward(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> DetectionFeatures<B> {
        let backbone = &self.fused;
        let mut text = backbone.text_prefix(input_ids, attention_mask);
        let mut image = ImageState {
            map: backbone.vit_model.embed(pixels),
            stage: 0,
        };
        let mut maps = Vec::with_capacity(self.stage_norms.len());
        let stages = backbone.vit_model.layers.len();
        for s in 0..stages {
            if s > 0 {
                let map = image.map;
                let (tokens, (height, width)) =
                    backbone.vit_model.layers[s - 1].merge(map.tokens, (map.height, map.width));
                image = ImageState {
                    map: FeatureMap {
                        tokens,
                        height,
                        width,
                    },
                    stage: s,
                };
            }
            for b in 0..backbone.vit_model.layers[s].blocks.len() {
                match backbone
                    .pairs
                    .iter()
                    .position(|p| p.stage == s && p.block == b)
                {
                    Some(k) => {
                        let (new_image, new_text) = backbone.fused_pair(k, &image, &text, true);
                        image = new_image;
                        text = TextState {
                            hidden: new_text,
                            mask: text.mask,
                        };
                    }
                    None => {
                        let grid = (image.map.height, image.map.width);
                        image.map.tokens =
                            backbone.vit_model.layers[s].blocks[b].forward(image.map.tokens, grid);
                    }
                }
            }
            if s > 0 {
                let norm = &self.stage_norms[s - 1];
                let map = FeatureMap {
                    tokens: norm.forward(image.map.tokens.clone()),
                    ..image.map.clone()
                };
                maps.push(map.nchw());
            }
        }
        DetectionFeatures {
            maps,
            text: text.hidden,
        }
    }

    /// Walks every parameter under `prefix` with the original fine-grained keys
    /// (`{prefix}.backbone.body.*`, `{prefix}.language_backbone.body.model.*`).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        let swin = join_key(prefix, "backbone.body");
        let text = join_key(prefix, "language_backbone.body.model");
        self.fused.vit_model.visit_body_weights(v, &swin);
        for (i, norm) in self.stage_norms.iter_mut().enumerate() {
            visit_layer_norm(v, &join_key(&swin, &format!("norm{}", i + 1)), norm);
        }
        self.fused.text_transformer.visit_weights(v, &text);
        for (k, pair) in self.fused.pairs.clone().iter().enumerate() {
            self.fused.i2t[k].visit_weights(
                v,
                &join_key(
                    &swin,
                    &format!("layers.{}.blocks.{}.attn", pair.stage, pair.block),
                ),
            );
            self.fused.t2i[k].visit_weights(
                v,
                &join_key(&text, &format!("encoder.layer.{}", pair.layer)),
            );
        }
    }
}
