//! docs/model.md §3.4: masked language modelling — the untied BERT-style prediction head (`mlm_score`),
//! applied to the transformed fused text features. The masking itself is a collate step of the
//! data pipeline; the masker lives with the tokenizer (`fiber_roberta::masking`) and is
//! re-exported here.

use burn::prelude::*;
use fiber_core::weights::{visit_layer_norm, visit_linear, Layout, WeightVisitor};
use fiber_roberta::RobertaLmHead;

use crate::loss::cross_entropy;

pub use fiber_roberta::masking::{MaskedBatch, MlmMasker, IGNORE_INDEX};

/// `mlm_score`: the BERT prediction head (dense → GELU → LayerNorm eps 1e-12 → decoder + bias;
/// the same computation as RoBERTa's `lm_head`), untied and freshly initialised (docs/model.md §3.1).
#[derive(Module, Debug)]
pub struct MlmHead<B: Backend> {
    /// The head; its weights live under `mlm_score.transform.*`, `mlm_score.decoder`, `mlm_score.bias`.
    pub head: RobertaLmHead<B>,
}

impl<B: Backend> MlmHead<B> {
    /// A fresh head (N(0, `std`), 0.02 in FIBER; zero biases; LayerNorm (1, 0)).
    pub fn new(hidden: usize, vocab: usize, std: f64, device: &B::Device) -> Self {
        Self {
            head: RobertaLmHead::with_sizes(hidden, vocab, 1e-12, std, device),
        }
    }

    /// Transformed text features `[batch, len, H]` → logits `[batch, len, vocab]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.head.forward(x)
    }

    /// Cross-entropy over positions whose label is not [`IGNORE_INDEX`]: logits
    /// `[batch, len, vocab]`, labels `[batch, len]` → `[1]`.
    pub fn loss(&self, logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [batch, len, vocab] = logits.dims();
        cross_entropy(
            logits.reshape([batch * len, vocab]),
            labels.reshape([batch * len]),
            Some(IGNORE_INDEX),
        )
    }

    /// Walks the parameters under `mlm_score.*`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        visit_linear(v, "mlm_score.transform.dense", &mut self.head.dense);
        visit_layer_norm(
            v,
            "mlm_score.transform.LayerNorm",
            &mut self.head.layer_norm,
        );
        visit_linear(v, "mlm_score.decoder", &mut self.head.decoder);
        v.visit("mlm_score.bias", &mut self.head.bias, Layout::Same);
    }
}
