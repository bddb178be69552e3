"""`make_env`, `make_vec_env` and `check_env`: one entry point for every environment rlpt runs.

Spec strings:
    "mujoco/Hopper-v5", "Hopper-v5", "Pendulum-v1"   Gymnasium ids (with or without the prefix)
    "dmc/cheetah-run", "dmc/ball_in_cup-catch"       dm_control suite tasks (`DMCEnv`)
    "tabletop/reach"                                 rlpt's own manipulation tasks
    "hopper", "envs/hopper.yaml"                     catalog name or spec file (its options apply)
"""

from __future__ import annotations

import difflib
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlpt.envs.rendering import setup_offscreen_rendering
from rlpt.envs.specs import EnvSpec, find_env_spec, list_envs, load_env_spec
from rlpt.envs.wrappers import (
    ActionRepeat,
    Float32Observation,
    FrameStack,
    MujocoRenderContext,
    PixelObservation,
)
from rlpt.errors import EnvSpecError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PREFIXES = ("mujoco", "dmc", "tabletop")
# make_env's own options (a spec file's other options go to the env constructor).
DEFAULTS: dict[str, Any] = {
    "pixels": False,
    "image_size": 64,
    "camera": None,
    "frame_stack": 1,
    "action_repeat": 1,
    "time_limit": None,
    "seed": None,
    "render_mode": None,
}


def _close_matches(name: str) -> list[str]:
    candidates = [s.name for s in list_envs()] + [s.id for s in list_envs()]
    candidates += [f"mujoco/{k}" for k, v in gym.registry.items() if _is_mujoco_entry(v)]
    candidates += list(gym.registry)
    matches = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    if not matches and "/" not in name:
        matches = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=5, cutoff=0.6)
    return list(dict.fromkeys(matches))


def _unknown(spec: str, what: str = "env spec") -> EnvSpecError:
    close = _close_matches(spec)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return EnvSpecError(
        f"unknown {what} {spec!r}: expected 'mujoco/<gym id>', 'dmc/<domain>-<task>', 'tabletop/<task>',"
        f" a Gymnasium id, a catalog name (rlpt env list) or a spec .yaml path{hint}"
    )


def _is_mujoco_entry(spec: gym.envs.registration.EnvSpec) -> bool:
    entry = spec.entry_point
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def resolve_spec(spec: str | os.PathLike | EnvSpec) -> tuple[str, EnvSpec | None]:
    """Map a spec argument to (backend id, catalog spec or None); raise EnvSpecError if unknown."""
    if isinstance(spec, EnvSpec):
        return spec.id, spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise EnvSpecError(f"env spec must be a non-empty string, path or EnvSpec, got {spec!r}")
    spec = spec.strip()
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        file_spec = load_env_spec(spec)
        if file_spec.id.endswith((".yaml", ".yml")):
            raise EnvSpecError(f"{spec}: key 'id' must name an env, not another spec file ({file_spec.id})")
        resolve_spec(file_spec.id)  # the id itself must resolve
        return file_spec.id, file_spec
    prefix = spec.split("/", 1)[0]
    if prefix in PREFIXES:
        if not spec.split("/", 1)[1:] or not spec.split("/", 1)[1]:
            raise EnvSpecError(f"env spec {spec!r} names no env after '{prefix}/'")
        return spec, None
    catalog = find_env_spec(spec)
    if catalog is not None:
        return catalog.id, catalog
    if spec in gym.registry:
        return spec, None
    raise _unknown(spec)


def _check_options(name: str, opts: dict[str, Any]) -> None:
    def positive_int(key: str, minimum: int) -> None:
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise EnvSpecError(f"{name}: option '{key}' must be an integer >= {minimum}, got {value!r}")

    positive_int("image_size", 1)
    positive_int("frame_stack", 1)
    positive_int("action_repeat", 1)
    if opts["time_limit"] is not None:
        positive_int("time_limit", 1)
    if not isinstance(opts["pixels"], bool):
        raise EnvSpecError(f"{name}: option 'pixels' must be true or false, got {opts['pixels']!r}")
    if opts["render_mode"] not in (None, "rgb_array", "human"):
        raise EnvSpecError(
            f"{name}: render_mode must be None, 'rgb_array' or 'human', got {opts['render_mode']!r}"
        )
    if opts["pixels"] and opts["render_mode"] == "human":
        raise EnvSpecError(f"{name}: pixels=True renders offscreen; render_mode must be None or 'rgb_array'")
    camera = opts["camera"]
    if camera is not None and (isinstance(camera, bool) or not isinstance(camera, str | int | np.integer)):
        raise EnvSpecError(f"{name}: camera must be a camera name or index, got {camera!r}")


