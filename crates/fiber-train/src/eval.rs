//! Evaluation of the coarse checkpoint (spec D): image–text retrieval with ITC and with ITC
//! top-k + ITM re-ranking, VQA accuracy, captioning (BLEU-4, CIDEr-D) and masked-token accuracy,
//! each with the chance or baseline level it must beat.

use burn::prelude::*;
use fiber_core::store::tensor_values;
use fiber_data::image::PixelImage;
use fiber_data::masking::{MlmMasker, IGNORE_INDEX};
use fiber_data::nlvr2::Nlvr2Record;
use fiber_data::vqa::{AnswerVocab, VqaRecord};
use fiber_heads::retrieval::itc_scores;
use fiber_heads::{DecodeConfig, FiberModel};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::TrainError;
use crate::metrics::{
    bleu, caption_tokens, cider_d, rank_rows, recall_at_k, transpose, vqa_accuracy,
};
use crate::nlvr2::{pair_logits, Nlvr2Model, PairBatch};
use crate::tasks::{int_tensor, VqaModel};

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
    let tokens = tokenizer.encode_batch(captions, max_len)?;
    let ids = int_tensor::<B>(&tokens.input_ids, max_len, device);
    let mask = int_tensor::<B>(&tokens.attention_mask, max_len, device);
    let image_state = model.backbone.image_prefix(pixels);
    let text_state = model.backbone.text_prefix(ids, mask);
    let (image_feats, text_feats) = model.itc_features(&image_state, &text_state);
    let t2i = tensor_values(itc_scores(text_feats.clone(), image_feats.clone()));
    let i2t = transpose(&t2i, n, n);
    let (text_to_image, image_to_text) = (rank_rows(&t2i, n), rank_rows(&i2t, n));
    let itc = Recalls::from_rankings(&image_to_text, &text_to_image);
    // Re-rank the first k of each list by the ITM matching logit; the rest keep their order.
    let rerank = |rankings: &[Vec<usize>], text_is_query: bool| -> Vec<Vec<usize>> {
        rankings
            .iter()
            .enumerate()
            .map(|(q, ranked)| {
                let k = rerank_k.min(ranked.len());
                let pairs: Vec<(usize, usize)> = ranked[..k]
                    .iter()
                    .map(|&c| if text_is_query { (c, q) } else { (q, c) })
                    .collect();
                let scores = tensor_values(model.itm_scores(&image_state, &text_state, &pairs));
                let mut head: Vec<(usize, f32)> = ranked[..k].iter().copied().zip(scores).collect();
                head.sort_by(|a, b| b.1.total_cmp(&a.1));
                head.into_iter()
                    .map(|(c, _)| c)
                    .chain(ranked[k..].iter().copied())
                    .collect()
            })
            .collect()
    };
    let itm = Recalls::from_rankings(
        &rerank(&image_to_text, false),
        &rerank(&text_to_image, true),
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

/// VQA accuracy on held-out questions.
#[derive(Debug, Clone, Serialize)]
pub struct VqaReport {
    /// Official VQA accuracy of the argmax answer.
    pub accuracy: f64,
    /// Accuracy of always giving the most frequent training answer.
    pub majority_baseline: f64,
    /// The most frequent training answer.
    pub majority_answer: String,
    /// Questions evaluated.
    pub questions: usize,
    /// Accuracy and count by question type (the annotations' `question_type`).
    pub by_question_type: std::collections::BTreeMap<String, (f64, usize)>,
}

/// Evaluates `model` on `records`, loading each image with `load`.
pub fn evaluate_vqa<B: Backend>(
    model: &VqaModel<B>,
    records: &[VqaRecord],
    images: &[PixelImage],
    vocab: &AnswerVocab,
    majority: &str,
    tokenizer: &RobertaTokenizer,
    max_len: usize,
    batch: usize,
    device: &B::Device,
) -> Result<VqaReport, TrainError> {
    let mut total = 0.0;
    let mut baseline = 0.0;
    let mut by_type: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (chunk, chunk_images) in records.chunks(batch).zip(images.chunks(batch)) {
        let questions: Vec<&str> = chunk.iter().map(|r| r.question.as_str()).collect();
        let tokens = tokenizer.encode_batch(&questions, max_len)?;
        let pixels = fiber_data::image::to_tensor::<B>(chunk_images, device)?;
        let logits = model.logits(
            pixels,
            int_tensor(&tokens.input_ids, max_len, device),
            int_tensor(&tokens.attention_mask, max_len, device),
        );
        let best: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("argmax gives integers");
        for (record, answer) in chunk.iter().zip(best) {
            let accuracy = vqa_accuracy(&vocab.answers[answer as usize], &record.answers);
            total += accuracy;
            let slot = by_type
                .entry(record.question_type.clone())
                .or_insert((0.0, 0));
            slot.0 += accuracy;
            slot.1 += 1;
            baseline += vqa_accuracy(majority, &record.answers);
        }
    }
    let n = records.len().max(1) as f64;
    Ok(VqaReport {
        accuracy: total / n,
        majority_baseline: baseline / n,
        majority_answer: majority.to_string(),
        questions: records.len(),
        by_question_type: by_type
            .into_iter()
            .map(|(k, (sum, n))| (k, (sum / n as f64, n)))
            .collect(),
    })
}

/// NLVR2 accuracy on held-out statements.
#[derive(Debug, Clone, Serialize)]
pub struct Nlvr2Report {
    /// Fraction of statements whose truth value is predicted correctly.
    pub accuracy: f64,
    /// Accuracy of always answering the more frequent truth value of the evaluated statements.
    pub majority_baseline: f64,
    /// Statements evaluated.
    pub statements: usize,
}

/// Evaluates an NLVR2 model on `records`, `batch` pairs at a time (images resized to `size`).
pub fn evaluate_nlvr2<B: Backend>(
    model: &Nlvr2Model<B>,
    records: &[Nlvr2Record],
    size: usize,
    tokenizer: &RobertaTokenizer,
    max_len: usize,
    batch: usize,
    device: &B::Device,
) -> Result<Nlvr2Report, TrainError> {
    let mut correct = 0usize;
    for chunk in records.chunks(batch.max(1)) {
        let left = crate::job::load_images(
            &chunk.iter().map(|r| r.left.clone()).collect::<Vec<_>>(),
            size,
        )?;
        let right = crate::job::load_images(
            &chunk.iter().map(|r| r.right.clone()).collect::<Vec<_>>(),
            size,
        )?;
        let sentences: Vec<&str> = chunk.iter().map(|r| r.sentence.as_str()).collect();
        let batch = PairBatch {
            left,
            right,
            tokens: tokenizer.encode_batch(&sentences, max_len)?,
            labels: chunk.iter().map(|r| r.label).collect(),
        };
        let predicted: Vec<i64> = pair_logits(model, &batch, device)?
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("argmax gives integers");
        correct += predicted
            .iter()
            .zip(&batch.labels)
            .filter(|(&p, &label)| (p == 1) == label)
            .count();
    }
    let n = records.len().max(1) as f64;
    let trues = records.iter().filter(|r| r.label).count();
    Ok(Nlvr2Report {
        accuracy: correct as f64 / n,
        majority_baseline: trues.max(records.len() - trues) as f64 / n,
        statements: records.len(),
    })
}

/// Captioning scores.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionReport {
    /// Corpus BLEU-4.
    pub bleu4: f64,
    /// CIDEr-D (document frequencies from the evaluated references).
    pub cider: f64,
    /// Images captioned.
    pub images: usize,
    /// A few generated captions with their references' first entry.
    pub examples: Vec<(String, String)>,
}

