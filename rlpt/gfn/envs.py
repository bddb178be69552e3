"""GFlowNet environments as DAGs: HyperGrid and bit sequences, with rewards and Gymnasium wrappers.

A `DAGEnv` is vectorised over a batch of states (a LongTensor `(B, state_len)`). Forward actions are
`0 .. n_actions - 2` plus `stop = n_actions - 1`; backward action `a` undoes forward action `a`, so the
backward policy has `n_actions - 1` outputs. Every env can enumerate its states in topological order,
which is what the exact evaluator (`rlpt.gfn.evaluate`) needs.

    env = HyperGrid(dim=2, side=16, reward={"name": "hypergrid", "R0": 1e-3})
    s = env.initial_states(4); m = env.forward_mask(s); s2 = env.step(s, torch.zeros(4, dtype=torch.long))

`gym.make("rlpt/HyperGrid-v0", dim=2, side=16)` and `"rlpt/BitSeq-v0"` expose the same DAGs as Gymnasium
envs (see `GFNGymEnv`), so `rlpt.eval.evaluate` applies.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlpt.errors import ConfigError

# ----------------------------------------------------------------------------- rewards


class Reward:
    """A reward over terminal states, bound to one env. Subclasses implement `log_reward` and `mode_group`."""

    spec: dict[str, Any]

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        """log R(x) for terminal states `x` (B, state_len) -> (B,) float."""
        raise NotImplementedError

    def mode_group(self, x: torch.Tensor) -> torch.Tensor:
        """Which mode each terminal belongs to (B,) long, -1 outside every mode."""
        return torch.full((len(x),), -1, dtype=torch.long)

    n_modes: int = 0


class ConstantReward(Reward):
    """R(x) = 1 everywhere: the reward-free setting (no modes)."""

    def __init__(self, env: DAGEnv):
        self.spec = {"name": "none"}

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x))


class HyperGridReward(Reward):
    """Bengio et al.'s HyperGrid reward, R0 + R1 * prod(0.25 < |x/(H-1) - 0.5| <= 0.5)
    + R2 * prod(0.3 < |x/(H-1) - 0.5| < 0.4). Modes are the R2 cells, grouped by orthant (2^D groups).

    The tests are done exactly in integers: with n = H - 1 and d = |2x - n|, |x/n - 0.5| = d / (2n), so
    `> 0.25` is `2d > n`, `<= 0.5` is `d <= n` (always true), `> 0.3` is `5d > 3n` and `< 0.4` is `5d < 4n`.
    Comparing the float64 ratio instead lets rounding decide the boundary cells (12/15 - 0.5 = 0.30000000000000004
    passes `> 0.3` while its mirror 3/15 does not), which gave side 16 nine top cells instead of {2, 13}^2 and a
    reward that was not symmetric under x -> H-1-x; torchgfn guards the same tests with an epsilon."""

    def __init__(self, env: HyperGrid, R0: float = 1e-3, R1: float = 0.5, R2: float = 2.0):
        if R0 <= 0 or R1 < 0 or R2 < 0:
            raise ConfigError(f"hypergrid reward needs R0 > 0 and R1, R2 >= 0; got R0={R0}, R1={R1}, R2={R2}")
        self.env, self.R0, self.R1, self.R2 = env, float(R0), float(R1), float(R2)
        self.spec = {"name": "hypergrid", "R0": self.R0, "R1": self.R1, "R2": self.R2}
        self.n_modes = 2**env.dim if R2 > 0 else 0

    def _dist(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) long: d = |2x - (H-1)|, i.e. 2 (H-1) |x/(H-1) - 0.5| without rounding."""
        return (2 * x.long() - (self.env.side - 1)).abs()

    def _outer(self, x: torch.Tensor) -> torch.Tensor:
        d, n = self._dist(x), self.env.side - 1
        return ((2 * d > n) & (d <= n)).all(-1)  # 0.25 < d/(2n) <= 0.5 on every axis

    def _ring(self, x: torch.Tensor) -> torch.Tensor:
        d, n = self._dist(x), self.env.side - 1
        return ((5 * d > 3 * n) & (5 * d < 4 * n)).all(-1)  # 0.3 < d/(2n) < 0.4 on every axis

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.R0 + self.R1 * self._outer(x).double() + self.R2 * self._ring(x).double()
        return r.log().float()

    def mode_group(self, x: torch.Tensor) -> torch.Tensor:
        orthant = ((2 * x.long() > self.env.side - 1).long() * (2 ** torch.arange(x.shape[-1]))).sum(-1)
        return torch.where(self._ring(x) & (self.R2 > 0), orthant, torch.full_like(orthant, -1))