def _mujoco_camera_names(env: gym.Env) -> list[str]:
    import mujoco

    model = env.unwrapped.model
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]


def _make_gym(gym_id: str, opts: dict[str, Any], env_kwargs: dict[str, Any], name: str) -> gym.Env:
    if gym_id not in gym.registry:
        raise _unknown(name, "Gymnasium id")
    is_mujoco = _is_mujoco_entry(gym.registry[gym_id])
    render_mode = "rgb_array" if opts["pixels"] else opts["render_mode"]
    kwargs = dict(env_kwargs)
    camera = opts["camera"]
    if is_mujoco:
        if render_mode is not None:
            kwargs.setdefault("width", opts["image_size"])
            kwargs.setdefault("height", opts["image_size"])
        if isinstance(camera, str):
            kwargs["camera_name"] = camera
        elif camera is not None:
            kwargs["camera_id"] = int(camera)
    elif camera is not None:
        raise EnvSpecError(f"{name}: option 'camera' applies to MuJoCo and dm_control envs only, got {camera!r}")
    if opts["time_limit"] is not None:  # the outer TimeLimit counts agent steps; keep the inner one out of the way
        kwargs["max_episode_steps"] = opts["time_limit"] * opts["action_repeat"]
    try:
        env = gym.make(gym_id, render_mode=render_mode, **kwargs)
    except TypeError as e:
        raise EnvSpecError(f"{name}: Gymnasium env {gym_id} rejected options {sorted(kwargs)}: {e}") from e
    if is_mujoco and camera is not None:
        names = _mujoco_camera_names(env)
        ok = camera in names if isinstance(camera, str) else -1 <= int(camera) < len(names)
        if not ok:
            env.close()
            raise EnvSpecError(
                f"{name}: unknown camera {camera!r}; expected one of {names} or an index in"
                f" [-1, {len(names) - 1}] (-1 is the free camera)"
            )
    if is_mujoco and render_mode is not None and render_mode != "human":
        env = MujocoRenderContext(env)
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and space.dtype == np.float64:
        env = Float32Observation(env)  # rlpt datasets and nets are float32
    if opts["pixels"]:
        env = PixelObservation(env, size=(opts["image_size"], opts["image_size"]))
    return env


def _make_dmc(task: str, opts: dict[str, Any], env_kwargs: dict[str, Any], name: str) -> gym.Env:
    from rlpt.envs.dmc import DMCEnv, parse_dmc_name

    domain, task_name = parse_dmc_name(task)
    kwargs = dict(env_kwargs)
    task_kwargs = dict(kwargs.pop("task_kwargs", None) or {})
    if opts["time_limit"] is not None:  # the outer TimeLimit truncates; the suite's own limit must not
        task_kwargs["time_limit"] = float("inf")
    render_mode = "rgb_array" if opts["pixels"] else opts["render_mode"]
    if render_mode == "human":
        raise EnvSpecError(f"{name}: dm_control envs render offscreen only; use render_mode='rgb_array'")
    try:
        env: gym.Env = DMCEnv(
            domain,
            task_name,
            task_kwargs=task_kwargs,
            render_mode=render_mode,
            width=opts["image_size"],
            height=opts["image_size"],
            camera=opts["camera"],
            **kwargs,
        )
    except TypeError as e:
        raise EnvSpecError(f"{name}: DMCEnv rejected options {sorted(kwargs)}: {e}") from e
    if opts["pixels"]:
        env = PixelObservation(env, size=(opts["image_size"], opts["image_size"]), shadows=env.shadows)
    return env


