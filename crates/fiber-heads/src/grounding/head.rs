//! The detector's outputs per level (docs/model.md §5.1): box regression (a 1×1 convolution
//! times a learnable per-level scale), centerness, and the region–token grounding logits
//!
//! `S(a, t) = O_a · P_t / exp(log_scale) + (ĥ_t · bias_lang + bias0)`, clamped to ±50,000,
//!
//! where `O_a` is the tower's feature at location `a`, `ĥ_t` the L2-normalised final text state
//! of token `t` (padding zeroed) and `P_t = Linear(ĥ_t / 2)`. The class convolution
//! `cls_logits` of the original is kept so its checkpoints load, but FIBER never uses it.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::conv::{Conv2dLayer, ConvInit};
use fiber_core::weights::{join_key, visit_linear, Layout, WeightVisitor};

use super::config::DetectorConfig;
use super::dyrelu::torch_linear;

/// Per-level outputs of the head for one batch.
#[derive(Debug, Clone)]
pub struct LevelOutputs<B: Backend> {
    /// Box deltas after the level's scale, `[batch, 4, H, W]`.
    pub bbox_reg: Tensor<B, 4>,
    /// Centerness logits `[batch, 1, H, W]`.
    pub centerness: Tensor<B, 4>,
    /// Region–token logits `[batch, H·W, len]`, locations row-major over (y, x).
    pub logits: Tensor<B, 3>,
}

/// The text side of the grounding score, computed once per batch.
#[derive(Debug, Clone)]
pub struct TokenQueries<B: Backend> {
    /// `P` `[batch, len, channels]`.
    pub projected: Tensor<B, 3>,
    /// `ĥ · bias_lang + bias0` `[batch, len]`.
    pub bias: Tensor<B, 2>,
}

/// The output layers; keys `cls_logits`, `bbox_pred`, `centerness`, `scales.{l}.scale`,
/// `dot_product_projection_text`, `log_scale`, `bias_lang`, `bias0`.
#[derive(Module, Debug)]
pub struct GroundingHead<B: Backend> {
    /// Unused class convolution `Conv1×1(C → classes)`, kept for the checkpoint.
    pub cls_logits: Conv2dLayer<B>,
    /// `Conv1×1(C → 4)`.
    pub bbox_pred: Conv2dLayer<B>,
    /// `Conv1×1(C → 1)`.
    pub centerness: Conv2dLayer<B>,
    /// One scale `[1]` per level (initialised to 1).
    pub scales: Vec<Param<Tensor<B, 1>>>,
    /// `Linear(text width → C)` applied to `ĥ / 2`.
    pub dot_product_projection_text: Linear<B>,
    /// `[1]`, the logarithm of the dot product's divisor (initialised to 0).
    pub log_scale: Param<Tensor<B, 1>>,
    /// `[text width]` (initialised to 0).
    pub bias_lang: Param<Tensor<B, 1>>,
    /// `[1]` (initialised to the prior bias, −4.595).
    pub bias0: Param<Tensor<B, 1>>,
    /// Clamp of the logits.
    pub logit_clamp: f64,
}

impl<B: Backend> GroundingHead<B> {
    /// Fresh output layers for `config` (N(0, 0.01) convolutions with zero bias, the class
    /// convolution's bias at the prior).
    pub fn new(config: &DetectorConfig, device: &B::Device) -> Self {
        let c = config.channels;
        let text = config.backbone.roberta.hidden_size;
        let normal = ConvInit::Normal {
            std: 0.01,
            bias: 0.0,
        };
        let prior = config.prior_bias();
        Self {
            cls_logits: Conv2dLayer::new(
                c,
                config.num_classes,
                1,
                1,
                ConvInit::Normal {
                    std: 0.01,
                    bias: prior,
                },
                device,
            ),
            bbox_pred: Conv2dLayer::new(c, 4, 1, 1, normal, device),
            centerness: Conv2dLayer::new(c, 1, 1, 1, normal, device),
            scales: (0..config.num_levels())
                .map(|_| Param::from_tensor(Tensor::ones([1], device)))
                .collect(),
            dot_product_projection_text: torch_linear(text, c, device),
            log_scale: Param::from_tensor(Tensor::full([1], config.log_scale_init, device)),
            bias_lang: Param::from_tensor(Tensor::zeros([text], device)),
            bias0: Param::from_tensor(Tensor::full([1], prior, device)),
            logit_clamp: config.logit_clamp,
        }
    }

    /// The text side from the last text layer's output `[batch, len, D]` and the padding mask
    /// `[batch, len]` (1 = token): states are zeroed at padding, L2-normalised, halved and
    /// projected.
    pub fn token_queries(
        &self,
        text: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> TokenQueries<B> {
        let [b, len, d] = text.dims();
        let mask = attention_mask.float().reshape([b, len, 1]);
        let normalised = normalize_tokens(text * mask);
        let projected = self
            .dot_product_projection_text
            .forward(normalised.clone().div_scalar(2.0));
        let bias = normalised
            .matmul(self.bias_lang.val().reshape([1, d, 1]).expand([b, d, 1]))
            .reshape([b, len])
            + self.bias0.val().reshape([1, 1]);
        TokenQueries { projected, bias }
    }

    /// Outputs of level `level` from the tower's map `[batch, C, H, W]`.
    pub fn level(
        &self,
        level: usize,
        tower: Tensor<B, 4>,
        queries: &TokenQueries<B>,
    ) -> LevelOutputs<B> {
        let [b, c, h, w] = tower.dims();
        let bbox_reg =
            self.bbox_pred.forward(tower.clone()) * self.scales[level].val().reshape([1, 1, 1, 1]);
        let centerness = self.centerness.forward(tower.clone());
        let regions = tower.reshape([b, c, h * w]).swap_dims(1, 2);
        let len = queries.bias.dims()[1];
        let divisor = self.log_scale.val().exp().reshape([1, 1, 1]);
        let logits = regions.matmul(queries.projected.clone().swap_dims(1, 2)) / divisor
            + queries.bias.clone().reshape([b, 1, len]);
        let logits = logits.clamp(-self.logit_clamp, self.logit_clamp);
        LevelOutputs {
            bbox_reg,
            centerness,
            logits,
        }
    }

    /// Walks the parameters under `prefix` with the original names.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, prefix: &str) {
        let key = |name: &str| join_key(prefix, name);
        self.cls_logits.visit_weights(v, &key("cls_logits"));
        self.bbox_pred.visit_weights(v, &key("bbox_pred"));
        self.centerness.visit_weights(v, &key("centerness"));
        for (l, scale) in self.scales.iter_mut().enumerate() {
            v.visit(&key(&format!("scales.{l}.scale")), scale, Layout::Same);
        }
        visit_linear(
            v,
            &key("dot_product_projection_text"),
            &mut self.dot_product_projection_text,
        );
        v.visit(&key("log_scale"), &mut self.log_scale, Layout::Same);
        v.visit(&key("bias_lang"), &mut self.bias_lang, Layout::Same);
        v.visit(&key("bias0"), &mut self.bias0, Layout::Same);
    }
}

/// L2-normalises each token `[batch, len, D]` as `F.normalize` does (norm floored at 1e-12).
/// The norm is `√(Σx² + 10⁻²⁴)`, the floored norm for every token of norm above ~10⁻¹²,
/// so that an all-zero (padding) token has a finite gradient.
fn normalize_tokens<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(2)
        .add_scalar(1e-24)
        .sqrt();
    x / norm
}
