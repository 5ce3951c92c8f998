//! docs/model.md §3.3: image–text matching with global hard negatives sampled from the ITC similarities.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::TensorData;
use fiber_core::dtype::in_f32;
use fiber_core::init::linear_normal;
use fiber_core::weights::{visit_linear, WeightVisitor};

use crate::loss::cross_entropy;

/// `itm_score.fc`: `Linear(2H → 2)` on `cls_feats`; class 1 means "matching".
#[derive(Module, Debug)]
pub struct ItmHead<B: Backend> {
    /// The classifier.
    pub fc: Linear<B>,
}

impl<B: Backend> ItmHead<B> {
    /// A fresh head for `cls_feats` of width `width` (N(0, `std`), 0.02 in FIBER; zero bias).
    pub fn new(width: usize, std: f64, device: &B::Device) -> Self {
        Self {
            fc: linear_normal(width, 2, true, std, device),
        }
    }

    /// Logits `[n, 2]` from `cls_feats` `[n, 2H]`.
    pub fn forward(&self, cls_feats: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc.forward(cls_feats)
    }

    /// The retrieval score: the matching logit `[n]` (what the original's `rank_output`
    /// computes, docs/model.md §4.3).
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

/// For each row b of `similarities` `[rows, columns]` (the ITC logits of item b against every
/// candidate; column b is b's own pair), draws one candidate from `softmax(row)` with the own
/// column excluded (docs/model.md §3.3: the own pair never serves as its own negative; 1e-9 is added to
/// every other weight as the original does) → chosen columns `[rows]`.
///
/// `uniform_share` in `[0, 1]` mixes the softmax with the uniform distribution over the other
/// columns: weights `(1 − s) · softmax + s / (columns − 1)`. FIBER draws from the softmax
/// alone (`s = 0`); a model trained from scratch needs easier negatives first (docs/model.md
/// §3.3, docs/deviations.md).
///
/// The draw is an inverse-CDF lookup done on the device: `uniforms` `[rows]` (in `[0, 1)`, drawn
/// by the caller's seeded generator so that runs stay reproducible; create them in f32) pick the
/// first column whose cumulative weight exceeds `u · total`, computed in f32. Nothing is read
/// back to the host, so a GPU step is not stalled between the ITC and ITM forwards. With a
/// single candidate the own column is returned, as there is nothing else to draw.
pub fn draw_hard_negatives<B: Backend>(
    similarities: Tensor<B, 2>,
    uniforms: Tensor<B, 1>,
    uniform_share: f64,
) -> Tensor<B, 1, Int> {
    let [rows, columns] = similarities.dims();
    let device = similarities.device();
    if columns <= 1 {
        return Tensor::arange(0..rows as i64, &device);
    }
    // Written to avoid a Burn 0.21 fusion bug: the earlier form of this chain (the own-column
    // mask compared from on-device aranges, unconditional casts, a final `min_pair` bound)
    // made the fused reduce-then-broadcast kernel index past its inputs while autotuning, a
    // crash of every GPU run with an empty autotune cache (docs/performance.md). The mask is
    // now uploaded, casts happen only where needed, and the bound comes from the uniforms.
    let own: Vec<bool> = (0..rows * columns)
        .map(|i| i / columns == i % columns)
        .collect();
    let own_mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(own, [rows, columns]), &device);
    // In f32 whatever the backend's float type: a bf16 running sum over a 4096-wide queue stops
    // growing once each weight is below half its ulp, and f16 has no 1e-9.
    let softmax = softmax(in_f32(similarities), 1);
    let mixed = if uniform_share > 0.0 {
        softmax
            .mul_scalar(1.0 - uniform_share)
            .add_scalar(uniform_share / (columns - 1) as f64)
    } else {
        softmax
    };
    let weights = (mixed + 1e-9).mask_fill(own_mask, 0.0);
    let cumulative = weights.cumsum(1);
    let total = cumulative.clone().slice([0..rows, columns - 1..columns]);
    // `u · total` is kept strictly below the total (u ≤ 1 − 2⁻²² rounds below it), so the
    // count of cumulative weights at or below it never reaches the last column, nor the own
    // column where that is last (its cumulative weight equals the total).
    let fraction = in_f32(uniforms.reshape([rows, 1])).mul_scalar(1.0 - 2f64.powi(-22));
    let target = (total * fraction).expand([rows, columns]);
    cumulative
        .lower_equal(target)
        .int()
        .sum_dim(1)
        .reshape([rows])
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::NdArray;

    fn draw(similarities: &[f32], rows: usize, uniforms: &[f32]) -> Vec<i64> {
        draw_mixed(similarities, rows, uniforms, 0.0)
    }

