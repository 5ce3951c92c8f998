//! Linear layers as one matrix product over all leading dimensions, bias and activation fused.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::nn::Linear;
use burn::prelude::*;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::activation::{apply_in_place, multiply_by_derivative};
use super::autodiff::{
    incoming_gradient, is_autodiff_ndarray, record, register, tracked, untracked_from, Nd,
};
use super::cpu::{array, column_sums, is_ndarray, rows_per_task, tensor, CpuArray};
use super::matmul::{sgemm, Threads};
use crate::Activation;

/// `x·W + b` of a Burn [`Linear`]: `[..., d_in]` → `[..., d_out]`.
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    linear_activation(layer, x, None)
}

/// `activation(x·W + b)`: `[..., d_in]` → `[..., d_out]`; without an activation, the plain
/// linear layer.
pub fn linear_activation<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    activation: Option<Activation>,
) -> Tensor<B, D> {
    affine(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
        activation,
    )
}

/// `activation(x·W + b)` from the tensors themselves: `x` `[..., d_in]`, `weight`
/// `[d_in, d_out]`, `bias` `[d_out]` → `[..., d_out]`.
pub fn affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    activation: Option<Activation>,
) -> Tensor<B, D> {
    if is_ndarray::<B>() {
        if let Some(out) = cpu_affine(&x, &weight, bias.as_ref(), activation) {
            return out;
        }
    }
    if is_autodiff_ndarray::<B>() {
        if let Some(out) = tracked_affine(&x, &weight, bias.as_ref(), activation) {
            return out;
        }
    }
    let y = burn::tensor::module::linear(x, weight, bias);
    match activation {
        Some(activation) => activation.forward(y),
        None => y,
    }
}

fn cpu_affine<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    activation: Option<Activation>,
) -> Option<Tensor<B, D>> {
    let input = array(x)?;
    let weight = array(weight)?;
    let bias = match bias {
        Some(bias) => Some(array(bias)?),
        None => None,
    };
    let dims = x.dims();
    let k = dims[D - 1];
    let n = weight.shape()[1];
    let m = dims[..D - 1].iter().product::<usize>();
    if m == 0 || k == 0 || n == 0 {
        return None;
    }
    let out = matmul_bias(&input, m, k, &weight, bias.as_ref(), activation);
    let mut shape = dims.to_vec();
    shape[D - 1] = n;
    Some(tensor(
        ArcArray::from_shape_vec(IxDyn(&shape), out).expect("m·n values"),
    ))
}

/// The forward pass under autodiff: the same product, recorded as one node whose backward
/// pass is [`AffineBackward`].
fn tracked_affine<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    activation: Option<Activation>,
) -> Option<Tensor<B, D>> {
    let (x_node, input) = tracked(x)?;
    let (weight_node, weight_values) = tracked(weight)?;
    let bias = match bias {
        Some(bias) => Some(tracked(bias)?),
        None => None,
    };
    let dims = x.dims();
    let k = dims[D - 1];
    let n = weight_values.shape()[1];
    let m = dims[..D - 1].iter().product::<usize>();
    if m == 0 || k == 0 || n == 0 {
        return None;
    }
    let pre = matmul_bias(
        &input,
        m,
        k,
        &weight_values,
        bias.as_ref().map(|(_, values)| values),
        None,
    );
    let mut shape = dims.to_vec();
    shape[D - 1] = n;
    let (output, pre_activation) = match activation {
        None => (pre, None),
        Some(activation) => {
            let mut output = pre.clone();
            output
                .par_chunks_mut(rows_per_task(n) * n)
                .for_each(|values| apply_in_place(activation, values));
            let pre = ArcArray::from_shape_vec(IxDyn(&[m * n]), pre).expect("m·n values");
            (output, Some(pre))
        }
    };
    let output = ArcArray::from_shape_vec(IxDyn(&shape), output).expect("m·n values");
    let state = AffineState {
        input,
        weight: weight_values,
        pre_activation,
        activation,
    };
    let tracked = match &bias {
        Some((bias_node, _)) => record(
            AffineBackward,
            [&x_node, &weight_node, bias_node],
            state,
            output,
        ),
        None => record(AffineBackward, [&x_node, &weight_node], state, output),
    };
    Some(untracked_from(tracked))
}

/// The backward pass of `activation(x·W + b)`: with `g` the incoming gradient and `z` the
/// pre-activation, `dz = g·activation′(z)`, `dx = dz·Wᵀ`, `dW = xᵀ·dz`, `db = Σ_rows dz`.
#[derive(Debug)]
struct AffineBackward;

