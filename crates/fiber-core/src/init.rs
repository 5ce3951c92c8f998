//! Initialisers matching the reference implementations (HuggingFace `_init_weights`, timm).

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::norm::LayerNorm;

/// `Linear(d_in → d_out)` with weights from N(0, std²) and a zero bias, as HuggingFace
/// initialises BERT-family models and FIBER its new heads (docs/model.md §3.1, §6.3). The
/// weight `[d_in, d_out]` is stored with the shorter row stride ([`short_row_stride`]).
pub fn linear_normal<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    let weight = short_row_stride([d_in, d_out], |shape| {
        Tensor::random(shape, Distribution::Normal(0.0, std), device)
    });
    linear_with(weight, bias, device)
}

/// A `[d_in, d_out]` weight made by `make` (called with the shape to fill), stored so that
/// its rows in memory are the shorter ones: with more outputs than inputs, as a transposed
/// view of a `[d_out, d_in]` buffer (the layout PyTorch checkpoints have, and the one
/// [`crate::weights::assign_stored`] keeps). Products with few input rows read one weight row
/// per cache line; rows a multiple of 4 KiB apart (3072 floats, as in the text MLP) fall into
/// the same cache sets, and such products ran at half speed (docs/performance.md). Every
/// kernel accepts either layout; an optimiser step may store the result in the plain one.
pub fn short_row_stride<B: Backend>(
    [d_in, d_out]: [usize; 2],
    make: impl FnOnce([usize; 2]) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    if d_out > d_in {
        make([d_out, d_in]).transpose()
    } else {
        make([d_in, d_out])
    }
}

/// A linear layer with the given `[d_in, d_out]` weight and, if asked, a zero bias.
fn linear_with<B: Backend>(weight: Tensor<B, 2>, bias: bool, device: &B::Device) -> Linear<B> {
    let d_out = weight.dims()[1];
    Linear {
        weight: Param::from_tensor(weight),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// `linear` with its weight and bias set to zero (same shapes and device).
pub fn zeroed<B: Backend>(mut linear: Linear<B>) -> Linear<B> {
    let weight = linear.weight.val();
    linear.weight = Param::from_tensor(Tensor::zeros(weight.dims(), &weight.device()));
    linear.bias = linear
        .bias
        .map(|b| Param::from_tensor(b.val().zeros_like()));
    linear
}

/// `Linear(d_in → d_out)` with weights from a normal distribution truncated to ±2·std and a
/// zero bias (timm's `trunc_normal_(std=.02)` for Swin and the image-side fusion modules).
pub fn linear_trunc_normal<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    let weight = short_row_stride([d_in, d_out], |shape| {
        Tensor::random(shape, Distribution::Normal(0.0, std), device).clamp(-2.0 * std, 2.0 * std)
    });
    linear_with(weight, bias, device)
}

/// LayerNorm over `d` features with weight 1 and bias 0.
pub fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    let norm = LayerNormConfig::new(d).with_epsilon(eps).init::<B>(device);
    LayerNorm {
        gamma: norm.gamma,
        beta: norm.beta,
        epsilon: eps,
    }
}

/// Embedding table `[n, d]` from N(0, std²); the row `padding_idx`, if given, is zero.
pub fn embedding_normal<B: Backend>(
    n: usize,
    d: usize,
    std: f64,
    padding_idx: Option<usize>,
    device: &B::Device,
) -> Embedding<B> {
    let mut embedding = EmbeddingConfig::new(n, d)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    if let Some(pad) = padding_idx.filter(|&p| p < n) {
        let w = embedding
            .weight
            .val()
            .slice_assign([pad..pad + 1, 0..d], Tensor::zeros([1, d], device));
        embedding.weight = Param::from_tensor(w.detach());
    }
    embedding
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Autodiff<burn::backend::NdArray>;

    #[test]
    fn initialisers_give_trainable_leaves_on_an_autodiff_backend() {
        let device = Default::default();
        let linear = linear_trunc_normal::<B>(64, 32, true, 0.02, &device);
        let embedding = embedding_normal::<B>(10, 8, 0.02, Some(1), &device);
        let w = linear.weight.val();
        assert!(w.is_require_grad());
        let max = w.clone().abs().max().into_scalar();
        assert!(
            max <= 0.04 + 1e-7,
            "truncated at two standard deviations, got {max}"
        );
        let bias: Vec<f32> = linear.bias.unwrap().val().into_data().into_vec().unwrap();
        assert!(bias.iter().all(|&b| b == 0.0));
        let pad_row: Vec<f32> = embedding
            .weight
            .val()
            .slice([1..2, 0..8])
            .into_data()
            .into_vec()
            .unwrap();
        assert_eq!(pad_row, vec![0.0; 8]);
        let loss = w.sum() + embedding.weight.val().sum();
        let grads = loss.backward();
        assert!(linear.weight.grad(&grads).is_some());
    }

    #[test]
    fn weights_with_more_outputs_than_inputs_are_transposed_views() {
        type Cpu = burn::backend::NdArray;
        let device = Default::default();
        let wide = linear_trunc_normal::<Cpu>(8, 24, true, 0.02, &device)
            .weight
            .val();
        let narrow = linear_normal::<Cpu>(24, 8, true, 0.02, &device)
            .weight
            .val();
        assert_eq!((wide.dims(), narrow.dims()), ([8, 24], [24, 8]));
        let strides =
            |w: &Tensor<Cpu, 2>| crate::kernels::cpu::array(w).unwrap().strides().to_vec();
        assert_eq!(strides(&wide), vec![1, 8]);
        assert_eq!(strides(&narrow), vec![8, 1]);
        let max = wide.abs().max().into_scalar();
        assert!(
            max <= 0.04 + 1e-7,
            "truncated at two standard deviations, got {max}"
        );
    }
}
