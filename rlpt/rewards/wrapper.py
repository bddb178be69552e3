"""Using a `RewardModel` online (`RewardWrapper`, a Gymnasium wrapper) and offline (`relabel`)."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.rewards.base import FallbackCounter, RewardModel, RewardOutput, RewardQuery

log = logging.getLogger(__name__)

MODES = ("replace", "add")
FALLBACKS = ("env", "last")


def _check_choice(what: str, got: str, valid: tuple[str, ...]) -> None:
    if got not in valid:
        raise ConfigError(f"RewardWrapper: {what} must be one of {list(valid)}; got {got!r}")


def combine(model_reward: np.ndarray, env_reward: np.ndarray, out: RewardOutput, mode: str, weight: float,
            scale: float, offset: float, fallback_values: np.ndarray) -> np.ndarray:
    """The reward the agent sees: model reward (or env + weight * model) where the model answered,
    `fallback_values` elsewhere; then `scale * r + offset`."""
    r = model_reward if mode == "replace" else env_reward + weight * model_reward
    r = np.where(out.valid, r, fallback_values)
    return (scale * r + offset).astype(np.float32)


class RewardWrapper(gym.Wrapper):
    """Replace (mode="replace") or augment (mode="add": env + weight * model) the env reward with a
    reward model's, then apply `scale * r + offset` (e.g. scale=1, offset=-1 maps success 1/0 to the
    0/-1 rewards RoboFuME's Cal-QL uses). Wherever the env's own reward is used (mode="add", the "env"
    fallback) it is first mapped by `env_scale * r + env_offset`, for models whose rewards are on another
    scale than the env's (KAGI's dense reward is already in [-1, 0]: env_offset=-1 puts the sparse 1/0 there).

    Images for the model come from the observation when it is an image (or a dict with "pixels"), else
    from `env.unwrapped.render_camera(camera, image_size)` (rlpt tabletop) or `env.render()`. States come
    from a vector observation, a dict's "state", or `env.unwrapped.state()`.

    When the model gives no valid answer (server down, malformed reply, ...) the step gets the fallback:
    "env" (the env's own reward, e.g. its sparse reward) or "last" (the last valid model reward; the
    env's before the first). Fallbacks are logged (rate-limited) and counted: `reward_metrics()` and
    `info["reward_model"]`. With `terminate_on_success`, the model's success judgement ends the episode
    (RoboFuME's reset-free runner switches task there). `info` keeps the env's reward and success.
    """

    def __init__(self, env: gym.Env, model: RewardModel, *, mode: str = "replace", weight: float = 1.0,
                 scale: float = 1.0, offset: float = 0.0, fallback: str = "env", terminate_on_success: bool = False,
                 camera: str | None = None, image_size: int | None = None, instruction: str | None = None,
                 views: dict[str, int] | None = None, env_scale: float = 1.0, env_offset: float = 0.0) -> None:
        super().__init__(env)
        _check_choice("mode", mode, MODES)
        _check_choice("fallback", fallback, FALLBACKS)
        self.model, self.mode, self.weight, self.scale, self.offset = model, mode, weight, scale, offset
        self.env_scale, self.env_offset = float(env_scale), float(env_offset)
        self.fallback, self.terminate_on_success = fallback, terminate_on_success
        # a model trained on one camera/resolution (rlpt's classifier) says which; explicit arguments win
        camera = camera if camera is not None else getattr(model, "camera", None)
        image_size = image_size if image_size is not None else getattr(model, "image_size", None)
        self.camera, self.image_size, self.views = camera, image_size, dict(views or {})
        self._instruction = instruction
        self.counter = FallbackCounter()
        self._last_valid: float | None = None
        self._last_log_calls = -(10**9)

    # -------------------------------------------------------------------- what the model sees
    @property
    def instruction(self) -> str:
        if self._instruction is not None:
            return self._instruction
        task = getattr(self.env.unwrapped, "task", None)
        return str(getattr(task, "instruction", ""))

    def _image(self, obs: Any) -> np.ndarray:
        if isinstance(obs, dict) and "pixels" in obs:
            return np.asarray(obs["pixels"])
        arr = np.asarray(obs) if not isinstance(obs, dict) else None
        if arr is not None and arr.dtype == np.uint8 and arr.ndim == 3 and self.camera is None:
            return arr
        base = self.env.unwrapped
        if hasattr(base, "render_camera"):
            return base.render_camera(self.camera, self.image_size)
        frame = self.env.render()
        if frame is None:
            raise ConfigError("RewardWrapper: the model needs images but the env observation is not an image and "
                              "the env cannot render (make it with render_mode='rgb_array')")
        return np.asarray(frame)

    def _state(self, obs: Any) -> np.ndarray:
        if isinstance(obs, dict) and "state" in obs:
            return np.asarray(obs["state"], np.float32)
        arr = np.asarray(obs) if not isinstance(obs, dict) else None
        if arr is not None and arr.dtype != np.uint8:
            return arr.astype(np.float32).reshape(-1)
        base = self.env.unwrapped
        if hasattr(base, "state"):
            return np.asarray(base.state(), np.float32)
        raise ConfigError("RewardWrapper: the model needs states but the observation has none")

    def query(self, obs: Any) -> RewardQuery:
        """The model's input for the current env state (observation `obs`)."""
        needs = self.model.needs
        views = {}
        if "views" in needs:
            base = self.env.unwrapped
            views = {cam: base.render_camera(cam, size)[None] for cam, size in self.views.items()}
        return RewardQuery(images=self._image(obs)[None] if "images" in needs else None,
                           states=self._state(obs)[None] if "states" in needs else None,
                           instruction=self.instruction, views=views)

    # -------------------------------------------------------------------- gym API
    def reset(self, **kwargs):
        self.model.reset()
        self._last_valid = None
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, raw_env_reward, terminated, truncated, info = self.env.step(action)
        env_reward = self.env_scale * float(raw_env_reward) + self.env_offset
        out = self.model(self.query(obs))
        self.counter.add(out)
        valid = bool(out.valid[0])
        model_reward = float(out.reward[0])
        if valid:
            self._last_valid = (model_reward if self.mode == "replace"
                                else float(env_reward) + self.weight * model_reward)
        else:
            self._log_fallback(out.reasons[0])
        fb = float(env_reward) if self.fallback == "env" or self._last_valid is None else self._last_valid
        reward = combine(np.array([model_reward]), np.array([float(env_reward)]), out, self.mode, self.weight,
                         self.scale, self.offset, np.array([fb]))[0]
        success = bool(out.success[0]) if (out.success is not None and valid) else None
        info = dict(info)
        info["reward_env"] = float(raw_env_reward)
        info["reward_model"] = {"valid": valid, "reason": out.reasons[0], "success": success,
                                "prob": None if (out.prob is None or not valid) else float(out.prob[0])}
        if self.terminate_on_success and success:
            terminated = True
        return obs, float(reward), terminated, truncated, info

    def _log_fallback(self, reason: str) -> None:
        if self.counter.calls - self._last_log_calls >= 100:  # at most one line per 100 calls
            self._last_log_calls = self.counter.calls
            log.warning("reward model gave no valid answer (%s); using the %s reward (%d fallbacks in %d calls)",
                        reason, self.fallback, sum(self.counter.fallbacks.values()), self.counter.calls)

    def reward_metrics(self) -> dict[str, float]:
        """reward_model/calls, /fallbacks, /fallback_rate and /fallback_<reason> since construction, and the
        backend's own counters as reward_model/backend_<name>."""
        return {**self.counter.metrics(),
                **{f"reward_model/backend_{k}": float(v) for k, v in self.model.metrics().items()}}


def relabel(dataset: Dataset, model: RewardModel, *, instruction: str = "", mode: str = "replace",
            weight: float = 1.0, scale: float = 1.0, offset: float = 0.0, fallback: str = "keep",
            env_scale: float = 1.0, env_offset: float = 0.0, terminate_on_success: bool = False,
            views: dict[str, np.ndarray] | None = None, progress: bool = False) -> Dataset:
    """A copy of `dataset` whose rewards come from `model`, scored in batches of `model.batch_size`.

    Images come from `dataset.images` (or image observations: the frames recorded before each step); states from
    the vector next observations (the state each transition reaches, which an online wrapper scores), or the
    observations when the dataset has no next observations. Rows the
    model cannot score get their original reward (`fallback="keep"`) or the last valid model reward of the
    same episode ("last"), through the same `scale * r + offset` as scored rows (as the wrapper's fallback);
    `env_scale`/`env_offset` map the original rewards first, as in RewardWrapper.
    With `terminate_on_success`, rows judged successful become terminals.
    The original rewards are kept in `infos["reward_original"]`, validity in `infos["reward_model_valid"]`,
    and the counts in `metadata["relabel"]`.
    """
    _check_choice("mode", mode, MODES)
    if fallback not in ("keep", "last"):
        raise ConfigError(f"relabel: fallback must be 'keep' or 'last'; got {fallback!r}")
    obs = dataset.observations
    images = dataset.images if dataset.images is not None else (obs if obs.dtype == np.uint8 else None)
    # a transition's reward is judged on the state it reaches, as online; recorded frames are the pre-step ones
    reached = dataset.next_observations if dataset.next_observations is not None else obs
    states = reached.astype(np.float32).reshape(len(obs), -1) if obs.dtype != np.uint8 else None
    if "images" in model.needs and images is None:
        raise ConfigError(f"relabel: {type(model).__name__} needs images but the dataset "
                          f"({dataset.source}) has neither `images` nor image observations")
    if "states" in model.needs and states is None:
        raise ConfigError(f"relabel: {type(model).__name__} needs states but {dataset.source} has image "
                          "observations only")
    query = RewardQuery(images=images if "images" in model.needs else None,
                        states=states if "states" in model.needs else None, instruction=instruction,
                        views=dict(views or {}) if "views" in model.needs else {})
    n, bs = len(dataset), max(1, model.batch_size)
    bounds = dataset.episode_bounds()
    if model.stateful:  # episode by episode, in order, from a reset
        chunks = [(int(lo), int(min(e, lo + bs)), lo == s) for s, e in zip(bounds.starts, bounds.ends, strict=True)
                  for lo in range(s, e, bs)]
    else:
        chunks = [(lo, min(n, lo + bs), False) for lo in range(0, n, bs)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"relabel ({type(model).__name__})", unit="batch")
    parts = []
    for lo, hi, episode_start in chunks:
        if episode_start:
            model.reset()
        parts.append(model(query.select(np.arange(lo, hi))))
    out = RewardOutput.concatenate(parts) if parts else RewardOutput(np.zeros(0), np.zeros(0, bool))
    original = (env_scale * dataset.rewards.astype(np.float32) + env_offset).astype(np.float32)
    fb = original.copy()
    if fallback == "last":
        model_r = out.reward if mode == "replace" else original + weight * out.reward
        for s, e in zip(bounds.starts, bounds.ends, strict=True):
            last = None
            for i in range(s, e):
                if out.valid[i]:
                    last = model_r[i]
                elif last is not None:
                    fb[i] = last
    rewards = combine(out.reward, original, out, mode, weight, scale, offset, fb)
    terminals = dataset.terminals.copy()
    if terminate_on_success and out.success is not None:
        terminals |= out.success & out.valid
    counter = FallbackCounter()
    counter.add(out)
    infos = {**dataset.infos, "reward_original": dataset.rewards.astype(np.float32), "reward_model_valid": out.valid}
    if out.success is not None:
        infos["reward_model_success"] = out.success & out.valid
    meta = {**dataset.metadata, "relabel": {**model.describe(), "mode": mode, "scale": scale, "offset": offset,
                                             "fallback": fallback, **counter.metrics()}}
    return Dataset(dataset.observations, dataset.actions, rewards, terminals, dataset.timeouts,
                   dataset.next_observations, dataset.images, infos, meta)
