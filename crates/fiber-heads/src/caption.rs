//! docs/model.md §4.4: captioning — next-token cross-entropy (teacher forcing) and decoding by greedy
//! or beam search. The decoder works on whole prefixes (no cache) through
//! [`FiberModel::caption_logits`], so later training stages (GOLD weighting, CIDEr
//! optimisation by sampling) can reuse the same logits and scoring.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use fiber_fusion::FusionError;
use fiber_swin::FeatureMap;

use crate::loss::cross_entropy;
use crate::mlm::IGNORE_INDEX;
use crate::model::FiberModel;

/// Decoding settings (docs/model.md §4.4: beam 5, at most 50 tokens, length-normalised scores).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    /// Beams (1 = greedy).
    pub beam_size: usize,
    /// Maximum number of generated tokens.
    pub max_len: usize,
    /// Rank finished captions by mean token log-probability instead of the sum.
    pub length_normalized: bool,
    /// `<s>`, the first token of every caption.
    pub bos: i64,
    /// `</s>`, which ends a caption.
    pub eos: i64,
    /// `<pad>`, which also ends a caption.
    pub pad: i64,
    /// `<mask>`, never generated.
    pub mask: i64,
}

/// A decoded caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// Generated ids after `<s>`, up to and including `</s>` when it was produced.
    pub tokens: Vec<i64>,
    /// Sum of the tokens' log-probabilities.
    pub log_prob: f64,
    /// The ranking score (`log_prob`, divided by the length when normalised).
    pub score: f64,
}

