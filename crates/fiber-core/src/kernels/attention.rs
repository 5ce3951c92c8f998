//! Multi-head scaled dot-product attention with additive terms (masks, position biases).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use ndarray::{ArcArray, Axis, IxDyn};
use rayon::prelude::*;

use super::activation::exp_f32;
use super::autodiff::{
    incoming_gradient, is_autodiff_ndarray, record, register, tracked, untracked_from, Nd,
};
use super::cpu::{self, array, arrays, is_ndarray, tensor, CpuArray, SharedOut};
use super::matmul::{sgemm, Threads};
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
    if is_autodiff_ndarray::<B>() {
        if let Some(out) = tracked_attention(&query, &key, &value, heads, scale, additive, dropout)
        {
            return out;
        }
    }
    composed_attention(query, key, value, heads, scale, additive, dropout)
}

/// [`multi_head_attention`] composed from Burn tensor operations (every backend but ndarray,
/// and ndarray's autodiff with an active dropout).
fn composed_attention<B: Backend>(
    query: Tensor<B, 3>,
    key: Tensor<B, 3>,
    value: Tensor<B, 3>,
    heads: usize,
    scale: f64,
    additive: &[Tensor<B, 4>],
    dropout: Option<&Dropout>,
) -> Tensor<B, 3> {
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
    let q = array(query)?;
    let k = array(key)?;
    let v = array(value)?;
    let terms = arrays(&additive.iter().collect::<Vec<_>>())?;
    let (out, _) = attend(&q, &k, &v, heads, scale, &terms, false)?;
    Some(tensor(out))
}

/// The forward pass under autodiff, recorded as one node whose backward pass is
/// [`AttentionBackward`]. At most one additive term may need a gradient (Swin's relative
/// position bias; masks need none); with more, or with an active dropout, `None`.
fn tracked_attention<B: Backend>(
    query: &Tensor<B, 3>,
    key: &Tensor<B, 3>,
    value: &Tensor<B, 3>,
    heads: usize,
    scale: f64,
    additive: &[Tensor<B, 4>],
    dropout: Option<&Dropout>,
) -> Option<Tensor<B, 3>> {
    if dropout.is_some_and(|dropout| dropout.prob > 0.0) {
        return None;
    }
    let (q_node, q) = tracked(query)?;
    let (k_node, k) = tracked(key)?;
    let (v_node, v) = tracked(value)?;
    let terms = additive.iter().map(tracked).collect::<Option<Vec<_>>>()?;
    let mut trainable = terms
        .iter()
        .enumerate()
        .filter(|(_, (node, _))| !node.node.requirement.is_none())
        .map(|(index, _)| index);
    let trainable_term = trainable.next();
    if trainable.next().is_some() {
        return None;
    }
    let term_values: Vec<CpuArray> = terms.iter().map(|(_, values)| values.clone()).collect();
    let (out, probs) = attend(&q, &k, &v, heads, scale, &term_values, true)?;
    let state = AttentionState {
        query: q,
        key: k,
        value: v,
        probs: Arc::new(probs.expect("kept")),
        heads,
        scale: scale as f32,
        term_shape: trainable_term.map(|index| term_values[index].shape().to_vec()),
    };
    let tracked = match trainable_term {
        Some(index) => record(
            AttentionBackward,
            [&q_node, &k_node, &v_node, &terms[index].0],
            state,
            out,
        ),
        None => record(AttentionBackward, [&q_node, &k_node, &v_node], state, out),
    };
    Some(untracked_from(tracked))
}

