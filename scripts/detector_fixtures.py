#!/usr/bin/env python3
"""Builds the grounding-detector parity fixtures under fixtures/detector/tiny: a tiny FIBER
fine-grained model written from docs/model.md §5 (not from the Rust code), its weights in the
original checkpoint layout (`torch.save({"model": {"module." + key: tensor}})` with the buffers
the original stores), inputs, and the reference outputs of `fiber-forward --mode detect`.

The reference is plain PyTorch: the detection Swin (windows never shrink; every block pads to
whole windows, builds the shift mask on the padded grid and crops), FIBER's v2 image-to-text and
text-to-image fusion computed per window as the original does, per-stage LayerNorms, the FPN,
the DyHead tower with torchvision's `deform_conv2d` (DCNv2 with `mask=`) including the original's
reuse of level l's offsets on level l+1 (a per-image prefix of the offset buffer), and the
region-token head.

    pip install torch torchvision safetensors
    python3 scripts/detector_fixtures.py
"""
import json
import math
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import deform_conv2d

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

# The tiny configuration (the Rust test builds the same one from config.json).
PATCH, EMBED, DEPTHS, HEADS, WINDOW, MLP_RATIO = 4, 8, [1, 1, 2, 1], [1, 2, 2, 4], 4, 2.0
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS, TEXT_FFN, VOCAB, MAX_POS = 16, 4, 2, 32, 99, 24
NUM_FUSE = 3
CHANNELS, GROUPS, REDUCTION, TOWER_BLOCKS, CLASSES = 16, 4, 4, 2, 3
PRIOR = -math.log((1 - 0.01) / 0.01)
DIMS = [EMBED << s for s in range(len(DEPTHS))]


def fused_pairs():
    blocks = [(s, b) for s, d in enumerate(DEPTHS) for b in range(d)]
    return [(s, b, TEXT_LAYERS - NUM_FUSE + k) for k, (s, b) in enumerate(blocks[-NUM_FUSE:])]


