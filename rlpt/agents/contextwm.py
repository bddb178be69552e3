"""ContextWM / APV fine-tuning: a Dreamer agent stacked on an action-free video world model.

Wu et al., "Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning"
(NeurIPS 2023, thuml/ContextWM `apv_finetune.py`), after Seo et al., "Reinforcement Learning with Action-Free
Pre-Training from Videos" (APV, ICML 2022), with DreamerV2's actor-critic (Hafner et al., ICLR 2021).

The world model (research note §1.3):
- `video`: the pretrained `VideoWorldModel` (from `rlpt pretrain contextwm`; built fresh when `pretrained` is
  None): the ResNet encoder e_t, the context encoder (contextual models), the decoder and the ACTION-FREE RSSM,
  whose features af_t = [h_t, z_t] summarise the video;
- `rssm`: a NEW action-conditioned RSSM (same sizes) whose "embedding" is af_t (or [e_t, af_t] with
  `concat_embed`, as for DMC), filtered with the real actions;
- heads on the action-conditioned features s_t: the (contextual) decoder (image MSE), a reward MLP trained on
  r_t + beta * r_int_t, an optional aux reward MLP on r_t, an optional continuation head.
  L = image + kl(rssm, balanced) + reward + aux_reward + af_kl_scale * kl(af_rssm)   (af_kl_scale 0 by default).
- The video-based intrinsic bonus r_int (`VideoIntrinsicBonus`): af_t averaged over 5 steps, projected to 128-d
  by a fixed random matrix, mean distance to the 16 nearest of the last 4096 such vectors, divided by a running
  magnitude. beta 0.1 for DMC (1.0 for Meta-World).

The actor-critic learns in imagination (DreamerV2): from every posterior state of the batch, the actor rolls the
action-conditioned prior forward `horizon` (15) steps; rewards come from the reward head, values from a slow
target critic (copied every 100 updates), and TD(lambda) targets (gamma 0.99, lambda 0.95) train the critic
(MSE) and the actor by backpropagating through the learned dynamics ("dynamics" gradients, continuous actions),
plus an entropy bonus 1e-4. The actor is a tanh-squashed Gaussian (DreamerV2 uses a truncated normal on DMC).

Online loop (`learn`): `prefill` env steps with uniform random actions, then `pretrain_updates` updates (the
encoder and the action-free RSSM frozen for the first `freeze_pretrained_steps` updates), then one update every
`train_every` env steps on `batch_size` sequences of `seq_len` steps from a replay of env steps (`is_first` marks
episode starts). Action repeat is the env's (`env_options: {action_repeat: 2}`), so evaluation repeats too.
`fit(dataset, n_steps)` trains the same way on a `Dataset` of image observations (e.g. target-task episodes).

Acting is recurrent: `predict(obs, state, episode_start)` carries both RSSMs' states and the last action (SB3's
recurrent signature; `rlpt.eval.evaluate` passes them through). Sizes follow the world-model presets
("paper", "cpu-small", "tiny"); with `pretrained`, the checkpoint's config fixes the world model (plain or
contextual) and the agent checkpoint stores it, so `rlpt.load` never needs the pretrained folder again.

    agent = ContextWMConfig(pretrained="runs/cwm_pretrain", preset="cpu-small").create(env.observation_space,
                                                                                         env.action_space)
    agent.learn(env, total_timesteps=100_000)
    action, state = agent.predict(obs, state=None, episode_start=np.array([True]))
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent, tensor_to_numpy_tree
from rlpt.agents.core import action_bounds, from_unit, to_unit
from rlpt.callbacks import run_callbacks
from rlpt.data.buffers import SequenceReplay
from rlpt.errors import CheckpointError, ConfigError, DatasetShapeError
from rlpt.nets.conv import image_log_likelihood, preprocess
from rlpt.nets.mlp import MLP
from rlpt.nets.policies import TanhNormalActor
from rlpt.nets.rssm import RSSM, State
from rlpt.nets.worldmodel import META_FILE, VideoWorldModel, WorldModelConfig, load_pretrained, read_meta

#: Hidden layers of the reward/aux/continuation heads, actor and critic per preset (paper: 4 x 400 ELU).
MLP_PRESETS: dict[str, tuple[int, ...]] = {"paper": (400, 400, 400, 400), "cpu-small": (256, 256), "tiny": (32,)}


@dataclasses.dataclass
class ContextWMConfig(AgentConfig):
    """APV/ContextWM fine-tuning hyperparameters. Defaults: thuml/ContextWM's DMC(-Remastered) fine-tuning config
    (research note §1.3-1.5); `preset` picks the sizes."""

    pretrained: str | None = None  # a `rlpt pretrain contextwm` output folder; None: the same model from scratch
    preset: str = "cpu-small"  # "paper" | "cpu-small" | "tiny": world model (from scratch) and MLP sizes
    # World-model config. Leave empty: it is filled from `pretrained` (its contextwm.json) or from `preset`, with
    # any keys given here overriding the preset (scratch only). A complete one (as a saved agent holds) fixes the
    # architecture and `pretrained` is then not read again: its weights are in the agent checkpoint.
    world_model: dict[str, Any] | None = None
    contextual: bool | None = None  # scratch: contextual or plain decoder (None: preset's); pretrained: must match
    concat_embed: bool = True  # the action-conditioned RSSM sees [e_t, af_t] (DMC, CARLA) instead of af_t only
    mlp_hidden: tuple[int, ...] | None = None  # heads, actor and critic (None: MLP_PRESETS[preset])
    # world-model loss
    kl_balance: float = 0.8
    kl_free: float = 1.0  # free nats (DMC, CARLA: 1.0; Meta-World: 0.0)
    kl_scale: float = 1.0
    af_kl_scale: float = 0.0  # KL of the action-free RSSM (0: it learns only through the other losses)
    image_scale: float = 1.0
    reward_scale: float = 1.0
    aux_reward_scale: float = 1.0  # aux head on the plain env reward (README: loss_scales.aux_reward 1.0); 0: none
    discount_head: bool = False  # learn p(continue | s) and use it in imagination (tasks that terminate)
    model_lr: float = 3e-4
    model_eps: float = 1e-5
    weight_decay: float = 1e-6
    grad_clip: float = 100.0
    # video-based intrinsic bonus
    intr_beta: float = 0.1  # DMC/CARLA 0.1, Meta-World 1.0; 0 turns the bonus off
    intr_window: int = 5
    intr_dim: int = 128
    intr_queue: int = 4096
    intr_k: int = 16
    intr_momentum: float = 0.99
    # actor-critic in imagination
    horizon: int = 15
    discount: float = 0.99
    lambda_: float = 0.95
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    ac_eps: float = 1e-5
    actor_entropy: float = 1e-4
    actor_min_std: float = 0.1
    slow_target_every: int = 100  # updates between hard copies of the critic into the target critic
    # training loop
    batch_size: int = 16
    seq_len: int = 50
    buffer_size: int = 1_000_000  # env steps kept (uint8 images; untouched rows cost no memory)
    prefill: int = 1000  # env steps of uniform random actions before the first update
    train_every: int = 5  # env steps per update
    pretrain_updates: int = 100  # updates run once, right after the prefill
    freeze_pretrained_steps: int = 0  # updates with the pretrained encoder and action-free RSSM frozen (MW: 100)
    log_interval: int = 1000  # env steps (learn) / updates (fit) between callback calls

    def __post_init__(self) -> None:
        if isinstance(self.mlp_hidden, list):  # from YAML/JSON
            self.mlp_hidden = tuple(self.mlp_hidden)
        if self.preset not in MLP_PRESETS:
            raise ConfigError(f"ContextWMConfig.preset must be one of {sorted(MLP_PRESETS)}, got {self.preset!r}")
        for key in ("horizon", "batch_size", "seq_len", "buffer_size", "train_every", "slow_target_every",
                    "log_interval", "intr_window", "intr_dim", "intr_k"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"ContextWMConfig.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("prefill", "pretrain_updates", "freeze_pretrained_steps"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"ContextWMConfig.{key} must be >= 0, got {getattr(self, key)}")
        if not (0.0 < self.discount <= 1.0 and 0.0 <= self.lambda_ <= 1.0):
            raise ConfigError(f"ContextWMConfig: need 0 < discount <= 1 and 0 <= lambda_ <= 1, got "
                              f"{self.discount}, {self.lambda_}")
        if self.intr_queue < self.intr_k:
            raise ConfigError(f"ContextWMConfig.intr_queue ({self.intr_queue}) must be >= intr_k ({self.intr_k})")

    def resolve_world_model(self) -> tuple[WorldModelConfig, bool]:
        """The world model's config, and whether pretrained weights must be loaded (a fresh agent with
        `pretrained`). Raises CheckpointError for a bad `pretrained` path, ConfigError for conflicting keys."""
        names = {f.name for f in dataclasses.fields(WorldModelConfig)}
        given = dict(self.world_model or {})
        if given and set(given) == names:  # a resolved config, e.g. from a saved agent: rebuild, do not reload
            return WorldModelConfig.from_dict(given, source="ContextWMConfig.world_model"), False
        if self.pretrained is not None:
            if given:
                raise ConfigError(f"ContextWMConfig.world_model overrides {sorted(given)} apply to training from "
                                  f"scratch; the pretrained checkpoint {self.pretrained} fixes the world model")
            path = Path(self.pretrained)
            if not path.exists():
                raise CheckpointError(f"pretrained={self.pretrained}: no such folder (expected the output of "
                                      f"`rlpt pretrain contextwm --out DIR`)")
            meta = read_meta(path)
            wm = WorldModelConfig.from_dict(meta["config"], source=str(Path(meta["folder"]) / META_FILE))
            if self.contextual is not None and self.contextual != wm.contextual:
                raise ConfigError(f"ContextWMConfig.contextual={self.contextual}, but the pretrained model "
                                  f"{self.pretrained} has contextual={wm.contextual} (leave contextual unset)")
            return wm, True
        if self.contextual is not None:
            given.setdefault("contextual", self.contextual)
        return WorldModelConfig.preset(self.preset, **given), False



class VideoIntrinsicBonus(nn.Module):
    """APV's video-based intrinsic bonus on action-free features.

    Features `(B, T, F)` are averaged over a causal window of `window` steps, projected to `dim` dimensions
    by a fixed random matrix, and compared with a FIFO queue of the last `queue_size` projected vectors:
    the bonus of a step is the mean distance to its `k` nearest neighbours in the queue (before this batch is
    pushed), divided by a running mean of its magnitude (momentum `momentum`). Everything lives in buffers,
    so the queue and the normaliser travel with the checkpoint.
    """

    def __init__(self, feat_dim: int, window: int = 5, dim: int = 128, queue_size: int = 4096, k: int = 16,
                 momentum: float = 0.99, seed: int = 0):
        super().__init__()
        if window < 1 or dim < 1 or k < 1 or queue_size < k:
            raise ConfigError(f"intrinsic bonus: need window >= 1, dim >= 1, k >= 1 and queue_size >= k; got "
                              f"window={window}, dim={dim}, k={k}, queue_size={queue_size}")
        self.window, self.k, self.momentum = int(window), int(k), float(momentum)
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("projection", torch.randn(feat_dim, dim, generator=gen) / math.sqrt(dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("magnitude", torch.ones(()))

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """`(B, T, F)` -> window-averaged random projections `(B, T, dim)`."""
        x = feat.transpose(1, 2)  # (B, F, T)
        x = F.pad(x, (self.window - 1, 0), mode="replicate")  # causal window, the first step repeated
        x = F.avg_pool1d(x, self.window, stride=1).transpose(1, 2)  # (B, T, F)
        return x @ self.projection

    def knn_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Mean distance of each row of `z (N, dim)` to its k nearest queued vectors; zeros while the queue is
        shorter than k."""
        n_queued = int(self.queue_count)
        if n_queued < self.k:
            return torch.zeros(z.shape[0], device=z.device)
        dist = torch.cdist(z, self.queue[:n_queued])  # (N, Q)
        return dist.topk(self.k, dim=1, largest=False).values.mean(1)

    def push(self, z: torch.Tensor) -> None:
        """Append rows `(N, dim)` to the FIFO queue (the oldest are overwritten)."""
        size = self.queue.shape[0]
        z = z[-size:]
        idx = (int(self.queue_ptr) + torch.arange(len(z), device=z.device)) % size
        self.queue[idx] = z
        self.queue_ptr.fill_((int(self.queue_ptr) + len(z)) % size)
        self.queue_count.fill_(min(int(self.queue_count) + len(z), size))

    @torch.no_grad()
    def forward(self, feat: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Normalised bonus `(B, T)` for action-free features `(B, T, F)`; `update` pushes them into the queue
        and updates the running magnitude."""
        b, t, _ = feat.shape
        z = self.embed(feat.float()).reshape(b * t, -1)  # (B*T, dim)
        bonus = self.knn_distance(z)  # (B*T,)
        if update:
            if int(self.queue_count) >= self.k:
                self.magnitude.mul_(self.momentum).add_((1.0 - self.momentum) * bonus.abs().mean())
            self.push(z)
        return (bonus / self.magnitude.clamp_min(1e-8)).reshape(b, t)


# ====================================================================== actor-critic pieces
def lambda_returns(reward: torch.Tensor, next_value: torch.Tensor, discount: torch.Tensor,
                   lam: float) -> torch.Tensor:
    """TD(lambda) targets along an imagined trajectory (time first).

    reward[t] = r_{t+1}, next_value[t] = v(s_{t+1}), discount[t] = gamma * continue(s_{t+1}), all `(H, N)`:
        G_t = r_{t+1} + discount_t * ((1 - lam) * v(s_{t+1}) + lam * G_{t+1}),    G_H = v(s_H).
    Returns `(H, N)`."""
    out = []
    last = next_value[-1]
    for t in reversed(range(reward.shape[0])):
        last = reward[t] + discount[t] * ((1.0 - lam) * next_value[t] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


def _mlp_head(feat_dim: int, hidden: Sequence[int]) -> MLP:
    return MLP(feat_dim, 1, hidden, activation="elu")


@contextlib.contextmanager
def _no_param_grads(*modules: nn.Module) -> Iterator[None]:
    """Stop gradients into these modules' parameters (activations still carry gradients through them)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ====================================================================== the agent
RecurrentState = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@register_agent("contextwm")
class ContextWM(Agent):
    """APV/ContextWM fine-tuning agent (see the module docstring). `predict` is recurrent: its state is
    `(af_deter, af_stoch, deter, stoch, last_action)`, numpy arrays with a leading batch axis."""

    config_class = ContextWMConfig
    trains_offline = True
    trains_online = True
    takes_pretrained = True
    config: ContextWMConfig

    def __init__(self, config: ContextWMConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        wm_config, load_weights = config.resolve_world_model()
        s = wm_config.image_size
        shape = tuple(getattr(observation_space, "shape", None) or ())
        if (not isinstance(observation_space, gym.spaces.Box) or observation_space.dtype != np.uint8
                or shape != (s, s, 3)):
            raise ConfigError(f"contextwm: the world model takes uint8 ({s}, {s}, 3) images, but the env observes "
                              f"{observation_space}; make the env with env_options {{pixels: true, image_size: {s}}} "
                              f"(no frame_stack)")
        self.obs_shape = shape
        self.act_dim = int(action_space.shape[0])
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)
        self.config = dataclasses.replace(config, world_model=wm_config.to_dict())  # saved: rebuilds without it
        cfg = self.config

        # world model: the pretrained (or fresh) video model + a new action-conditioned RSSM and heads
        self.video = load_pretrained(cfg.pretrained, self.device) if load_weights else VideoWorldModel(wm_config)
        self.video.to(self.device)
        af = self.video.rssm
        embed_dim = af.feat_dim + (self.video.embed_dim if cfg.concat_embed else 0)
        self.rssm = RSSM(embed_dim, self.act_dim, af.deter, af.hidden, af.stoch, af.discrete,
                         wm_config.unimix).to(self.device)
        feat_dim = self.rssm.feat_dim  # == af.feat_dim, so the pretrained decoder reads it
        hidden = tuple(cfg.mlp_hidden or MLP_PRESETS[cfg.preset])
        self.reward_head = _mlp_head(feat_dim, hidden).to(self.device)
        self.aux_reward_head = _mlp_head(feat_dim, hidden).to(self.device) if cfg.aux_reward_scale > 0 else None
        self.cont_head = _mlp_head(feat_dim, hidden).to(self.device) if cfg.discount_head else None
        self.bonus = VideoIntrinsicBonus(af.feat_dim, cfg.intr_window, cfg.intr_dim, cfg.intr_queue, cfg.intr_k,
                                         cfg.intr_momentum, seed=cfg.seed).to(self.device)
        # actor-critic
        self.actor = TanhNormalActor(feat_dim, self.act_dim, hidden, cfg.actor_min_std).to(self.device)
        self.critic = _mlp_head(feat_dim, hidden).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)

        v = self.video
        pretrained_parts = [v.encoder, v.rssm] + ([v.context_encoder] if v.context_encoder is not None else [])
        pretrained_ids = {id(p) for m in pretrained_parts for p in m.parameters()}
        others = [p for m in self._world_model_modules() for p in m.parameters() if id(p) not in pretrained_ids]
        self.model_opt = torch.optim.AdamW(
            [{"params": [p for m in pretrained_parts for p in m.parameters()]}, {"params": others}],
            lr=cfg.model_lr, eps=cfg.model_eps, weight_decay=cfg.weight_decay, foreach=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, eps=cfg.ac_eps, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, eps=cfg.ac_eps, foreach=True)

        self.buffer: SequenceReplay | None = None
        self.pretrain_done = False  # the `pretrain_updates` burst has run
        self.loaded_datasets: list[str] = []  # datasets already copied into the replay

    def _world_model_modules(self) -> list[nn.Module]:
        heads = [h for h in (self.aux_reward_head, self.cont_head) if h is not None]
        return [self.video, self.rssm, self.reward_head, *heads]

    def _set_training(self, mode: bool) -> None:
        for m in (*self._world_model_modules(), self.actor, self.critic):
            m.train(mode)

    # -------------------------------------------------------------- acting
    def initial_state(self, n: int = 1) -> tuple[torch.Tensor, ...]:
        """All-zeros recurrent state for `n` envs: (af_deter, af_stoch, deter, stoch, last_action)."""
        af, r, dev = self.video.rssm, self.rssm, self.device
        return (torch.zeros(n, af.deter, device=dev), torch.zeros(n, af.stoch, af.discrete, device=dev),
                torch.zeros(n, r.deter, device=dev), torch.zeros(n, r.stoch, r.discrete, device=dev),
                torch.zeros(n, self.act_dim, device=dev))

    @torch.no_grad()
    def _policy_step(self, obs: torch.Tensor, state: tuple[torch.Tensor, ...], is_first: torch.Tensor,
                     deterministic: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """uint8 obs `(N, S, S, 3)` + recurrent state -> (unit action `(N, A)`, next state). Deterministic: the
        latents' modes and the actor's mean; otherwise samples."""
        self._set_training(False)
        sample = not deterministic
        embed = self.video.encoder(obs)  # (N, E)
        af_post, _ = self.video.rssm.obs_step({"deter": state[0], "stoch": state[1]}, None, embed, is_first,
                                              sample=sample)
        af_feat = self.video.rssm.feat(af_post)  # (N, F)
        inp = torch.cat([embed, af_feat], -1) if self.config.concat_embed else af_feat
        post, _ = self.rssm.obs_step({"deter": state[2], "stoch": state[3]}, state[4], inp, is_first, sample=sample)
        action, _ = self.actor.sample(self.rssm.feat(post), deterministic=deterministic)  # (N, A) in [-1, 1]
        return action, (af_post["deter"], af_post["stoch"], post["deter"], post["stoch"], action)

    def predict(self, observation: np.ndarray, state: RecurrentState | None = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, RecurrentState]:
        """SB3's recurrent signature: actions for one observation `(S, S, 3)` or a batch `(N, S, S, 3)`, and the
        next state. `state=None` starts fresh; rows where `episode_start` is true restart from zeros."""
        obs = np.asarray(observation)
        single = obs.shape == self.obs_shape
        batch = obs[None] if single else obs
        if batch.ndim != 4 or batch.shape[1:] != self.obs_shape or batch.dtype != np.uint8:
            raise DatasetShapeError(f"contextwm.predict: expected uint8 observations {self.obs_shape} or (N, "
                                    f"*{self.obs_shape}), got {obs.dtype} {obs.shape}")
        n = len(batch)
        if state is None:
            tensors, start = self.initial_state(n), np.ones(n, bool)
        else:
            if len(state) != 5 or any(len(np.asarray(x)) != n for x in state):
                raise DatasetShapeError(f"contextwm.predict: state must be the 5 arrays predict returned for {n} "
                                        f"observation(s)")
            tensors = tuple(torch.as_tensor(np.asarray(x), device=self.device) for x in state)
            start = np.zeros(n, bool) if episode_start is None else np.broadcast_to(
                np.asarray(episode_start, bool).reshape(-1), (n,)).copy()
        action, new = self._policy_step(torch.as_tensor(batch, device=self.device), tensors,
                                        torch.as_tensor(start, device=self.device), deterministic)
        env_action = from_unit(action, self.low_t, self.high_t).cpu().numpy().astype(np.float32)
        out_state = tuple(x.cpu().numpy() for x in new)
        return (env_action[0] if single else env_action), out_state  # type: ignore[return-value]

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """One step from a fresh state (no memory between calls); roll out with `predict(obs, state, ...)`."""
        return self.predict(obs, deterministic=deterministic)[0]

    # -------------------------------------------------------------- world model
    def _observe(self, obs: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor
                 ) -> tuple[torch.Tensor, State, State, State, State, torch.Tensor]:
        """Filter sequences through both RSSMs: images `(B, L, 3, S, S)` preprocessed, actions `(B, L, A)`,
        is_first `(B, L)` -> (embed, af_post, af_prior, post, prior, af_feat)."""
        embed = self.video.embed(obs)  # (B, L, E)
        af_post, af_prior = self.video.rssm.observe(embed, None, is_first)
        af_feat = self.video.rssm.feat(af_post)  # (B, L, F)
        inp = torch.cat([embed, af_feat], -1) if self.config.concat_embed else af_feat
        post, prior = self.rssm.observe(inp, action, is_first)
        return embed, af_post, af_prior, post, prior, af_feat

    def _train_world_model(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, float], State, torch.Tensor]:
        cfg, dev = self.config, self.device
        self._set_training(True)
        images = preprocess(torch.as_tensor(batch["obs"], device=dev))  # (B, L, 3, S, S) in [-0.5, 0.5]
        action = torch.as_tensor(batch["action"], device=dev)  # (B, L, A)
        reward = torch.as_tensor(batch["reward"], device=dev)  # (B, L)
        is_first = torch.as_tensor(batch["is_first"], device=dev)
        cont = 1.0 - torch.as_tensor(batch["is_terminal"], device=dev).float()  # (B, L)
        _, af_post, af_prior, post, prior, af_feat = self._observe(images, action, is_first)
        feat = self.rssm.feat(post)  # (B, L, F)
        ctx = self.video.context(self.video.pick_context(images)) if self.video.config.contextual else None
        image_loss = -image_log_likelihood(self.video.decode(feat, ctx), images).mean()
        kl_loss, kl = self.rssm.kl_loss(post, prior, cfg.kl_balance, cfg.kl_free)
        af_kl_loss, af_kl = self.video.rssm.kl_loss(af_post, af_prior, cfg.kl_balance, cfg.kl_free)
        intr = self.bonus(af_feat.detach()) if cfg.intr_beta > 0 else torch.zeros_like(reward)  # (B, L)
        reward_loss = 0.5 * (self.reward_head(feat).squeeze(-1) - (reward + cfg.intr_beta * intr)).pow(2).mean()
        loss = cfg.image_scale * image_loss + cfg.kl_scale * kl_loss + cfg.reward_scale * reward_loss
        metrics: dict[str, float] = {}
        if cfg.af_kl_scale > 0:
            loss = loss + cfg.af_kl_scale * af_kl_loss
        if self.aux_reward_head is not None:
            aux_loss = 0.5 * (self.aux_reward_head(feat).squeeze(-1) - reward).pow(2).mean()
            loss = loss + cfg.aux_reward_scale * aux_loss
            metrics["train/aux_reward_loss"] = aux_loss.item()
        if self.cont_head is not None:
            cont_loss = F.binary_cross_entropy_with_logits(self.cont_head(feat).squeeze(-1), cont)
            loss = loss + cont_loss
            metrics["train/cont_loss"] = cont_loss.item()
        frozen = cfg.pretrained is not None and self.step < cfg.freeze_pretrained_steps
        self.model_opt.param_groups[0]["lr"] = 0.0 if frozen else cfg.model_lr
        self.model_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_([p for g in self.model_opt.param_groups for p in g["params"]],
                                             cfg.grad_clip)
        self.model_opt.step()
        metrics.update({"train/model_loss": loss.item(), "train/image_loss": image_loss.item(),
                        "train/kl": kl.item(), "train/af_kl": af_kl.item(), "train/reward_loss": reward_loss.item(),
                        "train/intr_reward": intr.mean().item(), "train/model_grad_norm": float(grad_norm),
                        "train/pretrained_frozen": float(frozen)})
        start = {k: v.detach().flatten(0, 1) for k, v in post.items()}  # (B*L, ...) imagination starts
        return metrics, start, cont.flatten()

    # -------------------------------------------------------------- actor-critic in imagination
    def imagine(self, start: State, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll the action-conditioned prior forward from `start` `(N, ...)` with the actor: features
        `(horizon + 1, N, F)` (start first) and the actions' log-probabilities `(horizon, N)`."""
        state, feats, logps = start, [self.rssm.feat(start)], []
        for _ in range(horizon):
            action, logp = self.actor.sample(feats[-1].detach())  # the actor sees stop-gradient features (DreamerV2)
            state = self.rssm.imagine_step(state, action)
            feats.append(self.rssm.feat(state))
            logps.append(logp)
        return torch.stack(feats), torch.stack(logps)

    def _train_actor_critic(self, start: State, start_cont: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        frozen = [m for m in (self.rssm, self.reward_head, self.cont_head) if m is not None]
        with _no_param_grads(*frozen):  # returns flow through the dynamics into the actor only
            feat, logp = self.imagine(start, cfg.horizon)  # (H+1, N, F), (H, N)
            reward = self.reward_head(feat[1:]).squeeze(-1)  # (H, N): r_{t+1}
            if self.cont_head is not None:
                disc = cfg.discount * torch.sigmoid(self.cont_head(feat[1:]).squeeze(-1))
            else:
                disc = torch.full_like(reward, cfg.discount)
            target = lambda_returns(reward, self.target_critic(feat[1:]).squeeze(-1), disc, cfg.lambda_)  # (H, N)
            with torch.no_grad():  # weight of step t: the probability of still being in the episode
                first = start_cont[None] if self.cont_head is not None else torch.ones_like(disc[:1])
                weight = torch.cumprod(torch.cat([first, disc[:-1]], 0), 0)  # (H, N)
        entropy = -logp  # (H, N) single-sample estimate
        actor_loss = -(weight * (target + cfg.actor_entropy * entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.actor_opt.step()

        value = self.critic(feat[:-1].detach()).squeeze(-1)  # (H, N)
        critic_loss = (0.5 * weight * (value - target.detach()).pow(2)).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
        self.critic_opt.step()
        return {"train/actor_loss": actor_loss.item(), "train/critic_loss": critic_loss.item(),
                "train/imag_reward": reward.mean().item(), "train/imag_return": target.mean().item(),
                "train/value": value.mean().item(), "train/actor_entropy": entropy.mean().item(),
                "train/actor_grad_norm": float(actor_norm), "train/critic_grad_norm": float(critic_norm)}

    # -------------------------------------------------------------- one update
    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One world-model step and one actor-critic step on sequences `batch` (as `SequenceReplay.sample`)."""
        if self.step % self.config.slow_target_every == 0:
            self.target_critic.load_state_dict(self.critic.state_dict())
        metrics, start, start_cont = self._train_world_model(batch)
        metrics.update(self._train_actor_critic(start, start_cont))
        self.step += 1
        return metrics

    def _sample(self) -> dict[str, np.ndarray]:
        assert self.buffer is not None
        return self.buffer.sample(self.config.batch_size, self.config.seq_len, self.rng)

    def _ensure_buffer(self) -> SequenceReplay:
        if self.buffer is None:
            self.buffer = SequenceReplay(self.config.buffer_size, self.obs_shape, self.act_dim)
        return self.buffer

    # -------------------------------------------------------------- offline data
    def add_dataset(self, dataset) -> int:
        """Copy a `Dataset`'s episodes into the replay (once per dataset); returns the steps added. Its image
        observations (or its `images` column) must match the agent's observation space."""
        key = f"{dataset.source}|{len(dataset)}|{dataset.num_episodes}"
        if key in self.loaded_datasets:
            return 0
        if dataset.act_dim != self.act_dim:
            raise DatasetShapeError(f"{dataset.source}: actions have {dataset.act_dim} dims; the env has "
                                    f"{self.act_dim}")
        if dataset.observations.dtype == np.uint8 and tuple(dataset.observations.shape[1:]) == self.obs_shape:
            obs, next_obs = dataset.observations, dataset.next_observations
        elif dataset.images is not None and tuple(dataset.images.shape[1:]) == self.obs_shape:
            obs, next_obs = dataset.images, None
        else:
            raise DatasetShapeError(f"{dataset.source}: contextwm trains on uint8 {self.obs_shape} images, but the "
                                    f"dataset has observations {dataset.observations.dtype} "
                                    f"{dataset.observations.shape[1:]} and images "
                                    f"{None if dataset.images is None else dataset.images.shape[1:]}")
        buf = self._ensure_buffer()
        actions = to_unit(dataset.actions, self.low, self.high)
        rewards, terminals = dataset.rewards.astype(np.float32), np.asarray(dataset.terminals, bool)
        bounds, added = dataset.episode_bounds(), 0
        for s, e in zip(bounds.starts, bounds.ends, strict=True):
            buf.add(obs[s], None, 0.0, is_first=True)
            for i in range(s + 1, e):  # row i: o_i reached by a_{i-1}, r_{i-1}
                buf.add(obs[i], actions[i - 1], float(rewards[i - 1]), is_first=False)
            added += e - s
            if next_obs is not None:
                buf.add(next_obs[e - 1], actions[e - 1], float(rewards[e - 1]), False, bool(terminals[e - 1]))
                added += 1
        self.loaded_datasets.append(key)
        return added

    def fit(self, dataset, n_steps: int, callbacks: Sequence[Callback] = (), eval_env: gym.Env | None = None
            ) -> dict[str, Any]:
        """`n_steps` updates (world model + actor-critic) on sequences of `dataset`'s image episodes, which join
        the replay (e.g. fine-tuning the world model on a target task's episodes before acting)."""
        self.add_dataset(dataset)
        buf = self._ensure_buffer()
        if len(buf) < self.config.seq_len:
            raise DatasetShapeError(f"{dataset.source}: {len(buf)} steps in the replay are fewer than seq_len "
                                    f"{self.config.seq_len}")
        sums: dict[str, float] = {}
        count, metrics = 0, {}
        for _ in range(n_steps):
            for k, v in self.update(self._sample()).items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.step % self.config.log_interval == 0:
                metrics = {k: v / count for k, v in sums.items()}
                sums, count = {}, 0
                if not run_callbacks(callbacks, self.step, metrics):
                    break
        return {k: v / count for k, v in sums.items()} if count else metrics

    # -------------------------------------------------------------- online
    def learn(self, env: gym.Env, total_timesteps: int, offline=None, mix_ratio: float | None = 0.5,
              callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        """`total_timesteps` more env steps: random actions for the first `prefill`, then the stochastic policy;
        `pretrain_updates` updates once the prefill is done, then one every `train_every` steps. `offline`
        episodes (image `Dataset`) join the replay and are sampled with the online ones (`mix_ratio` unused)."""
        cfg = self.config
        buf = self._ensure_buffer()
        if offline is not None:
            self.add_dataset(offline)
        obs, _ = env.reset(seed=cfg.seed + self.online_steps)
        buf.add(obs, None, 0.0, is_first=True)
        state, is_first = None, True
        ep_return, ep_length, returns, lengths, successes = 0.0, 0, [], [], []
        sums: dict[str, float] = {}
        count, metrics, t_log, steps_log = 0, {}, time.time(), 0
        for _ in range(total_timesteps):
            if self.online_steps < cfg.prefill:
                unit = self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
            else:
                if state is None:
                    state, is_first = self.initial_state(1), True
                obs_t = torch.as_tensor(np.asarray(obs)[None], device=self.device)
                action, state = self._policy_step(obs_t, state, torch.tensor([is_first], device=self.device),
                                                  deterministic=False)
                unit = action[0].cpu().numpy()
            is_first = False
            next_obs, reward, terminated, truncated, info = env.step(self.low + (unit + 1.0) * 0.5 * (self.high -
                                                                                                    self.low))
            buf.add(next_obs, unit, float(reward), is_first=False, is_terminal=bool(terminated))
            ep_return, ep_length = ep_return + float(reward), ep_length + 1
            self.online_steps += 1
            steps_log += 1
            if terminated or truncated:
                returns.append(ep_return)
                lengths.append(ep_length)
                successes.append(bool(info.get("success", info.get("is_success", False))))
                ep_return, ep_length = 0.0, 0
                obs, _ = env.reset()
                buf.add(obs, None, 0.0, is_first=True)
                state = None
            else:
                obs = next_obs
            if self.online_steps >= cfg.prefill and len(buf) >= cfg.seq_len:
                n_updates = int(self.online_steps % cfg.train_every == 0)
                if not self.pretrain_done:
                    n_updates, self.pretrain_done = n_updates + cfg.pretrain_updates, True
                for _ in range(n_updates):
                    for k, v in self.update(self._sample()).items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
            if self.online_steps % cfg.log_interval == 0:
                dt = max(time.time() - t_log, 1e-9)
                metrics = {k: v / count for k, v in sums.items()} if count else {}
                metrics.update({"online/buffer_size": len(buf), "online/updates": self.step,
                                "perf/sps": steps_log / dt})
                if returns:
                    metrics.update({"online/episode_return": float(np.mean(returns)),
                                    "online/episode_length": float(np.mean(lengths)),
                                    "online/success_rate": float(np.mean(successes)), "online/episodes": len(returns)})
                sums, count, returns, lengths, successes, t_log, steps_log = {}, 0, [], [], [], time.time(), 0
                if not run_callbacks(callbacks, self.online_steps, metrics):
                    break
        return metrics

    # -------------------------------------------------------------- analysis helpers
    @torch.no_grad()
    def features(self, obs: np.ndarray, actions: np.ndarray, is_first: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
        """Posterior features of uint8 image sequences `(B, T, S, S, 3)` with the env-bounded actions that led to
        each frame `(B, T, A)` (zeros at t=0): `af_feat` (action-free RSSM) and `feat` (action-conditioned),
        `(B, T, F)` each, latents at their modes (e.g. for state probes)."""
        self._set_training(False)
        x = self.video.check_frames(obs, "obs")
        images = preprocess(x)
        unit = torch.as_tensor(to_unit(np.asarray(actions, np.float32), self.low, self.high), device=self.device)
        first = None if is_first is None else torch.as_tensor(np.asarray(is_first, bool), device=self.device)
        embed = self.video.embed(images)
        af_post, _ = self.video.rssm.observe(embed, None, first, sample=False)
        af_feat = self.video.rssm.feat(af_post)
        inp = torch.cat([embed, af_feat], -1) if self.config.concat_embed else af_feat
        post, _ = self.rssm.observe(inp, unit, first, sample=False)
        return {"af_feat": af_feat.cpu().numpy(), "feat": self.rssm.feat(post).cpu().numpy()}

    @torch.no_grad()
    def predict_open_loop(self, obs: np.ndarray, actions: np.ndarray, context: int = 5, seed: int | None = 0
                          ) -> np.ndarray:
        """Observe the first `context` frames of uint8 sequences `(B, T, S, S, 3)` through both RSSMs, then
        imagine the rest with the action-conditioned prior under the given env-bounded actions `(B, T, A)`
        (action t leads to frame t) and decode every step with frame 0 as the context frame. Returns float32
        `(B, T, S, S, 3)` in [0, 1] (reconstructions, then open-loop predictions); latents at their modes."""
        self._set_training(False)
        x = self.video.check_frames(obs, "obs")
        b, t = x.shape[:2]
        if not 1 <= context <= t or np.asarray(actions).shape != (b, t, self.act_dim):
            raise DatasetShapeError(f"predict_open_loop: need 1 <= context <= T={t} and actions {(b, t, self.act_dim)}"
                                    f", got context={context}, actions {np.asarray(actions).shape}")
        images = preprocess(x)
        unit = torch.as_tensor(to_unit(np.asarray(actions, np.float32), self.low, self.high), device=self.device)
        embed = self.video.embed(images[:, :context])
        af_post, _ = self.video.rssm.observe(embed, None, sample=False)
        af_feat = self.video.rssm.feat(af_post)
        inp = torch.cat([embed, af_feat], -1) if self.config.concat_embed else af_feat
        post, _ = self.rssm.observe(inp, unit[:, :context], sample=False)
        feats = [self.rssm.feat(post)]
        if context < t:
            last = {k: v[:, -1] for k, v in post.items()}
            feats.append(self.rssm.feat(self.rssm.imagine(last, unit[:, context:], sample=False)))
        ctx = self.video.context(x[:, 0]) if self.video.config.contextual else None
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
        mean = self.video.decode(torch.cat(feats, 1), ctx, generator=gen)  # (B, T, 3, S, S)
        return (mean + 0.5).clamp(0, 1).movedim(2, -1).float().cpu().numpy()

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"video": self.video, "rssm": self.rssm, "reward_head": self.reward_head,
                                      "actor": self.actor, "critic": self.critic,
                                      "target_critic": self.target_critic, "bonus": self.bonus}
        if self.aux_reward_head is not None:
            mods["aux_reward_head"] = self.aux_reward_head
        if self.cont_head is not None:
            mods["cont_head"] = self.cont_head
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.model_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict() if self.buffer is not None else None,
                "pretrain_done": self.pretrain_done, "loaded_datasets": list(self.loaded_datasets)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pretrain_done = bool(state.get("pretrain_done", self.pretrain_done))
        self.loaded_datasets = list(state.get("loaded_datasets", self.loaded_datasets))
        if state.get("buffer") is not None:
            buf = tensor_to_numpy_tree(state["buffer"])
            self.buffer = SequenceReplay(int(buf["capacity"]), self.obs_shape, self.act_dim)
            try:
                self.buffer.load_state_dict(buf)
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"contextwm: the saved replay buffer does not fit this agent: {e}") from e
