"""Critics shared by the value-based agents: a Q ensemble batched over members, a state-value net,
and the small losses/updates they all use (expectile loss, Polyak averaging)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from rlpt.errors import ConfigError
from rlpt.nets.ensemble import EnsembleMLP
from rlpt.nets.mlp import ACTIVATIONS
from rlpt.nets.optim import adam


class QEnsemble(EnsembleMLP):
    """`n` Q-functions `Q_k(s, a)` as one module; `forward(obs (B, obs_dim), act (B, act_dim)) -> (n, B)`.

    `n=2` is the usual twin critic (SAC/TD3/IQL/CQL); larger `n` gives REDQ/EDAC-style ensembles. All members
    run in one batched matmul per layer. With `orthogonal_init=True` hidden layers get orthogonal(sqrt 2) weights
    and the output layer orthogonal(1e-2), as in the Cal-QL/CQL reference code.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), n: int = 2,
                 activation: str = "relu", orthogonal_init: bool = False):
        init = "orthogonal" if orthogonal_init else "linear"
        super().__init__(n, obs_dim + act_dim, 1, hidden, activation, hidden_init=init, hidden_gain=math.sqrt(2.0),
                         out_init=init, out_gain=1e-2)
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([obs, act], dim=-1)).squeeze(-1)  # (n, B)


class ValueNet(nn.Module):
    """State value `V(s)`: `forward(obs (B, obs_dim)) -> (B,)`."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        dims = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean asymmetric squared loss `|tau - 1[diff < 0]| * diff**2` (IQL's value loss, diff = Q - V).

    `tau=0.5` is half the MSE; `tau > 0.5` weights positive errors more, pushing V toward an upper expectile.
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


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


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging `target <- (1 - tau) * target + tau * source` over parameters (buffers are copied)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


class IQLCritic(nn.Module):
    """IQL's in-sample critic (Kostrikov et al., 2022): twin Q, its Polyak target, and V by expectile regression.

    One implementation for every agent that trains IQL critics (IQL, and Uni-O4's critic phase), so "the same
    critic settings" means the same code. One `update` on a batch:
    1. V(s) regresses the `expectile` of `min_k Q_targ(s, a)`;
    2. each Q_k(s, a) regresses `r + discount * (1 - d) * V(s')` (V before its update, as CORL does);
    3. every `target_update_interval` updates, `Q_targ <- (1 - tau) Q_targ + tau Q`.
    `extra_q_params` (e.g. a trainable encoder) are optimised with the Q loss.
    """

    def __init__(self, obs_dim: int, act_dim: int, q_hidden: Sequence[int] = (256, 256),
                 v_hidden: Sequence[int] = (256, 256), lr: float = 3e-4, expectile: float = 0.7,
                 discount: float = 0.99, tau: float = 0.005, target_update_interval: int = 1,
                 extra_q_params: Sequence[nn.Parameter] = ()):
        super().__init__()
        if not 0.0 < expectile < 1.0:
            raise ConfigError(f"IQLCritic: expectile must be in (0, 1), got {expectile}")
        if target_update_interval < 1:
            raise ConfigError(f"IQLCritic: target_update_interval must be >= 1, got {target_update_interval}")
        self.q = QEnsemble(obs_dim, act_dim, q_hidden, n=2)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)  # a copy: draws nothing from the torch rng
        self.v = ValueNet(obs_dim, v_hidden)
        self.expectile, self.discount, self.tau = expectile, discount, tau
        self.target_update_interval = target_update_interval
        self.q_opt = adam([*self.q.parameters(), *extra_q_params], lr=lr)
        self.v_opt = adam(self.v.parameters(), lr=lr)

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminals: torch.Tensor,
               next_obs: torch.Tensor, step: int) -> tuple[dict[str, float], torch.Tensor]:
        """One critic update on a batch: obs/next_obs (B, F), actions (B, A), rewards/terminals (B,); `step` is
        the caller's count of earlier updates (drives the target schedule). Returns the metrics and the detached
        advantage `min_k Q_targ(s, a) - V(s)` (B,) measured before the V step (IQL's actor weights)."""
        with torch.no_grad():
            target_q = self.q_target(obs, actions).min(0).values  # (B,)
            next_v = self.v(next_obs)  # (B,)
        v = self.v(obs.detach())  # (B,)
        adv = target_q - v
        v_loss = expectile_loss(adv, self.expectile)
        self.v_opt.zero_grad()
        v_loss.backward()
        self.v_opt.step()

        y = rewards + self.discount * (1.0 - terminals) * next_v  # (B,)
        qs = self.q(obs, actions)  # (2, B)
        q_loss = (qs - y).pow(2).mean(1).mean()
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        if (step + 1) % self.target_update_interval == 0:
            soft_update(self.q_target, self.q, self.tau)
        metrics = {"train/v_loss": v_loss.item(), "train/q_loss": q_loss.item(), "train/v_mean": v.mean().item(),
                   "train/q_mean": qs.mean().item(), "train/adv_mean": adv.mean().item()}
        return metrics, adv.detach()
