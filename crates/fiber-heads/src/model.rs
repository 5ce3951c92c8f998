//! The coarse-grained FIBER model: the fusion backbone with the shared projections and the
//! pre-training heads (docs/model.md §3), and the coarse pre-training step (ITC + ITM + MLM) that reuses
//! each image's and text's uni-modal prefix across every forward that needs it.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use fiber_core::store::index_values;
use fiber_core::weights::{Layout, WeightVisitor};
use fiber_fusion::{
    BackboneOutput, FiberBackbone, FiberConfig, FusionError, ImageState, TextState,
};
use rand::Rng;

use crate::itc::{itc_loss, FeatureQueue, Temperature};
use crate::itm::{draw_hard_negatives, ItmHead};
use crate::mlm::MlmHead;
use crate::projections::{l2_normalize, ModalityProjections};

/// FIBER with its coarse pre-training heads; keys as the original checkpoint (docs/model.md §6.2).
#[derive(Module, Debug)]
pub struct FiberModel<B: Backend> {
    /// The fused backbone.
    pub backbone: FiberBackbone<B>,
    /// `cross_modal_*`: projections and poolers of the fused path.
    pub fused: ModalityProjections<B>,
    /// `cross_modal_*_itc`: projections and poolers of the dual path.
    pub itc: ModalityProjections<B>,
    /// `mlm_score`.
    pub mlm_score: MlmHead<B>,
    /// `itm_score`.
    pub itm_score: ItmHead<B>,
    /// `temp`.
    pub temperature: Temperature<B>,
}

/// The inputs of one coarse pre-training step.
#[derive(Debug, Clone)]
pub struct PretrainBatch<B: Backend> {
    /// `[batch, 3, H, W]`.
    pub pixels: Tensor<B, 4>,
    /// `[batch, len]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, len]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// MLM inputs `[batch, len]` (see [`crate::mlm::MlmMasker`]).
    pub masked_ids: Tensor<B, 2, Int>,
    /// MLM labels `[batch, len]`, −100 where no loss is taken.
    pub mlm_labels: Tensor<B, 2, Int>,
    /// Dataset index of each sample (kept in the queue for hard-negative mining).
    pub indices: Vec<usize>,
    /// Weight of the uniform distribution in this step's ITM negative draw (0 in FIBER: every
    /// negative from the ITC softmax; see [`draw_hard_negatives`]).
    pub uniform_negative_share: f64,
}

/// A queued sample's inputs fetched again by dataset index: pixels `[n, 3, H, W]`, token ids
/// and attention mask `[n, len]`.
pub type FetchedInputs<B> = (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>);

/// The ITC queue and how its samples' inputs are fetched again.
type QueueSource<'a, B, E> = (
    &'a FeatureQueue<B>,
    &'a dyn Fn(&[usize]) -> Result<FetchedInputs<B>, E>,
);

/// Losses of one step, each `[1]`.
#[derive(Debug, Clone)]
pub struct PretrainLosses<B: Backend> {
    /// `L_itc + L_itm + L_mlm` (weights 1, 1, 1; docs/model.md §3.5).
    pub total: Tensor<B, 1>,
    /// Contrastive loss.
    pub itc: Tensor<B, 1>,
    /// Matching loss.
    pub itm: Tensor<B, 1>,
    /// Masked-LM loss.
    pub mlm: Tensor<B, 1>,
    /// L2-normalised ITC features of this batch, to push into the queue after the step.
    pub itc_features: (Tensor<B, 2>, Tensor<B, 2>),
}

impl<B: Backend> FiberModel<B> {
    /// A fresh model: the backbone as [`FiberBackbone::new`] (with the captioning adapters
    /// when `caption_adapters`), heads initialised as in docs/model.md §3.1.
    pub fn new(
        config: &FiberConfig,
        caption_adapters: bool,
        device: &B::Device,
    ) -> Result<Self, FusionError> {
        let backbone = FiberBackbone::new(config, caption_adapters, device)?;
        let (text_width, image_width) = (config.roberta.hidden_size, config.swin.num_features());
        let (hidden, std) = (text_width, config.head_initializer_range);
        Ok(Self {
            backbone,
            fused: ModalityProjections::new(text_width, image_width, hidden, std, device),
            itc: ModalityProjections::new(text_width, image_width, hidden, std, device),
            mlm_score: MlmHead::new(hidden, config.roberta.vocab_size, std, device),
            itm_score: ItmHead::new(2 * hidden, std, device),
            temperature: Temperature::new(0.07, device),
        })
    }

