//! Hyper-parameters of the fusion backbone: the two backbones' configs plus the fusion's own.

use std::path::Path;

use burn::config::Config;
use fiber_roberta::RobertaConfig;
use fiber_swin::SwinConfig;
use serde::{Deserialize, Serialize};

use crate::error::FusionError;

/// Which image-to-text block variant the fused Swin blocks use (docs/model.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FusionVersion {
    /// The coarse model (and fine-grained `v3`): the query is `qkv_i2t(LN(S))`.
    #[serde(rename = "v1")]
    V1,
    /// The fine-grained detector's `v2`: no query LayerNorm, the query is `qkv_i2t(S)`.
    #[serde(rename = "v2")]
    V2,
}

/// Configuration of the fused backbone.
#[derive(Config, Debug, PartialEq)]
pub struct FiberConfig {
    /// The image backbone.
    pub swin: SwinConfig,
    /// The text backbone.
    pub roberta: RobertaConfig,
    /// Number of lock-step fused pairs: the last `num_fuse_block` Swin blocks with the last
    /// `num_fuse_block` text layers (docs/model.md §2.1; 6 for FIBER-Base).
    #[config(default = 6)]
    pub num_fuse_block: usize,
    /// Image-to-text block variant.
    #[config(default = "FusionVersion::V1")]
    pub fusion_version: FusionVersion,
    /// Reproduce the original fused path's quirks (docs/model.md §2.2): no final Swin LayerNorm and no
    /// output LayerNorm in the last fused text layer. Turn off for a "clean" fused path.
    #[config(default = true)]
    pub original_fused_quirks: bool,
    /// Standard deviation of the normal initialisation of the new text-side modules: the
    /// text-to-image cross-attention and the captioning adapters (HuggingFace's 0.02 in FIBER).
    #[config(default = 0.02)]
    pub initializer_range: f64,
    /// Standard deviation of the truncated-normal initialisation of the new image-side modules,
    /// the image-to-text cross-attention (timm's 0.02 in FIBER).
    #[config(default = 0.02)]
    pub image_initializer_range: f64,
    /// Standard deviation of the normal initialisation of the heads: projections and poolers,
    /// ITM, MLM and the task classifiers (0.02 in FIBER).
    #[config(default = 0.02)]
    pub head_initializer_range: f64,
    /// Initial value of every fusion gate `alpha_i2t` / `alpha_t2i` of a new model (0 in FIBER:
    /// fusion opens as training finds it useful; docs/model.md §2.3–§2.4).
    #[config(default = 0.0)]
    pub gate_init: f64,
    /// Whether the output projections of a new model's cross-attentions (`proj_i2t`,
    /// `crossattention_t2i.output.dense`) start at zero (false in FIBER: drawn like the other
    /// weights). With the gates at 1 instead of 0 the fused path still starts equal to the
    /// unfused one, but the projections receive a gradient from the first step; with gates at 0
    /// only the gates do, and trained from scratch they barely move (docs/model.md §2.3).
    #[config(default = false)]
    pub zero_fusion_outputs: bool,
}

/// The two backbone configurations of a [`FiberConfig`] file, read before the rest.
#[derive(serde::Deserialize)]
struct Backbones {
    swin: serde_json::Value,
    roberta: RobertaConfig,
}

/// One lock-step pair of the fused suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedPair {
    /// Swin stage of the image block.
    pub stage: usize,
    /// Block index within the stage.
    pub block: usize,
    /// RoBERTa layer index.
    pub layer: usize,
}

impl FiberConfig {
    /// FIBER-Base for pre-training: Swin-B at 384 px (window 12) + roberta-base, 6 fused pairs.
    pub fn fiber_base_384() -> Self {
        Self::new(SwinConfig::swin_base_384(), RobertaConfig::roberta_base())
    }

    /// FIBER-Base at `image_size` px with the original code's tie `window = image_size / 32`
    /// (576 px → window 18 for VQA, ITC retrieval and captioning; docs/model.md §1.1).
    pub fn fiber_base(image_size: usize) -> Self {
        let mut config = Self::fiber_base_384();
        config.swin.image_size = image_size;
        config.swin.window_size = image_size / 32;
        config
    }

