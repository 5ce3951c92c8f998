//! The stack of RoBERTa layers, runnable over any range of layers.

use std::ops::Range;

use burn::prelude::*;
use fiber_core::weights::WeightVisitor;

use crate::config::RobertaConfig;
use crate::layer::RobertaLayer;

/// `encoder.layer.{i}` for i in 0..num_hidden_layers.
#[derive(Module, Debug)]
pub struct RobertaEncoder<B: Backend> {
    /// The layers, in order.
    pub layer: Vec<RobertaLayer<B>>,
}

impl<B: Backend> RobertaEncoder<B> {
    /// Fresh layers initialised as HuggingFace does.
    pub fn new(config: &RobertaConfig, device: &B::Device) -> Self {
        Self {
            layer: (0..config.num_hidden_layers)
                .map(|_| RobertaLayer::new(config, device))
                .collect(),
        }
    }

    /// Runs layers `range` (e.g. `0..6` for FIBER's uni-modal prefix):
    /// `[batch, len, hidden]` → `[batch, len, hidden]`. Panics if the range exceeds the stack.
    pub fn forward_layers(
        &self,
        mut hidden: Tensor<B, 3>,
        mask: Option<Tensor<B, 4>>,
        range: Range<usize>,
    ) -> Tensor<B, 3> {
        for layer in &self.layer[range] {
            hidden = layer.forward(hidden, mask.clone());
        }
        hidden
    }

    /// Runs every layer.
    pub fn forward(&self, hidden: Tensor<B, 3>, mask: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let n = self.layer.len();
        self.forward_layers(hidden, mask, 0..n)
    }

    /// Walks the parameters under `{key}.layer.{i}.*`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        for (i, layer) in self.layer.iter_mut().enumerate() {
            layer.visit_weights(v, &format!("{key}.layer.{i}"));
        }
    }
}
