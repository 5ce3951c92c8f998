//! Stochastic depth: drops a whole residual branch per sample during training.

use burn::prelude::*;
use burn::tensor::Distribution;

/// Per-sample residual-branch dropout with probability `prob`, scaled by `1/(1−prob)`;
/// identity unless the backend records gradients (training) and `prob > 0`.
#[derive(Module, Clone, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch of one sample.
    pub prob: f64,
}

impl DropPath {
    /// `[batch, …]` → same shape, whole samples zeroed with probability `prob` in training.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.prob == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let mask = Tensor::<B, D>::random(shape, Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_in_inference_and_whole_samples_dropped_in_training() {
        type Infer = burn::backend::NdArray;
        type Train = burn::backend::Autodiff<burn::backend::NdArray>;
        let dp = DropPath { prob: 0.5 };
        let x = Tensor::<Infer, 3>::ones([64, 3, 2], &Default::default());
        assert_eq!(dp.forward(x.clone()).into_data(), x.into_data());
        let y: Vec<f32> = dp
            .forward(Tensor::<Train, 3>::ones([64, 3, 2], &Default::default()))
            .into_data()
            .into_vec()
            .unwrap();
        let mut dropped = 0;
        for sample in y.chunks(6) {
            assert!(
                sample.iter().all(|&v| v == sample[0]),
                "a sample is dropped or kept whole"
            );
            assert!(sample[0] == 0.0 || sample[0] == 2.0);
            dropped += (sample[0] == 0.0) as usize;
        }
        assert!((10..=54).contains(&dropped), "{dropped} of 64 dropped");
    }
}
