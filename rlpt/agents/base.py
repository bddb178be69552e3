"""The Agent protocol, typed agent configs, and checkpoints that round-trip the whole training state.

An agent is built from a config dataclass: `IQLConfig(...).create(observation_space, action_space)`.
It trains offline with `fit(dataset, n_steps)`, online with `learn(env, total_timesteps, offline=...)`,
acts with `predict(obs)` (SB3's signature) and saves with `save(path)`; `rlpt.load(path)` rebuilds it.

A checkpoint is a folder:
- `agent.json`: agent class, config, spaces, rlpt version, counters (JSON);
- `model.safetensors`: every network's weights (prefixed by module name) and normalizer arrays;
- `training_state.pt`: optimizer states, RNG states, replay buffers (tensors and plain containers
  only; loaded with `torch.load(weights_only=True)`, so it never unpickles code);
- `manifest.json`: the size and SHA-256 of each of those files (`rlpt.utils.write_manifest`).
It is written into a temp folder and renamed into place, so a crash never leaves half a checkpoint. Loading
verifies the manifest first, then refuses NaN weights; a damaged checkpoint is a `CheckpointError`, never a raw
traceback (`rlpt train --resume` then falls back to the previous intact checkpoint).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlpt.callbacks import Callback
from rlpt.config import validate
from rlpt.errors import CheckpointError, ConfigError
from rlpt.utils import replace_dir, resolve_device, to_jsonable, verify_manifest, write_manifest

AGENT_REGISTRY: dict[str, type[Agent]] = {}
CONFIG_REGISTRY: dict[str, type[AgentConfig]] = {}

#: rlpt's own agents by recipe name -> the module whose import registers them. `agent_class` imports it on first
#: use, so no agent package imports another one just to fill the registry (the GFlowNet agent lives in `rlpt.gfn`).
BUILTIN_AGENTS: dict[str, str] = {
    "bc": "rlpt.agents.bc", "iql": "rlpt.agents.iql", "calql": "rlpt.agents.calql", "unio4": "rlpt.agents.unio4",
    "contextwm": "rlpt.agents.contextwm", "ppo": "rlpt.agents.ppo", "sb3_ppo": "rlpt.agents.sb3",
    "sb3_sac": "rlpt.agents.sb3",
    "rllib_ppo": "rlpt.agents.rllib", "rllib_sac": "rlpt.agents.rllib", "gfn": "rlpt.gfn.gflownet",
}


def known_agents() -> list[str]:
    """Every agent name a recipe or checkpoint may use."""
    return sorted(set(AGENT_REGISTRY) | set(BUILTIN_AGENTS))


def agent_class(name: str, source: str = "recipe") -> type[Agent]:
    """The agent class registered as `name` (importing a built-in agent's module when needed)."""
    if name not in AGENT_REGISTRY and name in BUILTIN_AGENTS:
        importlib.import_module(BUILTIN_AGENTS[name])
    if name not in AGENT_REGISTRY:
        raise ConfigError(f"{source}: unknown agent {name!r}; known agents: {known_agents()}")
    return AGENT_REGISTRY[name]


def register_agent(name: str):
    """Class decorator: make an Agent loadable by `rlpt.load` and nameable in recipes."""

    def wrap(cls: type[Agent]) -> type[Agent]:
        cls.agent_name = name
        cls.config_class.agent_class = cls
        AGENT_REGISTRY[name] = cls
        CONFIG_REGISTRY[name] = cls.config_class
        return cls

    return wrap


@dataclasses.dataclass
class AgentConfig:
    """Base of every agent's config: a dataclass that serializes to plain dicts (YAML/JSON) and back."""

    seed: int = 0

    agent_class: ClassVar[type[Agent]]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AgentConfig:
        """Build from a dict, typed by the fields' annotations (`rlpt.config.validate`): unambiguous values convert
        (`"2e-5"` -> 2e-05, `"256"` -> 256, lists -> tuples); other wrong types and unknown keys raise ConfigError
        naming `source`, the key, the expected type and the given value."""
        return validate(cls, data, source)

    def replace(self, **changes) -> AgentConfig:
        return dataclasses.replace(self, **changes)

    def create(self, observation_space: gym.Space, action_space: gym.Space, device: str = "auto", **kwargs) -> Agent:
        """Build the agent for these spaces (`device="auto"` uses CUDA when present)."""
        return self.agent_class(self, observation_space, action_space, device=device, **kwargs)


class Agent:
    """Base class of rlpt agents. Subclasses set `config_class`, build nets in `__init__`, and implement
    `_act` plus `fit` and/or `learn`. They list what a checkpoint holds through `modules()`,
    `optimizers()` and `extra_state()`/`load_extra_state()`, and declare what they can do in the capability
    flags below (the training loop reads them; nothing is probed). Dataset-trained agents build on
    `rlpt.agents.core.OfflineAgent`, which owns bounds, normalisation and the loops."""

    agent_name: ClassVar[str] = "agent"
    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    # ---- capabilities
    trains_offline: ClassVar[bool] = False  # fit(dataset, n_steps)
    trains_online: ClassVar[bool] = False  # learn(env, total_timesteps, offline=...)
    scores_with_env: ClassVar[bool] = False  # fit(..., eval_env=env) scores or selects candidates on an env
    reports_ope: ClassVar[bool] = False  # keeps `ope_history` and `ope_noise_sd`, and has `ope_noise(dataset)`
    takes_pretrained: ClassVar[bool] = False  # its config's `pretrained` names an artifact (encoder, world model)

    def __init__(self, config: AgentConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str = "auto"):
        if not isinstance(action_space, gym.spaces.Box):
            raise ConfigError(f"{type(self).__name__} needs a Box action space, got {action_space}")
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = resolve_device(device)
        self.step = 0  # offline gradient steps done so far; checkpoints carry it so resume continues from it
        self.online_steps = 0  # online env steps done so far
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Map a batch of observations (B, *obs_shape) to actions (B, act_dim) in the env's action bounds."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for one observation or a batch (same leading shape as given)."""
        obs_arr = np.asarray(obs)
        single = obs_arr.shape == tuple(self.observation_space.shape)
        batch = obs_arr[None] if single else obs_arr
        t = torch.as_tensor(batch, device=self.device)
        if t.dtype != torch.uint8:
            t = t.float()
        action = self._act(t, deterministic).cpu().numpy().astype(np.float32)
        return action[0] if single else action

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's signature: `(action, None)`."""
        return self.act(observation, deterministic=deterministic), None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.act(obs, deterministic=True)

    # -------------------------------------------------------------- training (subclasses)
    @property
    def offline_total_steps(self) -> int:
        """Length of the agent's own offline schedule (0: none; the recipe's `offline_steps` decides)."""
        return 0

    def fit(self, dataset, n_steps: int, callbacks: Sequence[Callback] = (),
            eval_env: gym.Env | None = None) -> dict[str, Any]:
        """Run `n_steps` more offline gradient steps from the current state (`self.step` counts them all),
        calling each callback with `(self.step, metrics)` every log interval; stop early if one returns False.
        `eval_env` is used by agents that declare `scores_with_env`."""
        raise NotImplementedError(f"{type(self).__name__} does not train offline")

    def learn(self, env: gym.Env, total_timesteps: int, offline=None, mix_ratio: float = 0.5,
              callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        """Run `total_timesteps` more env steps of online training (`self.online_steps` counts them all),
        mixing `offline` data into each batch with weight `mix_ratio` where the algorithm supports it."""
        raise NotImplementedError(f"{type(self).__name__} does not train online")

    # -------------------------------------------------------------- checkpoint contents (subclasses)
    def modules(self) -> dict[str, nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Tensors/arrays/plain containers beyond nets and optimizers (buffers, phase flags...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint folder atomically (temp folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            tensors = {}
            for name, mod in self.modules().items():
                for k, v in mod.state_dict().items():
                    tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
            save_file(tensors, str(tmp / "model.safetensors"))
            state = {
                "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
                "extra": _to_torch_safe(self.extra_state()),
                "rng": {"numpy": _to_torch_safe(self.rng.bit_generator.state), "torch": torch.get_rng_state(),
                        "python": _to_torch_safe(random.getstate())},
            }
            torch.save(state, tmp / "training_state.pt")
            meta = {"agent": self.agent_name, "config": self.config.to_dict(), "step": self.step,
                    "online_steps": self.online_steps,
                    "observation_space": space_to_dict(self.observation_space),
                    "action_space": space_to_dict(self.action_space), "rlpt_version": _version(),
                    "manifest": True}
            (tmp / "agent.json").write_text(json.dumps(meta, indent=2))
            write_manifest(tmp)
            replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def load_state(self, path: str | os.PathLike, training_state: bool = True) -> None:
        """Load weights (and optimizers, RNG, counters, buffers) from a checkpoint into this agent."""
        path = Path(path)
        meta = read_agent_meta(path)
        try:
            tensors = load_file(str(path / "model.safetensors"))
        except Exception as e:  # safetensors raises its own error types for truncated or malformed files
            raise CheckpointError(f"{path / 'model.safetensors'}: unreadable weights file: "
                                  f"{type(e).__name__}: {e}") from None
        for key, t in tensors.items():
            if t.is_floating_point() and bool(torch.isnan(t).any()):
                raise CheckpointError(f"{path / 'model.safetensors'}: tensor {key!r} holds NaN values "
                                      f"({int(torch.isnan(t).sum())} of {t.numel()}); refusing to load it")
        for name, mod in self.modules().items():
            prefix = f"{name}."
            sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                mod.load_state_dict(sub)
            except RuntimeError as e:
                raise CheckpointError(f"{path}: weights for '{name}' do not fit this agent: {e}") from e
        self.step = int(meta.get("step", 0))
        self.online_steps = int(meta.get("online_steps", 0))
        if training_state and (path / "training_state.pt").exists():
            try:
                state = torch.load(path / "training_state.pt", weights_only=True, map_location="cpu")
                for k, opt in self.optimizers().items():
                    if k in state["optimizers"]:
                        opt.load_state_dict(state["optimizers"][k])
                self.load_extra_state(state.get("extra", {}))
                rng = state.get("rng", {})
                if "numpy" in rng:
                    self.rng.bit_generator.state = _from_torch_safe(rng["numpy"])
                if "torch" in rng:
                    torch.set_rng_state(rng["torch"])
                if "python" in rng:
                    random.setstate(_python_rng_state(_from_torch_safe(rng["python"])))
            except Exception as e:  # truncated zip, unpickling refused, a state of another shape
                raise CheckpointError(f"{path / 'training_state.pt'}: unreadable training state: "
                                      f"{type(e).__name__}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", training_state: bool = True, **kwargs) -> Agent:
        """Rebuild the agent saved at `path` (any registered agent class). Extra keyword arguments go to the
        agent's constructor, e.g. `encoder=` for image agents (its weights come from the checkpoint)."""
        meta = read_agent_meta(Path(path))
        try:
            agent_cls = agent_class(meta["agent"], source=str(path))
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        config = agent_cls.config_class.from_dict(meta["config"], source=str(Path(path) / "agent.json"))
        spaces_ = {}
        for key in ("observation_space", "action_space"):
            try:
                spaces_[key] = space_from_dict(meta[key])
            except CheckpointError:
                raise
            except Exception as e:
                raise CheckpointError(f"{Path(path) / 'agent.json'}: key {key!r} is not a valid space: "
                                      f"{type(e).__name__}: {e}") from None
        agent = agent_cls(config, spaces_["observation_space"], spaces_["action_space"], device=device, **kwargs)
        agent.load_state(path, training_state=training_state)
        return agent


def load(path: str | os.PathLike, device: str = "auto", **kwargs) -> Agent:
    """Load any rlpt agent checkpoint (a folder written by `Agent.save`); kwargs go to the constructor."""
    return Agent.load(path, device=device, **kwargs)


def read_agent_meta(path: Path) -> dict[str, Any]:
    f = path / "agent.json"
    if not f.exists():
        raise CheckpointError(f"{path} is not an rlpt agent checkpoint: {f.name} is missing")
    if not (path / "model.safetensors").exists():
        raise CheckpointError(f"{path}: model.safetensors is missing (incomplete checkpoint)")
    verified = verify_manifest(path)
    try:
        meta = json.loads(f.read_bytes())
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({type(e).__name__}: {e})") from None
    expected = {"agent": str, "config": dict, "observation_space": dict, "action_space": dict}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in expected.items()):
        got = type(meta).__name__ if not isinstance(meta, dict) else \
            {k: type(meta.get(k)).__name__ for k in expected}
        raise CheckpointError(f"{f}: expected an object with keys {list(expected)} (agent: str, the others "
                              f"objects); got {got}")
    if meta.get("manifest") and not verified:
        verify_manifest(path, required=True)
    return meta


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rlpt")
    except Exception:
        return "unknown"


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    raise CheckpointError(f"cannot save an agent over a {type(space).__name__} space")


def space_from_dict(d: dict[str, Any]) -> gym.Space:
    if d["type"] == "Box":
        return gym.spaces.Box(np.array(d["low"], dtype=d["dtype"]), np.array(d["high"], dtype=d["dtype"]),
                              shape=tuple(d["shape"]), dtype=d["dtype"])
    if d["type"] == "Discrete":
        return gym.spaces.Discrete(d["n"])
    raise CheckpointError(f"unknown space type {d['type']}")


def _to_torch_safe(obj: Any) -> Any:
    """Convert numpy arrays/scalars and tuples into what `torch.load(weights_only=True)` accepts."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.uint64:
            return {"__u64__": obj.astype(np.int64).tolist()}
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_torch_safe(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_torch_safe(v) for v in obj]}
    if isinstance(obj, list):
        return [_to_torch_safe(v) for v in obj]
    return obj


def _from_torch_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_from_torch_safe(v) for v in obj["__tuple__"])
        if set(obj) == {"__u64__"}:
            return np.array(obj["__u64__"], dtype=np.int64).astype(np.uint64)
        return {k: _from_torch_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_torch_safe(v) for v in obj]
    return obj


def _python_rng_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def tensor_to_numpy_tree(obj: Any) -> Any:
    """Helper for `load_extra_state`: turn tensors back into numpy arrays, recursively."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: tensor_to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [tensor_to_numpy_tree(v) for v in obj]
    return obj
