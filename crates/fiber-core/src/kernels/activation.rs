//! Element-wise activations applied in place on f32 slices, for the fused kernels.

use burn::prelude::*;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::cpu::{array, is_ndarray, tensor};
use crate::Activation;

/// `activation(x)` by the CPU kernel, or `None` where `x` is not an f32 ndarray tensor.
pub(crate) fn cpu_activation<B: Backend, const D: usize>(
    activation: Activation,
    x: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    if !is_ndarray::<B>() {
        return None;
    }
    let input = array(x)?;
    let mut values = input
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    values
        .par_chunks_mut(16_384)
        .for_each(|chunk| apply_in_place(activation, chunk));
    Some(tensor(
        ArcArray::from_shape_vec(IxDyn(&x.dims()), values).expect("same number of values"),
    ))
}

/// The error function in f32: a rational approximation `x·P(x²)/Q(x²)` on `[−4, 4]` (degree
/// 13/12, the form XLA and Eigen use for f32; |error| ≤ 1e-7 in exact arithmetic and < 5e-7
/// computed in f32, against libm's 1 ulp), ±1 beyond. Built from multiplications, additions and one division, so loops over it vectorise.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_5e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_2e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for &a in &ALPHA[1..] {
        p = p * x2 + a;
    }
    let mut q = BETA[0];
    for &b in &BETA[1..] {
        q = q * x2 + b;
    }
    x * p / q
}

/// `eˣ` in f32 from multiplications and additions only, so loops over it vectorise (libm's
/// `expf` is a call per value): `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)` and `|r| ≤ ln2/2`,
/// `eʳ` by its Taylor polynomial of degree 7 (relative error < 3e-7 in f32, tested against f64).
/// 0 below −86.9 (values under 2e-38, flushed as denormals are), `+∞` above 88.72.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LOWEST: f32 = -86.9;
    const HIGHEST: f32 = 88.72;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(LOWEST, HIGHEST);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // 2ⁿ as 2ⁿ⁻¹·2, so that n = 128 (x near the top) stays finite.
    let exponent = (shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 126) << 23;
    let value = p * f32::from_bits(exponent as u32) * 2.0;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        value
    }
}

/// Exact GELU `x·Φ(x) = x·(1 + erf(x/√2))/2` with [`erf_f32`].
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Applies `activation` to every value of `values`.
pub(crate) fn apply_in_place(activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Gelu => values.iter_mut().for_each(|v| *v = gelu_erf(*v)),
        Activation::GeluTanh => values.iter_mut().for_each(|v| {
            let x = *v;
            let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
            *v = 0.5 * x * (1.0 + inner.tanh());
        }),
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Silu => values.iter_mut().for_each(|v| *v /= 1.0 + exp_f32(-*v)),
        Activation::Tanh => values.iter_mut().for_each(|v| *v = v.tanh()),
    }
}

/// `grad · activation′(z)` for every pre-activation value `z` of `pre`, written into `grad`
/// (the same length): the backward pass of [`apply_in_place`].
pub(crate) fn multiply_by_derivative(activation: Activation, pre: &[f32], grad: &mut [f32]) {
    let pairs = grad.iter_mut().zip(pre);
    match activation {
        Activation::Gelu => {
            let inv_sqrt_2pi =
                0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
            pairs.for_each(|(g, &z)| {
                let cdf = 0.5 * (1.0 + erf_f32(z * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = inv_sqrt_2pi * exp_f32(-0.5 * z * z);
                *g *= cdf + z * pdf;
            })
        }
        Activation::GeluTanh => pairs.for_each(|(g, &z)| {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            let t = (c * (z + 0.044_715 * z * z * z)).tanh();
            *g *= 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044_715 * z * z);
        }),
        Activation::Relu => pairs.for_each(|(g, &z)| {
            if z <= 0.0 {
                *g = 0.0;
            }
        }),
        Activation::Silu => pairs.for_each(|(g, &z)| {
            let s = 1.0 / (1.0 + exp_f32(-z));
            *g *= s * (1.0 + z * (1.0 - s));
        }),
        Activation::Tanh => pairs.for_each(|(g, &z)| {
            let t = z.tanh();
            *g *= 1.0 - t * t;
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (exact to 1e-9 for |x| ≤ 4); ±1 beyond, where
    /// 1 − |erf| < 1.6e-8.
    fn erf_f64(z: f64) -> f64 {
        if z.abs() > 4.0 {
            return z.signum();
        }
        let (mut term, mut sum) = (z, z);
        for n in 1..120 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_approximation_is_within_3e7_relative_of_the_exact_function() {
        let mut worst = 0f64;
        for i in -869_000..=887_200 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).exp();
            worst = worst.max((exp_f32(x) as f64 - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "largest relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-88.0), 0.0);
        assert_eq!(exp_f32(-10_000.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
    }

    #[test]
    fn erf_approximation_is_within_5e7_of_the_exact_function() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 * 1e-4;
            let err = (erf_f32(x as f32) as f64 - erf_f64(x)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "largest error {worst}");
        assert_eq!(erf_f32(9.0), 1.0);
        assert_eq!(erf_f32(-9.0), -1.0);
        assert_eq!(erf_f32(0.0), 0.0);
    }
}
