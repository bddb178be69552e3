"""ResNet image encoder/decoder and ContextWM's context encoder with cross-attention (thuml/ContextWM shapes).

Image size S, base width D (`depth`), L stages (`res_depth`):

- `ResNetEncoder`: conv 3x3 stride 2 (S -> S/2, D channels, ELU), then L stages of `res_layers` residual layers
  of width D*2^i, each stage followed by 2x2 average pooling. The final map is (D*2^(L-1), S/2^(L+1), S/2^(L+1));
  flattened, that is `out_dim` (3072 for the paper's S=64, D=48, L=3).
- `ContextEncoder`: the same conv stack; it returns the feature map of every stage *before* its pooling, keyed by
  resolution: `{S/2: (D, S/2, S/2), S/4: (2D, ...), ...}` (for S=64: 32, 16 and 8).
- `ResNetDecoder`: Linear(feat -> D*2^(L-1) x r0 x r0) with r0 = S/2^(L+1), then L stages of (nearest upsample x2,
  residual stack halving the width), then ConvTranspose 3x3 stride 2 to 3 channels at S x S. When contextual, the
  first residual layer of every stage whose resolution is <= `attn_max_res` (16: 8x8 and 16x16 for S=64 and S=32)
  first cross-attends from the decoder's pixels (queries) to the context encoder's pixels at the same resolution
  (keys/values; same width by construction), with learned zero-initialised positional embeddings, and a random
  `mask_ratio` (0.75) of the context tokens dropped per decoded frame in every forward pass.

Images enter as uint8 in [0, 255] or as floats already preprocessed to [-0.5, 0.5] (`preprocess`); the decoder
outputs the mean of a unit-variance Gaussian in that same [-0.5, 0.5] space (ContextWM's "MSE" likelihood).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlpt.errors import ConfigError, DatasetDtypeError, DatasetShapeError

NORMS = ("batch", "layer", "none")


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images `(..., H, W, 3)` (NHWC) or `(..., 3, H, W)` (NCHW) -> float32 `(..., 3, H, W)` in [-0.5, 0.5].

    Float input is taken as already preprocessed NCHW and only checked for its channel axis."""
    x = torch.as_tensor(images)
    if x.ndim < 3:
        raise DatasetShapeError(f"images must be (..., H, W, 3) or (..., 3, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] == 3 and x.shape[-3] != 3:
            x = x.movedim(-1, -3)  # NHWC -> NCHW
        if x.shape[-3] != 3:
            raise DatasetShapeError(f"images must have 3 colour channels, got shape {tuple(x.shape)}")
        return x.float().div_(255.0).sub_(0.5)
    if not torch.is_floating_point(x):
        raise DatasetDtypeError(f"images must be uint8 in [0, 255] or float in [-0.5, 0.5], got dtype {x.dtype}")
    if x.shape[-3] != 3:
        raise DatasetShapeError(f"float images must be preprocessed NCHW (..., 3, H, W), got shape {tuple(x.shape)}")
    return x.float()


def _check_images(x: torch.Tensor, image_size: int, who: str) -> torch.Tensor:
    """Preprocess `(N, 3, S, S)` (uint8 NCHW/NHWC, or float) and check the size."""
    if x.dtype != torch.uint8 and not torch.is_floating_point(x):
        raise DatasetDtypeError(f"{who}: images must be uint8 or float, got dtype {x.dtype}")
    if x.ndim != 4:
        raise DatasetShapeError(f"{who}: expected images (N, 3, {image_size}, {image_size}), got shape "
                                f"{tuple(x.shape)}")
    x = preprocess(x)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        raise DatasetShapeError(f"{who} was built for {image_size}x{image_size} images, got "
                                f"{x.shape[-2]}x{x.shape[-1]} (shape {tuple(x.shape)})")
    return x


def check_image_size(image_size: int, res_depth: int) -> int:
    """Resolution of the innermost feature map, S / 2^(res_depth + 1); raise ConfigError if S does not divide."""
    factor = 2 ** (res_depth + 1)
    if res_depth < 1 or image_size < factor or image_size % factor:
        raise ConfigError(f"image_size {image_size} must be a positive multiple of 2^(res_depth+1) = {factor} "
                          f"(res_depth={res_depth}); e.g. 32 with res_depth 2 or 64 with res_depth 3")
    return image_size // factor


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be one of {NORMS}, got {kind!r}")


class ResidualLayer(nn.Module):
    """`y = relu(skip(x) + norm(conv(relu(norm(conv(x))))))`; skip is a 1x1 conv when the width changes."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")
        self.norm1 = _norm2d(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none")
        self.norm2 = _norm2d(norm, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)), inplace=True)
        return F.relu(self.skip(x) + self.norm2(self.conv2(h)), inplace=True)


class _ConvStack(nn.Module):
    """convin (stride 2, ELU) + `res_depth` stages of residual layers, each followed by 2x2 average pooling."""

    def __init__(self, image_size: int, depth: int, res_depth: int, res_layers: int, norm: str):
        super().__init__()
        self.image_size, self.depth, self.res_depth = image_size, depth, res_depth
        self.final_res = check_image_size(image_size, res_depth)
        if depth < 1 or res_layers < 1:
            raise ConfigError(f"depth and res_layers must be >= 1, got depth={depth}, res_layers={res_layers}")
        self.convin = nn.Conv2d(3, depth, 3, stride=2, padding=1)
        self.stages = nn.ModuleList()
        self.widths: list[int] = []
        self.resolutions: list[int] = []
        c, res = depth, image_size // 2
        for i in range(res_depth):
            width = depth * 2**i
            self.stages.append(nn.Sequential(*[ResidualLayer(c if j == 0 else width, width, norm)
                                               for j in range(res_layers)]))
            self.widths.append(width)
            self.resolutions.append(res)
            c, res = width, res // 2
        self.out_channels = c

    def run(self, x: torch.Tensor, keep: bool) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        x = x.contiguous(memory_format=torch.channels_last)  # 1.3-2x faster convs on CPU (oneDNN)
        h = F.elu(self.convin(x), inplace=True)  # (N, D, S/2, S/2)
        kept: dict[int, torch.Tensor] = {}
        for stage, res in zip(self.stages, self.resolutions, strict=True):
            h = stage(h)
            if keep:
                kept[res] = h  # (N, width, res, res), before pooling
            h = F.avg_pool2d(h, 2)
        return h, kept


class ResNetEncoder(nn.Module):
    """Images `(N, 3, S, S)` (uint8 [0, 255], or float already in [-0.5, 0.5]; NHWC uint8 also accepted)
    -> `(N, out_dim)` flattened ResNet features. Satisfies rlpt's Encoder seam (`out_dim`)."""

    def __init__(self, image_size: int = 64, depth: int = 48, res_depth: int = 3, res_layers: int = 2,
                 norm: str = "batch"):
        super().__init__()
        self.image_size = image_size
        self.kwargs = dict(image_size=image_size, depth=depth, res_depth=res_depth, res_layers=res_layers, norm=norm)
        self.net = _ConvStack(image_size, depth, res_depth, res_layers, norm)
        self.out_dim: int = self.net.out_channels * self.net.final_res**2

    preprocess = staticmethod(preprocess)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_images(images, self.image_size, type(self).__name__)
        x = x.to(self.net.convin.weight.device)
        h, _ = self.net.run(x, keep=False)  # (N, C, r, r)
        return h.flatten(1)


class ContextEncoder(nn.Module):
    """Context frames `(N, 3, S, S)` -> `{resolution: (N, width, res, res)}`, the feature map of every stage
    before its pooling (for S=64, D=48: {32: 48ch, 16: 96ch, 8: 192ch}). `channels[res]` gives each width."""

    def __init__(self, image_size: int = 64, depth: int = 48, res_depth: int = 3, res_layers: int = 2,
                 norm: str = "batch"):
        super().__init__()
        self.image_size = image_size
        self.net = _ConvStack(image_size, depth, res_depth, res_layers, norm)
        self.channels: dict[int, int] = dict(zip(self.net.resolutions, self.net.widths, strict=True))

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        x = _check_images(images, self.image_size, type(self).__name__)
        x = x.to(self.net.convin.weight.device)
        _, kept = self.net.run(x, keep=True)
        return kept


def random_keep_indices(n: int, tokens: int, mask_ratio: float, device: torch.device,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices `(n, k)` of the context tokens each of `n` samples keeps: a fresh random subset per sample of
    k = max(1, round(tokens * (1 - mask_ratio))) tokens (ContextWM's random attention mask)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    k = max(1, int(round(tokens * (1.0 - mask_ratio))))
    if k >= tokens:
        return torch.arange(tokens, device=device).expand(n, tokens)
    scores = torch.rand(n, tokens, device=device, generator=generator)
    return scores.topk(k, dim=1).indices  # (n, k): a uniform random k-subset per row


class CrossAttention(nn.Module):
    """Decoder pixels (queries) attend to a random subset of context pixels (keys/values) at one resolution.

    `z = relu(z + LayerNorm(attn(z + pos_q, ctx + pos_kv)))`: multi-head attention (as nn.MultiheadAttention,
    computed with `scaled_dot_product_attention`, which is several times faster on CPU in training), learned
    zero-initialised positional embeddings, and dropout `dropout` on the attention weights."""

    def __init__(self, width: int, res: int, heads: int, dropout: float = 0.1):
        super().__init__()
        if width % heads:
            raise ConfigError(f"cross-attention width {width} at {res}x{res} is not divisible by heads={heads}")
        self.res, self.heads, self.dropout = res, heads, dropout
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        self.pos_q = nn.Parameter(torch.zeros(1, res * res, width))
        self.pos_kv = nn.Parameter(torch.zeros(1, res * res, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor, ctx: torch.Tensor, owner: torch.Tensor, mask_ratio: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """z `(N, C, r, r)` decoder features; ctx `(B, C, r, r)` context features; owner `(N,)` long: the context
        row each decoder row reads. Returns `(N, C, r, r)`."""
        n, c, r, _ = z.shape
        if ctx.shape[1:] != (c, r, r):
            raise DatasetShapeError(f"context features at {r}x{r} must be (B, {c}, {r}, {r}), got {tuple(ctx.shape)}")
        tokens, h = r * r, self.heads
        q = self.q_proj(z.flatten(2).transpose(1, 2) + self.pos_q)  # (N, r*r, C)
        kv = self.kv_proj(ctx.flatten(2).transpose(1, 2) + self.pos_kv)  # (B, r*r, 2C): projected once per clip
        keep = random_keep_indices(n, tokens, mask_ratio, z.device, generator)  # (N, k)
        flat = (owner[:, None] * tokens + keep).reshape(-1)  # row indices into kv flattened to (B*r*r, 2C)
        k, v = kv.reshape(-1, 2 * c)[flat].reshape(n, keep.shape[1], 2 * c).chunk(2, -1)  # (N, k, C) each
        split = lambda t: t.reshape(n, t.shape[1], h, c // h).transpose(1, 2)  # (N, heads, L, C/heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), dropout_p=p)  # (N, heads, r*r, C/h)
        out = self.out_proj(out.transpose(1, 2).reshape(n, tokens, c))
        out = self.norm(out).transpose(1, 2).reshape(n, c, r, r)
        return F.relu(z + out, inplace=True)


class ResNetDecoder(nn.Module):
    """Features `(N, feat_dim)` (or `(B, T, feat_dim)`) and, when contextual, the context encoder's maps
    `{res: (B, C, res, res)}` -> image mean `(N, 3, S, S)` (or `(B, T, 3, S, S)`) in [-0.5, 0.5] space.

    Decoder rows are matched to context rows clip-major: with N = B*T rows and B context rows, row n reads
    context n // T (ContextWM shares one context frame across a clip). Context with N rows is used row by row."""

    def __init__(self, feat_dim: int, image_size: int = 64, depth: int = 48, res_depth: int = 3,
                 res_layers: int = 2, contextual: bool = True, heads: int = 4, mask_ratio: float = 0.75,
                 norm: str = "batch", attn_max_res: int = 16, dropout: float = 0.1):
        super().__init__()
        self.feat_dim, self.image_size, self.contextual = feat_dim, image_size, contextual
        self.mask_ratio = float(mask_ratio)  # current ratio; VideoWorldModel anneals it during warmup
        random_keep_indices(1, 4, self.mask_ratio, torch.device("cpu"))  # validates the ratio
        self.r0 = check_image_size(image_size, res_depth)
        top = depth * 2 ** (res_depth - 1)
        self.top = top
        self.fc = nn.Linear(feat_dim, top * self.r0 * self.r0)
        self.stages = nn.ModuleList()
        self.attn = nn.ModuleDict()
        c, res = top, self.r0
        for _ in range(res_depth):
            res *= 2
            width = max(c // 2, 1)  # 192 -> 96 -> 48 -> 24 for the paper's depth 48
            if contextual and res <= attn_max_res:
                self.attn[str(res)] = CrossAttention(c, res, heads, dropout)
            self.stages.append(nn.Sequential(*[ResidualLayer(c if j == 0 else width, width, norm)
                                               for j in range(res_layers)]))
            c = width
        self.attn_resolutions: list[int] = sorted(int(k) for k in self.attn)
        self.convout = nn.ConvTranspose2d(c, 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, feat: torch.Tensor, context: dict[int, torch.Tensor] | None = None,
                mask_ratio: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        lead = feat.shape[:-1]
        if feat.shape[-1] != self.feat_dim:
            raise DatasetShapeError(f"decoder expects features (..., {self.feat_dim}), got {tuple(feat.shape)}")
        x = feat.reshape(-1, self.feat_dim)  # (N, F)
        n = x.shape[0]
        owner = None
        if self.contextual:
            if context is None:
                raise ConfigError("this decoder is contextual (contextual=True): pass the context encoder's feature "
                                  "maps as `context`, or build the model with contextual=False")
            missing = [r for r in self.attn_resolutions if r not in context]
            if missing:
                raise DatasetShapeError(f"context is missing feature maps at resolution(s) {missing}; "
                                        f"got {sorted(context)}")
            b = context[self.attn_resolutions[0]].shape[0] if self.attn_resolutions else n
            if b == 0 or n % b:
                raise DatasetShapeError(f"{n} decoder rows cannot be split over {b} context rows")
            owner = torch.arange(n, device=x.device) // (n // b)  # (N,) clip-major
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        h = self.fc(x).reshape(n, self.top, self.r0, self.r0).contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            res = h.shape[-1]
            if str(res) in self.attn:
                h = self.attn[str(res)](h, context[res], owner, ratio, generator)
            h = stage(h)
        out = self.convout(h)  # (N, 3, S, S)
        return out.reshape(*lead, 3, self.image_size, self.image_size)


def image_log_likelihood(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ContextWM's "MSE" likelihood: minus the sum of squared errors over (C, H, W), one value per image."""
    return -(mean - target).pow(2).sum(dim=(-3, -2, -1))


def conv_out_dim(image_size: int, depth: int, res_depth: int) -> int:
    """`ResNetEncoder.out_dim` without building it."""
    return depth * 2 ** (res_depth - 1) * check_image_size(image_size, res_depth) ** 2


__all__ = ["NORMS", "ContextEncoder", "CrossAttention", "ResNetDecoder", "ResNetEncoder", "ResidualLayer",
           "check_image_size", "conv_out_dim", "image_log_likelihood", "preprocess", "random_keep_indices"]
