//! The detector's three losses (docs/model.md §5.3): sigmoid focal loss on the region–token
//! logits, GIoU on the decoded boxes of positive anchors weighted by their centerness targets,
//! and binary cross-entropy on the centerness logits.

use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use fiber_fusion::FusionError;

use super::atss::{DetectionLossConfig, DetectionTargets, ImageTargets, LossNormalisers};
use super::box_coder::BoxCoderConfig;
use super::model::DetectorOutput;

/// The losses of one batch, each a `[1]` tensor, normalised as the original normalises them
/// (unweighted: [`Self::total`] applies the GIoU weight).
#[derive(Debug, Clone)]
pub struct DetectionLosses<B: Backend> {
    /// Σ focal loss over every (anchor, valid token) logit / `num_pos`.
    pub grounding: Tensor<B, 1>,
    /// Σ centerness target · (1 − GIoU) over positives / Σ centerness targets.
    pub giou: Tensor<B, 1>,
    /// Σ BCE of the positives' centerness logits / `num_pos`.
    pub centerness: Tensor<B, 1>,
    /// Positive anchors in the batch (before the clamp at 1 the normaliser applies).
    pub num_pos: usize,
}

impl<B: Backend> DetectionLosses<B> {
    /// `grounding + giou_weight · giou + centerness`.
    pub fn total(&self, config: &DetectionLossConfig) -> Tensor<B, 1> {
        self.grounding.clone()
            + self.giou.clone().mul_scalar(config.giou_weight)
            + self.centerness.clone()
    }
}

/// `max(x, 0) − x·t + ln(1 + e^{−|x|})`: binary cross-entropy with logits, elementwise.
fn bce_with_logits<B: Backend, const D: usize>(x: Tensor<B, D>, t: Tensor<B, D>) -> Tensor<B, D> {
    relu(x.clone()) - x.clone() * t + x.abs().neg().exp().log1p()
}

/// Sigmoid focal loss, elementwise: `α_t · (1 − p_t)^γ · BCE(x, t)`.
fn sigmoid_focal<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    t: Tensor<B, D>,
    alpha: f64,
    gamma: f64,
) -> Tensor<B, D> {
    let p = sigmoid(x.clone());
    let ce = bce_with_logits(x, t.clone());
    let one_minus_t = t.clone().neg() + 1.0;
    let p_t = p.clone() * t.clone() + (p.neg() + 1.0) * one_minus_t.clone();
    let alpha_t = t.mul_scalar(alpha) + one_minus_t.mul_scalar(1.0 - alpha);
    alpha_t * (p_t.neg() + 1.0).powf_scalar(gamma) * ce
}

/// `1 − GIoU` of predicted and target boxes `[N, 4]` (x0, y0, x1, y1; plain widths, a predicted
/// box's far corner lifted to its near one when they cross), `[N]`.
fn giou_loss<B: Backend>(pred: Tensor<B, 2>, target: Tensor<B, 2>) -> Tensor<B, 1> {
    let col = |t: &Tensor<B, 2>, i: usize| t.clone().narrow(1, i, 1).squeeze_dim::<1>(1);
    let (px0, py0) = (col(&pred, 0), col(&pred, 1));
    let px1 = col(&pred, 2).max_pair(px0.clone());
    let py1 = col(&pred, 3).max_pair(py0.clone());
    let (tx0, ty0, tx1, ty1) = (
        col(&target, 0),
        col(&target, 1),
        col(&target, 2),
        col(&target, 3),
    );
    let pred_area = (px1.clone() - px0.clone()) * (py1.clone() - py0.clone());
    let target_area = (tx1.clone() - tx0.clone()) * (ty1.clone() - ty0.clone());
    let iw = (px1.clone().min_pair(tx1.clone()) - px0.clone().max_pair(tx0.clone())).clamp_min(0.0);
    let ih = (py1.clone().min_pair(ty1.clone()) - py0.clone().max_pair(ty0.clone())).clamp_min(0.0);
    let inter = iw * ih;
    let enclosing =
        (px1.max_pair(tx1) - px0.min_pair(tx0)) * (py1.max_pair(ty1) - py0.min_pair(ty0)) + 1e-7;
    let union = pred_area + target_area - inter.clone() + 1e-7;
    let iou = inter / union.clone();
    let giou = iou - (enclosing.clone() - union) / enclosing;
    giou.neg() + 1.0
}

