"""rlpt's one family of Gaussian policies.

Every actor is a `GaussianActor`: a network maps inputs (B, in_dim) to a mean and a log-std (B, A) in
`forward`; the base class owns the rest of the maths, once:
- `sample(x, deterministic, generator) -> (action, log_prob)`: reparameterised (gradients flow through the
  action), drawn from the given `torch.Generator`;
- `squash=True` (SAC, Dreamer): actions are `tanh(u)`, u ~ N(mean, std), and the log-prob carries the tanh
  Jacobian; `squash=False` (BC, IQL, PPO, Uni-O4): actions are the Gaussian sample itself, and `clip_samples`
  clips them to [-1, 1] where the algorithm executes clipped actions;
- `deterministic_action(x)`: the action `predict(..., deterministic=True)` takes (the mean, squashed or not);
- `log_prob`, `entropy`, `dist` for the unsquashed policies' likelihood losses.

The members differ only in how they produce (mean, log_std), and keep the parameter names of the code they
reproduce so that checkpoints (and SB3 actors) load directly:

| class | used by | mean | log-std |
|---|---|---|---|
| `PolicyNet` | BC, IQL | tanh(MLP(x)) | state-independent parameter (or a fixed exploration std) |
| `GaussianPolicy` | Uni-O4 | tanh(MLP(x))[:A] | state-dependent, in (lo, hi) |
| `TanhGaussianActor` | Cal-QL, SAC behaviour policies | head on a ReLU trunk | head, clamped; squashed |
| `GaussianMLPActor` | PPO behaviour policies (SB3 names) | head on a tanh trunk | state-independent |
| `TanhNormalActor` | ContextWM (DreamerV2) | 5 tanh(m/5) | std = 2 sigmoid(s/2) + min_std; squashed |

`PolicyEnsemble` holds N `GaussianPolicy` members as batched tensors (one kernel per layer for all members).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from rlpt.nets.ensemble import EnsembleMLP
from rlpt.nets.mlp import MLP

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def orthogonal_init_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Orthogonal weights (given gain) and zero biases on every Linear layer of `module`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)
    return module


def gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool = False,
                    generator: torch.Generator | None = None,
                    squash: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample of N(mean, exp(log_std)) (tanh-squashed when `squash`) and its log-prob summed over
    the last dimension: `(..., A), (...)`. Deterministic: the mean (its log-density at the mean)."""
    if deterministic:
        noise = torch.zeros_like(mean)
    else:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * noise
    # log N(u; mean, std) in closed form: no torch.distributions object (and its validation) per call
    log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1) - _HALF_LOG_2PI * mean.shape[-1]
    if not squash:
        return u, log_prob
    action = torch.tanh(u)
    return action, log_prob - torch.log1p(-action.pow(2) + 1e-6).sum(-1)


