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
    /// Applies the activation element-wise; any shape in, same shape out.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
            Activation::Tanh => x.tanh(),
        }
    }
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
