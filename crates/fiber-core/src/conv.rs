//! 2-D convolutions written as matrix products (docs/model.md §5.8).
//!
//! Burn 0.21's `conv2d` trains 30–200× slower than PyTorch on the CPU backend (its weight
//! gradient is a direct-loop convolution), so the detector's convolutions are computed as
//! "shifted slices times a matrix": the `k·k` shifted (and, for stride 2, sub-sampled) views of
//! the zero-padded input are stacked to `[batch, C_in·k·k, H_out·W_out]` and multiplied by the
//! weight reshaped to `[C_out, C_in·k·k]`. Only slices with unit steps, reshapes and matrix
//! products are used, so the forward and backward pass run on every backend.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::weights::{Layout, WeightVisitor};

/// How a convolution's weight and bias start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvInit {
    /// PyTorch's `nn.Conv2d` default: weight and bias uniform in ±1/√fan_in.
    TorchDefault,
    /// `kaiming_uniform_(a)` for the weight (bound √(6 / ((1 + a²)·fan_in))), zero bias (the
    /// FPN's `a = 1`).
    KaimingUniform {
        /// The negative slope `a`.
        a: f64,
    },
    /// Weight from N(0, std²), bias fixed to `bias` (DyHead's and the output convolutions'
    /// N(0, 0.01²)).
    Normal {
        /// Standard deviation of the weight.
        std: f64,
        /// Value of every bias entry.
        bias: f64,
    },
}

/// A square-kernel convolution with zero padding; keys `{key}.weight` `[C_out, C_in, k, k]`
/// and `{key}.bias` `[C_out]` as PyTorch's `nn.Conv2d`.
#[derive(Module, Debug)]
pub struct Conv2dLayer<B: Backend> {
    /// `[C_out, C_in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride of both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl<B: Backend> Conv2dLayer<B> {
    /// A `k × k` convolution `C_in → C_out` with the given stride, padding `k / 2` and a bias.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        init: ConvInit,
        device: &B::Device,
    ) -> Self {
        let fan_in = (c_in * kernel * kernel) as f64;
        let shape = [c_out, c_in, kernel, kernel];
        let uniform = |bound: f64, shape: Vec<usize>| {
            let n: usize = shape.iter().product();
            Tensor::<B, 1>::random([n], Distribution::Uniform(-bound, bound), device)
        };
        let (weight, bias) = match init {
            ConvInit::TorchDefault => {
                let bound = 1.0 / fan_in.sqrt();
                (
                    uniform(bound, shape.to_vec()).reshape(shape),
                    uniform(bound, vec![c_out]),
                )
            }
            ConvInit::KaimingUniform { a } => {
                let bound = (6.0 / ((1.0 + a * a) * fan_in)).sqrt();
                (
                    uniform(bound, shape.to_vec()).reshape(shape),
                    Tensor::zeros([c_out], device),
                )
            }
            ConvInit::Normal { std, bias } => (
                Tensor::random(shape, Distribution::Normal(0.0, std), device),
                Tensor::full([c_out], bias, device),
            ),
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
            stride,
            padding: kernel / 2,
        }
    }

    /// `[batch, C_in, H, W]` → `[batch, C_out, H_out, W_out]` with
    /// `H_out = (H + 2·padding − k) / stride + 1`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.stride,
            self.padding,
        )
    }

    /// Walks `{key}.weight` and `{key}.bias`.
    pub fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V, key: &str) {
        v.visit(&format!("{key}.weight"), &mut self.weight, Layout::Same);
        if let Some(bias) = &mut self.bias {
            v.visit(&format!("{key}.bias"), bias, Layout::Same);
        }
    }
}

/// Output length of a convolution along one axis.
pub(crate) fn conv_output_len(len: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (len + 2 * padding - kernel) / stride + 1
}

/// Elements `start, start + stride, …` (`count` of them) of spatial dimension `dim` (2 or 3),
/// with unit-step slices and a reshape only. The input must hold at least
/// `start + stride·count` elements along `dim` (pad it first).
fn strided<B: Backend>(
    x: Tensor<B, 4>,
    dim: usize,
    start: usize,
    count: usize,
    stride: usize,
) -> Tensor<B, 4> {
    let x = x.slice_dim(dim, start..start + stride * count);
    if stride == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    match dim {
        2 => x
            .reshape([b, c, count, stride, w])
            .slice_dim(3, 0..1)
            .reshape([b, c, count, w]),
        3 => x
            .reshape([b, c, h, count, stride])
            .slice_dim(4, 0..1)
            .reshape([b, c, h, count]),
        _ => panic!("strided: dimension {dim} is not spatial"),
    }
}