/// A level's `[B, C, H, W]` map as `[B, H·W, C]` (locations row-major over (y, x)).
fn locations_last<B: Backend>(map: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, c, h, w] = map.dims();
    map.reshape([b, c, h * w]).swap_dims(1, 2)
}

/// The training losses of one batch: ATSS targets on the output's anchors for the ground truth
/// `images` (prompts as long as `attention_mask` `[B, L]`), then the three losses normalised by
/// this batch's own counts; with the targets.
pub fn batch_losses<B: Backend>(
    output: &DetectorOutput<B>,
    attention_mask: Tensor<B, 2, Int>,
    images: &[ImageTargets],
    config: &DetectionLossConfig,
    coder: &BoxCoderConfig,
) -> Result<(DetectionTargets, DetectionLosses<B>), FusionError> {
    let len = attention_mask.dims()[1];
    let targets = DetectionTargets::build(&output.anchors, images, len, config, coder)?;
    let losses = detection_losses(
        output,
        attention_mask,
        &targets,
        targets.local_normalisers(),
        config,
        coder,
    );
    Ok((targets, losses))
}

/// The three losses of a batch from the detector's outputs, the token attention mask
/// `[B, L]`, the targets and the normalisers (the batch's own, or averaged over replicas).
pub fn detection_losses<B: Backend>(
    output: &DetectorOutput<B>,
    attention_mask: Tensor<B, 2, Int>,
    targets: &DetectionTargets,
    normalisers: LossNormalisers,
    config: &DetectionLossConfig,
    coder: &BoxCoderConfig,
) -> DetectionLosses<B> {
    let device = attention_mask.device();
    let (batch, anchors, len) = (targets.batch, targets.num_anchors, targets.len);

    let logits = Tensor::cat(output.logits.clone(), 1);
    assert_eq!(
        logits.dims(),
        [batch, anchors, len],
        "the targets were built for other anchors or tokens"
    );
    let token_targets = Tensor::<B, 3>::from_data(
        TensorData::new(targets.token_targets.clone(), [batch, anchors, len]),
        &device,
    );
    let valid = attention_mask.float().unsqueeze_dim::<3>(1);
    let focal = sigmoid_focal(
        logits,
        token_targets,
        config.focal_alpha,
        config.focal_gamma,
    ) * valid;
    let grounding = focal.sum().div_scalar(normalisers.num_pos);

    let n = targets.positives.len();
    let (giou, centerness) = if n == 0 {
        (Tensor::zeros([1], &device), Tensor::zeros([1], &device))
    } else {
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                targets
                    .positives
                    .iter()
                    .map(|&i| i as i64)
                    .collect::<Vec<_>>(),
                [n],
            ),
            &device,
        );
        let deltas = Tensor::cat(
            output
                .bbox_reg
                .iter()
                .cloned()
                .map(locations_last)
                .collect(),
            1,
        )
        .reshape([batch * anchors, 4])
        .select(0, index.clone());
        let ctr_logits = Tensor::cat(
            output
                .centerness
                .iter()
                .cloned()
                .map(locations_last)
                .collect(),
            1,
        )
        .reshape([batch * anchors])
        .select(0, index);
        let boxes_of = |rows: &[[f32; 4]]| {
            Tensor::<B, 2>::from_data(
                TensorData::new(rows.iter().flatten().copied().collect::<Vec<_>>(), [n, 4]),
                &device,
            )
        };
        let pred = coder.decode_tensor(deltas, boxes_of(&targets.positive_anchors));
        let ctr_targets = Tensor::<B, 1>::from_data(
            TensorData::new(targets.centerness_targets.clone(), [n]),
            &device,
        );
        let weighted = giou_loss(pred, boxes_of(&targets.positive_boxes)) * ctr_targets.clone();
        let giou = if normalisers.centerness_sum > 0.0 {
            weighted.sum().div_scalar(normalisers.centerness_sum)
        } else {
            weighted.sum()
        };
        let centerness = bce_with_logits(ctr_logits, ctr_targets)
            .sum()
            .div_scalar(normalisers.num_pos);
        (giou, centerness)
    };
    DetectionLosses {
        grounding,
        giou,
        centerness,
        num_pos: n,
    }
}
