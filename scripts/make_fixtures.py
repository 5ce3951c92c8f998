#!/usr/bin/env python3
"""Builds the parity fixtures under fixtures/: small random HuggingFace models, their inputs and
reference outputs. Every weight (LayerNorms and biases included) is randomised, so a bug cannot
hide behind ones and zeros.

    pip install torch transformers safetensors tokenizers
    python3 scripts/make_fixtures.py

Re-running it rewrites the fixtures deterministically (fixed seeds, CPU, float32).
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def randomise(model, seed):
    """Replaces every parameter with random values of a sensible scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            lname = name.lower()
            if ("layernorm" in lname or "layer_norm" in lname or lname.endswith("norm.weight")) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif "embeddings" in lname:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5 * 1.5)
    return model


def fresh_dir(*parts):
    path = os.path.join(ROOT, *parts)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def roberta_fixtures():
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel

    config = RobertaConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=24, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, hidden_act="gelu",
    )
    # A padded batch: rows of 10, 6 and 3 real tokens (<s>=0 ... </s>=2, <pad>=1).
    g = torch.Generator().manual_seed(7)
    lengths = [10, 6, 3]
    ids = torch.full((3, 10), 1, dtype=torch.int64)
    mask = torch.zeros((3, 10), dtype=torch.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 99, (n,), generator=g)
        ids[row, 0], ids[row, n - 1] = 0, 2
        mask[row, :n] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}

    # Bare RobertaModel with pooler (keys without prefix), plus the causal (decoder) variant.
    model = randomise(RobertaModel(config, add_pooling_layer=True), seed=1).eval()
    out = fresh_dir("roberta", "tiny")
    model.save_pretrained(out, safe_serialization=True)
    decoder_config = RobertaConfig(**{**config.to_dict(), "is_decoder": True})
    decoder = RobertaModel(decoder_config, add_pooling_layer=True).eval()
    decoder.load_state_dict(model.state_dict())
    with torch.no_grad():
        y = model(**inputs)
        causal = decoder(**inputs)
    save_file(inputs, os.path.join(out, "input.safetensors"))
    save_file({
        "last_hidden_state": y.last_hidden_state.contiguous(),
        "pooler_output": y.pooler_output.contiguous(),
        "causal_last_hidden_state": causal.last_hidden_state.contiguous(),
    }, os.path.join(out, "expected.safetensors"))

    # RobertaForMaskedLM with the decoder tied to the word embeddings (keys `roberta.*`,
    # `lm_head.*`, no `lm_head.decoder.weight` in the file).
    mlm = RobertaForMaskedLM(config)
    randomise(mlm, seed=2)
    mlm.tie_weights()
    mlm.eval()
    out = fresh_dir("roberta", "tiny-mlm")
    mlm.save_pretrained(out, safe_serialization=True)
    with torch.no_grad():
        y = mlm(**inputs, output_hidden_states=True)
    save_file(inputs, os.path.join(out, "input.safetensors"))
    save_file({
        "last_hidden_state": y.hidden_states[-1].contiguous(),
        "logits": y.logits.contiguous(),
    }, os.path.join(out, "expected.safetensors"))


def tokenizer_fixtures():
    """A byte-level BPE vocabulary in roberta-base form (vocab.json + merges.txt) and the ids
    HuggingFace's RobertaTokenizerFast gives for a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    corpus = [
        f"a {size} {colour} {shape} is {where} the {other}."
        for size in ["small", "large"]
        for colour in ["red", "green", "blue", "yellow", "purple"]
        for shape in ["circle", "square", "triangle"]
        for where in ["left of", "right of", "above", "below"]
        for other in ["circle", "square"]
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    out = fresh_dir("tokenizer", "roberta-form")
    bpe.save_model(out)
    hf = RobertaTokenizerFast.from_pretrained(out)
    texts = ["a small red circle is left of the square.", "Two BLUE triangles, one <mask> above!", "ünïcödé shapes 42"]
    enc = hf(texts, padding="max_length", truncation=True, max_length=16)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"texts": texts, "max_length": 16, "input_ids": enc["input_ids"],
                   "attention_mask": enc["attention_mask"]}, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    roberta_fixtures()
    tokenizer_fixtures()
    print("fixtures written under", os.path.normpath(ROOT))