/// What [`AffineBackward`] needs: the input, the weight, and the pre-activation where there
/// is an activation.
#[derive(Debug, Clone)]
struct AffineState {
    input: CpuArray,
    weight: CpuArray,
    pre_activation: Option<CpuArray>,
    activation: Option<Activation>,
}

impl<const N: usize> Backward<Nd, N> for AffineBackward {
    type State = AffineState;

    fn backward(self, ops: Ops<AffineState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = incoming_gradient(grads, &ops);
        let state = &ops.state;
        let (k, n) = (state.weight.shape()[0], state.weight.shape()[1]);
        let m = grad.len() / n;
        let grad = grad.as_standard_layout();
        let grad = grad.as_slice().expect("standard layout");
        let chunk = rows_per_task(n) * n;
        let with_derivative;
        let dz: &[f32] = match (&state.pre_activation, state.activation) {
            (Some(pre), Some(activation)) => {
                let pre = pre.as_slice().expect("stored row-major");
                let mut values = grad.to_vec();
                values
                    .par_chunks_mut(chunk)
                    .zip(pre.par_chunks(chunk))
                    .for_each(|(g, z)| multiply_by_derivative(activation, z, g));
                with_derivative = values;
                &with_derivative
            }
            _ => grad,
        };
        let ws = state.weight.strides();
        if let Some(node) = &ops.parents[0] {
            let mut dx = vec![0f32; m * k];
            // SAFETY: dz is m×n row-major, Wᵀ is W read with swapped strides, dx is m×k.
            unsafe {
                sgemm(
                    Threads::Pool,
                    (m, n, k),
                    1.0,
                    (dz.as_ptr(), n as isize, 1),
                    (state.weight.as_ptr(), ws[1], ws[0]),
                    0.0,
                    (dx.as_mut_ptr(), k as isize, 1),
                );
            }
            register(grads, node.id, state.input.shape(), dx);
        }
        if let Some(node) = &ops.parents[1] {
            let input = state.input.as_standard_layout();
            let mut dw = vec![0f32; k * n];
            // SAFETY: xᵀ is the m×k row-major input read with swapped strides, dz is m×n,
            // dW is k×n.
            unsafe {
                sgemm(
                    Threads::Pool,
                    (k, m, n),
                    1.0,
                    (input.as_ptr(), 1, k as isize),
                    (dz.as_ptr(), n as isize, 1),
                    0.0,
                    (dw.as_mut_ptr(), n as isize, 1),
                );
            }
            register(grads, node.id, &[k, n], dw);
        }
        if let Some(node) = ops.parents.get(2).and_then(Option::as_ref) {
            register(grads, node.id, &[n], column_sums(dz, n));
        }
    }
}