/// Generates a caption for each image and scores them against `references[i]`.
pub fn evaluate_captions<B: Backend>(
    model: &FiberModel<B>,
    images: &[PixelImage],
    references: &[Vec<String>],
    tokenizer: &RobertaTokenizer,
    decode: &DecodeConfig,
    device: &B::Device,
) -> Result<CaptionReport, TrainError> {
    let mut candidates = Vec::new();
    let mut examples = Vec::new();
    for (image, refs) in images.iter().zip(references) {
        let text = generate_caption_text(model, image, decode, tokenizer, device)?;
        if examples.len() < 5 {
            examples.push((
                text.trim().to_string(),
                refs.first().cloned().unwrap_or_default(),
            ));
        }
        candidates.push(caption_tokens(&text));
    }
    let refs: Vec<Vec<Vec<String>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| caption_tokens(r)).collect())
        .collect();
    let (cider, _) = cider_d(&candidates, &refs);
    Ok(CaptionReport {
        bleu4: bleu(&candidates, &refs)[3],
        cider,
        images: images.len(),
        examples,
    })
}

/// Masked-token prediction on held-out captions.
#[derive(Debug, Clone, Serialize)]
pub struct MlmReport {
    /// Accuracy of the argmax token at masked positions.
    pub accuracy: f64,
    /// Accuracy of always predicting the most frequent token of the training captions.
    pub most_frequent_token_baseline: f64,
    /// Masked positions evaluated.
    pub masked_tokens: usize,
}

