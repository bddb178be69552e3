"""`rlpt deploy --policy RUN --robot CONFIG`: run a trained policy on a robot (or its simulated twin) at the
config's control rate, recording every episode as an rlpt Dataset for later offline training."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.errors import ConfigError


def deploy(policy: str | os.PathLike, robot: str | os.PathLike, *, episodes: int = 1,
           out: str | os.PathLike | None = None, max_steps: int | None = None, deterministic: bool = True,
           realtime: bool = True, quiet: bool | None = None,
           overrides: Sequence[str] | Mapping[str, Any] = ()) -> dict[str, Any]:
    """Load the policy of a run or checkpoint, build the robot env from `robot` (a robot_configs/*.yaml, with
    `overrides` as ``a.b=c`` strings or a mapping of dotted keys, e.g. ``["driver.port=5555"]``), and run
    `episodes` episodes. Every transition (with the action actually sent, after the safety layer) is written to
    `<out>/episodes.hdf5` as episodes finish, so a crash or a safety stop keeps what was recorded.
    Returns a summary (returns, lengths, faults, successes, the dataset path)."""
    import rlpt
    from rlpt.export import resolve_checkpoint
    from rlpt.robots import make_robot_env
    from rlpt.runs import progress
    from rlpt.utils import write_json

    if episodes < 1:
        raise ConfigError(f"deploy: episodes must be >= 1; got {episodes}")
    ckpt = resolve_checkpoint(policy)
    agent = rlpt.load(ckpt)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out is not None else Path("runs") / "deploy" / f"{Path(robot).stem}__{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    env = make_robot_env(robot, overrides, record_path=out / "episodes.hdf5", save_every=1, realtime=realtime)
    if tuple(env.observation_space.shape) != tuple(agent.observation_space.shape) or \
            tuple(env.action_space.shape) != tuple(agent.action_space.shape):
        env.close()
        raise ConfigError(f"deploy: the policy ({ckpt}) expects observations {agent.observation_space.shape} and "
                          f"actions {agent.action_space.shape}; the robot config {robot} maps to "
                          f"{env.observation_space.shape} and {env.action_space.shape}: fix the config's policy "
                          "mapping")
    rows: list[dict[str, Any]] = []
    try:
        with progress(total=episodes, desc=f"deploy on {Path(robot).stem}", quiet=quiet) as bar:
            for ep in range(episodes):
                obs, _ = env.reset()
                total, steps, done, info = 0.0, 0, False, {}
                success, state, first = False, None, True  # recurrent agents (ContextWM) carry a latent state
                t0 = time.perf_counter()
                while not done:
                    action, state = agent.predict(obs, state=state, episode_start=np.array([first]),
                                                  deterministic=deterministic)
                    first = False
                    obs, r, term, trunc, info = env.step(action)
                    total, steps = total + float(r), steps + 1
                    success |= bool(info.get("success", False))
                    done = term or trunc or (max_steps is not None and steps >= max_steps)
                rows.append({"episode": ep, "return": total, "length": steps, "success": success,
                             "fault": info.get("fault"), "rate_hz": steps / max(time.perf_counter() - t0, 1e-9)})
                bar.update(1)
    finally:
        env.close()  # stops the robot and flushes the recording
    summary = {"policy": str(ckpt), "robot": str(robot), "control_rate_hz": env.control_rate_hz,
               "episodes": rows, "mean_return": float(np.mean([r["return"] for r in rows])) if rows else None,
               "success_rate": float(np.mean([r["success"] for r in rows])) if rows else None,
               "faults": [r["fault"] for r in rows if r["fault"]], "dataset": str(out / "episodes.hdf5")}
    write_json(out / "summary.json", summary)
    return summary
