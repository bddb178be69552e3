"""Critics shared by the value-based agents: a Q ensemble vectorised over members, a state-value net,
and the small losses/updates they all use (expectile loss, Polyak averaging)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rlpt.nets.mlp import ACTIVATIONS


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied in one batched matmul: (n, B, in) -> (n, B, out).

    Each member is initialised like `nn.Linear` (or orthogonally with `gain` when given).
    """

    def __init__(self, in_dim: int, out_dim: int, n: int, orthogonal_gain: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        self.in_dim, self.out_dim, self.n = in_dim, out_dim, n
        self.reset_parameters(orthogonal_gain)

    @torch.no_grad()
    def reset_parameters(self, orthogonal_gain: float | None = None) -> None:
        for k in range(self.n):
            if orthogonal_gain is None:
                # nn.Linear's default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)), bias alike
                bound = 1.0 / math.sqrt(self.in_dim)
                self.weight[k].uniform_(-bound, bound)
                self.bias[k].uniform_(-bound, bound)
            else:
                w = nn.init.orthogonal_(torch.empty(self.out_dim, self.in_dim), gain=orthogonal_gain)
                self.weight[k].copy_(w.T)  # stored as (in, out)
                self.bias[k].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)  # (n, B, out)


class QEnsemble(nn.Module):
    """`n` Q-functions `Q_k(s, a)` as one module; `forward(obs (B, obs_dim), act (B, act_dim)) -> (n, B)`.

    `n=2` is the usual twin critic (SAC/TD3/IQL/CQL); larger `n` gives REDQ/EDAC-style ensembles. With
    `orthogonal_init=True` hidden layers get orthogonal(sqrt 2) weights and the output layer orthogonal(1e-2),
    as in the Cal-QL/CQL reference code.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), n: int = 2,
                 activation: str = "relu", orthogonal_init: bool = False):
        super().__init__()
        dims = [obs_dim + act_dim, *hidden]
        hidden_gain = math.sqrt(2.0) if orthogonal_init else None
        self.layers = nn.ModuleList(
            EnsembleLinear(a, b, n, hidden_gain) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.out = EnsembleLinear(dims[-1], 1, n, 1e-2 if orthogonal_init else None)
        self.act = ACTIVATIONS[activation]()
        self.obs_dim, self.act_dim, self.n = obs_dim, act_dim, n

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)  # (B, obs_dim + act_dim)
        x = x.unsqueeze(0).expand(self.n, *x.shape)  # (n, B, D): every member sees the same batch
        for layer in self.layers:
            x = self.act(layer(x))
        return self.out(x).squeeze(-1)  # (n, B)


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


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging `target <- (1 - tau) * target + tau * source` over parameters (buffers are copied)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)
