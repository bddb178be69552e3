"""Exact evaluation of a GFlowNet's terminal distribution by dynamic programming over the DAG (no sampling).

With P_F given as a table over every state, the probability of visiting each state is
`p(s0) = 1, p(s') = sum_{s -> s'} p(s) P_F(s'|s)` (states in topological order), and the terminal
distribution is `P_T(x) = p(x) P_F(stop|x)`. Leading batch dimensions (e.g. one table per outcome y of an
outcome-conditioned GFlowNet) are carried through.

    log_pf = policy_table(env, lambda s: model_logits(s))      # (n_states, n_actions)
    metrics = exact_metrics(env, log_pf)                       # {"l1": ..., "modes_covered": ...}
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlpt.gfn.envs import DAGEnv


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-softmax over the allowed entries; disallowed entries get -inf."""
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), -1)


@torch.no_grad()
def policy_table(env: DAGEnv, logits_fn: Callable[[torch.Tensor], torch.Tensor], chunk: int = 65536) -> torch.Tensor:
    """log P_F over every state of `env` (n_states, n_actions), from `logits_fn(states) -> (B, n_actions)`."""
    s = env.all_states
    out = torch.cat([logits_fn(s[i:i + chunk]).float() for i in range(0, len(s), chunk)])
    return masked_log_softmax(out, env.forward_mask(s))


def _levels(env: DAGEnv) -> list[tuple[int, int]]:
    lv = env.level(env.all_states)
    counts = torch.unique_consecutive(lv, return_counts=True)[1].tolist()
    bounds, a = [], 0
    for c in counts:
        bounds.append((a, a + c))
        a += c
    return bounds


@torch.no_grad()
def visit_probabilities(env: DAGEnv, log_pf: torch.Tensor) -> torch.Tensor:
    """(..., n_states) float64: the probability that a trajectory sampled with `log_pf` passes through each state."""
    if log_pf.shape[-2:] != (env.n_states, env.n_actions):
        raise ValueError(f"log_pf must end with shape ({env.n_states}, {env.n_actions}), got {tuple(log_pf.shape)}")
    pf = log_pf.double().exp()
    lead = pf.shape[:-2]
    p = torch.zeros(*lead, env.n_states, dtype=torch.float64)
    p[..., 0] = 1.0  # all_states[0] is s0 (the only level-0 state)
    trans = env.transitions
    for a, b in _levels(env):
        child = trans[a:b]
        valid = child >= 0
        if not valid.any():
            continue
        contrib = p[..., a:b, None] * pf[..., a:b, :-1]
        p.index_add_(p.dim() - 1, child[valid], contrib[..., valid])
    return p


@torch.no_grad()
def terminal_distribution(env: DAGEnv, log_pf: torch.Tensor) -> torch.Tensor:
    """(..., n_terminals) float64: P_T(x) over `env.terminals`, exactly."""
    p = visit_probabilities(env, log_pf)
    idx = env.terminal_index
    return p[..., idx] * log_pf.double().exp()[..., idx, env.stop]


def mode_mass(env: DAGEnv, dist: torch.Tensor) -> torch.Tensor:
    """(n_modes,) probability mass of each mode group under a distribution over `env.terminals`."""
    groups = env.reward.mode_group(env.terminals)
    out = torch.zeros(env.reward.n_modes, dtype=torch.float64)
    keep = groups >= 0
    return out.index_add_(0, groups[keep], dist[keep].double())


@torch.no_grad()
def exact_metrics(env: DAGEnv, log_pf: torch.Tensor, mode_fraction: float = 0.5) -> dict[str, float]:
    """L1 between the exact P_T and R/Z, the KL(R/Z || P_T), and `modes_covered`: modes whose P_T mass is at
    least `mode_fraction` of their mass under R/Z."""
    pt = terminal_distribution(env, log_pf)
    target = env.true_distribution()
    out = {"l1": float((pt - target).abs().sum()),
           "kl": float((target * (target.clamp_min(1e-300).log() - pt.clamp_min(1e-300).log())).sum())}
    if env.reward.n_modes:
        target_mass = mode_mass(env, target)
        exists = target_mass > 0  # e.g. HyperGrid rings are empty when the side is tiny
        out["modes_covered"] = int(((mode_mass(env, pt) >= mode_fraction * target_mass) & exists).sum())
        out["n_modes"] = int(exists.sum())
    return out


def modes_found(env: DAGEnv, terminals: torch.Tensor) -> set[int]:
    """Mode groups hit by sampled terminal states."""
    g = env.reward.mode_group(terminals)
    return set(g[g >= 0].tolist())