/// MLM accuracy: `captions[i]` with image `images[i]`, masked as in pre-training (seeded).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_mlm<B: Backend>(
    model: &FiberModel<B>,
    images: &[PixelImage],
    captions: &[String],
    most_frequent: i64,
    masker: &MlmMasker,
    tokenizer: &RobertaTokenizer,
    max_len: usize,
    seed: u64,
    device: &B::Device,
) -> Result<MlmReport, TrainError> {
    let tokens = tokenizer.encode_batch(captions, max_len)?;
    let masked = masker.mask(
        &tokens.input_ids,
        &tokens.attention_mask,
        &mut StdRng::seed_from_u64(seed),
    );
    let pixels = fiber_data::image::to_tensor::<B>(images, device)?;
    let out = model.backbone.forward_fused(
        pixels,
        int_tensor(&masked.input_ids, max_len, device),
        int_tensor(&tokens.attention_mask, max_len, device),
    );
    let predicted: Vec<i64> = model
        .mlm_logits(&out)
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("argmax gives integers");
    let (mut right, mut baseline, mut count) = (0usize, 0usize, 0usize);
    for (label, guess) in masked.labels.iter().zip(predicted) {
        if *label == IGNORE_INDEX {
            continue;
        }
        count += 1;
        right += (guess == *label) as usize;
        baseline += (most_frequent == *label) as usize;
    }
    let n = count.max(1) as f64;
    Ok(MlmReport {
        accuracy: right as f64 / n,
        most_frequent_token_baseline: baseline as f64 / n,
        masked_tokens: count,
    })
}

/// The beam-search caption of one normalised image, detokenised without special tokens.
pub fn generate_caption_text<B: Backend>(
    model: &FiberModel<B>,
    image: &PixelImage,
    decode: &DecodeConfig,
    tokenizer: &RobertaTokenizer,
    device: &B::Device,
) -> Result<String, TrainError> {
    let pixels = fiber_data::image::to_tensor::<B>(std::slice::from_ref(image), device)?;
    let caption = model.generate_caption(&model.backbone.caption_image(pixels), decode)?;
    let ids: Vec<u32> = caption.tokens.iter().map(|&t| t as u32).collect();
    Ok(tokenizer.decode(&ids, true)?.trim().to_string())
}

/// Beam-search settings of `eval` for captions in `tokenizer`'s ids (length-normalised scores,
/// `<mask>` never generated, spec D.4).
pub fn decode_config(
    tokenizer: &RobertaTokenizer,
    eval: &crate::config::EvalConfig,
) -> DecodeConfig {
    let s = tokenizer.special();
    DecodeConfig {
        beam_size: eval.beam_size,
        max_len: eval.max_caption_len,
        length_normalized: true,
        bos: s.bos as i64,
        eos: s.eos as i64,
        pad: s.pad as i64,
        mask: s.mask as i64,
    }
}
