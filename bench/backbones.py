#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench`: times the HuggingFace forward pass of the same
backbone, batch and input size, and prints the same table.

    pip install torch transformers
    python3 bench/backbones.py --model swin-base384 --batch 1 --reps 3
"""
import argparse
import json
import statistics
import time

import torch
from transformers import RobertaConfig, RobertaModel, SwinConfig, SwinModel


def build(name, batch):
    if name in ("swin-base384", "swin-tiny224"):
        if name == "swin-base384":
            config = SwinConfig(image_size=384, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12)
        else:
            config = SwinConfig(image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7)
        model = SwinModel(config, add_pooling_layer=True)
        inputs = {"pixel_values": torch.randn(batch, 3, config.image_size, config.image_size)}
    elif name == "roberta-base":
        model = RobertaModel(RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5))
        inputs = {"input_ids": torch.randint(3, 50000, (batch, 40)), "attention_mask": torch.ones(batch, 40, dtype=torch.int64)}
    else:
        raise SystemExit(f"unknown model {name}")
    return model.eval(), inputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="swin-base384")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    model, inputs = build(args.model, args.batch)
    model.to(args.device)
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    runs = []
    with torch.no_grad():
        for i in range(args.warmup + args.reps):
            start = time.perf_counter()
            model(**inputs)
            sync()
            if i >= args.warmup:
                runs.append((time.perf_counter() - start) * 1000)
    runs.sort()
    median = statistics.median(runs)
    print("| model | framework | threads | batch | median ms | min ms | max ms | items/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | pytorch {torch.__version__} {args.device} | {torch.get_num_threads()} | {args.batch} | "
          f"{median:.1f} | {runs[0]:.1f} | {runs[-1]:.1f} | {args.batch * 1000 / median:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "framework": "pytorch", "batch": args.batch, "median_ms": median, "runs_ms": runs}, f)


if __name__ == "__main__":
    main()
