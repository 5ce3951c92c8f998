//! Multi-head attention plumbing shared by the text and image backbones.

use burn::prelude::*;

/// Value added to the attention scores of masked positions. The original FIBER code (on
/// transformers 4.6) uses −10000; after the softmax it gives exactly zero weight in f32, like
/// the dtype minimum newer HuggingFace versions use, and it cannot overflow when several masks
/// are added together.
pub const MASKED_SCORE: f32 = -10000.0;

/// Additive mask from a padding mask: `[batch, len]` of 1 (keep) / 0 (pad) →
/// `[batch, 1, 1, len]` of 0 / [`MASKED_SCORE`], broadcast over heads and queries.
pub fn padding_mask<B: Backend>(attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 4> {
    let [batch, len] = attention_mask.dims();
    let keep = attention_mask.float();
    (keep.neg() + 1.0)
        .mul_scalar(MASKED_SCORE)
        .reshape([batch, 1, 1, len])
}

/// Additive causal mask `[1, 1, len, len]`: query `i` may attend to keys `0..=i`.
pub fn causal_mask<B: Backend>(len: usize, device: &B::Device) -> Tensor<B, 4> {
    let future = Tensor::<B, 2>::ones([len, len], device).triu(1);
    future.mul_scalar(MASKED_SCORE).reshape([1, 1, len, len])
}

/// `[batch, len, heads·head_dim]` → `[batch, heads, len, head_dim]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [batch, len, width] = x.dims();
    x.reshape([batch, len, heads, width / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, len, head_dim]` → `[batch, len, heads·head_dim]`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, len, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, len, heads * head_dim])
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn padding_and_causal_masks_block_exactly_the_right_keys() {
        let device = Default::default();
        let mask = Tensor::<B, 2, Int>::from_ints([[1, 1, 0]], &device);
        let pad: Vec<f32> = padding_mask(mask).into_data().into_vec().unwrap();
        assert_eq!(pad, vec![0.0, 0.0, MASKED_SCORE]);
        let causal: Vec<f32> = causal_mask::<B>(3, &device).into_data().into_vec().unwrap();
        let m = MASKED_SCORE;
        assert_eq!(causal, vec![0.0, m, m, 0.0, 0.0, m, 0.0, 0.0, 0.0]);
    }

    /// With one-hot values each output row is a row of attention probabilities.
    #[test]
    fn masked_keys_get_zero_probability_and_rows_sum_to_one() {
        let device = Default::default();
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 3>::random([1, 3, 8], normal, &device);
        let k = Tensor::<B, 3>::random([1, 3, 8], normal, &device);
        let eye = Tensor::<B, 2>::eye(3, &device);
        let one_hot = Tensor::cat(vec![eye.clone(), eye], 1).unsqueeze::<3>();
        let mask = padding_mask(Tensor::<B, 2, Int>::from_ints([[1, 0, 1]], &device));
        let out = crate::kernels::multi_head_attention(q, k, one_hot, 2, 0.5, &[mask], None);
        let p: Vec<f32> = out.into_data().into_vec().unwrap();
        for row in p.chunks(3) {
            assert_eq!(row[1], 0.0);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn splitting_and_merging_heads_round_trips() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([2, 5, 6], burn::tensor::Distribution::Default, &device);
        let back = merge_heads(split_heads(x.clone(), 3));
        assert_eq!(back.into_data(), x.into_data());
    }
}
