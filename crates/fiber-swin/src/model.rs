//! The Swin Transformer backbone with every intermediate output FIBER needs.

use burn::prelude::*;
use fiber_core::init::layer_norm;
use fiber_core::kernels::BatchShard;
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{join_key, visit_layer_norm, WeightVisitor};

use crate::config::SwinConfig;
use crate::embeddings::PatchEmbed;
use crate::stage::SwinStage;

/// Tokens on a spatial grid.
#[derive(Debug, Clone)]
pub struct FeatureMap<B: Backend> {
    /// `[batch, height·width, channels]`, row-major over the grid.
    pub tokens: Tensor<B, 3>,
    /// Grid height.
    pub height: usize,
    /// Grid width.
    pub width: usize,
}

impl<B: Backend> BatchShard for FeatureMap<B> {
    fn batch_len(&self) -> usize {
        self.tokens.dims()[0]
    }

    fn narrow_batch(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            tokens: self.tokens.narrow_batch(range),
            height: self.height,
            width: self.width,
        }
    }
}

impl<B: Backend> FeatureMap<B> {
    /// Concatenates maps on the same grid along the batch.
    pub fn cat(parts: Vec<Self>) -> Self {
        let (height, width) = (parts[0].height, parts[0].width);
        Self {
            tokens: Tensor::cat(parts.into_iter().map(|p| p.tokens).collect(), 0),
            height,
            width,
        }
    }

    /// The same values as an NCHW map `[batch, channels, height, width]`.
    pub fn nchw(&self) -> Tensor<B, 4> {
        let [b, _, c] = self.tokens.dims();
        self.tokens
            .clone()
            .reshape([b, self.height, self.width, c])
            .permute([0, 3, 1, 2])
    }
}

/// What [`SwinModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct SwinOutput<B: Backend> {
    /// Last stage after the final LayerNorm, `[batch, tokens, C_last]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// Mean of `last_hidden_state` over tokens, `[batch, C_last]`.
    pub pooler_output: Tensor<B, 2>,
    /// The patch embedding, then each stage's output after its merging (HuggingFace's
    /// `hidden_states` / `reshaped_hidden_states`); the last one is before the final norm.
    pub hidden_states: Vec<FeatureMap<B>>,
    /// Each stage's output before its patch merging (the detection FPN's inputs).
    pub stage_outputs: Vec<FeatureMap<B>>,
}

/// Swin v1; keys mirror the original layout: `patch_embed.*`, `layers.{s}.*`, `norm.*`.
#[derive(Module, Debug)]
pub struct SwinModel<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// The stages.
    pub layers: Vec<SwinStage<B>>,
    /// Final LayerNorm over the last stage's width.
    pub norm: LayerNorm<B>,
}

impl<B: Backend> SwinModel<B> {
    /// A freshly initialised model (timm initialisation).
    pub fn new(config: &SwinConfig, device: &B::Device) -> Self {
        let rates = config.drop_path_rates();
        let mut start = 0;
        let layers = (0..config.num_stages())
            .map(|s| {
                let stage =
                    SwinStage::new(config, s, &rates[start..start + config.depths[s]], device);
                start += config.depths[s];
                stage
            })
            .collect();
        Self {
            patch_embed: PatchEmbed::new(config, device),
            layers,
            norm: layer_norm(config.num_features(), config.layer_norm_eps, device),
        }
    }

    /// Pixels `[batch, channels, H, W]` → patch tokens and their grid.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> FeatureMap<B> {
        let (tokens, (height, width)) = self.patch_embed.forward(pixels);
        FeatureMap {
            tokens,
            height,
            width,
        }
    }

    /// Runs the whole backbone on pixels `[batch, channels, H, W]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> SwinOutput<B> {
        let mut x = self.embed(pixels);
        let mut hidden_states = vec![x.clone()];
        let mut stage_outputs = Vec::with_capacity(self.layers.len());
        for stage in &self.layers {
            let grid = (x.height, x.width);
            let tokens = stage.forward_blocks(x.tokens, grid, 0..stage.blocks.len());
            stage_outputs.push(FeatureMap {
                tokens: tokens.clone(),
                height: grid.0,
                width: grid.1,
            });
            let (tokens, (height, width)) = stage.merge(tokens, grid);
            x = FeatureMap {
                tokens,
                height,
                width,
            };
            hidden_states.push(x.clone());
        }
        let last_hidden_state = self.norm.forward(x.tokens);
        let pooler_output = last_hidden_state.clone().mean_dim(1).squeeze_dim::<2>(1);
        SwinOutput {
            last_hidden_state,
            pooler_output,
            hidden_states,
            stage_outputs,
        }
    }

    /// Walks every parameter under `prefix`, with the original key names.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        self.visit_body_weights(v, prefix);
        visit_layer_norm(v, &join_key(prefix, "norm"), &mut self.norm);
    }

    /// Walks the patch embedding and the stages under `prefix`, without the final LayerNorm
    /// (which the detector's Swin does not have).
    pub fn visit_body_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        self.patch_embed
            .visit_weights(v, &join_key(prefix, "patch_embed"));
        for (s, stage) in self.layers.iter_mut().enumerate() {
            stage.visit_weights(v, &join_key(prefix, &format!("layers.{s}")));
        }
    }
}
