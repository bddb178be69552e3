"""Probabilistic dynamics ensemble (MBPO / MOBILE style) and hand-written termination functions.

Each of `E` members is a Gaussian MLP over standardised `(s, a)` predicting `(Δs, r)` with a mean and a
log-variance; the log-variance is softly bounded by learned `max_logvar` / `min_logvar`. Members are trained
together (one batched forward); after training, the `num_elites` members with the lowest held-out loss are
the elites, and `step` samples each transition from a random elite.

States stay in raw (unnormalised) space: the module standardises its own inputs, so termination functions
can read heights and angles directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlpt.errors import ConfigError
from rlpt.nets.ensemble import EnsembleLinear

#: `fn(obs, action, next_obs) -> terminated` on batches: (B, D), (B, A), (B, D) -> bool (B,).
TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------- termination
def _finite_and_bounded(next_obs: torch.Tensor, start: int = 1, bound: float = 100.0) -> torch.Tensor:
    return torch.isfinite(next_obs).all(-1) & (next_obs[:, start:].abs() < bound).all(-1)


def hopper_termination(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Gymnasium Hopper (x excluded from obs): healthy iff height > 0.7, |angle| < 0.2, |s[1:]| < 100."""
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = _finite_and_bounded(next_obs) & (height > 0.7) & (angle.abs() < 0.2)
    return ~healthy


