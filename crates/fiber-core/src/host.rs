//! Host values to device tensors: the one way token ids, masks and labels reach the device.

use burn::prelude::*;
use burn::tensor::TensorData;

/// An integer tensor `[rows, columns]` from row-major `values` (`rows = values.len() /
/// columns`); token ids, attention masks and labels all take this path.
pub fn int_matrix<B: Backend>(
    values: &[i64],
    columns: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let rows = values.len() / columns.max(1);
    Tensor::from_data(TensorData::new(values.to_vec(), [rows, columns]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_from_the_column_count() {
        type B = burn::backend::NdArray<f32>;
        let t = int_matrix::<B>(&[1, 2, 3, 4, 5, 6], 3, &Default::default());
        assert_eq!(t.dims(), [2, 3]);
        assert_eq!(
            t.into_data().to_vec::<i64>().unwrap(),
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
