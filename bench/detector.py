#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench --model fiber-detect-base`: times the forward pass of
FIBER-Base's grounding detector (the plain-PyTorch detector of scripts/detector_fixtures.py at
FIBER-Base's sizes, with torchvision's deformable convolution) on one image padded to multiples
of 32 and a 256-token prompt, with random weights, and prints the same table.

    pip install torch torchvision
    python3 bench/detector.py --detect-size 800x1333 --reps 3
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import detector_fixtures as ref  # noqa: E402

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
    args = parser.parse_args()
    h, w = (int(v) for v in args.detect_size.lower().replace("×", "x").split("x"))
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    for name, value in FIBER_BASE.items():
        setattr(ref, name, value)
    ref.DIMS = [ref.EMBED << s for s in range(len(ref.DEPTHS))]
    g = torch.Generator().manual_seed(0)
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


if __name__ == "__main__":
    main()