def _make_tabletop(task: str, opts: dict[str, Any], env_kwargs: dict[str, Any], name: str) -> gym.Env:
    try:
        from rlpt.envs.tabletop import TASKS, TabletopEnv
    except ImportError as e:
        raise EnvSpecError(f"{name}: the tabletop task family is not available ({e})") from e
    if task not in TASKS:
        close = difflib.get_close_matches(task, list(TASKS), n=5, cutoff=0.5)
        raise EnvSpecError(
            f"unknown tabletop task {name!r}: expected one of {sorted(TASKS)}"
            + (f"; close matches: {', '.join('tabletop/' + c for c in close)}" if close else "")
        )
    kwargs = dict(env_kwargs)
    kwargs["obs_mode"] = "pixels" if opts["pixels"] else kwargs.get("obs_mode", "state")
    kwargs["image_size"] = opts["image_size"]
    if opts["camera"] is not None:
        kwargs["camera"] = opts["camera"]
    if opts["render_mode"] is not None:
        kwargs["render_mode"] = opts["render_mode"]
    if opts["time_limit"] is not None:
        kwargs["max_episode_steps"] = opts["time_limit"] * opts["action_repeat"]
    try:
        return TabletopEnv(task, **kwargs)
    except TypeError as e:
        raise EnvSpecError(f"{name}: TabletopEnv rejected options {sorted(kwargs)}: {e}") from e


def make_env(
    spec: str | os.PathLike | EnvSpec,
    *,
    pixels: bool | None = None,
    image_size: int | None = None,
    camera: int | str | None = None,
    frame_stack: int | None = None,
    action_repeat: int | None = None,
    time_limit: int | None = None,
    seed: int | None = None,
    render_mode: str | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """Build one environment: base env -> pixels -> action repeat -> frame stack -> time limit.

    Args:
        spec: "mujoco/<gym id>", a bare Gymnasium id, "dmc/<domain>-<task>", "tabletop/<task>",
            a catalog name ("hopper") or a spec file path ("envs/hopper.yaml").
        pixels: observe uint8 (image_size, image_size, 3) renders instead of the state
            (default False). The state stays in `info["state"]` for MuJoCo/dm_control envs.
        image_size: rendered frame side in pixels (default 64); also sizes `render()` output.
        camera: camera name or index (MuJoCo, dm_control) or tabletop camera name.
        frame_stack: stack the last k observations: (k, H, W, 3) for pixels, (k * D,) for vectors.
        action_repeat: repeat each action k times and sum the rewards.
        time_limit: truncate after this many agent steps (after action repeat); default: the
            env's own limit (1000 simulator steps for MuJoCo locomotion and dm_control).
        seed: seeds the env (first reset) and its action/observation spaces.
        render_mode: None, "rgb_array" or "human" (MuJoCo only, needs a display).
        **env_kwargs: passed to the env constructor (`gym.make`, `DMCEnv`, `TabletopEnv`).

    Keyword arguments left as None take the spec file's `options`, then the defaults above.
    Raises EnvSpecError for unknown specs (with close matches) and invalid options.
    """
    setup_offscreen_rendering()  # before anything creates a GL context
    backend_id, file_spec = resolve_spec(spec)
    name = file_spec.name if file_spec is not None else str(spec)
    explicit = {
        "pixels": pixels,
        "image_size": image_size,
        "camera": camera,
        "frame_stack": frame_stack,
        "action_repeat": action_repeat,
        "time_limit": time_limit,
        "seed": seed,
        "render_mode": render_mode,
    }
    file_options = dict(file_spec.options) if file_spec is not None else {}
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in file_options.items() if k in DEFAULTS})
    opts.update({k: v for k, v in explicit.items() if v is not None})
    env_kwargs = {**{k: v for k, v in file_options.items() if k not in DEFAULTS}, **env_kwargs}
    _check_options(name, opts)

    prefix, _, rest = backend_id.partition("/")
    if prefix == "dmc":
        env = _make_dmc(rest, opts, env_kwargs, name)
    elif prefix == "tabletop":
        env = _make_tabletop(rest, opts, env_kwargs, name)
    else:
        env = _make_gym(rest if prefix == "mujoco" else backend_id, opts, env_kwargs, name)

    if opts["action_repeat"] > 1:
        env = ActionRepeat(env, opts["action_repeat"])
    if opts["frame_stack"] > 1:
        env = FrameStack(env, opts["frame_stack"])
    if opts["time_limit"] is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=opts["time_limit"])
    if opts["seed"] is not None:
        env.action_space.seed(opts["seed"])
        env.observation_space.seed(opts["seed"])
        env.reset(seed=opts["seed"])
    return env


