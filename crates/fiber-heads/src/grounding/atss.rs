//! ATSS target assignment (docs/model.md §5.3): which anchor learns which ground-truth box, and
//! the token, box and centerness targets that follow. Computed on the host, without gradients.

use fiber_fusion::FusionError;

use super::box_coder::BoxCoderConfig;

/// The ground truth of one image: boxes and the caption tokens that name each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageTargets {
    /// Boxes `(x0, y0, x1, y1)` in pixels of the (resized, padded) input.
    pub boxes: Vec<[f32; 4]>,
    /// For each box, one value per token position (`len` of the batch): 1 where the token
    /// names the box (the original's positive map, possibly normalised over the span).
    pub positive_map: Vec<Vec<f32>>,
}

impl ImageTargets {
    /// The images of a batch from padded arrays: `boxes` `[batch, max_boxes, 4]`, `valid`
    /// `[batch, max_boxes]` (nonzero for real boxes) and `positive_map`
    /// `[batch, max_boxes, len]`, all row-major.
    pub fn from_padded(
        boxes: &[f32],
        valid: &[i64],
        positive_map: &[f32],
        batch: usize,
        max_boxes: usize,
        len: usize,
    ) -> Vec<Self> {
        (0..batch)
            .map(|b| {
                let mut image = Self::default();
                for m in (0..max_boxes).filter(|&m| valid[b * max_boxes + m] != 0) {
                    let at = b * max_boxes + m;
                    let r = &boxes[at * 4..at * 4 + 4];
                    image.boxes.push([r[0], r[1], r[2], r[3]]);
                    image
                        .positive_map
                        .push(positive_map[at * len..(at + 1) * len].to_vec());
                }
                image
            })
            .collect()
    }
}

/// IoU of two boxes in the "+1" convention (maskrcnn-benchmark's `boxlist_iou`).
pub fn iou_plus_one(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area = |r: [f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

fn centre(b: [f32; 4]) -> (f32, f32) {
    ((b[2] + b[0]) / 2.0, (b[3] + b[1]) / 2.0)
}

/// The ATSS assignment of one image's anchors (levels concatenated, `level_sizes` anchors
/// each) to its boxes: for each box the `top_k` anchors per level whose centres are nearest
/// (ties to the earlier anchor) are candidates; a candidate is positive when its IoU is at
/// least the mean plus the unbiased standard deviation of the box's candidate IoUs and its
/// centre lies inside the box by more than `inside_margin`; an anchor positive for several
/// boxes takes the one with the highest IoU (ties to the earlier box). Returns each anchor's
/// box, `None` for negatives.
pub fn atss_assign(
    anchors: &[[f32; 4]],
    level_sizes: &[usize],
    boxes: &[[f32; 4]],
    top_k: usize,
    inside_margin: f32,
) -> Vec<Option<usize>> {
    let mut best: Vec<Option<(usize, f32)>> = vec![None; anchors.len()];
    let centres: Vec<(f32, f32)> = anchors.iter().map(|&a| centre(a)).collect();
    for (g, &gt) in boxes.iter().enumerate() {
        let (gx, gy) = centre(gt);
        let mut candidates = Vec::new();
        let mut start = 0;
        for &size in level_sizes {
            let mut order: Vec<(f32, usize)> = (start..start + size)
                .map(|a| {
                    let (ax, ay) = centres[a];
                    (((ax - gx).powi(2) + (ay - gy).powi(2)).sqrt(), a)
                })
                .collect();
            order.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            candidates.extend(order.into_iter().take(top_k.min(size)).map(|(_, a)| a));
            start += size;
        }
        let ious: Vec<f32> = candidates
            .iter()
            .map(|&a| iou_plus_one(anchors[a], gt))
            .collect();
        let n = ious.len() as f64;
        let mean = ious.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = ious.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let threshold = mean + var.sqrt();
        for (&a, &iou) in candidates.iter().zip(&ious) {
            let (ax, ay) = centres[a];
            let inside =
                (ax - gt[0]).min(ay - gt[1]).min(gt[2] - ax).min(gt[3] - ay) > inside_margin;
            // NaN (a single candidate) compares false: no positive, as in the original.
            if (iou as f64) >= threshold && inside {
                match best[a] {
                    Some((_, held)) if held >= iou => {}
                    _ => best[a] = Some((g, iou)),
                }
            }
        }
    }
    best.into_iter().map(|m| m.map(|(g, _)| g)).collect()
}

/// Settings of the assignment and of the losses (docs/model.md §5.3).
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct DetectionLossConfig {
    /// Candidates per level and box (9).
    #[config(default = 9)]
    pub atss_top_k: usize,
    /// How far inside a box (pixels) an anchor centre must be to be positive (0.01).
    #[config(default = 0.01)]
    pub inside_margin: f64,
    /// Focal loss α (0.25).
    #[config(default = 0.25)]
    pub focal_alpha: f64,
    /// Focal loss γ (2).
    #[config(default = 2.0)]
    pub focal_gamma: f64,
    /// Weight of the GIoU loss in the total (2.0); the grounding and centerness losses weigh 1.
    #[config(default = 2.0)]
    pub giou_weight: f64,
}

/// Targets of a batch, flattened over images and anchors (levels concatenated).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionTargets {
    /// Images in the batch.
    pub batch: usize,
    /// Anchors per image (all levels).
    pub num_anchors: usize,
    /// Token positions.
    pub len: usize,
    /// Token targets `[batch, anchors, len]`: a positive anchor's row is its box's positive map;
    /// a negative's is 1 in the last column (the no-object slot, which the attention mask hides
    /// unless the caption fills the token axis) and 0 elsewhere.
    pub token_targets: Vec<f32>,
    /// Flat indices `image · anchors + anchor` of the positive anchors.
    pub positives: Vec<usize>,
    /// Each positive's anchor.
    pub positive_anchors: Vec<[f32; 4]>,
    /// Each positive's target box, as decoding its encoded deltas gives it.
    pub positive_boxes: Vec<[f32; 4]>,
    /// Each positive's centerness target
    /// `sqrt(min(l, r)/max(l, r) · min(t, b)/max(t, b))` at the anchor centre.
    pub centerness_targets: Vec<f32>,
}

/// What the losses are divided by: in the original, batch totals averaged over the replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossNormalisers {
    /// Positive anchors (at least 1): divides the grounding and centerness losses.
    pub num_pos: f32,
    /// Sum of the positives' centerness targets: divides the GIoU loss.
    pub centerness_sum: f32,
}

