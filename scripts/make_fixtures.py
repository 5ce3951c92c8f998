#!/usr/bin/env python3
"""Builds the parity fixtures under fixtures/: small random HuggingFace models, their inputs and
reference outputs. Every weight (LayerNorms and biases included) is randomised, so a bug cannot
hide behind ones and zeros.

    pip install torch transformers safetensors tokenizers pillow
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


def swin_to_original(state_dict):
    """HuggingFace SwinModel keys -> original Microsoft/timm keys (fused qkv), as in docs/model.md §6.3."""
    out = {}
    for key, value in state_dict.items():
        k = key
        if ".attention.self.query." in k or ".attention.self.key." in k or ".attention.self.value." in k:
            continue
        k = k.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
        k = k.replace("embeddings.norm", "patch_embed.norm")
        k = k.replace("encoder.layers", "layers")
        k = k.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
        k = k.replace("attention.self.relative_position_bias_table", "attn.relative_position_bias_table")
        k = k.replace("attention.output.dense", "attn.proj")
        k = k.replace("intermediate.dense", "mlp.fc1").replace("output.dense", "mlp.fc2")
        if k.startswith("layernorm."):
            k = "norm." + k[len("layernorm."):]
        out[k] = value
    for key in state_dict:
        if ".attention.self.query." in key:
            block = key.split(".attention.self.query.")[0].replace("encoder.layers", "layers")
            kind = key.rsplit(".", 1)[1]
            parts = [state_dict[key.replace(".query.", f".{n}.")] for n in ("query", "key", "value")]
            out[f"{block}.attn.qkv.{kind}"] = torch.cat(parts, 0)
    return out


def swin_fixtures():
    """A tiny random SwinModel (window 3, stages 12 -> 6 -> 3 at 48 px) run on a square input, on
    an input that needs padding at the patch embedding and before every merge (50x38 -> odd
    maps), with the outputs HuggingFace returns for output_hidden_states=True; the same weights
    in the original layout inside a .pth under `model`; and a bicubically resized table."""
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(image_size=48, patch_size=4, num_channels=3, embed_dim=8, depths=[2, 2, 2], num_heads=[2, 2, 4],
                        window_size=3, mlp_ratio=2.0, layer_norm_eps=1e-5, drop_path_rate=0.0, hidden_act="gelu")
    source = randomise(SwinModel(config), seed=3).eval()
    out = fresh_dir("swin", "tiny")
    source.save_pretrained(out, safe_serialization=True)
    g = torch.Generator().manual_seed(11)
    cases = {"square": torch.randn(2, 3, 48, 48, generator=g), "padded": torch.randn(1, 3, 50, 38, generator=g)}
    for name, pixels in cases.items():
        model = SwinModel.from_pretrained(out).eval()  # fresh: HF keeps clamped windows between calls
        with torch.no_grad():
            y = model(pixel_values=pixels, output_hidden_states=True)
        expected = {"last_hidden_state": y.last_hidden_state, "pooler_output": y.pooler_output}
        for i, h in enumerate(y.hidden_states):
            expected[f"hidden_states.{i}"] = h
        for i, h in enumerate(y.reshaped_hidden_states):
            expected[f"reshaped_hidden_states.{i}"] = h
        save_file({"pixel_values": pixels.contiguous()}, os.path.join(out, f"input_{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, f"expected_{name}.safetensors"))

    from safetensors.torch import load_file
    original = swin_to_original(load_file(os.path.join(out, "model.safetensors")))  # legacy HF key names
    original["head.weight"] = torch.randn(5, 32, generator=g)  # an ImageNet head the loader must skip
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(9, 9, dtype=torch.int64)
    torch.save({"model": original}, os.path.join(out, "original_layout.pth"))

    # docs/model.md §1.1: a table for window g viewed as heads x (2g-1) x (2g-1), bicubic to window 5.
    table = original["layers.0.blocks.0.attn.relative_position_bias_table"]  # [25, 2]
    heads = table.shape[1]
    grid = table.permute(1, 0).reshape(1, heads, 5, 5)
    resized = torch.nn.functional.interpolate(grid, size=(9, 9), mode="bicubic", align_corners=False)
    save_file({"table": resized.reshape(heads, 81).permute(1, 0).contiguous()}, os.path.join(out, "table_window5.safetensors"))


def image_fixtures():
    """A random RGB PNG and its PIL bicubic resizes (the filter of the original torchvision
    pipeline), computed per channel in float ("F" mode) and in uint8 as torchvision does."""
    import numpy as np
    from PIL import Image

    out = fresh_dir("image")
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(29, 41, 3), dtype=np.uint8)
    rgb[5:20, 10:30] = [200, 40, 90]  # a flat patch with sharp edges, where filters differ most
    Image.fromarray(rgb).save(os.path.join(out, "photo.png"))
    expected = {}
    for name, (w, h) in {"down": (16, 12), "up": (60, 50)}.items():
        channels = [np.asarray(Image.fromarray(rgb[:, :, c].astype(np.float32) / 255.0, mode="F").resize((w, h), Image.BICUBIC))
                    for c in range(3)]
        expected[f"{name}_float"] = torch.from_numpy(np.stack(channels).astype(np.float32))
        u8 = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC)).astype(np.float32) / 255.0
        expected[f"{name}_uint8"] = torch.from_numpy(u8.transpose(2, 0, 1).copy())
    save_file(expected, os.path.join(out, "expected_resize.safetensors"))


def fusion_fixtures():
    """A tiny FIBER fusion backbone written from docs/model.md §2 (not from the Rust code): HF Swin and
    RoBERTa modules with gated co-attention in the last 3 blocks/layers. The image-to-text
    cross-attention is computed per window inside the Swin block, as the original does.
    Writes the weights in the original FIBER checkpoint layout (a Lightning-style `.ckpt` with
    `state_dict`, queues, buffers and heads included), inputs, and reference outputs of the
    first fused pair, the fused forward and the dual forward."""
    import math
    from safetensors.torch import load_file
    from transformers import RobertaConfig, RobertaModel, SwinConfig, SwinModel
    from transformers.models.swin.modeling_swin import window_partition, window_reverse

    F = torch.nn.functional
    swin_cfg = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4], window_size=2,
                          mlp_ratio=2.0, layer_norm_eps=1e-5, drop_path_rate=0.0)
    text_cfg = RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
                             max_position_embeddings=24, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
    out = fresh_dir("fusion", "tiny")
    tmp = os.path.join(out, "tmp")
    swin = randomise(SwinModel(swin_cfg), seed=21).eval()
    swin.save_pretrained(os.path.join(tmp, "swin"), safe_serialization=True)
    text = randomise(RobertaModel(text_cfg), seed=22).eval()
    text.save_pretrained(os.path.join(tmp, "roberta"), safe_serialization=True)
    swin_sd = load_file(os.path.join(tmp, "swin", "model.safetensors"))
    text_sd = load_file(os.path.join(tmp, "roberta", "model.safetensors"))
    shutil.rmtree(tmp)

    g = torch.Generator().manual_seed(23)
    rnd = lambda *shape, s=0.3: torch.randn(*shape, generator=g) * s
    pairs = [(1, 1, 1), (2, 0, 2), (2, 1, 3)]  # (stage, block, text layer): the last 3 of each
    dims = [16, 32, 64]
    heads = [2, 2, 4]
    fusion = {}
    for s, b, i in pairs:
        C = dims[s]
        f = {
            "qkv_text_i2t.weight": rnd(2 * C, 32), "qkv_text_i2t.bias": rnd(2 * C),
            "qkv_i2t.weight": rnd(C, C, s=1 / math.sqrt(C)), "qkv_i2t.bias": rnd(C),
            "proj_i2t.weight": rnd(C, C, s=1 / math.sqrt(C)), "proj_i2t.bias": rnd(C),
            "norm_i2t_i.weight": 1 + rnd(C, s=0.2), "norm_i2t_i.bias": rnd(C, s=0.2),
            "alpha_i2t": torch.tensor([0.5 + 0.5 * (b + s)]),
        }
        t = {
            "crossattention_t2i.self.query.weight": rnd(32, 32, s=1 / math.sqrt(32)), "crossattention_t2i.self.query.bias": rnd(32),
            "crossattention_t2i.self.key.weight": rnd(32, C, s=1 / math.sqrt(C)), "crossattention_t2i.self.key.bias": rnd(32),
            "crossattention_t2i.self.value.weight": rnd(32, C, s=1 / math.sqrt(C)), "crossattention_t2i.self.value.bias": rnd(32),
            "crossattention_t2i.output.dense.weight": rnd(32, 32, s=1 / math.sqrt(32)), "crossattention_t2i.output.dense.bias": rnd(32),
            "crossattention_t2i.output.LayerNorm.weight": torch.ones(32), "crossattention_t2i.output.LayerNorm.bias": torch.zeros(32),
            "alpha_t2i": torch.tensor([0.7 + 0.2 * i]),
        }
        fusion[(s, b, i)] = (f, t)

    def linear(x, sd, key):
        return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias"))

    def mha(q, k, v, n_heads, mask=None):
        B, Lq, D = q.shape
        d = D // n_heads
        split = lambda x: x.view(B, -1, n_heads, d).transpose(1, 2)
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
        if mask is not None:
            scores = scores + mask
        return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, Lq, D)

    def text_layer(h, i, mask, image=None, t2i=None, last_norm=True):
        p = f"encoder.layer.{i}."
        ctx = mha(linear(h, text_sd, p + "attention.self.query"), linear(h, text_sd, p + "attention.self.key"),
                  linear(h, text_sd, p + "attention.self.value"), 4, mask)
        a = linear(ctx, text_sd, p + "attention.output.dense")
        if t2i is not None:
            c = mha(linear(a, t2i, "crossattention_t2i.self.query"), linear(image, t2i, "crossattention_t2i.self.key"),
                    linear(image, t2i, "crossattention_t2i.self.value"), 4)
            a = a + t2i["alpha_t2i"] * linear(c, t2i, "crossattention_t2i.output.dense")
        h = F.layer_norm(a + h, (32,), text_sd[p + "attention.output.LayerNorm.weight"], text_sd[p + "attention.output.LayerNorm.bias"], 1e-5)
        y = linear(F.gelu(linear(h, text_sd, p + "intermediate.dense")), text_sd, p + "output.dense") + h
        if last_norm:
            y = F.layer_norm(y, (32,), text_sd[p + "output.LayerNorm.weight"], text_sd[p + "output.LayerNorm.bias"], 1e-5)
        return y

    def swin_block(x, H, W, s, b, text_h=None, text_mask=None, i2t=None):
        """HF SwinLayer's computation, with FIBER's i2t inside the window attention (per window)."""
        blk = swin.encoder.layers[s].blocks[b]
        blk.set_shift_and_window_size((H, W))
        B, _, C = x.shape
        h = blk.layernorm_before(x).view(B, H, W, C)
        h, pad = blk.maybe_pad(h, H, W)
        Hp, Wp = h.shape[1], h.shape[2]
        ws = blk.window_size
        windows = window_partition(blk.cyclic_shift(h), ws).view(-1, ws * ws, C)
        S = blk.attention(windows, blk.get_attn_mask(Hp, Wp, dtype=x.dtype, device=x.device))[0]
        if i2t is not None:
            n_windows = S.shape[0] // B
            T = text_h.repeat_interleave(n_windows, 0)
            M = text_mask.repeat_interleave(n_windows, 0)
            q_in = F.layer_norm(S, (C,), i2t["norm_i2t_i.weight"], i2t["norm_i2t_i.bias"], 1e-5)
            kv = linear(T, i2t, "qkv_text_i2t")
            Y = linear(mha(linear(q_in, i2t, "qkv_i2t"), kv[..., :C], kv[..., C:], heads[s], M), i2t, "proj_i2t")
            S = S + i2t["alpha_i2t"] * Y
        S = blk.cyclic_shift(window_reverse(S.view(-1, ws, ws, C), ws, Hp, Wp), reverse=True)[:, :H, :W, :]
        x = x + S.reshape(B, H * W, C)
        return x + blk.mlp(blk.layernorm_after(x))

    pixels = torch.randn(2, 3, 32, 32, generator=g)
    ids = torch.full((2, 7), 1, dtype=torch.int64)
    mask = torch.zeros((2, 7), dtype=torch.int64)
    for row, n in enumerate([7, 4]):
        ids[row, :n] = torch.randint(5, 99, (n,), generator=g)
        ids[row, 0], ids[row, n - 1] = 0, 2
        mask[row, :n] = 1
    add_mask = ((1 - mask) * -10000.0).float()[:, None, None, :]

    with torch.no_grad():
        x, (H, W) = swin.embeddings(pixels)
        x = swin_block(x, H, W, 0, 0)
        x = swin_block(x, H, W, 0, 1)
        x = swin.encoder.layers[0].downsample(x, (H, W))
        H, W = (H + 1) // 2, (W + 1) // 2
        x = swin_block(x, H, W, 1, 0)  # image prefix ends here (stage 1, before block 1)
        t = text.embeddings(input_ids=ids)
        t = text_layer(t, 0, add_mask)  # text prefix: layer 0
        image_prefix, text_prefix, grid = x, t, (H, W)
        expected = {}
        for k, (s, b, i) in enumerate(pairs):
            if s == 2 and pairs[k - 1][0] == 1:
                x = swin.encoder.layers[1].downsample(x, (H, W))
                H, W = (H + 1) // 2, (W + 1) // 2
            f, tt = fusion[(s, b, i)]
            new_x = swin_block(x, H, W, s, b, t, add_mask, f)
            new_t = text_layer(t, i, add_mask, x, tt, last_norm=(k != len(pairs) - 1))
            x, t = new_x, new_t
            if k == 0:
                expected["pair0_image"], expected["pair0_text"] = x.clone(), t.clone()
        expected["fused_image"], expected["fused_text"] = x, t
        # dual: image-only with the final norm; text-only through every layer with LNs
        x, (H, W) = image_prefix, grid
        x = swin_block(x, H, W, 1, 1)
        x = swin.encoder.layers[1].downsample(x, (H, W))
        H, W = (H + 1) // 2, (W + 1) // 2
        x = swin_block(swin_block(x, H, W, 2, 0), H, W, 2, 1)
        expected["dual_image"] = swin.layernorm(x)
        t = text_prefix
        for i in range(1, 4):
            t = text_layer(t, i, add_mask)
        expected["dual_text"] = t
        expected["prefix_image"], expected["prefix_text"] = image_prefix, text_prefix

    # The original coarse checkpoint layout (docs/model.md §6.2).
    sd = {}
    for k, v in swin_to_original(swin_sd).items():
        sd["vit_model." + k] = v
    for k, v in text_sd.items():
        sd["text_transformer." + k] = v
    for i in range(4):
        sd[f"text_transformer.encoder.layer.{i}.alpha_t2i"] = torch.zeros(1)
    for (s, b, i), (f, tt) in fusion.items():
        for k, v in f.items():
            sd[f"vit_model.layers.{s}.blocks.{b}.attn.{k}"] = v
        for k, v in tt.items():
            sd[f"text_transformer.encoder.layer.{i}.{k}"] = v
    sd["vit_model.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 4, 4)
    sd["vit_model.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.int64)
    sd["text_transformer.embeddings.position_ids"] = torch.arange(24)[None]
    sd["itm_score.fc.weight"] = rnd(2, 64)
    sd["itm_score.fc.bias"] = rnd(2)
    sd["rank_output.weight"] = sd["itm_score.fc.weight"][1:].clone() + 0.25
    sd["rank_output.bias"] = sd["itm_score.fc.bias"][1:].clone()
    sd["temp"] = torch.tensor(0.07)
    sd["image_queue"] = rnd(32, 8)
    sd["text_queue"] = rnd(32, 8)
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.int64)
    torch.save({"state_dict": sd, "epoch": 1}, os.path.join(out, "fiber_tiny.ckpt"))
    # The sizes in the project's config format (what `cargo xtask convert` writes), because head
    # counts cannot be read from tensor shapes.
    config = {
        "swin": {"image_size": 32, "patch_size": 4, "num_channels": 3, "embed_dim": 16, "depths": [2, 2, 2], "num_heads": heads,
                 "window_size": 2, "mlp_ratio": 2.0, "qkv_bias": True, "layer_norm_eps": 1e-5, "hidden_dropout_prob": 0.0,
                 "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0, "hidden_act": "gelu"},
        "roberta": {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 48,
                    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                    "max_position_embeddings": 24, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1,
                    "initializer_range": 0.02},
        "num_fuse_block": 3, "fusion_version": "v1", "original_fused_quirks": True, "initializer_range": 0.02,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file({"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}, os.path.join(out, "input.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))


def data_samples():
    """Small samples of the real dataset formats, written out literally (a few records each,
    with deliberate problems), and tiny images for them: one corrupt, one missing."""
    from PIL import Image

    root = fresh_dir("data")

    def image(path, colour):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (12, 8), colour).save(path)

    # Karpathy (COCO): 3 good images; a caption that is empty; a path leaving the folder;
    # a record without `sentences`; an unknown split; a corrupt and a missing image file.
    k = os.path.join(root, "karpathy")
    image(os.path.join(k, "val2014", "COCO_val2014_000000000001.jpg"), (200, 30, 30))
    image(os.path.join(k, "val2014", "COCO_val2014_000000000002.jpg"), (30, 200, 30))
    image(os.path.join(k, "train2014", "COCO_train2014_000000000003.jpg"), (30, 30, 200))
    with open(os.path.join(k, "train2014", "COCO_train2014_000000000004.jpg"), "w") as f:
        f.write("not a jpeg")
    with open(os.path.join(k, "dataset_coco.json"), "w") as f:
        f.write("""{"dataset": "coco", "images": [
 {"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg", "imgid": 0, "cocoid": 1, "split": "test",
  "sentences": [{"raw": "A red square.", "tokens": ["a", "red", "square"]}, {"raw": "  ", "tokens": []}]},
 {"filepath": "val2014", "filename": "COCO_val2014_000000000002.jpg", "imgid": 1, "cocoid": 2, "split": "val",
  "sentences": [{"raw": "A green square.", "tokens": ["a", "green", "square"]}]},
 {"filepath": "train2014", "filename": "COCO_train2014_000000000003.jpg", "imgid": 2, "cocoid": 3, "split": "restval",
  "sentences": [{"raw": "A blue square.", "tokens": []}, {"raw": "Blue.", "tokens": []}]},
 {"filepath": "train2014", "filename": "COCO_train2014_000000000004.jpg", "imgid": 3, "cocoid": 4, "split": "train",
  "sentences": [{"raw": "A corrupt file.", "tokens": []}]},
 {"filepath": "train2014", "filename": "COCO_train2014_000000000005.jpg", "imgid": 4, "cocoid": 5, "split": "train",
  "sentences": [{"raw": "A missing file.", "tokens": []}]},
 {"filepath": "..", "filename": "outside.jpg", "imgid": 5, "cocoid": 6, "split": "train", "sentences": [{"raw": "Escapes.", "tokens": []}]},
 {"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg", "imgid": 6, "split": "val"},
 {"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg", "imgid": 7, "split": "holdout", "sentences": []}
]}
""")

    # COCO captions: 2 images, 3 captions, one caption for an unknown image, one empty.
    c = os.path.join(root, "coco-captions")
    image(os.path.join(c, "val2017", "000000000011.jpg"), (120, 120, 20))
    image(os.path.join(c, "val2017", "000000000012.jpg"), (20, 120, 120))
    os.makedirs(os.path.join(c, "annotations"), exist_ok=True)
    with open(os.path.join(c, "annotations", "captions_val2017.json"), "w") as f:
        f.write("""{"info": {}, "images": [{"id": 11, "file_name": "000000000011.jpg", "height": 8, "width": 12},
 {"id": 12, "file_name": "000000000012.jpg", "height": 8, "width": 12}],
 "annotations": [{"image_id": 11, "id": 1, "caption": "A yellow patch."}, {"image_id": 12, "id": 2, "caption": "A teal patch."},
 {"image_id": 12, "id": 3, "caption": "Teal, again. "}, {"image_id": 99, "id": 4, "caption": "No such image."},
 {"image_id": 11, "id": 5, "caption": ""}]}