    fn draw_mixed(similarities: &[f32], rows: usize, uniforms: &[f32], share: f64) -> Vec<i64> {
        let device = Default::default();
        let columns = similarities.len() / rows;
        let s = Tensor::<B, 2>::from_data(
            TensorData::new(similarities.to_vec(), [rows, columns]),
            &device,
        );
        let u = Tensor::<B, 1>::from_data(TensorData::new(uniforms.to_vec(), [rows]), &device);
        draw_hard_negatives(s, u, share)
            .into_data()
            .convert::<i64>()
            .into_vec()
            .unwrap()
    }

    /// Draws 5,000 × 4 negatives from rotated rows `[2, 0, 1, −1]` with `share` of uniform
    /// weight and checks each offset's frequency against the mixture within five standard
    /// deviations; the own pair (offset 0) is never drawn.
    fn check_draw_frequencies(share: f64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        // Row b is [2, 0, 1, -1] rotated by b, so its own column b holds the 2 and column
        // (b + j) mod 4 holds logits[j]: every row draws offset j with the same probability.
        let logits = [2.0f32, 0.0, 1.0, -1.0];
        let similarities: Vec<f32> = (0..4)
            .flat_map(|b| (0..4).map(move |c| logits[(c + 4 - b) % 4]))
            .collect();
        let calls = 5_000;
        let mut counts = [0usize; 4];
        for _ in 0..calls {
            let uniforms: Vec<f32> = (0..4).map(|_| rng.random::<f32>()).collect();
            for (b, column) in draw_mixed(&similarities, 4, &uniforms, share)
                .into_iter()
                .enumerate()
            {
                counts[(column as usize + 4 - b) % 4] += 1;
            }
        }
        let draws = 4 * calls;
        assert_eq!(counts[0], 0, "the own pair is never drawn");
        // The softmax over the whole row (own column included), mixed, then renormalised
        // over the three other columns.
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        let weight = |logit: f64| (1.0 - share) * logit.exp() / z + share / 3.0;
        let total: f64 = [0.0, 1.0, -1.0].iter().map(|&l| weight(l)).sum();
        for (j, logit) in [(1usize, 0.0f64), (2, 1.0), (3, -1.0)] {
            let expected = weight(logit) / total;
            let observed = counts[j] as f64 / draws as f64;
            // five standard deviations of a binomial proportion
            let tolerance = 5.0 * (expected * (1.0 - expected) / draws as f64).sqrt();
            assert!(
                (observed - expected).abs() < tolerance,
                "share {share}, offset {j}: {observed} vs {expected}"
            );
        }
    }

    #[test]
    fn hard_negatives_never_return_the_positive_and_follow_the_softmax() {
        check_draw_frequencies(0.0);
    }

    #[test]
    fn a_uniform_share_mixes_the_softmax_with_equal_weights() {
        check_draw_frequencies(0.5);
        check_draw_frequencies(1.0);
    }

    #[test]
    fn hard_negatives_at_the_ends_of_the_unit_interval_skip_the_own_column() {
        // Three items against five candidates (two beyond the batch, e.g. queued ones).
        let similarities = [0.0f32; 15];
        let nearly_one = 1.0 - f32::EPSILON / 2.0;
        assert_eq!(draw(&similarities, 3, &[0.0, 0.0, 0.0]), vec![1, 0, 0]);
        assert_eq!(draw(&similarities, 3, &[nearly_one; 3]), vec![4, 4, 4]);
        // A square batch: the last row's own column is the last one.
        let square = [0.0f32; 9];
        assert_eq!(draw(&square, 3, &[nearly_one; 3]), vec![2, 2, 1]);
        // u = 1 exactly (outside [0, 1), but the bound must hold): still never the own column
        // nor past the last one.
        assert_eq!(draw(&similarities, 3, &[1.0; 3]), vec![4, 4, 4]);
        assert_eq!(draw(&square, 3, &[1.0; 3]), vec![2, 2, 1]);
        // A batch of one has nothing else to draw.
        assert_eq!(draw(&[3.0], 1, &[0.5]), vec![0]);
    }

    #[test]
    fn itm_loss_labels_the_first_rows_as_matching() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let head = ItmHead::<B>::new(4, 0.02, &device);
        let logits = Tensor::<B, 2>::from_floats([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], &device);
        let loss = head.loss(logits, 1).into_scalar() as f64;
        let ce = |a: f64, b: f64, t: usize| -([a, b][t] - (a.exp() + b.exp()).ln());
        let expected = (ce(0.0, 2.0, 1) + ce(1.0, 0.0, 0) + ce(0.0, 0.0, 0)) / 3.0;
        assert!((loss - expected).abs() < 1e-6);
    }
}
