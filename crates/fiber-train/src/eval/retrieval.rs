//! Image–text retrieval (docs/model.md §4.3): ITC cosine similarities, and the ITC top-k
//! re-ranked by the ITM matching logit, in both directions.

use burn::prelude::*;
use fiber_core::store::tensor_values;
use fiber_data::image::PixelImage;
use fiber_heads::retrieval::itc_scores;
use fiber_heads::{FiberModel, Query};
use fiber_roberta::RobertaTokenizer;
use serde::Serialize;

use crate::error::TrainError;
use crate::metrics::{rank_rows, recall_at_k, transpose};

/// Recall@1/5/10 in both directions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recalls {
    /// Image → text R@1.
    #[serde(rename = "tr@1")]
    pub tr1: f64,
    /// Image → text R@5.
    #[serde(rename = "tr@5")]
    pub tr5: f64,
    /// Image → text R@10.
    #[serde(rename = "tr@10")]
    pub tr10: f64,
    /// Text → image R@1.
    #[serde(rename = "ir@1")]
    pub ir1: f64,
    /// Text → image R@5.
    #[serde(rename = "ir@5")]
    pub ir5: f64,
    /// Text → image R@10.
    #[serde(rename = "ir@10")]
    pub ir10: f64,
}

impl Recalls {
    fn from_rankings(image_to_text: &[Vec<usize>], text_to_image: &[Vec<usize>]) -> Self {
        let same = |q: usize, item: usize| q == item;
        let r = |rankings: &[Vec<usize>], k| recall_at_k(rankings, &same, k);
        Self {
            tr1: r(image_to_text, 1),
            tr5: r(image_to_text, 5),
            tr10: r(image_to_text, 10),
            ir1: r(text_to_image, 1),
            ir5: r(text_to_image, 5),
            ir10: r(text_to_image, 10),
        }
    }
}

/// Retrieval results over `candidates` images with one caption each.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    /// Dual-encoder cosine similarities.
    pub itc: Recalls,
    /// ITC top-k re-ranked by the ITM matching logit.
    pub itm: Recalls,
    /// Images (= captions) ranked.
    pub candidates: usize,
    /// ITC candidates re-ranked by ITM.
    pub itm_rerank_k: usize,
    /// Recall@1/5/10 of a random ranking.
    pub chance: [f64; 3],
}

/// Retrieval among `images` (normalised, one size) and `captions` (caption j belongs to image j).
pub fn evaluate_retrieval<B: Backend>(
    model: &FiberModel<B>,
    images: &[PixelImage],
    captions: &[String],
    tokenizer: &RobertaTokenizer,
    max_len: usize,
    rerank_k: usize,
    device: &B::Device,
) -> Result<RetrievalReport, TrainError> {
    let n = images.len();
    let pixels = fiber_data::image::to_tensor::<B>(images, device)?;
    let (ids, mask) = tokenizer
        .encode_batch(captions, max_len)?
        .to_tensors(device);
    let image_state = model.backbone.image_prefix(pixels);
    let text_state = model.backbone.text_prefix(ids, mask);
    let (image_feats, text_feats) = model.itc_features(&image_state, &text_state);
    let t2i = tensor_values(itc_scores(text_feats.clone(), image_feats.clone()));
    let i2t = transpose(&t2i, n, n);
    let (text_to_image, image_to_text) = (rank_rows(&t2i, n), rank_rows(&i2t, n));
    let itc = Recalls::from_rankings(&image_to_text, &text_to_image);
    // Re-rank the first k of each list by the ITM matching logit; the rest keep their order.
    let rerank = |rankings: &[Vec<usize>], query: Query| -> Vec<Vec<usize>> {
        model
            .rerank_by_itm(&image_state, &text_state, rankings, query, rerank_k)
            .into_iter()
            .map(|ranked| ranked.into_iter().map(|(c, _)| c).collect())
            .collect()
    };
    let itm = Recalls::from_rankings(
        &rerank(&image_to_text, Query::Image),
        &rerank(&text_to_image, Query::Text),
    );
    let chance = [1.0, 5.0, 10.0].map(|k: f64| (k / n as f64).min(1.0));
    Ok(RetrievalReport {
        itc,
        itm,
        candidates: n,
        itm_rerank_k: rerank_k,
        chance,
    })
}