/// Zero padding: `before` elements at the start of dimension `dim` and `after` at its end.
fn pad_dim<B: Backend>(x: Tensor<B, 4>, dim: usize, before: usize, after: usize) -> Tensor<B, 4> {
    if before == 0 && after == 0 {
        return x;
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims();
    let device = x.device();
    if before > 0 {
        shape[dim] = before;
        parts.push(Tensor::zeros(shape, &device));
    }
    parts.push(x);
    if after > 0 {
        shape[dim] = after;
        parts.push(Tensor::zeros(shape, &device));
    }
    Tensor::cat(parts, dim)
}

/// Convolution of `x` `[batch, C_in, H, W]` with `weight` `[C_out, C_in, k, k]` (and `bias`
/// `[C_out]`), square stride and zero padding, as one matrix product over the stacked shifted
/// views → `[batch, C_out, H_out, W_out]`. Equal to PyTorch's `F.conv2d(x, weight, bias, stride,
/// padding)`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let [b, c_in, h, w] = x.dims();
    let [c_out, w_in, kh, kw] = weight.dims();
    assert_eq!(
        c_in, w_in,
        "conv2d: the input has {c_in} channels, the weight expects {w_in}"
    );
    let oh = conv_output_len(h, kh, stride, padding);
    let ow = conv_output_len(w, kw, stride, padding);
    // Enough zeros at the end for the last view's `stride·count` slice.
    let need_h = (kh - 1 + stride * oh).max(h + 2 * padding);
    let need_w = (kw - 1 + stride * ow).max(w + 2 * padding);
    let x = pad_dim(x, 2, padding, need_h - h - padding);
    let x = pad_dim(x, 3, padding, need_w - w - padding);
    let columns = if kh == 1 && kw == 1 {
        strided(strided(x, 2, 0, oh, stride), 3, 0, ow, stride).reshape([b, c_in, oh * ow])
    } else {
        let mut views = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            let rows = strided(x.clone(), 2, ky, oh, stride);
            for kx in 0..kw {
                views.push(strided(rows.clone(), 3, kx, ow, stride).reshape([b, c_in, 1, oh * ow]));
            }
        }
        // [b, C_in, k·k, H_out·W_out] → rows ordered (c, ky, kx) as the weight's.
        Tensor::cat(views, 2).reshape([b, c_in * kh * kw, oh * ow])
    };
    let kernel = weight
        .reshape([1, c_out, c_in * kh * kw])
        .expand([b, c_out, c_in * kh * kw]);
    let mut out = kernel.matmul(columns);
    if let Some(bias) = bias {
        out = out + bias.reshape([1, c_out, 1]);
    }
    out.reshape([b, c_out, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;

    type B = NdArray;

    fn max_diff(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn equals_burns_direct_convolution_for_every_stride_and_kernel() {
        let device = Default::default();
        for (h, w) in [(7, 9), (8, 8), (5, 4)] {
            for (k, stride) in [(3, 1), (3, 2), (1, 1), (1, 2)] {
                let x =
                    Tensor::<B, 4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
                let weight =
                    Tensor::<B, 4>::random([4, 3, k, k], Distribution::Normal(0.0, 1.0), &device);
                let bias = Tensor::<B, 1>::random([4], Distribution::Normal(0.0, 1.0), &device);
                let padding = k / 2;
                let ours = conv2d(
                    x.clone(),
                    weight.clone(),
                    Some(bias.clone()),
                    stride,
                    padding,
                );
                let theirs = burn_conv2d(
                    x,
                    weight,
                    Some(bias),
                    ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
                );
                assert_eq!(
                    ours.dims(),
                    theirs.dims(),
                    "k {k} stride {stride} on {h}×{w}"
                );
                let d = max_diff(ours, theirs);
                assert!(d < 1e-4, "k {k} stride {stride} on {h}×{w}: {d}");
            }
        }
    }

    #[test]
    fn gradients_equal_those_of_burns_direct_convolution() {
        type A = Autodiff<NdArray>;
        let device = Default::default();
        let x = Tensor::<A, 4>::random([2, 3, 7, 6], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let weight = Tensor::<A, 4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let target = Tensor::<A, 4>::random([2, 4, 4, 3], Distribution::Normal(0.0, 1.0), &device);
        let loss = |out: Tensor<A, 4>| (out * target.clone()).sum();
        let g1 = loss(conv2d(x.clone(), weight.clone(), None, 2, 1)).backward();
        let g2 = loss(burn_conv2d(
            x.clone(),
            weight.clone(),
            None,
            ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
        ))
        .backward();
        for (a, b) in [
            (x.grad(&g1).unwrap(), x.grad(&g2).unwrap()),
            (weight.grad(&g1).unwrap(), weight.grad(&g2).unwrap()),
        ] {
            let d: f32 = (a - b).abs().max().into_scalar();
            assert!(d < 1e-4, "gradient differs by {d}");
        }
    }
}
