"""Gymnasium v5 Hopper, HalfCheetah and Walker2d as pure-JAX MJX tasks (one world; the vector env batches).

Each task loads the MJCF file Gymnasium ships (``gymnasium/envs/mujoco/assets``) unchanged and
reproduces the v5 env's defaults:

- observation: ``qpos[1:]`` then ``qvel`` (clipped to [-10, 10] for Hopper and Walker2d), float32;
- reward: ``forward_reward_weight * (x_after - x_before) / dt + healthy_reward * is_healthy
  - ctrl_cost_weight * sum(action**2)`` with ``dt = frame_skip * timestep`` (HalfCheetah has no
  healthy reward); the control cost uses the action as given, as Gymnasium does (MuJoCo clamps
  the control itself);
- termination when unhealthy: Hopper: z in (0.7, inf), angle in (-0.2, 0.2), every entry of
  ``state_vector()[2:]`` in (-100, 100); Walker2d: z in (0.8, 2.0), angle in (-1, 1); HalfCheetah:
  never;
- reset: ``qpos0 + U(-s, s)``, ``qvel = U(-s, s)`` (HalfCheetah: ``s * N(0, 1)``), s = 5e-3 (0.1
  for HalfCheetah); the random streams are JAX's, so the same seed does not give Gymnasium's numbers;
- ``frame_skip`` physics steps per env step (4, 5, 4) in one ``lax.fori_loop``.

The state is a dict ``{"data": mjx.Data}``; infos carry x_position, x_velocity, reward_forward,
reward_ctrl and (Hopper, Walker2d) reward_survive, as Gymnasium's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from rlpt.envs.mjx._jax import import_mjx


@dataclass(frozen=True)
class LocomotionParams:
    """Gymnasium v5 constructor defaults for one locomotion env."""

    xml_file: str
    frame_skip: int
    ctrl_cost_weight: float
    reset_noise_scale: float
    forward_reward_weight: float = 1.0
    healthy_reward: float = 0.0
    healthy_z_range: tuple[float, float] | None = None
    healthy_angle_range: tuple[float, float] | None = None
    healthy_state_range: tuple[float, float] | None = None
    clip_velocity: bool = False
    normal_qvel_noise: bool = False
    max_episode_steps: int = 1000


LOCOMOTION: dict[str, LocomotionParams] = {
    "Hopper-v5": LocomotionParams(
        "hopper.xml", frame_skip=4, ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, healthy_reward=1.0,
        healthy_z_range=(0.7, math.inf), healthy_angle_range=(-0.2, 0.2), healthy_state_range=(-100.0, 100.0),
        clip_velocity=True,
    ),
    "HalfCheetah-v5": LocomotionParams(
        "half_cheetah.xml", frame_skip=5, ctrl_cost_weight=0.1, reset_noise_scale=0.1, normal_qvel_noise=True,
    ),
    "Walker2d-v5": LocomotionParams(
        "walker2d_v5.xml", frame_skip=4, ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, healthy_reward=1.0,
        healthy_z_range=(0.8, 2.0), healthy_angle_range=(-1.0, 1.0), clip_velocity=True,
    ),
}


def gymnasium_asset(xml_file: str) -> Path:
    """Path of an MJCF file shipped with Gymnasium's MuJoCo envs."""
    import gymnasium.envs.mujoco as gym_mujoco

    return Path(gym_mujoco.__file__).resolve().parent / "assets" / xml_file


