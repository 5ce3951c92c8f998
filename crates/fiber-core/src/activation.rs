//! Activation functions named as in HuggingFace `config.json` files (`hidden_act`).

use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

/// An element-wise activation, serialised under its HuggingFace name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` with the error function (`"gelu"`).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh approximation of GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `max(x, 0)` (`"relu"`).
    #[serde(rename = "relu")]
    Relu,
    /// `x·sigmoid(x)` (`"silu"`, `"swish"`).
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    /// Hyperbolic tangent (`"tanh"`).
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    /// Applies the activation element-wise; any shape in, same shape out. On the ndarray
    /// backend without autodiff a multi-threaded kernel computes it (`crate::kernels`).
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(y) = crate::kernels::cpu_activation(*self, &x) {
            return y;
        }
        match self {
            Activation::Gelu => gelu_exact(x),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Exact GELU `x·Φ(x)`. Where gradients are tracked it is composed from `erf` so that its
/// gradient is the exact `Φ(x) + x·φ(x)`: Burn 0.21's own `gelu` differentiates the tanh
/// approximation instead (gradient errors up to 8.7e-4, at x ≈ −2) and costs about 15 tensor
/// operations in the backward pass. Without autodiff, Burn's single fused `gelu` is used.
pub fn gelu_exact<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return activation::gelu(x);
    }
    let phi = x
        .clone()
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * phi
}

/// PyTorch's hard sigmoid `ReLU6(x + 3) / 6` (DyHead's `h_sigmoid`; Burn's `HardSigmoid`
/// defaults to slope 0.2, which is not it).
pub fn hard_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.add_scalar(3.0).clamp(0.0, 6.0).div_scalar(6.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_parse_and_unknown_names_are_rejected() {
        let parse = |s: &str| serde_json::from_str::<Activation>(&format!("\"{s}\""));
        assert_eq!(parse("gelu").unwrap(), Activation::Gelu);
        assert_eq!(parse("gelu_pytorch_tanh").unwrap(), Activation::GeluTanh);
        assert_eq!(parse("swish").unwrap(), Activation::Silu);
        assert!(parse("quick_gelu").is_err());
    }

    #[test]
    fn exact_gelu_has_the_exact_gradient() {
        type B = burn::backend::Autodiff<burn::backend::NdArray>;
        let points = [-3.0f64, -1.5, -0.7, -0.1, 0.0, 0.3, 0.9, 1.7, 2.5];
        let x =
            Tensor::<B, 1>::from_floats(points.map(|p| p as f32).as_slice(), &Default::default())
                .require_grad();
        let y = Activation::Gelu.forward(x.clone());
        let grads = y.sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().into_data().into_vec().unwrap();
        // d/dx x·Φ(x) = Φ(x) + x·φ(x), in f64 (erf by its series, exact to 1e-12 here).
        let erf = |z: f64| {
            let mut term = z;
            let mut sum = z;
            for n in 1..80 {
                term *= -z * z / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        for (&p, &got) in points.iter().zip(&g) {
            let cdf = 0.5 * (1.0 + erf(p / std::f64::consts::SQRT_2));
            let pdf = (-p * p / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let exact = cdf + p * pdf;
            assert!(
                (got as f64 - exact).abs() < 2e-6,
                "x = {p}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn exact_gelu_matches_the_error_function_definition() {
        type B = burn::backend::NdArray;
        let x = Tensor::<B, 1>::from_floats([-2.0, -0.5, 0.0, 1.0, 3.0], &Default::default());
        let y: Vec<f32> = Activation::Gelu.forward(x).into_data().into_vec().unwrap();
        // x·Φ(x) with Φ from the error function, reference values computed with erf in f64.
        let expected = [-0.045500263, -0.15426877, 0.0, 0.8413447, 2.9959502];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
