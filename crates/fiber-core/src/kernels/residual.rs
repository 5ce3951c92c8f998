//! Element-wise sums of two tensors of one shape (residual connections) on the rayon pool.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::autodiff::{
    incoming_gradient, is_autodiff_ndarray, record, register_array, tracked, untracked_from, Nd,
};
use super::cpu::{array, is_ndarray, tensor, CpuArray};

/// `a + b` for two tensors of the same shape `[...]` → `[...]` (a residual connection). The
/// ndarray backend's own addition runs on one thread; here the sum is split across the rayon
/// pool, and under autodiff it is one node whose backward pass hands the incoming gradient to
/// both inputs. Tensors of different shapes (broadcasting) use Burn's addition.
pub fn add<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if a.dims() == b.dims() {
        if is_ndarray::<B>() {
            if let (Some(x), Some(y)) = (array(&a), array(&b)) {
                return tensor(sum_arrays(&x, &y));
            }
        }
        if is_autodiff_ndarray::<B>() {
            if let (Some((a_node, x)), Some((b_node, y))) = (tracked(&a), tracked(&b)) {
                let out = sum_arrays(&x, &y);
                return untracked_from(record(AddBackward, [&a_node, &b_node], (), out));
            }
        }
    }
    a + b
}

/// `x + y` (same shape, any layouts) as a row-major array.
fn sum_arrays(x: &CpuArray, y: &CpuArray) -> CpuArray {
    let shape = x.shape().to_vec();
    let x = x.as_standard_layout();
    let y = y.as_standard_layout();
    let (x, y) = (
        x.as_slice().expect("standard layout"),
        y.as_slice().expect("standard layout"),
    );
    let mut out = vec![0f32; x.len()];
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| {
            for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
                *o = x + y;
            }
        });
    ArcArray::from_shape_vec(IxDyn(&shape), out).expect("same number of values")
}

/// The backward pass of `a + b`: both inputs receive the incoming gradient.
#[derive(Debug)]
struct AddBackward;

impl Backward<Nd, 2> for AddBackward {
    type State = ();

    fn backward(self, ops: Ops<(), 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = incoming_gradient(grads, &ops);
        for node in ops.parents.iter().flatten() {
            register_array(grads, node.id, grad.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;
    type Ad = burn::backend::Autodiff<B>;

    #[test]
    fn sums_and_gradients_equal_burns_addition() {
        let device = Default::default();
        let a = Tensor::<B, 3>::random([4, 3, 5], Distribution::Default, &device);
        let b =
            Tensor::<B, 3>::random([5, 3, 4], Distribution::Default, &device).permute([2, 1, 0]);
        let diff: f32 = (add(a.clone(), b.clone()) - (a.clone() + b.clone()))
            .abs()
            .max()
            .into_scalar();
        assert!(diff == 0.0, "{diff}");
        let a = Tensor::<Ad, 3>::from_data(a.into_data(), &device).require_grad();
        let b = Tensor::<Ad, 3>::from_data(b.into_data(), &device).require_grad();
        let weighting = Tensor::<Ad, 3>::random([4, 3, 5], Distribution::Default, &device);
        let grads = (add(a.clone(), b.clone()) * weighting.clone())
            .sum()
            .backward();
        for x in [&a, &b] {
            let diff: f32 = (x.grad(&grads).unwrap() - weighting.clone().inner())
                .abs()
                .max()
                .into_scalar();
            assert!(diff == 0.0, "{diff}");
        }
        // Broadcasting falls back to Burn's addition.
        let row = Tensor::<B, 3>::ones([1, 1, 5], &device);
        let full = Tensor::<B, 3>::zeros([4, 3, 5], &device);
        assert_eq!(add(full, row).dims(), [4, 3, 5]);
    }
}
