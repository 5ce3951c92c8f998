//! FIBER with a downstream classifier: the VQA model (`vqa_classifier.*`, docs/model.md §4.1)
//! and the NLVR2 model (`nlvr2_classifier.*`, §4.2). The captioning model is [`FiberModel`]
//! itself on its captioning path (§4.4).

use burn::prelude::*;
use fiber_core::weights::WeightVisitor;

use crate::classifier::ClassifierHead;
use crate::model::FiberModel;

/// FIBER with the VQA classifier over `cls_feats`.
#[derive(Module, Debug)]
pub struct VqaModel<B: Backend> {
    /// The pre-trained model.
    pub fiber: FiberModel<B>,
    /// Linear(2H → 2H) → LayerNorm → GELU → Linear(2H → answers).
    pub vqa_classifier: ClassifierHead<B>,
}

impl<B: Backend> VqaModel<B> {
    /// A new classifier of `answers` on top of `fiber`, initialised with standard deviation
    /// `std` (the configuration's `head_initializer_range`).
    pub fn new(fiber: FiberModel<B>, answers: usize, std: f64, device: &B::Device) -> Self {
        let width = 2 * fiber.hidden_size();
        Self {
            fiber,
            vqa_classifier: ClassifierHead::vqa(width, answers, std, device),
        }
    }

    /// Answer logits `[n, answers]` of images `[n, 3, H, W]` and questions' ids and mask
    /// `[n, len]`.
    pub fn logits(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let out = self
            .fiber
            .backbone
            .forward_fused(pixels, input_ids, attention_mask);
        self.vqa_classifier.forward(self.fiber.cls_feats(&out))
    }

    /// Walks every parameter under the original checkpoint keys.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.fiber.visit_weights(v);
        self.vqa_classifier.visit_weights(v, "vqa_classifier");
    }
}

/// FIBER with the NLVR2 classifier over both images' `cls_feats`.
#[derive(Module, Debug)]
pub struct Nlvr2Model<B: Backend> {
    /// The pre-trained model.
    pub fiber: FiberModel<B>,
    /// Linear(4H → 2H) → LayerNorm → GELU → Linear(2H → 2).
    pub nlvr2_classifier: ClassifierHead<B>,
}

impl<B: Backend> Nlvr2Model<B> {
    /// A new classifier on top of `fiber`, initialised with standard deviation `std` (the
    /// configuration's `head_initializer_range`).
    pub fn new(fiber: FiberModel<B>, std: f64, device: &B::Device) -> Self {
        let width = 2 * fiber.hidden_size();
        Self {
            fiber,
            nlvr2_classifier: ClassifierHead::nlvr2(width, std, device),
        }
    }

    /// Logits `[n, 2]` (column 1: the statement is true) of left and right images
    /// `[n, 3, H, W]` and the sentences' ids and mask `[n, len]`.
    pub fn logits(
        &self,
        left: Tensor<B, 4>,
        right: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        self.nlvr2_classifier.forward(self.fiber.nlvr2_features(
            left,
            right,
            input_ids,
            attention_mask,
        ))
    }

    /// Walks every parameter under the original checkpoint keys.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.fiber.visit_weights(v);
        self.nlvr2_classifier.visit_weights(v, "nlvr2_classifier");
    }
}
