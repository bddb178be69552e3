"""Dataset generation: `rlpt data make NAME`.

Locomotion names follow D4RL with Gymnasium v5 envs: `<env>-<kind>-v5` with env in hopper, halfcheetah,
walker2d and kind in random, medium, expert, medium-replay, medium-expert (see `rlpt.collect.behavior`
for how each behaviour policy is chosen). Tabletop names: `tabletop-<task>-<kind>` with kind
`scripted` (the scripted controller, mostly successes) or `noisy` (the same with Gaussian action
noise: successes and failures); add `--images` for camera frames beside the states, or end the name with
`-pixels<S>` (e.g. `tabletop-push-noisy-pixels32`) for a dataset whose observations ARE the front camera's
uint8 (S, S, 3) frames (the env's `pixels: true, image_size: S` observations; the state is kept in
`infos/state`), which image agents train on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlpt.collect.behavior import BehaviorPolicy, load_manifest, random_policy
from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError

LOCOMOTION_ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
LOCOMOTION_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
# D4RL's sizes; medium-replay is as large as the training buffer up to the medium snapshot.
DEFAULT_SIZES = {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000, "medium-expert": 2_000_000}
TABLETOP_KINDS = {"scripted": 0.0, "noisy": 0.3}

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DatasetName:
    family: str  # "locomotion" | "tabletop"
    env: str  # "hopper" / "push"
    kind: str
    name: str
    pixels: int = 0  # tabletop: observations are uint8 (pixels, pixels, 3) frames; 0: state vectors


def parse_name(name: str) -> DatasetName:
    """Parse `hopper-medium-replay-v5` or `tabletop-push-noisy`, with a clear error listing valid names."""
    m = re.fullmatch(r"(hopper|halfcheetah|walker2d)-(random|medium-replay|medium-expert|medium|expert)-v5", name)
    if m:
        return DatasetName("locomotion", m.group(1), m.group(2), name)
    m = re.fullmatch(r"tabletop-([a-z-]+?)-(scripted|noisy)(?:-pixels(\d+))?", name)
    if m:
        return DatasetName("tabletop", m.group(1), m.group(2), name, int(m.group(3) or 0))
    raise ConfigError(f"unknown dataset name '{name}'; expected one of: " + ", ".join(available_names()))


def available_names() -> list[str]:
    names = [f"{e}-{k}-v5" for e in LOCOMOTION_ENVS for k in LOCOMOTION_KINDS]
    try:
        from rlpt.envs.tabletop import TASKS

        names += [f"tabletop-{t}-{k}" for t in TASKS for k in TABLETOP_KINDS]
        names.append("tabletop-<task>-<kind>-pixels<S> (image observations)")
    except ImportError:
        pass
    return names


class _Recorder:
    """Collects transitions from several envs stepped in lockstep, one policy call per step for all."""

    def __init__(self, env_fn: Callable[[], gym.Env], n_envs: int, seed: int, images: bool = False):
        self.envs = [env_fn() for _ in range(n_envs)]
        self.seed, self.images, self.next_seed = seed, images, seed
        self.has_success = False  # whether the env reports success (tabletop does, locomotion does not)
        self.obs = [self._reset(e) for e in self.envs]
        self.ep: list[dict[str, list]] = [self._empty() for _ in self.envs]
        self.out: dict[str, list] = self._empty()

    @staticmethod
    def _empty() -> dict[str, list]:
        return {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                "next_observations", "images", "success")}

    def _reset(self, env: gym.Env) -> np.ndarray:
        obs, _ = env.reset(seed=self.next_seed)
        self.next_seed += 1
        return obs

    def _flush(self, i: int, timeout_last: bool) -> None:
        ep = self.ep[i]
        if ep["observations"]:
            if timeout_last and not ep["terminals"][-1]:
                ep["timeouts"][-1] = True
            for k in self.out:
                self.out[k] += ep[k]
        self.ep[i] = self._empty()

    def run(self, policy: Policy, n_steps: int, progress=None) -> None:
        """Step until `n_steps` transitions were added; the last unfinished episodes end as timeouts."""
        done_steps = 0
        while done_steps < n_steps:
            actions = policy(np.stack(self.obs))
            for i, env in enumerate(self.envs):
                if done_steps >= n_steps:
                    break
                obs = self.obs[i]
                frame = env.render() if self.images else None
                nxt, r, term, trunc, info = env.step(actions[i])
                ep = self.ep[i]
                ep["observations"].append(obs)
                ep["actions"].append(np.asarray(actions[i], np.float32))
                ep["rewards"].append(float(r))
                ep["terminals"].append(bool(term))
                ep["timeouts"].append(bool(trunc and not term))
                ep["next_observations"].append(nxt)
                if "success" in info or "is_success" in info:
                    self.has_success = True
                ep["success"].append(bool(info.get("success", info.get("is_success", False))))
                if self.images:
                    ep["images"].append(frame)
                done_steps += 1
                if progress is not None:
                    progress.update(1)
                if term or trunc:
                    self._flush(i, timeout_last=False)
                    self.obs[i] = self._reset(env)
                else:
                    self.obs[i] = nxt
        for i in range(len(self.envs)):
            self._flush(i, timeout_last=True)
        # Episodes still running restart fresh for the next policy (medium-replay switches policies).
        self.obs = [self._reset(e) for e in self.envs]

    def dataset(self, metadata: dict) -> Dataset:
        o = self.out
        return Dataset(
            observations=np.asarray(o["observations"], np.float32),
            actions=np.asarray(o["actions"], np.float32),
            rewards=np.asarray(o["rewards"], np.float32),
            terminals=np.asarray(o["terminals"], bool),
            timeouts=np.asarray(o["timeouts"], bool),
            next_observations=np.asarray(o["next_observations"], np.float32),
            images=np.asarray(o["images"], np.uint8) if self.images else None,
            infos={"success": np.asarray(o["success"], bool)} if self.has_success else {},
            metadata=metadata,
        )


class _MjxRecorder:
    """Collects transitions from `n_envs` MJX worlds stepped in one call (`make_vec_env(..., backend="mjx")`).

    Same output as `_Recorder`: the worlds step in lockstep and the rows are kept in (step, world) order
    up to `n_steps`, so a world's rows are contiguous; its unfinished last episode ends as a timeout.
    """

    def __init__(self, env_id: str, n_envs: int, seed: int, device: str = "auto"):
        from rlpt.envs import make_vec_env

        self.envs = make_vec_env(f"mujoco/{env_id}", n_envs, backend="mjx", device=device, seed=seed)
        self.n, self.next_seed, self.images, self.has_success = n_envs, seed, False, False
        self.out: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                                     "next_observations")}
        self.obs = self._reset()

    def _reset(self) -> np.ndarray:
        obs, _ = self.envs.reset(seed=self.next_seed)
        self.next_seed += 1
        return obs.cpu().numpy()

    def run(self, policy: Policy, n_steps: int, progress=None) -> None:
        """Step every world until `n_steps` transitions were collected; then restart all worlds."""
        steps = -(-n_steps // self.n)
        rows: dict[str, list] = {k: [] for k in self.out}  # each entry (T, N, ...)
        for t in range(steps):
            actions = np.asarray(policy(self.obs), np.float32)
            nxt, reward, terminated, truncated, info = self.envs.step(actions)
            done = info["_final_obs"][:, None]
            final = torch_where_numpy(done, info["final_obs"], nxt)  # the step's own successor
            term = terminated.cpu().numpy()
            for k, v in (("observations", self.obs), ("actions", actions), ("rewards", reward.cpu().numpy()),
                         ("terminals", term), ("timeouts", truncated.cpu().numpy() & ~term),
                         ("next_observations", final)):
                rows[k].append(v)
            self.obs = nxt.cpu().numpy()
            if progress is not None:
                progress.update(min(self.n, n_steps - t * self.n))
        arrays = {k: np.stack(v) for k, v in rows.items()}
        last_full = n_steps - (steps - 1) * self.n  # worlds [0, last_full) also keep the last step's row
        for i in range(self.n):
            length = steps if i < last_full else steps - 1
            if length == 0:
                continue
            world = {k: v[:length, i] for k, v in arrays.items()}
            if not world["terminals"][-1]:
                world["timeouts"][-1] = True
            for k, v in world.items():
                self.out[k].append(v)
        self.obs = self._reset()  # episodes still running restart fresh for the next policy

    def dataset(self, metadata: dict) -> Dataset:
        o = {k: np.concatenate(v) for k, v in self.out.items()}
        return Dataset(
            observations=o["observations"].astype(np.float32), actions=o["actions"].astype(np.float32),
            rewards=o["rewards"].astype(np.float32), terminals=o["terminals"].astype(bool),
            timeouts=o["timeouts"].astype(bool), next_observations=o["next_observations"].astype(np.float32),
            metadata=metadata,
        )


def torch_where_numpy(mask, a, b) -> np.ndarray:
    """`where(mask, a, b)` of torch tensors, as a numpy array."""
    import torch

    return torch.where(mask, a, b).cpu().numpy()


def make_dataset(name: str, *, size: int | None = None, seed: int = 0, n_envs: int | None = None,
                 images: bool = False, image_size: int = 64, camera: str | None = None, quiet: bool | None = None,
                 backend: str = "gymnasium", device: str = "auto") -> Dataset:
    """Generate the dataset `name` (see module docstring). `size` overrides the number of transitions.

    backend="gymnasium" steps `n_envs` (default 8) CPU envs in lockstep; backend="mjx" (locomotion only,
    needs the [mjx] extra) steps `n_envs` (default 1024) MJX worlds in one call on `device` with the same
    behaviour policies. The two give different transitions for the same seed (different random streams)
    from the same policies and env dynamics.
    """
    from rlpt._version import __version__
    from rlpt.runs import progress

    if backend not in ("gymnasium", "mjx"):
        raise ConfigError(f"dataset {name!r}: backend must be 'gymnasium' or 'mjx', got {backend!r}")
    spec = parse_name(name)
    if backend == "mjx" and (spec.family != "locomotion" or images or spec.pixels):
        raise ConfigError(f"dataset {name!r}: backend 'mjx' generates locomotion datasets of state observations "
                          "only (the tabletop's scripted controllers read the CPU simulator)")
    n_envs = n_envs or (1024 if backend == "mjx" else 8)
    if spec.pixels:  # observations are the camera frames: record them, then swap them in below
        if spec.pixels < 8 or spec.pixels > 512:
            raise ConfigError(f"dataset {name!r}: pixels{spec.pixels} must be an image size in [8, 512]")
        images, image_size = True, spec.pixels
    t0 = time.time()
    meta: dict = {"name": name, "seed": seed, "rlpt_version": __version__, "source": f"rlpt data make {name}"}
    if spec.family == "locomotion":
        env_id = LOCOMOTION_ENVS[spec.env]
        manifest, folder = load_manifest(env_id)
        space = gym.make(env_id).action_space
        plan = _locomotion_plan(spec.kind, manifest, folder, space, seed, size)
        if images:
            raise ConfigError("--images is only supported for tabletop datasets (locomotion is state-based)")

        def env_fn() -> gym.Env:
            return gym.make(env_id)

        meta.update(env_id=f"mujoco/{env_id}", d4rl_style_name=name, kind=spec.kind,
                    behavior_manifest_sha256=manifest_hash(manifest),
                    ref_min_score=manifest["random_return"],
                    ref_max_score=manifest.get("expert_return", manifest["expert"]["mean_return"]),
                    ref_scores_source="measured by `rlpt data train-behavior`: random policy (100 episodes) and "
                                      "expert policy average returns",
                    behavior=[{"policy": p, "steps": n} for p, _, n in plan])
    else:
        from rlpt.envs.tabletop import TabletopEnv, scripted_policy

        task = spec.env
        noise = TABLETOP_KINDS[spec.kind]
        size = size or 20_000

        def env_fn() -> gym.Env:
            return TabletopEnv(task, render_mode="rgb_array" if images else None, image_size=image_size,
                               **({"camera": camera} if camera else {}))

        probe = env_fn()
        rng = np.random.default_rng(seed)
        controllers = []

        def batched(obs: np.ndarray) -> np.ndarray:
            return np.stack([controllers[i](o) for i, o in enumerate(obs)])

        plan = [(f"scripted(noise={noise})", batched, size)]
        meta.update(env_id=f"tabletop/{task}", kind=spec.kind, action_noise=noise, images=images,
                    image_size=image_size if images else None, camera=camera,
                    observations="pixels" if spec.pixels else "state")
        probe.close()

    if backend == "mjx":
        meta.update(backend="mjx", num_envs=n_envs)
        rec: _Recorder | _MjxRecorder = _MjxRecorder(LOCOMOTION_ENVS[spec.env], n_envs, seed, device)
    else:
        rec = _Recorder(env_fn, n_envs, seed, images=images)
    if spec.family == "tabletop":
        from rlpt.envs.tabletop import scripted_policy

        controllers.extend(scripted_policy(e, noise=noise, rng=np.random.default_rng(rng.integers(2**31)))
                           for e in rec.envs)
    total = sum(n for _, _, n in plan)
    with progress(total=total, desc=f"data make {name}", quiet=quiet) as bar:
        for _, policy, n in plan:
            rec.run(policy, n, progress=bar)
    meta["generation_seconds"] = round(time.time() - t0, 2)
    ds = rec.dataset(meta)
    if spec.pixels:  # frames become the observations; successors are the next rows within each episode
        ds = Dataset(observations=ds.images, actions=ds.actions, rewards=ds.rewards, terminals=ds.terminals,
                     timeouts=ds.timeouts, infos={**ds.infos, "state": ds.observations}, metadata=ds.metadata)
    ds.metadata["content_hash"] = ds.content_hash()
    if spec.family == "tabletop":
        ds.metadata["success_rate"] = float(np.mean([ep_success(ds, s, e) for s, e in
                                                      zip(ds.episode_bounds().starts, ds.episode_bounds().ends,
                                                          strict=True)]))
    return ds


def manifest_hash(manifest: dict) -> str:
    """Identifies the behaviour policies a locomotion dataset was made with."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def is_stale(dataset: Dataset) -> str | None:
    """Why a generated locomotion dataset no longer matches rlpt's behaviour policies (None if it does)."""
    name = dataset.metadata.get("name")
    if not name or "behavior_manifest_sha256" not in dataset.metadata and "behavior" not in dataset.metadata:
        return None
    try:
        spec = parse_name(str(name))
    except ConfigError:
        return None
    if spec.family != "locomotion":
        return None
    manifest, _ = load_manifest(LOCOMOTION_ENVS[spec.env])
    if dataset.metadata.get("behavior_manifest_sha256") != manifest_hash(manifest):
        return f"it was made with other behaviour policies than the ones in {LOCOMOTION_ENVS[spec.env]}'s manifest"
    return None


