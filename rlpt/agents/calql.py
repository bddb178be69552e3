"""Cal-QL: calibrated conservative Q-learning for offline-to-online fine-tuning (Nakamoto et al., NeurIPS 2023).

It is SAC with twin Q and a tanh-Gaussian actor, plus the CQL(H) regulariser, with one change (Cal-QL):
the Q value of every policy action inside the CQL log-sum-exp is clipped from below by the Monte-Carlo
return-to-go of the state, `max(Q(s, a_pi), G_MC(s))`, so Q values already below the behaviour policy's
return are not pushed down further. Online, training keeps the CQL term and draws half of every batch
from the offline data (`mix_ratio=0.5`); online transitions carry MC returns once their episode ends.

Per gradient step on a batch (s, a, r, s', d, G_MC):
- alpha:   L = -log_alpha * (log pi(a~|s) + target_entropy)          (automatic entropy, target -|A|)
- actor:   L = alpha log pi(a~|s) - min_k Q_k(s, a~)
- critic:  per head, (Q(s,a) - y)^2 + cql_alpha * (logsumexp(cat) - Q(s,a)),
           y = r + gamma (1-d) max_{10 samples a'} min_k Q_targ(s', a')         (max-target backup)
           cat = [Q(s, a_unif) - log 0.5^|A|,  max(Q(s, a'~pi(s')), G) - log pi,  max(Q(s, a~pi(s)), G) - log pi]
- Polyak update of the target critic.

Defaults follow the reference code (`nakamotoo/Cal-QL`, `JaxCQL/conservative_sac.py`) and the research note:
gamma 0.99, policy lr 1e-4, Q lr 3e-4, tau 5e-3, batch 256, 10 CQL actions, importance sampling, max-target
backup, orthogonal init, log-std offset -1, 2x256 policy and Q (AntMaze recipes: cql_alpha 5, Q 4x256,
reward x10 - 5, Lagrange with gap 0.8; Adroit: cql_alpha 1, 512-wide nets, reward x10 + 5).

    agent = CalQLConfig(cql_alpha=5.0).create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=1_000_000)
    agent.learn(env, total_timesteps=1_000_000, offline=dataset, mix_ratio=0.5)

Image observations (uint8 `(H, W, 3)`, e.g. tabletop with `pixels: true`) go through an encoder, then a
trunk (Linear -> LayerNorm -> tanh, `encoder_feature_dim` wide, as DrQ-v2) shared by actor and critics:
- `encoder=` given to the constructor (any `nn.Module` with `out_dim`), else
- `pretrained`: an encoder folder (`rlpt pretrain vptr` output, or `rlpt.nets.icvf.save_encoder`), e.g. V-PTR's
  ICVF encoder, else
- a fresh `ResNetEncoder(image_size=H, **encoder_config)` (scratch, PTR-style).
The critic loss trains trunk and (unless `freeze_encoder`) encoder; the actor sees detached features. With
`augment_shift > 0` every image of a training batch is randomly shifted by up to that many pixels (DrQ).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent
from rlpt.agents.common import (
    action_bounds,
    from_unit,
    generator_for,
    off_policy_learn,
    restore_buffer,
    run_callbacks,
    training_view,
)
from rlpt.data.buffers import ReplayBuffer
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError, DatasetShapeError
from rlpt.nets.critics import QEnsemble, soft_update
from rlpt.nets.mlp import TanhGaussianActor
from rlpt.nets.normalizer import ObsNormalizer


@dataclasses.dataclass
class CalQLConfig(AgentConfig):
    """Cal-QL / CQL hyperparameters (reference-code defaults)."""

    cql_alpha: float = 5.0  # weight of the conservative term (AntMaze 5, Adroit 1, CORL locomotion CQL 10)
    cql_n_actions: int = 10  # sampled actions per source (uniform, pi(s), pi(s')) in the logsumexp
    cql_importance_sample: bool = True  # subtract log densities (CQL(H) with importance sampling)
    cql_temperature: float = 1.0
    cql_lagrange: bool = False  # tune cql_alpha' so the CQL gap approaches cql_target_action_gap
    cql_target_action_gap: float = 0.8
    calql_bound: bool = True  # the Cal-QL change; False gives plain CQL
    max_target_backup: bool = True  # backup the max over cql_n_actions sampled next actions
    backup_entropy: bool = False
    discount: float = 0.99
    tau: float = 5e-3
    policy_lr: float = 1e-4
    q_lr: float = 3e-4
    alpha_lr: float = 1e-4  # entropy temperature (and Lagrange multiplier) lr; reference ties it to policy_lr
    auto_entropy: bool = True
    alpha: float = 1.0  # fixed (or initial) entropy temperature
    target_entropy: float | None = None  # None: -act_dim
    batch_size: int = 256
    policy_hidden: tuple[int, ...] = (256, 256)
    q_hidden: tuple[int, ...] = (256, 256)
    orthogonal_init: bool = True
    policy_log_std_offset: float = -1.0  # initial log-std bias (the reference adds -1 to the log-std head)
    normalize_obs: bool = True  # statistics frozen from the first dataset seen
    reward_scale: float = 1.0  # rewards become r * scale + bias before anything else (MC returns included)
    reward_bias: float = 0.0
    buffer_size: int = 1_000_000  # online replay capacity
    learning_starts: int = 0  # online env steps before updates start (uniform random actions without offline data)
    utd_ratio: int = 1  # gradient updates per online env step
    log_interval: int = 1000  # gradient steps (fit) / env steps (learn) between callback calls
    # --- image observations (ignored for state observations)
    pretrained: str | None = None  # encoder folder to start from (V-PTR: `rlpt pretrain vptr --out` folder)
    freeze_encoder: bool = False  # [ours] True: the encoder stays fixed (the trunk still learns)
    encoder_config: dict[str, Any] | None = None  # ResNetEncoder kwargs of a scratch encoder (None: its defaults)
    encoder_feature_dim: int = 256  # [ours] width of the trunk on encoder features (0: no trunk)
    augment_shift: int = 0  # [ours] random-shift augmentation of training images, in pixels (DrQ uses 4 at 84px)


def cql_ood_values(q_rand: torch.Tensor, q_pi: torch.Tensor, logp_pi: torch.Tensor, q_next: torch.Tensor,
                   logp_next: torch.Tensor, q_data: torch.Tensor, mc_returns: torch.Tensor | None,
                   act_dim: int, importance_sample: bool = True, temperature: float = 1.0) -> torch.Tensor:
    """The CQL log-sum-exp over sampled actions, with Cal-QL's lower bound. Returns (n_heads, B).

    q_rand, q_pi, q_next: (n_heads, B, N) Q at s of uniform actions, of a~pi(s) and of a'~pi(s');
    logp_pi, logp_next: (B, N) their log-probabilities; q_data: (n_heads, B) Q of the dataset action;
    mc_returns: (B,) Monte-Carlo returns, or None for plain CQL.
    """
    if mc_returns is not None:  # Cal-QL: policy-action values never count below the behaviour return
        bound = mc_returns.view(1, -1, 1)
        q_pi, q_next = torch.maximum(q_pi, bound), torch.maximum(q_next, bound)
    if importance_sample:
        log_uniform = act_dim * math.log(0.5)  # density of U[-1, 1]^A
        cat = torch.cat([q_rand - log_uniform, q_next - logp_next.unsqueeze(0), q_pi - logp_pi.unsqueeze(0)], -1)
    else:
        cat = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_pi], -1)
    return torch.logsumexp(cat / temperature, dim=-1) * temperature  # (n_heads, B)


@register_agent("calql")
class CalQL(Agent):
    config_class = CalQLConfig
    config: CalQLConfig

    def __init__(self, config: CalQLConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto", encoder: nn.Module | None = None):
        super().__init__(config, observation_space, action_space, device)
        if config.cql_n_actions < 1:
            raise ConfigError(f"CalQLConfig.cql_n_actions must be >= 1, got {config.cql_n_actions}")
        self.obs_dim, self.act_dim = int(np.prod(observation_space.shape)), int(action_space.shape[0])
        obs_shape = tuple(observation_space.shape or ())
        self.is_image = np.dtype(observation_space.dtype) == np.uint8 and len(obs_shape) == 3
        self.encoder: nn.Module | None = None
        self.trunk: nn.Module | None = None
        if encoder is not None and not self.is_image:
            raise ConfigError(f"CalQL: encoder= is for uint8 image observations (H, W, 3); this observation space is "
                              f"{observation_space}")
        if self.is_image:
            self.encoder, self.obs_dim = self._build_encoder(encoder, obs_shape)  # obs_dim: the features' width
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)
        self.target_entropy = (-float(self.act_dim) if config.target_entropy is None
                               else float(config.target_entropy))

        self.obs_norm = ObsNormalizer((self.obs_dim,) if self.is_image else obs_shape).to(self.device)  # identity
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, config.policy_hidden)
        if config.orthogonal_init:
            for layer in self.actor.latent_pi:
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, math.sqrt(2.0))
                    nn.init.zeros_(layer.bias)
            for head in (self.actor.mu, self.actor.log_std):
                nn.init.orthogonal_(head.weight, 1e-2)
                nn.init.zeros_(head.bias)
        with torch.no_grad():
            self.actor.log_std.bias.add_(config.policy_log_std_offset)
        self.actor.to(self.device)
        self.qf = QEnsemble(self.obs_dim, self.act_dim, config.q_hidden, n=2,
                            orthogonal_init=config.orthogonal_init).to(self.device)
        self.qf_target = copy.deepcopy(self.qf).requires_grad_(False)
        # log entropy temperature and log CQL Lagrange multiplier, saved with the weights
        self.log_temps = nn.ParameterDict({
            "log_alpha": nn.Parameter(torch.tensor(math.log(config.alpha))),
            "log_alpha_prime": nn.Parameter(torch.tensor(0.0))}).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.policy_lr)
        critic_params = list(self.qf.parameters())
        if self.encoder is not None:
            critic_params += list(self.trunk.parameters())
            if not config.freeze_encoder:
                critic_params += list(self.encoder.parameters())
        self.qf_opt = torch.optim.Adam(critic_params, lr=config.q_lr)
        self.alpha_opt = torch.optim.Adam([self.log_temps["log_alpha"]], lr=config.alpha_lr)
        self.alpha_prime_opt = torch.optim.Adam([self.log_temps["log_alpha_prime"]], lr=config.q_lr)

        self.gen = generator_for(self.device, config.seed)  # policy samples and uniform CQL actions
        self.stats_ready = False
        self.buffer: ReplayBuffer | None = None
        self._data: tuple[Dataset, Dataset] | None = None

    # -------------------------------------------------------------- image encoder
    def _build_encoder(self, encoder: nn.Module | None, obs_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
        """The image encoder (given, pretrained or scratch) and the trunk; returns (encoder, feature width)."""
        cfg = self.config
        h, w, c = obs_shape
        if c != 3 or h != w:
            raise ConfigError(f"CalQL: image observations must be square RGB (S, S, 3), got {obs_shape}")
        if encoder is None and cfg.pretrained is not None:
            from rlpt.nets.icvf import load_encoder

            encoder = load_encoder(cfg.pretrained)
        elif encoder is None:
            from rlpt.nets.conv import ResNetEncoder

            try:
                encoder = ResNetEncoder(**{**(cfg.encoder_config or {}), "image_size": h})
            except TypeError as e:
                raise ConfigError(f"CalQLConfig.encoder_config {cfg.encoder_config} is not ResNetEncoder kwargs: "
                                  f"{e}") from None
        if not isinstance(getattr(encoder, "out_dim", None), int):
            raise ConfigError(f"CalQL: the encoder ({type(encoder).__name__}) needs an integer `out_dim` attribute")
        size = getattr(encoder, "image_size", h)
        if size != h:
            where = f" (pretrained={cfg.pretrained})" if cfg.pretrained else ""
            raise ConfigError(f"CalQL: the encoder{where} takes {size}x{size} images but observations are {h}x{w}; "
                              f"pretrain at image_size {h} or change the env's image_size")
        encoder = encoder.to(self.device)
        if cfg.freeze_encoder:
            encoder.requires_grad_(False).eval()
        if cfg.encoder_feature_dim > 0:
            self.trunk = nn.Sequential(nn.Linear(encoder.out_dim, cfg.encoder_feature_dim),
                                       nn.LayerNorm(cfg.encoder_feature_dim), nn.Tanh()).to(self.device)
            return encoder, cfg.encoder_feature_dim
        self.trunk = nn.Identity()
        return encoder, int(encoder.out_dim)

    def _images(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as uint8 (B, H, W, 3): callers may pass them flattened or as floats of the pixel values."""
        x = obs.reshape(obs.shape[0], *self.observation_space.shape)
        return x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        """Random shift by up to `augment_shift` pixels per image, edges replicated: (B, H, W, C) -> same."""
        pad = self.config.augment_shift
        b, h, w, _ = x.shape
        d = torch.randint(-pad, pad + 1, (2, b, 1), generator=self.gen, device=self.device)
        rows = (torch.arange(h, device=self.device)[None] + d[0]).clamp(0, h - 1)  # (B, H)
        cols = (torch.arange(w, device=self.device)[None] + d[1]).clamp(0, w - 1)  # (B, W)
        return x[torch.arange(b, device=self.device)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def _encode(self, obs: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Image observations -> trunk features (B, F). `train`: augment, and let gradients reach the (unfrozen)
        encoder and the trunk; otherwise no gradients and batch-norm statistics are not updated."""
        x = self._images(obs)
        if train and self.config.augment_shift > 0:
            x = self._shift(x)
        x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if not train:
            with torch.no_grad():
                self.encoder.eval()
                return self.trunk(self.encoder(x).float())
        if self.config.freeze_encoder:
            with torch.no_grad():
                feat = self.encoder(x).float()
        else:
            self.encoder.train()
            feat = self.encoder(x).float()
        return self.trunk(feat)

    def _policy_input(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations (B, ...) -> the actor's input: normalised flat states, or image features."""
        return self._encode(obs) if self.encoder is not None else self.obs_norm(obs)

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return from_unit(self._unit_action(obs.flatten(1), deterministic), self.low_t, self.high_t)

    def _unit_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action, _ = self.actor.sample(self._policy_input(obs), deterministic=deterministic, generator=self.gen)
        return action

    # -------------------------------------------------------------- data
    def _freeze_stats(self, dataset: Dataset | None) -> None:
        if not self.stats_ready:
            if dataset is not None and self.config.normalize_obs and self.encoder is None:
                s = dataset.stats()
                self.obs_norm.set_stats(s["obs_mean"], s["obs_std"])
            self.stats_ready = True

    def _prepare(self, dataset: Dataset) -> Dataset:
        dataset.check_spaces(self.observation_space, self.action_space)
        if self.encoder is not None and dataset.observations.dtype != np.uint8:
            raise DatasetShapeError(f"{dataset.source}: image observations must be uint8, got "
                                    f"{dataset.observations.dtype}")
        self._freeze_stats(dataset)
        if self._data is None or self._data[0] is not dataset:
            view = training_view(dataset, self.low, self.high, self.config.reward_scale, self.config.reward_bias)
            self._data = (dataset, view)
        return self._data[1]

    def _transform_reward(self, r: float) -> float:
        return r * self.config.reward_scale + self.config.reward_bias

    @property
    def _mc_gamma(self) -> float | None:
        """Sample MC returns only when the Cal-QL bound needs them."""
        return self.config.discount if self.config.calql_bound else None

    # -------------------------------------------------------------- one gradient step
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        if self.encoder is None:
            obs = self.obs_norm(batch["observations"].flatten(1))  # (B, obs_dim)
            next_obs = self.obs_norm(batch["next_observations"].flatten(1))
        else:  # image features; obs carries gradients to the trunk (and encoder) through the critic loss only
            obs = self._encode(batch["observations"], train=True)  # (B, F)
            with torch.no_grad():
                next_obs = self._encode(batch["next_observations"], train=True)
        obs_pi = obs.detach()
        actions, rewards, terminals = batch["actions"], batch["rewards"], batch["terminals"]  # (B, A), (B,), (B,)
        B, N = obs.shape[0], cfg.cql_n_actions

        # entropy temperature and actor (SAC), on reparameterised actions
        new_actions, log_pi = self.actor.sample(obs_pi, generator=self.gen)  # (B, A), (B,)
        if cfg.auto_entropy:
            alpha_loss = -(self.log_temps["log_alpha"] * (log_pi + self.target_entropy).detach()).mean()
        else:
            alpha_loss = torch.zeros((), device=self.device)
        alpha = self.log_temps["log_alpha"].exp().detach()
        actor_loss = (alpha * log_pi - self.qf(obs_pi, new_actions).min(0).values).mean()

        # TD target: max over N sampled next actions of the min target Q (max-target backup)
        q_data = self.qf(obs, actions)  # (2, B)
        with torch.no_grad():
            n_next = N if cfg.max_target_backup else 1
            next_rep = next_obs.repeat_interleave(n_next, 0)  # (B*n, obs_dim)
            next_a, next_logp = self.actor.sample(next_rep, generator=self.gen)
            target_q = self.qf_target(next_rep, next_a).min(0).values.view(B, n_next)  # (B, n)
            target_q, best = target_q.max(1)  # (B,)
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_logp.view(B, n_next).gather(1, best[:, None]).squeeze(1)
            y = rewards + cfg.discount * (1.0 - terminals) * target_q  # (B,)
        td_loss = (q_data - y).pow(2).mean(1)  # (2,)

        # CQL term over uniform actions and policy actions at s and s', all evaluated at s
        obs_rep = obs.repeat_interleave(N, 0)  # (B*N, obs_dim)
        with torch.no_grad():
            rand_a = torch.rand((B * N, self.act_dim), generator=self.gen, device=self.device) * 2.0 - 1.0
            pi_a, pi_logp = self.actor.sample(obs_pi.repeat_interleave(N, 0), generator=self.gen)  # (B*N, A), (B*N,)
            next_pi_a, next_pi_logp = self.actor.sample(next_obs.repeat_interleave(N, 0), generator=self.gen)
        q_rand = self.qf(obs_rep, rand_a).view(2, B, N)
        q_pi = self.qf(obs_rep, pi_a).view(2, B, N)
        q_next = self.qf(obs_rep, next_pi_a).view(2, B, N)
        mc = batch["mc_returns"] if cfg.calql_bound else None
        ood = cql_ood_values(q_rand, q_pi, pi_logp.view(B, N), q_next, next_pi_logp.view(B, N), q_data, mc,
                             self.act_dim, cfg.cql_importance_sample, cfg.cql_temperature)  # (2, B)
        cql_gap = (ood - q_data).mean(1)  # (2,)
        if cfg.cql_lagrange:
            alpha_prime = self.log_temps["log_alpha_prime"].exp().clamp(0.0, 1e6)
            cql_loss = alpha_prime.detach() * cfg.cql_alpha * (cql_gap - cfg.cql_target_action_gap)
            alpha_prime_loss = -(alpha_prime * cfg.cql_alpha * (cql_gap.detach() - cfg.cql_target_action_gap)).mean()
        else:
            cql_loss = cfg.cql_alpha * cql_gap
        q_loss = td_loss.sum() + cql_loss.sum()

        # apply: temperature, actor, critic (all losses above used the pre-update parameters)
        if cfg.auto_entropy:
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.qf_opt.zero_grad()
        q_loss.backward()
        self.qf_opt.step()
        if cfg.cql_lagrange:
            self.alpha_prime_opt.zero_grad()
            alpha_prime_loss.backward()
            self.alpha_prime_opt.step()
        soft_update(self.qf_target, self.qf, cfg.tau)

        self.step += 1
        metrics = {"train/q_loss": q_loss.item(), "train/td_loss": td_loss.mean().item(),
                   "train/cql_gap": cql_gap.mean().item(), "train/actor_loss": actor_loss.item(),
                   "train/alpha": alpha.item(), "train/entropy": -log_pi.mean().item(),
                   "train/q_data": q_data.mean().item(), "train/q_pi": q_pi.mean().item()}
        if mc is not None:  # how often the Cal-QL bound lifted a policy-action value
            metrics["train/calql_bound_rate"] = (q_pi < mc.view(1, B, 1)).float().mean().item()
        return metrics

    # -------------------------------------------------------------- offline
    def fit(self, dataset: Dataset, n_steps: int, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        data = self._prepare(dataset)
        metrics: dict[str, Any] = {}
        for _ in range(n_steps):
            batch = data.sample(self.config.batch_size, rng=self.rng, device=self.device, gamma=self._mc_gamma)
            metrics = self.update(batch)
            if self.step % self.config.log_interval == 0 and not run_callbacks(callbacks, self.step, metrics):
                break
        return metrics

    # -------------------------------------------------------------- online
    def learn(self, env: gym.Env, total_timesteps: int, offline: Dataset | None = None,
              mix_ratio: float | None = 0.5, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        if self.encoder is not None and self.buffer is None:  # images stay uint8 in the replay buffer
            self.buffer = ReplayBuffer(self.config.buffer_size, tuple(self.observation_space.shape), self.act_dim,
                                       gamma=self.config.discount, obs_dtype=np.uint8)
        return off_policy_learn(self, env, total_timesteps, offline, mix_ratio, callbacks)

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        mods = {"actor": self.actor, "qf": self.qf, "qf_target": self.qf_target, "log_temps": self.log_temps,
                "obs_norm": self.obs_norm}
        if self.encoder is not None:
            mods.update(encoder=self.encoder, trunk=self.trunk)
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "qf": self.qf_opt, "alpha": self.alpha_opt,
                "alpha_prime": self.alpha_prime_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"torch_generator": self.gen.get_state(), "stats_ready": self.stats_ready,
                "buffer": self.buffer.state_dict() if self.buffer is not None else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "torch_generator" in state:
            self.gen.set_state(state["torch_generator"])
        self.stats_ready = bool(state.get("stats_ready", self.stats_ready))
        if state.get("buffer") is not None and self.encoder is not None:  # images stay uint8
            from rlpt.agents.base import tensor_to_numpy_tree

            buf = tensor_to_numpy_tree(state["buffer"])
            self.buffer = ReplayBuffer(int(buf["capacity"]), tuple(self.observation_space.shape), self.act_dim,
                                       gamma=float(buf["gamma"]), obs_dtype=np.uint8)
            self.buffer.load_state_dict(buf)
        elif state.get("buffer") is not None:
            self.buffer = restore_buffer(state["buffer"], tuple(self.observation_space.shape), self.act_dim)