/// `activation(x·W + b)` for `x` holding `m` rows of `k` values (any layout), `W` `[k, n]`
/// (any strides), `b` `[n]`: the rows of the result, row-major.
pub(crate) fn matmul_bias(
    input: &CpuArray,
    m: usize,
    k: usize,
    weight: &CpuArray,
    bias: Option<&CpuArray>,
    activation: Option<Activation>,
) -> Vec<f32> {
    let n = weight.shape()[1];
    let input = input.as_standard_layout();
    let input = input.as_slice().expect("standard layout");
    let mut out = vec![0f32; m * n];
    let chunk = rows_per_task(n) * n;
    if let Some(bias) = bias {
        let bias = bias.as_standard_layout();
        let bias = bias.as_slice().expect("standard layout");
        out.par_chunks_mut(chunk)
            .for_each(|rows| rows.chunks_mut(n).for_each(|row| row.copy_from_slice(bias)));
    }
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let ws = weight.strides();
    // SAFETY: the pointers and strides describe `input` (m×k, row-major), `weight` (k×n, its
    // own strides) and `out` (m×n, row-major), all alive for the call.
    unsafe {
        sgemm(
            Threads::Pool,
            (m, k, n),
            1.0,
            (input.as_ptr(), k as isize, 1),
            (weight.as_ptr(), ws[0], ws[1]),
            beta,
            (out.as_mut_ptr(), n as isize, 1),
        );
    }
    if let Some(activation) = activation {
        out.par_chunks_mut(chunk)
            .for_each(|values| apply_in_place(activation, values));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;
    type Ad = burn::backend::Autodiff<B>;

    fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn fused_linear_equals_burns_linear_and_activation() {
        let device = Default::default();
        for bias in [true, false] {
            let layer = LinearConfig::new(24, 40).with_bias(bias).init::<B>(&device);
            let x = Tensor::<B, 3>::random([3, 7, 24], Distribution::Normal(0.0, 2.0), &device);
            for activation in [
                None,
                Some(Activation::Gelu),
                Some(Activation::GeluTanh),
                Some(Activation::Relu),
                Some(Activation::Silu),
                Some(Activation::Tanh),
            ] {
                let fused = linear_activation(&layer, x.clone(), activation);
                let plain = layer.forward(x.clone());
                let plain = activation.map_or(plain.clone(), |a| a.forward(plain));
                let diff = max_abs_diff(fused, plain);
                assert!(diff < 1e-5, "bias {bias}, {activation:?}: {diff}");
            }
        }
    }

    #[test]
    fn a_non_contiguous_input_and_a_transposed_weight_give_the_same_product() {
        let device = Default::default();
        let mut layer = LinearConfig::new(16, 12).init::<B>(&device);
        let x = Tensor::<B, 3>::random([5, 16, 4], Distribution::Default, &device).swap_dims(1, 2);
        let expected = layer.forward(x.clone());
        let transposed = Tensor::<B, 2>::random([12, 16], Distribution::Default, &device);
        layer.weight = burn::module::Param::from_tensor(transposed.clone().transpose());
        let with_strided_weight = linear(&layer, x.clone());
        assert!(max_abs_diff(with_strided_weight, layer.forward(x.clone())) < 1e-5);
        assert_ne!(expected.into_data(), layer.forward(x).into_data());
    }

    /// Under autodiff the recorded kernel and Burn's composed layer agree on the output and
    /// on the gradients of the input, the weight and the bias.
    #[test]
    fn recorded_kernel_gradients_equal_the_composed_layers() {
        let device = Default::default();
        for bias in [true, false] {
            for activation in [
                None,
                Some(Activation::Gelu),
                Some(Activation::GeluTanh),
                Some(Activation::Relu),
                Some(Activation::Silu),
                Some(Activation::Tanh),
            ] {
                let layer = LinearConfig::new(6, 5).with_bias(bias).init::<Ad>(&device);
                // A permuted input, as models hand over.
                let x = Tensor::<Ad, 3>::random([6, 4, 3], Distribution::Normal(0.0, 2.0), &device)
                    .require_grad();
                let weighting = Tensor::<Ad, 3>::random([3, 4, 5], Distribution::Default, &device);
                let kernel = linear_activation(&layer, x.clone().permute([2, 1, 0]), activation);
                let composed = burn::tensor::module::linear(
                    x.clone().permute([2, 1, 0]),
                    layer.weight.val(),
                    layer.bias.as_ref().map(|b| b.val()),
                );
                let composed = activation.map_or(composed.clone(), |a| a.forward(composed));
                let out_diff: f32 = (kernel.clone() - composed.clone())
                    .abs()
                    .max()
                    .into_scalar();
                assert!(out_diff < 1e-5, "{activation:?}: output {out_diff}");
                let grads_kernel = (kernel * weighting.clone()).sum().backward();
                let grads_composed = (composed * weighting).sum().backward();
                let diff =
                    |a: Tensor<B, 2>, b: Tensor<B, 2>| -> f32 { (a - b).abs().max().into_scalar() };
                let x_diff = diff(
                    x.grad(&grads_kernel).unwrap().flatten(0, 1),
                    x.grad(&grads_composed).unwrap().flatten(0, 1),
                );
                let w_diff = diff(
                    layer.weight.grad(&grads_kernel).unwrap(),
                    layer.weight.grad(&grads_composed).unwrap(),
                );
                assert!(
                    x_diff < 1e-5 && w_diff < 1e-5,
                    "{activation:?}: {x_diff} {w_diff}"
                );
                if let Some(b) = &layer.bias {
                    let b_diff = diff(
                        b.grad(&grads_kernel).unwrap().unsqueeze(),
                        b.grad(&grads_composed).unwrap().unsqueeze(),
                    );
                    assert!(b_diff < 1e-5, "{activation:?}: bias {b_diff}");
                }
            }
        }
    }

    #[test]
    fn without_any_tracked_input_no_gradient_is_kept() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 5).init::<Ad>(&device).no_grad();
        let x = Tensor::<Ad, 2>::random([4, 6], Distribution::Default, &device);
        let y = linear_activation(&layer, x.clone(), Some(Activation::Gelu));
        let expected = layer.forward(x.clone());
        let expected = Activation::Gelu.forward(expected);
        let diff: f32 = (y - expected).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }
}
