//! NLVR2 accuracy (docs/model.md §4.2): the predicted truth value of each statement about an
//! image pair, next to always answering the majority truth value.

use burn::prelude::*;
use fiber_data::nlvr2::Nlvr2Record;
use fiber_heads::Nlvr2Model;
use fiber_roberta::RobertaTokenizer;
use serde::Serialize;

use crate::error::TrainError;
use crate::eval::load_images;
use crate::input::PairBatch;

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
        let left = load_images(
            &chunk.iter().map(|r| r.left.clone()).collect::<Vec<_>>(),
            size,
        )?;
        let right = load_images(
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
        let (left, right, ids, mask) = batch.tensors(device)?;
        let predicted: Vec<i64> = model
            .logits(left, right, ids, mask)
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
