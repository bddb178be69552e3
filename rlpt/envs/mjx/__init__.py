"""MuJoCo on accelerators through MJX: batched versions of rlpt's envs that hand torch tensors to agents.

The only package of rlpt that imports JAX (``pip install -e '.[mjx]'``). Use it through
``rlpt.envs.make_vec_env(spec, num_envs, backend="mjx")``; see `rlpt.envs.mjx.vector` for the
vector env's API and docs/mjx.md for parity tolerances and speed.

    mujoco/Hopper-v5, mujoco/HalfCheetah-v5, mujoco/Walker2d-v5    Gymnasium v5 (same MJCF files)
    tabletop/reach, tabletop/push, tabletop/pick-place, tabletop/drawer-open   rlpt's tabletop scene
"""

from __future__ import annotations

from typing import Any

from rlpt.envs.mjx._jax import enable_compilation_cache, import_mjx
from rlpt.errors import EnvSpecError

LOCOMOTION_IDS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
TABLETOP_TASKS = ("reach", "push", "pick-place", "drawer-open")
MJX_SPECS = tuple(f"mujoco/{i}" for i in LOCOMOTION_IDS) + tuple(f"tabletop/{t}" for t in TABLETOP_TASKS)


def make_task(backend_id: str, **task_kwargs: Any):
    """The single-world MJX task for a resolved env id ("mujoco/Hopper-v5", "Hopper-v5", "tabletop/push")."""
    prefix, _, rest = backend_id.partition("/")
    name = rest if prefix in ("mujoco", "tabletop") else backend_id
    if prefix != "tabletop" and name in LOCOMOTION_IDS:
        if task_kwargs:
            raise EnvSpecError(f"{backend_id}: the MJX locomotion envs take no options, got {sorted(task_kwargs)}")
        from rlpt.envs.mjx.locomotion import LocomotionTask

        return LocomotionTask(name)
    if prefix == "tabletop" and name in TABLETOP_TASKS:
        from rlpt.envs.mjx.tabletop import TabletopTask

        return TabletopTask(name, **task_kwargs)
    raise EnvSpecError(f"backend 'mjx' has no env {backend_id!r}; expected one of {list(MJX_SPECS)}")


def make_mjx_vec_env(backend_id: str, num_envs: int, *, device: Any = "auto", seed: int | None = None,
                     max_episode_steps: int | None = None, **task_kwargs: Any):
    """`MjxVectorEnv` of `num_envs` worlds of `backend_id` (see `make_task`)."""
    from rlpt.envs.mjx.vector import MjxVectorEnv

    task = make_task(backend_id, **task_kwargs)
    return MjxVectorEnv(task, num_envs, device=device, seed=seed, max_episode_steps=max_episode_steps)


__all__ = ["MJX_SPECS", "enable_compilation_cache", "import_mjx", "make_mjx_vec_env", "make_task"]