""")

    # NLVR2: JSONL, 3 good lines (one training-style with a directory), a malformed line and a bad label.
    n = os.path.join(root, "nlvr2")
    for name, colour in [("dev-850-0-img0", (0, 0, 0)), ("dev-850-0-img1", (255, 255, 255)), ("dev-851-1-img0", (9, 9, 9)), ("dev-851-1-img1", (99, 99, 99))]:
        image(os.path.join(n, "images", "dev", name + ".png"), colour)
    with open(os.path.join(n, "dev.json"), "w") as f:
        f.write('{"identifier": "dev-850-0-0", "sentence": "The left image is black.", "label": "True"}\n')
        f.write('{"identifier": "dev-850-0-1", "sentence": "Both images are white.", "label": "False"}\n')
        f.write('{"identifier": "dev-851-1-0", "sentence": "One image is grey", "label": "True"\n')
        f.write('{"identifier": "dev-851-1-1", "sentence": "Two grey images.", "label": "Maybe"}\n')
        f.write('{"identifier": "dev-851-1-2", "sentence": "The images differ.", "label": "True"}\n')

    # VQAv2: 5 questions on 2 images with 10 answers each; one question without annotation and
    # one empty question.
    v = os.path.join(root, "vqa")
    image(os.path.join(v, "val2014", "COCO_val2014_000000000001.jpg"), (250, 0, 0))
    image(os.path.join(v, "val2014", "COCO_val2014_000000000002.jpg"), (0, 0, 250))
    with open(os.path.join(v, "v2_OpenEnded_mscoco_val2014_questions.json"), "w") as f:
        f.write("""{"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "questions": [
 {"image_id": 1, "question": "What color is the square?", "question_id": 10},
 {"image_id": 1, "question": "How many squares are there?", "question_id": 11},
 {"image_id": 2, "question": "Is it blue?", "question_id": 20},
 {"image_id": 2, "question": "Is this question annotated?", "question_id": 21},
 {"image_id": 2, "question": " ", "question_id": 22}]}
