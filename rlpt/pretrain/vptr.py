"""V-PTR phase 1: intention-conditioned value function (ICVF) pretraining on action-free video.

V-PTR (Bhateja, Guo, Ghosh et al., 2023) pretrains a visual encoder by TD learning of an ICVF (Ghosh et al.,
ICML 2023) on video without actions or rewards, then runs offline RL (CQL/Cal-QL) on robot data from that
encoder and fine-tunes online. This module is the first phase; the encoder it writes is loaded by agents
through their `pretrained` config key (`rlpt train agents/vptr/tabletop-push.yaml pretrained=OUT`).

The value `V(s, s+, z)` (rlpt.nets.icvf: encoder + 2 multilinear heads) is trained on video transitions:
(s, s') are consecutive frames of a clip, and for each transition an outcome s+ and an intention z are drawn
as icvf_release's `GCSDataset` does: each is the current frame (p=0.2), a frame later in the same clip
(p=0.5, uniform between now and the clip's end) or a random frame of the batch (p=0.3); then s+ = z with
p=0.5. Rewards are shifted, r = 0 at the goal and -1 elsewhere, with mask 0 at the goal, so
V = -(discounted steps to reach s+). With a Polyak-averaged target copy V̄ (tau 0.005):

    q_k   = r(s, s+) + gamma * m(s, s+) * V̄_k(s', s+, z)                          # per ensemble member k
    adv   = r(s, z) + gamma * m(s, z) * min_k V̄_k(s', z, z) - mean_k V̄_k(s, z, z)
    L     = sum_k mean( |tau - 1(adv < 0)| * (q_k - V_k(s, s+, z))^2 )              # expectile tau = 0.9

The advantage under z weights transitions that move toward z, so the value becomes that of acting optimally
for z, which video without actions cannot say directly. Defaults are icvf_release's (`icvf_learner.py`,
`gc_dataset.py`): discount 0.99, expectile 0.9, Adam 5e-5 with eps 3.125e-4 for vision, batch 64.

`pretrain(videos, config, steps, out_dir)` writes a run folder like `rlpt pretrain contextwm`: `config.yaml`,
`metrics.csv`/`metrics.jsonl`, `checkpoints/step_*/` (resumable), and at the end `vptr.json` +
`model.safetensors` + `encoder.json` (the encoder's rebuild recipe) at its root. `load_encoder(out_dir)`
returns the encoder; `load_icvf(out_dir)` the whole value function.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlpt.config import validate as validate_config
from rlpt.errors import CheckpointError, ConfigError, DatasetDtypeError, DatasetError, DatasetShapeError
from rlpt.nets.icvf import ENCODER_CLASSES, ICVFValue, build_encoder, encoder_spec
from rlpt.nets.icvf import load_encoder as _load_encoder
from rlpt.pretrain.common import (
    MetricMeans,
    PeriodicCheckpoints,
    check_resume_config,
    load_training_state,
    open_run,
    save_training_checkpoint,
)
from rlpt.runs import MetricsLogger, progress
from rlpt.utils import (
    atomic_write,
    read_checkpoint_meta,
    resolve_device,
    rlpt_version,
    set_seed,
    spearman,
    to_jsonable,
    write_json,
)

RANDOM_GOALS = ("batch", "clip")  # ICVFConfig.random_goals
CHECKPOINT_FORMAT = "rlpt.vptr"
CHECKPOINT_VERSION = 1
META_FILE = "vptr.json"  # marks a V-PTR checkpoint folder


# ============================================================================ config
@dataclasses.dataclass
class ICVFConfig:
    """ICVF pretraining settings. Defaults are icvf_release's vision settings (`icvf_learner.get_default_config`,
    `GCSDataset.get_default_config`, XMagical batch 64) on ContextWM's 64x64 ResNet; `ICVFConfig.preset(name)`
    gives "paper", "cpu-small" and "tiny"."""

    name: str = "paper"
    # encoder: a class of rlpt.nets.icvf.ENCODER_CLASSES and its kwargs (image_size is added for ResNetEncoder)
    encoder: str = "ResNetEncoder"
    encoder_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"depth": 48, "res_depth": 3, "res_layers": 2, "norm": "layer"})
    image_size: int = 64  # frames are resized to this by the video loader (ResNetEncoder only)
    # value heads
    hidden: tuple[int, ...] = (256, 256)  # [paper] MLP sizes of phi, psi and T
    n_ensemble: int = 2  # [paper] heads sharing the encoder
    layer_norm: bool = False  # [paper] use_layer_norm (GELU + LayerNorm MLPs when True)
    # TD learning
    discount: float = 0.99  # [paper]
    expectile: float = 0.9  # [paper]
    tau: float = 0.005  # [paper] target_update_rate (Polyak)
    min_q: bool = True  # [paper] min over the ensemble in the advantage's next value
    # goal and intention sampling [paper: GCSDataset]
    p_currgoal: float = 0.2
    p_trajgoal: float = 0.5
    p_randomgoal: float = 0.3
    p_samegoal: float = 0.5
    # [ours] where the p_randomgoal goals come from: "batch" (the reference: a random frame of a random clip of
    # the batch) or "clip" (a random frame of the transition's own clip, earlier or later). With randomized
    # looks per clip, "batch" lets the value tell a far goal by its appearance alone; "clip" does not.
    random_goals: str = "batch"
    # [ours] floor the TD target of V(s, s+, z = s+) at the clip's own return when s+ is a later frame of the
    # transition's clip: the clip reaches s+ in k frames, so the optimal value is at least -(1 - gamma^k) / (1 -
    # gamma) (Cal-QL's calibration, for goals). It acts only where the value falls below that return.
    mc_floor: bool = False
    # [ours] on those rows, the target is (1 - mc_weight) * the TD target + mc_weight * the clip's own return (a
    # lambda-return-like mix: the video's behaviour value, which orders frames at once and is biased low)
    mc_weight: float = 0.0
    # optimisation
    lr: float = 5e-5  # [paper] vision learning rate
    adam_eps: float = 3.125e-4  # [paper]
    batch_size: int = 64  # [paper] XMagical (IMPALA encoder)
    clip_len: int = 25  # frames per sampled clip; transitions, future goals and intents come from one clip
    transitions_per_clip: int = 1  # [ours] transitions drawn from each sampled clip (batch_size / this clips)
    stride: int = 1  # frames between consecutive clip frames (video frame skip)
    grad_clip: float | None = None  # [ours] global grad-norm clip (None: none, as the reference)

    PRESETS = ("paper", "cpu-small", "tiny")

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ICVFConfig:
        """"paper": icvf_release's vision defaults on ContextWM's paper-size ResNet (64x64, depth 48, 3 stages;
        V-PTR itself used a ResNet-v2-50 at 224x224). "cpu-small": 32x32 frames, ResNet depth 16 with 2 stages
        (ContextWM's cpu-small encoder), batch 32 x 16-frame clips, lr 3e-4. "tiny": for tests (seconds)."""
        sizes: dict[str, dict[str, Any]] = {
            "paper": {},
            "cpu-small": dict(image_size=32, encoder_kwargs={"depth": 16, "res_depth": 2, "res_layers": 1,
                                                             "norm": "layer"},
                              batch_size=32, clip_len=16, transitions_per_clip=4, lr=3e-4, adam_eps=1e-5,
                              grad_clip=100.0),
            "tiny": dict(image_size=16, encoder_kwargs={"depth": 4, "res_depth": 1, "res_layers": 1, "norm": "layer"},
                         hidden=(32, 32), batch_size=8, clip_len=8, lr=1e-3, adam_eps=1e-8),
        }
        if name not in sizes:
            raise ConfigError(f"unknown V-PTR preset {name!r}; choose one of {list(sizes)}")
        return cls.from_dict({**sizes[name], "name": name, **overrides}, source=f"preset {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ICVFConfig:
        """Build from a dict, typed by the annotations (`rlpt.config.validate`), rejecting unknown keys (listing the
        valid ones) and invalid values."""
        try:
            return validate_config(cls, data, source)
        except ConfigError as e:  # __post_init__'s range checks do not know the source
            raise ConfigError(str(e) if str(e).startswith(f"{source}: ") else f"{source}: {e}") from None

    def replace(self, **changes: Any) -> ICVFConfig:
        return dataclasses.replace(self, **changes)  # validated by __post_init__

    @property
    def clips_per_batch(self) -> int:
        """Clips sampled per update: ceil(batch_size / transitions_per_clip)."""
        return -(-self.batch_size // self.transitions_per_clip)

    @property
    def pixels(self) -> bool:
        return self.encoder == "ResNetEncoder"

    def encoder_args(self) -> dict[str, Any]:
        """The encoder's constructor kwargs (image_size included for ResNetEncoder)."""
        return {**self.encoder_kwargs, "image_size": self.image_size} if self.pixels else dict(self.encoder_kwargs)

    def validate(self, source: str = "config") -> None:
        if self.encoder not in ENCODER_CLASSES:
            raise ConfigError(f"{source}: encoder must be one of {sorted(ENCODER_CLASSES)}, got {self.encoder!r}")
        probs = (self.p_currgoal, self.p_trajgoal, self.p_randomgoal)
        if min(probs) < 0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ConfigError(f"{source}: p_currgoal + p_trajgoal + p_randomgoal must be 1 (each >= 0), got {probs}")
        if self.p_currgoal >= 1.0:
            raise ConfigError(f"{source}: p_currgoal must be < 1, got {self.p_currgoal}")
        if self.random_goals not in RANDOM_GOALS:
            raise ConfigError(f"{source}: random_goals must be one of {list(RANDOM_GOALS)}, got {self.random_goals!r}")
        if not 0.0 <= self.p_samegoal <= 1.0:
            raise ConfigError(f"{source}: p_samegoal must be in [0, 1], got {self.p_samegoal}")
        if not 0.0 <= self.mc_weight <= 1.0:
            raise ConfigError(f"{source}: mc_weight must be in [0, 1], got {self.mc_weight}")
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"{source}: expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.discount < 1.0 or not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"{source}: need 0 <= discount < 1 and 0 < tau <= 1, got {self.discount}, {self.tau}")
        for key in ("batch_size", "n_ensemble", "stride", "transitions_per_clip"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{source}: {key} must be >= 1, got {getattr(self, key)}")
        if self.clip_len < 2:
            raise ConfigError(f"{source}: clip_len must be >= 2 (a transition needs two frames), got {self.clip_len}")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"{source}: hidden must be positive layer sizes, got {self.hidden}")
        if self.lr <= 0 or self.adam_eps <= 0:
            raise ConfigError(f"{source}: lr and adam_eps must be > 0, got {self.lr}, {self.adam_eps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{source}: grad_clip must be > 0 or None, got {self.grad_clip}")


def build_icvf(config: ICVFConfig) -> ICVFValue:
    """A freshly initialised ICVF value (encoder + heads) for `config`."""
    return ICVFValue(build_encoder(config.encoder, config.encoder_args()), config.hidden, config.n_ensemble,
                     config.layer_norm)


# ============================================================================ sampling
def sample_goals(own: np.ndarray, t: np.ndarray, n_clips: int, clip_len: int, rng: np.random.Generator,
                 p_currgoal: float, p_trajgoal: float, random_goals: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """Goal frames for transitions at frame `t` (B,) of clip `own` (B,), among `n_clips` clips of `clip_len`
    frames: `(clip (B,), frame (B,))`.

    As icvf_release's `GCDataset.sample_goals`: a random frame of a random clip (of the own clip when
    `random_goals="clip"`), replaced with probability p_trajgoal / (1 - p_currgoal) by a frame between t and the
    clip's end (round(t*u + end*(1-u)), u ~ U[0, 1)), then with probability p_currgoal by the current frame."""
    b = len(t)
    clip = rng.integers(0, n_clips, size=b)
    if random_goals == "clip":
        clip = own.copy()
    frame = rng.integers(0, clip_len, size=b)
    u = rng.random(b)
    future = np.round(t * u + (clip_len - 1) * (1.0 - u)).astype(np.int64)
    traj = rng.random(b) < p_trajgoal / (1.0 - p_currgoal)
    clip, frame = np.where(traj, own, clip), np.where(traj, future, frame)
    curr = rng.random(b) < p_currgoal
    return np.where(curr, own, clip), np.where(curr, t, frame)


def icvf_batch(clips: np.ndarray, rng: np.random.Generator, config: ICVFConfig,
               batch_size: int | None = None) -> dict[str, np.ndarray]:
    """An ICVF training batch from clips `(N, T, ...)` (uint8 frames `(N, T, H, W, 3)` or states `(N, T, D)`).

    `batch_size` transitions (default: one per clip), spread over the clips in turn, each at a frame
    t ~ U{0..T-2}: `observations`/`next_observations` (frames t and t+1), `goals` (s+), `intents` (z),
    `rewards`/`masks` for s+ and `desired_rewards`/`desired_masks` for z (0 / 0 when the goal is the current
    frame, else -1 / 1), `mc_returns` (the clip's discounted return to s+ when s+ = z is frame t + k >= t of the
    own clip, -(1 - gamma^k) / (1 - gamma); -inf otherwise), and the chosen indices (`clip`, `t`, `goal_clip`, ...)."""
    n, t_len = clips.shape[:2]
    b = n if batch_size is None else int(batch_size)
    own = np.arange(b) % n
    t = rng.integers(0, t_len - 1, size=b)
    z_clip, z_frame = sample_goals(own, t, n, t_len, rng, config.p_currgoal, config.p_trajgoal, config.random_goals)
    g_clip, g_frame = sample_goals(own, t, n, t_len, rng, config.p_currgoal, config.p_trajgoal, config.random_goals)
    same = rng.random(b) < config.p_samegoal
    g_clip, g_frame = np.where(same, z_clip, g_clip), np.where(same, z_frame, g_frame)
    at_goal = (g_clip == own) & (g_frame == t)
    at_intent = (z_clip == own) & (z_frame == t)
    # the clip's own discounted return to s+ (a lower bound of V(s, s+, s+)); -inf where it says nothing
    k = g_frame - t
    on_path = (g_clip == own) & (k >= 0) & (g_clip == z_clip) & (g_frame == z_frame)
    mc = -(1.0 - config.discount ** np.maximum(k, 0)) / (1.0 - config.discount)
    return {
        "observations": clips[own, t], "next_observations": clips[own, t + 1],
        "goals": clips[g_clip, g_frame], "intents": clips[z_clip, z_frame],
        "rewards": at_goal.astype(np.float32) - 1.0, "masks": 1.0 - at_goal.astype(np.float32),
        "desired_rewards": at_intent.astype(np.float32) - 1.0, "desired_masks": 1.0 - at_intent.astype(np.float32),
        "mc_returns": np.where(on_path, mc, -np.inf).astype(np.float32),
        "clip": own, "t": t, "goal_clip": g_clip, "goal_frame": g_frame, "intent_clip": z_clip, "intent_frame": z_frame,
    }


class ArrayClips:
    """Clips of `clip_len` frames cut at random from in-memory episodes `(N, L, ...)` (frames or states), with
    the `sample(batch_size, rng)` interface of `rlpt.data.video.VideoClips`."""

    def __init__(self, episodes: np.ndarray, clip_len: int, stride: int = 1):
        episodes = np.asarray(episodes)
        if episodes.ndim < 3:
            raise DatasetShapeError(f"episodes must be (N, L, ...) with a time axis, got shape {episodes.shape}")
        span = (clip_len - 1) * stride + 1
        if episodes.shape[1] < span:
            raise DatasetShapeError(f"episodes have {episodes.shape[1]} steps; clips of {clip_len} frames at stride "
                                    f"{stride} need {span}")
        self.episodes, self.clip_len, self.stride, self.span = episodes, clip_len, stride, span
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        ep = rng.integers(0, len(self.episodes), size=batch_size)
        start = rng.integers(0, self.episodes.shape[1] - self.span + 1, size=batch_size)
        idx = start[:, None] + self.stride * np.arange(self.clip_len)[None]  # (B, T)
        return self.episodes[ep[:, None], idx]


def open_video_source(videos: Any, config: ICVFConfig) -> Any:
    """Anything with `sample(batch_size, rng)` is used as is; an array `(N, L, ...)` becomes `ArrayClips`; paths
    (or lists of them) go to `rlpt.data.video.open_videos` at the config's clip length, stride and image size."""
    if hasattr(videos, "sample"):
        return videos
    if isinstance(videos, np.ndarray):
        return ArrayClips(videos, config.clip_len, config.stride)
    from rlpt.data.video import open_videos

    return open_videos(videos, clip_len=config.clip_len, stride=config.stride, image_size=config.image_size)


def check_clips(clips: np.ndarray, config: ICVFConfig) -> np.ndarray:
    """Raise a clear error unless clips fit the config: uint8 `(B, T, S, S, 3)` for pixels, `(B, T, ...)`
    numeric for states, with T >= 2."""
    clips = np.asarray(clips)
    if clips.ndim < 3 or clips.shape[1] < 2:
        raise DatasetShapeError(f"clips must be (B, T>=2, ...), got shape {clips.shape}")
    if config.pixels:
        want = (config.image_size, config.image_size, 3)
        if clips.dtype != np.uint8:
            raise DatasetDtypeError(f"video clips must be uint8 frames, got dtype {clips.dtype}")
        if clips.ndim != 5 or tuple(clips.shape[2:]) != want:
            raise DatasetShapeError(f"video clips must be (B, T, {want[0]}, {want[1]}, 3) for image_size "
                                    f"{config.image_size}, got shape {clips.shape}")
    elif clips.dtype.kind not in "biuf":
        raise DatasetDtypeError(f"state clips must be numeric, got dtype {clips.dtype}")
    return clips


# ============================================================================ loss and learner
def expectile_weights(adv: torch.Tensor, expectile: float) -> torch.Tensor:
    """`expectile` where the advantage is >= 0, `1 - expectile` where it is negative (icvf_release)."""
    return torch.where(adv >= 0, expectile, 1.0 - expectile)


def icvf_loss(value: ICVFValue, target: ICVFValue, batch: dict[str, torch.Tensor], config: ICVFConfig
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The ICVF TD loss (module docstring) on a batch of tensors from `icvf_batch`; returns (loss, metrics)."""
    s, s2, g, z = batch["observations"], batch["next_observations"], batch["goals"], batch["intents"]
    n = s.shape[0]
    with torch.no_grad():
        ft = target.encoder(torch.cat([s, s2, g, z]))  # (4B, F)
        ft_s, ft_s2, ft_g, ft_z = ft[:n], ft[n:2 * n], ft[2 * n:3 * n], ft[3 * n:]
        # V̄(s', s+, z), V̄(s', z, z) and V̄(s, z, z) in one call on 3B rows
        vt = target.values(torch.cat([ft_s2, ft_s2, ft_s]), torch.cat([ft_g, ft_z, ft_z]), ft_z.repeat(3, 1))
        next_v_gz, next_v_zz, v_zz = vt[:, :n], vt[:, n:2 * n], vt[:, 2 * n:].mean(0)  # (K, B), (K, B), (B,)
        q_gz = batch["rewards"] + config.discount * batch["masks"] * next_v_gz
        mc = batch["mc_returns"]
        if config.mc_floor:
            q_gz = torch.maximum(q_gz, mc)
        if config.mc_weight > 0:
            q_gz = torch.where(torch.isfinite(mc), (1.0 - config.mc_weight) * q_gz + config.mc_weight * mc, q_gz)
        next_v_zz = next_v_zz.min(0).values if config.min_q else next_v_zz.mean(0)  # (B,)
        q_zz = batch["desired_rewards"] + config.discount * batch["desired_masks"] * next_v_zz
        adv = q_zz - v_zz  # (B,): is s -> s' a good move toward z?
    v_gz = value(s, g, z)  # (K, B)
    loss = (expectile_weights(adv, config.expectile) * (q_gz - v_gz).pow(2)).mean(1).sum()
    metrics = {"loss": loss.item(), "v_gz": v_gz.mean().item(), "v_zz": v_zz.mean().item(),
               "adv_mean": adv.mean().item(), "abs_adv_mean": adv.abs().mean().item(),
               "accept_prob": (adv >= 0).float().mean().item(), "reward_mean": batch["rewards"].mean().item()}
    return loss, metrics


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """`target <- (1 - tau) * target + tau * source` over parameters in one fused call; buffers are copied."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


class ICVFLearner:
    """An ICVF value, its Polyak target and Adam: `update(clips)` is one gradient step on a batch of clips."""

    def __init__(self, config: ICVFConfig, device: str | torch.device = "auto"):
        config.validate()
        self.config, self.device = config, resolve_device(device)
        self.value = build_icvf(config).to(self.device)
        self.target = build_icvf(config).to(self.device).requires_grad_(False)
        self.target.load_state_dict(self.value.state_dict())
        self.optimizer = torch.optim.Adam(self.value.parameters(), lr=config.lr, eps=config.adam_eps, foreach=True)
        self.step = 0

    def tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Move the arrays of an `icvf_batch` to the device (frames stay uint8; the encoder preprocesses)."""
        out = {}
        for k in ("observations", "next_observations", "goals", "intents", "rewards", "masks", "desired_rewards",
                  "desired_masks", "mc_returns"):
            v = np.asarray(batch[k])
            out[k] = torch.as_tensor(v if v.dtype == np.uint8 else v.astype(np.float32), device=self.device)
        return out

    def update(self, clips: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """One step on clips `(N, T, ...)`: sample `batch_size` transitions with their goals and intents, descend
        the loss, update the target. Returns the loss metrics (plus `grad_norm`)."""
        clips = check_clips(clips, self.config)
        batch = self.tensors(icvf_batch(clips, rng, self.config, self.config.batch_size))
        self.value.train()
        self.target.train()  # batch statistics in both when the encoder uses batch norm
        loss, metrics = icvf_loss(self.value, self.target, batch, self.config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(self.value.parameters(), clip))
        self.optimizer.step()
        polyak_update(self.target, self.value, self.config.tau)
        self.step += 1
        return metrics

    def goal_values(self, clips: np.ndarray) -> np.ndarray:
        """V(s_t, s+ = z = last frame) for every frame t of each clip, ensemble mean: `(B, T)`."""
        return goal_values(self.value, check_clips(clips, self.config))


@torch.no_grad()
def goal_values(value: ICVFValue, clips: np.ndarray) -> np.ndarray:
    """V(s_t, s+ = z = last frame of the clip) for every frame t of clips `(B, T, ...)`, ensemble mean: `(B, T)`.
    Runs in eval mode and restores the module's mode."""
    was_training = value.training
    value.eval()
    b, t_len = clips.shape[:2]
    device = next(value.parameters()).device
    x = torch.as_tensor(clips.reshape(b * t_len, *clips.shape[2:]), device=device)
    if x.dtype != torch.uint8:
        x = x.float()
    f = value.encoder(x).view(b, t_len, -1)  # (B, T, F)
    goal = f[:, -1:].expand(b, t_len, f.shape[-1]).reshape(b * t_len, -1)
    v = value.values(f.reshape(b * t_len, -1), goal, goal).mean(0)
    value.train(was_training)
    return v.view(b, t_len).cpu().numpy()


def rank_order(values: np.ndarray) -> float:
    """Mean over rows of the rank correlation between t and `values[:, t]` (rows with constant values skipped)."""
    t = np.arange(values.shape[1])
    corr = [c for c in (spearman(t, row) for row in values) if np.isfinite(c)]
    return float(np.mean(corr)) if corr else float("nan")


def value_order(learner: ICVFLearner, clips: np.ndarray) -> float:
    """Mean over clips of the rank correlation between t and V(s_t, last frame, last frame): 1 when the value
    rises monotonically as the clip approaches its last frame (the ICVF sanity check on video)."""
    return rank_order(learner.goal_values(clips))


# ============================================================================ checkpoints
def _write_files(folder: Path, learner: ICVFLearner, step: int, extra: dict[str, Any] | None = None) -> None:
    """model.safetensors first, then encoder.json and vptr.json (each atomic), so the JSONs name complete weights."""
    tensors = {f"value.{k}": v.detach().cpu().contiguous() for k, v in learner.value.state_dict().items()}
    tensors.update({f"target.{k}": v.detach().cpu().contiguous() for k, v in learner.target.state_dict().items()})
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp))
    cfg = learner.config
    write_json(folder / "encoder.json", encoder_spec(cfg.encoder, cfg.encoder_args(), learner.value.encoder.out_dim,
                                                     weights="model.safetensors", prefix="value.encoder.",
                                                     source="rlpt pretrain vptr (ICVF)", step=int(step)))
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": cfg.to_dict(), "step": int(step),
            "encoder_out_dim": learner.value.encoder.out_dim, "rlpt_version": rlpt_version(), **(extra or {})}
    write_json(folder / META_FILE, meta)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `vptr.json` of a checkpoint or run folder (with `folder`: where it was found)."""
    return read_checkpoint_meta(path, META_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, kind="V-PTR",
                                command="rlpt pretrain vptr")


def load_icvf(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[ICVFValue, ICVFConfig]:
    """The pretrained ICVF value (encoder + heads, eval mode) and its config, from a checkpoint or run folder."""
    meta = read_meta(path)
    folder = Path(meta["folder"])
    config = ICVFConfig.from_dict(meta["config"], source=str(folder / META_FILE))
    value = build_icvf(config)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing")
    tensors = {k[len("value."):]: v for k, v in load_file(str(weights)).items() if k.startswith("value.")}
    try:
        value.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match the config in vptr.json: {e}") from e
    return value.to(resolve_device(device)).eval(), config


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The pretrained encoder (an `nn.Module` with `out_dim`) from a `pretrain` output, checkpoint or encoder
    folder; agents take it as `encoder=`, or read the same folder through their `pretrained` config key."""
    return _load_encoder(path, device=device)


def _save_training_checkpoint(folder: Path, learner: ICVFLearner, step: int, rng: np.random.Generator) -> None:
    save_training_checkpoint(folder, lambda tmp: _write_files(tmp, learner, step), learner.optimizer, step, rng)


def _load_training_checkpoint(folder: Path, learner: ICVFLearner, rng: np.random.Generator) -> int:
    saved = ICVFConfig.from_dict(read_meta(folder)["config"], source=str(folder / META_FILE))
    check_resume_config(saved, learner.config, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    for name, mod in (("value", learner.value), ("target", learner.target)):
        mod.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    learner.step = load_training_state(folder, learner.optimizer, rng, learner.device)
    return learner.step


# ============================================================================ pretraining loop
def pretrain(videos: Any, config: ICVFConfig | None = None, steps: int = 1000,
             out_dir: str | os.PathLike = "runs/vptr", seed: int = 0, resume: bool = False,
             device: str | torch.device = "auto", log_every: int = 50, eval_every: int = 500,
             checkpoint_every: int = 500, checkpoint_minutes: float = 10.0, eval_clips: int = 16,
             quiet: bool | None = None,
             callbacks: Sequence[Callable[[int, dict[str, Any]], bool | None]] = ()) -> Path:
    """ICVF pretraining for `steps` updates in total; returns `out_dir`, which then holds the final model.

    `videos`: a video folder / list file / manifest (or a list of them) for `rlpt.data.video.open_videos`, an
    array of episodes `(N, L, ...)` (frames or states), or any object with `sample(batch_size, rng)`. `out_dir`
    gets `config.yaml`, `metrics.csv`, `metrics.jsonl`, `tb/`, `checkpoints/step_*/` (optimizer and RNG state
    included), and at the end `vptr.json`, `model.safetensors`, `encoder.json` and `summary.json`. Every
    `eval_every` steps `eval/value_order` is measured on `eval_clips` fixed clips (rank correlation of
    V(s_t, last, last) with t; 1 = the value rises toward the clip's end). With `resume=True` the run continues
    from the latest checkpoint (same config required). Callbacks get `(step, metrics)` every `log_every`
    steps; returning False stops early (the final model is still written)."""
    config = config or ICVFConfig.preset("cpu-small")
    config.validate()
    if steps < 1 or log_every < 1 or checkpoint_every < 1 or eval_every < 1:
        raise ConfigError(f"steps, log_every, eval_every and checkpoint_every must be >= 1, got {steps}, "
                          f"{log_every}, {eval_every}, {checkpoint_every}")
    out = Path(out_dir)
    run, latest = open_run(out, META_FILE, "V-PTR", resume)
    rng = set_seed(seed)
    learner = ICVFLearner(config, device)
    start = 0
    if resume and latest is not None:
        start = _load_training_checkpoint(latest, learner, rng)
    source = open_video_source(videos, config)
    n_videos = len(source) if hasattr(source, "__len__") else None
    if n_videos == 0:
        raise DatasetError(f"{videos}: no usable videos (skipped: {getattr(source, 'skipped', [])[:5]})")
    fixed_clips = check_clips(source.sample(eval_clips, np.random.default_rng(seed + 1)), config)  # training video
    run.write_config({"vptr": config.to_dict(), "videos": str(videos) if not isinstance(videos, np.ndarray)
                      else f"<array {videos.shape}>", "steps": steps, "seed": seed,
                      "device": str(learner.device), "resumed_from": start or None})
    logger = MetricsLogger(run, resume_from_step=start if resume else None)
    means, t_start = MetricMeans("ICVF loss"), time.time()
    checkpoints = PeriodicCheckpoints(run, lambda folder, step: _save_training_checkpoint(folder, learner, step, rng),
                                      every=checkpoint_every, minutes=checkpoint_minutes)
    step, last_metrics, stopped = start, {}, False
    if start == 0:
        first = {"eval/value_order": value_order(learner, fixed_clips)}
        logger.log(0, first)
        last_metrics.update(first)
    try:
        with progress(total=steps, initial=start, desc=f"vptr icvf {config.name}", quiet=quiet) as bar:
            while step < steps and not stopped:
                means.add(step + 1, learner.update(source.sample(config.clips_per_batch, rng), rng))
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == steps:
                    row = means.row()
                    if step % eval_every == 0 or step == steps:
                        row["eval/value_order"] = value_order(learner, fixed_clips)
                    logger.log(step, row)
                    last_metrics.update(row)
                    bar.set_postfix(loss=f"{row['train/loss']:.3f}", v=f"{row['train/v_gz']:.1f}")
                    stopped = any(cb(step, row) is False for cb in callbacks)
                checkpoints.maybe(step)
        checkpoints.final(step)
        seconds = time.time() - t_start
        _write_files(out, learner, step, extra={"seed": seed})
        summary = {"steps": step, "resumed_from": start or None, "seconds": round(seconds, 1),
                   "updates_per_s": round((step - start) / max(seconds, 1e-9), 3), "videos": n_videos,
                   "skipped_videos": len(getattr(source, "skipped", []) or []), "final": last_metrics,
                   "encoder_out_dim": learner.value.encoder.out_dim, "config": config.to_dict()}
        run.write_summary(summary)
    finally:
        logger.close()
    return out


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "META_FILE", "RANDOM_GOALS", "ArrayClips", "ICVFConfig",
           "ICVFLearner", "build_icvf", "check_clips", "expectile_weights", "goal_values", "icvf_batch", "icvf_loss",
           "load_encoder", "load_icvf", "open_video_source", "pretrain", "rank_order", "read_meta", "sample_goals",
           "value_order"]