class GaussianActor(nn.Module):
    """Base of the family (see the module docstring): subclasses implement `forward(x) -> (mean, log_std)`."""

    squash: bool = False  # actions are tanh of the Gaussian sample
    clip_samples: bool = False  # unsquashed samples are clipped to [-1, 1] by `sample`

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample(self, x: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Action (B, A) and its log-prob (B,) (of the unclipped sample when `clip_samples`)."""
        mean, log_std = self(x)
        action, log_prob = gaussian_sample(mean, log_std, deterministic, generator, self.squash)
        return (action.clamp(-1.0, 1.0) if self.clip_samples else action), log_prob

    def deterministic_action(self, x: torch.Tensor) -> torch.Tensor:
        """The action taken with `deterministic=True`: (B, A)."""
        mean = self(x)[0]
        return torch.tanh(mean) if self.squash else mean

    def dist(self, x: torch.Tensor) -> Normal:
        """The Gaussian before any squashing."""
        mean, log_std = self(x)
        return Normal(mean, log_std.exp())

    def log_prob(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a|x) of unsquashed actions, summed over action dims: (B,)."""
        return self.dist(x).log_prob(action).sum(-1)

    def entropy(self, x: torch.Tensor) -> torch.Tensor:
        """Entropy of the (unsquashed) Gaussian summed over action dims: (B,)."""
        return self.dist(x).entropy().sum(-1)


class PolicyNet(GaussianActor):
    """BC's and IQL's policy over [-1, 1] actions: `mean = tanh(MLP(x))`. The Gaussian variant has a
    state-independent log-std (CORL's IQL `GaussianPolicy`, not tanh-squashed; samples clipped to [-1, 1]);
    the deterministic variant explores with a fixed std `exploration_std` (set by the agent, not learned)."""

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
    clip_samples = True

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), gaussian: bool = True,
                 activation: str = "relu", exploration_std: float = 0.0):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden, activation)
        self.gaussian = gaussian
        self.exploration_std = float(exploration_std)
        if gaussian:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tanh(self.net(x))  # (B, A) in [-1, 1]
        if self.gaussian:
            return mean, self.log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX).expand_as(mean)
        return mean, torch.full_like(mean, math.log(self.exploration_std) if self.exploration_std > 0 else -math.inf)

    def sample(self, x: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.gaussian and (deterministic or self.exploration_std <= 0):  # no finite density to report
            mean = self(x)[0]
            return mean, torch.zeros(mean.shape[:-1], device=mean.device, dtype=mean.dtype)
        return super().sample(x, deterministic, generator)

    def bc_loss(self, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,): negative log-likelihood (Gaussian) or summed squared error (deterministic)."""
        mean, log_std = self(x)
        if self.gaussian:
            return (0.5 * ((actions - mean) / log_std.exp()).pow(2) + log_std).sum(-1) + _HALF_LOG_2PI * mean.shape[-1]
        return (mean - actions).pow(2).sum(-1)


class GaussianPolicy(GaussianActor):
    """Uni-O4's (BPPO's `GaussPolicyMLP`) diagonal Gaussian with a state-dependent std from one trunk:

        out = tanh(MLP(x))                                   # (B, 2A), every entry in (-1, 1)
        mean = out[:, :A];  log_std = lo + (hi - lo) * (out[:, A:] + 1) / 2   # in (lo, hi), default (-5, 0)

    Not squashed: samples can leave [-1, 1] and are clipped only when executed (`clip_action`), while
    log-probabilities are those of the unclipped sample; the same parametrisation is used offline and online,
    so the std learned offline is the std PPO starts from (the original's online `soft_clamp` re-squashes log-std,
    which rlpt deliberately avoids)."""

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256),
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 0.0):
        super().__init__()
        self.net = orthogonal_init_(MLP(in_dim, 2 * act_dim, hidden, activation), gain=1.0)
        self.in_dim, self.act_dim, self.hidden, self.activation = in_dim, act_dim, tuple(hidden), activation
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_dim) -> mean (B, A), log_std (B, A)."""
        return split_mean_log_std(self.net(x), self.act_dim, self.log_std_min, self.log_std_max)

    @staticmethod
    def clip_action(action: torch.Tensor) -> torch.Tensor:
        """What gets executed: the sample clipped to [-1, 1]."""
        return action.clamp(-1.0, 1.0)


def split_mean_log_std(raw: torch.Tensor, act_dim: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`GaussianPolicy`'s head: (..., 2A) pre-activations -> mean (..., A), log_std (..., A) in (lo, hi)."""
    out = torch.tanh(raw)
    return out[..., :act_dim], lo + (hi - lo) * (out[..., act_dim:] + 1.0) / 2.0


class TanhGaussianActor(GaussianActor):
    """SAC-style actor: a ReLU trunk, then mean and log-std heads; actions are tanh(N(mu, std)) in [-1, 1].

    The parameter names match Stable-Baselines3's SAC actor (`latent_pi`, `mu`, `log_std`), so an SB3
    actor's state dict loads directly. `orthogonal_init` (the CQL/Cal-QL reference code): orthogonal(sqrt 2)
    trunk, orthogonal(1e-2) heads, zero biases; `log_std_offset` is added to the log-std head's bias."""

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
    squash = True

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), orthogonal_init: bool = False,
                 log_std_offset: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [obs_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(dims[-1], act_dim)
        self.log_std = nn.Linear(dims[-1], act_dim)
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        if orthogonal_init:
            orthogonal_init_(self.latent_pi, math.sqrt(2.0))
            orthogonal_init_(self.mu, 1e-2)
            orthogonal_init_(self.log_std, 1e-2)
        with torch.no_grad():
            self.log_std.bias.add_(log_std_offset)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.latent_pi(x)
        return self.mu(h), self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)


