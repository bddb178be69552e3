"""Export an agent's deterministic policy for deployment: ONNX or TorchScript, plus a `policy.json` to verify it.

The exported module maps raw observations, exactly as the env gives them, to actions in the env's bounds:

    obs (B, *obs_shape)  float32 (uint8 for image observations)  ->  action (B, act_dim) float32

with the agent's observation normalisation (and image encoder) inside, so it returns what
`agent.predict(obs, deterministic=True)` returns. Observations of a float64 space are cast to float32 first,
as `predict` does.

    from rlpt.export import export_policy, verify_export
    model = export_policy("runs/iql__hopper__seed0__...", "export/", format="onnx")  # or a checkpoint folder
    verify_export("export/")  # SHA-256 and the test vector of policy.json, on the robot computer

`policy.json` beside the model file records the agent, the observation and action spaces, the input/output
names, the model file's SHA-256 and a test vector (a few observations and the actions `agent.predict` gave).

Agents supported: BC, IQL, Cal-QL, Uni-O4 (state observations, or images through its encoder: pass the same
`encoder=` module that `rlpt.load` needs; its weights come from the checkpoint) and SB3 PPO/SAC with vector
observations. An agent class can take over by defining `policy_module() -> nn.Module` itself.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, read_agent_meta
from rlpt.agents.core import from_unit
from rlpt.errors import CheckpointError, ConfigError, RlptError
from rlpt.utils import file_sha256

FORMATS = {"onnx": "policy.onnx", "torchscript": "policy.pt"}  # format -> model file name
INPUT_NAME, OUTPUT_NAME = "obs", "action"
ATOL, RTOL = 1e-5, 1e-5  # parity tolerance against agent.predict: |diff| <= ATOL + RTOL * |expected|


# ============================================================================================== acting modules
class ActingPolicy(nn.Module):
    """`features(obs)` -> `head` -> actions in the env's bounds.

    `clip=False`: the head gives actions in [-1, 1], mapped to `[low, high]` by `from_unit` (rlpt agents, SB3
    squashed policies); `clip=True`: the head gives env-scale actions, clipped to `[low, high]` (SB3 PPO)."""

    def __init__(self, features: nn.Module, head: nn.Module, low: np.ndarray, high: np.ndarray, clip: bool = False):
        super().__init__()
        self.features, self.head, self.clip = features, head, clip
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        action = self.head(self.features(obs))  # (B, act_dim)
        if self.clip:
            return torch.minimum(torch.maximum(action, self.low), self.high)
        return from_unit(action, self.low, self.high)


class FlatNormalize(nn.Module):
    """(B, *obs_shape) -> `normalizer(flat float obs)`, (B, obs_dim)."""

    def __init__(self, normalizer: nn.Module):
        super().__init__()
        self.normalizer = normalizer

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalizer(obs.flatten(1).float())


class EncodeNormalize(nn.Module):
    """Uni-O4's image path: channel-last frames (or a frame stack) to channels-first, the encoder, the normalizer.
    The layout is fixed from the observation shape, as `UniO4._encode` decides it per batch."""

    def __init__(self, encoder: nn.Module, normalizer: nn.Module, obs_shape: tuple[int, ...]):
        super().__init__()
        self.encoder, self.normalizer = encoder, normalizer
        self.stack = len(obs_shape) == 4  # (k, H, W, C) -> (k*C, H, W)
        self.channels_last = len(obs_shape) == 3 and obs_shape[-1] in (1, 3, 4) and obs_shape[0] not in (1, 3, 4)
        self.obs_shape = tuple(obs_shape)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.stack:
            k, h, w, c = self.obs_shape
            x = x.permute(0, 1, 4, 2, 3).reshape(-1, k * c, h, w)
        elif self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.normalizer(self.encoder(x).float())


class FloatFeatures(nn.Module):
    """SB3 vector observations: `features_extractor(obs.float())` (SB3's `preprocess_obs` for a Box)."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.extractor(obs.float())


class TanhMean(nn.Module):
    """Deterministic action of SB3 SAC's actor: `tanh(mu(latent_pi(x)))`."""

    def __init__(self, trunk: nn.Module, mu: nn.Module):
        super().__init__()
        self.trunk, self.mu = trunk, mu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(self.trunk(x)))


