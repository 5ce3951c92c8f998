//! The fused backbone (docs/model.md §2.1, §2.2, §2.5): Swin and RoBERTa with gated co-attention in
//! their last `num_fuse_block` blocks/layers, run in lock-step pairs.
//!
//! The forward is split into a uni-modal prefix and a fused suffix. [`FiberBackbone::image_prefix`]
//! (patch embedding through the last unfused Swin block) and [`FiberBackbone::text_prefix`]
//! (embeddings through the last unfused text layer) are computed once per image and per text;
//! every fused forward that pairs them ([`FiberBackbone::fused_suffix`]: ITM positives and hard
//! negatives, MLM) and the dual path's remaining blocks ([`FiberBackbone::image_only_suffix`],
//! [`FiberBackbone::text_only_suffix`]) start from those states.

use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::linear_normal;
use fiber_core::kernels::{map_batch, BatchShard};
use fiber_core::weights::{visit_linear, WeightVisitor};
use fiber_roberta::RobertaModel;
use fiber_swin::{FeatureMap, SwinModel};

use crate::config::{FiberConfig, FusedPair};
use crate::error::FusionError;
use crate::image_to_text::ImageToTextAttention;
use crate::text_to_image::TextToImageAttention;

/// Text states after the uni-modal prefix, with the masks every later step needs.
#[derive(Debug, Clone)]
pub struct TextState<B: Backend> {
    /// `[batch, len, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// Additive padding mask `[batch, 1, 1, len]` (0 for tokens, −10000 for padding).
    pub mask: Tensor<B, 4>,
}

/// Image state: tokens on a grid, entering a given Swin stage.
#[derive(Debug, Clone)]
pub struct ImageState<B: Backend> {
    /// The tokens and their grid.
    pub map: FeatureMap<B>,
    /// The Swin stage these tokens are in.
    pub stage: usize,
}

fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(values, [indices.len()]),
        device,
    )
}

impl<B: Backend> TextState<B> {
    /// Rows `indices` of the batch (repeats allowed), e.g. hard-negative texts.
    pub fn select(&self, indices: &[usize]) -> Self {
        self.select_rows(index_tensor::<B>(indices, &self.hidden.device()))
    }

    /// Rows `indices` `[k]` of the batch, indices given on the device.
    pub fn select_rows(&self, idx: Tensor<B, 1, Int>) -> Self {
        Self {
            hidden: self.hidden.clone().select(0, idx.clone()),
            mask: self.mask.clone().select(0, idx),
        }
    }

    /// Concatenates batches of equal text length.
    pub fn cat(parts: Vec<Self>) -> Self {
        let (hidden, mask): (Vec<_>, Vec<_>) =
            parts.into_iter().map(|p| (p.hidden, p.mask)).unzip();
        Self {
            hidden: Tensor::cat(hidden, 0),
            mask: Tensor::cat(mask, 0),
        }
    }
}

impl<B: Backend> ImageState<B> {
    /// Rows `indices` of the batch (repeats allowed), e.g. hard-negative images.
    pub fn select(&self, indices: &[usize]) -> Self {
        self.select_rows(index_tensor::<B>(indices, &self.map.tokens.device()))
    }

    /// Rows `indices` `[k]` of the batch, indices given on the device.
    pub fn select_rows(&self, idx: Tensor<B, 1, Int>) -> Self {
        Self {
            map: FeatureMap {
                tokens: self.map.tokens.clone().select(0, idx),
                ..self.map.clone()
            },
            stage: self.stage,
        }
    }

    /// Concatenates batches on the same grid and stage.
    pub fn cat(parts: Vec<Self>) -> Self {
        let first = parts[0].clone();
        let tokens = Tensor::cat(parts.into_iter().map(|p| p.map.tokens).collect(), 0);
        Self {
            map: FeatureMap {
                tokens,
                ..first.map
            },
            stage: first.stage,
        }
    }
}

impl<B: Backend> BatchShard for TextState<B> {
    fn batch_len(&self) -> usize {
        self.hidden.dims()[0]
    }

