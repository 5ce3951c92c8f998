//! Inference on a user's own images with a trained run: captions, answers to a question, and
//! images ranked for texts.

use burn::prelude::*;
use fiber_core::store::tensor_values;
use fiber_data::image::PixelImage;
use fiber_data::vqa::AnswerVocab;
use fiber_heads::retrieval::itc_scores;
use fiber_heads::{FiberModel, Query, VqaModel};

use crate::error::TrainError;
use crate::metrics::rank_rows;
use crate::run::RunFolder;

/// Captions for `images`.
pub fn caption_images<B: Backend>(
    run: &RunFolder,
    model: &FiberModel<B>,
    images: &[PixelImage],
    device: &B::Device,
) -> Result<Vec<String>, TrainError> {
    let decode = run.decode_config();
    images
        .iter()
        .map(|image| {
            crate::eval::generate_caption_text(model, image, &decode, &run.tokenizer, device)
        })
        .collect()
}

/// The `top` most likely answers (with their sigmoid probability) to `question` about `image`.
pub fn answer_question<B: Backend>(
    run: &RunFolder,
    model: &VqaModel<B>,
    vocab: &AnswerVocab,
    image: &PixelImage,
    question: &str,
    top: usize,
    device: &B::Device,
) -> Result<Vec<(String, f32)>, TrainError> {
    let len = run.config.model.max_text_len;
    let (ids, mask) = run
        .tokenizer
        .encode_batch(&[question], len)?
        .to_tensors(device);
    let pixels = fiber_data::image::to_tensor::<B>(std::slice::from_ref(image), device)?;
    let logits = model.logits(pixels, ids, mask);
    let probs = tensor_values(burn::tensor::activation::sigmoid(logits));
    let mut ranked: Vec<(String, f32)> = vocab.answers.iter().cloned().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(top);
    Ok(ranked)
}

/// For each text, the images ranked by ITC cosine similarity, the first `rerank` re-ordered by
/// the ITM matching logit: `(image index, ITC score, ITM logit if re-ranked)`, best first.
pub fn retrieve_images<B: Backend>(
    run: &RunFolder,
    model: &FiberModel<B>,
    images: &[PixelImage],
    texts: &[String],
    rerank: usize,
    device: &B::Device,
) -> Result<Vec<Vec<(usize, f32, Option<f32>)>>, TrainError> {
    let len = run.config.model.max_text_len;
    let (ids, mask) = run.tokenizer.encode_batch(texts, len)?.to_tensors(device);
    let image_state = model
        .backbone
        .image_prefix(fiber_data::image::to_tensor::<B>(images, device)?);
    let text_state = model.backbone.text_prefix(ids, mask);
    let (image_feats, text_feats) = model.itc_features(&image_state, &text_state);
    let scores = tensor_values(itc_scores(text_feats, image_feats));
    let n = images.len();
    let rankings = rank_rows(&scores, n);
    let reranked = model.rerank_by_itm(&image_state, &text_state, &rankings, Query::Text, rerank);
    Ok(reranked
        .into_iter()
        .zip(scores.chunks(n))
        .map(|(ranked, row)| {
            ranked
                .into_iter()
                .map(|(i, itm)| (i, row[i], itm))
                .collect()
        })
        .collect())
}
