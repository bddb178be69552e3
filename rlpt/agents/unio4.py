"""Uni-O4 (Lei et al., ICLR 2024): one on-policy objective offline and online.

Offline, four phases run one after another over one cumulative gradient-step counter (`agent.step`), so
`fit(dataset, n_steps)` can be called in chunks and resumed from any checkpoint:

1. critics   IQL-style twin Q and V on the dataset (expectile loss on V, TD loss on Q through V);
2. dynamics  a probabilistic dynamics ensemble (elites by held-out loss), used only for evaluation;
3. bc        an ensemble of N Gaussian BC policies with a disagreement ("diversity") term;
4. improve   BPPO per member: the clipped PPO objective with advantages `min(Q1,Q2)(s,a) - V(s)`,
             `a ~ reference policy`; every `ope_interval` steps each member is scored by AM-Q (rollouts in
             the learned dynamics, scored by the fixed offline Q) and its reference ("old") policy is replaced
             by the current one only when the score beats the best so far (`accept_candidate`).

At the end, the member whose reference policy has the best OPE score is chosen (by OPE, not by env return unless
`select_by_env_return`), and its last iterate (`hand_off_policy="last"`, as the original) or its best-OPE
reference (`"reference"`) becomes `agent.actor`. Online, `learn` runs plain PPO from that actor (its
state-dependent std kept) with the offline V as the critic's initialisation and the dataset's observation
normalisation frozen.

    agent = UniO4Config(termination_fn="hopper").create(env.observation_space, env.action_space)
    agent.fit(dataset, n_steps=agent.offline_total_steps)
    agent.learn(env, total_timesteps=100_000)

Deviations from the original code (`Lei-Kun/Uni-O4`), each on purpose:
- dynamics training runs `dynamics_steps` minibatch steps and keeps each member's best-holdout snapshot
  instead of epoch-based early stopping (same effect, fits the step schedule);
- the member handed online is picked by OPE alone (its best reference score), where the original picks the
  best real-env return among the top-3 by OPE; `hand_off_policy` chooses its last iterate (the original's
  choice) or its best-OPE reference;
- critics use the dataset's true terminals (timeouts bootstrap), the original treats timeouts as terminal;
- the online actor keeps the offline log-std parametrisation exactly (the original re-squashes it);
- `online_reward_scale` is a constant; the offline V is rescaled by it exactly instead of being re-fitted.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from rlpt.agents.base import Agent, AgentConfig, register_agent
from rlpt.agents.core import action_bounds, from_unit, generator_for, return_range_scale, training_view
from rlpt.agents.ppo import PPOLearner, PPOSettings, check_spaces
from rlpt.agents.rollout import BatchedEnv
from rlpt.callbacks import Callback, run_callbacks
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError, DatasetShapeError
from rlpt.nets.critics import IQLCritic, QEnsemble, ValueNet
from rlpt.nets.dynamics import DynamicsEnsemble, TerminationFn, get_termination_fn
from rlpt.nets.encoders import build_image_encoder, channels_first
from rlpt.nets.ensemble import clip_grad_norm_per_member
from rlpt.nets.normalizer import ObsNormalizer
from rlpt.nets.optim import adam
from rlpt.nets.policies import GaussianPolicy, PolicyEnsemble, gaussian_sample

PHASES = ("critic", "dynamics", "bc", "improve")


# ============================================================================================== config
@dataclasses.dataclass
class UniO4Config(AgentConfig):
    """Uni-O4 hyperparameters. `[paper]` = the official code's default (D4RL locomotion), `[ours]` = chosen here.
    Paper step counts are GPU-scale; CPU recipes shrink the `*_steps` fields and `ope_horizon`."""

    # --- offline schedule: gradient steps per phase, run in this order
    critic_steps: int = 2_000_000  # [paper] v_steps
    dynamics_steps: int = 100_000  # [ours] the original trains by epochs until the holdout stops improving
    bc_steps: int = 400_000  # [paper]
    improve_steps: int = 10_000  # [paper] bppo_steps
    batch_size: int = 512  # [paper] critics, BC and BPPO
    gamma: float = 0.99  # [paper]
    state_norm: bool = True  # [paper] is_state_norm in all locomotion scripts; frozen online
    log_interval: int = 1000  # [ours] steps between callback calls (OPE evaluations are always reported)
    # --- IQL critics
    q_hidden: tuple[int, ...] = (1024, 1024)  # [paper]
    v_hidden: tuple[int, ...] = (512, 512, 512)  # [paper]
    critic_lr: float = 1e-4  # [paper]
    expectile: float = 0.7  # [paper] omega (AntMaze 0.9)
    tau: float = 0.005  # [paper] Polyak rate
    target_update_interval: int = 2  # [paper]
    normalize_reward: bool = False  # [ours] critics see r * 1000 / (max - min episode return), as CORL's IQL does;
    #   the online critic's initial V is rescaled back (to `online_reward_scale` units) at hand-off
    # --- BC ensemble
    ensemble_size: int = 4  # [paper] num_policies
    policy_hidden: tuple[int, ...] = (256, 256, 256)  # [paper] bc_depth=3, bc_hidden_dim=256
    policy_activation: str = "relu"  # [paper] (tanh for halfcheetah-m/mr)
    bc_lr: float = 1e-4  # [paper]
    diversity: str = "heuristic"  # [paper] kl_type: "heuristic" (code default), "kl" (='distribution'), "none"
    alpha_bc: float = 0.1  # [paper]
    # --- dynamics ensemble (OPE only)
    dynamics_ensemble_size: int = 7  # [paper]
    dynamics_elites: int = 5  # [paper]
    dynamics_hidden: tuple[int, ...] = (200, 200, 200, 200)  # [paper] gym
    dynamics_lr: float = 1e-3  # [paper] gym
    dynamics_batch_size: int = 256  # [paper]
    dynamics_holdout_frac: float = 0.2  # [paper] min(20%, 1000)
    dynamics_max_holdout: int = 1000  # [paper]
    dynamics_eval_interval: int = 1000  # [ours] steps between holdout evaluations
    termination_fn: str = "none"  # [paper] per task: "hopper", "walker2d", "halfcheetah", "none"
    # --- offline policy improvement (BPPO) and OPE
    improve_lr: float = 1e-4  # [paper] bppo_lr, decayed linearly to 0 over improve_steps
    clip_ratio: float = 0.25  # [paper]
    clip_decay_steps: int = 200  # [paper] clip decays linearly for this many steps, then stays
    entropy_coef: float = 0.0  # [paper] entropy_weight
    max_grad_norm: float = 0.5  # [paper]
    improve_clip_action: bool = False  # [paper] is_clip_action (Adroit only)
    ope_interval: int = 100  # [paper] eval_step
    ope_start_states: int = 512  # [paper]
    ope_horizon: int = 1000  # [paper] rollout_step (locomotion); 50-200 AntMaze, 5-100 Adroit
    ope_common_random_numbers: bool = False  # [ours] score every iterate from one fixed set of start states with
    #   the same model-noise stream (common random numbers): the same estimator, far less noise between the
    #   scores the acceptance rule compares. False: fresh start states each evaluation, as the original code
    ope_noise_repeats: int = 0  # [ours] >= 2: before improving, score every BC member this many times from fresh
    #   start states and model noise; the pooled SD of those scores is the OPE's own noise (`ope_noise_sd`)
    ope_accept_margin: float = 0.0  # [ours] accept a candidate only when its score beats the best so far by more
    #   than this many noise SDs (0 = the paper's rule: any improvement; needs ope_noise_repeats >= 2 when > 0)
    hand_off_policy: str = "last"  # [paper] "last": the chosen member's last iterate; "reference": its best-OPE
    #   reference policy (rlpt's default before the critic matched IQL's: better with an under-trained critic)
    select_by_env_return: bool = False  # [ours] if True, `fit` needs eval_env: best env return among top-k by OPE
    select_top_k: int = 3  # [paper] top-3 members by OPE are the candidates when selecting by env return
    eval_episodes: int = 10  # [paper]
    report_true_returns: bool = False  # [ours] also measure each OPE-scored iterate's env return with fit's
    #   eval_env, for the OPE-vs-truth correlation report only; selection never sees it
    report_episodes: int = 3  # [ours] episodes per iterate when report_true_returns
    # --- online PPO
    online_rollout_steps: int = 2048  # [paper]
    online_minibatch: int = 128  # [paper]
    online_epochs: int = 10  # [paper] scripts: hopper 5-10, hc 10-30, walker 20-30 (main.py default 30)
    online_actor_lr: float = 2e-5  # [paper] lr_a
    online_critic_lr: float = 2e-4  # [paper] lr_c
    online_gae_lambda: float = 0.95  # [paper]
    online_clip: float = 0.05  # [paper] also the value-clipping range
    online_entropy_coef: float = 0.01  # [paper]
    online_max_grad_norm: float = 0.5  # [paper]
    online_adam_eps: float = 1e-5  # [paper]
    online_lr_decay_steps: int = 3_000_000  # [paper] max_train_steps (linear decay to 0)
    online_reward_scale: float = 1.0  # [ours] constant; the original uses "number" (x0.1) or "dynamic" per task
    # --- image observations
    pretrained: str | None = None  # [ours] image encoder folder (`rlpt pretrain vptr` output); also `encoder=`
    freeze_encoder: bool = True  # [ours] a trainable encoder learns from the Q loss offline and V loss online

    @property
    def offline_total_steps(self) -> int:
        return self.critic_steps + self.dynamics_steps + self.bc_steps + self.improve_steps

    def phase_lengths(self) -> tuple[int, ...]:
        return (self.critic_steps, self.dynamics_steps, self.bc_steps, self.improve_steps)


# ============================================================================================== losses
def diversity_bc_losses(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, alpha: float,
                        kind: str = "heuristic") -> torch.Tensor:
    """Per-member BC loss with Uni-O4's disagreement term: (N,) from mean/log_std (N, B, A), actions (B, A).

    - "none":      L_i = -log pi_i(a|s)
    - "heuristic": L_i = -log pi_i(a|s) - alpha * (log pi_i(a|s) - sg[max_{j!=i} log pi_j(a|s)])
                   (the original code's default). The max is detached, so the gradient is exactly
                   (1 + alpha) times plain BC's: a constant rescale that Adam all but cancels.
    - "kl":        L_i = -log pi_i(a|s) - alpha * KL(pi_i(.|s) || sg[pi_j*(.|s)]), j* = argmax_{j!=i} log pi_j(a|s)
                   (the original's kl_type='distribution'): member i is pushed away from the other member that
                   best explains the data action.
    """
    n = mean.shape[0]
    dist = Normal(mean, log_std.exp())
    logp = dist.log_prob(actions.unsqueeze(0)).sum(-1)  # (N, B)
    bc = -logp.mean(1)  # (N,)
    if kind == "none" or n == 1 or alpha == 0.0:
        return bc
    others = logp.detach().unsqueeze(0).expand(n, n, -1).clone()  # (N_i, N_j, B): log pi_j for row i
    others[torch.arange(n), torch.arange(n)] = -torch.inf  # exclude j == i
    best_other, j_star = others.max(1)  # (N, B) each
    if kind == "heuristic":
        return bc - alpha * (logp - best_other).mean(1)
    if kind == "kl":
        batch = torch.arange(mean.shape[1], device=mean.device)
        other_mean = mean.detach()[j_star, batch]  # (N, B, A)
        other_std = log_std.detach().exp()[j_star, batch]
        kl = kl_divergence(dist, Normal(other_mean, other_std)).sum(-1)  # (N, B)
        return bc - alpha * kl.mean(1)
    raise ConfigError(f"UniO4Config.diversity must be 'heuristic', 'kl' or 'none', got {kind!r}")


def accept_candidate(candidate_score: float, best_score: float, margin: float = 0.0) -> bool:
    """Uni-O4's acceptance rule (§1.7): accept the candidate when its OPE score beats the best score so far by
    more than `margin` (0 in the paper; rlpt can require the OPE's measured noise). The caller then makes the
    reference (PPO anchor) a copy of the candidate; a rejected candidate keeps training against the old
    reference. NaN/inf scores are never accepted."""
    return math.isfinite(candidate_score) and candidate_score > best_score + margin


@torch.no_grad()
def amq_score(policy: GaussianPolicy, dynamics: DynamicsEnsemble, q_net: QEnsemble, start_states: torch.Tensor,
              horizon: int, features, termination_fn: TerminationFn,
              generator: torch.Generator | None = None) -> float:
    """AM-Q: roll the policy's mean action through the learned dynamics from `start_states` (B, D) for up to
    `horizon` steps and average the fixed offline `min(Q1, Q2)(s_t, a_t)` over every visited (s_t, a_t).
    Rollouts stop at a predicted termination (or a non-finite state); `features` maps dynamics states to the
    policy's/critic's input."""
    states = start_states
    total, count = 0.0, 0
    for _ in range(horizon):
        x = features(states)  # (b, F)
        action = policy(x)[0]  # (b, A): the mean, in (-1, 1)
        total += q_net(x, action).min(0).values.sum().item()
        count += states.shape[0]
        states, _, done = dynamics.step(states, action, termination_fn, generator)
        alive = ~done & torch.isfinite(states).all(-1)
        states = states[alive]
        if states.shape[0] == 0:
            break
    return total / max(count, 1)


# ============================================================================================== agent
@register_agent("unio4")
class UniO4(Agent):
    config_class = UniO4Config
    config: UniO4Config
    trains_offline = True
    trains_online = True
    scores_with_env = True
    reports_ope = True
    takes_pretrained = True

    def __init__(self, config: UniO4Config, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto", encoder: nn.Module | None = None):
        super().__init__(config, observation_space, action_space, device)
        if config.diversity not in ("heuristic", "kl", "none"):
            raise ConfigError(f"UniO4Config.diversity must be 'heuristic', 'kl' or 'none', got {config.diversity!r}")
        if config.ensemble_size < 1:
            raise ConfigError(f"UniO4Config.ensemble_size must be >= 1, got {config.ensemble_size}")
        if config.hand_off_policy not in ("last", "reference"):
            raise ConfigError(f"UniO4Config.hand_off_policy must be 'last' or 'reference', got "
                              f"{config.hand_off_policy!r}")
        if config.ope_accept_margin < 0 or (config.ope_accept_margin > 0 and config.ope_noise_repeats < 2):
            raise ConfigError(f"UniO4Config.ope_accept_margin={config.ope_accept_margin} must be >= 0, and > 0 needs "
                              f"ope_noise_repeats >= 2 to measure the noise (got {config.ope_noise_repeats})")
        if min(config.phase_lengths()) < 0:
            raise ConfigError(f"UniO4Config phase steps must be >= 0, got {config.phase_lengths()}")
        obs_shape = tuple(observation_space.shape or ())
        is_image = np.dtype(observation_space.dtype) == np.uint8 and len(obs_shape) >= 3
        if is_image or encoder is not None or config.pretrained is not None:
            encoder = build_image_encoder("UniO4", obs_shape, encoder, config.pretrained, scratch=False,
                                          freeze=config.freeze_encoder, device=self.device)
        self.low, self.high = action_bounds(action_space)
        self.low_t = torch.as_tensor(self.low, device=self.device)
        self.high_t = torch.as_tensor(self.high, device=self.device)
        act_dim = int(action_space.shape[0])

        # Observations -> "dynamics state" (raw flat state, or encoder features) -> normalised features.
        self.encoder = encoder
        feat_dim = int(self.encoder.out_dim) if self.encoder is not None else int(np.prod(obs_shape))
        self.normalizer = ObsNormalizer((feat_dim,)).to(self.device)  # identity until dataset stats are set
        self.termination_fn = get_termination_fn(config.termination_fn)

        # Offline nets. The critics are IQL's (one implementation shared with the IQL agent).
        encoder_params = [] if self.encoder is None or config.freeze_encoder else list(self.encoder.parameters())
        self.critic = IQLCritic(feat_dim, act_dim, config.q_hidden, config.v_hidden, config.critic_lr,
                                config.expectile, config.gamma, config.tau, config.target_update_interval,
                                extra_q_params=encoder_params).to(self.device)
        self.policies = PolicyEnsemble(config.ensemble_size, feat_dim, act_dim, config.policy_hidden,
                                       config.policy_activation).to(self.device)
        self.ref_policies = copy.deepcopy(self.policies).requires_grad_(False)  # BPPO anchors ("old" policies)
        self.dynamics = DynamicsEnsemble(feat_dim, act_dim, config.dynamics_ensemble_size, config.dynamics_elites,
                                         config.dynamics_hidden).to(self.device)
        self.dynamics_best = copy.deepcopy(self.dynamics).requires_grad_(False)  # best-holdout snapshot per member
        # Online nets: filled from the offline ones at hand-off.
        self.actor = GaussianPolicy(feat_dim, act_dim, config.policy_hidden, config.policy_activation).to(self.device)
        self.online_v = ValueNet(feat_dim, config.v_hidden).to(self.device)

        self.dyn_opt = adam(self.dynamics.parameters(), lr=config.dynamics_lr)
        self.bc_opt = adam(self.policies.parameters(), lr=config.bc_lr)
        self.improve_opt = adam(self.policies.parameters(), lr=config.improve_lr)
        self.actor_opt = adam(self.actor.parameters(), lr=config.online_actor_lr,
                                          eps=config.online_adam_eps)
        self.online_v_opt = adam([*self.online_v.parameters(), *encoder_params],
                                             lr=config.online_critic_lr, eps=config.online_adam_eps)

        self.gen = generator_for(self.device, config.seed)
        self.ppo = PPOLearner(self.actor, self.online_v, self._features, self._ppo_settings(),
                              self.actor_opt, self.online_v_opt, self.low_t, self.high_t, self.gen, self.rng)
        self.stats_ready = False
        self.reward_factor = 1.0  # critics' reward scale (normalize_reward), frozen with the statistics
        self.best_ope = [-math.inf] * config.ensemble_size  # best AM-Q score of each member's reference
        # [step, member, score, accepted, true_return (nan unless report_true_returns)] per evaluated iterate
        self.ope_history: list[list[float]] = []
        self.ope_start_idx: np.ndarray | None = None  # fixed OPE start rows (ope_common_random_numbers)
        self.ope_noise_sd = 0.0  # the OPE's own noise (ope_noise_repeats), measured on the BC members
        self.selected = -1  # member handed to the online phase
        self.handed_off = False
        self._eval_env: gym.Env | None = None  # set by fit(); reporting and select_by_env_return only
        self._data: tuple[Dataset, Dataset, np.ndarray, np.ndarray] | None = None  # source, view, train, holdout
        self._online: BatchedEnv | None = None  # live env state between `learn` calls (not checkpointed)

    @property
    def offline_total_steps(self) -> int:
        return self.config.offline_total_steps

    def phase(self, step: int | None = None) -> tuple[str, int, int]:
        """(phase name, step within the phase, phase length) at cumulative offline `step` ("done" at the end)."""
        step = self.step if step is None else step
        for name, length in zip(PHASES, self.config.phase_lengths(), strict=True):
            if step < length:
                return name, step, length
            step -= length
        return "done", step, 0

    # ------------------------------------------------------------------------------------------ features
    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations (B, *obs_shape) -> dynamics states (B, D): the flat state, or encoder features."""
        if self.encoder is None:
            return obs.flatten(1).float()
        x = channels_first(obs)
        if self.config.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x).float()
        return self.encoder(x).float()

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations -> the (normalised) input of policies and critics, (B, F)."""
        return self.normalizer(self._encode(obs))

    def _encode_chunked(self, obs: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self._encode(obs[i:i + chunk]) for i in range(0, len(obs), chunk)])

    # ------------------------------------------------------------------------------------------ acting
    def acting_policy(self) -> GaussianPolicy:
        """The online actor after hand-off; before it, a copy of the policy `_hand_off` would pick now (or BC
        member 0)."""
        if self.handed_off:
            return self.actor
        source, member = self._acting_member()
        return source.member(member)

    def _acting_member(self) -> tuple[PolicyEnsemble, int]:
        if max(self.best_ope) > -math.inf:
            return self._hand_off_source(), int(np.argmax(self.best_ope))
        return self.policies, 0

    def _hand_off_source(self) -> PolicyEnsemble:
        """The ensemble the hand-off policy comes from: the last iterates or the best-OPE references."""
        scored = max(self.best_ope) > -math.inf
        return self.ref_policies if scored and self.config.hand_off_policy == "reference" else self.policies

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        x = self._features(obs)
        if self.handed_off:
            unit, _ = self.actor.sample(x, deterministic, self.gen)
        else:  # one member of an ensemble: run the batched ensemble and take that member's head
            source, member = self._acting_member()
            mean, log_std = source(x)  # (N, B, A)
            unit, _ = gaussian_sample(mean[member], log_std[member], deterministic, self.gen)
        return from_unit(unit, self.low_t, self.high_t)  # clips to [-1, 1] first

    # ------------------------------------------------------------------------------------------ data
    def _prepare(self, dataset: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray]:
        """Check the dataset, freeze normalisation on first use, and split a fixed dynamics holdout."""
        if self._data is not None and self._data[0] is dataset:
            return self._data[1:]
        dataset.check_spaces(self.observation_space, self.action_space)
        if not self.stats_ready and self.config.normalize_reward:
            self.reward_factor = return_range_scale(dataset)
        view = training_view(dataset, self.low, self.high, self.reward_factor, 0.0)  # actions in [-1, 1]
        tidx = view.transition_indices()
        dyn_idx = tidx
        if dataset.next_observations is None:  # a terminal row has no successor state to learn dynamics from
            dyn_idx = tidx[~dataset.terminals[tidx]]
        if len(dyn_idx) < 2:
            raise DatasetShapeError(f"{dataset.source}: UniO4 needs at least 2 transitions with a known next "
                                    f"observation, got {len(dyn_idx)}")
        if not self.stats_ready:
            if self.config.state_norm and self.encoder is None:
                s = dataset.stats()
                self.normalizer.set_stats(s["obs_mean"].reshape(-1), s["obs_std"].reshape(-1))
            self.stats_ready = True
        perm = np.random.default_rng(self.config.seed + 7919).permutation(dyn_idx)  # fixed across resumes
        n_hold = max(1, min(int(self.config.dynamics_holdout_frac * len(perm)), self.config.dynamics_max_holdout))
        self._data = (dataset, view, perm[n_hold:], perm[:n_hold])
        return self._data[1:]

    def _batch(self, data: Dataset, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return data.batch(idx, device=self.device)

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, dataset: Dataset, n_steps: int, callbacks: Sequence[Callback] = (),
            eval_env: gym.Env | None = None) -> dict[str, Any]:
        """Run `n_steps` more offline steps through the phase schedule (stops at `offline_total_steps`).
        `eval_env` is used only when `select_by_env_return` is set (to pick the hand-off policy) or, for
        reporting, when `report_true_returns` is set (true returns beside OPE scores in `ope_history`)."""
        self._eval_env = eval_env
        if self.config.select_by_env_return and eval_env is None:
            raise ConfigError("UniO4Config.select_by_env_return=True needs fit(..., eval_env=env)")
        if self.online_steps > 0 and self.phase()[0] != "done":
            raise ConfigError(f"UniO4.fit: the offline schedule is unfinished (step {self.step} of "
                              f"{self.offline_total_steps}) but online fine-tuning has already started")
        data, train_idx, hold_idx = self._prepare(dataset)
        metrics: dict[str, Any] = {}  # latest value of every metric (returned)
        pending: dict[str, Any] = {}  # metrics since the last callback call
        t0, s0 = time.perf_counter(), self.step
        for _ in range(n_steps):
            name, k, length = self.phase()
            if name == "done":
                break
            if k == 0:
                pending.update(self._begin_phase(name, data, train_idx))
            update = {"critic": self._critic_update, "dynamics": self._dynamics_update, "bc": self._bc_update,
                      "improve": self._improve_update}[name]
            m = update(data, train_idx, hold_idx, k)
            self.step += 1
            if k == length - 1:
                m.update(self._end_phase(name, data, hold_idx, eval_env))
            pending.update(m)
            if self.step % self.config.log_interval == 0 or "ope/score" in m or self.phase()[0] == "done":
                pending.update({"train/phase": PHASES.index(name),
                                "perf/sps": (self.step - s0) / max(time.perf_counter() - t0, 1e-9)})
                metrics.update(pending)
                keep_going = run_callbacks(callbacks, self.step, pending)
                pending = {}
                if not keep_going:
                    break
        metrics.update(pending)
        return metrics

    def _begin_phase(self, name: str, data: Dataset, train_idx: np.ndarray) -> dict[str, Any]:
        if name == "dynamics":  # standardise dynamics inputs with (a sample of) the training data
            idx = train_idx[: min(len(train_idx), 20_000)]
            b = self._batch(data, idx)
            inputs = torch.cat([self._encode_chunked(b["observations"]), b["actions"]], -1)
            self.dynamics.set_input_stats(inputs)
            self.dynamics_best.load_state_dict(self.dynamics.state_dict())
            self.dynamics_best.holdout_loss.fill_(math.inf)
        if name == "improve":  # every member starts from its BC policy, anchored at itself
            self.ref_policies.load_state_dict(self.policies.state_dict())
            out = {}
            if self.config.ope_noise_repeats >= 2:
                noise = self.ope_noise(data, self.config.ope_noise_repeats)
                self.ope_noise_sd = noise["sd"]
                out["ope/noise_sd"] = noise["sd"]
            return {**out, **self._evaluate_members(data, self.step)}
        return {}

    def _end_phase(self, name: str, data: Dataset, hold_idx: np.ndarray, eval_env: gym.Env | None) -> dict[str, Any]:
        if name == "dynamics":  # restore each member's best-holdout weights, then pick the elites
            self._dynamics_holdout(data, hold_idx)
            self.dynamics.load_state_dict(self.dynamics_best.state_dict())
            elites = self.dynamics.select_elites(self.dynamics_best.holdout_loss.clone())
            return {"train/dynamics_elite_holdout_mse": self.dynamics.holdout_loss[elites].mean().item()}
        if name == "improve":
            out = {}
            if self.config.improve_steps % self.config.ope_interval != 0:  # score the last iterates too
                out = self._evaluate_members(data, self.step)
            out.update(self._select_and_hand_off(eval_env))
            return out
        return {}

    # ------------------------------------------------------------------------------------------ phase 1: critics
    def _critic_update(self, data: Dataset, train_idx: np.ndarray, hold_idx: np.ndarray, k: int) -> dict[str, Any]:
        cfg = self.config
        b = data.sample(cfg.batch_size, rng=self.rng, device=self.device)
        obs = self._features(b["observations"])  # (B, F); carries encoder gradients when it is trained
        with torch.no_grad():
            next_obs = self._features(b["next_observations"])
        metrics, _ = self.critic.update(obs, b["actions"], b["rewards"], b["terminals"], next_obs, k)
        return metrics

    # ------------------------------------------------------------------------------------------ phase 2: dynamics
    def _dynamics_update(self, data: Dataset, train_idx: np.ndarray, hold_idx: np.ndarray, k: int) -> dict[str, Any]:
        cfg = self.config
        e, bs = cfg.dynamics_ensemble_size, cfg.dynamics_batch_size
        idx = train_idx[self.rng.integers(0, len(train_idx), size=e * bs)]  # one bootstrap batch per member
        b = self._batch(data, idx)
        obs = self._encode_chunked(b["observations"]).view(e, bs, -1)  # (E, b, D)
        next_obs = self._encode_chunked(b["next_observations"]).view(e, bs, -1)
        loss = self.dynamics.loss(obs, b["actions"].view(e, bs, -1), next_obs, b["rewards"].view(e, bs))
        self.dyn_opt.zero_grad()
        loss.backward()
        self.dyn_opt.step()
        out = {"train/dynamics_loss": loss.item()}
        if (k + 1) % cfg.dynamics_eval_interval == 0:
            out.update(self._dynamics_holdout(data, hold_idx))
        return out

    @torch.no_grad()
    def _dynamics_holdout(self, data: Dataset, hold_idx: np.ndarray) -> dict[str, Any]:
        """Score every member on the holdout; snapshot those that improved by more than 1% (MBPO's rule)."""
        b = self._batch(data, hold_idx)
        loss = self.dynamics.validation_loss(self._encode_chunked(b["observations"]), b["actions"],
                                             self._encode_chunked(b["next_observations"]), b["rewards"])  # (E,)
        improved = loss < self.dynamics_best.holdout_loss * 0.99
        self.dynamics_best.copy_members_from(self.dynamics, improved)
        self.dynamics_best.holdout_loss.copy_(torch.where(improved, loss, self.dynamics_best.holdout_loss))
        return {"train/dynamics_holdout_mse": loss.mean().item()}

    # ------------------------------------------------------------------------------------------ phase 3: BC ensemble
    def _bc_update(self, data: Dataset, train_idx: np.ndarray, hold_idx: np.ndarray, k: int) -> dict[str, Any]:
        cfg = self.config
        b = data.sample(cfg.batch_size, rng=self.rng, device=self.device)
        obs = self._features(b["observations"]).detach()  # (B, F); every member sees the same batch
        mean, log_std = self.policies(obs)  # (N, B, A) each
        losses = diversity_bc_losses(mean, log_std, b["actions"], cfg.alpha_bc, cfg.diversity)  # (N,)
        self.bc_opt.zero_grad()
        losses.sum().backward()
        self.bc_opt.step()
        if not self._log_due(k, cfg.bc_steps):  # .item() waits for the GPU: only when the metrics are logged
            return {}
        return {"train/bc_loss": losses.mean().item(), "train/bc_std": log_std.exp().mean().item()}

    # ------------------------------------------------------------------------------------------ phase 4: BPPO + OPE
    def _improve_update(self, data: Dataset, train_idx: np.ndarray, hold_idx: np.ndarray, k: int) -> dict[str, Any]:
        cfg = self.config
        n = cfg.ensemble_size
        lr = cfg.improve_lr * (1.0 - k / cfg.improve_steps)  # linear decay to 0
        for g in self.improve_opt.param_groups:
            g["lr"] = lr
        clip = cfg.clip_ratio * (1.0 - min(k, cfg.clip_decay_steps) / cfg.improve_steps)
        b = data.sample(cfg.batch_size, rng=self.rng, device=self.device)
        obs = self._features(b["observations"]).detach()  # (B, F)
        bsz, act_dim = obs.shape[0], self.actor.act_dim
        with torch.no_grad():
            ref_mean, ref_log_std = self.ref_policies(obs)  # (N, B, A)
            noise = torch.randn(ref_mean.shape, generator=self.gen, device=self.device)
            action = ref_mean + ref_log_std.exp() * noise  # a ~ pi_ref(.|s)
            if cfg.improve_clip_action:
                action = action.clamp(-1.0, 1.0)
            logp_ref = Normal(ref_mean, ref_log_std.exp()).log_prob(action).sum(-1)  # (N, B)
            obs_rep = obs.unsqueeze(0).expand(n, -1, -1).reshape(n * bsz, -1)
            q = self.critic.q(obs_rep, action.reshape(n * bsz, act_dim)).min(0).values.view(n, bsz)
            adv = q - self.critic.v(obs).unsqueeze(0)  # (N, B)
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        mean, log_std = self.policies(obs)
        dist = Normal(mean, log_std.exp())
        ratio = (dist.log_prob(action).sum(-1) - logp_ref).exp()  # (N, B)
        surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
        losses = -(surrogate + cfg.entropy_coef * dist.entropy().sum(-1)).mean(1)  # (N,)
        self.improve_opt.zero_grad()
        losses.sum().backward()
        clip_grad_norm_per_member(list(self.policies.parameters()), cfg.max_grad_norm)
        self.improve_opt.step()
        out: dict[str, Any] = {}
        if self._log_due(k, cfg.improve_steps):
            out = {"train/improve_loss": losses.mean().item(), "train/improve_clip": clip, "train/improve_lr": lr,
                   "train/improve_ratio_dev": (ratio - 1).abs().mean().item()}
        if (k + 1) % cfg.ope_interval == 0:
            out.update(self._evaluate_members(data, self.step + 1))  # scored after this update
        return out

    def _log_due(self, k: int, length: int) -> bool:
        """Whether `fit` logs the metrics of phase step k (of `length`): every log_interval steps and at the end."""
        return (self.step + 1) % self.config.log_interval == 0 or k == length - 1

    def _ope(self, policy: GaussianPolicy, start_states: torch.Tensor) -> float:
        gen = self.gen
        if self.config.ope_common_random_numbers:  # the same model-noise stream for every scored policy
            gen = generator_for(self.device, self.config.seed + 7919)
        return amq_score(policy, self.dynamics, self.critic.q, start_states, self.config.ope_horizon, self.normalizer,
                         self.termination_fn, gen)

    def ope_noise(self, dataset: Dataset, repeats: int = 8, members: Sequence[int] | None = None) -> dict[str, Any]:
        """The OPE's own noise: score each of `members` (default: all) current policies `repeats` times, each time
        from fresh start states and a fresh model-noise stream, without changing the policies or the training rng.
        Returns {"scores": (members, repeats) list, "sd": pooled within-member SD, "member_means": ...}; compare
        "sd" with the spread of scores across iterates (`ope_history`)."""
        if repeats < 2:
            raise ConfigError(f"UniO4.ope_noise: repeats must be >= 2 to measure a spread, got {repeats}")
        if not self.stats_ready:
            raise ConfigError("UniO4.ope_noise: the agent has no dataset statistics yet; fit it first")
        members = list(range(self.config.ensemble_size)) if members is None else list(members)
        rng = np.random.default_rng(self.config.seed + 4243)  # its own stream: measuring never shifts training
        scores = np.zeros((len(members), repeats))
        for r in range(repeats):
            idx = rng.choice(dataset.transition_indices(), size=self.config.ope_start_states)
            start = self._encode_chunked(self._batch(dataset, idx)["observations"])  # observations only
            gen = generator_for(self.device, self.config.seed + 31 * r + 1)
            for j, i in enumerate(members):
                scores[j, r] = amq_score(self.policies.member(i), self.dynamics, self.critic.q, start,
                                         self.config.ope_horizon, self.normalizer, self.termination_fn, gen)
        sd = float(np.sqrt(np.mean(scores.var(axis=1, ddof=1))))
        return {"scores": scores.tolist(), "sd": sd, "member_means": scores.mean(1).tolist(), "repeats": repeats}

    def _evaluate_members(self, data: Dataset, step: int) -> dict[str, Any]:
        """AM-Q score of every member's current policy from one shared set of dataset start states; apply the
        acceptance rule per member and record (step, member, score, accepted, true return) in `ope_history`,
        `step` being the number of offline gradient steps behind the scored iterate."""
        if self.config.ope_common_random_numbers:
            if self.ope_start_idx is None:
                self.ope_start_idx = self.rng.choice(data.transition_indices(), size=self.config.ope_start_states)
            idx = self.ope_start_idx
        else:
            idx = self.rng.choice(data.transition_indices(), size=self.config.ope_start_states)
        start = self._encode_chunked(self._batch(data, idx)["observations"])  # (S, D) raw dynamics states
        out: dict[str, Any] = {}
        scores = []
        for i in range(self.config.ensemble_size):
            candidate = self.policies.member(i)
            score = self._ope(candidate, start)
            margin = self.config.ope_accept_margin * self.ope_noise_sd
            accepted = accept_candidate(score, self.best_ope[i], margin)
            if accepted:
                self.ref_policies.copy_member_from(self.policies, i)
                self.best_ope[i] = score
            true_return = math.nan
            if self.config.report_true_returns and self._eval_env is not None:  # reporting only
                true_return = self._env_return(candidate, self._eval_env, self.config.report_episodes)
            self.ope_history.append([float(step), float(i), float(score), float(accepted), float(true_return)])
            out[f"ope/score_member{i}"] = score
            out[f"ope/accepted_member{i}"] = float(accepted)
            scores.append(score)
        out["ope/score"] = float(np.max(scores))
        out["ope/best_score"] = float(np.max(self.best_ope))
        return out

    def _select_and_hand_off(self, eval_env: gym.Env | None) -> dict[str, Any]:
        """Pick the member whose reference has the best OPE (or, with `select_by_env_return`, the best env
        return among the top-k by OPE) and make it the online actor."""
        order = [int(i) for i in np.argsort(self.best_ope)[::-1]]
        out: dict[str, Any] = {}
        chosen = order[0]
        if self.config.select_by_env_return:
            source = self._hand_off_source()
            returns = {i: self._env_return(source.member(i), eval_env) for i in order[: self.config.select_top_k]}
            chosen = max(returns, key=returns.get)
            out.update({f"eval/return_member{i}": r for i, r in returns.items()})
        self._hand_off(chosen)
        out["train/selected_member"] = chosen
        return out

    def member_return(self, member: int, env: gym.Env, episodes: int | None = None, reference: bool = False) -> float:
        """Mean env return of one ensemble member's current (or reference) policy, acting deterministically.
        For analysis and benchmarks (e.g. the best BC member); training never calls it unless
        `select_by_env_return` or `report_true_returns` is set."""
        policies = self.ref_policies if reference else self.policies
        return self._env_return(policies.member(member), env, episodes)

    def _env_return(self, policy: GaussianPolicy, env: gym.Env, episodes: int | None = None) -> float:
        returns = []
        for ep in range(episodes or self.config.eval_episodes):
            obs, _ = env.reset(seed=self.config.seed + 10_000 + ep)
            total, done = 0.0, False
            while not done:
                with torch.no_grad():
                    x = self._features(torch.as_tensor(np.asarray(obs)[None], device=self.device))
                    a = from_unit(policy(x)[0], self.low_t, self.high_t)[0].cpu().numpy()
                obs, r, term, trunc, _ = env.step(a)
                total += float(r)
                done = term or trunc
            returns.append(total)
        return float(np.mean(returns))

    def _hand_off(self, member: int | None = None) -> None:
        """Online actor <- the chosen member's last iterate or reference (`hand_off_policy`); online critic <-
        offline V (rescaled to online reward units)."""
        if member is None:
            member = int(np.argmax(self.best_ope)) if max(self.best_ope) > -math.inf else 0
        self.actor.load_state_dict(self._hand_off_source().member(member).state_dict())
        self.online_v.load_state_dict(self.critic.v.state_dict())
        scale = self.config.online_reward_scale / self.reward_factor
        if scale != 1.0:  # V of (scale * r) is exactly scale * V
            with torch.no_grad():
                last = self.online_v.net[-1]
                last.weight.mul_(scale)
                last.bias.mul_(scale)
        self.selected, self.handed_off = member, True

    # ------------------------------------------------------------------------------------------ online PPO
    def learn(self, env: gym.Env | gym.vector.VectorEnv, total_timesteps: int, offline: Dataset | None = None,
              mix_ratio: float = 0.5, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        """PPO (`rlpt.agents.ppo.PPOLearner`) for `total_timesteps` more env steps from the handed-off actor and
        critic, on one env or a vector env of N worlds (`rlpt.envs.make_vec_env`; each update then uses about
        `online_rollout_steps` transitions, kept on the agent's device). Uni-O4's online phase is purely
        on-policy, so `offline`/`mix_ratio` are not mixed in; `offline` only provides normalisation statistics
        when none were frozen yet (PPO from scratch)."""
        check_spaces(self, env)
        if offline is not None and not self.stats_ready:
            self._prepare(offline)
        if not self.handed_off:
            self._hand_off()
        if self._online is None or self._online.env is not env:
            self._online = BatchedEnv(env, self.device, seed=self.config.seed + self.online_steps)

        def on_steps(n: int) -> None:
            self.online_steps += n

        self.ppo.s = self._ppo_settings()  # the config as it is now
        return self.ppo.learn(self._online, total_timesteps, self.online_steps, callbacks, on_steps)

    def _ppo_settings(self) -> PPOSettings:
        c = self.config
        return PPOSettings(rollout_steps=c.online_rollout_steps, minibatch=c.online_minibatch, epochs=c.online_epochs,
                           gamma=c.gamma, gae_lambda=c.online_gae_lambda, clip=c.online_clip, value_clip=c.online_clip,
                           entropy_coef=c.online_entropy_coef, max_grad_norm=c.online_max_grad_norm,
                           actor_lr=c.online_actor_lr, critic_lr=c.online_critic_lr,
                           lr_decay_steps=c.online_lr_decay_steps, reward_scale=c.online_reward_scale)

    # ------------------------------------------------------------------------------------------ checkpoint
    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {
            "normalizer": self.normalizer, "q": self.critic.q, "q_target": self.critic.q_target, "v": self.critic.v,
            "policies": self.policies, "ref_policies": self.ref_policies, "dynamics": self.dynamics,
            "dynamics_best": self.dynamics_best, "actor": self.actor, "online_v": self.online_v}
        if self.encoder is not None:
            mods["encoder"] = self.encoder
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q": self.critic.q_opt, "v": self.critic.v_opt, "dynamics": self.dyn_opt, "bc": self.bc_opt,
                "improve": self.improve_opt, "actor": self.actor_opt, "online_v": self.online_v_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"torch_generator": self.gen.get_state(), "stats_ready": self.stats_ready,
                "reward_factor": self.reward_factor, "best_ope": [float(s) for s in self.best_ope],
                "ope_history": [list(h) for h in self.ope_history],
                "selected": self.selected, "handed_off": self.handed_off, "ope_noise_sd": self.ope_noise_sd,
                "ope_start_idx": None if self.ope_start_idx is None else self.ope_start_idx.tolist()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "torch_generator" in state:
            self.gen.set_state(state["torch_generator"])
        self.stats_ready = bool(state.get("stats_ready", self.stats_ready))
        self.reward_factor = float(state.get("reward_factor", self.reward_factor))
        self.best_ope = [float(s) for s in state.get("best_ope", self.best_ope)]
        self.ope_history = [[float(x) for x in h] for h in state.get("ope_history", [])]
        self.selected = int(state.get("selected", -1))
        self.ope_noise_sd = float(state.get("ope_noise_sd", 0.0))
        self.handed_off = bool(state.get("handed_off", False))
        idx = state.get("ope_start_idx")
        self.ope_start_idx = None if idx is None else np.asarray(idx, dtype=np.int64)
