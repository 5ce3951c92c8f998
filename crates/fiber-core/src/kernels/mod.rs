//! Fused, multi-threaded CPU kernels for the operations that dominate FIBER's forward and
//! backward passes: linear layers (with their activation), LayerNorm, multi-head attention,
//! residual additions and the row gathers that rearrange token grids.
//!
//! Each public function takes Burn tensors and is generic over the backend. On the ndarray
//! backend in f32 without autodiff (inference: retrieval, VQA, captioning, grounding) it runs
//! one hand-written kernel over the whole tensor, split across the rayon pool: a single matrix
//! product over all leading dimensions with the bias written first, the activation applied in
//! the same pass over the output, LayerNorm in one read and one write per row, and attention
//! read directly from the strided query/key/value layouts (no head permutes, no broadcast
//! copies of masks or biases). On autodiff over ndarray (training) the same kernels run and
//! each call is recorded as one node of the autodiff graph with a hand-written backward pass
//! (`autodiff.rs`). On every other backend (and for attention with an active dropout) it
//! composes the same Burn tensor operations the models used before, so GPU backends keep their
//! own fused kernels and autodiff its graph. All paths agree to float rounding (the tests
//! below and every model parity test check this).
//!
//! Every matrix product goes through one `gemm` call on the same rayon pool (`matmul.rs`), and
//! [`map_batch`] splits inference across the batch, one shard of samples per thread, so the work
//! that stays in Burn's single-threaded operations runs on every core as well.
//!
//! The backend is recognised at run time from its float tensor type (Rust has no
//! specialisation; Burn's backend-extension traits would put a new bound on every model).

mod activation;
mod attention;
mod autodiff;
mod batch;
pub(crate) mod cpu;
mod gather;
mod linear;
mod matmul;
mod norm;
mod residual;

pub(crate) use activation::cpu_activation;
pub use activation::{erf_f32, exp_f32, gelu_erf};
pub use attention::multi_head_attention;
pub use batch::{inference_shards, map_batch, shard_ranges, BatchShard};
pub use gather::gather_rows;
pub use linear::{affine, linear, linear_activation};
pub use norm::layer_norm;
pub use residual::add;
