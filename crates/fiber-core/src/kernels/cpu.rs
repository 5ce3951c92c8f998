//! The bridge between Burn tensors and the ndarray arrays the CPU kernels work on.

use std::any::{Any, TypeId};

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_ndarray::NdArrayTensor;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

/// A shared-ownership f32 array of any rank, as the ndarray backend stores tensors.
pub(crate) type CpuArray = ArcArray<f32, IxDyn>;

/// Whether `B`'s float tensors are the ndarray backend's own (not wrapped by autodiff or any
/// other decorator backend).
pub(crate) fn is_ndarray<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<NdArrayTensor>()
}

/// The f32 ndarray array behind `x`, or `None` where `x` lives on another backend, carries
/// another float type, or is quantised. The array shares `x`'s buffer.
pub(crate) fn array<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<CpuArray> {
    if !is_ndarray::<B>() {
        return None;
    }
    let primitive = match x.clone().into_primitive() {
        TensorPrimitive::Float(primitive) => primitive,
        TensorPrimitive::QFloat(_) => return None,
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    f32_array(*boxed.downcast::<NdArrayTensor>().ok()?)
}

/// The f32 array of an ndarray tensor (sharing its buffer), or `None` for other element types.
pub(crate) fn f32_array(tensor: NdArrayTensor) -> Option<CpuArray> {
    match tensor {
        NdArrayTensor::F32(storage) => Some(storage.into_shared()),
        _ => None,
    }
}

/// `array` for several tensors at once: all of them or none.
pub(crate) fn arrays<B: Backend, const D: usize>(xs: &[&Tensor<B, D>]) -> Option<Vec<CpuArray>> {
    xs.iter().map(|x| array(*x)).collect()
}

/// A Burn tensor of backend `B` (which [`array`] has checked is ndarray) from an f32 array of
/// rank `D`.
pub(crate) fn tensor<B: Backend, const D: usize>(values: CpuArray) -> Tensor<B, D> {
    debug_assert_eq!(values.ndim(), D);
    let boxed: Box<dyn Any> = Box::new(NdArrayTensor::from(values));
    let primitive = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("only called after `array` recognised the backend"));
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A raw output pointer that parallel tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: every user writes only the elements its own task owns.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wraps the start of an output buffer.
    pub(crate) fn new(start: *mut f32) -> Self {
        Self(start)
    }

    /// The start of the output buffer.
    pub(crate) fn start(&self) -> *mut f32 {
        self.0
    }
}

/// Lanes of the vectorisable reductions below: eight independent partial results, which the
/// compiler keeps in vector registers (a single running sum or maximum is a chain of
/// dependent scalar operations that it may not reorder).
const LANES: usize = 8;

/// `Σ values`, summed in eight interleaved lanes.
#[inline]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l += v);
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ a·b` over two equally long slices, in eight interleaved lanes.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut pairs = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
    for (x, y) in &mut pairs {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    let tail = a.len() - a.len() % LANES;
    lanes.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

/// The largest of `values` (−∞ for none), in eight interleaved lanes.
#[inline]
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        lanes
            .iter_mut()
            .zip(chunk)
            .for_each(|(l, &v)| *l = if v > *l { v } else { *l });
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// The sums of the columns of `values`, a row-major matrix with rows of `n` values: `[n]`.
pub(crate) fn column_sums(values: &[f32], n: usize) -> Vec<f32> {
    let chunk = rows_per_task(n) * n;
    values
        .par_chunks(chunk)
        .fold(
            || vec![0f32; n],
            |mut sums, rows| {
                for row in rows.chunks(n) {
                    sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                sums
            },
        )
        .reduce(
            || vec![0f32; n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Rows per parallel task for row-wise kernels: about 16k values per task, at least one row.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_equal_the_plain_ones_at_every_length() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 3) % 5) as f32 * 0.5).collect();
            assert_eq!(sum(&a), a.iter().sum::<f32>(), "sum of {len}");
            let expected_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), expected_dot, "dot of {len}");
            let expected_max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), expected_max, "max of {len}");
        }
    }
}
