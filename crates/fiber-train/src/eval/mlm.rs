//! Masked-token accuracy (docs/model.md §3.4) on held-out captions, masked as in pre-training,
//! next to always predicting the most frequent training token.

use std::collections::HashMap;

use burn::prelude::*;
use fiber_core::host::int_matrix;
use fiber_data::image::PixelImage;
use fiber_data::CaptionDataset;
use fiber_heads::FiberModel;
use fiber_roberta::masking::{MlmMasker, IGNORE_INDEX};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::TrainError;

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
        int_matrix(&masked.input_ids, max_len, device),
        int_matrix(&tokens.attention_mask, max_len, device),
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

/// The most frequent maskable token of the training captions (the MLM baseline's guess).
pub fn most_frequent_token(
    train: &CaptionDataset,
    tokenizer: &RobertaTokenizer,
    max_len: usize,
) -> Result<i64, TrainError> {
    let texts: Vec<&str> = train.captions.iter().map(|c| c.text.as_str()).collect();
    let tokens = tokenizer.encode_batch(&texts, max_len)?;
    let s = tokenizer.special();
    let special = [s.bos, s.eos, s.pad, s.unk, s.mask].map(|t| t as i64);
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (&id, &m) in tokens.input_ids.iter().zip(&tokens.attention_mask) {
        if m == 1 && !special.contains(&id) {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .max_by_key(|&(id, c)| (c, std::cmp::Reverse(id)))
        .map(|(id, _)| id)
        .unwrap_or(0))
}
