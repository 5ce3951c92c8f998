//! LayerNorm over the last dimension in one read and one write per row.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::cpu::{array, is_ndarray, rows_per_task, tensor};

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
    let c = x.dims()[D - 1];
    if c == 0 || input.is_empty() {
        return None;
    }
    let input = input.as_standard_layout();
    let input = input.as_slice().expect("standard layout");
    let gamma = gamma.as_standard_layout();
    let gamma = gamma.as_slice().expect("standard layout");
    let beta = beta.as_ref().map(|b| b.as_standard_layout());
    let beta = beta
        .as_ref()
        .map(|b| b.as_slice().expect("standard layout"));
    let mut out = vec![0f32; input.len()];
    let chunk = rows_per_task(c) * c;
    out.par_chunks_mut(chunk)
        .zip(input.par_chunks(chunk))
        .for_each(|(out_rows, in_rows)| {
            for (row_out, row) in out_rows.chunks_mut(c).zip(in_rows.chunks(c)) {
                normalise_row(row, row_out, gamma, beta, eps as f32);
            }
        });
    Some(tensor(
        ArcArray::from_shape_vec(IxDyn(&x.dims()), out).expect("same number of values"),
    ))
}

fn normalise_row(row: &[f32], out: &mut [f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) {
    let c = row.len() as f32;
    let mean = row.iter().sum::<f32>() / c;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;

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
}