/// `softmax(Q·Kᵀ·scale + Σ terms)·V` per (sample, head) on the rayon pool: the output
/// `[n, lq, heads·dv]` and, with `keep_probs`, the probabilities `[n, heads, lq, lk]`
/// (row-major); `None` for empty inputs.
fn attend(
    q: &CpuArray,
    k: &CpuArray,
    v: &CpuArray,
    heads: usize,
    scale: f64,
    terms: &[CpuArray],
    keep_probs: bool,
) -> Option<(CpuArray, Option<Vec<f32>>)> {
    let (n, lq, width) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let lk = k.shape()[1];
    let value_width = v.shape()[2];
    if n == 0 || lq == 0 || lk == 0 || width == 0 || value_width == 0 {
        return None;
    }
    let (d, dv) = (width / heads, value_width / heads);
    let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
    let mut out = vec![0f32; n * lq * value_width];
    let out_ptr = SharedOut::new(out.as_mut_ptr());
    let head_block = |task: usize, scores: &mut [f32]| {
        let (i, h) = (task / heads, task % heads);
        // SAFETY: every pointer below addresses the (i, h) block of its array with the
        // array's own strides; each task writes only its own rows × head columns of `out`.
        unsafe {
            sgemm(
                Threads::One,
                (lq, d, lk),
                scale as f32,
                (at(q, &[i, 0, h * d]), qs[1], qs[2]),
                (at(k, &[i, 0, h * d]), ks[2], ks[1]),
                0.0,
                (scores.as_mut_ptr(), lk as isize, 1),
            );
        }
        for term in terms {
            add_term(scores, term, i, h, lq, lk);
        }
        for row in scores.chunks_mut(lk) {
            softmax_row(row);
        }
        unsafe {
            sgemm(
                Threads::One,
                (lq, lk, dv),
                1.0,
                (scores.as_ptr(), lk as isize, 1),
                (at(v, &[i, 0, h * dv]), vs[1], vs[2]),
                0.0,
                (
                    out_ptr.start().add(i * lq * value_width + h * dv),
                    value_width as isize,
                    1,
                ),
            );
        }
    };
    let probs = if keep_probs {
        let mut probs = vec![0f32; n * heads * lq * lk];
        probs
            .par_chunks_mut(lq * lk)
            .enumerate()
            .for_each(|(task, scores)| head_block(task, scores));
        Some(probs)
    } else {
        (0..n * heads).into_par_iter().for_each_init(
            || vec![0f32; lq * lk],
            |scores, task| head_block(task, scores),
        );
        None
    };
    let out = ArcArray::from_shape_vec(IxDyn(&[n, lq, value_width]), out).expect("n·lq·width");
    Some((out, probs))
}

/// The backward pass of attention per (sample, head), with `P` the probabilities and `G` the
/// incoming gradient: `dV = Pᵀ·G`, `dS = P ⊙ (G·Vᵀ − rowsum(P ⊙ G·Vᵀ))`,
/// `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`, and the trainable term's gradient `dS` summed over
/// the dimensions it is broadcast along.
#[derive(Debug)]
struct AttentionBackward;

/// What [`AttentionBackward`] needs: query, key and value as they were read, the
/// probabilities `[n, heads, lq, lk]`, and the shape of the term that needs a gradient.
#[derive(Debug, Clone)]
struct AttentionState {
    query: CpuArray,
    key: CpuArray,
    value: CpuArray,
    probs: Arc<Vec<f32>>,
    heads: usize,
    scale: f32,
    term_shape: Option<Vec<usize>>,
}

