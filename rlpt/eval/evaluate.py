"""Evaluate a policy for N episodes: returns, normalized score, success rate, and an optional video."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass
class EvalResult:
    """Per-episode returns/lengths/successes and their summary. `successes` is None for a task whose env never
    reports success (`info["success"]` or `info["is_success"]`): it has no success rate."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool] | None
    normalized_scores: list[float] | None = None
    video: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def normalized_score(self) -> float | None:
        return None if self.normalized_scores is None else float(np.mean(self.normalized_scores))

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None else float(np.mean(self.successes))

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        m = {f"{prefix}return": self.mean_return, f"{prefix}return_std": float(np.std(self.returns)),
             f"{prefix}length": float(np.mean(self.lengths))}
        if self.successes is not None:
            m[f"{prefix}success_rate"] = self.success_rate
        if self.normalized_scores is not None:
            m[f"{prefix}normalized_score"] = self.normalized_score
            m[f"{prefix}normalized_score_std"] = float(np.std(self.normalized_scores))
        return m

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.metrics(prefix="")}


def as_policy(policy: Any, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Accept an rlpt Agent or SB3 model (anything with `predict`) or a plain callable `obs -> action`.

    When `predict` takes SB3's `state` and `episode_start` arguments, the returned callable carries the
    recurrent state from one call to the next and flags the first step after each `reset()` (recurrent
    agents such as ContextWM/Dreamer or SB3's RecurrentPPO); feed-forward agents ignore both.
    """
    if hasattr(policy, "predict"):
        if _takes_recurrent_state(policy.predict):
            return _RecurrentPolicy(policy, deterministic)
        return lambda obs: policy.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError(f"cannot evaluate {type(policy).__name__}: expected an object with predict() or a callable")


def _takes_recurrent_state(predict: Callable) -> bool:
    import inspect

    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return False
    return {"state", "episode_start"} <= set(params)


class _RecurrentPolicy:
    """`obs -> action` over `predict(obs, state, episode_start)`; `reset()` marks the next call as an episode start."""

    def __init__(self, policy: Any, deterministic: bool):
        self.policy, self.deterministic = policy, deterministic
        self.reset()

    def reset(self) -> None:
        self.state: Any = None
        self.episode_start = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        action, self.state = self.policy.predict(obs, state=self.state, episode_start=np.array([self.episode_start]),
                                                 deterministic=self.deterministic)
        self.episode_start = False
        return action


def evaluate(policy: Any, env: str | gym.Env, episodes: int = 10, *, seed: int = 0, deterministic: bool = True,
             ref_scores: tuple[float, float] | None = None, video_path: str | Path | None = None,
             video_fps: int = 30, env_options: dict | None = None) -> EvalResult:
    """Run `episodes` full episodes (seeds seed, seed+1, ...) and summarize them.

    `ref_scores=(random_return, expert_return)` adds D4RL-style normalized scores (0-100). With
    `video_path`, the first episode is rendered to an mp4 (pixel observations if the env has them,
    else `env.render()`).
    """
    from rlpt.envs import make_env

    own_env = isinstance(env, str)
    if own_env:
        opts = dict(env_options or {})
        if video_path is not None:
            opts.setdefault("render_mode", "rgb_array")
        env = make_env(env, **opts)
    act = as_policy(policy, deterministic)
    returns, lengths, successes, frames = [], [], [], []
    reports_success = False
    try:
        for ep in range(episodes):
            obs, info = env.reset(seed=seed + ep)
            if isinstance(act, _RecurrentPolicy):  # a recurrent policy starts each episode from a fresh state
                act.reset()
            total, steps, success, done = 0.0, 0, False, False
            record = video_path is not None and ep == 0
            while not done:
                if record:
                    frames.append(_frame(env, obs))
                obs, r, term, trunc, info = env.step(act(obs))
                total += float(r)
                steps += 1
                if "success" in info or "is_success" in info:
                    reports_success = True
                    success = success or bool(info.get("success", info.get("is_success", False)))
                done = term or trunc
            if record:
                frames.append(_frame(env, obs))
            returns.append(total)
            lengths.append(steps)
            successes.append(success)
    finally:
        if own_env:
            env.close()
    norm = None
    if ref_scores is not None:
        lo, hi = ref_scores
        norm = [100.0 * (r - lo) / (hi - lo) for r in returns]
    video = None
    if video_path is not None and frames and frames[0] is not None:
        from rlpt.media import write_video

        video = str(write_video(video_path, np.stack(frames), fps=video_fps))
    return EvalResult(returns, lengths, successes if reports_success else None, norm, video)


def _frame(env: gym.Env, obs: Any) -> np.ndarray | None:
    if isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.ndim == 3 and obs.shape[-1] == 3:
        return obs
    if isinstance(obs, dict) and "pixels" in obs:
        return np.asarray(obs["pixels"])
    frame = env.render()
    return None if frame is None else np.asarray(frame)
