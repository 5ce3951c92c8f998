//! LayerNorm over the last dimension in one read and one write per row, and its backward
//! pass in one more.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::autodiff::{
    incoming_gradient, is_autodiff_ndarray, record, register, tracked, untracked_from, Nd,
};
use super::cpu::{self, array, is_ndarray, rows_per_task, tensor, CpuArray};

/// `(x − mean)/√(var + eps)·γ + β` over the last dimension (biased variance, as PyTorch and
/// Burn): `x` `[..., C]`, `gamma` and `beta` `[C]` → `[..., C]`.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    if is_ndarray::<B>() {
        if let Some(out) = cpu_layer_norm(&x, &gamma, beta.as_ref(), eps) {
            return out;
        }
    }
    if is_autodiff_ndarray::<B>() {
        if let Some(out) = tracked_layer_norm(&x, &gamma, beta.as_ref(), eps) {
            return out;
        }
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.map(|b| b.into_primitive().tensor()),
        eps,
    )))
}

fn cpu_layer_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: Option<&Tensor<B, 1>>,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let input = array(x)?;
    let gamma = array(gamma)?;
    let beta = match beta {
        Some(beta) => Some(array(beta)?),
        None => None,
    };
    let (out, _) = normalise(&input, &gamma, beta.as_ref(), eps)?;
    Some(tensor(out))
}

/// The forward pass under autodiff, recorded as one node whose backward pass is
/// [`LayerNormBackward`].
fn tracked_layer_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: Option<&Tensor<B, 1>>,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let (x_node, input) = tracked(x)?;
    let (gamma_node, gamma_values) = tracked(gamma)?;
    let beta = match beta {
        Some(beta) => Some(tracked(beta)?),
        None => None,
    };
    let (out, row_stats) = normalise(
        &input,
        &gamma_values,
        beta.as_ref().map(|(_, values)| values),
        eps,
    )?;
    let state = LayerNormState {
        input,
        gamma: gamma_values,
        row_stats: std::sync::Arc::new(row_stats),
    };
    let tracked = match &beta {
        Some((beta_node, _)) => record(
            LayerNormBackward,
            [&x_node, &gamma_node, beta_node],
            state,
            out,
        ),
        None => record(LayerNormBackward, [&x_node, &gamma_node], state, out),
    };
    Some(untracked_from(tracked))
}

/// The normalised rows (row-major, `input`'s shape) and each row's mean and `1/√(var + eps)`;
/// `None` for an empty input.
fn normalise(
    input: &CpuArray,
    gamma: &CpuArray,
    beta: Option<&CpuArray>,
    eps: f64,
) -> Option<(CpuArray, Vec<[f32; 2]>)> {
    let shape = input.shape().to_vec();
    let c = *shape.last()?;
    if c == 0 || input.is_empty() {
        return None;
    }
    let input = input.as_standard_layout();
    let input = input.as_slice().expect("standard layout");
    let gamma = gamma.as_standard_layout();
    let gamma = gamma.as_slice().expect("standard layout");
    let beta = beta.map(|b| b.as_standard_layout());
    let beta = beta
        .as_ref()
        .map(|b| b.as_slice().expect("standard layout"));
    let mut out = vec![0f32; input.len()];
    let mut stats = vec![[0f32; 2]; input.len() / c];
    let rows = rows_per_task(c);
    out.par_chunks_mut(rows * c)
        .zip(input.par_chunks(rows * c))
        .zip(stats.par_chunks_mut(rows))
        .for_each(|((out_rows, in_rows), stats)| {
            for ((row_out, row), stat) in out_rows.chunks_mut(c).zip(in_rows.chunks(c)).zip(stats) {
                *stat = normalise_row(row, row_out, gamma, beta, eps as f32);
            }
        });
    let out = ArcArray::from_shape_vec(IxDyn(&shape), out).expect("same number of values");
    Some((out, stats))
}