impl<B: Backend> FiberModel<B> {
    /// Teacher-forced caption logits `[n, len, vocab]`: the captioning text path (causal masks,
    /// text-to-image attention only) over `image` tokens, then `mlm_score(cross_modal_text_transform(·))`.
    pub fn caption_logits(
        &self,
        image: &FeatureMap<B>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>, FusionError> {
        let text = self
            .backbone
            .caption_text(image, input_ids, attention_mask)?;
        Ok(self
            .mlm_score
            .forward(self.fused.text_transform.forward(text)))
    }

    /// Next-token cross-entropy: position t predicts token t+1; positions whose next token is
    /// padding are ignored. Logits `[n, len, vocab]`, ids and mask `[n, len]` → `[1]`.
    pub fn caption_loss(
        &self,
        logits: Tensor<B, 3>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 1> {
        let [n, len, vocab] = logits.dims();
        let predicted = logits
            .slice([0..n, 0..len - 1])
            .reshape([n * (len - 1), vocab]);
        let next = input_ids.slice([0..n, 1..len]);
        let keep = attention_mask.slice([0..n, 1..len]).equal_elem(1);
        let targets = next
            .mask_fill(keep.bool_not(), IGNORE_INDEX)
            .reshape([n * (len - 1)]);
        cross_entropy(predicted, targets, Some(IGNORE_INDEX))
    }

    /// Log-probabilities of the next token after each row of `prefixes` (`<s>` included) for
    /// one image's tokens `[1, n, C]` → `rows × vocab`, row-major, `<mask>` set to −∞.
    fn next_token_log_probs(
        &self,
        image: &FeatureMap<B>,
        prefixes: &[Vec<i64>],
        mask_id: i64,
    ) -> Result<(Vec<f32>, usize), FusionError> {
        let rows = prefixes.len();
        let len = prefixes[0].len();
        let device = image.tokens.device();
        let ids = fiber_core::host::int_matrix::<B>(&prefixes.concat(), len, &device);
        let mask = Tensor::<B, 2, Int>::ones([rows, len], &device);
        let [_, n, c] = image.tokens.dims();
        let tokens = image.tokens.clone().expand([rows, n, c]);
        let image = FeatureMap {
            tokens,
            height: image.height,
            width: image.width,
        };
        let logits = self.caption_logits(&image, ids, mask)?;
        let vocab = logits.dims()[2];
        let last = logits.slice([0..rows, len - 1..len]).reshape([rows, vocab]);
        let mut values = fiber_core::store::tensor_values(log_softmax(last, 1));
        if (0..vocab as i64).contains(&mask_id) {
            for r in 0..rows {
                values[r * vocab + mask_id as usize] = f32::NEG_INFINITY;
            }
        }
        Ok((values, vocab))
    }

    /// Decodes a caption for one image (tokens `[1, n, C]` from
    /// [`fiber_fusion::FiberBackbone::caption_image`]) by beam search; `beam_size = 1` is greedy
    /// decoding. Returns the best caption.
    pub fn generate_caption(
        &self,
        image: &FeatureMap<B>,
        config: &DecodeConfig,
    ) -> Result<Caption, FusionError> {
        let beam = config.beam_size.max(1);
        // live beams: (tokens with <s>, summed log-probability)
        let mut live: Vec<(Vec<i64>, f64)> = vec![(vec![config.bos], 0.0)];
        let mut finished: Vec<Caption> = Vec::new();
        let rank_score = |log_prob: f64, generated: usize| {
            if config.length_normalized {
                log_prob / generated.max(1) as f64
            } else {
                log_prob
            }
        };
        for _ in 0..config.max_len {
            let prefixes: Vec<Vec<i64>> = live.iter().map(|(t, _)| t.clone()).collect();
            let (log_probs, vocab) = self.next_token_log_probs(image, &prefixes, config.mask)?;
            let mut candidates: Vec<(f64, usize, i64)> = Vec::new();
            for (b, (_, score)) in live.iter().enumerate() {
                let row = &log_probs[b * vocab..(b + 1) * vocab];
                let mut order: Vec<usize> = (0..vocab).collect();
                let keep = (2 * beam).min(vocab);
                order.select_nth_unstable_by(keep - 1, |&x, &y| row[y].total_cmp(&row[x]));
                for &v in &order[..keep] {
                    if row[v].is_finite() {
                        candidates.push((score + row[v] as f64, b, v as i64));
                    }
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            // Among the best `beam` candidates, those ending in </s> or <pad> are finished;
            // the best `beam` others stay alive.
            let mut next = Vec::new();
            for (rank, (score, b, token)) in candidates.into_iter().enumerate() {
                let mut tokens = live[b].0.clone();
                tokens.push(token);
                if token == config.eos || token == config.pad {
                    if rank < beam {
                        let generated = tokens.len() - 1;
                        finished.push(Caption {
                            tokens: tokens[1..].to_vec(),
                            log_prob: score,
                            score: rank_score(score, generated),
                        });
                    }
                } else if next.len() < beam {
                    next.push((tokens, score));
                }
                if next.len() >= beam && rank + 1 >= beam {
                    break;
                }
            }
            live = next;
            // One beam is greedy decoding: it ends at the first </s> or <pad>.
            if beam == 1 && !finished.is_empty() {
                live.clear();
                break;
            }
            // Stop once `beam` captions are finished and no live one ranks above the worst of them.
            if finished.len() >= beam {
                let mut scores: Vec<f64> = finished.iter().map(|c| c.score).collect();
                scores.sort_by(|a, b| b.total_cmp(a));
                let worst_kept = scores[beam - 1];
                let best_live = live
                    .iter()
                    .map(|(t, s)| rank_score(*s, t.len() - 1))
                    .fold(f64::NEG_INFINITY, f64::max);
                if best_live <= worst_kept {
                    break;
                }
            }
            if live.is_empty() {
                break;
            }
        }
        for (tokens, score) in live {
            let generated = tokens.len() - 1;
            finished.push(Caption {
                tokens: tokens[1..].to_vec(),
                log_prob: score,
                score: rank_score(score, generated),
            });
        }
        finished
            .into_iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .ok_or_else(|| {
                FusionError::InvalidConfig("decoding produced no caption (max_len is 0)".into())
            })
    }
}
