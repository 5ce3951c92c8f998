#!/usr/bin/env python3
"""Side-by-side training losses of runs (e.g. f32 against half precision).

Reads each run folder's metrics.jsonl (written by `cargo xtask train`) and prints, for one
stage, the mean loss of each block of steps and the mean of each loss part over the last block.

    python3 bench/compare_losses.py runs/precision-f32 runs/precision-bf16 [--stage pretrain] [--block 10]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path


def steps(run: Path, stage: str):
    path = run / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"{path}: no such file (is {run} a run folder of `cargo xtask train`?)")
    rows = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not JSON ({e})")
            if row.get("stage") == stage and "loss" in row and "step" in row:
                rows.append(row)
    if not rows:
        sys.exit(f"{path}: no steps of stage `{stage}`")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--stage", default="pretrain")
    parser.add_argument("--block", type=int, default=10, help="steps per averaged block")
    args = parser.parse_args()
    runs = {run.name: steps(run, args.stage) for run in args.runs}
    length = min(len(r) for r in runs.values())
    print("| steps | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for start in range(0, length, args.block):
        end = min(start + args.block, length)
        means = [statistics.mean(r["loss"] for r in rows[start:end]) for rows in runs.values()]
        print(f"| {start + 1}–{end} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    last = slice(max(0, length - args.block), length)
    parts = sorted({p for rows in runs.values() for r in rows[last] for p in r.get("parts", {})})
    for part in parts:
        means = []
        for rows in runs.values():
            values = [r["parts"][part] for r in rows[last] if part in r.get("parts", {})]
            means.append(f"{statistics.mean(values):.3f}" if values else "–")
        print(f"| {part}, last {args.block} | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
