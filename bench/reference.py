#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench`: the coarse FIBER model (Swin + RoBERTa with gated
co-attention in the last fused pairs, the pre-training heads) written from docs/model.md
and docs/architecture.md (HuggingFace-style modules, no `transformers` needed), timed on the same
settings, inputs and measurements as the Rust suite, and printed as the same table.

The training step is computed as the original FIBER code does: every forward starts from the
pixels and token ids — the dual-encoder forward for ITC, one fused forward over the 3·batch ITM
pairs (positive, hard-negative text, hard-negative image; negatives drawn from the in-batch ITC
similarities) and one fused forward of the masked text for MLM, then backward and AdamW.
`step_prefix_reuse` times the same step with each image's and text's uni-modal prefix computed
once and shared, as fiber-rs does, so the framework and the algorithm can be told apart.

Normally started by `cargo xtask bench --reference`, which writes the settings file:

    cargo xtask bench --preset base --backend cuda --precision bf16 --reference
    python3 bench/reference.py --config settings.json [--attention sdpa] [--json out.json]
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

MEASUREMENTS = ["step", "step_forward", "fused_inference", "dual_image", "dual_text", "step_prefix_reuse"]
UNITS = {"dual_image": "images", "dual_text": "texts"}


# ---------------------------------------------------------------------------------------------
# Attention


class Attention:
    """Scaled dot-product attention over heads, eager (matmul + softmax) or fused (SDPA)."""

    sdpa = False

    @staticmethod
    def split(x, heads):
        *lead, n, d = x.shape
        return x.view(*lead, n, heads, d // heads).transpose(-2, -3)

    @staticmethod
    def merge(x):
        *lead, h, n, d = x.shape
        return x.transpose(-2, -3).reshape(*lead, n, h * d)

    @classmethod
    def __call__(cls, q, k, v, heads, mask=None, dropout=0.0, training=False):
        q, k, v = cls.split(q, heads), cls.split(k, heads), cls.split(v, heads)
        if cls.sdpa:
            if mask is not None:
                mask = mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout if training else 0.0)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores + mask
            probs = F.dropout(scores.softmax(-1), dropout, training)
            out = probs @ v
        return cls.merge(out)


attend = Attention()


def drop_path(x, rate, training):
    if rate == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


# ---------------------------------------------------------------------------------------------
# Swin with image-to-text cross-attention (docs/model.md §1.1, §2.3)


