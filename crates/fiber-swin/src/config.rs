//! Hyper-parameters of the Swin Transformer (v1), read from a HuggingFace `config.json`.

use std::path::Path;

use burn::config::Config;
use fiber_core::Activation;
use serde::Deserialize;

use crate::error::SwinError;
use fiber_core::json::{from_value, parse_json, read_json, read_over_defaults};

/// Swin hyper-parameters; field names follow HuggingFace's `SwinConfig`.
#[derive(Config, Debug, PartialEq)]
pub struct SwinConfig {
    /// Side of the square training image; fixes the relative-position tables of blocks whose
    /// stage resolution is at most the window (their window is clamped, as in the original).
    pub image_size: usize,
    /// Side of a patch (the patch-embedding convolution's kernel and stride).
    #[config(default = 4)]
    pub patch_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// Width of stage 0; stage s has width `embed_dim·2^s`.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    /// Side of the attention window.
    pub window_size: usize,
    /// MLP hidden width as a multiple of the block width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Whether the query/key/value projection has a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Epsilon of the block and final LayerNorms (the patch-embedding and patch-merging norms
    /// use PyTorch's default 1e-5, as HuggingFace and the original do).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Dropout after attention and MLP outputs (training only).
    #[config(default = 0.0)]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[config(default = 0.0)]
    pub attention_probs_dropout_prob: f64,
    /// Stochastic-depth rate of the last block; block i of n uses `rate·i/(n−1)`.
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
    /// MLP activation.
    #[config(default = "Activation::Gelu")]
    pub hidden_act: Activation,
    /// Shrink the window to the grid, without shift, when the grid's smaller side is at most
    /// the window (HuggingFace and the coarse FIBER). The detector's Swin keeps the window and
    /// pads every grid to whole windows instead (`false`; docs/model.md §5.1).
    #[config(default = true)]
    pub clamp_window: bool,
}

/// The sizes a HuggingFace `config.json` must give (every other field has a default), and the
/// one HuggingFace setting this crate cannot honour.
#[derive(Deserialize)]
struct RequiredSizes {
    /// HuggingFace's default is 224.
    #[serde(default = "hf_default_image_size")]
    image_size: usize,
    embed_dim: usize,
    depths: Vec<usize>,
    num_heads: Vec<usize>,
    window_size: usize,
    #[serde(default)]
    use_absolute_embeddings: bool,
}

fn hf_default_image_size() -> usize {
    224
}

impl SwinConfig {
    /// Swin-T at 224 px: width 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7.
    pub fn swin_tiny_224() -> Self {
        Self::new(224, 96, vec![2, 2, 6, 2], vec![3, 6, 12, 24], 7).with_drop_path_rate(0.2)
    }

    /// Swin-B at 384 px with window 12, FIBER's image backbone (docs/model.md §1.1): width 128,
    /// depths (2, 2, 18, 2), heads (4, 8, 16, 32), stochastic depth up to 0.1.
    pub fn swin_base_384() -> Self {
        Self::new(384, 128, vec![2, 2, 18, 2], vec![4, 8, 16, 32], 12)
    }