    /// The width `H` of the pooled features (the text backbone's hidden size); `cls_feats` are
    /// `2H` wide.
    pub fn hidden_size(&self) -> usize {
        self.itm_score.fc.weight.dims()[0] / 2
    }

    /// Clamps the ITC temperature into its range (call before every training step, docs/model.md §3.2).
    pub fn clamp_temperature(mut self) -> Self {
        self.temperature = self.temperature.clamp_in_place();
        self
    }

    /// `cls_feats` `[n, 2H]`: pooled fused text (token 0) and pooled fused image (mean).
    pub fn cls_feats(&self, out: &BackboneOutput<B>) -> Tensor<B, 2> {
        Tensor::cat(
            vec![
                self.fused.pooled_text(out.text.clone()),
                self.fused.pooled_image(out.image.tokens.clone()),
            ],
            1,
        )
    }

    /// L2-normalised dual-encoder features `[n, H]` of images and texts from their prefixes.
    pub fn itc_features(
        &self,
        image: &ImageState<B>,
        text: &TextState<B>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (self.itc_image_features(image), self.itc_text_features(text))
    }

    /// L2-normalised dual-encoder image features `[n, H]` from image prefixes.
    pub fn itc_image_features(&self, image: &ImageState<B>) -> Tensor<B, 2> {
        let tokens = self.backbone.image_only_suffix(image).tokens;
        l2_normalize(self.itc.pooled_image(tokens))
    }

    /// L2-normalised dual-encoder text features `[n, H]` from text prefixes.
    pub fn itc_text_features(&self, text: &TextState<B>) -> Tensor<B, 2> {
        l2_normalize(self.itc.pooled_text(self.backbone.text_only_suffix(text)))
    }

    /// NLVR2 features (docs/model.md §4.2): two fused forwards, (left image, sentence) and (right image,
    /// sentence), sharing the sentence's prefix; their `cls_feats` concatenated → `[n, 4H]`.
    pub fn nlvr2_features(
        &self,
        left: Tensor<B, 4>,
        right: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let text = self.backbone.text_prefix(input_ids, attention_mask);
        let left = self
            .backbone
            .fused_suffix(&self.backbone.image_prefix(left), &text);
        let right = self
            .backbone
            .fused_suffix(&self.backbone.image_prefix(right), &text);
        Tensor::cat(vec![self.cls_feats(&left), self.cls_feats(&right)], 1)
    }

    /// MLM logits `[n, len, vocab]` from a fused output.
    pub fn mlm_logits(&self, out: &BackboneOutput<B>) -> Tensor<B, 3> {
        self.mlm_score
            .forward(self.fused.text_transform.forward(out.text.clone()))
    }

    /// One coarse pre-training step's losses with the ITC queue (docs/model.md §3.2–§3.4). Uni-modal prefixes are computed
    /// once per image and text and shared by the dual path, the 3·batch ITM forwards and the
    /// MLM forward. Hard negatives are drawn over the batch and the queue; a queued candidate's
    /// inputs are fetched again through `fetch` (dataset index → pixels `[1, 3, H, W]`, ids and
    /// mask `[n, len]` for `n` indices); a failed fetch ends the step with its error.
    pub fn pretrain_losses_with_queue<E>(
        &self,
        batch: &PretrainBatch<B>,
        queue: &FeatureQueue<B>,
        fetch: &dyn Fn(&[usize]) -> Result<FetchedInputs<B>, E>,
        rng: &mut impl Rng,
    ) -> Result<PretrainLosses<B>, E> {
        self.losses(batch, Some((queue, fetch)), rng)
    }

    /// [`FiberModel::pretrain_losses_with_queue`] without a queue: ITC over the batch, hard
    /// negatives drawn from the batch.
    pub fn pretrain_losses(
        &self,
        batch: &PretrainBatch<B>,
        rng: &mut impl Rng,
    ) -> PretrainLosses<B> {
        let no_queue: Option<QueueSource<'_, B, std::convert::Infallible>> = None;
        match self.losses(batch, no_queue, rng) {
            Ok(losses) => losses,
            Err(never) => match never {},
        }
    }

