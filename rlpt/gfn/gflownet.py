"""GFlowNet training on a `DAGEnv`: a small policy/flow network, vectorised trajectory sampling, and a trainer
for TB / DB / SubTB with a uniform or learned backward policy.

    env = HyperGrid(2, 16, reward={"name": "hypergrid", "R0": 0.1})
    gfn = GFlowNet(env, loss="tb", seed=0)
    for _ in range(1000):
        gfn.train_step()
    exact_metrics(env, gfn.log_pf_table())   # {"l1": ..., "modes_covered": ...}

Networks are rlpt's own `MLP`s (not torchgfn): the nets and samplers here are ~200 lines, carry no dependency
pins (torchgfn 2.4 requires numpy < 2), and sample a batch-16 HyperGrid trajectory set in a few ms, where
torchgfn's generic containers spend most of its ~25 CPU-ms per training step in Python overhead (rlpt's step:
~13; benchmarks/results/gfn.json, docs/gfn.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent
from rlpt.callbacks import run_callbacks
from rlpt.errors import ConfigError
from rlpt.gfn.envs import DAGEnv, make_dag_env
from rlpt.gfn.evaluate import exact_metrics, masked_log_softmax, policy_table
from rlpt.gfn.losses import Terms, detailed_balance, subtrajectory_balance, trajectory_balance
from rlpt.nets.mlp import ACTIVATIONS, MLP

LOSSES = ("tb", "db", "subtb")
BACKWARDS = ("uniform", "learned")


class GFNModel(nn.Module):
    """P_F logits (and P_B logits on the same trunk, when learned), a separate log-flow MLP (DB/SubTB) and log Z.

    Input is the one-hot state, concatenated with a condition vector when `cond_dim > 0` (OC-GFN's outcome).
    With `hidden=(256, 256)` and `backward="learned"` the P_F/P_B part matches torchgfn's HyperGrid example.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (256, 256), backward: str = "uniform",
                 flow: bool = False, cond_dim: int = 0, activation: str = "relu"):
        super().__init__()
        if backward not in BACKWARDS:
            raise ConfigError(f"backward must be one of {BACKWARDS}, got {backward!r}")
        if not hidden:
            raise ConfigError("hidden must name at least one layer width")
        in_dim = obs_dim + cond_dim
        self.trunk = nn.Sequential(MLP(in_dim, hidden[-1], hidden[:-1], activation), ACTIVATIONS[activation]())
        self.pf = nn.Linear(hidden[-1], n_actions)
        self.pb = nn.Linear(hidden[-1], n_actions - 1) if backward == "learned" else None
        self.log_flow = MLP(in_dim, 1, hidden, activation) if flow else None
        self.log_z = nn.Parameter(torch.zeros(()))
        self.cond_dim = cond_dim

    def policy_logits(self, obs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """P_F logits only (what sampling needs)."""
        return self.pf(self.trunk(obs if cond is None else torch.cat([obs, cond], -1)))

    def forward(self, obs: torch.Tensor, cond: torch.Tensor | None = None):
        """(pf_logits, pb_logits | None, log_flow | None) for a batch of encoded states."""
        x = obs if cond is None else torch.cat([obs, cond], -1)
        h = self.trunk(x)
        return (self.pf(h), None if self.pb is None else self.pb(h),
                None if self.log_flow is None else self.log_flow(x).squeeze(-1))


@dataclass
class Trajectories:
    """A batch of B complete trajectories padded to T+1 positions: `states[:, t]` is s_t (the terminal state
    repeats after the end), `actions[:, t]` the action taken at s_t (stop at t = L, -1 after)."""

    states: torch.Tensor  # (B, T+1, state_len)
    actions: torch.Tensor  # (B, T+1)
    lengths: torch.Tensor  # (B,) L: non-stop transitions
    masks: torch.Tensor  # (B, T+1, n_actions) forward masks of states

    @property
    def terminals(self) -> torch.Tensor:
        return self.states[torch.arange(len(self.lengths)), self.lengths]

    def __len__(self) -> int:
        return len(self.lengths)


@torch.no_grad()
def sample_trajectories(env: DAGEnv, logits_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
                        generator: torch.Generator | None = None, epsilon: float = 0.0,
                        temperature: float = 1.0) -> Trajectories:
    """Roll out `n` trajectories in parallel with `logits_fn(states) -> (B, n_actions)` (masked here), mixing
    in a uniform choice over allowed actions with probability `epsilon` (off-policy exploration)."""
    s = env.initial_states(n)
    done = torch.zeros(n, dtype=torch.bool)
    states, actions, masks = [s], [], []
    lengths = torch.zeros(n, dtype=torch.long)
    for _ in range(env.max_steps + 1):
        mask = env.forward_mask(s)
        probs = torch.softmax(logits_fn(s).float().masked_fill(~mask, float("-inf")) / temperature, -1)
        if epsilon > 0:
            probs = (1 - epsilon) * probs + epsilon * mask / mask.sum(1, keepdim=True)
        a = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        a = torch.where(done, torch.full_like(a, -1), a)
        masks.append(mask)
        actions.append(a)
        stop = a == env.stop
        move = (~done) & (~stop)
        s = torch.where(move[:, None], env.step(s, a.clamp(min=0)), s)
        lengths += move
        done = done | stop
        if done.all():
            break
        states.append(s)
    return Trajectories(torch.stack(states, 1), torch.stack(actions, 1), lengths, torch.stack(masks, 1))


def compute_terms(env: DAGEnv, model: GFNModel, traj: Trajectories, log_reward: torch.Tensor,
                  cond: torch.Tensor | None = None) -> Terms:
    """Recompute (with gradients) the per-step log P_F, log P_B and log F of `traj` under `model`.

    `log_reward` (B,) is log R(x), or an outcome-conditioned log R(x|y); `cond` (B, cond_dim) is fixed per
    trajectory. Without a flow head log F is 0 (only TB, which uses log Z instead, should be used then)."""
    B, T1, _ = traj.states.shape
    obs = env.encode(traj.states.reshape(B * T1, traj.states.shape[-1]))
    c = None if cond is None else cond[:, None, :].expand(B, T1, cond.shape[-1]).reshape(B * T1, -1)
    pf_logits, pb_logits, log_flow = model(obs, c)
    t = torch.arange(T1)[None]
    act = traj.actions.clamp(min=0)
    lp = masked_log_softmax(pf_logits.reshape(B, T1, -1), traj.masks)
    log_pf = torch.where(t <= traj.lengths[:, None], lp.gather(2, act[..., None]).squeeze(2), torch.zeros(()))
    # backward: the transition s_t -> s_{t+1} (t < L) is undone by backward action a_t at s_{t+1}
    nxt = traj.states[:, 1:].reshape(B * (T1 - 1), traj.states.shape[-1])
    bmask = env.backward_mask(nxt).reshape(B, T1 - 1, env.n_actions - 1)
    bmask = bmask | ~bmask.any(-1, keepdim=True)  # padding rows at s0 have no parent: keep log-softmax finite
    if pb_logits is None:
        lpb = -bmask.sum(-1).clamp(min=1).float().log()
    else:
        lpb_all = masked_log_softmax(pb_logits.reshape(B, T1, -1)[:, 1:], bmask)
        lpb = lpb_all.gather(2, act[:, :-1, None].clamp(max=env.n_actions - 2)).squeeze(2)
    edge = t[:, :-1] < traj.lengths[:, None]
    log_pb = torch.cat([torch.where(edge, lpb, torch.zeros(())), torch.zeros(B, 1)], 1)
    flows = torch.zeros(B, T1) if log_flow is None else log_flow.reshape(B, T1)
    log_f = torch.cat([torch.where(t <= traj.lengths[:, None], flows, torch.zeros(())), torch.zeros(B, 1)], 1)
    log_f = log_f.scatter(1, (traj.lengths + 1)[:, None], log_reward.float()[:, None])
    return Terms(log_pf, log_pb, log_f, traj.lengths)


def balance_loss(loss: str, terms: Terms, log_z: torch.Tensor, subtb_lambda: float = 0.9) -> torch.Tensor:
    """Per-trajectory loss (B,) for `loss` in ("tb", "db", "subtb")."""
    if loss == "tb":
        return trajectory_balance(terms, log_z)
    if loss == "db":
        return detailed_balance(terms)
    if loss == "subtb":
        return subtrajectory_balance(terms, subtb_lambda)
    raise ConfigError(f"unknown GFlowNet loss {loss!r}; expected one of {LOSSES}")


class GFlowNet:
    """A GFlowNet on `env` trained on-policy (optionally epsilon-greedy) with TB, DB or SubTB.

    Defaults follow torchgfn's HyperGrid example: 2x256 ReLU MLP, Adam lr 1e-3 (log Z 0.1), batch 16,
    gradient-norm clip 1. `reward_fn` (terminals -> log R) replaces the env's reward, e.g. for GAFN's
    intrinsic bonus.
    """

    def __init__(self, env: DAGEnv, loss: str = "tb", backward: str = "uniform", hidden: Sequence[int] = (256, 256),
                 lr: float = 1e-3, lr_logz: float = 0.1, batch_size: int = 16, epsilon: float = 0.0,
                 subtb_lambda: float = 0.9, grad_clip: float = 1.0, seed: int = 0,
                 reward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if loss not in LOSSES:
            raise ConfigError(f"unknown GFlowNet loss {loss!r}; expected one of {LOSSES}")
        if batch_size < 1 or not 0 <= epsilon <= 1:
            raise ConfigError(f"need batch_size >= 1 and 0 <= epsilon <= 1, got {batch_size}, {epsilon}")
        self.env, self.loss, self.batch_size, self.epsilon = env, loss, batch_size, epsilon
        self.subtb_lambda, self.grad_clip = subtb_lambda, grad_clip
        self.reward_fn = reward_fn or env.log_reward
        torch.manual_seed(seed)
        self.model = GFNModel(env.obs_dim, env.n_actions, hidden, backward, flow=loss != "tb")
        self.generator = torch.Generator().manual_seed(seed)
        rest = [p for n, p in self.model.named_parameters() if n != "log_z"]
        self.optimizer = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": [self.model.log_z], "lr": lr_logz}])
        self.steps = 0
        self.seen_modes: set[int] = set()

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        return self.model.policy_logits(self.env.encode(s))

    def sample(self, n: int, epsilon: float = 0.0) -> Trajectories:
        return sample_trajectories(self.env, self.logits, n, self.generator, epsilon)

    def train_step(self, traj: Trajectories | None = None) -> dict[str, float]:
        """One gradient step on a fresh on-policy batch (or on `traj`); returns loss and log Z."""
        traj = traj if traj is not None else self.sample(self.batch_size, self.epsilon)
        x = traj.terminals
        terms = compute_terms(self.env, self.model, traj, self.reward_fn(x))
        loss = balance_loss(self.loss, terms, self.model.log_z, self.subtb_lambda).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.steps += 1
        g = self.env.reward.mode_group(x)
        self.seen_modes.update(g[g >= 0].tolist())
        return {"loss": loss.item(), "log_z": self.model.log_z.item(), "modes_found": len(self.seen_modes)}

    def log_pf_table(self) -> torch.Tensor:
        """log P_F over all states (for `rlpt.gfn.evaluate`)."""
        return policy_table(self.env, self.logits)


def uniform_log_pf(env: DAGEnv) -> torch.Tensor:
    """The uniform forward policy's table (a sanity baseline)."""
    return policy_table(env, lambda s: torch.zeros(len(s), env.n_actions))


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


# ----------------------------------------------------------------------------- the rlpt agent

MODES = ("scratch", "exact", "amortized")


@dataclasses.dataclass
class GFNAgentConfig(AgentConfig):
    """The `gfn` agent: a GFlowNet trained from scratch on the env's reward, or an OC-GFN checkpoint
    (`pretrained`, from `rlpt pretrain gfn`) adapted to it by exact marginalisation or an amortized adapter.

    One online "step" of `rlpt train` is one training iteration (a batch of `batch_size` trajectories).
    """

    mode: str = "scratch"  # scratch | exact | amortized
    pretrained: str | None = None  # OC-GFN checkpoint folder (modes exact and amortized)
    loss: str = "tb"  # scratch: tb | db | subtb
    backward: str = "uniform"  # scratch: uniform | learned
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-3
    lr_logz: float = 0.1
    batch_size: int = 16
    epsilon: float = 0.0
    subtb_lambda: float = 0.9
    log_interval: int = 100  # iterations between metric callbacks (with the exact L1 on enumerable envs)
    env_spec: dict | None = None  # the DAG (filled in from the env on first `learn`; lets `rlpt.load` rebuild)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"gfn mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "scratch" and not self.pretrained:
            raise ConfigError(f"gfn mode {self.mode!r} needs `pretrained` (an OC-GFN checkpoint from "
                              f"`rlpt pretrain gfn`), e.g. the override config.pretrained=runs/ocgfn")
        self.hidden = tuple(self.hidden)


class _Table(nn.Module):
    def __init__(self, n_states: int, n_actions: int):
        super().__init__()
        self.register_buffer("log_pf", torch.zeros(n_states, n_actions))


@register_agent("gfn")
class GFNAgent(Agent):
    """A GFlowNet as an rlpt agent over `rlpt/HyperGrid-v0` / `rlpt/BitSeq-v0` (Discrete actions)."""

    config_class = GFNAgentConfig
    trains_online = True

    def __init__(self, config: GFNAgentConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        if not isinstance(action_space, gym.spaces.Discrete) or not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(f"the gfn agent needs a Box observation and a Discrete action space (a GFlowNet "
                              f"env such as rlpt/HyperGrid-v0), got {observation_space} and {action_space}")
        self.config, self.observation_space, self.action_space = config, observation_space, action_space
        self.device = torch.device("cpu")  # small nets, Python-bound: CPU
        self.step, self.online_steps = 0, 0
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.dag: DAGEnv | None = None
        self.gfn: GFlowNet | None = None
        self.table: _Table | None = None
        self.trainer = None
        self._oc = None
        if config.env_spec is not None:
            self._build(make_dag_env(config.env_spec))

    def _build(self, dag: DAGEnv) -> None:
        c = self.config
        if dag.obs_dim != self.observation_space.shape[0] or dag.n_actions != self.action_space.n:
            raise ConfigError(f"env {dag.spec()} does not match the agent's spaces")
        self.dag = dag
        self.config = c.replace(env_spec=dag.spec())
        if c.mode == "scratch":
            self.gfn = GFlowNet(dag, c.loss, c.backward, c.hidden, c.lr, c.lr_logz, c.batch_size, c.epsilon,
                                c.subtb_lambda, seed=c.seed)
        elif c.mode == "exact":
            self.table = _Table(dag.n_states, dag.n_actions)
        else:
            from rlpt.gfn.ocgfn import AmortizedAdapter

            self._adapter = AmortizedAdapter(dag, c.hidden)

    def _pretrained(self):
        if self._oc is None:
            from rlpt.gfn.ocgfn import OCGFN, check_compatible

            self._oc = OCGFN.load(self.config.pretrained)
            check_compatible(self._oc, self.dag)
        return self._oc

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        if self.dag is None:
            raise ConfigError("this gfn agent has not seen its env yet: call learn(env, ...) first")
        if self.gfn is not None:
            return self.gfn.logits(s)
        if self.table is not None:
            return self.table.log_pf[self.dag.state_index(s)]
        return self.trainer.logits(s) if self.trainer is not None else self._adapter.n_net(self.dag.encode(s))

    def log_pf_table(self) -> torch.Tensor:
        return policy_table(self.dag, self.logits)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Sample actions (a GFlowNet is a sampler, so `deterministic` is ignored)."""
        o = np.asarray(obs, dtype=np.float32)
        single = o.ndim == 1
        s = self.dag.decode(torch.as_tensor(o[None] if single else o))
        probs = torch.softmax(self.logits(s).masked_fill(~self.dag.forward_mask(s), float("-inf")), -1)
        a = torch.multinomial(probs, 1).squeeze(1).numpy()
        return a[0] if single else a

    def learn(self, env: gym.Env, total_timesteps: int, offline=None, mix_ratio: float = 0.5,
              callbacks: Sequence[Callback] = ()) -> dict:
        dag = getattr(env.unwrapped, "dag", None)
        if not isinstance(dag, DAGEnv):
            raise ConfigError("the gfn agent trains on GFlowNet envs (rlpt/HyperGrid-v0, rlpt/BitSeq-v0); got "
                              f"{env.unwrapped}")
        if self.dag is None:
            self._build(dag)
        elif {k: v for k, v in self.dag.spec().items() if k != "reward"} != \
                {k: v for k, v in dag.spec().items() if k != "reward"}:
            raise ConfigError(f"agent was built for {self.dag.spec()}, env is {dag.spec()}")
        self.dag = dag  # the env's reward is the task's
        c, metrics = self.config, {}
        if c.mode == "exact":
            from rlpt.gfn.ocgfn import convert_exact

            if self.online_steps == 0:
                self.table.log_pf.copy_(convert_exact(self._pretrained(), dag))
            self.online_steps += total_timesteps
            metrics = {f"exact/{k}": v for k, v in exact_metrics(dag, self.log_pf_table()).items()}
            run_callbacks(callbacks, self.online_steps, metrics)
            return metrics
        if c.mode == "amortized" and self.trainer is None:
            from rlpt.gfn.ocgfn import AmortizedTrainer

            self.trainer = AmortizedTrainer(self._pretrained(), dag, c.hidden, c.lr, c.batch_size, c.epsilon or 0.05,
                                            seed=c.seed, adapter=self._adapter)
        trainer = self.gfn if c.mode == "scratch" else self.trainer
        end = self.online_steps + total_timesteps
        while self.online_steps < end:
            m = trainer.train_step()
            self.online_steps += 1
            if self.online_steps % c.log_interval == 0 or self.online_steps == end:
                metrics = {f"train/{k}": v for k, v in m.items()}
                metrics.update({f"exact/{k}": v for k, v in exact_metrics(dag, self.log_pf_table()).items()})
                if not run_callbacks(callbacks, self.online_steps, metrics):
                    break
        return metrics

    def modules(self) -> dict[str, nn.Module]:
        if self.gfn is not None:
            return {"model": self.gfn.model}
        if self.table is not None:
            return {"table": self.table}
        return {"adapter": self._adapter} if self.dag is not None else {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.gfn is not None:
            return {"gfn": self.gfn.optimizer}
        return {"adapter": self.trainer.optimizer} if self.trainer is not None else {}
