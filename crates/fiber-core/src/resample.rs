//! Differentiable resizing of NCHW maps as matrix products (docs/model.md §5.8).
//!
//! Burn 0.21's bilinear `interpolate` has no backward pass on the CPU and GPU backends, so the
//! detector's upsampling is written as `A_h · X · A_wᵀ` with fixed interpolation matrices, and
//! nearest-neighbour resizing as an index selection; both train on every backend.

use burn::prelude::*;
use burn::tensor::TensorData;

/// Weights `[out, in]` (row-major) of 1-D linear interpolation with `align_corners = True`:
/// output `i` samples input position `i·(in − 1)/(out − 1)` (position 0 when `out == 1`).
pub(crate) fn linear_aligned_weights(input: usize, output: usize) -> Vec<f32> {
    let mut weights = vec![0.0f32; output * input];
    let scale = if output > 1 {
        (input as f64 - 1.0) / (output as f64 - 1.0)
    } else {
        0.0
    };
    for i in 0..output {
        let position = i as f64 * scale;
        let low = (position.floor() as usize).min(input - 1);
        let high = (low + 1).min(input - 1);
        let t = position - low as f64;
        weights[i * input + low] += (1.0 - t) as f32;
        weights[i * input + high] += t as f32;
    }
    weights
}

/// Bilinear resizing with `align_corners = True` (PyTorch's `F.upsample_bilinear`,
/// `F.interpolate(mode="bilinear", align_corners=True)`): `[batch, C, h, w]` →
/// `[batch, C, height, width]`.
pub fn resize_bilinear_aligned<B: Backend>(
    x: Tensor<B, 4>,
    (height, width): (usize, usize),
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rows = Tensor::<B, 2>::from_data(
        TensorData::new(linear_aligned_weights(h, height), [height, h]),
        &device,
    );
    let cols = Tensor::<B, 2>::from_data(
        TensorData::new(linear_aligned_weights(w, width), [width, w]),
        &device,
    );
    // Columns: [b·c·h, w] × [w, width]; rows: [height, h] × [h, width] per map.
    let x = x.reshape([b * c * h, w]).matmul(cols.transpose());
    let x = x.reshape([b * c, h, width]);
    let rows = rows.unsqueeze::<3>().expand([b * c, height, h]);
    rows.matmul(x).reshape([b, c, height, width])
}

/// Nearest-neighbour resizing as PyTorch's `F.interpolate(mode="nearest", size=…)` computes
/// it (source index `⌊i · in / out⌋`): `[batch, C, h, w]` → `[batch, C, height, width]`.
pub fn resize_nearest<B: Backend>(
    x: Tensor<B, 4>,
    (height, width): (usize, usize),
) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let index = |input: usize, output: usize| {
        let values: Vec<i64> = (0..output)
            .map(|i| {
                ((i as f64 * input as f64 / output as f64).floor() as usize).min(input - 1) as i64
            })
            .collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(values, [output]), &device)
    };
    let x = if height == h {
        x
    } else {
        x.select(2, index(h, height))
    };
    if width == w {
        x
    } else {
        x.select(3, index(w, width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    #[test]
    fn aligned_weights_hit_both_corners_and_sum_to_one() {
        let w = linear_aligned_weights(3, 5);
        // output 0 = input 0, output 4 = input 2, output 1 samples position 0.5
        assert_eq!(&w[0..3], &[1.0, 0.0, 0.0]);
        assert_eq!(&w[12..15], &[0.0, 0.0, 1.0]);
        assert_eq!(&w[3..6], &[0.5, 0.5, 0.0]);
        for row in w.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(linear_aligned_weights(4, 1), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn nearest_repeats_each_source_pixel() {
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
            &Default::default(),
        );
        let y: Vec<f32> = resize_nearest(x, (4, 3)).into_data().into_vec().unwrap();
        assert_eq!(
            y,
            vec![1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 3.0, 3.0, 4.0]
        );
    }
}