impl DetectionTargets {
    /// Assigns every image's anchors (`levels`: each level's anchors, the same for every image
    /// of the batch) and builds the targets. Boxes must be finite with `x1 > x0`, `y1 > y0`,
    /// and every positive map as long as the token axis.
    pub fn build(
        levels: &[Vec<[f32; 4]>],
        images: &[ImageTargets],
        len: usize,
        loss: &DetectionLossConfig,
        coder: &BoxCoderConfig,
    ) -> Result<Self, FusionError> {
        let anchors: Vec<[f32; 4]> = levels.iter().flatten().copied().collect();
        let level_sizes: Vec<usize> = levels.iter().map(Vec::len).collect();
        let num_anchors = anchors.len();
        if len == 0 {
            return Err(FusionError::InvalidConfig(
                "the token axis is empty: a grounding target needs a prompt".into(),
            ));
        }
        let mut targets = Self {
            batch: images.len(),
            num_anchors,
            len,
            token_targets: vec![0.0; images.len() * num_anchors * len],
            positives: Vec::new(),
            positive_anchors: Vec::new(),
            positive_boxes: Vec::new(),
            centerness_targets: Vec::new(),
        };
        for (i, image) in images.iter().enumerate() {
            check_image(i, image, len)?;
            let matched = atss_assign(
                &anchors,
                &level_sizes,
                &image.boxes,
                loss.atss_top_k,
                loss.inside_margin as f32,
            );
            for (a, gt) in matched.into_iter().enumerate() {
                let row = (i * num_anchors + a) * len;
                let tokens = &mut targets.token_targets[row..row + len];
                let Some(g) = gt else {
                    tokens[len - 1] = 1.0;
                    continue;
                };
                tokens.copy_from_slice(&image.positive_map[g]);
                let anchor = anchors[a];
                let target = coder.decode(coder.encode(image.boxes[g], anchor), anchor);
                targets.positives.push(i * num_anchors + a);
                targets.positive_anchors.push(anchor);
                targets.positive_boxes.push(target);
                targets
                    .centerness_targets
                    .push(centerness_target(anchor, target));
            }
        }
        Ok(targets)
    }

