//! Losses shared by the heads, written out so each matches the reference formula exactly.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` `[n, classes]` against class indices `targets` `[n]`;
/// rows whose target equals `ignore_index` take no part (as PyTorch's `ignore_index=-100`).
/// Returns a `[1]` tensor; 0 when every row is ignored.
pub(crate) fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    ignore_index: Option<i64>,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let keep = match ignore_index {
        Some(ignored) => targets.clone().not_equal_elem(ignored),
        None => targets.clone().ones_like().bool(),
    };
    let safe_targets = targets.mask_fill(keep.clone().bool_not(), 0);
    let picked = log_softmax(logits, 1)
        .gather(1, safe_targets.reshape([n, 1]))
        .reshape([n]);
    let keep = keep.float();
    let count = keep.clone().sum().clamp_min(1.0);
    (picked * keep).sum().neg() / count
}

/// Mean binary cross-entropy with logits over every element (numerically stable form
/// `max(x, 0) − x·t + log(1 + e^{−|x|})`) → `[1]`.
pub(crate) fn binary_cross_entropy_with_logits<B: Backend, const D: usize>(
    logits: Tensor<B, D>,
    targets: Tensor<B, D>,
) -> Tensor<B, 1> {
    let stable = logits.clone().clamp_min(0.0) - logits.clone() * targets
        + (logits.abs().neg().exp() + 1.0).log();
    stable.mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn cross_entropy_equals_the_hand_computation_and_skips_ignored_rows() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_floats(
            [[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [5.0, 1.0, 1.0]],
            &device,
        );
        let targets = Tensor::<B, 1, Int>::from_ints([1, 2, -100], &device);
        let loss = cross_entropy(logits, targets, Some(-100)).into_scalar();
        // −log softmax: row 0 target 1, row 1 target 2; row 2 ignored.
        let row0 = -(2.0f64 - (1.0f64.exp() + 2.0f64.exp() + 0.5f64.exp()).ln());
        let row1 = -(3.0f64 - (1.0 + 1.0 + 3.0f64.exp()).ln());
        assert!((loss as f64 - (row0 + row1) / 2.0).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn bce_with_logits_equals_the_hand_computation() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_floats([[2.0, -1.0], [0.0, 30.0]], &device);
        let targets = Tensor::<B, 2>::from_floats([[1.0, 0.3], [0.0, 1.0]], &device);
        let loss = binary_cross_entropy_with_logits(logits, targets).into_scalar() as f64;
        let bce = |x: f64, t: f64| {
            -(t * (1.0 / (1.0 + (-x).exp())).ln()
                + (1.0 - t) * (1.0 - 1.0 / (1.0 + (-x).exp())).ln())
        };
        let expected = (bce(2.0, 1.0) + bce(-1.0, 0.3) + bce(0.0, 0.0) + bce(30.0, 1.0)) / 4.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }
}