def make_vec_env(
    spec: str | os.PathLike | EnvSpec,
    num_envs: int,
    *,
    backend: str = "gymnasium",
    device: str | Any | None = None,
    seed: int = 0,
    vectorization: str = "sync",
    context: str | None = "spawn",
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """`num_envs` copies of an env as one Gymnasium VectorEnv, on CPU processes or batched on an accelerator.

    backend="gymnasium": copies of `make_env(spec, seed=seed + i, **kwargs)`; `vectorization` is
        "sync" (one process) or "async" (one worker process per env, started with the
        multiprocessing `context`; "spawn" is the safe default with GL contexts and torch threads).
        With `device=None` (default) results are Gymnasium's numpy arrays with its default
        (next-step) autoreset. With a `device` ("auto", "cpu", "cuda", a torch.device) the env is a
        `rlpt.envs.vector.TorchVectorEnv`: torch tensors on that device and same-step autoreset,
        exactly the API of the "mjx" backend.
    backend="mjx": all worlds in one jitted MJX step (needs `pip install -e '.[mjx]'`), results as
        torch tensors on `device` (None or "auto": the GPU when JAX runs on one). Specs:
        mujoco/Hopper-v5, mujoco/HalfCheetah-v5, mujoco/Walker2d-v5, tabletop/reach|push|pick-place|
        drawer-open (or their catalog names). World i is seeded from (seed, i). Options:
        `time_limit` (truncation length; default 1000 for locomotion, the task's for tabletop) and,
        for tabletop, `reward`, `control`, `terminate_on_success`, `max_step`; rendering options
        (`image_size`, `camera`) are ignored and pixels, frame stacking and action repeat are rejected.

    The torch API (both backends with a device): `obs, info = envs.reset(seed=...)`;
    `obs, reward, terminated, truncated, info = envs.step(actions)` with actions a torch tensor
    or numpy array (N, act_dim); obs (N, obs_dim) float32, reward (N,) float32, terminated and
    truncated (N,) bool; envs that finished are already reset: `obs` is the next episode's first
    observation and `info["final_obs"]` (N, obs_dim) holds the last one where `info["_final_obs"]`.
    See `rlpt.envs.mjx.vector` for the details (seeding, in-place writes).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
        raise EnvSpecError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if backend not in ("gymnasium", "mjx"):
        raise EnvSpecError(f"backend must be 'gymnasium' or 'mjx', got {backend!r}")
    if backend == "mjx":
        return _make_mjx_vec_env(spec, int(num_envs), device, seed, kwargs)
    if vectorization not in ("sync", "async"):
        raise EnvSpecError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    resolve_spec(spec)  # fail here, not inside a worker
    fns: list[Callable[[], gym.Env]] = [_EnvFactory(spec, seed + i, kwargs) for i in range(num_envs)]
    extra: dict[str, Any] = {}
    if device is not None:
        extra["autoreset_mode"] = gym.vector.AutoresetMode.SAME_STEP
    if vectorization == "sync":
        envs: gym.vector.VectorEnv = gym.vector.SyncVectorEnv(fns, **extra)
    else:
        envs = gym.vector.AsyncVectorEnv(fns, context=context, **extra)
    if device is None:
        return envs
    from rlpt.envs.vector import TorchVectorEnv
    from rlpt.utils import resolve_device

    return TorchVectorEnv(envs, resolve_device(device))


_MJX_IGNORED = ("image_size", "camera", "seed")


def _make_mjx_vec_env(spec, num_envs: int, device, seed: int, kwargs: dict[str, Any]) -> gym.vector.VectorEnv:
    from rlpt.envs.mjx import make_mjx_vec_env

    backend_id, file_spec = resolve_spec(spec)
    name = file_spec.name if file_spec is not None else str(spec)
    opts = {**(dict(file_spec.options) if file_spec is not None else {}), **kwargs}
    for key in _MJX_IGNORED:
        opts.pop(key, None)
    for key, neutral in (("pixels", False), ("frame_stack", 1), ("action_repeat", 1), ("render_mode", None)):
        value = opts.pop(key, neutral)
        if value != neutral:
            raise EnvSpecError(f"{name}: backend 'mjx' does not support option {key}={value!r} (expected {neutral!r})")
    limit = opts.pop("time_limit", None)
    return make_mjx_vec_env(backend_id, num_envs, device=device, seed=seed, max_episode_steps=limit, **opts)


class _EnvFactory:
    """Picklable `make_env` call for vector env workers."""

    def __init__(self, spec, seed: int, kwargs: dict[str, Any]):
        self.spec, self.seed, self.kwargs = spec, seed, kwargs

    def __call__(self) -> gym.Env:
        return make_env(self.spec, seed=self.seed, **self.kwargs)


def _run_checker(fn: Callable[[], Any]) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
            error = None
        except Exception as e:  # a failed check is a result to report, not a crash
            error = f"{type(e).__name__}: {e}"
    messages = [_ANSI.sub("", str(w.message)) for w in caught]
    # Checking the wrapped env is the point here; drop gymnasium's generic note about wrappers.
    messages = [m for m in dict.fromkeys(messages) if "is different from the unwrapped version" not in m]
    return {"passed": error is None, "error": error, "warnings": messages}


def check_env(
    spec: str | os.PathLike | EnvSpec,
    pixels: bool = False,
    episodes: int = 1,
    video_path: str | os.PathLike | None = None,
    *,
    max_steps: int = 10_000,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Check an env with Gymnasium's and SB3's checkers, then roll out random episodes.

    Builds `make_env(spec, pixels=pixels, seed=seed, **options)` (with render_mode="rgb_array"
    when a video of state observations is asked for), runs both checkers (warnings are recorded,
    failures reported), plays `episodes` random-action episodes (at most `max_steps` steps each)
    and writes the first episode's frames to `video_path` as mp4 if given.

    Returns a report: spec, observation_space, action_space, checks {gymnasium, sb3: {passed,
    error, warnings}}, ok, episode_returns, episode_lengths, steps_per_second, video.
    """
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from gymnasium.utils.passive_env_checker import env_render_passive_checker
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from rlpt.media import write_video

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        raise EnvSpecError(f"episodes must be an integer >= 0, got {episodes!r}")
    if video_path is not None and not pixels:
        options.setdefault("render_mode", "rgb_array")
    env = make_env(spec, pixels=pixels, seed=seed, **options)
    try:
        report: dict[str, Any] = {
            "spec": str(spec),
            "observation_space": str(env.observation_space),
            "action_space": str(env.action_space),
        }

        def gym_checks() -> None:
            # "human" rendering needs a display; the rgb_array render is checked below instead.
            gym_check_env(env, skip_render_check=True)
            if env.render_mode is not None:
                env_render_passive_checker(env)

        checks = {
            "gymnasium": _run_checker(gym_checks),
            "sb3": _run_checker(lambda: sb3_check_env(env, warn=True, skip_render_check=True)),
        }
        report["checks"] = checks
        report["ok"] = all(c["passed"] for c in checks.values())

        returns, lengths, frames = [], [], []
        steps, start = 0, time.perf_counter()
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            record = video_path is not None and episode == 0
            if record:
                frames.append(_frame(env, obs, pixels))
            total, length, done = 0.0, 0, False
            while not done and length < max_steps:
                obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                length += 1
                done = terminated or truncated
                if record:
                    frames.append(_frame(env, obs, pixels))
            returns.append(total)
            lengths.append(length)
            steps += length
        elapsed = time.perf_counter() - start
        report["episode_returns"] = returns
        report["episode_lengths"] = lengths
        report["steps_per_second"] = steps / elapsed if steps and elapsed > 0 else None
        report["video"] = None
        if video_path is not None and frames:
            report["video"] = str(write_video(video_path, frames, fps=_video_fps(env)))
        return report
    finally:
        env.close()


def _frame(env: gym.Env, obs: Any, pixels: bool) -> np.ndarray:
    if pixels and isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.ndim in (3, 4):
        return obs[-1] if obs.ndim == 4 else obs  # newest frame of a stack
    frame = env.render()
    if frame is None:
        raise EnvSpecError("check_env: env.render() returned None; cannot record a video")
    return frame


def _video_fps(env: gym.Env) -> int:
    fps = env.metadata.get("render_fps") or 30
    return int(max(1, min(60, round(fps))))