    /// The backbone of FIBER-Base's fine-grained detector (docs/model.md §5.1): Swin-B with
    /// window 12 that never shrinks (every grid padded to whole windows), stochastic depth up to
    /// 0.4, fusion v2 with the six last pairs, RoBERTa-base.
    pub fn fiber_base_detection() -> Self {
        let mut config = Self::fiber_base_384().with_fusion_version(FusionVersion::V2);
        config.swin.clamp_window = false;
        config.swin.drop_path_rate = 0.4;
        config
    }

    /// Checks that both backbones are valid and deep enough for the fused pairs.
    pub fn validate(&self) -> Result<(), FusionError> {
        self.swin.validate()?;
        self.roberta.validate()?;
        let blocks: usize = self.swin.depths.iter().sum();
        let n = self.num_fuse_block;
        if n == 0 || n > blocks || n > self.roberta.num_hidden_layers {
            return Err(FusionError::InvalidConfig(format!(
                "num_fuse_block {n} must be between 1 and both the number of Swin blocks ({blocks}) and of text layers ({})",
                self.roberta.num_hidden_layers
            )));
        }
        Ok(())
    }

    /// The fused pairs in order: the last `num_fuse_block` Swin blocks (across stages) with the
    /// last `num_fuse_block` text layers. For FIBER-Base: stage 2 blocks 14–17 and stage 3
    /// blocks 0–1 with layers 6–11.
    pub fn fused_pairs(&self) -> Vec<FusedPair> {
        let blocks: Vec<(usize, usize)> = self
            .swin
            .depths
            .iter()
            .enumerate()
            .flat_map(|(s, &d)| (0..d).map(move |b| (s, b)))
            .collect();
        let n = self.num_fuse_block;
        let first_layer = self.roberta.num_hidden_layers - n;
        blocks[blocks.len() - n..]
            .iter()
            .enumerate()
            .map(|(k, &(stage, block))| FusedPair {
                stage,
                block,
                layer: first_layer + k,
            })
            .collect()
    }

    /// Reads the project's configuration file (JSON written by [`Self::save_json`]). Keys the
    /// file lacks (written before a setting existed) take their defaults.
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self, FusionError> {
        let path = path.as_ref();
        Self::from_json_value(fiber_core::json::read_json(path)?, path)
    }

    /// The configuration in a parsed JSON object (read from `path`, named in errors): the
    /// backbones' sizes are required, the other keys take their defaults.
    pub fn from_json_value(given: serde_json::Value, path: &Path) -> Result<Self, FusionError> {
        let backbones: Backbones = fiber_core::json::from_value(given.clone(), path)?;
        let swin = SwinConfig::from_json_value(backbones.swin, path)?;
        let defaults = Self::new(swin, backbones.roberta);
        let config = fiber_core::json::read_over_defaults(&defaults, &given, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration as pretty JSON (temporary file, then rename).
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<(), FusionError> {
        Ok(fiber_core::json::write_json_atomically(
            self,
            path.as_ref(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiber_base_pairs_follow_the_original() {
        let pairs = FiberConfig::fiber_base_384().fused_pairs();
        let expected = [
            (2, 14, 6),
            (2, 15, 7),
            (2, 16, 8),
            (2, 17, 9),
            (3, 0, 10),
            (3, 1, 11),
        ];
        assert_eq!(
            pairs
                .iter()
                .map(|p| (p.stage, p.block, p.layer))
                .collect::<Vec<_>>(),
            expected
        );
        let c576 = FiberConfig::fiber_base(576);
        assert_eq!(c576.swin.window_size, 18);
    }

    #[test]
    fn a_tiny_config_pairs_its_last_blocks_and_layers() {
        let swin = SwinConfig::new(32, 8, vec![1, 2, 2], vec![2, 2, 4], 2);
        let roberta = RobertaConfig::new(50, 16, 3, 2, 32);
        let config = FiberConfig::new(swin, roberta).with_num_fuse_block(3);
        config.validate().unwrap();
        let pairs: Vec<_> = config
            .fused_pairs()
            .iter()
            .map(|p| (p.stage, p.block, p.layer))
            .collect();
        assert_eq!(pairs, vec![(1, 1, 0), (2, 0, 1), (2, 1, 2)]);
        assert!(config.clone().with_num_fuse_block(4).validate().is_err());
    }

    #[test]
    fn json_round_trip() {
        let config = FiberConfig::fiber_base_384();
        let path = std::env::temp_dir().join(format!("fiber-config-{}.json", std::process::id()));
        config.save_json(&path).unwrap();
        assert_eq!(FiberConfig::load_json(&path).unwrap(), config);
        std::fs::remove_file(path).unwrap();
    }
}
