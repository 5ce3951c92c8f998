//! docs/model.md §4.1, §4.2: the VQA and NLVR2 classifiers, `Linear → LayerNorm → GELU → Linear` on
//! `cls_feats` (keys `{name}.0`, `{name}.1`, `{name}.3`, as the original `nn.Sequential`).

use burn::nn::Linear;
use burn::prelude::*;
use fiber_core::init::{layer_norm, linear_normal};
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, WeightVisitor};
use fiber_core::Activation;

use crate::loss::{binary_cross_entropy_with_logits, cross_entropy};

/// A two-layer classifier head.
#[derive(Module, Debug)]
pub struct ClassifierHead<B: Backend> {
    /// `{name}.0`: `Linear(input → hidden)`.
    pub dense: Linear<B>,
    /// `{name}.1`: LayerNorm over `hidden`.
    pub norm: LayerNorm<B>,
    /// `{name}.3`: `Linear(hidden → classes)`.
    pub output: Linear<B>,
}

impl<B: Backend> ClassifierHead<B> {
    /// A fresh head (N(0, `std`), 0.02 in FIBER; zero biases; LayerNorm (1, 0)).
    pub fn new(input: usize, hidden: usize, classes: usize, std: f64, device: &B::Device) -> Self {
        Self {
            dense: linear_normal(input, hidden, true, std, device),
            norm: layer_norm(hidden, 1e-5, device),
            output: linear_normal(hidden, classes, true, std, device),
        }
    }

    /// The VQA head for `cls_feats` of width `width` (2H) and `answers` classes (3129 for VQAv2).
    pub fn vqa(width: usize, answers: usize, std: f64, device: &B::Device) -> Self {
        Self::new(width, width, answers, std, device)
    }

    /// The NLVR2 head on two concatenated `cls_feats` (4H → 2H → 2).
    pub fn nlvr2(width: usize, std: f64, device: &B::Device) -> Self {
        Self::new(2 * width, width, 2, std, device)
    }

    /// `[n, input]` → logits `[n, classes]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.output
            .forward(Activation::Gelu.forward(self.norm.forward(self.dense.forward(x))))
    }

    /// VQA loss (docs/model.md §4.1): binary cross-entropy with logits against soft scores `[n, answers]`,
    /// averaged over every entry and multiplied by the number of answers → `[1]`.
    pub fn vqa_loss(&self, logits: Tensor<B, 2>, soft_scores: Tensor<B, 2>) -> Tensor<B, 1> {
        let answers = logits.dims()[1] as f64;
        binary_cross_entropy_with_logits(logits, soft_scores) * answers
    }

    /// NLVR2 loss (docs/model.md §4.2): cross-entropy against labels `[n]` (0 false, 1 true) → `[1]`.
    pub fn nlvr2_loss(&self, logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        cross_entropy(logits, labels, None)
    }

    /// Walks the parameters under `{name}.0`, `{name}.1`, `{name}.3`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, name: &str) {
        visit_linear(v, &format!("{name}.0"), &mut self.dense);
        visit_layer_norm(v, &format!("{name}.1"), &mut self.norm);
        visit_linear(v, &format!("{name}.3"), &mut self.output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn vqa_loss_is_mean_bce_times_the_number_of_answers() {
        let device = Default::default();
        let head = ClassifierHead::<B>::vqa(4, 3, 0.02, &device);
        let logits = Tensor::<B, 2>::from_floats([[0.0, 1.0, -2.0]], &device);
        let scores = Tensor::<B, 2>::from_floats([[1.0, 0.3, 0.0]], &device);
        let loss = head.vqa_loss(logits, scores).into_scalar() as f64;
        let bce = |x: f64, t: f64| {
            let p = 1.0 / (1.0 + (-x).exp());
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        };
        let expected = (bce(0.0, 1.0) + bce(1.0, 0.3) + bce(-2.0, 0.0)) / 3.0 * 3.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }

    #[test]
    fn nlvr2_head_takes_two_concatenated_features() {
        let device = Default::default();
        let head = ClassifierHead::<B>::nlvr2(6, 0.02, &device);
        let logits = head.forward(Tensor::zeros([3, 12], &device));
        assert_eq!(logits.dims(), [3, 2]);
    }
}