""")

    def answers(xs):
        return ", ".join('{"answer": "%s", "answer_confidence": "yes", "answer_id": %d}' % (a, i + 1) for i, a in enumerate(xs))

    with open(os.path.join(v, "v2_mscoco_val2014_annotations.json"), "w") as f:
        f.write("""{"annotations": [
 {"question_id": 10, "image_id": 1, "question_type": "what color is the", "answer_type": "other", "multiple_choice_answer": "red",
  "answers": [%s]},
 {"question_id": 11, "image_id": 1, "question_type": "how many", "answer_type": "number", "multiple_choice_answer": "one",
  "answers": [%s]},
 {"question_id": 20, "image_id": 2, "question_type": "is it", "answer_type": "yes/no", "multiple_choice_answer": "yes",
  "answers": [%s]},
 {"question_id": 22, "image_id": 2, "question_type": "none", "answer_type": "other", "multiple_choice_answer": "no",
  "answers": [%s]}]}
""" % (answers(["red"] * 7 + ["Red.", "dark red", "maroon"]), answers(["1"] * 3 + ["one"] * 2 + ["2", "two", "1", "1", "1"]),
       answers(["yes"] * 9 + ["Yes!"]), answers(["no"] * 10)))


    # MDETR grounding: one image with two captions (one box each way plus a shared box), a missing
    # image, an empty caption, a path leaving the folder, a record without `height`; boxes outside
    # the image, of zero area, with a span outside the caption, for an unknown image, without
    # `bbox`, and a crowd box (skipped silently).
    m = os.path.join(root, "mdetr")
    image(os.path.join(m, "images", "2354786.jpg"), (200, 200, 200))
    os.makedirs(os.path.join(m, "mdetr_annotations"), exist_ok=True)
    with open(os.path.join(m, "mdetr_annotations", "final_mixed_train.json"), "w") as f:
        f.write("""{"info": {}, "licenses": [], "categories": [{"id": 1, "name": "object"}], "images": [
 {"id": 0, "file_name": "images/2354786.jpg", "height": 8, "width": 12, "caption": "A red square next to a blue circle.",
  "dataset_name": "gqa", "tokens_negative": [], "original_img_id": 2354786},
 {"id": 1, "file_name": "images/2354786.jpg", "height": 8, "width": 12, "caption": "the blue circle", "dataset_name": "gqa"},
 {"id": 2, "file_name": "images/2354786.jpg", "height": 8, "width": 12, "caption": " "},
 {"id": 3, "file_name": "../outside.jpg", "height": 8, "width": 12, "caption": "escapes"},
 {"id": 4, "file_name": "images/2354786.jpg", "width": 12, "caption": "no height"},
 {"id": 5, "file_name": "images/2354787.jpg", "height": 8, "width": 12, "caption": "a missing picture"}],
 "annotations": [
 {"id": 1, "image_id": 0, "bbox": [0, 0, 4, 4], "tokens_positive": [[2, 12]], "category_id": 1, "iscrowd": 0, "area": 16},
 {"id": 2, "image_id": 0, "bbox": [6, 2, 5, 5], "tokens_positive": [[23, 34]], "category_id": 1, "iscrowd": 0, "area": 25},
 {"id": 3, "image_id": 1, "bbox": [6, 2, 5, 5], "tokens_positive": [[4, 15]], "category_id": 1, "iscrowd": 0, "area": 25},
 {"id": 4, "image_id": 1, "bbox": [10, 2, 5, 5], "tokens_positive": [[0, 3]], "category_id": 1, "iscrowd": 0, "area": 25},
 {"id": 5, "image_id": 0, "bbox": [1, 1, 0, 3], "tokens_positive": [[0, 1]], "category_id": 1, "iscrowd": 0, "area": 0},
 {"id": 6, "image_id": 0, "bbox": [1, 1, 2, 2], "tokens_positive": [[30, 60]], "category_id": 1, "iscrowd": 0, "area": 4},
 {"id": 7, "image_id": 9, "bbox": [1, 1, 2, 2], "tokens_positive": [[0, 1]], "category_id": 1, "iscrowd": 0, "area": 4},
 {"id": 8, "image_id": 0, "tokens_positive": [[0, 1]], "category_id": 1, "iscrowd": 0},
 {"id": 9, "image_id": 0, "bbox": [0, 0, 12, 8], "tokens_positive": [[0, 1]], "category_id": 1, "iscrowd": 1, "area": 96},
 {"id": 10, "image_id": 5, "bbox": [0, 0, 3, 3], "tokens_positive": [[2, 9]], "category_id": 1, "iscrowd": 0, "area": 9}]}
