"""Tabletop env speed: env steps/s without rendering and rendered frames/s per camera and size.

Usage: python benchmarks/tabletop_render.py [--steps 1000] [--frames 200] [--out PATH]
(default PATH: benchmarks/results/tabletop_render.json)

Writes a JSON with machine info, package versions, the command and every number. All cells run in
this one process, one after another; on a shared CPU compare ratios rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, loadavg, machine, set_threads, versions, write_result

from rlpt.envs.rendering import setup_offscreen_rendering

set_threads(1)
BACKEND = setup_offscreen_rendering()

import gymnasium  # noqa: E402
import mujoco  # noqa: E402

from rlpt.envs.tabletop import CAMERAS, TabletopEnv, scripted_policy  # noqa: E402


def steps_per_second(task: str, n_steps: int, policy: str) -> float:
    env = TabletopEnv(task)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    act = scripted_policy(env) if policy == "scripted" else (lambda _: rng.uniform(-1, 1, 4))
    t0 = time.perf_counter()
    for _ in range(n_steps):
        obs, _, term, trunc, _ = env.step(act(obs))
        if term or trunc:
            obs, _ = env.reset()
    return n_steps / (time.perf_counter() - t0)


def frames_per_second(camera: str, size: int, n_frames: int) -> tuple[float, float]:
    """(render-only fps, step+render fps) for one camera at size x size."""
    env = TabletopEnv("pick-place", camera=camera, image_size=size)
    env.reset(seed=0)
    env.render_camera()  # context creation outside the timing
    t0 = time.perf_counter()
    for _ in range(n_frames):
        img = env.render_camera()
    render_fps = n_frames / (time.perf_counter() - t0)
    assert img.std() > 0, "blank frame"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_frames):
        env.step(rng.uniform(-1, 1, 4))
        env.render_camera()
    both_fps = n_frames / (time.perf_counter() - t0)
    env.close()
    return render_fps, both_fps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "tabletop_render.json"))
    args = p.parse_args()

    results: dict = {"steps_per_s": {}, "render": []}
    print(f"{'task':<18}{'policy':<10}{'steps/s':>10}")
    for task in ("reach", "push", "pick-place", "drawer-open"):
        for policy in ("random", "scripted"):
            sps = steps_per_second(task, args.steps, policy)
            results["steps_per_s"][f"{task}/{policy}"] = round(sps, 1)
            print(f"{task:<18}{policy:<10}{sps:>10.0f}")
    print(f"\n{'camera':<8}{'size':>6}{'render fps':>12}{'step+render/s':>15}")
    for size in (64, 128):
        for cam in CAMERAS:
            fps, both = frames_per_second(cam, size, args.frames)
            results["render"].append({"camera": cam, "size": size, "render_fps": round(fps, 1),
                                      "step_and_render_per_s": round(both, 1)})
            print(f"{cam:<8}{size:>6}{fps:>12.0f}{both:>15.0f}")

    report = {
        "benchmark": "tabletop_render",
        "command": command_line(Path(sys.executable).name),
        "machine": machine(loadavg_at_end=loadavg(), gl_backend=BACKEND),
        "versions": versions(mujoco=mujoco.__version__, gymnasium=gymnasium.__version__),
        "settings": {"steps": args.steps, "frames": args.frames, "seed": 0, "control_hz": 10,
                     "physics_substeps": 20, "shadows": False},
        "notes": "steps/s: TabletopEnv.step with state observations (no rendering), episodes reset on "
                 "truncation. render fps: env.render_camera() only; step+render/s: one step then one render. "
                 "Shared CPU: other jobs were running, so absolute numbers drift; see loadavg_at_end.",
        **results,
    }
    print(f"\nwrote {write_result(args.out, report)}")


if __name__ == "__main__":
    main()
