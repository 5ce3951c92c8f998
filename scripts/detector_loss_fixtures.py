#!/usr/bin/env python3
"""Builds the detector-loss parity fixtures under fixtures/detector/loss: inputs with ground
truth for `fiber-forward --mode detect` on the tiny detector of scripts/detector_fixtures.py, and
the losses a plain PyTorch reference computes from that detector's outputs, written from
docs/model.md §5.3 (not from the Rust code):

- ATSS: per box, the 9 anchors per level with the nearest centres (a stable sort: ties go to the
  earlier anchor), positives at IoU >= mean + unbiased std of the candidates' IoUs with the
  anchor centre more than 0.01 px inside the box, an anchor claimed twice to the higher IoU;
  IoUs with the "+1" convention.
- Token targets: a positive's box's positive map; a negative's 1 in the last column.
- Losses: sigmoid focal loss (alpha 0.25, gamma 2) over (anchor, valid token) / max(#pos, 1);
  GIoU (plain widths) of decoded positives weighted by centerness targets / their sum;
  centerness BCE-with-logits sum / max(#pos, 1).
- Gradients: the gradient of grounding + 2 * giou + centerness with respect to every parameter
  of the detector on the "batch2" case (`gradients_batch2.safetensors`, original keys), which
  is what a training step follows.

    pip install torch torchvision safetensors
    python3 scripts/detector_fixtures.py   # first, if fixtures/detector/tiny is missing
    python3 scripts/detector_loss_fixtures.py
"""
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detector_fixtures as ref  # noqa: E402

WEIGHTS = (10.0, 10.0, 5.0, 5.0)
CLIP = math.log(1000.0 / 16)


def iou_matrix(a, b):
    """IoU of every anchor a [N,4] with every box b [M,4], "+1" widths."""
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def encode(gt, anchor):
    aw, ah = anchor[:, 2] - anchor[:, 0] + 1, anchor[:, 3] - anchor[:, 1] + 1
    ax, ay = anchor[:, 0] + 0.5 * aw, anchor[:, 1] + 0.5 * ah
    gw, gh = gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    wx, wy, ww, wh = WEIGHTS
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def decode(d, anchor):
    aw, ah = anchor[:, 2] - anchor[:, 0] + 1, anchor[:, 3] - anchor[:, 1] + 1
    ax, ay = anchor[:, 0] + 0.5 * aw, anchor[:, 1] + 0.5 * ah
    wx, wy, ww, wh = WEIGHTS
    cx = d[:, 0] / wx * aw + ax
    cy = d[:, 1] / wy * ah + ay
    w = torch.exp(torch.clamp(d[:, 2] / ww, max=CLIP)) * aw
    h = torch.exp(torch.clamp(d[:, 3] / wh, max=CLIP)) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1], 1)


def assign(anchors, level_sizes, boxes, top_k=9):
    """Each anchor's box index, -1 for negatives."""
    n = anchors.shape[0]
    if boxes.shape[0] == 0:
        return torch.full((n,), -1, dtype=torch.int64)
    ious = iou_matrix(anchors, boxes)
    acx, acy = (anchors[:, 2] + anchors[:, 0]) / 2, (anchors[:, 3] + anchors[:, 1]) / 2
    gcx, gcy = (boxes[:, 2] + boxes[:, 0]) / 2, (boxes[:, 3] + boxes[:, 1]) / 2
    dist = ((acx[:, None] - gcx[None]) ** 2 + (acy[:, None] - gcy[None]) ** 2).sqrt()
    candidates, start = [], 0
    for size in level_sizes:
        order = torch.sort(dist[start:start + size], dim=0, stable=True).indices
        candidates.append(order[:min(top_k, size)] + start)
        start += size
    candidates = torch.cat(candidates, 0)  # [K, M]
    cols = torch.arange(boxes.shape[0])
    cand_iou = ious[candidates, cols]
    threshold = cand_iou.double().mean(0) + cand_iou.double().std(0)
    pos = cand_iou.double() >= threshold[None]
    l = acx[candidates] - boxes[:, 0]
    t = acy[candidates] - boxes[:, 1]
    r = boxes[:, 2] - acx[candidates]
    b = boxes[:, 3] - acy[candidates]
    pos &= torch.stack([l, t, r, b], 0).min(0).values > 0.01
    claimed = torch.full_like(ious, -math.inf)
    for g in range(boxes.shape[0]):
        idx = candidates[:, g][pos[:, g]]
        claimed[idx, g] = ious[idx, g]
    value, index = claimed.max(1)
    index[value == -math.inf] = -1
    return index