class SparseReward(Reward):
    """`k` random target terminals of reward `high`, everything else `low`; each target is a mode."""

    def __init__(self, env: DAGEnv, k: int = 10, seed: int = 0, high: float = 1.0, low: float = 1e-3):
        if k < 1 or low <= 0 or high <= low:
            raise ConfigError(f"sparse reward needs k >= 1 and 0 < low < high; got k={k}, low={low}, high={high}")
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.unique(env.random_terminals(4 * k, g), dim=0)[:k]
        self.index = env.state_index(self.targets)
        self.env, self.high, self.low = env, float(high), float(low)
        self.spec = {"name": "sparse", "k": k, "seed": seed, "high": high, "low": low}
        self.n_modes = len(self.targets)

    def mode_group(self, x: torch.Tensor) -> torch.Tensor:
        eq = self.env.state_index(x)[:, None] == self.index[None]
        return torch.where(eq.any(1), eq.float().argmax(1), torch.full((len(x),), -1))

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        hit = self.mode_group(x) >= 0
        return torch.where(hit, math.log(self.high), math.log(self.low)).float()


class BitSeqReward(Reward):
    """R(x) = exp(-beta * min_m d_H(x, m) / n) over a fixed set of target bit strings (Malkin et al. 2022,
    GAFN, OC-GFN); x is a mode of target m when d_H(x, m) <= radius."""

    def __init__(self, env: BitSeq, n_modes: int = 20, seed: int = 0, beta: float = 10.0, radius: int = 1):
        if n_modes < 1 or beta <= 0 or radius < 0:
            raise ConfigError(f"bitseq reward needs n_modes >= 1, beta > 0, radius >= 0; got {n_modes}, {beta}, "
                              f"{radius}")
        g = torch.Generator().manual_seed(seed)
        self.env, self.beta, self.radius = env, float(beta), int(radius)
        self.targets = torch.randint(0, 2, (n_modes, env.length), generator=g)
        self.spec = {"name": "bitseq", "n_modes": n_modes, "seed": seed, "beta": beta, "radius": radius}
        self.n_modes = n_modes

    def _dist(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.env.to_bits(x)
        return (bits[:, None, :] != self.targets[None]).sum(-1)  # (B, n_modes)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return (-self.beta * self._dist(x).min(1).values.float() / self.env.length).float()

    def mode_group(self, x: torch.Tensor) -> torch.Tensor:
        d, m = self._dist(x).min(1)
        return torch.where(d <= self.radius, m, torch.full_like(m, -1))


REWARDS = {"none": ConstantReward, "hypergrid": HyperGridReward, "sparse": SparseReward, "bitseq": BitSeqReward}


def make_reward(env: DAGEnv, spec: dict[str, Any] | Reward | None) -> Reward:
    """Build a reward from `{"name": ..., **options}` (names: none, hypergrid, sparse, bitseq)."""
    if isinstance(spec, Reward):
        return spec
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", None)
    if name not in REWARDS:
        raise ConfigError(f"unknown GFlowNet reward {name!r}; expected one of {sorted(REWARDS)}")
    try:
        return REWARDS[name](env, **spec)
    except TypeError as e:
        raise ConfigError(f"reward {name!r}: bad options {sorted(spec)}: {e}") from None


# ----------------------------------------------------------------------------- DAG envs


class DAGEnv:
    """A GFlowNet environment: a DAG over integer states with masks, a reward, and enumeration."""

    name: str = "dag"
    n_actions: int  # forward actions including the final `stop`
    state_len: int  # columns of a state tensor
    obs_dim: int  # width of `encode`
    max_steps: int  # the most non-stop transitions in a trajectory
    n_classes: int  # values a terminal's component takes (outcome predictors factorise over components)

    def __init__(self, reward: dict[str, Any] | Reward | None = None):
        self.reward = make_reward(self, reward)

    @property
    def stop(self) -> int:
        return self.n_actions - 1

    # -- subclasses
    def initial_states(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def forward_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, n_actions) bool: which forward actions (stop last) are allowed."""
        raise NotImplementedError

    def backward_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, n_actions - 1) bool: which forward actions could have led to `s` (undo them to get a parent)."""
        raise NotImplementedError

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Children of `s` under non-stop actions `a` (stop rows are returned unchanged)."""
        raise NotImplementedError

    def undo(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Parents of `s`: undo forward actions `a` (rows where `backward_mask(s)[a]` holds)."""
        raise NotImplementedError

    def parents(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every parent of each state: (rows (P,), parent states (P, state_len), forward actions (P,) that lead from
        the parent to `s[rows]`), one entry per (state, parent) edge."""
        rows, a = torch.nonzero(self.backward_mask(s), as_tuple=True)
        return rows, self.undo(s[rows], a), a

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """(B, obs_dim) float one-hot features."""
        raise NotImplementedError

    def decode(self, obs: torch.Tensor) -> torch.Tensor:
        """Inverse of `encode`."""
        raise NotImplementedError

    def level(self, s: torch.Tensor) -> torch.Tensor:
        """Number of transitions from s0 to `s` (topological order)."""
        raise NotImplementedError

    def _enumerate(self) -> torch.Tensor:
        raise NotImplementedError

    def _raw_index(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def random_terminals(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` terminal states drawn uniformly."""
        raise NotImplementedError

    def outcome_mask(self, s: torch.Tensor) -> torch.Tensor:
        """(B, state_len, n_classes) bool: the values each component of a terminal reachable from `s` can take.
        Reachability factorises over components in both DAGs here, so a terminal y is reachable from s iff
        every component of y is allowed; outcome predictors use this without enumerating terminals."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """Constructor arguments (with the reward's spec), enough for `make_dag_env` to rebuild the env."""
        raise NotImplementedError

    # -- shared
    def with_reward(self, reward: dict[str, Any] | Reward | None) -> DAGEnv:
        """The same DAG under another reward."""
        return make_dag_env({**self.spec(), "reward": reward if not isinstance(reward, Reward) else reward.spec})

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reward.log_reward(x)

    def is_terminal_capable(self, s: torch.Tensor) -> torch.Tensor:
        return self.forward_mask(s)[:, self.stop]

    @cached_property
    def all_states(self) -> torch.Tensor:
        """Every state, sorted by level (a topological order of the DAG)."""
        s = self._enumerate()
        return s[torch.argsort(self.level(s), stable=True)]

    @cached_property
    def _position(self) -> torch.Tensor:
        pos = torch.full((len(self.all_states),), -1, dtype=torch.long)
        pos[self._raw_index(self.all_states)] = torch.arange(len(self.all_states))
        return pos

    @property
    def n_states(self) -> int:
        return len(self.all_states)

    def state_index(self, s: torch.Tensor) -> torch.Tensor:
        """Position of each state in `all_states`."""
        return self._position[self._raw_index(s)]

    @cached_property
    def terminal_index(self) -> torch.Tensor:
        """Positions (in `all_states`) of the states that can stop, i.e. the terminal objects x."""
        return torch.nonzero(self.is_terminal_capable(self.all_states)).squeeze(1)

    @property
    def terminals(self) -> torch.Tensor:
        return self.all_states[self.terminal_index]

    @cached_property
    def transitions(self) -> torch.Tensor:
        """(n_states, n_actions - 1) index of the child under each non-stop action, -1 where not allowed."""
        s = self.all_states
        n, k = len(s), self.n_actions - 1
        mask = self.forward_mask(s)[:, :k]
        rows, cols = torch.nonzero(mask, as_tuple=True)
        out = torch.full((n, k), -1, dtype=torch.long)
        out[rows, cols] = self.state_index(self.step(s[rows], cols))
        return out

    def true_distribution(self) -> torch.Tensor:
        """R(x)/Z over `terminals` (float64)."""
        lr = self.log_reward(self.terminals).double()
        return torch.softmax(lr, 0)


class HyperGrid(DAGEnv):
    """A D-dimensional grid of side H: start at the origin, increment one coordinate per step, stop anywhere."""

    name = "hypergrid"

    def __init__(self, dim: int = 2, side: int = 16, reward: dict[str, Any] | Reward | None = None):
        if dim < 1 or side < 2:
            raise ConfigError(f"HyperGrid needs dim >= 1 and side >= 2, got dim={dim}, side={side}")
        if side**dim > 2_000_000:
            raise ConfigError(f"HyperGrid {side}^{dim} has too many states to enumerate (limit 2e6)")
        self.dim, self.side = int(dim), int(side)
        self.n_actions, self.state_len = dim + 1, dim
        self.obs_dim, self.max_steps, self.n_classes = dim * side, dim * (side - 1), side
        super().__init__(reward if reward is not None else {"name": "hypergrid"})

    def spec(self) -> dict[str, Any]:
        return {"kind": "hypergrid", "dim": self.dim, "side": self.side, "reward": self.reward.spec}

    def initial_states(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.dim, dtype=torch.long)

    def forward_mask(self, s: torch.Tensor) -> torch.Tensor:
        return torch.cat([s < self.side - 1, torch.ones(len(s), 1, dtype=torch.bool)], 1)

    def backward_mask(self, s: torch.Tensor) -> torch.Tensor:
        return s > 0

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        move = a < self.dim
        inc = torch.nn.functional.one_hot(a.clamp(max=self.dim - 1), self.dim) * move[:, None]
        return s + inc

    def undo(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return s - torch.nn.functional.one_hot(a, self.dim)

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(s, self.side).flatten(1).float()

    def decode(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(len(obs), self.dim, self.side).argmax(-1)

    def level(self, s: torch.Tensor) -> torch.Tensor:
        return s.sum(-1)

    def _enumerate(self) -> torch.Tensor:
        grids = torch.meshgrid(*[torch.arange(self.side)] * self.dim, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], 1)

    def _raw_index(self, s: torch.Tensor) -> torch.Tensor:
        return (s * self.side ** torch.arange(self.dim)).sum(-1)

    def random_terminals(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.side, (n, self.dim), generator=generator)

    def outcome_mask(self, s: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.side)[None, None, :] >= s[:, :, None]  # coordinates only grow


class BitSeq(DAGEnv):
    """Bit strings of `length` bits built from `length // word` words of `word` bits. Each step writes one word
    into any empty slot (so the DAG is not a tree: a string has many orders); stop once every slot is full."""

    name = "bitseq"

    def __init__(self, length: int = 12, word: int = 4, reward: dict[str, Any] | Reward | None = None):
        if word < 1 or length < word or length % word:
            raise ConfigError(f"BitSeq needs 1 <= word <= length with length % word == 0, got {length}, {word}")
        self.length, self.word = int(length), int(word)
        self.slots, self.words = length // word, 2**word
        if (self.words + 1) ** self.slots > 2_000_000:
            raise ConfigError(f"BitSeq length {length} word {word} has too many states to enumerate (limit 2e6)")
        self.n_actions, self.state_len = self.slots * self.words + 1, self.slots
        self.obs_dim, self.max_steps, self.n_classes = self.slots * (self.words + 1), self.slots, self.words
        super().__init__(reward if reward is not None else {"name": "bitseq"})

    def spec(self) -> dict[str, Any]:
        return {"kind": "bitseq", "length": self.length, "word": self.word, "reward": self.reward.spec}

    def initial_states(self, n: int) -> torch.Tensor:
        return torch.full((n, self.slots), -1, dtype=torch.long)

    def forward_mask(self, s: torch.Tensor) -> torch.Tensor:
        empty = s < 0
        moves = empty[:, :, None].expand(-1, -1, self.words).reshape(len(s), -1)
        return torch.cat([moves, (~empty).all(1, keepdim=True)], 1)

    def backward_mask(self, s: torch.Tensor) -> torch.Tensor:
        filled = torch.nn.functional.one_hot(s.clamp(min=0), self.words).bool() & (s >= 0)[:, :, None]
        return filled.reshape(len(s), -1)

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        move = a < self.n_actions - 1
        slot, w = (a // self.words).clamp(max=self.slots - 1), a % self.words
        out = s.clone()
        rows = torch.nonzero(move).squeeze(1)
        out[rows, slot[rows]] = w[rows]
        return out

    def undo(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        out = s.clone()
        out[torch.arange(len(s)), a // self.words] = -1
        return out

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(s + 1, self.words + 1).flatten(1).float()

    def decode(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(len(obs), self.slots, self.words + 1).argmax(-1) - 1

    def level(self, s: torch.Tensor) -> torch.Tensor:
        return (s >= 0).sum(-1)

    def _enumerate(self) -> torch.Tensor:
        grids = torch.meshgrid(*[torch.arange(-1, self.words)] * self.slots, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], 1)

    def _raw_index(self, s: torch.Tensor) -> torch.Tensor:
        return ((s + 1) * (self.words + 1) ** torch.arange(self.slots)).sum(-1)

    def random_terminals(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.words, (n, self.slots), generator=generator)

    def outcome_mask(self, s: torch.Tensor) -> torch.Tensor:
        values = torch.arange(self.words)[None, None, :]
        return (s[:, :, None] < 0) | (values == s[:, :, None])  # an empty slot takes any word, a filled one stays

    def to_bits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, length) bits of full strings, most significant bit of each word first."""
        shifts = torch.arange(self.word - 1, -1, -1)
        return ((x[:, :, None] >> shifts) & 1).reshape(len(x), -1)


ENVS = {"hypergrid": HyperGrid, "bitseq": BitSeq}


def make_dag_env(spec: dict[str, Any]) -> DAGEnv:
    """Build from `{"kind": "hypergrid"|"bitseq", **constructor args}`."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in ENVS:
        raise ConfigError(f"unknown GFlowNet env kind {kind!r}; expected one of {sorted(ENVS)}")
    try:
        return ENVS[kind](**spec)
    except TypeError as e:
        raise ConfigError(f"GFlowNet env {kind!r}: bad options {sorted(spec)}: {e}") from None


# ----------------------------------------------------------------------------- Gymnasium


class GFNGymEnv(gym.Env):
    """A `DAGEnv` as a Gymnasium env: observation = the one-hot state, action = Discrete(n_actions) with the
    last action `stop`. The reward R(x) is paid at termination (`stop`); an action the mask forbids ends the
    episode with reward 0 and `info["invalid_action"]`. `info["success"]` says whether x is in a mode, and
    `action_masks()` gives the valid actions (sb3-contrib's MaskablePPO convention)."""

    metadata = {"render_modes": []}

    def __init__(self, dag: DAGEnv, render_mode: str | None = None):
        self.dag = dag
        self.observation_space = gym.spaces.Box(0.0, 1.0, (dag.obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(dag.n_actions)
        self.render_mode = render_mode
        self._s = dag.initial_states(1)

    def _obs(self) -> np.ndarray:
        return self.dag.encode(self._s)[0].numpy().astype(np.float32)

    def action_masks(self) -> np.ndarray:
        return self.dag.forward_mask(self._s)[0].numpy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._s = self.dag.initial_states(1)
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        if not 0 <= a < self.dag.n_actions or not self.action_masks()[a]:
            return self._obs(), 0.0, True, False, {"invalid_action": True, "success": False}
        if a == self.dag.stop:
            x = self._s
            info = {"success": bool(self.dag.reward.mode_group(x)[0] >= 0), "terminal": x[0].tolist()}
            return self._obs(), float(self.dag.log_reward(x)[0].exp()), True, False, info
        self._s = self.dag.step(self._s, torch.tensor([a]))
        return self._obs(), 0.0, False, False, {}


def _gym_hypergrid(dim: int = 2, side: int = 16, reward: dict | None = None, render_mode: str | None = None):
    return GFNGymEnv(HyperGrid(dim, side, reward), render_mode)


def _gym_bitseq(length: int = 12, word: int = 4, reward: dict | None = None, render_mode: str | None = None):
    return GFNGymEnv(BitSeq(length, word, reward), render_mode)


for _id, _fn in (("rlpt/HyperGrid-v0", "_gym_hypergrid"), ("rlpt/BitSeq-v0", "_gym_bitseq")):
    if _id not in gym.registry:
        gym.register(_id, entry_point=f"rlpt.gfn.envs:{_fn}", disable_env_checker=True)
