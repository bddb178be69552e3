"""OC-GFN (Pan et al., "Pre-Training and Fine-Tuning Generative Flow Networks", ICLR 2024): reward-free,
outcome-conditioned GFlowNet pretraining, then adaptation to a new reward R(x) without retraining it.

Pretraining (`OCGFN.train_step`), per iteration:
1. An exploratory GFlowNet (GAFN-style: TB on an RND novelty reward, no extrinsic reward) samples trajectories;
   it and its RND are updated on them.
2. Hindsight relabelling: each explorer trajectory's terminal state becomes its outcome y, so it is a success
   (a positive) for y. The outcome-conditioned GFlowNet (P_F(.|s, y), F(s|y)) is trained with conditional DB
   on the reward R(x|y) = 1[x = y] (log R = 0 on success).
3. Contrastive negatives: the OC-GFN rolls out on-policy for the same y; most fail early in training.
   How a failure (log R(x|y) = -inf) enters the loss is `failure`:
   - "teleport" (the paper's outcome teleportation): log R is clipped to `log_reward_min` and subtracted from
     *every* edge's DB residual, so the failure reaches all transitions at once. Fast, but not a consistent
     flow (an edge shared with a successful path is also pushed down), so flows are biased;
   - "terminal": plain conditional DB with the clipped reward: only the terminating edge F(x|y)P_F(stop|x,y)
     = exp(log_reward_min) sees the failure; consistent (a GFlowNet for 1[x=y] + eps), slower to propagate;
   - "drop": failures are ignored (positives only: hindsight imitation; nothing stops early termination);
   - "trajectory" (default here): teleportation done consistently. Z(y) = 1 is known (one terminal has reward
     1), so conditional TB needs no learned log Z: (sum log P_F - sum log P_B - log R(x|y))^2 puts the failure
     on every edge of the trajectory at once, and its optimum is an exact GFlowNet for 1[x=y] + eps. The DB
     ("terminal") loss is added so the flow head F(s|y) (used by the amortized adapter) is trained too.

Adaptation to a reward R over outcomes:
- `convert_exact` (outcomes enumerable): with Z(y) = 1, the edge flows F(s->s'|y) = F(s|y) P_F(s'|s,y) of
  each conditional GFlowNet terminate only at y with flow 1. Flow constraints are linear, so
  F_R(s->s') = sum_y R(y) F(s|y) P_F(s'|s,y) is a flow whose terminating flow at x is R(x): a GFlowNet for R.
  Its policy is  P_F^R(s'|s) = sum_y R(y) F(s|y) P_F(s'|s,y) / sum_y R(y) F(s|y).
  By induction over the topological order the state marginals of this Markov chain are sum_y w(y) p(s|y),
  w = R/Z, so P_T^R = sum_y w(y) P_T(.|y) exactly, even for imperfect conditionals, when F(s|y) is the exact
  visit probability p(s|y) (computed here by DP, `flows="dp"`; `flows="learned"` uses the flow head).
- `AmortizedAdapter` (outcomes not enumerable): the OC-GFN stays frozen; an edge-flow net N(s, a) and an
  autoregressive outcome sampler Q(y|s, a) are fit with
  L = (log N(s,a) + log Q(y|s,a) - log R(y) - log F(s|y) - log P_F(a|s,y))^2 on (s, a) from rollouts of
  pi(a|s) ∝ N(s,a) (epsilon-greedy) and y ~ Q (epsilon-uniform), Q supported on the outcomes the edge can still
  reach (`edge_outcome_mask`; F(s|y) P_F(a|s,y) = 0 for the others). At zero loss, summing over y gives
  N(s,a) = sum_y R(y) F(s|y) P_F(a|s,y), the edge flow above; the policy is pi ∝ N.
  F(s|y) is the visit probability p(s|y) of the frozen P_F(.|y), computed exactly by DP over the ancestors of
  s only (`OCGFN.log_visit_exact`: no sum over outcomes, no enumeration of the DAG; 2^L states for a bit string
  with L words placed, prod(x_i + 1) for a grid cell) and memoised. The flow head's DB flow (`flows="learned"`)
  is the flow of an ideal GFlowNet for a uniform P_B, not of the P_F actually learned, and the mismatch was the
  adapter's floor (docs/gfn.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlpt.errors import CheckpointError, ConfigError
from rlpt.gfn.envs import DAGEnv, make_dag_env
from rlpt.gfn.evaluate import masked_log_softmax, terminal_distribution, visit_probabilities
from rlpt.gfn.gflownet import GFlowNet, GFNModel, Trajectories, compute_terms, sample_trajectories
from rlpt.gfn.losses import detailed_balance, trajectory_balance
from rlpt.nets.mlp import MLP

FAILURES = ("trajectory", "teleport", "terminal", "drop")


class RND(nn.Module):
    """Random network distillation (Burda et al. 2019): novelty = squared error of a trained predictor against a
    fixed random target network."""

    def __init__(self, obs_dim: int, hidden: int = 256, latent: int = 128):
        super().__init__()
        self.target = MLP(obs_dim, latent, (hidden,))
        self.predictor = MLP(obs_dim, latent, (hidden, hidden))
        self.target.requires_grad_(False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (self.predictor(obs) - self.target(obs)).pow(2).mean(-1)


@dataclass
class OCGFNConfig:
    """OC-GFN pretraining hyperparameters (defaults: the research notes' 2x256 MLP, Adam 1e-3, GAFN's RND)."""

    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-3
    batch_size: int = 16  # explorer positives per step; as many on-policy negatives when contrastive
    failure: str = "trajectory"  # how failed trajectories enter the loss: trajectory | teleport | terminal | drop
    log_reward_min: float = -10.0  # the clipped log R(x|y) of a failure
    contrastive: bool = True  # add on-policy (mostly negative) trajectories
    epsilon: float = 0.05  # exploration of the on-policy negatives
    explorer_hidden: tuple[int, ...] = (256, 256)
    explorer_lr: float = 1e-3
    rnd_lr: float = 1e-3
    rnd_floor: float = 1e-3  # explorer reward = floor + RND novelty
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.failure not in FAILURES:
            raise ConfigError(f"failure must be one of {FAILURES}, got {self.failure!r}")
        if self.batch_size < 1 or self.log_reward_min >= 0:
            raise ConfigError(f"need batch_size >= 1 and log_reward_min < 0, got {self.batch_size}, "
                              f"{self.log_reward_min}")
        self.hidden, self.explorer_hidden = tuple(self.hidden), tuple(self.explorer_hidden)


class OCGFN:
    """Outcome-conditioned GFlowNet with its exploratory GAFN, trained reward-free on `env`'s DAG."""

    def __init__(self, env: DAGEnv, config: OCGFNConfig | None = None):
        self.env = env.with_reward({"name": "none"})
        self.config = c = config or OCGFNConfig()
        torch.manual_seed(c.seed)
        self.model = GFNModel(env.obs_dim, env.n_actions, c.hidden, "uniform", flow=True, cond_dim=env.obs_dim)
        self.rnd = RND(env.obs_dim)
        self.explorer = GFlowNet(self.env, "tb", hidden=c.explorer_hidden, lr=c.explorer_lr, seed=c.seed + 1,
                                 reward_fn=self.intrinsic_log_reward, batch_size=c.batch_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.rnd_optimizer = torch.optim.Adam(self.rnd.predictor.parameters(), lr=c.rnd_lr)
        self.generator = torch.Generator().manual_seed(c.seed + 2)
        self.steps = 0
        self.successes, self.attempts = 0, 0

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def intrinsic_log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.config.rnd_floor + self.rnd(self.env.encode(x))).log()

    def cond(self, y: torch.Tensor) -> torch.Tensor:
        return self.env.encode(y)

    def logits(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """P_F logits at states `s` for outcomes `y` (row-aligned)."""
        return self.model.policy_logits(self.env.encode(s), self.cond(y))

    def sample(self, y: torch.Tensor, epsilon: float = 0.0) -> Trajectories:
        """Trajectories aiming at outcomes `y` (B, state_len)."""
        return sample_trajectories(self.env, lambda s: self.logits(s, y), len(y), self.generator, epsilon)

    def _keys(self, b: torch.Tensor, st: torch.Tensor) -> torch.Tensor:
        """One int64 per (row id, state), for fast de-duplication (states hold values -1 .. n_classes - 1)."""
        base = self.env.n_classes + 1
        if (int(b.max()) + 1 if len(b) else 1) * base ** self.env.state_len >= 2**62:
            raise ConfigError("log_visit_exact: states too long for int64 keys")
        powers = base ** torch.arange(self.env.state_len, dtype=torch.long)
        return b * base ** self.env.state_len + ((st + 1) * powers).sum(1)

    @torch.no_grad()
    def log_visit_exact(self, s: torch.Tensor, y: torch.Tensor, max_nodes: int = 2_000_000) -> torch.Tensor:
        """(B,) exact log p(s|y) under the current P_F, by dynamic programming over the ancestors of each s (the
        sub-DAG below it: 2^L states for L filled bit-sequence words, prod(x_i + 1) for a grid cell). Needs no
        enumeration of outcomes or of the whole DAG; raises if the ancestor sets exceed `max_nodes` together."""
        env, B = self.env, len(s)
        # every (row, ancestor state) node, level by level down to s0
        all_b, all_s = [torch.arange(B)], [s]
        b, st, n = all_b[0], s, B
        while True:
            rows, par, _ = env.parents(st)
            if not len(rows):
                break
            keys, first = torch.unique(self._keys(b[rows], par), return_inverse=True)
            pick = torch.zeros(len(keys), dtype=torch.long).scatter_(0, first, torch.arange(len(first)))
            b, st = b[rows][pick], par[pick]
            all_b.append(b)
            all_s.append(st)
            n += len(b)
            if n > max_nodes:
                raise ConfigError(f"log_visit_exact: more than {max_nodes} ancestor states; use flows='learned'")
        nb, ns = torch.cat(all_b), torch.cat(all_s)
        keys, node_of = torch.unique(self._keys(nb, ns), return_inverse=True)  # a state may sit at two depths
        pick = torch.zeros(len(keys), dtype=torch.long).scatter_(0, node_of, torch.arange(len(node_of)))
        ub, us = nb[pick], ns[pick]
        log_pf = masked_log_softmax(self.logits(us, y[ub]), env.forward_mask(us))
        depth = env.level(us)
        log_p = torch.where(depth == 0, 0.0, float("-inf")).double()
        rows, par, a = env.parents(us)
        par_node = torch.searchsorted(keys, self._keys(ub[rows], par))  # parents are nodes too
        for d in range(1, int(depth.max()) + 1):
            at = depth[rows] == d
            r, pn = rows[at], par_node[at]
            term = log_p[pn] + log_pf[pn, a[at]].double()
            top = torch.full_like(log_p, float("-inf")).scatter_reduce(0, r, term, "amax")
            total = torch.zeros_like(log_p).index_add(0, r, (term - top[r]).exp())
            log_p = torch.where(depth == d, top + total.log(), log_p)
        return log_p[node_of[:B]].float()

    def _loss(self, traj: Trajectories, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        success = (traj.terminals == y).all(1)
        log_r = torch.where(success, 0.0, self.config.log_reward_min)
        terms = compute_terms(self.env, self.model, traj, log_r, self.cond(y))
        f = self.config.failure
        loss = detailed_balance(terms, edge_offset=log_r if f == "teleport" else None)
        if f == "trajectory":
            loss = loss + trajectory_balance(terms, torch.zeros(()))
        if f == "drop":
            loss = loss * success
        return loss, success

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        """Explorer + RND update, hindsight positives, on-policy negatives, one OC-GFN gradient step."""
        c = self.config
        pos = self.explorer.sample(c.batch_size)
        y = pos.terminals
        ex = self.explorer.train_step(pos)
        rnd_loss = self.rnd(self.env.encode(y)).mean()
        self.rnd_optimizer.zero_grad(set_to_none=True)
        rnd_loss.backward()
        self.rnd_optimizer.step()

        loss_pos, _ = self._loss(pos, y)
        losses = [loss_pos]
        rate = float("nan")
        if c.contrastive:
            neg = self.sample(y, c.epsilon)
            loss_neg, success = self._loss(neg, y)
            losses.append(loss_neg)
            self.successes += int(success.sum())
            self.attempts += len(success)
            rate = float(success.float().mean())
        loss = torch.cat(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.steps += 1
        return {"loss": loss.item(), "explorer_loss": ex["loss"], "rnd_loss": rnd_loss.item(),
                "batch_success_rate": rate, "distinct_outcomes": len(torch.unique(y, dim=0))}

    # ------------------------------------------------------------------ exact views (enumerable envs)
    @torch.no_grad()
    def conditional_tables(self, y: torch.Tensor, chunk_rows: int = 65536, flows: bool = True):
        """(log P_F (n_y, n_states, n_actions), log F (n_y, n_states) or None when not `flows`) of the
        conditional policy for outcomes y: n_y x n_states forward passes."""
        env, s = self.env, self.env.all_states
        n = len(s)
        per = max(1, chunk_rows // n)
        pfs, fs = [], []
        obs, mask = env.encode(s), env.forward_mask(s)
        for i in range(0, len(y), per):
            yc = y[i:i + per]
            cond = self.cond(yc)[:, None, :].expand(len(yc), n, -1).reshape(len(yc) * n, -1)
            if flows:
                pf, _, lf = self.model(obs.repeat(len(yc), 1), cond)
                fs.append(lf.reshape(len(yc), n))
            else:  # the policy head alone: half the work
                pf = self.model.policy_logits(obs.repeat(len(yc), 1), cond)
            pfs.append(masked_log_softmax(pf.reshape(len(yc), n, -1), mask))
        return torch.cat(pfs), (torch.cat(fs) if flows else None)

    @torch.no_grad()
    def success_rate(self, y: torch.Tensor | None = None, max_outcomes: int = 256, seed: int = 0) -> float:
        """Exact mean P(x = y | y) over outcomes `y` (default: all terminals, or `max_outcomes` random ones)."""
        env = self.env
        if y is None:
            y = env.terminals
            if len(y) > max_outcomes:
                g = torch.Generator().manual_seed(seed)
                y = y[torch.randperm(len(y), generator=g)[:max_outcomes]]
        pos = torch.full((env.n_states,), -1, dtype=torch.long)
        pos[env.terminal_index] = torch.arange(len(env.terminal_index))
        rates = []
        for i in range(0, len(y), 64):
            yc = y[i:i + 64]
            pt = terminal_distribution(env, self.conditional_tables(yc, flows=False)[0])
            rates.append(pt[torch.arange(len(yc)), pos[env.state_index(yc)]])
        return float(torch.cat(rates).mean())

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint folder (`ocgfn.json`, `model.safetensors`) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            tensors.update({f"rnd.{k}": v for k, v in self.rnd.state_dict().items()})
            tensors.update({f"explorer.{k}": v for k, v in self.explorer.model.state_dict().items()})
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"))
            meta = {"kind": "ocgfn", "env": self.env.spec(), "config": dataclasses.asdict(self.config),
                    "steps": self.steps, **(extra or {})}
            (tmp / "ocgfn.json").write_text(json.dumps(meta, indent=2))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> OCGFN:
        path = Path(path)
        meta_file = path / "ocgfn.json"
        if not meta_file.exists() or not (path / "model.safetensors").exists():
            raise CheckpointError(f"{path} is not an OC-GFN checkpoint (written by `rlpt pretrain gfn`): "
                                  f"ocgfn.json or model.safetensors is missing")
        meta = json.loads(meta_file.read_text())
        oc = cls(make_dag_env(meta["env"]), OCGFNConfig(**meta["config"]))
        tensors = load_file(str(path / "model.safetensors"))
        for name, mod in (("model", oc.model), ("rnd", oc.rnd), ("explorer", oc.explorer.model)):
            sub = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            try:
                mod.load_state_dict(sub)
            except RuntimeError as e:
                raise CheckpointError(f"{path}: weights for {name!r} do not fit: {e}") from e
        oc.steps = int(meta.get("steps", 0))
        return oc


def check_compatible(oc: OCGFN, env: DAGEnv) -> None:
    """Raise unless `env` has the DAG the OC-GFN was pretrained on."""
    a = {k: v for k, v in oc.env.spec().items() if k != "reward"}
    b = {k: v for k, v in env.spec().items() if k != "reward"}
    if a != b:
        raise ConfigError(f"the OC-GFN was pretrained on {a}, but the task's env is {b}")


@torch.no_grad()
def convert_exact(oc: OCGFN, env: DAGEnv, flows: str = "dp", chunk: int = 64) -> torch.Tensor:
    """log P_F^R (n_states, n_actions) for `env`'s reward R, by exact marginalisation over all outcomes:
    P_F^R(a|s) = sum_y R(y) F(s|y) P_F(a|s,y) / sum_y R(y) F(s|y) (see the module docstring)."""
    return convert_exact_many(oc, [env], flows, chunk)[0]


@torch.no_grad()
def convert_exact_many(oc: OCGFN, envs: list[DAGEnv], flows: str = "dp", chunk: int = 64) -> list[torch.Tensor]:
    """`convert_exact` for several rewards on one DAG in one sweep over the outcomes: the conditional tables
    (n_outcomes x n_states forward passes, the cost: minutes for the 4,096 12-bit strings on one CPU core) are
    computed once and shared."""
    for env in envs:
        check_compatible(oc, env)
    if flows not in ("dp", "learned"):
        raise ConfigError(f"flows must be 'dp' or 'learned', got {flows!r}")
    base = envs[0]
    ys = base.terminals
    w = torch.stack([env.true_distribution() for env in envs])  # (n_envs, n_outcomes) R(y)/Z: Z cancels
    num = torch.zeros(len(envs), base.n_states, base.n_actions, dtype=torch.float64)
    den = torch.zeros(len(envs), base.n_states, dtype=torch.float64)
    for i in range(0, len(ys), chunk):
        log_pf, log_f = oc.conditional_tables(ys[i:i + chunk], flows=flows == "learned")
        f = visit_probabilities(base, log_pf) if flows == "dp" else log_f.double().exp()  # (c, n_states)
        wf = w[:, i:i + chunk, None] * f[None]  # (n_envs, c, n_states)
        num += torch.einsum("ecs,csa->esa", wf, log_pf.double().exp())
        den += wf.sum(1)
    mask = base.forward_mask(base.all_states)
    uniform = (mask / mask.sum(1, keepdim=True)).double()
    probs = torch.where(den[..., None] > 0, num / den.clamp_min(1e-300)[..., None], uniform)
    return [p.clamp_min(1e-300).log().masked_fill(~mask, float("-inf")).float() for p in probs]


def edge_outcome_mask(env: DAGEnv, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """(B, state_len, n_classes) bool: the outcomes an edge (s, a) can still lead to, component by component
    (those reachable from the child; `s` itself for stop). F(s|y) P_F(a|s,y) is zero for every other y."""
    mask = env.outcome_mask(env.step(s, a))
    stop = a == env.stop
    itself = torch.nn.functional.one_hot(s.clamp(min=0), env.n_classes).bool()  # stop rows are terminals
    return torch.where(stop[:, None, None], itself, mask)


class AmortizedAdapter(nn.Module):
    """N(s, a): log edge flow under R; Q(y | s, a): an autoregressive distribution over the outcome's components
    (grid coordinates or words), restricted to outcomes the edge can reach, so it stays tractable when outcomes
    cannot be enumerated."""

    def __init__(self, env: DAGEnv, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.k, self.c, self.a = env.state_len, env.n_classes, env.n_actions
        self.n_net = MLP(env.obs_dim, env.n_actions, hidden)
        self.q_net = MLP(env.obs_dim + self.a + self.k * self.c + self.k, self.c, hidden)

    def _q_inputs(self, obs: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B*k, in) rows: component i sees the components before it."""
        B = len(obs)
        onehot_y = torch.nn.functional.one_hot(y, self.c).float()  # (B, k, c)
        prefix = torch.tril(torch.ones(self.k, self.k), -1)  # row i keeps components j < i
        ys = (prefix[None, :, :, None] * onehot_y[:, None]).reshape(B, self.k, -1)
        pos = torch.eye(self.k)[None].expand(B, -1, -1)
        base = torch.cat([obs, torch.nn.functional.one_hot(a, self.a).float()], 1)[:, None].expand(-1, self.k, -1)
        return torch.cat([base, ys, pos], -1).reshape(B * self.k, -1)

    def _q_log_probs(self, obs: torch.Tensor, a: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, k, c) log Q of each component's value given the components of `y` before it."""
        logits = self.q_net(self._q_inputs(obs, a, y)).reshape(len(obs), self.k, self.c)
        return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), -1)

    def log_q(self, obs: torch.Tensor, a: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Q(y | s, a) (B,) for outcomes inside `mask` (see `edge_outcome_mask`)."""
        return self._q_log_probs(obs, a, y, mask).gather(2, y[..., None]).squeeze(2).sum(1)

    @torch.no_grad()
    def sample_q(self, obs: torch.Tensor, a: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        y = mask.float().argmax(-1)  # any allowed value; overwritten component by component
        for i in range(self.k):
            logp = self._q_log_probs(obs, a, y, mask)[:, i]
            y[:, i] = torch.multinomial(torch.softmax(logp / temperature, -1), 1, generator=generator).squeeze(1)
        return y


class AmortizedTrainer:
    """Fits an `AmortizedAdapter` to a frozen OC-GFN for `env`'s reward (see the module docstring)."""

    def __init__(self, oc: OCGFN, env: DAGEnv, hidden: tuple[int, ...] = (256, 256), lr: float = 1e-3,
                 batch_size: int = 16, epsilon: float = 0.05, y_epsilon: float = 0.1, temperature: float = 1.0,
                 min_target: float = -30.0, seed: int = 0, adapter: AmortizedAdapter | None = None,
                 flows: str = "ancestors"):
        check_compatible(oc, env)
        if flows not in ("ancestors", "learned"):
            raise ConfigError(f"flows must be 'ancestors' or 'learned', got {flows!r}")
        self.oc, self.env, self.flows = oc, env, flows
        self._visit_cache: dict[tuple, float] = {}  # (s, y) -> log p(s|y); the OC-GFN is frozen
        torch.manual_seed(seed)
        self.adapter = adapter or AmortizedAdapter(env, tuple(hidden))
        self.optimizer = torch.optim.Adam(self.adapter.parameters(), lr=lr)
        self.batch_size, self.epsilon, self.y_epsilon = batch_size, epsilon, y_epsilon
        self.temperature, self.min_target = temperature, min_target
        self.generator = torch.Generator().manual_seed(seed)
        self.oc.model.requires_grad_(False)
        self.steps = 0

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        return self.adapter.n_net(self.env.encode(s))

    def log_visit(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(s|y) of the frozen OC-GFN, exact over the ancestors of s (`OCGFN.log_visit_exact`), memoised
        per (s, y) pair."""
        keys = [tuple(r) for r in torch.cat([s, y], 1).tolist()]
        miss = [i for i, k in enumerate(keys) if k not in self._visit_cache]
        if miss:
            idx = torch.tensor(miss)
            self._visit_cache.update(zip([keys[i] for i in miss], self.oc.log_visit_exact(s[idx], y[idx]).tolist(),
                                         strict=True))
        return torch.tensor([self._visit_cache[k] for k in keys])

    def train_step(self) -> dict[str, float]:
        env = self.env
        traj = sample_trajectories(env, self.logits, self.batch_size, self.generator, self.epsilon)
        B, T1, _ = traj.states.shape
        valid = torch.arange(T1)[None] <= traj.lengths[:, None]
        s, a = traj.states[valid], traj.actions[valid]
        obs, mask = env.encode(s), edge_outcome_mask(env, s, a)
        y = self.adapter.sample_q(obs, a, mask, self.generator, self.temperature)
        explore = torch.rand(len(y), generator=self.generator) < self.y_epsilon  # uniform over reachable outcomes
        uniform = torch.multinomial(mask.reshape(-1, env.n_classes).float(), 1, generator=self.generator)
        y = torch.where(explore[:, None], uniform.reshape(len(y), -1), y)
        with torch.no_grad():
            if self.flows == "ancestors":  # the policy head alone; F(s|y) from the ancestor DP
                pf, lf = self.oc.model.policy_logits(obs, self.oc.cond(y)), self.log_visit(s, y)
            else:  # the flow head's F(s|y)
                pf, _, lf = self.oc.model(obs, self.oc.cond(y))
            lp = masked_log_softmax(pf, env.forward_mask(s)).gather(1, a[:, None]).squeeze(1)
            target = (env.log_reward(y) + lf + lp).clamp(min=self.min_target)
        pred = self.adapter.n_net(obs).gather(1, a[:, None]).squeeze(1) + self.adapter.log_q(obs, a, y, mask)
        loss = (pred - target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.adapter.parameters(), 1.0)
        self.optimizer.step()
        self.steps += 1
        return {"loss": loss.item()}


def pretrain(env: DAGEnv, steps: int, config: OCGFNConfig | None = None, eval_every: int = 500,
             log=print, quiet: bool | None = None) -> tuple[OCGFN, list[dict[str, float]]]:
    """Reward-free OC-GFN pretraining for `steps` iterations; logs the exact success rate every `eval_every`."""
    from rlpt.runs import progress

    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    oc = OCGFN(env, config)
    history: list[dict[str, float]] = []
    with progress(total=steps, desc="ocgfn pretrain", quiet=quiet) as bar:
        for i in range(1, steps + 1):
            m = oc.train_step()
            bar.update(1)
            if i % eval_every == 0 or i == steps:
                row = {"step": i, "success_rate": oc.success_rate(), "loss": m["loss"]}
                history.append(row)
                log(f"step {i}: exact success rate {row['success_rate']:.4f}, loss {row['loss']:.3f}")
    return oc, history
