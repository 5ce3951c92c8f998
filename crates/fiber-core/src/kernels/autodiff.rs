//! The bridge between the CPU kernels and Burn's autodiff: a kernel's forward pass recorded
//! as one node of the autodiff graph, its hand-written backward pass run when gradients flow
//! through that node.
//!
//! Burn composes a layer's gradient from the gradients of every tensor operation it ran (a
//! linear layer with GELU records about ten; attention about twenty, each materialising its
//! result). The kernels here record one node per layer instead, keep only what their backward
//! pass needs (the inputs, the pre-activation, the attention probabilities, LayerNorm's row
//! statistics) and compute each gradient in one pass or one matrix product.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_ndarray::{NdArray, NdArrayTensor};
use ndarray::{ArcArray, IxDyn};

use super::cpu::{f32_array, CpuArray};

/// The inner backend whose tensors the kernels read.
pub(crate) type Nd = NdArray<f32>;

/// A float tensor of `Autodiff<NdArray<f32>>` (any checkpointing strategy): the ndarray value
/// and its node in the autodiff graph.
pub(crate) type TrackedTensor =
    <Autodiff<Nd> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// Whether `B` is autodiff over the f32 ndarray backend.
pub(crate) fn is_autodiff_ndarray<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<TrackedTensor>()
}

/// The autodiff tensor behind `x` with its f32 value, or `None` on any other backend.
pub(crate) fn tracked<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
) -> Option<(TrackedTensor, CpuArray)> {
    if !is_autodiff_ndarray::<B>() {
        return None;
    }
    let primitive = match x.clone().into_primitive() {
        TensorPrimitive::Float(primitive) => primitive,
        TensorPrimitive::QFloat(_) => return None,
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    let tensor = *boxed.downcast::<TrackedTensor>().ok()?;
    let values = f32_array(tensor.primitive.clone())?;
    Some((tensor, values))
}

/// A Burn tensor of backend `B` (which [`tracked`] has recognised) from an autodiff tensor.
pub(crate) fn untracked_from<B: Backend, const D: usize>(tensor: TrackedTensor) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    let primitive = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("only called after `tracked` recognised the backend"));
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// Records `output` as the result of `op` applied to `parents`: a node whose backward pass is
/// `op`'s, with `state` kept for it when any parent needs a gradient.
///
/// The node is compute-bound (its output is kept, never recomputed), so the graph's
/// checkpointing strategy never asks for a recomputation and the recording is the same for
/// every strategy.
pub(crate) fn record<O: Backward<Nd, N>, const N: usize>(
    op: O,
    parents: [&TrackedTensor; N],
    state: O::State,
    output: CpuArray,
) -> TrackedTensor {
    let nodes = parents.map(|parent| parent.node.clone());
    let output = NdArrayTensor::from(output);
    match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// The gradient arriving at the node of `ops`, as an f32 array.
pub(crate) fn incoming_gradient<S, const N: usize>(
    grads: &mut Gradients,
    ops: &Ops<S, N>,
) -> CpuArray {
    f32_array(grads.consume::<Nd>(&ops.node)).expect("the gradient of an f32 tensor is f32")
}

/// Adds `values` (any layout; the buffer is shared, not copied) to the gradient of node `id`.
pub(crate) fn register_array(grads: &mut Gradients, id: NodeId, values: CpuArray) {
    grads.register::<Nd>(id, NdArrayTensor::from(values));
}

/// Adds `values` (shape `shape`, row-major) to the gradient of node `id`.
pub(crate) fn register(grads: &mut Gradients, id: NodeId, shape: &[usize], values: Vec<f32>) {
    let values = ArcArray::from_shape_vec(IxDyn(shape), values).expect("shape matches values");
    grads.register::<Nd>(id, NdArrayTensor::from(values));
}

#[cfg(test)]
mod tests {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::TensorData;

    use super::*;
    use crate::kernels::{affine, layer_norm, multi_head_attention};
    use crate::Activation;

    /// Gradients of the input, a weight and a LayerNorm γ through recorded kernels placed
    /// between memory-bound operations (which a checkpointing strategy recomputes).
    fn gradients<A: AutodiffBackend>() -> Vec<Vec<f32>> {
        let device = Default::default();
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * k) % 17) as f32 - 8.0) / 8.0)
                .collect()
        };
        let x =
            Tensor::<A, 3>::from_data(TensorData::new(values(2 * 5 * 6, 7), [2, 5, 6]), &device)
                .require_grad();
        let weight = Tensor::<A, 2>::from_data(TensorData::new(values(6 * 8, 5), [6, 8]), &device)
            .require_grad();
        let gamma = Tensor::<A, 1>::ones([8], &device).require_grad();
        let h = x.clone().exp().mul_scalar(0.5);
        let h = affine(h, weight.clone(), None, Some(Activation::Gelu));
        let h = layer_norm(h.tanh(), gamma.clone(), None, 1e-5);
        let attended = multi_head_attention(h.clone(), h.clone(), h.clone(), 2, 0.5, &[], None);
        let grads = (attended.exp() * h).sum().backward();
        vec![
            x.grad(&grads).unwrap().into_data().to_vec().unwrap(),
            weight.grad(&grads).unwrap().into_data().to_vec().unwrap(),
            gamma.grad(&grads).unwrap().into_data().to_vec().unwrap(),
        ]
    }

    #[test]
    fn recorded_kernels_give_the_same_gradients_with_activation_checkpointing() {
        assert!(is_autodiff_ndarray::<Autodiff<Nd, BalancedCheckpointing>>());
        let plain = gradients::<Autodiff<Nd>>();
        let balanced = gradients::<Autodiff<Nd, BalancedCheckpointing>>();
        for (a, b) in plain.iter().zip(&balanced) {
            assert_eq!(a.len(), b.len());
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-6, "{diff}");
            assert!(a.iter().any(|v| *v != 0.0));
        }
    }
}
