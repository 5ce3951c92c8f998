//! docs/model.md §3.4: MLM masking as a collate step — HuggingFace `DataCollatorForLanguageModeling`
//! (15% of the real, non-special tokens; 80% `<mask>`, 10% random token, 10% unchanged).

use rand::Rng;

/// Label of positions that take no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// HuggingFace `DataCollatorForLanguageModeling` rules: each real, non-special token is chosen
/// with `probability`; a chosen token becomes `<mask>` 80% of the time, a uniformly random
/// vocabulary token 10% and stays unchanged 10%.
#[derive(Debug, Clone)]
pub struct MlmMasker {
    /// Selection probability (0.15).
    pub probability: f64,
    /// Id of `<mask>`.
    pub mask_id: i64,
    /// Vocabulary size (random replacements are drawn from `0..vocab_size`).
    pub vocab_size: usize,
    /// Ids never selected (`<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`).
    pub special_ids: Vec<i64>,
}

/// Masked ids and labels `[batch, len]` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedBatch {
    /// Ids with the replacements applied.
    pub input_ids: Vec<i64>,
    /// The original id at chosen positions, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

impl MlmMasker {
    /// Masks `input_ids` (padding marked by `attention_mask` = 0 is never chosen); the result
    /// depends only on the inputs and the state of `rng`.
    pub fn mask(
        &self,
        input_ids: &[i64],
        attention_mask: &[i64],
        rng: &mut impl Rng,
    ) -> MaskedBatch {
        let mut ids = input_ids.to_vec();
        let mut labels = vec![IGNORE_INDEX; ids.len()];
        for (i, id) in ids.iter_mut().enumerate() {
            // Draw for every position so that the stream of random numbers does not depend on
            // which tokens are special.
            let chosen = rng.random_bool(self.probability);
            let action: f64 = rng.random();
            let random_token = rng.random_range(0..self.vocab_size as i64);
            if !chosen || attention_mask[i] == 0 || self.special_ids.contains(id) {
                continue;
            }
            labels[i] = *id;
            if action < 0.8 {
                *id = self.mask_id;
            } else if action < 0.9 {
                *id = random_token;
            }
        }
        MaskedBatch {
            input_ids: ids,
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn masker() -> MlmMasker {
        MlmMasker {
            probability: 0.15,
            mask_id: 4,
            vocab_size: 100,
            special_ids: vec![0, 1, 2, 3, 4],
        }
    }

    #[test]
    fn masking_follows_the_80_10_10_rule_and_never_touches_specials_or_padding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let len = 50;
        let rows = 2000;
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for r in 0..rows {
            let real = 10 + r % 40;
            for i in 0..len {
                ids.push(if i == 0 {
                    0
                } else if i + 1 == real {
                    2
                } else if i < real {
                    5 + ((r * 7 + i) % 90) as i64
                } else {
                    1
                });
                mask.push((i < real) as i64);
            }
        }
        let out = masker().mask(&ids, &mask, &mut rng);
        let (mut chosen, mut masked, mut unchanged, mut eligible) =
            (0usize, 0usize, 0usize, 0usize);
        for i in 0..ids.len() {
            let is_eligible = mask[i] == 1 && ids[i] > 4;
            eligible += is_eligible as usize;
            if out.labels[i] != IGNORE_INDEX {
                assert!(
                    is_eligible,
                    "position {i} (id {}) must not be chosen",
                    ids[i]
                );
                assert_eq!(out.labels[i], ids[i]);
                chosen += 1;
                masked += (out.input_ids[i] == 4) as usize;
                unchanged += (out.input_ids[i] == ids[i]) as usize;
            } else {
                assert_eq!(out.input_ids[i], ids[i]);
            }
        }
        let rate = chosen as f64 / eligible as f64;
        assert!((rate - 0.15).abs() < 0.01, "selection rate {rate}");
        let masked_share = masked as f64 / chosen as f64;
        assert!((masked_share - 0.8).abs() < 0.02, "{masked_share}");
        // unchanged: the 10% kept plus random draws that hit the same id (~1%)
        let unchanged_share = unchanged as f64 / chosen as f64;
        assert!((unchanged_share - 0.1).abs() < 0.02, "{unchanged_share}");
    }

    #[test]
    fn masking_is_deterministic_for_a_seed() {
        let ids: Vec<i64> = (0..64).map(|i| 5 + i % 50).collect();
        let mask = vec![1; 64];
        let a = masker().mask(&ids, &mask, &mut rand::rngs::StdRng::seed_from_u64(9));
        let b = masker().mask(&ids, &mask, &mut rand::rngs::StdRng::seed_from_u64(9));
        let c = masker().mask(&ids, &mask, &mut rand::rngs::StdRng::seed_from_u64(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
