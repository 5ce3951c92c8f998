//! Spec D.3: retrieval scores — ITC cosine similarities over the whole collection, the ITM
//! matching logit for chosen pairs, and ITC top-k followed by ITM re-ranking (the original
//! scores every pair with ITM; re-ranking only the top k is far cheaper).

use burn::prelude::*;
use fiber_fusion::{ImageState, TextState};

use crate::model::FiberModel;

/// Cosine similarities `[texts, images]` of L2-normalised features (`text` `[t, d]`,
/// `image` `[i, d]`), without temperature.
pub fn itc_scores<B: Backend>(text: Tensor<B, 2>, image: Tensor<B, 2>) -> Tensor<B, 2> {
    text.matmul(image.transpose())
}

/// The `k` best columns of each row of a row-major `rows × columns` score matrix, best first.
pub fn top_k(scores: &[f32], columns: usize, k: usize) -> Vec<Vec<usize>> {
    scores
        .chunks(columns)
        .map(|row| {
            let mut order: Vec<usize> = (0..columns).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order.truncate(k.min(columns));
            order
        })
        .collect()
}

impl<B: Backend> FiberModel<B> {
    /// ITM matching logits `[n]` for the pairs `(images[pairs[j].0], texts[pairs[j].1])`, from
    /// prefix states computed once per image and text.
    pub fn itm_scores(
        &self,
        images: &ImageState<B>,
        texts: &TextState<B>,
        pairs: &[(usize, usize)],
    ) -> Tensor<B, 1> {
        let image_rows: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let text_rows: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        let out = self
            .backbone
            .fused_suffix(&images.select(&image_rows), &texts.select(&text_rows));
        self.itm_score.score(self.cls_feats(&out))
    }

    /// Text-to-image retrieval by ITC top-`k` then ITM re-ranking: for each text, the `k` images
    /// with the highest cosine similarity, reordered by their ITM score (best first).
    pub fn rerank_text_to_image(
        &self,
        itc: &[f32],
        images: &ImageState<B>,
        texts: &TextState<B>,
        k: usize,
    ) -> Vec<Vec<usize>> {
        let n_images = images.map.tokens.dims()[0];
        top_k(itc, n_images, k)
            .into_iter()
            .enumerate()
            .map(|(t, candidates)| {
                let pairs: Vec<(usize, usize)> = candidates.iter().map(|&i| (i, t)).collect();
                let scores =
                    fiber_core::store::tensor_values(self.itm_scores(images, texts, &pairs));
                let mut ranked: Vec<(usize, f32)> = candidates.into_iter().zip(scores).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.into_iter().map(|(i, _)| i).collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_columns_by_score() {
        let scores = [0.1f32, 0.9, 0.5, 0.7, 0.2, 0.3];
        assert_eq!(top_k(&scores, 3, 2), vec![vec![1, 2], vec![0, 2]]);
    }
}
