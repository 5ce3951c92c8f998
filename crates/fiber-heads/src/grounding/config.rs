//! Hyper-parameters of the grounding detector (docs/model.md §5.1): the detection backbone, the
//! FPN, the DyHead tower and the output layers.

use std::path::Path;

use burn::config::Config;
use fiber_fusion::{FiberConfig, FusionError};

use super::box_coder::BoxCoderConfig;

/// Configuration of [`super::GroundingDetector`].
#[derive(Config, Debug, PartialEq)]
pub struct DetectorConfig {
    /// The fused backbone (detection variant: fusion v2, `swin.clamp_window = false`).
    pub backbone: FiberConfig,
    /// Width of the FPN levels and of the DyHead tower (256 in FIBER).
    #[config(default = 256)]
    pub channels: usize,
    /// DyConv blocks in the tower (6 in FIBER-B).
    #[config(default = 6)]
    pub num_dyhead_blocks: usize,
    /// Groups of the GroupNorm after each deformable convolution (16).
    #[config(default = 16)]
    pub group_norm_groups: usize,
    /// Width reduction of DyReLU's squeeze layer (4: 256 → 64).
    #[config(default = 4)]
    pub dyrelu_reduction: usize,
    /// Outputs of the unused class convolution `cls_logits` (80, kept for the checkpoint).
    #[config(default = 80)]
    pub num_classes: usize,
    /// Prior probability that sets the initial bias of the logits, `−ln((1 − p) / p)` (0.01).
    #[config(default = 0.01)]
    pub prior_prob: f64,
    /// Initial `log_scale` of the region–token dot product (0).
    #[config(default = 0.0)]
    pub log_scale_init: f64,
    /// Region–token logits are clamped to ± this value (50,000).
    #[config(default = 50000.0)]
    pub logit_clamp: f64,
    /// Whether DropBlock is applied in training to the merged top-down features of the FPN
    /// levels below the top backbone level (P3, P4), as GLIP's default does.
    #[config(default = true)]
    pub drop_block: bool,
    /// DropBlock's drop probability (0.3).
    #[config(default = 0.3)]
    pub drop_block_prob: f64,
    /// DropBlock's block side (3).
    #[config(default = 3)]
    pub drop_block_size: usize,
    /// Reuse the offsets and mask computed at level `l` for the deformable convolution on level
    /// `l + 1`, reading a prefix of each image's buffer as the original CUDA kernel does
    /// (docs/model.md §5.7; `true` reproduces released weights). `false` computes them at the
    /// input's own resolution.
    #[config(default = true)]
    pub reuse_level_offsets: bool,
    /// Anchor side as a multiple of the level's stride (8: sizes 64 … 1024 on strides 8 … 128).
    #[config(default = 8)]
    pub anchor_stride_multiple: usize,
    /// Number of extra levels above the backbone's (P6, P7).
    #[config(default = 2)]
    pub extra_levels: usize,
    /// How the box outputs relate boxes to anchors.
    #[config(default = "BoxCoderConfig::new()")]
    pub box_coder: BoxCoderConfig,
}

impl DetectorConfig {
    /// FIBER-Base's detector (docs/model.md §5.1): Swin-B/RoBERTa-base with six fused pairs,
    /// FPN P3–P7 at width 256, six DyConv blocks.
    pub fn fiber_base() -> Self {
        Self::new(FiberConfig::fiber_base_detection())
    }

    /// The detector on a coarse model's backbone (docs/model.md §6.4): the same sizes with the
    /// detection variant of fusion (v2) and windows that are padded, not shrunk; the FPN, tower
    /// and head at their defaults.
    pub fn for_coarse_backbone(coarse: &FiberConfig) -> Self {
        let mut backbone = coarse
            .clone()
            .with_fusion_version(fiber_fusion::FusionVersion::V2);
        backbone.swin.clamp_window = false;
        Self::new(backbone)
    }

    /// Widths of the backbone outputs the FPN reads (stages 1..: 2C, 4C, 8C).
    pub fn backbone_widths(&self) -> Vec<usize> {
        (1..self.backbone.swin.num_stages())
            .map(|s| self.backbone.swin.stage_dim(s))
            .collect()
    }

    /// Stride of every level, backbone levels first, then the extra ones (8, 16, 32, 64, 128).
    pub fn strides(&self) -> Vec<usize> {
        let first = self.backbone.swin.patch_size * 2;
        let n = self.backbone_widths().len() + self.extra_levels;
        (0..n).map(|l| first << l).collect()
    }

    /// Number of output levels.
    pub fn num_levels(&self) -> usize {
        self.strides().len()
    }

    /// The initial bias of logits under the prior probability: `−ln((1 − p) / p)`.
    pub fn prior_bias(&self) -> f64 {
        -((1.0 - self.prior_prob) / self.prior_prob).ln()
    }

    /// Reads a detector `config.json`: the backbone under `backbone` (as
    /// [`FiberConfig::load_json`] reads it), the detector's own keys over their defaults.
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self, FusionError> {
        let path = path.as_ref();
        let given: serde_json::Value = fiber_core::json::read_json(path)?;
        let Some(backbone) = given.get("backbone") else {
            return Err(FusionError::InvalidConfig(format!(
                "{}: a detector configuration needs a `backbone` object (the fused backbone's sizes)",
                path.display()
            )));
        };
        let backbone = FiberConfig::from_json_value(backbone.clone(), path)?;
        let config = fiber_core::json::read_over_defaults(&Self::new(backbone), &given, path)?;
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

    /// Checks what the modules rely on.
    pub fn validate(&self) -> Result<(), FusionError> {
        self.backbone.validate()?;
        let bad = |m: String| Err(FusionError::InvalidConfig(m));
        if self.channels == 0 || self.channels % self.group_norm_groups != 0 {
            return bad(format!(
                "channels {} must be a positive multiple of group_norm_groups {}",
                self.channels, self.group_norm_groups
            ));
        }
        if self.dyrelu_reduction == 0 || self.channels / self.dyrelu_reduction == 0 {
            return bad(format!(
                "dyrelu_reduction {} leaves no squeeze width for {} channels",
                self.dyrelu_reduction, self.channels
            ));
        }
        if self.num_levels() < 2 {
            return bad("the detector needs at least two levels".into());
        }
        Ok(())
    }
}