    /// Parses a HuggingFace `config.json` (errors give file, line and column).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<Self, SwinError> {
        let path = path.as_ref();
        Self::from_json_value(read_json(path)?, path)
    }

    /// Parses the text of a HuggingFace `config.json`.
    pub fn from_hf_json_str(text: &str) -> Result<Self, SwinError> {
        Self::from_json_value(parse_json(text, Path::new(""))?, Path::new(""))
    }

    /// The configuration of a parsed HuggingFace file (or of the project's own files, which use
    /// the same names): the fields of this struct are read under their own names; those the
    /// file omits take HuggingFace's defaults, and settings HuggingFace does not have take this
    /// struct's (a file written before a setting existed still reads).
    pub fn from_json_value(given: serde_json::Value, path: &Path) -> Result<Self, SwinError> {
        let s: RequiredSizes = from_value(given.clone(), path)?;
        if s.use_absolute_embeddings {
            return Err(SwinError::InvalidConfig(
                "absolute position embeddings (use_absolute_embeddings) are not supported".into(),
            ));
        }
        let defaults = Self::new(
            s.image_size,
            s.embed_dim,
            s.depths,
            s.num_heads,
            s.window_size,
        );
        let config = read_over_defaults(&defaults, &given, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration as a HuggingFace-compatible `config.json` text: every field under
    /// its name, `model_type` and `use_absolute_embeddings: false`.
    pub fn to_hf_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a configuration serialises");
        value["model_type"] = "swin".into();
        value["use_absolute_embeddings"] = false.into();
        serde_json::to_string_pretty(&value).expect("a JSON value always serialises")
    }

    /// Checks the relations between fields that the model relies on.
    pub fn validate(&self) -> Result<(), SwinError> {
        let bad = |m: String| Err(SwinError::InvalidConfig(m));
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return bad(format!(
                "depths {:?} and num_heads {:?} must be non-empty and equally long",
                self.depths, self.num_heads
            ));
        }
        for s in 0..self.depths.len() {
            let (dim, heads) = (self.stage_dim(s), self.num_heads[s]);
            if heads == 0 || dim % heads != 0 {
                return bad(format!(
                    "stage {s}: width {dim} is not divisible by {heads} heads"
                ));
            }
        }
        if self.window_size == 0 || self.patch_size == 0 {
            return bad("window_size and patch_size must be positive".into());
        }
        Ok(())
    }

    /// Number of stages.
    pub fn num_stages(&self) -> usize {
        self.depths.len()
    }

    /// Width of stage `s`: `embed_dim·2^s`.
    pub fn stage_dim(&self, s: usize) -> usize {
        self.embed_dim << s
    }

    /// Width of the last stage (the model's output width).
    pub fn num_features(&self) -> usize {
        self.stage_dim(self.num_stages() - 1)
    }

    /// Side of stage `s`'s feature map at the configured image size.
    pub fn stage_resolution(&self, s: usize) -> usize {
        (self.image_size / self.patch_size) >> s
    }

    /// Window side of the blocks of stage `s`: the configured window, clamped (with
    /// `clamp_window`) to the stage's resolution at the configured image size (the
    /// relative-position table is sized for it).
    pub fn stage_window(&self, s: usize) -> usize {
        if !self.clamp_window {
            return self.window_size;
        }
        self.window_size.min(self.stage_resolution(s).max(1))
    }

    /// Stochastic-depth rate of every block, in order (linear from 0 to `drop_path_rate`).
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let n: usize = self.depths.iter().sum();
        (0..n)
            .map(|i| self.drop_path_rate * i as f64 / (n.max(2) - 1) as f64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swin_base_384_stage_geometry_follows_the_original() {
        let c = SwinConfig::swin_base_384();
        let res: Vec<usize> = (0..4).map(|s| c.stage_resolution(s)).collect();
        assert_eq!(res, vec![96, 48, 24, 12]);
        assert_eq!(
            (0..4).map(|s| c.stage_window(s)).collect::<Vec<_>>(),
            vec![12; 4]
        );
        assert_eq!(c.num_features(), 1024);
        let rates = c.drop_path_rates();
        assert_eq!(rates.len(), 24);
        assert!((rates[23] - 0.1).abs() < 1e-12 && rates[0] == 0.0);
    }

    #[test]
    fn reads_a_hf_config_and_round_trips() {
        let text = r#"{"model_type":"swin","image_size":384,"patch_size":4,"num_channels":3,"embed_dim":128,
            "depths":[2,2,18,2],"num_heads":[4,8,16,32],"window_size":12,"mlp_ratio":4.0,"qkv_bias":true,
            "hidden_dropout_prob":0.0,"attention_probs_dropout_prob":0.0,"drop_path_rate":0.1,"hidden_act":"gelu",
            "use_absolute_embeddings":false,"layer_norm_eps":1e-05,"encoder_stride":32}"#;
        let c = SwinConfig::from_hf_json_str(text).unwrap();
        assert_eq!(c, SwinConfig::swin_base_384());
        assert_eq!(SwinConfig::from_hf_json_str(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn inconsistent_configs_are_rejected_with_the_reason() {
        let err = SwinConfig::new(224, 96, vec![2, 2], vec![3], 7)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("equally long"), "{err}");
        let err = SwinConfig::from_hf_json_str(
            r#"{"embed_dim": 96, "depths": [2], "num_heads": [5], "window_size": 7}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not divisible"), "{err}");
    }
}