impl<const N: usize> Backward<Nd, N> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = incoming_gradient(grads, &ops);
        let grad = grad.as_standard_layout();
        let grad = grad.as_slice().expect("standard layout");
        let state = &ops.state;
        let (q, k, v) = (&state.query, &state.key, &state.value);
        let (n, lq, width) = (q.shape()[0], q.shape()[1], q.shape()[2]);
        let lk = k.shape()[1];
        let value_width = v.shape()[2];
        let heads = state.heads;
        let (d, dv) = (width / heads, value_width / heads);
        let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
        let scale = state.scale;
        let mut dq = vec![0f32; n * lq * width];
        let mut dk = vec![0f32; n * lk * width];
        let mut dvalue = vec![0f32; n * lk * value_width];
        let mut dscores = vec![0f32; state.term_shape.as_ref().map_or(0, |_| n * heads * lq * lk)];
        let (dq_ptr, dk_ptr, dv_ptr) = (
            SharedOut::new(dq.as_mut_ptr()),
            SharedOut::new(dk.as_mut_ptr()),
            SharedOut::new(dvalue.as_mut_ptr()),
        );
        let ds_ptr = SharedOut::new(dscores.as_mut_ptr());
        let keep_dscores = !dscores.is_empty();
        (0..n * heads).into_par_iter().for_each_init(
            || vec![0f32; lq * lk],
            |ds, task| {
                let (i, h) = (task / heads, task % heads);
                let p = &state.probs[task * lq * lk..(task + 1) * lq * lk];
                let g = grad[i * lq * value_width + h * dv..].as_ptr();
                // SAFETY: as in the forward pass, every pointer addresses the (i, h) block of
                // its array with that array's strides, and each task writes only its own
                // blocks of dq, dk, dv and dscores.
                unsafe {
                    sgemm(
                        Threads::One,
                        (lk, lq, dv),
                        1.0,
                        (p.as_ptr(), 1, lk as isize),
                        (g, value_width as isize, 1),
                        0.0,
                        (
                            dv_ptr.start().add(i * lk * value_width + h * dv),
                            value_width as isize,
                            1,
                        ),
                    );
                    sgemm(
                        Threads::One,
                        (lq, dv, lk),
                        1.0,
                        (g, value_width as isize, 1),
                        (at(v, &[i, 0, h * dv]), vs[2], vs[1]),
                        0.0,
                        (ds.as_mut_ptr(), lk as isize, 1),
                    );
                }
                for (ds_row, p_row) in ds.chunks_mut(lk).zip(p.chunks(lk)) {
                    let dot = cpu::dot(ds_row, p_row);
                    ds_row
                        .iter_mut()
                        .zip(p_row)
                        .for_each(|(s, &pv)| *s = pv * (*s - dot));
                }
                unsafe {
                    if keep_dscores {
                        std::ptr::copy_nonoverlapping(
                            ds.as_ptr(),
                            ds_ptr.start().add(task * lq * lk),
                            lq * lk,
                        );
                    }
                    sgemm(
                        Threads::One,
                        (lq, lk, d),
                        scale,
                        (ds.as_ptr(), lk as isize, 1),
                        (at(k, &[i, 0, h * d]), ks[1], ks[2]),
                        0.0,
                        (
                            dq_ptr.start().add(i * lq * width + h * d),
                            width as isize,
                            1,
                        ),
                    );
                    sgemm(
                        Threads::One,
                        (lk, lq, d),
                        scale,
                        (ds.as_ptr(), 1, lk as isize),
                        (at(q, &[i, 0, h * d]), qs[1], qs[2]),
                        0.0,
                        (
                            dk_ptr.start().add(i * lk * width + h * d),
                            width as isize,
                            1,
                        ),
                    );
                }
            },
        );
        let [q_node, k_node, v_node] = [0, 1, 2].map(|index| ops.parents[index].as_ref());
        if let Some(node) = q_node {
            register(grads, node.id, &[n, lq, width], dq);
        }
        if let Some(node) = k_node {
            register(grads, node.id, &[n, lk, width], dk);
        }
        if let Some(node) = v_node {
            register(grads, node.id, &[n, lk, value_width], dvalue);
        }
        if let (Some(node), Some(shape)) = (
            ops.parents.get(3).and_then(Option::as_ref),
            &state.term_shape,
        ) {
            let values = sum_to_term_shape(dscores, [n, heads, lq, lk], shape);
            register(grads, node.id, shape, values);
        }
    }
}