fn normalise_row(
    row: &[f32],
    out: &mut [f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
) -> [f32; 2] {
    let c = row.len() as f32;
    let mean = cpu::sum(row) / c;
    let mut centred_squares = [0f32; 64];
    let mut var = 0.0;
    for chunk in row.chunks(64) {
        let squares = &mut centred_squares[..chunk.len()];
        squares
            .iter_mut()
            .zip(chunk)
            .for_each(|(s, v)| *s = (v - mean) * (v - mean));
        var += cpu::sum(squares);
    }
    let var = var / c;
    let inv_std = 1.0 / (var + eps).sqrt();
    match beta {
        Some(beta) => {
            for (((o, v), g), b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
                *o = (v - mean) * inv_std * g + b;
            }
        }
        None => {
            for ((o, v), g) in out.iter_mut().zip(row).zip(gamma) {
                *o = (v - mean) * inv_std * g;
            }
        }
    }
    [mean, inv_std]
}

/// The backward pass of LayerNorm: with `x̂` the normalised row, `g` the incoming gradient
/// and `ĝ = g·γ`, `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ`, `dγ = Σ_rows g·x̂`, `dβ = Σ_rows g`.
#[derive(Debug)]
struct LayerNormBackward;

/// What [`LayerNormBackward`] needs: the input, γ and each row's mean and `1/σ`.
#[derive(Debug, Clone)]
struct LayerNormState {
    input: CpuArray,
    gamma: CpuArray,
    row_stats: std::sync::Arc<Vec<[f32; 2]>>,
}

impl<const N: usize> Backward<Nd, N> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = incoming_gradient(grads, &ops);
        let state = &ops.state;
        let c = state.gamma.len();
        let grad = grad.as_standard_layout();
        let grad = grad.as_slice().expect("standard layout");
        let input = state.input.as_standard_layout();
        let input = input.as_slice().expect("standard layout");
        let gamma = state.gamma.as_standard_layout();
        let gamma = gamma.as_slice().expect("standard layout");
        let rows = rows_per_task(c);
        let mut dx = vec![0f32; input.len()];
        let (dgamma, dbeta) = dx
            .par_chunks_mut(rows * c)
            .zip(input.par_chunks(rows * c))
            .zip(grad.par_chunks(rows * c))
            .zip(state.row_stats.par_chunks(rows))
            .fold(
                || (vec![0f32; c], vec![0f32; c]),
                |(mut dgamma, mut dbeta), (((dx_rows, x_rows), g_rows), stats)| {
                    let rows = dx_rows.chunks_mut(c).zip(x_rows.chunks(c));
                    for ((dx, x), (g, &[mean, inv_std])) in rows.zip(g_rows.chunks(c).zip(stats)) {
                        // ĝ·x̂ and ĝ are staged in dx and summed in lanes; dx is then overwritten.
                        for ((((d, &xv), &gv), &gm), (dg, db)) in dx
                            .iter_mut()
                            .zip(x)
                            .zip(g)
                            .zip(gamma)
                            .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
                        {
                            let x_hat = (xv - mean) * inv_std;
                            *d = gv * gm * x_hat;
                            *dg += gv * x_hat;
                            *db += gv;
                        }
                        let sum_gx = cpu::sum(dx);
                        let sum_g = cpu::dot(g, gamma);
                        let (mean_g, mean_gx) = (sum_g / c as f32, sum_gx / c as f32);
                        for (((d, &xv), &gv), &gm) in dx.iter_mut().zip(x).zip(g).zip(gamma) {
                            let x_hat = (xv - mean) * inv_std;
                            *d = (gv * gm - mean_g - x_hat * mean_gx) * inv_std;
                        }
                    }
                    (dgamma, dbeta)
                },
            )
            .reduce(
                || (vec![0f32; c], vec![0f32; c]),
                |(mut ga, mut ba), (gb, bb)| {
                    ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
                    ba.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
                    (ga, ba)
                },
            );
        if let Some(node) = &ops.parents[0] {
            register(grads, node.id, state.input.shape(), dx);
        }
        if let Some(node) = &ops.parents[1] {
            register(grads, node.id, &[c], dgamma);
        }
        if let Some(node) = ops.parents.get(2).and_then(Option::as_ref) {
            register(grads, node.id, &[c], dbeta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;
    type Ad = burn::backend::Autodiff<B>;

    #[test]
    fn fused_layer_norm_equals_burns() {
        let device = Default::default();
        for (eps, bias) in [(1e-5, true), (1e-12, true), (1e-6, false)] {
            let norm = LayerNormConfig::new(48)
                .with_epsilon(eps)
                .with_bias(bias)
                .init::<B>(&device);
            let gamma = Tensor::<B, 1>::random([48], Distribution::Normal(1.0, 0.3), &device);
            let beta = Tensor::<B, 1>::random([48], Distribution::Normal(0.0, 0.3), &device);
            let mut norm = norm;
            norm.gamma = burn::module::Param::from_tensor(gamma.clone());
            if bias {
                norm.beta = Some(burn::module::Param::from_tensor(beta.clone()));
            }
            // A permuted (non-contiguous) input with an offset, as models produce them.
            let x = Tensor::<B, 3>::random([48, 9, 4], Distribution::Normal(3.0, 5.0), &device)
                .permute([2, 1, 0]);
            let fused = layer_norm(x.clone(), gamma, bias.then_some(beta), eps);
            let diff: f32 = (fused - norm.forward(x)).abs().max().into_scalar();
            assert!(diff < 1e-5, "eps {eps}, bias {bias}: {diff}");
        }
    }

    /// Under autodiff the recorded kernel and Burn's composed LayerNorm agree on the output
    /// and on the gradients of the input, γ and β.
    #[test]
    fn recorded_kernel_gradients_equal_the_composed_layer_norms() {
        let device = Default::default();
        for (eps, bias) in [(1e-5, true), (1e-12, true), (1e-6, false)] {
            let x = Tensor::<Ad, 3>::random([20, 5, 3], Distribution::Normal(3.0, 5.0), &device)
                .require_grad();
            let gamma = Tensor::<Ad, 1>::random([20], Distribution::Normal(1.0, 0.3), &device)
                .require_grad();
            let beta = Tensor::<Ad, 1>::random([20], Distribution::Normal(0.0, 0.3), &device)
                .require_grad();
            let weighting = Tensor::<Ad, 3>::random([3, 5, 20], Distribution::Default, &device);
            let input = x.clone().permute([2, 1, 0]);
            let kernel = layer_norm(input, gamma.clone(), bias.then(|| beta.clone()), eps);
            // Its own permute: a backward pass consumes the graph nodes it runs through.
            let input = x.clone().permute([2, 1, 0]);
            let centered = input.clone() - input.mean_dim(2);
            let variance = centered.clone().powi_scalar(2).mean_dim(2);
            let mut composed =
                centered / variance.add_scalar(eps).sqrt() * gamma.clone().unsqueeze::<3>();
            if bias {
                composed = composed + beta.clone().unsqueeze::<3>();
            }
            let out_diff: f32 = (kernel.clone() - composed.clone())
                .abs()
                .max()
                .into_scalar();
            assert!(out_diff < 1e-4, "eps {eps}: output {out_diff}");
            let grads_kernel = (kernel * weighting.clone()).sum().backward();
            let grads_composed = (composed * weighting).sum().backward();
            let x_diff: f32 = (x.grad(&grads_kernel).unwrap() - x.grad(&grads_composed).unwrap())
                .abs()
                .max()
                .into_scalar();
            let g_diff: f32 = (gamma.grad(&grads_kernel).unwrap()
                - gamma.grad(&grads_composed).unwrap())
            .abs()
            .max()
            .into_scalar();
            assert!(
                x_diff < 1e-4 && g_diff < 1e-4,
                "eps {eps}: {x_diff} {g_diff}"
            );
            if bias {
                let b_diff: f32 = (beta.grad(&grads_kernel).unwrap()
                    - beta.grad(&grads_composed).unwrap())
                .abs()
                .max()
                .into_scalar();
                assert!(b_diff < 1e-4, "eps {eps}: beta {b_diff}");
            } else {
                assert!(beta.grad(&grads_kernel).is_none());
            }
        }
    }
}
