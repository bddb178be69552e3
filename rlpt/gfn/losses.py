"""GFlowNet balance losses on padded, batched trajectories: trajectory balance (TB), detailed balance (DB) and
sub-trajectory balance (SubTB, lambda-weighted).

All three read one `Terms` record. For a trajectory s_0 -> ... -> s_L = x -> stop (L non-stop transitions)
it holds, per position t = 0 .. L:
- `log_pf[t]`: log P_F(s_{t+1} | s_t), the last one (t = L) being log P_F(stop | x);
- `log_pb[t]`: log P_B(s_t | s_{t+1}), 0 for the stop transition;
- `log_f[t]`: log F(s_t), with `log_f[L + 1] = log R(x)` (the terminating flow F(x) P_F(stop|x) = R(x)).
Positions after the end are padding and masked out. With this layout the three objectives are one residual
`log_f[i] + sum_{t=i}^{j-1} (log_pf[t] - log_pb[t]) - log_f[j]` over different pairs (i, j):
TB uses (0, L+1) with log_f[0] := log Z; DB uses every (t, t+1); SubTB uses every i < j with weight lambda^(j-i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Terms:
    """Per-trajectory log-probabilities and flows (see the module docstring); B trajectories, T+1 positions."""

    log_pf: torch.Tensor  # (B, T+1)
    log_pb: torch.Tensor  # (B, T+1)
    log_f: torch.Tensor  # (B, T+2): log F(s_0..s_L), then log R(x) at L+1
    lengths: torch.Tensor  # (B,) long: L, the number of non-stop transitions

    @property
    def log_reward(self) -> torch.Tensor:
        return self.log_f.gather(1, (self.lengths + 1)[:, None]).squeeze(1)

    def step_mask(self) -> torch.Tensor:
        """(B, T+1) bool: positions t <= L (the transitions, stop included)."""
        return torch.arange(self.log_pf.shape[1], device=self.lengths.device)[None] <= self.lengths[:, None]


def trajectory_balance(terms: Terms, log_z: torch.Tensor) -> torch.Tensor:
    """Per-trajectory TB loss (B,): (log Z + sum log P_F - log R(x) - sum log P_B)^2 (Malkin et al. 2022).
    `log_z` is a scalar or (B,) (conditional)."""
    m = terms.step_mask()
    res = log_z + ((terms.log_pf - terms.log_pb) * m).sum(1) - terms.log_reward
    return res.pow(2)


def db_residuals(terms: Terms, edge_offset: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T+1) DB residuals log F(s_t) + log P_F - log F(s_{t+1}) - log P_B, zero at padding. The residual at
    t = L is the terminating edge log F(x) + log P_F(stop|x) - log R(x). `edge_offset` (B,) is subtracted from
    the non-terminating edges t < L (OC-GFN's outcome teleportation)."""
    res = terms.log_f[:, :-1] + terms.log_pf - terms.log_f[:, 1:] - terms.log_pb
    t = torch.arange(res.shape[1], device=res.device)[None]
    if edge_offset is not None:
        res = res - edge_offset[:, None] * (t < terms.lengths[:, None])
    return res * terms.step_mask()


def detailed_balance(terms: Terms, edge_offset: torch.Tensor | None = None) -> torch.Tensor:
    """Per-trajectory DB loss (B,): the mean squared residual over its L + 1 transitions (Bengio et al. 2021)."""
    return db_residuals(terms, edge_offset).pow(2).sum(1) / (terms.lengths + 1)


def subtrajectory_balance(terms: Terms, lam: float = 0.9) -> torch.Tensor:
    """Per-trajectory SubTB loss (B,) (Madan et al. 2023): every sub-trajectory (i, j), 0 <= i < j <= L + 1,
    weighted by lam^(j - i), weights normalised within each trajectory ("geometric within")."""
    if lam <= 0:
        raise ValueError(f"subtb lambda must be > 0, got {lam}")
    m = terms.step_mask()
    steps = (terms.log_pf - terms.log_pb) * m
    cum = torch.cat([torch.zeros_like(steps[:, :1]), steps.cumsum(1)], 1)  # (B, T+2)
    res = terms.log_f[:, :, None] - terms.log_f[:, None, :] + cum[:, None, :] - cum[:, :, None]  # (B, i, j)
    n = cum.shape[1]
    idx = torch.arange(n, device=cum.device)
    gap = (idx[None, :] - idx[:, None]).float()
    valid = (gap > 0)[None] & (idx[None, None, :] <= terms.lengths[:, None, None] + 1)
    w = torch.where(valid, torch.tensor(lam, device=cum.device) ** gap[None], torch.zeros(()))
    w = w / w.sum((1, 2), keepdim=True)
    return (w * res.pow(2)).sum((1, 2))