    fn losses<E>(
        &self,
        batch: &PretrainBatch<B>,
        queue: Option<QueueSource<'_, B, E>>,
        rng: &mut impl Rng,
    ) -> Result<PretrainLosses<B>, E> {
        let fetch = queue.map(|(_, fetch)| fetch);
        let n = batch.indices.len();
        let image = self.backbone.image_prefix(batch.pixels.clone());
        let text = self
            .backbone
            .text_prefix(batch.input_ids.clone(), batch.attention_mask.clone());

        // ITC over the batch and the queue.
        let (image_feats, text_feats) = self.itc_features(&image, &text);
        let usable_queue = match queue {
            Some((queue, _)) => queue.clone(),
            None => FeatureQueue::new(0),
        };
        let itc = itc_loss(
            image_feats.clone(),
            text_feats.clone(),
            &usable_queue,
            self.temperature.value(),
        );

        // Hard negatives from the (detached) similarities: a text for each image, an image for
        // each text, drawn on the device from uniforms of the seeded generator.
        let columns = itc.logits_i2t.dims()[1];
        let device = itc.logits_i2t.device();
        let mut uniforms = || {
            let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            Tensor::<B, 1>::from_data(TensorData::new(values, [n]), (&device, DType::F32))
        };
        let share = batch.uniform_negative_share;
        let neg_text_cols = draw_hard_negatives(itc.logits_i2t.clone().detach(), uniforms(), share);
        let neg_image_cols =
            draw_hard_negatives(itc.logits_t2i.clone().detach(), uniforms(), share);

        let (neg_texts, neg_images) = match fetch {
            // Candidates beyond the batch come from the queue: read the chosen columns back,
            // fetch the queued ones' inputs and compute their prefixes.
            Some(fetch) if columns > n => {
                let neg_text_cols = index_values(neg_text_cols);
                let neg_image_cols = index_values(neg_image_cols);
                let queued: Vec<usize> = neg_text_cols
                    .iter()
                    .chain(&neg_image_cols)
                    .filter(|&&c| c >= n)
                    .map(|&c| c - n)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut image_pool = image.clone();
                let mut text_pool = text.clone();
                let mut remap = std::collections::HashMap::new();
                if !queued.is_empty() {
                    let dataset_indices: Vec<usize> =
                        queued.iter().map(|&q| usable_queue.indices()[q]).collect();
                    let (pixels, ids, mask) = fetch(&dataset_indices)?;
                    image_pool =
                        ImageState::cat(vec![image_pool, self.backbone.image_prefix(pixels)]);
                    text_pool =
                        TextState::cat(vec![text_pool, self.backbone.text_prefix(ids, mask)]);
                    for (k, &q) in queued.iter().enumerate() {
                        remap.insert(q + n, n + k);
                    }
                }
                let row = |c: usize| if c < n { c } else { remap[&c] };
                let rows = |cols: &[usize]| cols.iter().map(|&c| row(c)).collect::<Vec<_>>();
                (
                    text_pool.select(&rows(&neg_text_cols)),
                    image_pool.select(&rows(&neg_image_cols)),
                )
            }
            // Only the batch: the picks stay on the device.
            _ => (
                text.select_rows(neg_text_cols),
                image.select_rows(neg_image_cols),
            ),
        };

        // ITM: (image, text) matching; (image, hard text) and (hard image, text) not.
        let itm_images = ImageState::cat(vec![image.clone(), image.clone(), neg_images]);
        let itm_texts = TextState::cat(vec![text.clone(), neg_texts, text.clone()]);
        let fused = self.backbone.fused_suffix(&itm_images, &itm_texts);
        let itm_logits = self.itm_score.forward(self.cls_feats(&fused));
        let itm = self.itm_score.loss(itm_logits, n);

        // MLM: masked text fused with the (unmasked) image prefix.
        let masked = self
            .backbone
            .text_prefix(batch.masked_ids.clone(), batch.attention_mask.clone());
        let mlm_out = self.backbone.fused_suffix(&image, &masked);
        let mlm_logits = self.mlm_logits(&mlm_out);
        let mlm = self.mlm_score.loss(mlm_logits, batch.mlm_labels.clone());

        let total = itc.loss.clone() + itm.clone() + mlm.clone();
        Ok(PretrainLosses {
            total,
            itc: itc.loss,
            itm,
            mlm,
            itc_features: (image_feats, text_feats),
        })
    }

    /// Walks every parameter under the original checkpoint keys.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.backbone.visit_weights(v, "");
        self.fused.visit_weights(v, "");
        self.itc.visit_weights(v, "_itc");
        self.mlm_score.visit_weights(v);
        self.itm_score.visit_weights(v);
        v.visit("temp", &mut self.temperature.temp, Layout::Same);
    }
}
