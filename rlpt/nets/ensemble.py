"""Ensembles as batched tensors: every member's layer is one slice of a (n, in, out) weight, so a forward pass
of all members is one `baddbmm` per layer (one kernel), not a Python loop over modules.

Used by the twin/ensemble critics (`QEnsemble`), the Uni-O4 policy ensemble (`PolicyEnsemble`) and the
dynamics ensemble (`DynamicsEnsemble`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rlpt.errors import ConfigError
from rlpt.nets.mlp import ACTIVATIONS

INITS = ("linear", "orthogonal", "trunc_normal")


class EnsembleLinear(nn.Module):
    """`n` independent linear layers in one batched matmul: (n, B, in) -> (n, B, out).

    `init`: "linear" (each member like `nn.Linear`), "orthogonal" (weights orthogonal with `gain`, zero biases)
    or "trunc_normal" (std 1/(2 sqrt(in)), zero biases, as MBPO/MOBILE dynamics). `weight_decay` is the L2
    coefficient `decay_loss()` returns (the dynamics ensemble decays each layer differently).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int, init: str = "linear", gain: float = 1.0,
                 weight_decay: float = 0.0):
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"EnsembleLinear: init must be one of {INITS}, got {init!r}")
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))  # stored (in, out) per member
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight_decay = float(weight_decay)
        self.reset_parameters(init, gain)

    @torch.no_grad()
    def reset_parameters(self, init: str = "linear", gain: float = 1.0) -> None:
        if init == "trunc_normal":
            nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(self.in_dim)))
            self.bias.zero_()
            return
        for k in range(self.n):
            if init == "linear":  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
                bound = 1.0 / math.sqrt(self.in_dim)
                self.weight[k].uniform_(-bound, bound)
                self.bias[k].uniform_(-bound, bound)
            else:
                self.weight[k].copy_(nn.init.orthogonal_(torch.empty(self.out_dim, self.in_dim), gain=gain).T)
                self.bias[k].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (B, in): every member sees the same batch
            x = x.unsqueeze(0).expand(self.n, *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)  # (n, B, out)

    def decay_loss(self) -> torch.Tensor:
        return self.weight_decay * 0.5 * self.weight.pow(2).sum()

    def extra_repr(self) -> str:
        return f"n={self.n}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class EnsembleMLP(nn.Module):
    """`n` MLPs `in_dim -> hidden... -> out_dim` as stacked `EnsembleLinear` layers: (B, in) or (n, B, in) ->
    (n, B, out). `hidden_init`/`out_init` (with gains) pick each layer's initialisation."""

    def __init__(self, n: int, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", hidden_init: str = "linear", hidden_gain: float = 1.0,
                 out_init: str = "linear", out_gain: float = 1.0):
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b, hidden_init, hidden_gain)
                                    for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.out = EnsembleLinear(n, dims[-1], out_dim, out_init, out_gain)
        self.act = ACTIVATIONS[activation]()
        self.n, self.in_dim, self.out_dim, self.hidden = n, in_dim, out_dim, tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return self.out(x)

    def linears(self) -> list[EnsembleLinear]:
        return [*self.layers, self.out]

    @torch.no_grad()
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k as an `MLP` (`nn.Sequential` of Linear/activation) state dict: `{"0.weight": (out, in), ...}`."""
        out = {}
        for i, layer in enumerate(self.linears()):
            out[f"{2 * i}.weight"] = layer.weight[k].T.clone()
            out[f"{2 * i}.bias"] = layer.bias[k, 0].clone()
        return out

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `member_state`: write an `MLP` state dict into member k."""
        for i, layer in enumerate(self.linears()):
            layer.weight[k].copy_(state[f"{2 * i}.weight"].T)
            layer.bias[k, 0].copy_(state[f"{2 * i}.bias"])

    @torch.no_grad()
    def copy_member_from(self, other: EnsembleMLP, k: int, j: int | None = None) -> None:
        """Member k <- member j (default k) of `other` (same shapes)."""
        j = k if j is None else j
        for mine, theirs in zip(self.linears(), other.linears(), strict=True):
            mine.weight[k].copy_(theirs.weight[j])
            mine.bias[k].copy_(theirs.bias[j])


@torch.no_grad()
def clip_grad_norm_per_member(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`nn.utils.clip_grad_norm_` applied to each member separately, for parameters whose first dimension is the
    member index (n, ...): every member's gradient is rescaled to norm <= max_norm on its own. Returns the
    members' norms before clipping (n,)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (n,)
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (n,)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms
