//! Evaluation metrics: retrieval recall, the official VQA accuracy, and the coco-caption BLEU-4
//! and CIDEr-D scorers (corpus BLEU with the closest reference length; CIDEr-D with document
//! frequencies from the evaluated references, clipping and the Gaussian length penalty, σ = 6).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Recall@k of a ranking: the fraction of queries whose ranked list (best first) has a correct
/// item among its first `k`.
pub fn recall_at_k(
    rankings: &[Vec<usize>],
    correct: &dyn Fn(usize, usize) -> bool,
    k: usize,
) -> f64 {
    if rankings.is_empty() {
        return 0.0;
    }
    let hits = rankings
        .iter()
        .enumerate()
        .filter(|(q, ranked)| ranked.iter().take(k).any(|&item| correct(*q, item)))
        .count();
    hits as f64 / rankings.len() as f64
}

/// Rows of a row-major score matrix sorted best first.
pub fn rank_rows(scores: &[f32], columns: usize) -> Vec<Vec<usize>> {
    scores
        .chunks(columns)
        .map(|row| {
            let mut order: Vec<usize> = (0..columns).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order
        })
        .collect()
}

/// The score matrix transposed (`rows × columns` → `columns × rows`).
pub fn transpose(scores: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    (0..columns)
        .flat_map(|c| (0..rows).map(move |r| scores[r * columns + c]))
        .collect()
}

/// The official VQA accuracy of one predicted answer against the (normalised) answers of the
/// ten annotators: the mean over the ten leave-one-out subsets of min(1, matches / 3).
pub fn vqa_accuracy(predicted: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let n = answers.len();
    let total: f64 = (0..n)
        .map(|left_out| {
            let matches = answers
                .iter()
                .enumerate()
                .filter(|(i, a)| *i != left_out && a.as_str() == predicted)
                .count();
            (matches as f64 / 3.0).min(1.0)
        })
        .sum();
    total / n as f64
}