""")

    # COCO detection: two images (one corrupt), a record without `file_name`; categories with
    # names to clean and one without a name; boxes outside the image, of an unknown category, for
    # an unknown image, and a crowd box (skipped silently).
    d = os.path.join(root, "coco-det")
    image(os.path.join(d, "val2017", "000000000021.jpg"), (10, 100, 200))
    with open(os.path.join(d, "val2017", "000000000022.jpg"), "w") as f:
        f.write("truncated")
    os.makedirs(os.path.join(d, "annotations"), exist_ok=True)
    with open(os.path.join(d, "annotations", "instances_val2017.json"), "w") as f:
        f.write("""{"info": {}, "categories": [{"id": 1, "name": "person", "supercategory": "person"},
 {"id": 2, "name": "Traffic_Light"}, {"id": 3, "name": "bow (weapon)"}, {"id": 4, "name": " "}],
 "images": [{"id": 21, "file_name": "000000000021.jpg", "height": 8, "width": 12},
 {"id": 22, "file_name": "000000000022.jpg", "height": 8, "width": 12}, {"id": 23, "height": 8, "width": 12}],
 "annotations": [
 {"id": 1, "image_id": 21, "bbox": [0, 0, 5, 5], "category_id": 1, "iscrowd": 0, "area": 25},
 {"id": 2, "image_id": 21, "bbox": [5, 2, 6, 6], "category_id": 2, "iscrowd": 0, "area": 36},
 {"id": 3, "image_id": 22, "bbox": [1, 1, 3, 3], "category_id": 3, "iscrowd": 0, "area": 9},
 {"id": 4, "image_id": 21, "bbox": [0, 0, 12, 8], "category_id": 1, "iscrowd": 1, "area": 96},
 {"id": 5, "image_id": 21, "bbox": [0, 0, 13, 2], "category_id": 1, "iscrowd": 0, "area": 26},
 {"id": 6, "image_id": 21, "bbox": [0, 0, 2, 2], "category_id": 99, "iscrowd": 0, "area": 4},
 {"id": 7, "image_id": 77, "bbox": [0, 0, 2, 2], "category_id": 1, "iscrowd": 0, "area": 4}]}
""")

def hf_init_fixtures():
    """A tiny HuggingFace RoBERTa folder whose vocabulary holds the json-form tokenizer (copied
    in as tokenizer.json), to start FIBER from HuggingFace folders with `--init` together with
    the tiny Swin folder."""
    from transformers import RobertaConfig, RobertaModel

    tokenizer = os.path.join(ROOT, "tokenizer", "json-form", "tokenizer.json")
    with open(tokenizer) as f:
        vocab = len(json.load(f)["model"]["vocab"])
    config = RobertaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, hidden_act="gelu",
    )
    model = randomise(RobertaModel(config, add_pooling_layer=True), seed=5).eval()
    out = fresh_dir("hf-init", "roberta")
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer, os.path.join(out, "tokenizer.json"))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["hf-init"]:
        hf_init_fixtures()
        sys.exit(0)
    torch.manual_seed(0)
    roberta_fixtures()
    tokenizer_fixtures()
    swin_fixtures()
    image_fixtures()
    fusion_fixtures()
    data_samples()
    hf_init_fixtures()
    print("fixtures written under", os.path.normpath(ROOT))