/// `values` `[n, heads, lq, lk]` (row-major) summed down to a broadcastable term's shape
/// `[m, h, q, k]` (`m` dividing `n`, row `i` counting towards `i mod m`; each other
/// dimension 1 or full): the term's gradient, row-major.
fn sum_to_term_shape(values: Vec<f32>, full: [usize; 4], term: &[usize]) -> Vec<f32> {
    let [n, heads, lq, lk] = full;
    let m = term[0];
    let mut sum = ndarray::Array::from_shape_vec(IxDyn(&[n / m, m, heads, lq, lk]), values)
        .expect("n·heads·lq·lk values")
        .sum_axis(Axis(0));
    for axis in 1..4 {
        if term[axis] == 1 && sum.shape()[axis] != 1 {
            sum = sum.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    sum.as_standard_layout().iter().copied().collect()
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
    let max = cpu::max(row);
    row.iter_mut().for_each(|s| *s = exp_f32(*s - max));
    let inv = 1.0 / cpu::sum(row);
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
        let composed = composed_attention(
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

    /// Under autodiff the recorded kernel and the composed operations agree on the output
    /// and on the gradients of the fused projections and of a trainable term, for a term
    /// shared by all samples and for one repeating every third sample.
    #[test]
    fn recorded_kernel_gradients_equal_the_composed_operations() {
        assert!(is_autodiff_ndarray::<Ad>());
        let (n, lq, lk, heads, d) = (6, 5, 7, 3, 4);
        for bias_shape in [[1, heads, lq, lk], [3, 1, lq, 1]] {
            let fused_q = random::<Ad, 3>([n, lq, 3 * heads * d]).require_grad();
            let kv = random::<Ad, 3>([n, lk, 2 * heads * d]).require_grad();
            let bias = random::<Ad, 4>(bias_shape).require_grad();
            let padding = random::<Ad, 4>([n, 1, 1, lk]);
            let weighting = random::<Ad, 3>([n, lq, heads * d]);
            let run = |kernel: bool| {
                let query = fused_q
                    .clone()
                    .slice([0..n, 0..lq, heads * d..2 * heads * d]);
                let key = kv.clone().slice([0..n, 0..lk, 0..heads * d]);
                let value = kv.clone().slice([0..n, 0..lk, heads * d..2 * heads * d]);
                let terms = [padding.clone(), bias.clone()];
                let out = if kernel {
                    multi_head_attention(query, key, value, heads, 0.37, &terms, None)
                } else {
                    composed_attention(query, key, value, heads, 0.37, &terms, None)
                };
                let grads = (out.clone() * weighting.clone()).sum().backward();
                (
                    out,
                    fused_q.grad(&grads).unwrap(),
                    kv.grad(&grads).unwrap(),
                    bias.grad(&grads).unwrap(),
                )
            };
            let (out_k, dq_k, dkv_k, db_k) = run(true);
            let (out_c, dq_c, dkv_c, db_c) = run(false);
            let diff3 =
                |a: Tensor<B, 3>, b: Tensor<B, 3>| -> f32 { (a - b).abs().max().into_scalar() };
            let out_diff = diff3(out_k.inner(), out_c.inner());
            let dq_diff = diff3(dq_k, dq_c);
            let dkv_diff = diff3(dkv_k, dkv_c);
            let db_diff: f32 = (db_k - db_c).abs().max().into_scalar();
            assert!(
                out_diff < 1e-5 && dq_diff < 1e-5 && dkv_diff < 1e-5 && db_diff < 1e-5,
                "{bias_shape:?}: output {out_diff}, query {dq_diff}, key/value {dkv_diff}, \
                 term {db_diff}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "does not broadcast")]
    fn a_term_that_does_not_broadcast_is_refused() {
        let q = random::<B, 3>([4, 2, 6]);
        let bad = random::<B, 4>([3, 1, 2, 2]);
        multi_head_attention(q.clone(), q.clone(), q, 2, 1.0, &[bad], None);
    }
}