def make_weights(g):
    """Every parameter in the original fine-grained layout (without `module.`), randomised."""
    rnd = lambda *shape, s=1.0: torch.randn(*shape, generator=g) * s
    lin = lambda o, i: (rnd(o, i, s=1.2 / math.sqrt(i)), rnd(o, s=0.1))
    ln = lambda d: (1 + rnd(d, s=0.2), rnd(d, s=0.1))
    sd = {}

    def put_linear(key, o, i, bias=True):
        w, b = lin(o, i)
        sd[key + ".weight"] = w
        if bias:
            sd[key + ".bias"] = b

    def put_ln(key, d):
        sd[key + ".weight"], sd[key + ".bias"] = ln(d)

    body = "fusion_backbone.backbone.body."
    sd[body + "patch_embed.proj.weight"] = rnd(EMBED, 3, PATCH, PATCH, s=0.3)
    sd[body + "patch_embed.proj.bias"] = rnd(EMBED, s=0.1)
    put_ln(body + "patch_embed.norm", EMBED)
    pairs = fused_pairs()
    for s, depth in enumerate(DEPTHS):
        C = DIMS[s]
        for b in range(depth):
            p = f"{body}layers.{s}.blocks.{b}."
            put_ln(p + "norm1", C)
            put_ln(p + "norm2", C)
            sd[p + "attn.relative_position_bias_table"] = rnd((2 * WINDOW - 1) ** 2, HEADS[s], s=0.5)
            put_linear(p + "attn.qkv", 3 * C, C)
            put_linear(p + "attn.proj", C, C)
            put_linear(p + "mlp.fc1", int(C * MLP_RATIO), C)
            put_linear(p + "mlp.fc2", C, int(C * MLP_RATIO))
            if any(ps == s and pb == b for ps, pb, _ in pairs):
                put_linear(p + "attn.qkv_text_i2t", 2 * C, TEXT_WIDTH)
                put_linear(p + "attn.qkv_i2t", C, C)
                put_linear(p + "attn.proj_i2t", C, C)
                sd[p + "attn.alpha_i2t"] = torch.tensor([0.6 + 0.3 * s + 0.1 * b])
        if s + 1 < len(DEPTHS):
            sd[f"{body}layers.{s}.downsample.reduction.weight"] = rnd(2 * C, 4 * C, s=1.2 / math.sqrt(4 * C))
            put_ln(f"{body}layers.{s}.downsample.norm", 4 * C)
    for s in range(1, len(DEPTHS)):
        put_ln(f"{body}norm{s}", DIMS[s])

    text = "fusion_backbone.language_backbone.body.model."
    sd[text + "embeddings.word_embeddings.weight"] = rnd(VOCAB, TEXT_WIDTH, s=0.5)
    sd[text + "embeddings.position_embeddings.weight"] = rnd(MAX_POS, TEXT_WIDTH, s=0.5)
    sd[text + "embeddings.token_type_embeddings.weight"] = rnd(1, TEXT_WIDTH, s=0.5)
    put_ln(text + "embeddings.LayerNorm", TEXT_WIDTH)
    for i in range(TEXT_LAYERS):
        p = f"{text}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            put_linear(p + f"attention.self.{n}", TEXT_WIDTH, TEXT_WIDTH)
        put_linear(p + "attention.output.dense", TEXT_WIDTH, TEXT_WIDTH)
        put_ln(p + "attention.output.LayerNorm", TEXT_WIDTH)
        put_linear(p + "intermediate.dense", TEXT_FFN, TEXT_WIDTH)
        put_linear(p + "output.dense", TEXT_WIDTH, TEXT_FFN)
        put_ln(p + "output.LayerNorm", TEXT_WIDTH)
    for s, b, i in pairs:
        p = f"{text}encoder.layer.{i}."
        put_linear(p + "crossattention_t2i.self.query", TEXT_WIDTH, TEXT_WIDTH)
        put_linear(p + "crossattention_t2i.self.key", TEXT_WIDTH, DIMS[s])
        put_linear(p + "crossattention_t2i.self.value", TEXT_WIDTH, DIMS[s])
        put_linear(p + "crossattention_t2i.output.dense", TEXT_WIDTH, TEXT_WIDTH)
        sd[p + "alpha_t2i"] = torch.tensor([0.5 + 0.2 * i])

    fpn = "fusion_backbone.backbone.fpn."
    conv = lambda o, i, k: rnd(o, i, k, k, s=1.2 / math.sqrt(i * k * k))
    for idx, s in enumerate(range(1, len(DEPTHS)), start=2):
        sd[fpn + f"fpn_inner{idx}.weight"] = conv(CHANNELS, DIMS[s], 1)
        sd[fpn + f"fpn_inner{idx}.bias"] = rnd(CHANNELS, s=0.1)
        sd[fpn + f"fpn_layer{idx}.weight"] = conv(CHANNELS, CHANNELS, 3)
        sd[fpn + f"fpn_layer{idx}.bias"] = rnd(CHANNELS, s=0.1)
    for n in ("p6", "p7"):
        sd[fpn + f"top_blocks.{n}.weight"] = conv(CHANNELS, CHANNELS, 3)
        sd[fpn + f"top_blocks.{n}.bias"] = rnd(CHANNELS, s=0.1)

    head = "rpn.head."
    for t in range(TOWER_BLOCKS):
        p = f"{head}dyhead_tower.{t}."
        for k in range(3):
            sd[p + f"DyConv.{k}.conv.weight"] = conv(CHANNELS, CHANNELS, 3)
            sd[p + f"DyConv.{k}.conv.bias"] = rnd(CHANNELS, s=0.1)
            put_ln(p + f"DyConv.{k}.bn", CHANNELS)
        sd[p + "AttnConv.1.weight"] = conv(1, CHANNELS, 1) * 2
        sd[p + "AttnConv.1.bias"] = rnd(1, s=0.5) + 1.0
        put_linear(p + "relu.fc.0", CHANNELS // REDUCTION, CHANNELS)
        put_linear(p + "relu.fc.2", 4 * CHANNELS, CHANNELS // REDUCTION)
        # Offsets of a few pixels, so that sampling falls between pixels and off the map.
        sd[p + "offset.weight"] = conv(27, CHANNELS, 3) * 2
        sd[p + "offset.bias"] = rnd(27, s=0.5)
    sd[head + "cls_logits.weight"] = conv(CLASSES, CHANNELS, 1)
    sd[head + "cls_logits.bias"] = torch.full((CLASSES,), PRIOR)
    sd[head + "bbox_pred.weight"] = conv(4, CHANNELS, 1)
    sd[head + "bbox_pred.bias"] = rnd(4, s=0.1)
    sd[head + "centerness.weight"] = conv(1, CHANNELS, 1)
    sd[head + "centerness.bias"] = rnd(1, s=0.1)
    put_linear(head + "dot_product_projection_text", CHANNELS, TEXT_WIDTH)
    sd[head + "log_scale"] = torch.tensor([0.3])
    sd[head + "bias_lang"] = rnd(TEXT_WIDTH, s=0.5)
    sd[head + "bias0"] = torch.tensor([PRIOR])
    for l in range(5):
        sd[head + f"scales.{l}.scale"] = torch.tensor([0.8 + 0.1 * l])
    return sd


# ----------------------------------------------------------------------------- backbone


def linear(x, sd, key):
    return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias"))


def layer_norm(x, sd, key):
    return F.layer_norm(x, (x.shape[-1],), sd[key + ".weight"], sd[key + ".bias"], 1e-5)


def mha(q, k, v, n_heads, mask=None):
    B, Lq, D = q.shape
    d = D // n_heads
    split = lambda x: x.view(B, -1, n_heads, d).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, Lq, D)


def relative_position_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shift_mask(Hp, Wp, ws, shift):
    img = torch.zeros(1, Hp, Wp, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, Hp // ws, ws, Wp // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def swin_block(sd, x, H, W, s, b, text=None, text_mask=None):
    """The detection Swin block (window never shrinks), with FIBER's v2 i2t per window."""
    p = f"fusion_backbone.backbone.body.layers.{s}.blocks.{b}."
    B, _, C = x.shape
    ws, shift = WINDOW, (WINDOW // 2 if b % 2 == 1 else 0)
    h = layer_norm(x, sd, p + "norm1").view(B, H, W, C)
    pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
    h = F.pad(h, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = H + pad_b, W + pad_r
    if shift:
        h = torch.roll(h, (-shift, -shift), (1, 2))
    win = h.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    nW = win.shape[0] // B
    heads = HEADS[s]
    qkv = linear(win, sd, p + "attn.qkv").view(-1, ws * ws, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[p + "attn.relative_position_bias_table"]
    bias = table[relative_position_index(ws).view(-1)].view(ws * ws, ws * ws, -1).permute(2, 0, 1)
    attn = attn + bias[None]
    if shift:
        m = shift_mask(Hp, Wp, ws, shift)
        attn = attn.view(B, nW, heads, ws * ws, ws * ws) + m[None, :, None]
        attn = attn.view(-1, heads, ws * ws, ws * ws)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, C)
    out = linear(out, sd, p + "attn.proj")
    if text is not None:
        T = text.repeat_interleave(nW, 0)
        M = text_mask.repeat_interleave(nW, 0)
        kv = linear(T, sd, p + "attn.qkv_text_i2t")
        y = mha(linear(out, sd, p + "attn.qkv_i2t"), kv[..., :C], kv[..., C:], heads, M)
        out = out + sd[p + "attn.alpha_i2t"] * linear(y, sd, p + "attn.proj_i2t")
    out = out.view(B, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    out = out[:, :H, :W, :].reshape(B, H * W, C)
    x = x + out
    return x + linear(F.gelu(linear(layer_norm(x, sd, p + "norm2"), sd, p + "mlp.fc1")), sd, p + "mlp.fc2")


def patch_merge(sd, x, H, W, s):
    p = f"fusion_backbone.backbone.body.layers.{s}.downsample."
    B, _, C = x.shape
    x = x.view(B, H, W, C)
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    H2, W2 = x.shape[1], x.shape[2]
    x = x.view(B, H2 * W2, 4 * C)
    return F.linear(layer_norm(x, sd, p + "norm"), sd[p + "reduction.weight"]), H2, W2


def text_embeddings(sd, ids):
    p = "fusion_backbone.language_backbone.body.model.embeddings."
    pad = 1
    mask = ids.ne(pad).int()
    positions = torch.cumsum(mask, 1) * mask + pad
    e = sd[p + "word_embeddings.weight"][ids] + sd[p + "position_embeddings.weight"][positions]
    e = e + sd[p + "token_type_embeddings.weight"][0]
    return layer_norm(e, sd, p + "LayerNorm")


def text_layer(sd, h, i, mask, image=None):
    p = f"fusion_backbone.language_backbone.body.model.encoder.layer.{i}."
    ctx = mha(linear(h, sd, p + "attention.self.query"), linear(h, sd, p + "attention.self.key"),
              linear(h, sd, p + "attention.self.value"), TEXT_HEADS, mask)
    a = linear(ctx, sd, p + "attention.output.dense")
    if image is not None:
        c = mha(linear(a, sd, p + "crossattention_t2i.self.query"), linear(image, sd, p + "crossattention_t2i.self.key"),
                linear(image, sd, p + "crossattention_t2i.self.value"), TEXT_HEADS)
        a = a + sd[p + "alpha_t2i"] * linear(c, sd, p + "crossattention_t2i.output.dense")
    h = layer_norm(a + h, sd, p + "attention.output.LayerNorm")
    y = linear(F.gelu(linear(h, sd, p + "intermediate.dense")), sd, p + "output.dense") + h
    return layer_norm(y, sd, p + "output.LayerNorm")


def backbone(sd, pixels, ids, mask, unimodal=False):
    """C3, C4, C5 (NCHW, after norm1..3) and the last text layer; `unimodal` runs every block
    and layer without fusion (what every gate at 0 must give)."""
    body = "fusion_backbone.backbone.body."
    add_mask = ((1 - mask) * -10000.0).float()[:, None, None, :]
    pairs = {(s, b): i for s, b, i in fused_pairs()}
    first_layer = TEXT_LAYERS - NUM_FUSE
    x = F.conv2d(pixels, sd[body + "patch_embed.proj.weight"], sd[body + "patch_embed.proj.bias"], stride=PATCH)
    B, C, H, W = x.shape
    x = layer_norm(x.flatten(2).transpose(1, 2), sd, body + "patch_embed.norm")
    t = text_embeddings(sd, ids)
    for i in range(first_layer):
        t = text_layer(sd, t, i, add_mask)
    maps = []
    for s, depth in enumerate(DEPTHS):
        if s > 0:
            x, H, W = patch_merge(sd, x, H, W, s - 1)
        for b in range(depth):
            if (s, b) in pairs:
                i = pairs[(s, b)]
                fuse = not unimodal
                new_x = swin_block(sd, x, H, W, s, b, t if fuse else None, add_mask)
                t = text_layer(sd, t, i, add_mask, x if fuse else None)
                x = new_x
            else:
                x = swin_block(sd, x, H, W, s, b)
        if s > 0:
            y = layer_norm(x, sd, f"{body}norm{s}")
            maps.append(y.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous())
    return maps, t


# ----------------------------------------------------------------------------- FPN, DyHead, head


def fpn(sd, maps):
    p = "fusion_backbone.backbone.fpn."
    conv = lambda x, k, stride=1: F.conv2d(x, sd[p + k + ".weight"], sd[p + k + ".bias"], stride=stride,
                                          padding=sd[p + k + ".weight"].shape[-1] // 2)
    n = len(maps)
    last = conv(maps[-1], f"fpn_inner{n + 1}")
    results = [conv(last, f"fpn_layer{n + 1}")]
    for i in range(n - 2, -1, -1):
        lateral = conv(maps[i], f"fpn_inner{i + 2}")
        last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
        results.insert(0, conv(last, f"fpn_layer{i + 2}"))
    p6 = conv(results[-1], "top_blocks.p6", 2)
    p7 = conv(F.relu(p6), "top_blocks.p7", 2)
    return results + [p6, p7]


def hard_sigmoid(x):
    return F.relu6(x + 3) / 6


def deform(sd, key, x, offset, mask, stride):
    """Modulated deformable conv + GroupNorm. The offsets may be laid out at a larger size
    (level l's): each image's buffer is read as a prefix at the output size, as the CUDA kernel does."""
    B = x.shape[0]
    Ho = (x.shape[2] + 2 - 3) // stride + 1
    Wo = (x.shape[3] + 2 - 3) // stride + 1
    if offset.shape[-2:] != (Ho, Wo):
        offset = torch.stack([offset[b].reshape(-1)[: 18 * Ho * Wo].view(18, Ho, Wo) for b in range(B)])
        mask = torch.stack([mask[b].reshape(-1)[: 9 * Ho * Wo].view(9, Ho, Wo) for b in range(B)])
    y = deform_conv2d(x, offset, sd[key + ".conv.weight"], sd[key + ".conv.bias"], stride=stride, padding=1, mask=mask)
    return F.group_norm(y, GROUPS, sd[key + ".bn.weight"], sd[key + ".bn.bias"], 1e-5)


def dyconv(sd, t, levels, reuse_offsets=True):
    p = f"rpn.head.dyhead_tower.{t}."
    offsets = []
    for f in levels:
        om = F.conv2d(f, sd[p + "offset.weight"], sd[p + "offset.bias"], padding=1)
        offsets.append((om[:, :18], om[:, 18:].sigmoid()))
    out = []
    for l, f in enumerate(levels):
        off, msk = offsets[l]
        temp = [deform(sd, p + "DyConv.1", f, off, msk, 1)]
        if l > 0:
            temp.append(deform(sd, p + "DyConv.2", levels[l - 1], off, msk, 2))
        if l < len(levels) - 1:
            o, m = (off, msk) if reuse_offsets else offsets[l + 1]
            up = deform(sd, p + "DyConv.0", levels[l + 1], o, m, 1)
            temp.append(F.interpolate(up, size=f.shape[-2:], mode="bilinear", align_corners=True))
        weights = [hard_sigmoid(F.relu(F.conv2d(F.adaptive_avg_pool2d(r, 1), sd[p + "AttnConv.1.weight"],
                                                sd[p + "AttnConv.1.bias"]))) for r in temp]
        mean = torch.mean(torch.stack([r * w for r, w in zip(temp, weights)]), 0)
        # DyReLU
        Bn, C = mean.shape[:2]
        y = F.adaptive_avg_pool2d(mean, 1).view(Bn, C)
        y = hard_sigmoid(linear(F.relu(linear(y, sd, p + "relu.fc.0")), sd, p + "relu.fc.2")).view(Bn, 4 * C, 1, 1)
        a1, b1, a2, b2 = torch.split(y, C, 1)
        a1, a2 = (a1 - 0.5) * 2 + 1.0, (a2 - 0.5) * 2
        b1, b2 = b1 - 0.5, b2 - 0.5
        out.append(torch.max(mean * a1 + b1, mean * a2 + b2))
    return out


def anchors(H, W, stride):
    lo, hi = -3.5 * stride, 4.5 * stride - 1
    ys, xs = torch.meshgrid(torch.arange(H) * stride, torch.arange(W) * stride, indexing="ij")
    xs, ys = xs.reshape(-1).float(), ys.reshape(-1).float()
    return torch.stack([xs + lo, ys + lo, xs + hi, ys + hi], 1)


def detector(sd, pixels, ids, mask, reuse_offsets=True):
    maps, text = backbone(sd, pixels, ids, mask)
    levels = fpn(sd, maps)
    out = {f"fpn.{l}": v for l, v in enumerate(levels)}
    tower = levels
    for t in range(TOWER_BLOCKS):
        tower = dyconv(sd, t, tower, reuse_offsets)
    h = "rpn.head."
    emb = F.normalize(text * mask[..., None].float(), p=2, dim=-1)
    proj = linear(emb / 2.0, sd, h + "dot_product_projection_text")
    bias = emb @ sd[h + "bias_lang"] + sd[h + "bias0"]
    for l, x in enumerate(tower):
        B, C, H, W = x.shape
        out[f"tower.{l}"] = x
        out[f"bbox_reg.{l}"] = F.conv2d(x, sd[h + "bbox_pred.weight"], sd[h + "bbox_pred.bias"]) * sd[h + f"scales.{l}.scale"]
        out[f"centerness.{l}"] = F.conv2d(x, sd[h + "centerness.weight"], sd[h + "centerness.bias"])
        q = x.flatten(2).transpose(1, 2)
        logits = q @ proj.transpose(1, 2) / sd[h + "log_scale"].exp() + bias[:, None, :]
        out[f"logits.{l}"] = logits.clamp(-50000, 50000)
        out[f"anchors.{l}"] = anchors(H, W, 8 << l)
    out["text_hidden"] = text
    return out, maps


def original_checkpoint(sd):
    """The layout `torch.save` gives an original fine-grained run: `module.` prefixes and the
    buffers the original stores (which a loader recomputes and skips)."""
    model = {"module." + k: v for k, v in sd.items()}
    body = "module.fusion_backbone.backbone.body."
    for s, depth in enumerate(DEPTHS):
        for b in range(depth):
            model[f"{body}layers.{s}.blocks.{b}.attn.relative_position_index"] = relative_position_index(WINDOW)
    model["module.fusion_backbone.language_backbone.body.model.embeddings.position_ids"] = torch.arange(MAX_POS)[None]
    for l in range(5):
        s = 8 << l
        model[f"module.rpn.anchor_generator.cell_anchors.{l}"] = torch.tensor([[-3.5 * s, -3.5 * s, 4.5 * s - 1, 4.5 * s - 1]])
    return {"model": model, "iteration": 10}


def config_json():
    return {
        "backbone": {
            "swin": {"image_size": 64, "patch_size": PATCH, "num_channels": 3, "embed_dim": EMBED, "depths": DEPTHS,
                     "num_heads": HEADS, "window_size": WINDOW, "mlp_ratio": MLP_RATIO, "qkv_bias": True,
                     "layer_norm_eps": 1e-5, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                     "drop_path_rate": 0.0, "hidden_act": "gelu", "clamp_window": False},
            "roberta": {"vocab_size": VOCAB, "hidden_size": TEXT_WIDTH, "num_hidden_layers": TEXT_LAYERS,
                        "num_attention_heads": TEXT_HEADS, "intermediate_size": TEXT_FFN, "hidden_act": "gelu",
                        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": MAX_POS,
                        "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "initializer_range": 0.02},
            "num_fuse_block": NUM_FUSE, "fusion_version": "v2",
        },
        "channels": CHANNELS, "num_dyhead_blocks": TOWER_BLOCKS, "group_norm_groups": GROUPS,
        "dyrelu_reduction": REDUCTION, "num_classes": CLASSES,
    }


def main():
    out = os.path.join(ROOT, "detector", "tiny")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    g = torch.Generator().manual_seed(41)
    sd = make_weights(g)
    torch.save(original_checkpoint(sd), os.path.join(out, "fiber_detector_tiny.pth"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(), f, indent=1)

    def ids_and_mask(lengths, L):
        ids = torch.full((len(lengths), L), 1, dtype=torch.int64)
        mask = torch.zeros((len(lengths), L), dtype=torch.int64)
        for row, n in enumerate(lengths):
            ids[row, :n] = torch.randint(5, VOCAB, (n,), generator=g)
            ids[row, 0], ids[row, n - 1] = 0, 2
            mask[row, :n] = 1
        return ids, mask

    cases = {
        # batch 2, the second caption padded; 64×96 gives odd maps from C5 on (2×3, P6 1×2)
        "batch2": (torch.randn(2, 3, 64, 96, generator=g), *ids_and_mask([7, 4], 7)),
        # batch 1 on the transposed size
        "batch1": (torch.randn(1, 3, 96, 64, generator=g), *ids_and_mask([6], 6)),
    }
    with torch.no_grad():
        for name, (pixels, ids, mask) in cases.items():
            expected, _ = detector(sd, pixels, ids, mask)
            save_file({"pixel_values": pixels, "input_ids": ids, "attention_mask": mask},
                      os.path.join(out, f"input_{name}.safetensors"))
            save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, f"expected_{name}.safetensors"))
        # The clean variant (offsets computed at each level's own resolution) and the unimodal
        # backbone (every fusion gate at 0) on the batch-2 input.
        pixels, ids, mask = cases["batch2"]
        clean, _ = detector(sd, pixels, ids, mask, reuse_offsets=False)
        save_file({f"tower.{l}": clean[f"tower.{l}"].contiguous() for l in range(5)},
                  os.path.join(out, "expected_batch2_clean_offsets.safetensors"))
        maps, text = backbone(sd, pixels, ids, mask, unimodal=True)
        unimodal = {f"c.{i}": m for i, m in enumerate(maps)}
        unimodal["text_hidden"] = text
        save_file({k: v.contiguous() for k, v in unimodal.items()}, os.path.join(out, "expected_batch2_unimodal.safetensors"))

    if True:
        # Bilinear upsampling with align_corners=True and its gradient (docs/model.md §5.8).
        x = torch.randn(2, 3, 3, 5, generator=g, requires_grad=True)
        y = F.interpolate(x, size=(6, 9), mode="bilinear", align_corners=True)
        w = torch.randn(y.shape, generator=g)
        (y * w).sum().backward()
        save_file({"x": x.detach(), "y": y.detach(), "weight": w, "grad": x.grad},
                  os.path.join(out, "upsample.safetensors"))
    print("detector fixtures written under", os.path.normpath(out))


if __name__ == "__main__":
    main()