    fn narrow_batch(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            hidden: self.hidden.narrow_batch(range.clone()),
            mask: self.mask.narrow_batch(range),
        }
    }
}

impl<B: Backend> BatchShard for ImageState<B> {
    fn batch_len(&self) -> usize {
        self.map.batch_len()
    }

    fn narrow_batch(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            map: self.map.narrow_batch(range),
            stage: self.stage,
        }
    }
}

/// Outputs of a two-modality forward.
#[derive(Debug, Clone)]
pub struct BackboneOutput<B: Backend> {
    /// Image tokens `[batch, n, C_last]` and their grid.
    pub image: FeatureMap<B>,
    /// Text tokens `[batch, len, hidden]`.
    pub text: Tensor<B, 3>,
}

impl<B: Backend> BackboneOutput<B> {
    /// Concatenates outputs along the batch.
    pub fn cat(parts: Vec<Self>) -> Self {
        let (image, text): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.image, p.text)).unzip();
        Self {
            image: FeatureMap::cat(image),
            text: Tensor::cat(text, 0),
        }
    }
}

/// Swin + RoBERTa with fusion modules; keys mirror the original FIBER checkpoint:
/// `vit_model.*` (with `attn.*_i2t` inside the fused blocks), `text_transformer.*` (with
/// `crossattention_t2i.*` and `alpha_t2i` in the fused layers) and, for captioning,
/// `cross_modal_att_layers.{i}`.
#[derive(Module, Debug)]
pub struct FiberBackbone<B: Backend> {
    /// The image backbone.
    pub vit_model: SwinModel<B>,
    /// The text backbone (its pooler is unused by FIBER but kept for the checkpoint).
    pub text_transformer: RobertaModel<B>,
    /// Image-to-text modules of the fused Swin blocks, in pair order.
    pub i2t: Vec<ImageToTextAttention<B>>,
    /// Text-to-image modules of the fused text layers, in pair order.
    pub t2i: Vec<TextToImageAttention<B>>,
    /// Captioning adapters `Linear(C_last → C_stage)` for fused layers whose paired stage is
    /// narrower than the last stage (layers 6–9 for FIBER-Base; docs/model.md §2.5), in pair order.
    pub caption_adapters: Vec<Option<Linear<B>>>,
    /// The fused pairs.
    #[module(skip)]
    pub pairs: Vec<FusedPair>,
    /// Reproduce the fused path's quirks (docs/model.md §2.2).
    pub original_fused_quirks: bool,
}

impl<B: Backend> FiberBackbone<B> {
    /// A freshly initialised backbone; with `caption_adapters` the captioning adapters are
    /// created too. New fusion modules start as in docs/model.md §6.3 (gates at 0).
    pub fn new(
        config: &FiberConfig,
        caption_adapters: bool,
        device: &B::Device,
    ) -> Result<Self, FusionError> {
        config.validate()?;
        let pairs = config.fused_pairs();
        let text_width = config.roberta.hidden_size;
        let last_width = config.swin.num_features();
        let i2t = pairs
            .iter()
            .map(|p| {
                let dim = config.swin.stage_dim(p.stage);
                ImageToTextAttention::new(
                    dim,
                    text_width,
                    config.swin.num_heads[p.stage],
                    config.fusion_version,
                    1e-5,
                    config.image_initializer_range,
                    config.gate_init,
                    device,
                )
            })
            .map(|m| match config.zero_fusion_outputs {
                true => m.with_zero_output(),
                false => m,
            })
            .collect();
        let t2i = pairs
            .iter()
            .map(|p| {
                TextToImageAttention::new(
                    &config.roberta,
                    config.swin.stage_dim(p.stage),
                    config.initializer_range,
                    config.gate_init,
                    device,
                )
            })
            .map(|m| match config.zero_fusion_outputs {
                true => m.with_zero_output(),
                false => m,
            })
            .collect();
        let caption_adapters = pairs
            .iter()
            .map(|p| {
                let dim = config.swin.stage_dim(p.stage);
                (caption_adapters && dim != last_width)
                    .then(|| linear_normal(last_width, dim, true, config.initializer_range, device))
            })
            .collect();
        Ok(Self {
            vit_model: SwinModel::new(&config.swin, device),
            text_transformer: RobertaModel::new(&config.roberta, true, device),
            i2t,
            t2i,
            caption_adapters,
            pairs,
            original_fused_quirks: config.original_fused_quirks,
        })
    }

