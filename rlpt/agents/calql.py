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

Defaults follow the reference code (`nakamotoo/Cal-QL`); the per-domain settings are in docs/methods/calql.md.

    agent = CalQLConfig(cql_alpha=5.0).create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=1_000_000)
    agent.learn(env, total_timesteps=1_000_000, offline=dataset, mix_ratio=0.5)

Image observations (uint8 `(H, W, 3)`) go through an encoder (`encoder=`, a `pretrained` folder such as V-PTR's,
or a scratch `ResNetEncoder`; `rlpt.nets.encoders`), then a trunk (Linear -> LayerNorm -> tanh, as DrQ-v2) shared
by actor and critics; the critic loss trains trunk and (unless `freeze_encoder`) encoder, the actor sees detached
features, and `augment_shift` randomly shifts training images (DrQ).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import register_agent
from rlpt.agents.core import OfflineAgent, OffPolicyConfig
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError, DatasetShapeError
from rlpt.nets.critics import QEnsemble, cql_ood_values, soft_update
from rlpt.nets.encoders import ImageFeatures, build_image_encoder
from rlpt.nets.optim import adam
from rlpt.nets.policies import TanhGaussianActor, gaussian_sample


@dataclasses.dataclass
class CalQLConfig(OffPolicyConfig):
    """Cal-QL / CQL hyperparameters (reference-code defaults); rewards become `r * reward_scale + reward_bias`
    before anything else (MC returns included)."""

    cql_alpha: float = 5.0  # weight of the conservative term (AntMaze 5, Adroit 1, CORL locomotion CQL 10)
    cql_n_actions: int = 10  # sampled actions per source (uniform, pi(s), pi(s')) in the logsumexp
    cql_importance_sample: bool = True  # subtract log densities (CQL(H) with importance sampling)
    cql_temperature: float = 1.0
    cql_lagrange: bool = False  # tune cql_alpha' so the CQL gap approaches cql_target_action_gap
    cql_target_action_gap: float = 0.8
    calql_bound: bool = True  # the Cal-QL change; False gives plain CQL
    max_target_backup: bool = True  # backup the max over cql_n_actions sampled next actions
    backup_entropy: bool = False
    tau: float = 5e-3
    policy_lr: float = 1e-4
    q_lr: float = 3e-4
    alpha_lr: float = 1e-4  # entropy temperature (and Lagrange multiplier) lr; reference ties it to policy_lr
    auto_entropy: bool = True
    alpha: float = 1.0  # fixed (or initial) entropy temperature
    target_entropy: float | None = None  # None: -act_dim
    policy_hidden: tuple[int, ...] = (256, 256)
    q_hidden: tuple[int, ...] = (256, 256)
    orthogonal_init: bool = True
    policy_log_std_offset: float = -1.0  # initial log-std bias (the reference adds -1 to the log-std head)
    # --- image observations (ignored for state observations)
    pretrained: str | None = None  # encoder folder to start from (V-PTR: `rlpt pretrain vptr --out` folder)
    freeze_encoder: bool = False  # [ours] True: the encoder stays fixed (the trunk still learns)
    encoder_config: dict[str, Any] | None = None  # ResNetEncoder kwargs of a scratch encoder (None: its defaults)
    encoder_feature_dim: int = 256  # [ours] width of the trunk on encoder features (0: no trunk)
    augment_shift: int = 0  # [ours] random-shift augmentation of training images, in pixels (DrQ uses 4 at 84px)


