//! From the detector's outputs to scored boxes (docs/model.md §5.6): class scores as the mean
//! token probability over each class name's tokens, a score threshold, the per-level top
//! candidates by score × centerness, decoding and clipping, class-aware NMS and the per-image cut.

use burn::config::Config;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::atss::iou_plus_one;
use super::box_coder::BoxCoderConfig;
use super::model::DetectorOutput;

/// Settings of the post-processing (the original's `MODEL.ATSS` inference settings).
#[derive(Config, Debug, PartialEq)]
pub struct PostProcessConfig {
    /// Class scores (before centerness) must exceed this (0.05; 0.0 for referring expressions).
    #[config(default = 0.05)]
    pub score_threshold: f64,
    /// Candidates kept per level and image, ranked by score × centerness (1000; 3000 for
    /// referring expressions).
    #[config(default = 1000)]
    pub pre_nms_top_n: usize,
    /// IoU above which NMS suppresses a box of the same class (0.6).
    #[config(default = 0.6)]
    pub nms_threshold: f64,
    /// Detections kept per image: every detection scoring at least the n-th score, ties kept
    /// (100; 300 for LVIS).
    #[config(default = 100)]
    pub detections_per_image: usize,
    /// Boxes narrower or lower than this ("+1" widths) are dropped (0).
    #[config(default = 0.0)]
    pub min_size: f64,
}

/// One detected box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `(x0, y0, x1, y1)` in input pixels, clipped to the image.
    pub bbox: [f32; 4],
    /// `sqrt(class score · sigmoid(centerness))`.
    pub score: f32,
    /// Index into the classes the caller gave.
    pub class: usize,
}

/// Class-aware non-maximum suppression: by descending score, a box is dropped when a kept box
/// of its class overlaps it with IoU above `threshold`. Returns the kept boxes, best first.
pub fn class_aware_nms(mut detections: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in detections {
        let suppressed = kept
            .iter()
            .any(|k| k.class == d.class && iou_plus_one(k.bbox, d.bbox) > threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

/// Detections of every image of a batch. `classes` lists each class's token positions in
/// the prompt (the tokens of its name, at least one each); `image_sizes` each image's `(height, width)` before
/// batch padding, which boxes are clipped to.
pub fn postprocess<B: Backend>(
    output: &DetectorOutput<B>,
    classes: &[Vec<usize>],
    image_sizes: &[(usize, usize)],
    config: &PostProcessConfig,
    coder: &BoxCoderConfig,
) -> Vec<Vec<Detection>> {
    let batch = image_sizes.len();
    assert!(
        classes.iter().all(|tokens| !tokens.is_empty()),
        "every class needs at least one token position"
    );
    let mut per_image: Vec<Vec<Detection>> = vec![Vec::new(); batch];
    for l in 0..output.logits.len() {
        let [b, n, len] = output.logits[l].dims();
        assert_eq!(b, batch, "one image size per image");
        let probs = fiber_core::store::tensor_values(sigmoid(output.logits[l].clone()));
        let ctr = fiber_core::store::tensor_values(sigmoid(output.centerness[l].clone()));
        let deltas = fiber_core::store::tensor_values(output.bbox_reg[l].clone());
        for (i, detections) in per_image.iter_mut().enumerate() {
            let (height, width) = image_sizes[i];
            // (score × centerness, location, class, score) of the candidates.
            let mut candidates: Vec<(f32, usize, usize, f32)> = Vec::new();
            for a in 0..n {
                let row = &probs[(i * n + a) * len..(i * n + a + 1) * len];
                for (c, tokens) in classes.iter().enumerate() {
                    let score = tokens.iter().map(|&t| row[t]).sum::<f32>() / tokens.len() as f32;
                    if score as f64 > config.score_threshold {
                        candidates.push((score * ctr[i * n + a], a, c, score));
                    }
                }
            }
            candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
            candidates.truncate(config.pre_nms_top_n);
            for (ranked, a, c, _) in candidates {
                let d = |k: usize| deltas[((i * 4 + k) * n) + a];
                let mut bbox = coder.decode([d(0), d(1), d(2), d(3)], output.anchors[l][a]);
                let (xmax, ymax) = (width as f32 - 1.0, height as f32 - 1.0);
                bbox = [
                    bbox[0].clamp(0.0, xmax),
                    bbox[1].clamp(0.0, ymax),
                    bbox[2].clamp(0.0, xmax),
                    bbox[3].clamp(0.0, ymax),
                ];
                let (w, h) = (bbox[2] - bbox[0] + 1.0, bbox[3] - bbox[1] + 1.0);
                if (w as f64) < config.min_size || (h as f64) < config.min_size {
                    continue;
                }
                detections.push(Detection {
                    bbox,
                    score: ranked.sqrt(),
                    class: c,
                });
            }
        }
    }
    per_image
        .into_iter()
        .map(|detections| {
            let mut kept = class_aware_nms(detections, config.nms_threshold as f32);
            if kept.len() > config.detections_per_image {
                let cut = kept[config.detections_per_image - 1].score;
                kept.retain(|d| d.score >= cut);
            }
            kept
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32, class: usize) -> Detection {
        Detection { bbox, score, class }
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let kept = class_aware_nms(
            vec![
                det([0.0, 0.0, 9.0, 9.0], 0.5, 0),
                det([1.0, 0.0, 10.0, 9.0], 0.9, 0), // IoU with the first: 90/110 > 0.6
                det([1.0, 0.0, 10.0, 9.0], 0.7, 1), // another class: kept
                det([5.0, 0.0, 14.0, 9.0], 0.6, 0), // IoU with the best 60/140: kept
            ],
            0.6,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6]);
        // "+1" widths: [0, 9] and [2, 11] overlap by 8 of 12 columns (IoU 0.667 > 0.6).
        let kept = class_aware_nms(
            vec![
                det([0.0, 0.0, 9.0, 9.0], 0.9, 0),
                det([2.0, 0.0, 11.0, 9.0], 0.8, 0),
            ],
            0.6,
        );
        assert_eq!(kept.len(), 1);
    }
}