class GaussianMLPActor(GaussianActor):
    """PPO-style actor: a tanh MLP trunk, a mean head and a state-independent log-std; actions are N(mu, std),
    clipped by the caller. Parameter names match Stable-Baselines3's PPO policy (`policy_net`, `action_net`,
    `log_std`), so an SB3 PPO actor's weights load directly."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [obs_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(dims[-1], act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.action_net(self.policy_net(x))
        return mu, self.log_std.expand_as(mu)


class TanhNormalActor(GaussianActor):
    """DreamerV2's actor on world-model features: a tanh-squashed Gaussian, mean `5 tanh(m / 5)` (kept where tanh
    still has gradient) and std `2 sigmoid(s / 2) + min_std`; samples are reparameterised, so the actor trains by
    backpropagating imagined returns through the learned dynamics."""

    squash = True

    def __init__(self, feat_dim: int, act_dim: int, hidden: Sequence[int], min_std: float = 0.1):
        super().__init__()
        self.net = MLP(feat_dim, 2 * act_dim, hidden, activation="elu")
        self.min_std = float(min_std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.net(x).chunk(2, -1)
        return 5.0 * torch.tanh(mean / 5.0), (2.0 * torch.sigmoid(std / 2.0) + self.min_std).log()


class PolicyEnsemble(nn.Module):
    """`n` independently initialised `GaussianPolicy` members as batched tensors: one `baddbmm` per layer computes
    every member. `forward(x)` with x (B, in) (all members see the same batch) or (n, B, in) gives mean and log_std
    (n, B, A). `member(i)` is a standalone `GaussianPolicy` copy of member i; `load_member`/`copy_member_from`
    write one member."""

    def __init__(self, n: int, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256),
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 0.0):
        super().__init__()
        # each member is initialised exactly as a standalone GaussianPolicy, with the same random draws
        members = [GaussianPolicy(in_dim, act_dim, hidden, activation, log_std_min, log_std_max) for _ in range(n)]
        with torch.random.fork_rng(devices=[]):  # the stacked layers' own init draws nothing from the caller's stream
            self.net = EnsembleMLP(n, in_dim, 2 * act_dim, hidden, activation)
        self.n, self.in_dim, self.act_dim, self.hidden, self.activation = n, in_dim, act_dim, tuple(hidden), activation
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        for i, member in enumerate(members):
            self.load_member(i, member)

    def __len__(self) -> int:
        return self.n

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_mean_log_std(self.net(x), self.act_dim, self.log_std_min, self.log_std_max)

    def log_probs(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi_i(a|x) for every member: (n, B) for an action batch (B, A) or per-member actions (n, B, A)."""
        mean, log_std = self(x)
        a = action.unsqueeze(0) if action.dim() == 2 else action
        return Normal(mean, log_std.exp()).log_prob(a).sum(-1)

    def member(self, i: int) -> GaussianPolicy:
        """A standalone copy of member i (same device)."""
        policy = GaussianPolicy(self.in_dim, self.act_dim, self.hidden, self.activation, self.log_std_min,
                                self.log_std_max).to(self.net.out.weight.device)
        policy.net.load_state_dict(self.net.member_state(i))
        return policy

    def load_member(self, i: int, policy: GaussianPolicy) -> None:
        """Member i <- the weights of a `GaussianPolicy` of the same shape."""
        self.net.load_member_state(i, policy.net.state_dict())

    def copy_member_from(self, other: PolicyEnsemble, i: int) -> None:
        """Member i <- member i of `other`."""
        self.net.copy_member_from(other.net, i)