    /// This batch's own normalisers (one replica): `max(positives, 1)` and the sum of the
    /// centerness targets. With several replicas both are averaged over them instead.
    pub fn local_normalisers(&self) -> LossNormalisers {
        LossNormalisers {
            num_pos: (self.positives.len() as f32).max(1.0),
            centerness_sum: self.centerness_targets.iter().sum(),
        }
    }
}

/// `sqrt(min(l, r)/max(l, r) · min(t, b)/max(t, b))` for the distances from the anchor centre
/// to the box sides.
fn centerness_target(anchor: [f32; 4], target: [f32; 4]) -> f32 {
    let (cx, cy) = centre(anchor);
    let (l, r) = (cx - target[0], target[2] - cx);
    let (t, b) = (cy - target[1], target[3] - cy);
    ((l.min(r) / l.max(r)) * (t.min(b) / t.max(b))).sqrt()
}

fn check_image(i: usize, image: &ImageTargets, len: usize) -> Result<(), FusionError> {
    let bad = |m: String| Err(FusionError::InvalidConfig(format!("image {i}: {m}")));
    if image.positive_map.len() != image.boxes.len() {
        return bad(format!(
            "{} boxes but {} positive-map rows",
            image.boxes.len(),
            image.positive_map.len()
        ));
    }
    for (g, (b, map)) in image.boxes.iter().zip(&image.positive_map).enumerate() {
        if b.iter().any(|v| !v.is_finite()) || b[2] <= b[0] || b[3] <= b[1] {
            return bad(format!(
                "box {g} {b:?} is degenerate or not finite (x1 > x0 and y1 > y0 are needed)"
            ));
        }
        if map.len() != len {
            return bad(format!(
                "box {g}'s positive map has {} positions, the tokens {len}",
                map.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::anchors::level_anchors;

    #[test]
    fn a_box_gets_positives_near_its_centre_and_the_rest_are_negative() {
        let levels = vec![level_anchors(8, 12, 8, 8), level_anchors(4, 6, 16, 8)];
        let sizes: Vec<usize> = levels.iter().map(Vec::len).collect();
        let anchors: Vec<[f32; 4]> = levels.concat();
        let gt = [20.0, 12.0, 70.0, 50.0];
        let matched = atss_assign(&anchors, &sizes, &[gt], 9, 0.01);
        let positives: Vec<usize> = (0..anchors.len())
            .filter(|&a| matched[a].is_some())
            .collect();
        assert!(
            !positives.is_empty() && positives.len() <= 18,
            "{positives:?}"
        );
        for &a in &positives {
            let (cx, cy) = centre(anchors[a]);
            assert!(cx > gt[0] && cx < gt[2] && cy > gt[1] && cy < gt[3]);
        }
        // Two overlapping boxes: each keeps positives of its own (7 and 4, as the reference
        // of scripts/detector_loss_fixtures.py assigns them).
        let other = [40.0, 30.0, 95.0, 63.0];
        let matched = atss_assign(&anchors, &sizes, &[gt, other], 9, 0.01);
        let counts: Vec<usize> = (0..2)
            .map(|g| matched.iter().filter(|m| **m == Some(g)).count())
            .collect();
        assert_eq!(counts, vec![7, 4]);
    }

    #[test]
    fn targets_refuse_degenerate_boxes_and_short_maps_and_mark_negatives_no_object() {
        let levels = vec![level_anchors(4, 4, 8, 8)];
        let loss = DetectionLossConfig::new();
        let coder = BoxCoderConfig::new();
        let image = |b: [f32; 4], n: usize| ImageTargets {
            boxes: vec![b],
            positive_map: vec![vec![1.0; n]],
        };
        let err =
            DetectionTargets::build(&levels, &[image([5.0, 5.0, 5.0, 9.0], 3)], 3, &loss, &coder)
                .unwrap_err();
        assert!(err.to_string().contains("degenerate"), "{err}");
        let err = DetectionTargets::build(
            &levels,
            &[image([5.0, 5.0, 20.0, 25.0], 2)],
            3,
            &loss,
            &coder,
        )
        .unwrap_err();
        assert!(err.to_string().contains("positive map has 2"), "{err}");

        let empty =
            DetectionTargets::build(&levels, &[ImageTargets::default()], 3, &loss, &coder).unwrap();
        assert!(empty.positives.is_empty());
        assert_eq!(empty.local_normalisers().num_pos, 1.0);
        for a in 0..16 {
            assert_eq!(&empty.token_targets[a * 3..a * 3 + 3], &[0.0, 0.0, 1.0]);
        }
    }
}