    /// Applies the patch merging of every stage from `state.stage` up to (not including) `stage`.
    fn enter_stage(&self, mut state: ImageState<B>, stage: usize) -> ImageState<B> {
        while state.stage < stage {
            let map = state.map;
            let (tokens, (height, width)) =
                self.vit_model.layers[state.stage].merge(map.tokens, (map.height, map.width));
            state = ImageState {
                map: FeatureMap {
                    tokens,
                    height,
                    width,
                },
                stage: state.stage + 1,
            };
        }
        state
    }

    /// Runs plain blocks `blocks` of the current stage.
    fn run_blocks(&self, state: ImageState<B>, blocks: std::ops::Range<usize>) -> ImageState<B> {
        let map = state.map;
        let grid = (map.height, map.width);
        let tokens = self.vit_model.layers[state.stage].forward_blocks(map.tokens, grid, blocks);
        ImageState {
            map: FeatureMap {
                tokens,
                height: grid.0,
                width: grid.1,
            },
            stage: state.stage,
        }
    }

    /// Uni-modal image prefix: pixels `[batch, 3, H, W]` → the state entering the first fused
    /// block (patch embedding, all earlier stages with their merging, the unfused blocks of the
    /// first fused stage).
    ///
    /// On the CPU backend the batch is split across the rayon pool (`map_batch`), as in every
    /// inference entry point below.
    pub fn image_prefix(&self, pixels: Tensor<B, 4>) -> ImageState<B> {
        map_batch::<B, _, _, _>(self, pixels, Self::whole_image_prefix, ImageState::cat)
    }

    fn whole_image_prefix(&self, pixels: Tensor<B, 4>) -> ImageState<B> {
        let first = self.pairs[0];
        let state = ImageState {
            map: self.vit_model.embed(pixels),
            stage: 0,
        };
        let mut state = state;
        for s in 0..first.stage {
            state = self.run_blocks(state, 0..self.vit_model.layers[s].blocks.len());
            state = self.enter_stage(state, s + 1);
        }
        self.run_blocks(state, 0..first.block)
    }