@register_agent("calql")
class CalQL(OfflineAgent):
    config_class = CalQLConfig
    config: CalQLConfig
    trains_online = True
    takes_pretrained = True

    def __init__(self, config: CalQLConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto", encoder: nn.Module | None = None):
        super().__init__(config, observation_space, action_space, device)
        if config.cql_n_actions < 1:
            raise ConfigError(f"CalQLConfig.cql_n_actions must be >= 1, got {config.cql_n_actions}")
        if encoder is not None and not self.pixel_obs:
            raise ConfigError(f"CalQL: encoder= is for uint8 image observations (H, W, 3); this observation space is "
                              f"{observation_space}")
        self.image: ImageFeatures | None = None  # uint8 image observations: encoder + trunk
        if self.pixel_obs:
            h, w, c = self.obs_shape
            if c != 3 or h != w:
                raise ConfigError(f"CalQL: image observations must be square RGB (S, S, 3), got {self.obs_shape}")
            self.image = ImageFeatures(build_image_encoder("CalQL", self.obs_shape, encoder, config.pretrained,
                                                           config.encoder_config, freeze=config.freeze_encoder,
                                                           device=self.device),
                                       config.encoder_feature_dim, config.freeze_encoder, config.augment_shift)
        feat_dim = self.image.out_dim if self.image is not None else self.obs_dim
        self.target_entropy = -float(self.act_dim) if config.target_entropy is None else float(config.target_entropy)

        self.actor = TanhGaussianActor(feat_dim, self.act_dim, config.policy_hidden, config.orthogonal_init,
                                       config.policy_log_std_offset).to(self.device)
        self.qf = QEnsemble(feat_dim, self.act_dim, config.q_hidden, n=2,
                            orthogonal_init=config.orthogonal_init).to(self.device)
        self.qf_target = copy.deepcopy(self.qf).requires_grad_(False)
        # log entropy temperature and log CQL Lagrange multiplier, saved with the weights
        self.log_temps = nn.ParameterDict({
            "log_alpha": nn.Parameter(torch.tensor(math.log(config.alpha))),
            "log_alpha_prime": nn.Parameter(torch.tensor(0.0))}).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), lr=config.policy_lr)
        self.qf_opt = adam([*self.qf.parameters(), *(self.image.trainable() if self.image else [])], lr=config.q_lr)
        self.alpha_opt = adam([self.log_temps["log_alpha"]], lr=config.alpha_lr)
        self.alpha_prime_opt = adam([self.log_temps["log_alpha_prime"]], lr=config.q_lr)

    @property
    def encoder(self) -> nn.Module | None:
        return self.image.encoder if self.image is not None else None

    @property
    def trunk(self) -> nn.Module | None:
        return self.image.trunk if self.image is not None else None

    @property
    def mc_gamma(self) -> float | None:
        """Batches carry MC returns only when the Cal-QL bound needs them."""
        return self.config.discount if self.config.calql_bound else None

    # -------------------------------------------------------------- features
    def features(self, obs: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Observations (B, ...) -> the input of actor and critics: normalised flat states, or image features
        (`train`: augmented, with gradients to the trunk and unfrozen encoder)."""
        if self.image is None:
            return self.obs_norm(obs.flatten(1))
        x = obs.reshape(obs.shape[0], *self.obs_shape)  # uint8 (B, H, W, 3); floats of pixel values are rounded
        return self.image(x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8), train, self.gen)

    def policy_action(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.sample(self.features(obs), deterministic, self.gen)[0]

    def prepare(self, dataset: Dataset) -> Dataset:
        if self.image is not None and dataset.observations.dtype != np.uint8:
            raise DatasetShapeError(f"{dataset.source}: image observations must be uint8, got "
                                    f"{dataset.observations.dtype}")
        return super().prepare(dataset)

    # -------------------------------------------------------------- one gradient step
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        obs = self.features(batch["observations"], train=True)  # (B, F); images: gradients reach the trunk
        with torch.no_grad():
            next_obs = self.features(batch["next_observations"], train=True)
        obs_pi = obs.detach()  # the actor sees detached features
        actions, rewards, terminals = batch["actions"], batch["rewards"], batch["terminals"]  # (B, A), (B,), (B,)
        B, N, A = obs.shape[0], cfg.cql_n_actions, self.act_dim

        # entropy temperature and actor (SAC), on reparameterised actions
        new_actions, log_pi = self.actor.sample(obs_pi, generator=self.gen)  # (B, A), (B,)
        if cfg.auto_entropy:
            alpha_loss = -(self.log_temps["log_alpha"] * (log_pi + self.target_entropy).detach()).mean()
        alpha = self.log_temps["log_alpha"].exp().detach()
        actor_loss = (alpha * log_pi - self.qf(obs_pi, new_actions).min(0).values).mean()

        # every sampled action from one actor pass over the 2B distinct states: n_next at s' for the backup
        # (max-target), N at s and N at s' for CQL; the Gaussian of each state is repeated, not recomputed
        n_next = N if cfg.max_target_backup else 1
        with torch.no_grad():
            mean, log_std = self.actor(torch.cat([obs_pi, next_obs]))  # (2B, A) each
            pick = torch.cat([torch.arange(B, 2 * B, device=self.device).repeat_interleave(n_next),
                              torch.arange(B, device=self.device).repeat_interleave(N),
                              torch.arange(B, 2 * B, device=self.device).repeat_interleave(N)])
            sampled, logp = gaussian_sample(mean[pick], log_std[pick], generator=self.gen, squash=True)
            next_a, pi_a, next_pi_a = sampled.split([B * n_next, B * N, B * N])
            next_logp, pi_logp, next_pi_logp = logp.split([B * n_next, B * N, B * N])
            # TD target: max over the sampled next actions of the min target Q
            target_q = self.qf_target(next_obs.repeat_interleave(n_next, 0), next_a).min(0).values.view(B, n_next)
            target_q, best = target_q.max(1)  # (B,)
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_logp.view(B, n_next).gather(1, best[:, None]).squeeze(1)
            y = rewards + cfg.discount * (1.0 - terminals) * target_q  # (B,)
            rand_a = torch.rand((B * N, A), generator=self.gen, device=self.device) * 2.0 - 1.0

        # one critic pass over the data actions and the 3N CQL actions (uniform, pi(s), pi(s')), all at s
        q_all = self.qf(torch.cat([obs, obs.repeat_interleave(N, 0).repeat(3, 1)]),
                        torch.cat([actions, rand_a, pi_a, next_pi_a]))  # (2, B + 3BN)
        q_data = q_all[:, :B]  # (2, B)
        q_rand, q_pi, q_next = (q.reshape(2, B, N) for q in q_all[:, B:].split(B * N, dim=1))
        td_loss = (q_data - y).pow(2).mean(1)  # (2,)
        mc = batch["mc_returns"] if cfg.calql_bound else None
        ood = cql_ood_values(q_rand, q_pi, pi_logp.view(B, N), q_next, next_pi_logp.view(B, N), q_data, mc, A,
                             cfg.cql_importance_sample, cfg.cql_temperature)  # (2, B)
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

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        mods = {**super().modules(), "actor": self.actor, "qf": self.qf, "qf_target": self.qf_target,
                "log_temps": self.log_temps}
        if self.image is not None:
            mods.update(encoder=self.image.encoder, trunk=self.image.trunk)
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "qf": self.qf_opt, "alpha": self.alpha_opt,
                "alpha_prime": self.alpha_prime_opt}
