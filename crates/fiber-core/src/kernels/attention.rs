//! Multi-head scaled dot-product attention with additive terms (masks, position biases).

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::cpu::{array, arrays, is_ndarray, tensor, CpuArray, SharedOut};
use crate::attention::{merge_heads, split_heads};

/// `softmax(Q·Kᵀ·scale + Σ additive)·V` per head, heads split from and merged back into the
/// last dimension: `query` `[n, lq, heads·d]`, `key` `[n, lk, heads·d]`, `value`
/// `[n, lk, heads·dv]` → `[n, lq, heads·dv]`.
///
/// Each additive term is `[m, h, q, k]` with `m` dividing `n` (row `i` of the batch uses
/// `i mod m`: `m = n` for per-sample padding masks, `m = 1` for one shared bias, `m` = windows
/// per image for Swin's shifted-window mask over `n = images·windows`), `h` 1 or `heads`, `q` 1
/// or `lq`, `k` 1 or `lk`. Query, key and value may be strided views (slices of one fused
/// projection): the CPU kernel reads them in place. `dropout` applies to the probabilities
/// (training only).
pub fn multi_head_attention<B: Backend>(
    query: Tensor<B, 3>,
    key: Tensor<B, 3>,
    value: Tensor<B, 3>,
    heads: usize,
    scale: f64,
    additive: &[Tensor<B, 4>],
    dropout: Option<&Dropout>,
) -> Tensor<B, 3> {
    check_shapes(&query, &key, &value, heads, additive);
    if is_ndarray::<B>() {
        if let Some(out) = cpu_attention(&query, &key, &value, heads, scale, additive) {
            return out;
        }
    }
    let n = query.dims()[0];
    let mut scores = split_heads(query, heads)
        .matmul(split_heads(key, heads).swap_dims(2, 3))
        .mul_scalar(scale);
    for term in additive {
        let m = term.dims()[0];
        scores = if m == n || m == 1 {
            scores + term.clone()
        } else {
            let [_, h, lq, lk] = scores.dims();
            (scores.reshape([n / m, m, h, lq, lk]) + term.clone().unsqueeze::<5>())
                .reshape([n, h, lq, lk])
        };
    }
    let probs = softmax(scores, 3);
    let probs = match dropout {
        Some(dropout) => dropout.forward(probs),
        None => probs,
    };
    merge_heads(probs.matmul(split_heads(value, heads)))
}

fn check_shapes<B: Backend>(
    query: &Tensor<B, 3>,
    key: &Tensor<B, 3>,
    value: &Tensor<B, 3>,
    heads: usize,
    additive: &[Tensor<B, 4>],
) {
    let [n, lq, width] = query.dims();
    let [nk, lk, key_width] = key.dims();
    let [nv, lv, value_width] = value.dims();
    assert!(
        heads > 0
            && width % heads == 0
            && value_width % heads == 0
            && key_width == width
            && nk == n
            && nv == n
            && lv == lk,
        "attention shapes: query {:?}, key {:?}, value {:?} with {heads} heads",
        query.dims(),
        key.dims(),
        value.dims()
    );
    for term in additive {
        let [m, h, q, k] = term.dims();
        assert!(
            m > 0
                && n % m == 0
                && (h == 1 || h == heads)
                && (q == 1 || q == lq)
                && (k == 1 || k == lk),
            "additive attention term {:?} does not broadcast to [{n}, {heads}, {lq}, {lk}]",
            term.dims()
        );
    }
}

/// Pointer arithmetic on a strided view: the address of element `offset` steps of the strides.
fn at(array: &CpuArray, index: &[usize]) -> *const f32 {
    let strides = array.strides();
    let offset: isize = index
        .iter()
        .zip(strides)
        .map(|(&i, &s)| i as isize * s)
        .sum();
    // SAFETY: callers pass indices inside the array's shape.
    unsafe { array.as_ptr().offset(offset) }
}

