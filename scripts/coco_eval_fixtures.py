#!/usr/bin/env python3
"""Builds fixtures/coco_eval: a small COCO ground truth (instances.json: images of several sizes,
three categories, small, medium and large boxes, one crowd box), detections of it
(detections.json: jittered true boxes, duplicates, misses and false positives, with scores), and
the 12 COCOeval bbox statistics pycocotools computes for the pair (expected_stats.json, keys
ap, ap50, ap75, aps, apm, apl, ar1, ar10, ar100, ars, arm, arl).

    pip install pycocotools
    python3 scripts/coco_eval_fixtures.py
"""
import json
import os
import random

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "coco_eval")
KEYS = ["ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm", "arl"]


def main():
    rng = random.Random(7)
    os.makedirs(OUT, exist_ok=True)
    images, annotations, detections = [], [], []
    categories = [{"id": c, "name": n} for c, n in [(1, "circle"), (3, "square"), (7, "triangle")]]
    ann_id = 1
    for img_id in range(1, 9):
        w, h = rng.choice([(320, 240), (640, 480), (500, 375)])
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id:06d}.jpg"})
        for _ in range(rng.randint(1, 6)):
            side = rng.choice([12, 20, 40, 70, 120, 200])
            bw, bh = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = rng.choice(categories)["id"]
            crowd = 1 if ann_id == 5 else 0
            annotations.append({"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh],
                                "area": bw * bh * rng.uniform(0.7, 1.0), "iscrowd": crowd})
            ann_id += 1
            # a detection of it (sometimes missed), sometimes a duplicate or a wrong class
            if rng.random() < 0.85:
                j = lambda v, s: v + rng.gauss(0, s)
                detections.append({"image_id": img_id, "category_id": cat, "score": round(rng.uniform(0.3, 1.0), 4),
                                   "bbox": [j(x, 0.08 * bw), j(y, 0.08 * bh), abs(j(bw, 0.1 * bw)), abs(j(bh, 0.1 * bh))]})
            if rng.random() < 0.3:
                detections.append({"image_id": img_id, "category_id": cat, "score": round(rng.uniform(0.05, 0.6), 4),
                                   "bbox": [x + 0.3 * bw, y, bw, bh * 0.8]})
            if rng.random() < 0.2:
                other = rng.choice([c["id"] for c in categories if c["id"] != cat])
                detections.append({"image_id": img_id, "category_id": other, "score": round(rng.uniform(0.05, 0.9), 4),
                                   "bbox": [x, y, bw, bh]})
        for _ in range(rng.randint(0, 3)):  # false positives
            bw, bh = rng.uniform(10, 150), rng.uniform(10, 150)
            detections.append({"image_id": img_id, "category_id": rng.choice(categories)["id"],
                               "score": round(rng.uniform(0.01, 0.7), 4),
                               "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]})
    gt_path, dt_path = os.path.join(OUT, "instances.json"), os.path.join(OUT, "detections.json")
    with open(gt_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    with open(dt_path, "w") as f:
        json.dump(detections, f)
    gt = COCO(gt_path)
    ev = COCOeval(gt, gt.loadRes(dt_path), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    with open(os.path.join(OUT, "expected_stats.json"), "w") as f:
        json.dump(dict(zip(KEYS, [float(v) for v in ev.stats])), f, indent=1)
    print(len(annotations), "boxes,", len(detections), "detections")


if __name__ == "__main__":
    main()
