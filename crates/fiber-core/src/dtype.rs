//! Float-type helpers shared by the heads and the optimiser.

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// `t` in f32, any shape: unchanged (no cast operation queued) when it already is f32.
pub fn in_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match t.dtype() {
        DType::F32 => t,
        _ => t.cast(FloatDType::F32),
    }
}