class ImageToText(nn.Module):
    """`attn.*_i2t`: image tokens (the window self-attention output) query the text."""

    def __init__(self, dim, text_dim, heads, eps):
        super().__init__()
        self.heads = heads
        self.qkv_text_i2t = nn.Linear(text_dim, 2 * dim)
        self.qkv_i2t = nn.Linear(dim, dim)
        self.proj_i2t = nn.Linear(dim, dim)
        self.norm_i2t_i = nn.LayerNorm(dim, eps=eps)
        self.alpha_i2t = nn.Parameter(torch.zeros(1))

    def forward(self, s, text, text_mask):
        # As the original: per window, with the text repeated for every window.
        kv = self.qkv_text_i2t(text)
        k, v = kv.chunk(2, dim=-1)
        y = attend(self.qkv_i2t(self.norm_i2t_i(s)), k, v, self.heads, text_mask)
        return s + self.alpha_i2t * self.proj_i2t(y)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x, batch, shift_mask):
        """x: [batch·nW, N, C] → [batch·nW, N, C]."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        mask = bias if shift_mask is None else bias[None] + shift_mask[:, None]  # [nW?, h, N, N]
        windows = x.shape[0] // batch
        lead = lambda t: t.view(batch, windows, n, -1)
        if mask.dim() == 3:
            mask = mask[None]
        out = attend(lead(self.query(x)), lead(self.key(x)), lead(self.value(x)), self.heads, mask)
        return self.proj(out.reshape(x.shape))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, resolution, shifted, mlp_ratio, eps, drop_path_rate, text_dim=None):
        super().__init__()
        if resolution <= window:
            window, shifted = resolution, False
        self.window, self.shift, self.resolution, self.drop_path_rate = window, (window // 2 if shifted else 0), resolution, drop_path_rate
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1, self.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)
        self.i2t = ImageToText(dim, text_dim, heads, eps) if text_dim else None
        self.register_buffer("shift_mask", self.make_shift_mask() if self.shift else None, persistent=False)

    def make_shift_mask(self):
        r, w, s = self.resolution, self.window, self.shift
        img = torch.zeros(1, r, r, 1)
        count = 0
        for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
                img[:, hs, ws, :] = count
                count += 1
        windows = partition(img, w).view(-1, w * w)
        diff = windows[:, None, :] - windows[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x, text=None, text_mask=None):
        b, n, c = x.shape
        r, w = self.resolution, self.window
        h = self.norm1(x).view(b, r, r, c)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), (1, 2))
        windows = partition(h, w).view(-1, w * w, c)
        s = self.attn(windows, b, self.shift_mask)
        if text is not None:
            per_window = windows.shape[0] // b
            s = self.i2t(s, text.repeat_interleave(per_window, 0), text_mask.repeat_interleave(per_window, 0))
        h = unpartition(s.view(-1, w, w, c), w, r)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), (1, 2))
        x = x + drop_path(h.reshape(b, n, c), self.drop_path_rate, self.training)
        return x + drop_path(self.fc2(F.gelu(self.fc1(self.norm2(x)))), self.drop_path_rate, self.training)


def partition(x, w):
    b, r, _, c = x.shape
    return x.view(b, r // w, w, r // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, c)


def unpartition(windows, w, r):
    b = windows.shape[0] // ((r // w) ** 2)
    return windows.view(b, r // w, r // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, r, r, -1)


class PatchMerging(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, r):
        b, _, c = x.shape
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


# ---------------------------------------------------------------------------------------------
# RoBERTa with text-to-image cross-attention (docs/model.md §1.2, §2.4)


class TextLayer(nn.Module):
    def __init__(self, cfg, image_dim=None):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.heads, self.p_attn, self.p_hidden = cfg["num_attention_heads"], cfg["attention_probs_dropout_prob"], cfg["hidden_dropout_prob"]
        self.query, self.key, self.value, self.dense = (nn.Linear(d, d) for _ in range(4))
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.fc1, self.fc2 = nn.Linear(d, cfg["intermediate_size"]), nn.Linear(cfg["intermediate_size"], d)
        self.out_norm = nn.LayerNorm(d, eps=eps)
        if image_dim:
            self.t2i_query, self.t2i_key, self.t2i_value = nn.Linear(d, d), nn.Linear(image_dim, d), nn.Linear(image_dim, d)
            self.t2i_dense = nn.Linear(d, d)
            self.alpha_t2i = nn.Parameter(torch.zeros(1))

    def forward(self, h, mask, image=None, last_norm=True):
        t = self.training
        a = attend(self.query(h), self.key(h), self.value(h), self.heads, mask, self.p_attn, t)
        a = F.dropout(self.dense(a), self.p_hidden, t)
        if image is not None:
            c = attend(self.t2i_query(a), self.t2i_key(image), self.t2i_value(image), self.heads, None, self.p_attn, t)
            a = a + self.alpha_t2i * F.dropout(self.t2i_dense(c), self.p_hidden, t)
        h = self.attn_norm(a + h)
        y = F.dropout(self.fc2(F.gelu(self.fc1(h))), self.p_hidden, t) + h
        return self.out_norm(y) if last_norm else y


class TextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.pad = cfg["pad_token_id"]
        self.word = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], d)
        self.norm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.p = cfg["hidden_dropout_prob"]

    def forward(self, ids):
        keep = (ids != self.pad).long()
        positions = torch.cumsum(keep, 1) * keep + self.pad
        x = self.word(ids) + self.position(positions) + self.token_type(torch.zeros_like(ids))
        return F.dropout(self.norm(x), self.p, self.training)


# ---------------------------------------------------------------------------------------------
# FIBER: backbone split into uni-modal prefixes and suffixes (docs/model.md §2.2, §2.5), heads (§3.1)


class Fiber(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        sw, tx, n_fuse = cfg["swin"], cfg["roberta"], cfg["num_fuse_block"]
        eps, text_dim = sw["layer_norm_eps"], tx["hidden_size"]
        self.quirks = cfg.get("original_fused_quirks", True)
        self.checkpointing = False
        self.patch = nn.Conv2d(sw["num_channels"], sw["embed_dim"], sw["patch_size"], sw["patch_size"])
        self.patch_norm = nn.LayerNorm(sw["embed_dim"], eps=eps)
        self.patch_dropout = sw["hidden_dropout_prob"]
        depths = sw["depths"]
        order = [(s, b) for s, d in enumerate(depths) for b in range(d)]
        fused = set(order[len(order) - n_fuse:])
        rates = [sw["drop_path_rate"] * i / max(len(order) - 1, 1) for i in range(len(order))]
        self.blocks, self.merges, self.resolutions = nn.ModuleList(), nn.ModuleDict(), []
        self.order, self.first_fused = order, len(order) - n_fuse
        for k, (s, b) in enumerate(order):
            dim, r = sw["embed_dim"] << s, (sw["image_size"] // sw["patch_size"]) >> s
            self.resolutions.append(r)
            self.blocks.append(SwinBlock(dim, sw["num_heads"][s], sw["window_size"], r, b % 2 == 1, sw["mlp_ratio"], eps, rates[k],
                                         text_dim if (s, b) in fused else None))
            if b == depths[s] - 1 and s < len(depths) - 1:
                self.merges[str(k)] = PatchMerging(dim, eps)
        self.image_width = sw["embed_dim"] << (len(depths) - 1)
        self.image_norm = nn.LayerNorm(self.image_width, eps=eps)
        self.embeddings = TextEmbeddings(tx)
        n_layers = tx["num_hidden_layers"]
        self.first_fused_layer = n_layers - n_fuse
        self.layers = nn.ModuleList(
            TextLayer(tx, (sw["embed_dim"] << order[self.first_fused + i - self.first_fused_layer][0]) if i >= self.first_fused_layer else None)
            for i in range(n_layers))
        h, vocab = text_dim, tx["vocab_size"]
        lin = lambda i, o: nn.Linear(i, o)
        self.cross_modal_text_transform, self.cross_modal_image_transform = lin(text_dim, h), lin(self.image_width, h)
        self.cross_modal_text_pooler, self.cross_modal_image_pooler = lin(h, h), lin(h, h)
        self.cross_modal_text_transform_itc, self.cross_modal_image_transform_itc = lin(text_dim, h), lin(self.image_width, h)
        self.cross_modal_text_pooler_itc, self.cross_modal_image_pooler_itc = lin(h, h), lin(h, h)
        self.mlm_dense, self.mlm_norm = lin(h, h), nn.LayerNorm(h, eps=1e-12)
        self.mlm_decoder, self.mlm_bias = nn.Linear(h, vocab, bias=False), nn.Parameter(torch.zeros(vocab))
        self.itm_score = lin(2 * h, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))

    # --- backbone pieces
    def checkpointed(self, module, *args, **kwargs):
        """`module(*args)`, its activations recomputed in the backward pass with `--checkpointing`."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False, **kwargs)
        return module(*args, **kwargs)

    def run_block(self, x, k, text=None, text_mask=None):
        x = self.checkpointed(self.blocks[k], x, text, text_mask)
        if str(k) in self.merges:
            x = self.merges[str(k)](x, self.resolutions[k])
        return x

    def image_prefix(self, pixels):
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        x = F.dropout(self.patch_norm(x), self.patch_dropout, self.training)
        for k in range(self.first_fused):
            x = self.run_block(x, k)
        return x

    def text_prefix(self, ids, mask):
        add = ((1 - mask) * -10000.0)[:, None, None, :].float()
        h = self.embeddings(ids)
        for layer in self.layers[: self.first_fused_layer]:
            h = self.checkpointed(layer, h, add)
        return h, add

    def image_only_suffix(self, x):
        for k in range(self.first_fused, len(self.blocks)):
            x = self.run_block(x, k)
        return self.image_norm(x)

    def text_only_suffix(self, text):
        h, add = text
        for layer in self.layers[self.first_fused_layer:]:
            h = self.checkpointed(layer, h, add)
        return h

    def fused_suffix(self, x, text):
        t, add = text
        n = len(self.blocks) - self.first_fused
        for j in range(n):
            k, layer = self.first_fused + j, self.layers[self.first_fused_layer + j]
            last = self.quirks and j == n - 1
            x, t = self.run_block(x, k, t, add), self.checkpointed(layer, t, add, x, last_norm=not last)
        return x, t

    # --- heads
    def cls_feats(self, x, t):
        text = torch.tanh(self.cross_modal_text_pooler(self.cross_modal_text_transform(t)[:, 0]))
        image = torch.tanh(self.cross_modal_image_pooler(self.cross_modal_image_transform(x).mean(1)))
        return torch.cat([text, image], 1)

    def itc_image(self, x):
        return F.normalize(torch.tanh(self.cross_modal_image_pooler_itc(self.cross_modal_image_transform_itc(x).mean(1))), dim=-1)

    def itc_text(self, t):
        return F.normalize(torch.tanh(self.cross_modal_text_pooler_itc(self.cross_modal_text_transform_itc(t)[:, 0])), dim=-1)

    def mlm_logits(self, t):
        h = self.mlm_norm(F.gelu(self.mlm_dense(self.cross_modal_text_transform(t))))
        return self.mlm_decoder(h) + self.mlm_bias

    # --- the coarse step (docs/model.md §3.2–§3.4)
    def losses(self, batch, reuse_prefix):
        pixels, ids, mask, masked, labels = batch
        n = ids.shape[0]
        if reuse_prefix:
            image, text, masked_text = self.image_prefix(pixels), self.text_prefix(ids, mask), self.text_prefix(masked, mask)
            image_feats, text_feats = self.itc_image(self.image_only_suffix(image)), self.itc_text(self.text_only_suffix(text))
        else:
            image_feats = self.itc_image(self.image_only_suffix(self.image_prefix(pixels)))
            text_feats = self.itc_text(self.text_only_suffix(self.text_prefix(ids, mask)))
        logits_i2t = image_feats @ text_feats.t() / self.temp
        targets = torch.arange(n, device=ids.device)
        itc = (F.cross_entropy(logits_i2t, targets) + F.cross_entropy(logits_i2t.t(), targets)) / 2
        with torch.no_grad():
            eye = torch.eye(n, device=ids.device, dtype=torch.bool)
            w_i2t = (logits_i2t.float().softmax(1) + 1e-9).masked_fill(eye, 0)
            w_t2i = (logits_i2t.t().float().softmax(1) + 1e-9).masked_fill(eye, 0)
            neg_text, neg_image = torch.multinomial(w_i2t, 1)[:, 0], torch.multinomial(w_t2i, 1)[:, 0]
        if reuse_prefix:
            itm_images = torch.cat([image, image, image[neg_image]])
            h, add = text
            itm_texts = (torch.cat([h, h[neg_text], h]), torch.cat([add, add[neg_text], add]))
            x, t = self.fused_suffix(itm_images, itm_texts)
        else:
            itm_pixels = torch.cat([pixels, pixels, pixels[neg_image]])
            itm_ids, itm_mask = torch.cat([ids, ids[neg_text], ids]), torch.cat([mask, mask[neg_text], mask])
            x, t = self.fused_suffix(self.image_prefix(itm_pixels), self.text_prefix(itm_ids, itm_mask))
        itm_labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(ids.device)
        itm = F.cross_entropy(self.itm_score(self.cls_feats(x, t)), itm_labels)
        if reuse_prefix:
            x, t = self.fused_suffix(image, masked_text)
        else:
            x, t = self.fused_suffix(self.image_prefix(pixels), self.text_prefix(masked, mask))
        logits = self.mlm_logits(t)
        mlm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return itc + itm + mlm


