//! VQA accuracy (docs/model.md §4.1): the official soft accuracy of the argmax answer, next
//! to always giving the most frequent training answer, by question type.

use burn::prelude::*;
use fiber_data::image::PixelImage;
use fiber_data::vqa::{AnswerVocab, VqaRecord};
use fiber_heads::VqaModel;
use fiber_roberta::RobertaTokenizer;
use serde::Serialize;

use crate::error::TrainError;
use crate::metrics::vqa_accuracy;

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
        let (ids, mask) = tokenizer
            .encode_batch(&questions, max_len)?
            .to_tensors(device);
        let pixels = fiber_data::image::to_tensor::<B>(chunk_images, device)?;
        let logits = model.logits(pixels, ids, mask);
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