def ep_success(ds: Dataset, start: int, end: int) -> bool:
    return bool(ds.infos["success"][start:end].any())


def _locomotion_plan(kind: str, manifest: dict, folder: Path, space: gym.spaces.Box, seed: int,
                     size: int | None) -> list[tuple[str, Policy, int]]:
    def snap(entry: dict, k: int = 0) -> Policy:
        return BehaviorPolicy.load(folder / entry["file"], space, seed=seed + k)

    if kind == "random":
        return [("uniform random", random_policy(space, seed), size or DEFAULT_SIZES["random"])]
    if kind == "medium":
        return [(f"snapshot step {manifest['medium']['step']}", snap(manifest["medium"]), size or DEFAULT_SIZES[kind])]
    if kind == "expert":
        return [(f"snapshot step {manifest['expert']['step']}", snap(manifest["expert"]), size or DEFAULT_SIZES[kind])]
    if kind == "medium-expert":
        half = (size or DEFAULT_SIZES[kind]) // 2
        return [(f"snapshot step {manifest['medium']['step']}", snap(manifest["medium"]), half),
                (f"snapshot step {manifest['expert']['step']}", snap(manifest["expert"], 1), half)]
    # medium-replay: replay the training buffer up to the medium snapshot. Steps before SAC's
    # `learning_starts` used uniform random actions; after that, the latest snapshot acts.
    end = manifest["medium"]["step"]
    scale = (size / end) if size else 1.0
    plan: list[tuple[str, Policy, int]] = []
    start = manifest.get("learning_starts", 0)
    if start:
        plan.append(("uniform random (SAC warm-up)", random_policy(space, seed), int(round(min(start, end) * scale))))
    snaps = manifest["replay_snapshots"]
    for k, s in enumerate(snaps):
        lo = max(s["step"], start)
        hi = snaps[k + 1]["step"] if k + 1 < len(snaps) else end
        if hi > lo:
            plan.append((f"snapshot step {s['step']}", snap(s, k), int(round((hi - lo) * scale))))
    return [p for p in plan if p[2] > 0]