    /// Uni-modal text prefix: ids and padding mask `[batch, len]` → embeddings through the last
    /// unfused layer, with the additive mask.
    pub fn text_prefix(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> TextState<B> {
        map_batch::<B, _, _, _>(
            self,
            (input_ids, attention_mask),
            |model, (ids, mask)| model.whole_text_prefix(ids, mask),
            TextState::cat,
        )
    }

    fn whole_text_prefix(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> TextState<B> {
        let mask = self.text_transformer.attention_mask(attention_mask, false);
        let hidden = self.text_transformer.embeddings.forward(input_ids, None);
        let hidden = self.text_transformer.encoder.forward_layers(
            hidden,
            Some(mask.clone()),
            0..self.pairs[0].layer,
        );
        TextState { hidden, mask }
    }

    /// One fused pair `k` (docs/model.md §2.2, step 3): both sides read the other's state from before the
    /// pair. `last_norm = false` skips the text layer's output LayerNorm. The image state must
    /// already be in the pair's stage.
    pub fn fused_pair(
        &self,
        k: usize,
        image: &ImageState<B>,
        text: &TextState<B>,
        last_norm: bool,
    ) -> (ImageState<B>, Tensor<B, 3>) {
        let pair = self.pairs[k];
        let block = &self.vit_model.layers[pair.stage].blocks[pair.block];
        let grid = (image.map.height, image.map.width);
        let x = image.map.tokens.clone();
        let s = block.attention_output(x.clone(), grid);
        let s = self.i2t[k].forward(s, text.hidden.clone(), text.mask.clone());
        let new_image = block.finish(x.clone(), s);

        let layer = &self.text_transformer.encoder.layer[pair.layer];
        let a = layer.self_attention_output(text.hidden.clone(), Some(text.mask.clone()));
        let a = self.t2i[k].forward(a, x);
        let new_text =
            layer.feed_forward(layer.attention_residual(a, text.hidden.clone()), last_norm);
        (
            ImageState {
                map: FeatureMap {
                    tokens: new_image,
                    height: grid.0,
                    width: grid.1,
                },
                stage: pair.stage,
            },
            new_text,
        )
    }

    /// The fused suffix from prefix states: every pair in lock step, with the patch merging
    /// between pairs of different stages. With the original quirks the final Swin norm is not
    /// applied and the last text layer skips its output LayerNorm.
    pub fn fused_suffix(&self, image: &ImageState<B>, text: &TextState<B>) -> BackboneOutput<B> {
        map_batch::<B, _, _, _>(
            self,
            (image.clone(), text.clone()),
            |model, (image, text)| model.whole_fused_suffix(image, text),
            BackboneOutput::cat,
        )
    }

    fn whole_fused_suffix(&self, image: ImageState<B>, text: TextState<B>) -> BackboneOutput<B> {
        let mut image = image;
        let mut text = text;
        let last = self.pairs.len() - 1;
        for (k, pair) in self.pairs.iter().enumerate() {
            image = self.enter_stage(image, pair.stage);
            let last_norm = !(self.original_fused_quirks && k == last);
            let (new_image, new_text) = self.fused_pair(k, &image, &text, last_norm);
            image = new_image;
            text = TextState {
                hidden: new_text,
                mask: text.mask,
            };
        }
        let mut map = image.map;
        if !self.original_fused_quirks {
            map.tokens = self.vit_model.norm.forward(map.tokens);
        }
        BackboneOutput {
            image: map,
            text: text.hidden,
        }
    }

    /// The image-only remainder of the dual encoder (docs/model.md §2.5): the fused blocks run without
    /// text, then the final Swin LayerNorm → `[batch, n, C_last]`. Reads no fusion parameter.
    pub fn image_only_suffix(&self, image: &ImageState<B>) -> FeatureMap<B> {
        map_batch::<B, _, _, _>(
            self,
            image.clone(),
            |model, image| {
                let mut map = model.image_blocks_to_end(image).map;
                map.tokens = model.vit_model.norm.forward(map.tokens);
                map
            },
            FeatureMap::cat,
        )
    }

    /// Runs every remaining block (and merging) without text; no final norm.
    fn image_blocks_to_end(&self, image: ImageState<B>) -> ImageState<B> {
        let mut state = image;
        let first = self.pairs[0];
        // The prefix stops inside `first.stage` at `first.block`.
        let mut start = if state.stage == first.stage {
            first.block
        } else {
            0
        };
        for s in state.stage..self.vit_model.layers.len() {
            state = self.enter_stage(state, s);
            state = self.run_blocks(state, start..self.vit_model.layers[s].blocks.len());
            start = 0;
        }
        state
    }

    /// The text-only remainder of the dual encoder: the fused layers run without image, all
    /// with their output LayerNorm → `[batch, len, hidden]`. Reads no fusion parameter.
    pub fn text_only_suffix(&self, text: &TextState<B>) -> Tensor<B, 3> {
        let n = self.text_transformer.encoder.layer.len();
        map_batch::<B, _, _, _>(
            self,
            text.clone(),
            |model, text| {
                model.text_transformer.encoder.forward_layers(
                    text.hidden,
                    Some(text.mask),
                    model.pairs[0].layer..n,
                )
            },
            |parts| Tensor::cat(parts, 0),
        )
    }

    /// Fusion encoder from inputs: pixels `[batch, 3, H, W]`, ids and mask `[batch, len]`.
    pub fn forward_fused(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> BackboneOutput<B> {
        let image = self.image_prefix(pixels);
        let text = self.text_prefix(input_ids, attention_mask);
        self.fused_suffix(&image, &text)
    }

    /// Dual encoder from inputs: image-only (with the final norm) and text-only outputs.
    pub fn forward_dual(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> BackboneOutput<B> {
        let image = self.image_only_suffix(&self.image_prefix(pixels));
        let text = self.text_only_suffix(&self.text_prefix(input_ids, attention_mask));
        BackboneOutput { image, text }
    }

    /// Image side of captioning (docs/model.md §2.5): all stages without text and without the final
    /// norm → `[batch, n, C_last]`. Computed once per image and reused at every decoding step.
    pub fn caption_image(&self, pixels: Tensor<B, 4>) -> FeatureMap<B> {
        map_batch::<B, _, _, _>(
            self,
            pixels,
            |model, pixels| {
                model
                    .image_blocks_to_end(model.whole_image_prefix(pixels))
                    .map
            },
            FeatureMap::cat,
        )
    }

    /// Text side of captioning (docs/model.md §2.5): causal and padding masks on self-attention, no
    /// image-to-text fusion; the fused layers attend to the final image tokens (through the
    /// adapters where the paired stage is narrower); every layer keeps its LayerNorm →
    /// `[batch, len, hidden]`. Fails if the model was built without captioning adapters.
    pub fn caption_text(
        &self,
        image: &FeatureMap<B>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>, FusionError> {
        let mask = self.text_transformer.attention_mask(attention_mask, true);
        let mut hidden = self.text_transformer.embeddings.forward(input_ids, None);
        hidden = self.text_transformer.encoder.forward_layers(
            hidden,
            Some(mask.clone()),
            0..self.pairs[0].layer,
        );
        let last_width = image.tokens.dims()[2];
        for (k, pair) in self.pairs.iter().enumerate() {
            let context = match &self.caption_adapters[k] {
                Some(adapter) => adapter.forward(image.tokens.clone()),
                None if self.t2i[k].attention.key.weight.dims()[0] == last_width => image.tokens.clone(),
                None => {
                    return Err(FusionError::InvalidConfig(format!(
                        "captioning needs the adapter cross_modal_att_layers.{} (text layer {} attends to stage {}); build the backbone with captioning adapters",
                        pair.layer, pair.layer, pair.stage
                    )))
                }
            };
            let layer = &self.text_transformer.encoder.layer[pair.layer];
            let a = layer.self_attention_output(hidden.clone(), Some(mask.clone()));
            let a = self.t2i[k].forward(a, context);
            hidden = layer.feed_forward(layer.attention_residual(a, hidden), true);
        }
        Ok(hidden)
    }

    /// Walks every parameter with the original FIBER checkpoint keys under `prefix`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        let key = |name: &str| fiber_core::weights::join_key(prefix, name);
        self.vit_model.visit_weights(v, &key("vit_model"));
        self.text_transformer
            .visit_weights(v, &key("text_transformer"));
        self.visit_fusion_weights(v, prefix);
    }

    /// Walks only the fusion parameters (i2t, t2i, adapters), under the same keys.
    pub fn visit_fusion_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        let key = |name: &str| fiber_core::weights::join_key(prefix, name);
        for (k, pair) in self.pairs.clone().iter().enumerate() {
            self.i2t[k].visit_weights(
                v,
                &key(&format!(
                    "vit_model.layers.{}.blocks.{}.attn",
                    pair.stage, pair.block
                )),
            );
            self.t2i[k].visit_weights(
                v,
                &key(&format!("text_transformer.encoder.layer.{}", pair.layer)),
            );
            if let Some(adapter) = &mut self.caption_adapters[k] {
                visit_linear(
                    v,
                    &key(&format!("cross_modal_att_layers.{}", pair.layer)),
                    adapter,
                );
            }
        }
    }
}