/// Lower-cases and removes punctuation the way the coco-caption PTB tokenisation does before
/// scoring; tokens are separated by spaces.
pub fn caption_tokens(text: &str) -> Vec<String> {
    const PUNCTUATION: &str = "\"'`.,:;?!-_()[]{}<>/\\|@#$%^&*+=~";
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || PUNCTUATION.contains(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for k in 1..=n {
        for window in tokens.windows(k) {
            *counts.entry(window.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Corpus BLEU-1..4 as the coco-caption scorer computes it (`option = "closest"`): clipped
/// n-gram matches summed over the corpus, the reference length closest to each candidate (the
/// shorter on ties), brevity penalty on the totals.
pub fn bleu(candidates: &[Vec<String>], references: &[Vec<Vec<String>>]) -> [f64; 4] {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let (mut test_len, mut ref_len) = (0usize, 0usize);
    let mut guess = [0usize; 4];
    let mut correct = [0usize; 4];
    for (candidate, refs) in candidates.iter().zip(references) {
        let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
        for r in refs {
            for (gram, count) in ngram_counts(r, 4) {
                let slot = max_ref.entry(gram).or_insert(0);
                *slot = (*slot).max(count);
            }
        }
        let len = candidate.len();
        test_len += len;
        ref_len += refs
            .iter()
            .map(|r| r.len())
            .min_by_key(|&l| ((l as i64 - len as i64).abs(), l))
            .unwrap_or(0);
        for (gram, count) in ngram_counts(candidate, 4) {
            correct[gram.len() - 1] += count.min(*max_ref.get(&gram).unwrap_or(&0));
        }
        for (k, g) in guess.iter_mut().enumerate() {
            *g += len.saturating_sub(k);
        }
    }
    let mut scores = [0.0; 4];
    let mut product = 1.0;
    for k in 0..4 {
        product *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        scores[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_len as f64 + TINY) / (ref_len as f64 + SMALL);
    if ratio < 1.0 {
        for s in &mut scores {
            *s *= (1.0 - 1.0 / ratio).exp();
        }
    }
    scores
}

/// CIDEr-D as the coco-caption scorer computes it: TF-IDF n-gram vectors (n = 1..4, document
/// frequencies over the evaluated references), clipped cosine similarity with each reference,
/// Gaussian length penalty (σ = 6), averaged over n and references, × 10. Returns the corpus
/// score and the per-candidate scores.
pub fn cider_d(candidates: &[Vec<String>], references: &[Vec<Vec<String>>]) -> (f64, Vec<f64>) {
    const SIGMA: f64 = 6.0;
    let mut document_frequency: HashMap<Vec<String>, f64> = HashMap::new();
    for refs in references {
        let grams: HashSet<Vec<String>> = refs
            .iter()
            .flat_map(|r| ngram_counts(r, 4).into_keys())
            .collect();
        for gram in grams {
            *document_frequency.entry(gram).or_insert(0.0) += 1.0;
        }
    }
    let log_refs = (references.len() as f64).ln();
    type Vector = [BTreeMap<Vec<String>, f64>; 4];
    let vector = |tokens: &[String]| -> (Vector, [f64; 4], f64) {
        let mut vec: Vector = Default::default();
        let mut norm = [0.0; 4];
        let mut length = 0.0;
        for (gram, tf) in ngram_counts(tokens, 4) {
            let n = gram.len() - 1;
            let df = document_frequency
                .get(&gram)
                .copied()
                .unwrap_or(0.0)
                .max(1.0)
                .ln();
            let value = tf as f64 * (log_refs - df);
            norm[n] += value * value;
            // The reference scorer counts the length on bigrams (its `n == 1` is the bigram index).
            if n == 1 {
                length += tf as f64;
            }
            vec[n].insert(gram, value);
        }
        (vec, norm.map(f64::sqrt), length)
    };
    let per: Vec<f64> = candidates
        .iter()
        .zip(references)
        .map(|(candidate, refs)| {
            let (vec, norm, length) = vector(candidate);
            let mut score = [0.0; 4];
            for r in refs {
                let (vec_ref, norm_ref, length_ref) = vector(r);
                let delta = length - length_ref;
                for n in 0..4 {
                    let mut value: f64 = vec[n]
                        .iter()
                        .map(|(gram, v)| {
                            let rv = vec_ref[n].get(gram).copied().unwrap_or(0.0);
                            v.min(rv) * rv
                        })
                        .sum();
                    if norm[n] != 0.0 && norm_ref[n] != 0.0 {
                        value /= norm[n] * norm_ref[n];
                    }
                    score[n] += value * (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                }
            }
            score.iter().sum::<f64>() / 4.0 / refs.len().max(1) as f64 * 10.0
        })
        .collect();
    let mean = if per.is_empty() {
        0.0
    } else {
        per.iter().sum::<f64>() / per.len() as f64
    };
    (mean, per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_hits_in_the_first_k() {
        let rankings = vec![vec![0, 1, 2], vec![2, 1, 0], vec![0, 1, 2]];
        let correct = |q: usize, item: usize| q == item;
        assert!((recall_at_k(&rankings, &correct, 1) - 1.0 / 3.0).abs() < 1e-12);
        assert!((recall_at_k(&rankings, &correct, 2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(rank_rows(&[0.1, 0.9, 0.5], 3), vec![vec![1, 2, 0]]);
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }

    #[test]
    fn vqa_accuracy_follows_the_official_formula() {
        let answers = |xs: &[(&str, usize)]| {
            xs.iter()
                .flat_map(|(a, n)| std::iter::repeat_n(a.to_string(), *n))
                .collect::<Vec<_>>()
        };
        assert_eq!(vqa_accuracy("red", &answers(&[("red", 10)])), 1.0);
        assert_eq!(vqa_accuracy("blue", &answers(&[("red", 10)])), 0.0);
        // 2 of 10: leaving out one of the two leaves 1 match (1/3), otherwise 2 (2/3).
        let expected = (2.0 * (1.0 / 3.0) + 8.0 * (2.0 / 3.0)) / 10.0;
        assert!(
            (vqa_accuracy("red", &answers(&[("red", 2), ("blue", 8)])) - expected).abs() < 1e-12
        );
        // 3 of 10: 0.9 (as the 0.3/0.6/0.9/1.0 soft scores).
        assert!((vqa_accuracy("red", &answers(&[("red", 3), ("blue", 7)])) - 0.9).abs() < 1e-12);
    }

    #[test]
    fn caption_tokens_drop_case_and_punctuation() {
        assert_eq!(
            caption_tokens("A Red circle, on gray."),
            vec!["a", "red", "circle", "on", "gray"]
        );
    }
}
