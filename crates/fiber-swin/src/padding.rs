//! Zero padding at the end of spatial dimensions (HuggingFace Swin pads bottom and right).

use burn::prelude::*;

/// Appends zeros to dimension `dim` of `x` until it has length `len` (no-op if already so).
pub fn pad_end<B: Backend>(x: Tensor<B, 4>, dim: usize, len: usize) -> Tensor<B, 4> {
    let mut shape = x.dims();
    if shape[dim] >= len {
        return x;
    }
    shape[dim] = len - shape[dim];
    let zeros = Tensor::zeros(shape, &x.device());
    Tensor::cat(vec![x, zeros], dim)
}

/// Smallest multiple of `m` that is ≥ `n`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}
