//! Linear layers as one matrix product over all leading dimensions, bias and activation fused.

use burn::nn::Linear;
use burn::prelude::*;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::activation::apply_in_place;
use super::cpu::{array, is_ndarray, rows_per_task, tensor, CpuArray};
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
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            input.as_ptr(),
            k as isize,
            1,
            weight.as_ptr(),
            ws[0],
            ws[1],
            beta,
            out.as_mut_ptr(),
            n as isize,
            1,
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

    #[test]
    fn with_autodiff_the_plain_layer_and_its_gradient_are_used() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 5).init::<Ad>(&device);
        let x = Tensor::<Ad, 2>::random([4, 6], Distribution::Default, &device).require_grad();
        let y = linear_activation(&layer, x.clone(), Some(Activation::Gelu));
        let grads = y.sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(layer.weight.grad(&grads).is_some());
    }
}
