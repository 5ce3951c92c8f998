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
    """A byte-level BPE vocabulary in roberta-base form (vocab.json + merges.txt), the same
    tokenizer as a `tokenizer.json` configured like roberta-base's (byte-level pre-tokenizer,
    RobertaProcessing, `<mask>` with lstrip), and the ids that reference tokenizer gives."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer, Tokenizer, decoders
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import ByteLevel
    from tokenizers.processors import RobertaProcessing

    corpus = [
        f"a {size} {colour} {shape} is {where} the {other}."
        for size in ["small", "large"]
        for colour in ["red", "green", "blue", "yellow", "purple"]
        for shape in ["circle", "square", "triangle"]
        for where in ["left of", "right of", "above", "below"]
        for other in ["circle", "square"]
    ]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2, special_tokens=specials)
    out = fresh_dir("tokenizer", "roberta-form")
    bpe.save_model(out)

    tok = Tokenizer(BPE.from_file(os.path.join(out, "vocab.json"), os.path.join(out, "merges.txt")))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.add_special_tokens([AddedToken(t, lstrip=(t == "<mask>"), special=True) for t in specials])
    json_dir = fresh_dir("tokenizer", "json-form")
    tok.save(os.path.join(json_dir, "tokenizer.json"))

    texts = ["a small red circle is left of the square.", "one <mask> above BLUE triangles!", "\u00fcn\u00efc\u00f6d\u00e9 shapes 42"]
    max_length = 16
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=1, pad_token="<pad>")
    enc = tok.encode_batch(texts)
    expected = {"texts": texts, "max_length": max_length, "input_ids": [e.ids for e in enc],
                "attention_mask": [e.attention_mask for e in enc]}
    for d in (out, json_dir):
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    roberta_fixtures()
    tokenizer_fixtures()
    print("fixtures written under", os.path.normpath(ROOT))