class DeterministicAction(nn.Module):
    """The deterministic action of any rlpt `GaussianActor` (its mean, tanh-squashed where the actor squashes)."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic_action(x)


class SB3PPOHead(nn.Module):
    """SB3 PPO's deterministic action from actor features: `action_net(mlp_extractor.forward_actor(x))`,
    through tanh when the (gSDE) distribution squashes."""

    def __init__(self, mlp_extractor: nn.Module, action_net: nn.Module, squash: bool):
        super().__init__()
        self.mlp_extractor, self.action_net, self.squash = mlp_extractor, action_net, squash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.action_net(self.mlp_extractor.forward_actor(x))
        return torch.tanh(mean) if self.squash else mean


def _rlpt_state_policy(agent: Any, head: nn.Module) -> nn.Module:
    return ActingPolicy(FlatNormalize(agent.obs_norm), head, agent.low, agent.high)


def _unio4_policy(agent: Any) -> nn.Module:
    head = DeterministicAction(agent.acting_policy())
    if agent.encoder is None:
        features: nn.Module = FlatNormalize(agent.normalizer)
    else:
        features = EncodeNormalize(agent.encoder, agent.normalizer, tuple(agent.observation_space.shape))
    return ActingPolicy(features, head, agent.low, agent.high)


def _sb3_policy(agent: Any) -> nn.Module:
    from stable_baselines3.common.distributions import DiagGaussianDistribution, StateDependentNoiseDistribution
    from stable_baselines3.common.preprocessing import is_image_space

    policy = agent.sb3_model.policy
    space = policy.observation_space
    if is_image_space(space) or len(space.shape) != len(agent.observation_space.shape):
        raise ConfigError(f"export of SB3 policies over image observations {agent.observation_space.shape} is not "
                          "supported (SB3 transposes and rescales them outside the network); use a vector "
                          "observation space or an rlpt agent")
    low, high = np.asarray(agent.action_space.low, np.float32), np.asarray(agent.action_space.high, np.float32)
    if agent.agent_name == "sb3_sac":
        actor = policy.actor
        head: nn.Module = TanhMean(actor.latent_pi, actor.mu)  # SAC (gSDE too) squashes its mean with tanh
        features = FloatFeatures(actor.features_extractor)
    else:
        dist = policy.action_dist
        if isinstance(dist, DiagGaussianDistribution):
            squash = False
        elif isinstance(dist, StateDependentNoiseDistribution):
            squash = dist.bijector is not None
        else:
            raise ConfigError(f"export of an SB3 PPO policy with a {type(dist).__name__} is not supported")
        head = SB3PPOHead(policy.mlp_extractor, policy.action_net, squash)
        features = FloatFeatures(policy.pi_features_extractor)
    # SB3's predict: squashed policies are rescaled from [-1, 1] to the bounds, the others are clipped to them
    return ActingPolicy(features, head, low, high, clip=not policy.squash_output)


#: agent name -> builder of its acting module (weights shared with the agent; `policy_module` copies them)
POLICY_BUILDERS: dict[str, Callable[[Any], nn.Module]] = {
    "bc": lambda agent: _rlpt_state_policy(agent, DeterministicAction(agent.actor)),
    "iql": lambda agent: _rlpt_state_policy(agent, DeterministicAction(agent.actor)),
    "calql": lambda agent: _rlpt_state_policy(agent, DeterministicAction(agent.actor)),
    "unio4": _unio4_policy,
    "ppo": lambda agent: _rlpt_state_policy(agent, DeterministicAction(agent.actor)),
    "sb3_ppo": _sb3_policy,
    "sb3_sac": _sb3_policy,
}


def policy_module(agent: Agent) -> nn.Module:
    """The agent's deterministic acting path as a standalone CPU module in eval mode, with copied weights:
    `module(obs)` equals `agent.predict(obs, deterministic=True)[0]` for a batch of observations.

    Uses the agent's own `policy_module()` when it defines one, else the builder registered for its name in
    `POLICY_BUILDERS`."""
    hook = getattr(agent, "policy_module", None)
    if callable(hook):
        module = hook()
    else:
        builder = POLICY_BUILDERS.get(agent.agent_name)
        if builder is None:
            raise ConfigError(f"cannot export a '{agent.agent_name}' agent ({type(agent).__name__}): no acting "
                              f"module for it; supported: {sorted(POLICY_BUILDERS)} (or give the agent class a "
                              "policy_module() method)")
        module = builder(agent)
    return copy.deepcopy(module).cpu().eval().requires_grad_(False)


# ============================================================================================== paths
def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder for `path`: the checkpoint itself, or for a run folder its `final/` checkpoint, else its
    latest one (as `rlpt eval` picks). Raises CheckpointError when there is none."""
    from rlpt.runs import RunDir

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run or checkpoint folder: it does not exist")
    if (path / "config.yaml").exists():  # a run folder
        ckpt = path / "final" if (path / "final").exists() else RunDir.open(path).latest_checkpoint()
        if ckpt is None:
            raise CheckpointError(f"{path} is a run folder without a checkpoint (no final/ or checkpoints/step_*/)")
        path = ckpt
    read_agent_meta(path)  # CheckpointError unless agent.json and model.safetensors are there
    return path


