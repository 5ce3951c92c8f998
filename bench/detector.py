#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench --model fiber-detect-base`: times the forward pass of
FIBER-Base's grounding detector (the plain-PyTorch detector of scripts/detector_fixtures.py at
FIBER-Base's sizes, with torchvision's deformable convolution) on one image padded to multiples
of 32 and a 256-token prompt, with random weights, and prints the same table. With `--train`,
the fine-grained training step of `cargo xtask bench --model fiber-detect-train --preset base`
instead: forward, ATSS targets for the same fixed boxes (`bench_targets` in
crates/fiber-train/src/benchmark/detector.rs), the grounding + 2 x GIoU + centerness loss of
scripts/detector_loss_fixtures.py, backward, gradient clipping at 1.0 and `torch.optim.AdamW`
with the fine-grained groups (text side x0.1, biases x2 without decay, patch embedding and the
first Swin stage frozen).

    pip install torch torchvision
    python3 bench/detector.py --detect-size 800x1333 --reps 3
    python3 bench/detector.py --train --detect-size 512x512 --reps 3
"""
import json
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import detector_fixtures as ref  # noqa: E402
import detector_loss_fixtures as loss_ref  # noqa: E402

FIBER_BASE = dict(
    PATCH=4, EMBED=128, DEPTHS=[2, 2, 18, 2], HEADS=[4, 8, 16, 32], WINDOW=12, MLP_RATIO=4.0,
    TEXT_WIDTH=768, TEXT_LAYERS=12, TEXT_HEADS=12, TEXT_FFN=3072, VOCAB=50265, MAX_POS=514,
    NUM_FUSE=6, CHANNELS=256, GROUPS=16, REDUCTION=4, TOWER_BLOCKS=6, CLASSES=80,
)
PROMPT_LEN = 256


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect-size", default="800x1333")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="time the fine-grained training step")
    parser.add_argument("--json", help="also write the timings as JSON to this file")
    args = parser.parse_args()
    h, w = (int(v) for v in args.detect_size.lower().replace("×", "x").split("x"))
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    for name, value in FIBER_BASE.items():
        setattr(ref, name, value)
    ref.DIMS = [ref.EMBED << s for s in range(len(ref.DEPTHS))]
    g = torch.Generator().manual_seed(0)
    if args.train:
        return train_step(args, g, h, w, ph, pw)
    with torch.no_grad():
        sd = ref.make_weights(g)
        params = sum(v.numel() for v in sd.values())
        pixels = torch.randn(args.batch, 3, ph, pw, generator=g)
        ids = torch.randint(3, 50000, (args.batch, PROMPT_LEN), generator=g)
        ids[:, 0], ids[:, -1] = 0, 2
        mask = torch.ones(args.batch, PROMPT_LEN, dtype=torch.int64)

        def once():
            start = time.perf_counter()
            ref.detector(sd, pixels, ids, mask)
            return (time.perf_counter() - start) * 1000.0

        for _ in range(args.warmup):
            once()
        runs = sorted(once() for _ in range(args.reps))
    median = statistics.median(runs)
    print(f"PyTorch {torch.__version__} | {torch.get_num_threads()} threads | {params} parameters")
    print("| model | backend | batch | median ms | min ms | max ms | items/s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| FiberDetectBase ({h}×{w} padded to {ph}×{pw}) | torch cpu | {args.batch} | {median:.1f} | {runs[0]:.1f} | "
          f"{runs[-1]:.1f} | {args.batch * 1000.0 / median:.2f} |")


FROZEN = ("fusion_backbone.backbone.body.patch_embed.", "fusion_backbone.backbone.body.layers.0.")


def bench_targets(ph, pw, L, boxes=4):
    """The fixed boxes of the Rust benchmark: box k a quarter of the image on the diagonal,
    named by tokens 1 + 3k ... 3 + 3k."""
    rows = torch.zeros(boxes, L)
    out = []
    for k in range(boxes):
        f = k / boxes
        out.append([f * pw, f * ph, (f + 0.25) * pw, (f + 0.25) * ph])
        rows[k, 1 + 3 * k:min(4 + 3 * k, L)] = 1.0
    return torch.tensor(out), rows


def train_step(args, g, h, w, ph, pw):
    sd = ref.make_weights(g)
    groups = []
    for key, value in sd.items():
        if key.startswith(FROZEN) or not value.is_floating_point():
            continue
        value.requires_grad_(True)
        lr = 1e-4 * (0.1 if "language_backbone" in key else 1.0)
        bias = "bias" in key
        groups.append({"params": [value], "lr": lr * (2.0 if bias else 1.0),
                       "weight_decay": 0.0 if bias else 0.01})
    params = sum(v.numel() for v in sd.values())
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    trained = [p for group in groups for p in group["params"]]
    pixels = torch.randn(args.batch, 3, ph, pw, generator=g)
    ids = torch.randint(3, 50000, (args.batch, PROMPT_LEN), generator=g)
    mask = torch.ones(args.batch, PROMPT_LEN, dtype=torch.int64)
    images = [bench_targets(ph, pw, PROMPT_LEN)] * args.batch

    def once():
        start = time.perf_counter()
        out, _ = ref.detector(sd, pixels, ids, mask)
        grounding, giou, centerness, _ = loss_ref.losses(out, mask, images, PROMPT_LEN)
        loss = grounding + 2.0 * giou + centerness
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        return (time.perf_counter() - start) * 1000.0, float(loss.detach())

    for _ in range(args.warmup):
        once()
    timed = [once() for _ in range(args.reps)]
    runs = sorted(t for t, _ in timed)
    median = statistics.median(runs)
    print(f"PyTorch {torch.__version__} | {torch.get_num_threads()} threads | {params} parameters; "
          f"last step's loss {timed[-1][1]:.4f}")
    print("| model | backend | batch | median ms | min ms | max ms | items/s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| FiberDetectTrain Base ({h}×{w} padded to {ph}×{pw}) | torch cpu | {args.batch} | {median:.1f} | "
          f"{runs[0]:.1f} | {runs[-1]:.1f} | {args.batch * 1000.0 / median:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "parameters": params,
                       "median_ms": median, "min_ms": runs[0], "max_ms": runs[-1], "runs_ms": runs,
                       "loss": timed[-1][1]}, f)


if __name__ == "__main__":
    main()