class LocomotionTask:
    """One Gymnasium v5 locomotion env as pure JAX functions of a single world (see the module doc).

    Attributes: name, config (LocomotionParams), mj_model (C MuJoCo model), model (mjx.Model), obs_dim, act_dim,
    action_low / action_high (the actuator control ranges), max_episode_steps, dt, info_keys.
    """

    def __init__(self, name: str):
        jax, mjx = import_mjx()
        self.name = name
        self.config = p = LOCOMOTION[name]
        self.mj_model = mujoco.MjModel.from_xml_path(str(gymnasium_asset(p.xml_file)))
        self.model = mjx.put_model(self.mj_model)
        self._data0 = mjx.make_data(self.model)
        self.obs_dim = self.mj_model.nq - 1 + self.mj_model.nv
        self.act_dim = self.mj_model.nu
        self.action_low = self.mj_model.actuator_ctrlrange[:, 0].astype(np.float32)
        self.action_high = self.mj_model.actuator_ctrlrange[:, 1].astype(np.float32)
        self.max_episode_steps = p.max_episode_steps
        self.dt = float(self.mj_model.opt.timestep) * p.frame_skip
        keys = ["x_position", "x_velocity", "reward_forward", "reward_ctrl"]
        if p.healthy_z_range is not None:
            keys.append("reward_survive")
        self.info_keys = tuple(keys)

    # ------------------------------------------------------------------------------------ state
    def state_from(self, qpos, qvel) -> dict[str, Any]:
        """A world at (qpos, qvel), otherwise as after ``mj_resetData``.

        No ``mj_forward`` here (Gymnasium calls it in ``set_state``): the observation reads only
        qpos/qvel, and the next ``mjx.step`` starts with a full forward pass, so the trajectory is the
        same; leaving it out keeps the compiled reset small.
        """
        return {"data": self._data0.replace(qpos=qpos, qvel=qvel)}

    def params(self) -> dict[str, Any]:
        """Runtime parameters handed to reset/step (none: every setting is Gymnasium's default)."""
        return {}

    def reset(self, key, params=None) -> dict[str, Any]:
        """A fresh episode's world drawn with the JAX PRNG `key` (Gymnasium v5's reset noise)."""
        jax, _ = import_mjx()
        jnp = jax.numpy
        p, m = self.config, self.mj_model
        s = p.reset_noise_scale
        k_pos, k_vel = jax.random.split(key)
        qpos = jnp.asarray(m.qpos0) + jax.random.uniform(k_pos, (m.nq,), minval=-s, maxval=s)
        if p.normal_qvel_noise:
            qvel = s * jax.random.normal(k_vel, (m.nv,))
        else:
            qvel = jax.random.uniform(k_vel, (m.nv,), minval=-s, maxval=s)
        dtype = self._data0.qpos.dtype
        return self.state_from(qpos.astype(dtype), qvel.astype(dtype))

    def observe(self, state: dict[str, Any]):
        """The v5 observation (obs_dim,) float32."""
        jax, _ = import_mjx()
        jnp = jax.numpy
        d = state["data"]
        qvel = jnp.clip(d.qvel, -10.0, 10.0) if self.config.clip_velocity else d.qvel
        return jnp.concatenate([d.qpos[1:], qvel]).astype(jnp.float32)

    def is_healthy(self, state: dict[str, Any]):
        """Gymnasium's ``is_healthy`` (always True for HalfCheetah)."""
        jax, _ = import_mjx()
        jnp = jax.numpy
        p, d = self.config, state["data"]
        ok = jnp.asarray(True)
        if p.healthy_z_range is None:
            return ok
        z, angle = d.qpos[1], d.qpos[2]
        ok &= (p.healthy_z_range[0] < z) & (z < p.healthy_z_range[1])
        ok &= (p.healthy_angle_range[0] < angle) & (angle < p.healthy_angle_range[1])
        if p.healthy_state_range is not None:
            sv = jnp.concatenate([d.qpos, d.qvel])[2:]
            ok &= jnp.all((p.healthy_state_range[0] < sv) & (sv < p.healthy_state_range[1]))
        return ok

    def step(self, state: dict[str, Any], action, params=None):
        """Apply `action` for frame_skip physics steps: (state, reward, terminated, info)."""
        jax, mjx = import_mjx()
        jnp = jax.numpy
        p, d = self.config, state["data"]
        x_before = d.qpos[0]
        d = d.replace(ctrl=action.astype(d.ctrl.dtype))
        d = jax.lax.fori_loop(0, p.frame_skip, lambda _, dd: mjx.step(self.model, dd), d)
        state = {"data": d}
        x_after = d.qpos[0]
        x_velocity = (x_after - x_before) / self.dt
        forward = p.forward_reward_weight * x_velocity
        ctrl_cost = p.ctrl_cost_weight * jnp.sum(jnp.square(action))
        info = {"x_position": x_after, "x_velocity": x_velocity, "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        reward = forward - ctrl_cost
        terminated = jnp.asarray(False)
        if p.healthy_z_range is not None:
            healthy = self.is_healthy(state)
            survive = p.healthy_reward * healthy.astype(reward.dtype)
            info["reward_survive"] = survive
            reward = reward + survive
            terminated = ~healthy
        info = {k: v.astype(jnp.float32) for k, v in info.items()}
        return state, reward.astype(jnp.float32), terminated, info
