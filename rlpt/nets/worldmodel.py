"""The ContextWM action-free video world model (Wu et al., NeurIPS 2023; thuml/ContextWM): config, model, artifact.

`VideoWorldModel` has four parts (`rlpt.nets.conv`, `rlpt.nets.rssm`):
- `encoder` (`ResNetEncoder`): each frame -> an embedding e_t;
- `rssm` (`RSSM`, action-free, discrete latents): filters e_1..e_T into states s_t = (h_t, z_t);
- `context_encoder` (`ContextEncoder`, only when `contextual`): one context frame per clip -> feature maps;
- `decoder` (`ResNetDecoder`): s_t (+ the context maps, through masked cross-attention) -> frame mean.

Loss per clip of T frames (`VideoWorldModel.loss`, ContextWM's pretraining loss, all scales 1):

    L = mean_t ||o_hat_t - o_t||^2  (summed over pixels, images in [-0.5, 0.5])
        + kl_scale * [0.2 * KL(q || sg p) + 0.8 * KL(sg q || p)]    (KL balancing 0.8, free nats 0)

The context frame is a random frame of the same clip (`context_choice="trand"`, or "t0"/"tlast"); 75% of its
tokens are hidden from each decoded frame, so appearance flows through the context and dynamics through the
latent. `contextual=False` gives the plain (APV-style) world model used for comparison.

The artifact is a folder with `contextwm.json` (format, config, step) + `model.safetensors`, written by
`VideoWorldModel.save` and by the pretraining loop (`rlpt.pretrain.contextwm`); `load_pretrained(path)` reads it
(or a run folder's latest checkpoint). The Dreamer agent (`rlpt.agents.contextwm`) loads it from here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlpt.config import validate as validate_config
from rlpt.errors import CheckpointError, ConfigError, DatasetDtypeError, DatasetShapeError
from rlpt.nets.conv import (
    NORMS,
    ContextEncoder,
    ResNetDecoder,
    ResNetEncoder,
    check_image_size,
    image_log_likelihood,
    preprocess,
)
from rlpt.nets.rssm import RSSM, State
from rlpt.utils import (
    atomic_write,
    read_checkpoint_meta,
    replace_dir,
    resolve_device,
    rlpt_version,
    to_jsonable,
    write_json,
)

CHECKPOINT_FORMAT = "rlpt.contextwm"
CHECKPOINT_VERSION = 1
META_FILE = "contextwm.json"  # marks a world-model checkpoint folder
CONTEXT_CHOICES = ("trand", "t0", "tlast")


# ============================================================================ config
@dataclasses.dataclass
class WorldModelConfig:
    """Sizes, loss weights and optimiser settings of a ContextWM world model. Defaults are the paper's
    (thuml/ContextWM `apv_pretraining.yaml` + `contextualized`); `WorldModelConfig.preset(name)` gives the
    named presets ("paper", "cpu-small", "tiny")."""

    name: str = "paper"
    # images and conv nets
    image_size: int = 64
    depth: int = 48  # base width D of encoder/decoder (widths D, 2D, 4D, ...)
    res_depth: int = 3  # stages; the innermost map is image_size / 2^(res_depth+1)
    res_layers: int = 2  # residual layers per stage
    norm: str = "batch"
    # context
    contextual: bool = True  # False: plain world model, no context encoder or cross-attention
    context_choice: str = "trand"  # which frame of the clip is the context: random, first or last
    heads: int = 4
    mask_ratio: float = 0.75  # fraction of context tokens hidden from each decoded frame
    mask_warmup: int = 0  # steps over which the ratio ramps linearly from 0 up to mask_ratio (0: none)
    attn_max_res: int = 16  # cross-attention at every decoder resolution <= this (8x8, 16x16)
    attn_dropout: float = 0.1
    # RSSM
    deter: int = 1024
    hidden: int = 1024
    stoch: int = 32
    discrete: int = 32
    unimix: float = 0.0
    # loss
    kl_balance: float = 0.8
    kl_free: float = 0.0
    kl_scale: float = 1.0
    image_scale: float = 1.0
    # optimisation
    batch_size: int = 16
    seq_len: int = 25
    lr: float = 3e-4
    eps: float = 1e-5
    clip: float = 100.0
    wd: float = 1e-6

    PRESETS = ("paper", "cpu-small", "tiny")

    @classmethod
    def preset(cls, name: str, /, **overrides: Any) -> WorldModelConfig:
        """"paper": the paper's sizes (64x64, depth 48, deter 1024, 32x32 latents, batch 16 x 25).
        "cpu-small": 32x32, depth 16, one residual layer per stage, cross-attention at 8x8, deter 128, 16x16
        latents, batch 16 x 12 (benchmarks/results/contextwm_speed.json has its measured speed on the project's
        2-core CPU). "tiny": 16x16 images and a few thousand weights, for tests (seconds)."""
        sizes: dict[str, dict[str, Any]] = {
            "paper": {},
            # Sized for >= 5 updates/s on the project's 2-core CPU (benchmarks/contextwm_speed.py):
            # - cross-attention only at 8x8 (4-pixel patches, the paper's finest patch size at 64x64): at 16x16
            #   it cost more than the rest of the update;
            # - attention dropout off: on CPU, attention with dropout falls back to a kernel several times slower
            #   (the 75% context mask remains);
            # - clips of 12 frames: batch 16 x 16 ran ~4 updates/s; the cost scales with frames per batch, not
            #   with conv width (depth 12 was no faster than 16).
            "cpu-small": dict(image_size=32, depth=16, res_depth=2, res_layers=1, heads=2, attn_max_res=8,
                              attn_dropout=0.0, deter=128, hidden=128, stoch=16, discrete=16, batch_size=16,
                              seq_len=12),
            "tiny": dict(image_size=16, depth=8, res_depth=2, res_layers=1, heads=2, attn_dropout=0.0, deter=32,
                         hidden=32, stoch=4, discrete=4, batch_size=4, seq_len=8, lr=1e-3),
        }
        if name not in sizes:
            raise ConfigError(f"unknown ContextWM preset {name!r}; choose one of {list(sizes)}")
        return cls.from_dict({**sizes[name], "name": name, **overrides}, source=f"preset {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> WorldModelConfig:
        """Build from a dict, typed by the annotations (`rlpt.config.validate`), rejecting unknown keys (listing the
        valid ones) and invalid values."""
        cfg = validate_config(cls, data, source)
        cfg.validate(source)
        return cfg

    def replace(self, **changes: Any) -> WorldModelConfig:
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self, source: str = "config") -> None:
        check_image_size(self.image_size, self.res_depth)
        if self.norm not in NORMS:
            raise ConfigError(f"{source}: norm must be one of {NORMS}, got {self.norm!r}")
        if self.context_choice not in CONTEXT_CHOICES:
            raise ConfigError(f"{source}: context_choice must be one of {CONTEXT_CHOICES}, got {self.context_choice!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"{source}: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.kl_balance <= 1.0:
            raise ConfigError(f"{source}: kl_balance must be in [0, 1], got {self.kl_balance}")
        for key in ("depth", "res_layers", "heads", "deter", "hidden", "stoch", "discrete", "batch_size", "seq_len"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{source}: {key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.clip <= 0:
            raise ConfigError(f"{source}: lr and clip must be > 0, got lr={self.lr}, clip={self.clip}")


# ============================================================================ model
class VideoWorldModel(nn.Module):
    """The action-free (contextualized) world model: `encoder`, `context_encoder` (None when plain), `decoder`,
    `rssm`. Frames are uint8 `(B, T, H, W, 3)` as `VideoClips.sample` returns them."""

    def __init__(self, config: WorldModelConfig | None = None):
        super().__init__()
        config = config or WorldModelConfig()
        config.validate()
        self.config = config
        c = config
        conv = dict(image_size=c.image_size, depth=c.depth, res_depth=c.res_depth, res_layers=c.res_layers,
                    norm=c.norm)
        self.encoder = ResNetEncoder(**conv)
        self.context_encoder = ContextEncoder(**conv) if c.contextual else None
        self.rssm = RSSM(self.encoder.out_dim, action_dim=0, deter=c.deter, hidden=c.hidden, stoch=c.stoch,
                         discrete=c.discrete, unimix=c.unimix)
        self.decoder = ResNetDecoder(self.rssm.feat_dim, contextual=c.contextual, heads=c.heads,
                                     mask_ratio=c.mask_ratio, attn_max_res=c.attn_max_res, dropout=c.attn_dropout,
                                     **conv)

    embed_dim = property(lambda self: self.encoder.out_dim)
    feat_dim = property(lambda self: self.rssm.feat_dim)
    device = property(lambda self: self.encoder.net.convin.weight.device)

    # ------------------------------------------------------------------ inputs
    def check_frames(self, frames: np.ndarray | torch.Tensor, name: str = "frames") -> torch.Tensor:
        """uint8 `(B, T, S, S, 3)` (numpy or torch) -> uint8 tensor on the model's device; clear errors otherwise."""
        x = torch.as_tensor(frames)
        s = self.config.image_size
        if x.dtype != torch.uint8:
            raise DatasetDtypeError(f"{name} must be uint8 in [0, 255] (as VideoClips.sample returns), got {x.dtype}")
        if x.ndim != 5 or x.shape[-1] != 3 or x.shape[0] < 1 or x.shape[1] < 1:
            raise DatasetShapeError(f"{name} must be (B, T, {s}, {s}, 3) uint8, got shape {tuple(x.shape)}")
        if tuple(x.shape[2:4]) != (s, s):
            raise DatasetShapeError(f"{name}: this world model was built for {s}x{s} frames (image_size={s}), got "
                                    f"{x.shape[2]}x{x.shape[3]}; open the videos with image_size={s}")
        return x.to(self.device)

    def mask_ratio_at(self, step: int | None) -> float:
        """The context mask ratio at training `step` (linear warmup from 0 over `mask_warmup` steps)."""
        c = self.config
        if step is None or c.mask_warmup <= 0:
            return c.mask_ratio
        return c.mask_ratio * min(1.0, step / c.mask_warmup)

    # ------------------------------------------------------------------ parts
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images `(B, T, 3, S, S)` (or uint8 `(B, T, S, S, 3)`) -> embeddings `(B, T, E)`."""
        b, t = images.shape[:2]
        return self.encoder(images.flatten(0, 1)).reshape(b, t, -1)

    def pick_context(self, frames: torch.Tensor, choice: str | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One context frame per clip: frames `(B, T, ...)` -> `(B, ...)` (random t, first or last frame)."""
        choice = choice or self.config.context_choice
        b, t = frames.shape[:2]
        if choice == "t0":
            return frames[:, 0]
        if choice == "tlast":
            return frames[:, -1]
        idx = torch.randint(0, t, (b,), generator=generator, device="cpu").to(frames.device)
        return frames[torch.arange(b, device=frames.device), idx]

    def context(self, context_frames: np.ndarray | torch.Tensor) -> dict[int, torch.Tensor] | None:
        """Context frames `(B, S, S, 3)` uint8 (or `(B, 3, S, S)` uint8/preprocessed) -> the context encoder's
        feature maps `{res: (B, C, res, res)}`; None for a plain model."""
        if self.context_encoder is None:
            return None
        return self.context_encoder(torch.as_tensor(context_frames).to(self.device))

    def decode(self, feat: torch.Tensor, context: dict[int, torch.Tensor] | None, mask_ratio: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Features `(B, T, F)` -> frame means `(B, T, 3, S, S)` in [-0.5, 0.5] space."""
        return self.decoder(feat, context if self.config.contextual else None, mask_ratio, generator)

    # ------------------------------------------------------------------ loss
    def loss(self, frames: np.ndarray | torch.Tensor, step: int | None = None
             ) -> tuple[torch.Tensor, dict[str, float], State]:
        """Pretraining loss on uint8 clips `(B, T, S, S, 3)` -> (loss, metrics, posterior states `(B, T, ...)`).

        `step` only sets the context-mask warmup."""
        c = self.config
        x = self.check_frames(frames)  # (B, T, S, S, 3) uint8
        target = preprocess(x)  # (B, T, 3, S, S) in [-0.5, 0.5]
        post, prior = self.rssm.observe(self.embed(target))
        ctx = self.context(self.pick_context(target)) if c.contextual else None
        ratio = self.mask_ratio_at(step)
        mean = self.decode(self.rssm.feat(post), ctx, mask_ratio=ratio)  # (B, T, 3, S, S)
        image_loss = -image_log_likelihood(mean, target).mean()
        kl_loss, kl_value = self.rssm.kl_loss(post, prior, c.kl_balance, c.kl_free)
        loss = c.image_scale * image_loss + c.kl_scale * kl_loss
        with torch.no_grad():
            metrics = {
                "loss": loss.item(),
                "image_loss": image_loss.item(),
                "image_mse": (mean - target).pow(2).mean().item(),  # per pixel and channel, [0, 1] intensity units
                "kl": kl_value.item(),
                "kl_loss": kl_loss.item(),
                "post_ent": self.rssm.entropy(post).mean().item(),
                "prior_ent": self.rssm.entropy(prior).mean().item(),
                "mask_ratio": ratio if c.contextual else 0.0,
            }
        return loss, metrics, post

    # ------------------------------------------------------------------ open-loop prediction
    @torch.no_grad()
    def predict_video(self, frames: np.ndarray | torch.Tensor, context_frames: np.ndarray | torch.Tensor | None = None,
                      open_loop_from: int = 5, sample: bool = False, seed: int | None = 0) -> np.ndarray:
        """Observe the first `open_loop_from` frames of uint8 clips `(B, T, S, S, 3)`, imagine the rest with the
        prior, and decode every step. Returns float32 `(B, T, S, S, 3)` in [0, 1]: reconstructions for
        t < open_loop_from, open-loop predictions after. `context_frames` `(B, S, S, 3)` uint8 defaults to each
        clip's first frame. Latents take the mode unless `sample`; `seed` fixes the context mask (ContextWM
        masks in every forward pass). The model runs in eval mode (BatchNorm running statistics)."""
        x = self.check_frames(frames)
        b, t = x.shape[:2]
        if not 1 <= open_loop_from <= t:
            raise ConfigError(f"open_loop_from must be in [1, T={t}], got {open_loop_from}")
        was_training = self.training
        self.eval()
        try:
            gen = None
            if seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(seed)
            images = preprocess(x)  # (B, T, 3, S, S)
            post, _ = self.rssm.observe(self.embed(images[:, :open_loop_from]), sample=sample)
            feats = [self.rssm.feat(post)]  # (B, k, F)
            if open_loop_from < t:
                last = {k: v[:, -1] for k, v in post.items()}
                prior = self.rssm.imagine(last, horizon=t - open_loop_from, sample=sample)
                feats.append(self.rssm.feat(prior))  # (B, T-k, F)
            ctx = None
            if self.config.contextual:
                if context_frames is None:
                    context_frames = x[:, 0]
                cf = torch.as_tensor(context_frames)
                if cf.dtype != torch.uint8 or tuple(cf.shape) != (b, *x.shape[2:]):
                    raise DatasetShapeError(f"context_frames must be uint8 {(b, *x.shape[2:])}, got {cf.dtype} "
                                            f"{tuple(cf.shape)}")
                ctx = self.context(cf)
            mean = self.decode(torch.cat(feats, 1), ctx, generator=gen)  # (B, T, 3, S, S)
            out = (mean + 0.5).clamp(0, 1).movedim(2, -1)  # (B, T, S, S, 3)
            return out.float().cpu().numpy()
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, step: int = 0, extra: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint folder (`contextwm.json` + `model.safetensors`) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            self.write_files(tmp, step, extra)
            replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def write_files(self, folder: Path, step: int, extra: dict[str, Any] | None = None) -> None:
        """Write the weights and `contextwm.json` into the existing `folder`: model.safetensors first, then the
        JSON (each atomic), so the JSON only ever names complete weights. `save` wraps this in a temp folder."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp))
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": self.config.to_dict(),
                "step": int(step), "embed_dim": self.embed_dim, "feat_dim": self.feat_dim,
                "rlpt_version": rlpt_version(), **(extra or {})}
        write_json(folder / META_FILE, meta)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `contextwm.json` of a checkpoint or run folder (its latest step checkpoint), with `folder`: where it
    was found."""
    return read_checkpoint_meta(path, META_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, kind="ContextWM",
                                command="rlpt pretrain contextwm")


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "auto") -> VideoWorldModel:
    """Rebuild a `VideoWorldModel` from a checkpoint folder or a `pretrain` output folder (its final model, else
    its latest checkpoint). The model is returned in train mode, like a freshly built one."""
    meta = read_meta(path)
    folder = Path(meta["folder"])
    config = WorldModelConfig.from_dict(meta["config"], source=str(folder / META_FILE))
    model = VideoWorldModel(config)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing")
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match the config in contextwm.json: {e}") from e
    return model.to(resolve_device(device))


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CONTEXT_CHOICES", "META_FILE", "VideoWorldModel",
           "WorldModelConfig", "load_pretrained", "read_meta"]
