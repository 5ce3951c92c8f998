//! Spec C.3: image–text matching with global hard negatives sampled from the ITC similarities.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_core::init::linear_normal;
use fiber_core::weights::{visit_linear, WeightVisitor};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;

use crate::loss::cross_entropy;

/// `itm_score.fc`: `Linear(2H → 2)` on `cls_feats`; class 1 means "matching".
#[derive(Module, Debug)]
pub struct ItmHead<B: Backend> {
    /// The classifier.
    pub fc: Linear<B>,
}

impl<B: Backend> ItmHead<B> {
    /// A fresh head for `cls_feats` of width `width` (N(0, 0.02), zero bias).
    pub fn new(width: usize, device: &B::Device) -> Self {
        Self {
            fc: linear_normal(width, 2, true, 0.02, device),
        }
    }

    /// Logits `[n, 2]` from `cls_feats` `[n, 2H]`.
    pub fn forward(&self, cls_feats: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc.forward(cls_feats)
    }

    /// The retrieval score: the matching logit `[n]` (what the original's `rank_output`
    /// computes, spec D.3).
    pub fn score(&self, cls_feats: Tensor<B, 2>) -> Tensor<B, 1> {
        let logits = self.forward(cls_feats);
        let [n, _] = logits.dims();
        logits.slice([0..n, 1..2]).reshape([n])
    }

    /// ITM loss over `logits` `[n, 2]` whose first `positives` rows are matching pairs and
    /// the rest negatives → `[1]`.
    pub fn loss(&self, logits: Tensor<B, 2>, positives: usize) -> Tensor<B, 1> {
        let n = logits.dims()[0];
        let labels: Vec<i64> = (0..n).map(|i| (i < positives) as i64).collect();
        let targets = Tensor::from_data(TensorData::new(labels, [n]), &logits.device());
        cross_entropy(logits, targets, None)
    }

    /// Walks the parameters under `itm_score.fc`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        visit_linear(v, "itm_score.fc", &mut self.fc);
    }
}

/// For each row b of `similarities` (`rows × columns`, row-major: the ITC logits of row b
/// against every candidate), draws one candidate from `softmax(row)` with column `own[b]`
/// excluded (spec C.3: the own pair never serves as its own negative; 1e-9 is added to every
/// other weight as the original does). Returns the chosen columns.
pub fn sample_hard_negatives(
    similarities: &[f32],
    columns: usize,
    own: &[usize],
    rng: &mut impl Rng,
) -> Vec<usize> {
    similarities
        .chunks(columns)
        .zip(own)
        .map(|(row, &own)| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = row.iter().map(|&s| ((s - max) as f64).exp()).sum();
            let weights: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(j, &s)| {
                    if j == own {
                        0.0
                    } else {
                        ((s - max) as f64).exp() / total + 1e-9
                    }
                })
                .collect();
            match WeightedIndex::new(&weights) {
                Ok(dist) => dist.sample(rng),
                // A single candidate (the own pair): there is nothing else to draw.
                Err(_) => own,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hard_negatives_never_return_the_positive_and_follow_the_softmax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let row = [2.0f32, 0.0, 1.0, -1.0];
        let draws = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..draws {
            let pick = sample_hard_negatives(&row, 4, &[0], &mut rng)[0];
            counts[pick] += 1;
        }
        assert_eq!(counts[0], 0, "the own pair is never drawn");
        let z: f64 = [0.0f64, 1.0, -1.0].iter().map(|v| v.exp()).sum();
        for (j, logit) in [(1usize, 0.0f64), (2, 1.0), (3, -1.0)] {
            let expected = logit.exp() / z;
            let observed = counts[j] as f64 / draws as f64;
            // five standard deviations of a binomial proportion
            let tolerance = 5.0 * (expected * (1.0 - expected) / draws as f64).sqrt();
            assert!(
                (observed - expected).abs() < tolerance,
                "column {j}: {observed} vs {expected}"
            );
        }
    }

    #[test]
    fn itm_loss_labels_the_first_rows_as_matching() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let head = ItmHead::<B>::new(4, &device);
        let logits = Tensor::<B, 2>::from_floats([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], &device);
        let loss = head.loss(logits, 1).into_scalar() as f64;
        let ce = |a: f64, b: f64, t: usize| -([a, b][t] - (a.exp() + b.exp()).ln());
        let expected = (ce(0.0, 2.0, 1) + ce(1.0, 0.0, 0) + ce(0.0, 0.0, 0)) / 3.0;
        assert!((loss - expected).abs() < 1e-6);
    }
}
