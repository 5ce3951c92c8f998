//! Row gathers: one copy that rearranges the rows of a matrix by an index map.

use burn::prelude::*;
use burn::tensor::TensorData;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::cpu::{array, is_ndarray, rows_per_task, tensor};

/// Rows of `x` `[n, c]` picked by `rows` (`None`: a row of zeros) → `[rows.len(), c]`. Several
/// reshapes, permutes, rolls, pads and crops of token grids are one such gather.
pub fn gather_rows<B: Backend>(x: Tensor<B, 2>, rows: &[Option<usize>]) -> Tensor<B, 2> {
    let [n, c] = x.dims();
    assert!(
        rows.iter().flatten().all(|&r| r < n),
        "row index out of range for {n} rows"
    );
    if is_ndarray::<B>() && c > 0 && !rows.is_empty() {
        if let Some(values) = array(&x) {
            let values = values.as_standard_layout();
            let values = values.as_slice().expect("standard layout");
            let mut out = vec![0f32; rows.len() * c];
            let per_task = rows_per_task(c);
            out.par_chunks_mut(per_task * c)
                .zip(rows.par_chunks(per_task))
                .for_each(|(out_rows, picks)| {
                    for (row, pick) in out_rows.chunks_mut(c).zip(picks) {
                        if let Some(r) = pick {
                            row.copy_from_slice(&values[r * c..(r + 1) * c]);
                        }
                    }
                });
            let out = ArcArray::from_shape_vec(IxDyn(&[rows.len(), c]), out).expect("rows·c");
            return tensor(out);
        }
    }
    let device = x.device();
    let padded = rows.iter().any(Option::is_none);
    let source = if padded {
        Tensor::cat(vec![x, Tensor::zeros([1, c], &device)], 0)
    } else {
        x
    };
    let index: Vec<i64> = rows.iter().map(|r| r.unwrap_or(n) as i64).collect();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
    source.select(0, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;
    type Ad = burn::backend::Autodiff<B>;

    #[test]
    fn gathered_rows_are_the_picked_rows_or_zeros_on_both_paths() {
        let x = Tensor::<B, 2>::random([5, 3], Distribution::Default, &Default::default());
        let picks = [Some(4), None, Some(0), Some(4), Some(2)];
        let fast = gather_rows(x.clone(), &picks);
        let slow = gather_rows(
            Tensor::<Ad, 2>::from_data(x.to_data(), &Default::default()),
            &picks,
        );
        let rows: Vec<f32> = x.into_data().into_vec().unwrap();
        let mut want = Vec::new();
        for pick in picks {
            match pick {
                Some(r) => want.extend_from_slice(&rows[r * 3..r * 3 + 3]),
                None => want.extend_from_slice(&[0.0; 3]),
            }
        }
        assert_eq!(fast.into_data().into_vec::<f32>().unwrap(), want);
        assert_eq!(slow.into_data().into_vec::<f32>().unwrap(), want);
    }
}
