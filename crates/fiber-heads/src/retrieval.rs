//! docs/model.md §4.3: retrieval scores — ITC cosine similarities over the whole collection, the ITM
//! matching logit for chosen pairs, and ITC top-k followed by ITM re-ranking in both directions
//! (the original scores every pair with ITM; re-ranking only the top k is far cheaper). The
//! evaluation and the `retrieve` command both re-rank through [`FiberModel::rerank_by_itm`].

use burn::prelude::*;
use fiber_core::store::tensor_values;
use fiber_fusion::{ImageState, TextState};

use crate::model::FiberModel;

/// Cosine similarities `[texts, images]` of L2-normalised features (`text` `[t, d]`,
/// `image` `[i, d]`), without temperature.
pub fn itc_scores<B: Backend>(text: Tensor<B, 2>, image: Tensor<B, 2>) -> Tensor<B, 2> {
    text.matmul(image.transpose())
}

/// Which side of a retrieval is the query: texts retrieving images, or images retrieving texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Each text ranks the images.
    Text,
    /// Each image ranks the texts.
    Image,
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

    /// ITM re-ranking of ITC rankings, in either direction: `rankings[q]` lists query `q`'s
    /// candidates best first (images when `query` is [`Query::Text`], texts otherwise); the
    /// first `k` of each list are reordered by their ITM matching logit (ties keep their ITC
    /// order), the rest keep theirs. Each entry is `(candidate, ITM logit if re-ranked)`.
    pub fn rerank_by_itm(
        &self,
        images: &ImageState<B>,
        texts: &TextState<B>,
        rankings: &[Vec<usize>],
        query: Query,
        k: usize,
    ) -> Vec<Vec<(usize, Option<f32>)>> {
        rankings
            .iter()
            .enumerate()
            .map(|(q, ranked)| {
                let k = k.min(ranked.len());
                let pairs: Vec<(usize, usize)> = ranked[..k]
                    .iter()
                    .map(|&c| match query {
                        Query::Text => (c, q),
                        Query::Image => (q, c),
                    })
                    .collect();
                let mut head: Vec<(usize, Option<f32>)> = if k == 0 {
                    Vec::new()
                } else {
                    let scores = tensor_values(self.itm_scores(images, texts, &pairs));
                    ranked[..k]
                        .iter()
                        .copied()
                        .zip(scores.into_iter().map(Some))
                        .collect()
                };
                head.sort_by(|a, b| b.1.unwrap_or(f32::MIN).total_cmp(&a.1.unwrap_or(f32::MIN)));
                head.extend(ranked[k..].iter().map(|&c| (c, None)));
                head
            })
            .collect()
    }
}
