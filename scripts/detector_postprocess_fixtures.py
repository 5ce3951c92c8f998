#!/usr/bin/env python3
"""Builds fixtures/detector/postprocess: the detections a plain PyTorch reference of the
original's post-processing (docs/model.md §5.6) makes of the tiny detector's batch-2 outputs
(scripts/detector_fixtures.py): class score = mean sigmoid over the class's tokens, kept above
the threshold, the per-level top-n by score x sigmoid(centerness) (ties to the earlier location
and class), decoded, clipped to [0, W-1] x [0, H-1] of each image's own size, scored
sqrt(score x centerness), class-aware NMS with "+1" IoU (suppress above the threshold), and every
detection scoring at least the n-th best.

    pip install torch torchvision safetensors
    python3 scripts/detector_postprocess_fixtures.py
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detector_fixtures as ref  # noqa: E402
from detector_loss_fixtures import decode  # noqa: E402

# threshold 0.008: the tiny random model scores every token near the prior 0.01
CLASSES = [[1, 2], [3], [4, 5]]
SIZES = [(64, 90), (60, 96)]  # (height, width) before batch padding
CONFIG = {"score_threshold": 0.008, "pre_nms_top_n": 20, "nms_threshold": 0.6, "detections_per_image": 15}


def iou(a, b):
    w = (torch.min(a[2], b[2]) - torch.max(a[0], b[0]) + 1).clamp(min=0)
    h = (torch.min(a[3], b[3]) - torch.max(a[1], b[1]) + 1).clamp(min=0)
    inter = w * h
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)


def postprocess(out):
    result = []
    for i, (height, width) in enumerate(SIZES):
        dets = []
        for l in range(5):
            probs = out[f"logits.{l}"][i].sigmoid()
            scores = torch.stack([probs[:, t].mean(-1) for t in CLASSES], 1)  # [A, C]
            ctr = out[f"centerness.{l}"][i].flatten().sigmoid()
            deltas = out[f"bbox_reg.{l}"][i].flatten(1).t()
            anchors = out[f"anchors.{l}"]
            cand = (scores > CONFIG["score_threshold"]).nonzero()  # row-major: location, class
            ranked = scores[cand[:, 0], cand[:, 1]] * ctr[cand[:, 0]]
            order = torch.sort(ranked, descending=True, stable=True).indices[:CONFIG["pre_nms_top_n"]]
            for k in order.tolist():
                a, c = cand[k].tolist()
                box = decode(deltas[a:a + 1], anchors[a:a + 1])[0]
                box = torch.stack([box[0].clamp(0, width - 1), box[1].clamp(0, height - 1),
                                   box[2].clamp(0, width - 1), box[3].clamp(0, height - 1)])
                dets.append((ranked[k].sqrt().item(), c, box))
        dets.sort(key=lambda d: -d[0])
        kept = []
        for d in dets:
            if not any(k[1] == d[1] and iou(k[2], d[2]) > CONFIG["nms_threshold"] for k in kept):
                kept.append(d)
        n = CONFIG["detections_per_image"]
        if len(kept) > n:
            cut = kept[n - 1][0]
            kept = [d for d in kept if d[0] >= cut]
        result.append([{"class": c, "score": s, "bbox": b.tolist()} for s, c, b in kept])
    return result


def main():
    tiny = os.path.join(ref.ROOT, "detector", "tiny")
    out_dir = os.path.join(ref.ROOT, "detector", "postprocess")
    os.makedirs(out_dir, exist_ok=True)
    sd = {k[len("module."):]: v for k, v in torch.load(os.path.join(tiny, "fiber_detector_tiny.pth"))["model"].items()}
    inputs = load_file(os.path.join(tiny, "input_batch2.safetensors"))
    with torch.no_grad():
        out, _ = ref.detector(sd, inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        detections = postprocess(out)
    with open(os.path.join(out_dir, "expected_batch2.json"), "w") as f:
        json.dump({"classes": CLASSES, "image_sizes": SIZES, "config": CONFIG, "detections": detections}, f, indent=1)
    print([len(d) for d in detections], "detections")


if __name__ == "__main__":
    main()