def losses(out, mask, images, L):
    levels = [out[f"anchors.{l}"] for l in range(5)]
    anchors = torch.cat(levels, 0)
    sizes = [a.shape[0] for a in levels]
    B = mask.shape[0]
    logits = torch.cat([out[f"logits.{l}"] for l in range(5)], 1)
    deltas = torch.cat([out[f"bbox_reg.{l}"].flatten(2).transpose(1, 2) for l in range(5)], 1)
    ctr = torch.cat([out[f"centerness.{l}"].flatten(2).transpose(1, 2) for l in range(5)], 1)[..., 0]
    token_targets = torch.zeros(B, anchors.shape[0], L)
    pos_deltas, pos_anchors, pos_boxes, pos_ctr = [], [], [], []
    for i, (boxes, pmap) in enumerate(images):
        index = assign(anchors, sizes, boxes)
        neg = index < 0
        token_targets[i, neg, L - 1] = 1.0
        token_targets[i, ~neg] = pmap[index[~neg]]
        pos_deltas.append(deltas[i, ~neg])
        pos_anchors.append(anchors[~neg])
        pos_boxes.append(boxes[index[~neg]] if boxes.shape[0] else torch.zeros(0, 4))
        pos_ctr.append(ctr[i, ~neg])
    pos_deltas, pos_anchors = torch.cat(pos_deltas), torch.cat(pos_anchors)
    pos_boxes, pos_ctr = torch.cat(pos_boxes), torch.cat(pos_ctr)
    num_pos = pos_deltas.shape[0]
    norm = max(float(num_pos), 1.0)

    valid = mask.bool()[:, None, :].expand(-1, anchors.shape[0], -1)
    x, t = logits[valid], token_targets[valid]
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = (0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * ce
    grounding = focal.sum() / norm

    if num_pos == 0:
        return grounding, torch.tensor(0.0), torch.tensor(0.0), num_pos
    target = decode(encode(pos_boxes, pos_anchors), pos_anchors)
    acx = (pos_anchors[:, 2] + pos_anchors[:, 0]) / 2
    acy = (pos_anchors[:, 3] + pos_anchors[:, 1]) / 2
    lr = torch.stack([acx - target[:, 0], target[:, 2] - acx], 1)
    tb = torch.stack([acy - target[:, 1], target[:, 3] - acy], 1)
    ctr_t = torch.sqrt(lr.min(1).values / lr.max(1).values * (tb.min(1).values / tb.max(1).values))

    pred = decode(pos_deltas, pos_anchors)
    px0, py0 = pred[:, 0], pred[:, 1]
    px1, py1 = torch.max(px0, pred[:, 2]), torch.max(py0, pred[:, 3])
    tx0, ty0, tx1, ty1 = target.unbind(1)
    inter_w = torch.min(px1, tx1) - torch.max(px0, tx0)
    inter_h = torch.min(py1, ty1) - torch.max(py0, ty0)
    inter = torch.where((inter_w > 0) & (inter_h > 0), inter_w * inter_h, torch.zeros_like(inter_w))
    enclosing = (torch.max(px1, tx1) - torch.min(px0, tx0)) * (torch.max(py1, ty1) - torch.min(py0, ty0)) + 1e-7
    union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter + 1e-7
    giou = inter / union - (enclosing - union) / enclosing
    giou_loss = ((1 - giou) * ctr_t).sum() / ctr_t.sum()
    centerness = F.binary_cross_entropy_with_logits(pos_ctr, ctr_t, reduction="sum") / norm
    return grounding, giou_loss, centerness, num_pos


def padded(images, L):
    M = max(1, max(b.shape[0] for b, _ in images))
    B = len(images)
    boxes, valid, pmap = torch.zeros(B, M, 4), torch.zeros(B, M, dtype=torch.int64), torch.zeros(B, M, L)
    for i, (b, p) in enumerate(images):
        boxes[i, :b.shape[0]], valid[i, :b.shape[0]], pmap[i, :b.shape[0]] = b, 1, p
    return boxes, valid, pmap


def token_map(L, *spans):
    rows = torch.zeros(len(spans), L)
    for r, (a, b) in enumerate(spans):
        rows[r, a:b] = 1.0
    return rows


def write_gradients(sd, tiny, out_dir, case):
    """The total loss's gradient for every float parameter of the detector."""
    source, images = case
    params = {k: v.detach().clone().requires_grad_(True) for k, v in sd.items() if v.is_floating_point()}
    model = {**sd, **params}
    inputs = load_file(os.path.join(tiny, f"input_{source}.safetensors"))
    L = inputs["input_ids"].shape[1]
    out, _ = ref.detector(model, inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    grounding, giou, centerness, _ = losses(out, inputs["attention_mask"], images, L)
    total = grounding + 2.0 * giou + centerness
    total.backward()
    grads = {f"grad.{k}": p.grad.float().contiguous() for k, p in params.items() if p.grad is not None}
    grads["loss.total"] = total.detach().reshape(1).float()
    save_file(grads, os.path.join(out_dir, f"gradients_{source}.safetensors"))
    print("gradients of", len(grads) - 1, "parameters; total loss", round(total.item(), 6))


def main():
    tiny = os.path.join(ref.ROOT, "detector", "tiny")
    out_dir = os.path.join(ref.ROOT, "detector", "loss")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    sd = {k[len("module."):]: v for k, v in torch.load(os.path.join(tiny, "fiber_detector_tiny.pth"))["model"].items()}
    t = lambda rows: torch.tensor(rows, dtype=torch.float32)
    cases = {
        # two images, the second caption padded (7 and 4 tokens); two boxes, then one
        "batch2": ("batch2", [(t([[10.0, 8.0, 50.0, 40.0], [40.5, 20.25, 90.0, 60.0]]), token_map(7, (1, 3), (4, 6))),
                              (t([[5.0, 30.0, 30.0, 62.0]]), token_map(7, (1, 2)))]),
        # one caption filling the whole token axis: the no-object column counts
        "batch1_full_caption": ("batch1", [(t([[12.0, 20.0, 52.0, 80.0]]), token_map(6, (2, 5)))]),
        # the second image has no box: negative-only
        "batch2_negative": ("batch2", [(t([[20.0, 10.0, 70.0, 50.0]]), token_map(7, (1, 4))),
                                       (torch.zeros(0, 4), torch.zeros(0, 7))]),
    }
    with torch.no_grad():
        for name, (source, images) in cases.items():
            inputs = load_file(os.path.join(tiny, f"input_{source}.safetensors"))
            L = inputs["input_ids"].shape[1]
            out, _ = ref.detector(sd, inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
            grounding, giou, centerness, num_pos = losses(out, inputs["attention_mask"], images, L)
            boxes, valid, pmap = padded(images, L)
            save_file({**inputs, "gt_boxes": boxes, "gt_valid": valid, "positive_map": pmap},
                      os.path.join(out_dir, f"input_{name}.safetensors"))
            expected = {"loss.grounding": grounding.reshape(1), "loss.giou": giou.reshape(1),
                        "loss.centerness": centerness.reshape(1), "num_pos": torch.tensor([float(num_pos)])}
            save_file({k: v.float().contiguous() for k, v in expected.items()},
                      os.path.join(out_dir, f"expected_{name}.safetensors"))
            print(name, {k: round(v.item(), 6) for k, v in expected.items()})
    write_gradients(sd, tiny, out_dir, cases["batch2"])
    print("detector loss fixtures written under", os.path.normpath(out_dir))


if __name__ == "__main__":
    main()