def param_groups(model, lr):
    """docs/model.md §3.5: ×5 for fusion, cross-modal and head parameters; no decay for biases and norms."""
    groups = {}
    for name, p in model.named_parameters():
        fast = any(s in name for s in ("cross_modal", "i2t", "t2i", "mlm_", "itm_score"))
        decay = not any(s in name for s in ("bias", "norm"))
        groups.setdefault((fast, decay), []).append(p)
    return [{"params": ps, "lr": lr * (5 if fast else 1), "weight_decay": 0.01 if decay else 0.0}
            for (fast, decay), ps in groups.items()]


# ---------------------------------------------------------------------------------------------
# Inputs (the rule of fiber_train::benchmark::BenchInputs) and timing


def inputs(batch, text_len, vocab, image_size, device):
    ids = torch.zeros(batch, text_len, dtype=torch.long)
    for r in range(batch):
        for c in range(1, text_len - 1):
            ids[r, c] = 3 + (131 * r + 17 * c) % (vocab - 4)
        ids[r, text_len - 1] = 2
    rows, cols = torch.meshgrid(torch.arange(batch), torch.arange(text_len), indexing="ij")
    chosen = ((rows + cols) % 7 == 0) & (cols > 0) & (cols < text_len - 1)
    masked = ids.masked_fill(chosen, vocab - 1)
    labels = ids.masked_fill(~chosen, -100)
    pixels = torch.randn(batch, 3, image_size, image_size)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    return [t.to(device) for t in (pixels, ids, mask, masked, labels)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="settings written by `cargo xtask bench --reference`")
    parser.add_argument("--device", help="cpu or cuda (the settings' by default)")
    parser.add_argument("--precision", choices=["f32", "tf32", "bf16", "f16"], help="the settings' by default")
    parser.add_argument("--attention", choices=["eager", "sdpa"], help="default: sdpa in bf16/f16, eager in f32")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    with open(args.config) as f:
        settings = json.load(f)
    device = args.device or settings["device"]
    precision = args.precision or settings["precision"]
    reps, warmup = args.reps or settings["reps"], settings["warmup"]
    only = settings.get("only") or MEASUREMENTS
    if settings.get("only"):
        only = only + ["step_prefix_reuse"] if "step" in only else only
    Attention.sdpa = (args.attention or ("eager" if precision in ("f32", "tf32") else "sdpa")) == "sdpa"
    if settings.get("threads") and device == "cpu":
        torch.set_num_threads(settings["threads"])
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device_type=device, dtype=half)) if half else (lambda: torch.autocast(device_type=device, enabled=False))
    torch.manual_seed(0)
    cfg = settings["model"]
    model = Fiber(cfg).to(device)
    model.checkpointing = bool(settings.get("checkpointing"))
    batch = inputs(settings["batch"], settings["text_len"], cfg["roberta"]["vocab_size"], cfg["swin"]["image_size"], device)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-5), betas=(0.9, 0.98), eps=1e-8)
    scaler = torch.amp.GradScaler(device, enabled=precision == "f16")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    pixels, ids, mask = batch[0], batch[1], batch[2]

    phases = {}

    timed_phases = bool(settings.get("phases"))

    def step(reuse):
        # A training loop's step: the loss is read once, after the update. With "phases" the
        # device is also synchronised after the forward and the backward, and each part timed.
        model.train()
        start = time.perf_counter()
        with autocast():
            loss = model.losses(batch, reuse)
        if timed_phases:
            sync()
        forward_end = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if timed_phases:
            sync()
        backward_end = time.perf_counter()
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()
        sync()
        if timed_phases:
            phases.setdefault("step_prefix_reuse" if reuse else "step", []).append(
                [(forward_end - start) * 1000, (backward_end - forward_end) * 1000, (time.perf_counter() - backward_end) * 1000])
        return value

    def step_forward():
        model.train()
        with autocast():
            return model.losses(batch, False).item()

    @torch.no_grad()
    def inference(kind):
        model.eval()
        with autocast():
            if kind == "fused_inference":
                x, t = model.fused_suffix(model.image_prefix(pixels), model.text_prefix(ids, mask))
                out = model.itm_score(model.cls_feats(x, t))[:, 1]
            elif kind == "dual_image":
                out = model.itc_image(model.image_only_suffix(model.image_prefix(pixels)))
            else:
                out = model.itc_text(model.text_only_suffix(model.text_prefix(ids, mask)))
        return out.float().sum().item()

    work = {"step": lambda: step(False), "step_prefix_reuse": lambda: step(True), "step_forward": step_forward,
            "fused_inference": lambda: inference("fused_inference"), "dual_image": lambda: inference("dual_image"),
            "dual_text": lambda: inference("dual_text")}
    flops = {}
    try:
        from torch.utils.flop_counter import FlopCounterMode
        for name, reuse in (("step", False), ("step_prefix_reuse", True)):
            if name in only:
                with FlopCounterMode(display=False) as counter:
                    step(reuse)
                flops[name] = counter.get_total_flops()
    except ImportError:
        pass
    phases.clear()
    measurements, losses = [], []
    for name in [m for m in MEASUREMENTS if m in only]:
        runs, cpu_seconds = [], 0.0
        for i in range(warmup + reps):
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            value = work[name]()
            sync()
            if i >= warmup:
                runs.append((time.perf_counter() - start) * 1000)
                cpu_seconds += time.process_time() - cpu_start
                if name == "step":
                    losses.append(value)
            if not math.isfinite(value):
                sys.exit(f"{name}: the value is {value}")
        runs.sort()
        median = statistics.median(runs)
        n = settings["batch"]
        entry = {"name": name, "unit": UNITS.get(name, "pairs"), "items": n, "runs_ms": runs, "median_ms": median,
                 "per_second": n * 1000 / median, "cores_busy": cpu_seconds * 1000 / sum(runs)}
        if name in flops:
            entry["gflop_per_pair"] = flops[name] / n / 1e9
        if name in phases:
            timed = phases[name][warmup:]
            forward, backward, optim = (statistics.median(p[i] for p in timed) for i in range(3))
            entry["phases_ms"] = {"forward": forward, "backward": backward, "optimizer": optim}
        measurements.append(entry)
    if device.startswith("cuda"):
        peak, measure = torch.cuda.max_memory_reserved(), "device memory reserved by the caching allocator (max_memory_reserved)"
        device_name = torch.cuda.get_device_name()
    else:
        peak, measure = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak resident memory (ru_maxrss)"
        device_name = "cpu"
    report = {
        "framework": f"pytorch {torch.__version__} eager", "preset": settings["preset"], "backend": device,
        "precision": precision + ("+sdpa" if Attention.sdpa else ""), "device": device_name,
        "checkpointing": model.checkpointing,
        "threads": torch.get_num_threads() if device == "cpu" else None, "batch": settings["batch"],
        "text_len": settings["text_len"], "image_size": cfg["swin"]["image_size"], "warmup": warmup, "reps": reps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_loss": statistics.mean(losses) if losses else None,
        "peak_memory_bytes": peak, "memory_measure": measure, "measurements": measurements,
    }
    print(f"{report['framework']} | {device} {report['precision']} | preset {report['preset']} | batch {report['batch']} | "
          f"text {report['text_len']} | image {report['image_size']} px | {report['parameters']} parameters"
          + (" | activation checkpointing (per block)" if model.checkpointing else "")
          + (f" | {report['threads']} threads" if report["threads"] else ""))
    print("| measurement | median ms | min ms | max ms | per second | GFLOP per pair |")
    print("|---|---|---|---|---|---|")
    for m in measurements:
        gflop = f"{m['gflop_per_pair']:.1f}" if "gflop_per_pair" in m else ""
        print(f"| {m['name']} | {m['median_ms']:.1f} | {m['runs_ms'][0]:.1f} | {m['runs_ms'][-1]:.1f} | "
              f"{m['per_second']:.2f} {m['unit']} | {gflop} |")
    for m in measurements:
        if "phases_ms" in m:
            p = m["phases_ms"]
            print(f"{m['name']} phases: forward {p['forward']:.1f} ms, backward {p['backward']:.1f} ms, optimiser {p['optimizer']:.1f} ms")
    print(f"peak memory {peak / 2**30:.2f} GiB ({measure})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
