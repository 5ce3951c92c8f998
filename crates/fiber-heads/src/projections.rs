//! docs/model.md §3.1: the shared projections and poolers that turn backbone tokens into the common
//! width H (768 for FIBER-Base): `cross_modal_*` for the fused path and their `_itc` twins for
//! the dual path.

use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::linear_normal;
use fiber_core::weights::{visit_linear, WeightVisitor};

/// `Linear(H → H)` followed by tanh (`{key}.dense`).
#[derive(Module, Debug)]
pub struct Pooler<B: Backend> {
    /// The dense layer.
    pub dense: Linear<B>,
}

impl<B: Backend> Pooler<B> {
    /// `[batch, H]` → `tanh(dense(x))` `[batch, H]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.dense.forward(x).tanh()
    }
}

/// One set of transforms and poolers (fused or ITC).
#[derive(Module, Debug)]
pub struct ModalityProjections<B: Backend> {
    /// `Linear(text_width → H)` on every text token.
    pub text_transform: Linear<B>,
    /// `Linear(image_width → H)` on every image token.
    pub image_transform: Linear<B>,
    /// Pooler on the first text token (`<s>`).
    pub text_pooler: Pooler<B>,
    /// Pooler on the mean of all image tokens.
    pub image_pooler: Pooler<B>,
}

impl<B: Backend> ModalityProjections<B> {
    /// New projections initialised N(0, 0.02) with zero biases (docs/model.md §3.1).
    pub fn new(
        text_width: usize,
        image_width: usize,
        hidden: usize,
        std: f64,
        device: &B::Device,
    ) -> Self {
        let lin = |i, o| linear_normal(i, o, true, std, device);
        Self {
            text_transform: lin(text_width, hidden),
            image_transform: lin(image_width, hidden),
            text_pooler: Pooler {
                dense: lin(hidden, hidden),
            },
            image_pooler: Pooler {
                dense: lin(hidden, hidden),
            },
        }
    }

    /// Pooled text `[batch, H]` from tokens `[batch, len, text_width]` (transform, then the
    /// pooler on token 0).
    pub fn pooled_text(&self, text: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, _, _] = text.dims();
        let first = text.slice([0..batch, 0..1]);
        let h = self.text_transform.forward(first);
        let width = h.dims()[2];
        self.text_pooler.forward(h.reshape([batch, width]))
    }

    /// Pooled image `[batch, H]` from tokens `[batch, n, image_width]` (transform, mean over all
    /// tokens, pooler).
    pub fn pooled_image(&self, image: Tensor<B, 3>) -> Tensor<B, 2> {
        let mean = self
            .image_transform
            .forward(image)
            .mean_dim(1)
            .squeeze_dim::<2>(1);
        self.image_pooler.forward(mean)
    }

    /// Walks the parameters under `{prefix}cross_modal_text_transform{suffix}` and the other
    /// three names (suffix `""` for the fused set, `"_itc"` for the dual set).
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, suffix: &str) {
        visit_linear(
            v,
            &format!("cross_modal_text_transform{suffix}"),
            &mut self.text_transform,
        );
        visit_linear(
            v,
            &format!("cross_modal_image_transform{suffix}"),
            &mut self.image_transform,
        );
        visit_linear(
            v,
            &format!("cross_modal_text_pooler{suffix}.dense"),
            &mut self.text_pooler.dense,
        );
        visit_linear(
            v,
            &format!("cross_modal_image_pooler{suffix}.dense"),
            &mut self.image_pooler.dense,
        );
    }
}

/// L2-normalises each row of `[n, d]` (with a floor of 1e-12 on the norm, as `F.normalize`).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