def walker2d_termination(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Gymnasium Walker2d (x excluded from obs): healthy iff 0.8 < height < 2.0 and -1 < angle < 1."""
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = torch.isfinite(next_obs).all(-1) & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def never_terminates(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """HalfCheetah and the default: no state ends an episode."""
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


TERMINATION_FNS: dict[str, TerminationFn] = {
    "hopper": hopper_termination,
    "walker2d": walker2d_termination,
    "halfcheetah": never_terminates,
    "none": never_terminates,
}


def get_termination_fn(spec: str | TerminationFn | None) -> TerminationFn:
    """A termination function by registry name, env id (`"Hopper-v5"`, `"mujoco/Walker2d-v5"`, dataset
    names such as `"hopper-medium-replay"` resolve by their first token) or a callable; None means never."""
    if spec is None:
        return never_terminates
    if callable(spec):
        return spec
    name = str(spec).lower()
    if name in TERMINATION_FNS:
        return TERMINATION_FNS[name]
    token = name.rsplit("/", 1)[-1].split("-", 1)[0]
    if token in TERMINATION_FNS:
        return TERMINATION_FNS[token]
    raise ConfigError(f"termination_fn: unknown name {spec!r}; known: {sorted(TERMINATION_FNS)} "
                      "(or pass a callable fn(obs, action, next_obs) -> bool tensor)")


# ---------------------------------------------------------------------------------------------- ensemble
def default_weight_decays(n_layers: int) -> list[float]:
    """MOBILE's gym per-layer decays for 4 hidden layers; an even ramp over the same range otherwise."""
    if n_layers == 5:
        return [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
    return np.linspace(2.5e-5, 1e-4, n_layers).tolist()


class DynamicsEnsemble(nn.Module):
    """Ensemble of Gaussian MLPs `(s, a) -> (Δs, r)` with learned log-variance bounds and elites."""

    def __init__(self, obs_dim: int, act_dim: int, ensemble_size: int = 7, num_elites: int = 5,
                 hidden: Sequence[int] = (200, 200, 200, 200), weight_decays: Sequence[float] | None = None,
                 logvar_bound_coef: float = 0.01):
        super().__init__()
        if not 1 <= num_elites <= ensemble_size:
            raise ConfigError(f"dynamics: num_elites must be in [1, ensemble_size={ensemble_size}], got {num_elites}")
        dims = [obs_dim + act_dim, *hidden, obs_dim + 1]
        n_layers = len(dims) - 1
        decays = list(weight_decays) if weight_decays is not None else default_weight_decays(n_layers)
        if len(decays) != n_layers:
            raise ConfigError(f"dynamics: weight_decays needs {n_layers} values (one per layer), got {len(decays)}")
        self.layers = nn.ModuleList(
            EnsembleLinear(ensemble_size, a, 2 * b if i == n_layers - 1 else b, "trunc_normal", weight_decay=decays[i])
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)))
        out = obs_dim + 1
        self.max_logvar = nn.Parameter(torch.full((1, 1, out), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, out), -10.0))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(num_elites))
        self.register_buffer("holdout_loss", torch.full((ensemble_size,), float("inf")))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.logvar_bound_coef = logvar_bound_coef

    # ------------------------------------------------------------------ prediction
    def set_input_stats(self, inputs: torch.Tensor) -> None:
        """Standardise future inputs with the mean/std of `inputs` (N, obs_dim + act_dim)."""
        self.in_mean.copy_(inputs.mean(0))
        self.in_std.copy_(inputs.std(0).clamp_min(1e-6))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) and (B, A), or per-member (E, B, ·) -> mean, logvar (E, B, D + 1) of (Δs, r)."""
        x = (torch.cat([obs, action], -1) - self.in_mean) / self.in_std
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        for layer in self.layers[:-1]:
            x = F.silu(layer(x))
        mean, logvar = self.layers[-1](x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    # ------------------------------------------------------------------ training
    @staticmethod
    def targets(obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """(Δs, r): (B, D + 1)."""
        return torch.cat([next_obs - obs, reward.unsqueeze(-1)], -1)

    def loss(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
             reward: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL summed over members (mean over batch and dims) + weight decay + log-variance bounds.
        Inputs may be (B, ·), shared by all members, or (E, B, ·), one batch per member."""
        mean, logvar = self(obs, action)
        target = self.targets(obs, next_obs, reward)
        nll = ((mean - target).pow(2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
        decay = sum(layer.decay_loss() for layer in self.layers)
        bound = self.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        return nll + decay + bound

    @torch.no_grad()
    def validation_loss(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
                        reward: torch.Tensor) -> torch.Tensor:
        """Mean-prediction MSE of each member on held-out data: (E,)."""
        mean, _ = self(obs, action)
        return (mean - self.targets(obs, next_obs, reward)).pow(2).mean(dim=(1, 2))

    @torch.no_grad()
    def copy_members_from(self, other: DynamicsEnsemble, members: torch.Tensor) -> None:
        """Copy the weights of the members where `members` (E,) bool is true from `other`; shared pieces
        (log-variance bounds, input statistics) are copied whenever any member is."""
        if not bool(members.any()):
            return
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            mine.weight[members] = theirs.weight[members]
            mine.bias[members] = theirs.bias[members]
        for name in ("max_logvar", "min_logvar", "in_mean", "in_std"):
            getattr(self, name).copy_(getattr(other, name))

    def select_elites(self, holdout_loss: torch.Tensor) -> torch.Tensor:
        """Keep the `num_elites` members with the lowest held-out loss (E,) as elites; returns their indices."""
        self.holdout_loss.copy_(holdout_loss)
        self.elites.copy_(torch.argsort(holdout_loss)[: self.num_elites])
        return self.elites

    # ------------------------------------------------------------------ imagination
    @torch.no_grad()
    def step(self, obs: torch.Tensor, action: torch.Tensor, termination_fn: TerminationFn = never_terminates,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample one imagined transition per row from a random elite: next_obs (B, D), reward (B,),
        terminated (B,) bool."""
        mean, logvar = self(obs, action)  # (E, B, D + 1)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        samples = mean + noise * (0.5 * logvar).exp()
        pick = torch.randint(0, self.num_elites, (obs.shape[0],), generator=generator, device=obs.device)
        member = self.elites[pick]  # (B,)
        chosen = samples[member, torch.arange(obs.shape[0], device=obs.device)]  # (B, D + 1)
        next_obs = obs + chosen[:, :-1]
        reward = chosen[:, -1]
        return next_obs, reward, termination_fn(obs, action, next_obs)