fn cpu_attention<B: Backend>(
    query: &Tensor<B, 3>,
    key: &Tensor<B, 3>,
    value: &Tensor<B, 3>,
    heads: usize,
    scale: f64,
    additive: &[Tensor<B, 4>],
) -> Option<Tensor<B, 3>> {
    let [n, lq, width] = query.dims();
    let lk = key.dims()[1];
    let value_width = value.dims()[2];
    if n == 0 || lq == 0 || lk == 0 || width == 0 || value_width == 0 {
        return None;
    }
    let q = array(query)?;
    let k = array(key)?;
    let v = array(value)?;
    let terms = arrays(&additive.iter().collect::<Vec<_>>())?;
    let (d, dv) = (width / heads, value_width / heads);
    let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
    let mut out = vec![0f32; n * lq * value_width];
    let out_ptr = SharedOut::new(out.as_mut_ptr());
    (0..n * heads).into_par_iter().for_each_init(
        || vec![0f32; lq * lk],
        |scores, task| {
            let (i, h) = (task / heads, task % heads);
            // SAFETY: every pointer below addresses the (i, h) block of its array with the
            // array's own strides; each task writes only its own rows × head columns of `out`.
            unsafe {
                matrixmultiply::sgemm(
                    lq,
                    d,
                    lk,
                    scale as f32,
                    at(&q, &[i, 0, h * d]),
                    qs[1],
                    qs[2],
                    at(&k, &[i, 0, h * d]),
                    ks[2],
                    ks[1],
                    0.0,
                    scores.as_mut_ptr(),
                    lk as isize,
                    1,
                );
            }
            for term in &terms {
                add_term(scores, term, i, h, lq, lk);
            }
            for row in scores.chunks_mut(lk) {
                softmax_row(row);
            }
            unsafe {
                matrixmultiply::sgemm(
                    lq,
                    lk,
                    dv,
                    1.0,
                    scores.as_ptr(),
                    lk as isize,
                    1,
                    at(&v, &[i, 0, h * dv]),
                    vs[1],
                    vs[2],
                    0.0,
                    out_ptr.start().add(i * lq * value_width + h * dv),
                    value_width as isize,
                    1,
                );
            }
        },
    );
    let out = ArcArray::from_shape_vec(IxDyn(&[n, lq, value_width]), out).expect("n·lq·width");
    Some(tensor(out))
}

/// Adds the `(i mod m, h)` slice of a broadcastable `[m, h, q, k]` term to `scores` `[lq, lk]`.
fn add_term(scores: &mut [f32], term: &CpuArray, i: usize, h: usize, lq: usize, lk: usize) {
    let shape = term.shape();
    let strides = term.strides();
    let base = at(
        term,
        &[i % shape[0], if shape[1] == 1 { 0 } else { h }, 0, 0],
    );
    let row_stride = if shape[2] == 1 { 0 } else { strides[2] };
    let col_stride = if shape[3] == 1 { 0 } else { strides[3] };
    for (r, row) in scores.chunks_mut(lk).enumerate().take(lq) {
        // SAFETY: r < lq and c < lk stay inside the term's (broadcast) shape.
        unsafe {
            let start = base.offset(r as isize * row_stride);
            if col_stride == 1 {
                let values = std::slice::from_raw_parts(start, lk);
                row.iter_mut().zip(values).for_each(|(s, t)| *s += t);
            } else {
                for (c, s) in row.iter_mut().enumerate() {
                    *s += *start.offset(c as isize * col_stride);
                }
            }
        }
    }
}

fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|s| *s *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::NdArray;
    type Ad = burn::backend::Autodiff<B>;

    fn random<Bk: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Bk, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// The kernel against the composed tensor path (run on autodiff, which never takes the
    /// kernel), on strided slices of a fused projection and every kind of additive term.
    #[test]
    fn fused_attention_equals_the_composed_tensor_operations() {
        let (n, lq, lk, heads, d) = (6, 5, 7, 3, 4);
        let fused_q = random::<B, 3>([n, lq, 3 * heads * d]);
        let kv = random::<B, 3>([n, lk, 2 * heads * d]);
        let query = fused_q
            .clone()
            .slice([0..n, 0..lq, heads * d..2 * heads * d]);
        let key = kv.clone().slice([0..n, 0..lk, 0..heads * d]);
        let value = kv.slice([0..n, 0..lk, heads * d..2 * heads * d]);
        let padding = random::<B, 4>([n, 1, 1, lk]);
        let bias = random::<B, 4>([1, heads, lq, lk]);
        let window_mask = random::<B, 4>([3, 1, lq, lk]);
        let transposed = random::<B, 4>([1, heads, lk, lq]).swap_dims(2, 3);
        let terms = vec![padding, bias, window_mask, transposed];
        let to_ad = |x: &Tensor<B, 3>| Tensor::<Ad, 3>::from_data(x.to_data(), &Default::default());
        let fused = multi_head_attention(
            query.clone(),
            key.clone(),
            value.clone(),
            heads,
            0.37,
            &terms,
            None,
        );
        let ad_terms: Vec<Tensor<Ad, 4>> = terms
            .iter()
            .map(|t| Tensor::from_data(t.to_data(), &Default::default()))
            .collect();
        let composed = multi_head_attention(
            to_ad(&query),
            to_ad(&key),
            to_ad(&value),
            heads,
            0.37,
            &ad_terms,
            None,
        );
        let composed = Tensor::<B, 3>::from_data(composed.to_data(), &Default::default());
        let diff: f32 = (fused - composed).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    #[should_panic(expected = "does not broadcast")]
    fn a_term_that_does_not_broadcast_is_refused() {
        let q = random::<B, 3>([4, 2, 6]);
        let bad = random::<B, 4>([3, 1, 2, 2]);
        multi_head_attention(q.clone(), q.clone(), q, 2, 1.0, &[bad], None);
    }
}