def default_export_dir(checkpoint: Path, format: str) -> Path:
    """`<run>/export/<checkpoint name>-<format>` for a checkpoint inside a run folder (final/ or
    checkpoints/step_*), else `export/<checkpoint name>-<format>` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    base = checkpoint.parent
    for cand in (checkpoint.parent, checkpoint.parent.parent):
        if (cand / "config.yaml").exists():
            base = cand
            break
    return base / "export" / f"{checkpoint.name}-{format}"


# ============================================================================================== export
def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {sorted(FORMATS)}")
    return format


def _input_dtype(agent: Agent) -> np.dtype:
    return np.dtype(np.uint8) if np.dtype(agent.observation_space.dtype) == np.uint8 else np.dtype(np.float32)


def sample_observations(agent: Agent, n: int, seed: int = 0) -> np.ndarray:
    """`n` observations drawn from the agent's observation space (seeded), in the exported model's input dtype."""
    space = copy.deepcopy(agent.observation_space)
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)]).astype(_input_dtype(agent))


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'rlpt[export]'")


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, but TorchScript is the ask
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(path))


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    _require("onnx", "onnxscript")
    import onnx

    batch = torch.export.Dim("batch")
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision not installed"
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # torch-internal deprecation noise of the exporter
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes={INPUT_NAME: {0: batch}}, dynamo=True, external_data=False,
                              verbose=False)
    except Exception as e:  # the exporter raises many types; name the step that failed
        raise RlptError(f"ONNX export failed ({type(e).__name__}: {e}); try format='torchscript'") from e
    finally:
        registry_log.setLevel(level)
    onnx.checker.check_model(str(path), full_check=True)


def _run_model(path: Path, format: str, obs: np.ndarray) -> tuple[np.ndarray, str]:
    """Actions of the exported file for `obs` and the runtime that computed them."""
    if format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(torch.as_tensor(obs)).numpy(), f"torch.jit {torch.__version__}"
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0], f"onnxruntime {ort.__version__}"


def _compare(got: np.ndarray, expected: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> tuple[float, bool]:
    """(max |got - expected|, whether every entry is within atol + rtol * |expected| and the shapes agree)."""
    if got.shape != expected.shape:
        return float("inf"), False
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return float(diff.max(initial=0.0)), bool(np.all(diff <= atol + rtol * np.abs(expected)))


@contextmanager
def _keep_global_rng() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global RNG states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


sha256 = file_sha256  # kept under its old name


def export_policy(run_or_checkpoint: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  format: str = "onnx", *, encoder: nn.Module | None = None, n_test: int = 4,
                  seed: int = 0) -> Path:
    """Export the deterministic policy of a run's final (else latest) checkpoint, or of a checkpoint folder.

    Writes `policy.onnx` (dynamic batch dimension, checked by the ONNX checker) or `policy.pt` (traced
    TorchScript) and `policy.json` into `out_dir` (default: `default_export_dir`), then reloads the file and
    checks it reproduces `agent.predict(obs, deterministic=True)` on `n_test` observations sampled from the
    observation space (ONNX: with onnxruntime when installed). `encoder=` is the image encoder an image agent
    was built with (as for `rlpt.load`). Returns the model file's path. Raises ConfigError for an unknown format,
    CheckpointError when the path holds no checkpoint or the file does not reproduce the agent."""
    from rlpt import __version__
    from rlpt.agents.base import load

    _check_format(format)
    if format == "onnx":
        _require("onnx", "onnxscript")
    ckpt = resolve_checkpoint(run_or_checkpoint)
    with _keep_global_rng():  # loading restores the training RNG states; the caller's stay as they were
        # the full state: which policy acts can live there (Uni-O4's hand-off and OPE scores)
        agent = load(ckpt, device="cpu", **({"encoder": encoder} if encoder is not None else {}))
    module = policy_module(agent)

    obs = sample_observations(agent, max(int(n_test), 2), seed)  # >= 2 rows: the ONNX batch stays symbolic
    expected = np.asarray(agent.predict(obs, deterministic=True)[0], np.float32)
    with torch.no_grad():
        eager = module(torch.as_tensor(obs)).numpy()
    diff, ok = _compare(eager, expected)
    if not ok:  # a builder that no longer matches the agent's acting code
        raise CheckpointError(f"{ckpt}: the acting module of '{agent.agent_name}' differs from agent.predict by "
                              f"{diff:.3g}; its export builder needs updating")

    out = Path(out_dir) if out_dir is not None else default_export_dir(ckpt, format)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / FORMATS[format]
    example = torch.as_tensor(obs)
    tmp = out / f".{model_path.name}.tmp"
    try:
        (_write_onnx if format == "onnx" else _write_torchscript)(module, example, tmp)
        if format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            parity: dict[str, Any] = {"runtime": None, "checked": "onnx.checker only (onnxruntime not installed)"}
        else:
            got, runtime = _run_model(tmp, format, obs)
            diff, ok = _compare(got, expected)
            if not ok:
                raise CheckpointError(f"{ckpt}: the exported {format} model differs from agent.predict by {diff:.3g} "
                                      f"(tolerance {ATOL} + {RTOL} * |action|); nothing was written")
            parity = {"runtime": runtime, "max_abs_diff": diff, "ok": True}
        os.replace(tmp, model_path)
    finally:
        tmp.unlink(missing_ok=True)

    meta = read_agent_meta(ckpt)
    act_space = agent.action_space
    info = {
        "format": format, "file": model_path.name, "sha256": sha256(model_path),
        "agent": agent.agent_name, "rlpt_version": __version__, "torch_version": torch.__version__,
        "source_checkpoint": str(ckpt.resolve()), "source_rlpt_version": meta.get("rlpt_version"),
        "step": agent.step, "online_steps": agent.online_steps,
        "input": {"name": INPUT_NAME, "shape": ["batch", *agent.observation_space.shape],
                  "dtype": str(_input_dtype(agent))},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", *act_space.shape], "dtype": "float32"},
        "observation_space": {"shape": list(agent.observation_space.shape),
                              "dtype": str(agent.observation_space.dtype)},
        "action_space": {"shape": list(act_space.shape), "low": np.asarray(act_space.low, np.float32).tolist(),
                         "high": np.asarray(act_space.high, np.float32).tolist()},
        "test_vector": {"observations": obs.tolist(), "actions": expected.tolist(), "atol": ATOL, "rtol": RTOL},
        "parity": parity,
    }
    from rlpt.utils import write_json

    write_json(out / "policy.json", info)
    return model_path


def verify_export(path: str | os.PathLike) -> dict[str, Any]:
    """Check an exported policy: the model file's SHA-256 against `policy.json`, and its actions on the test
    vector. `path` is the export folder or its `policy.json`. Returns `{"runtime", "max_abs_diff", "ok": True}`;
    raises CheckpointError on a mismatch, ConfigError when the runtime (torch / onnxruntime) is missing."""
    path = Path(path)
    meta_path = path / "policy.json" if path.is_dir() else path
    if not meta_path.exists():
        raise CheckpointError(f"{meta_path} not found: is {path} an rlpt export folder?")
    info = json.loads(meta_path.read_text())
    model_path = meta_path.parent / info["file"]
    if not model_path.exists():
        raise CheckpointError(f"{model_path} is missing (named by {meta_path})")
    digest = sha256(model_path)
    if digest != info["sha256"]:
        raise CheckpointError(f"{model_path}: SHA-256 {digest} differs from {info['sha256']} in {meta_path}")
    format = _check_format(info["format"])
    if format == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ConfigError("verifying an ONNX policy needs onnxruntime: pip install 'rlpt[export]'") from e
    tv = info["test_vector"]
    obs = np.asarray(tv["observations"], dtype=info["input"]["dtype"])
    expected = np.asarray(tv["actions"], np.float32)
    got, runtime = _run_model(model_path, format, obs)
    diff, ok = _compare(got, expected, float(tv["atol"]), float(tv["rtol"]))
    if not ok:
        raise CheckpointError(f"{model_path}: actions on the test vector of {meta_path} differ by {diff:.3g} "
                              f"(tolerance {tv['atol']} + {tv['rtol']} * |action|) under {runtime}")
    return {"runtime": runtime, "max_abs_diff": diff, "ok": True}
