"""`MjxVectorEnv`: N worlds of one MJX task stepped in one jitted call, results as torch tensors.

API (the same as ``make_vec_env(..., backend="gymnasium", device=...)`` gives for CPU envs):

    envs = make_vec_env("mujoco/Hopper-v5", 4096, backend="mjx", device="auto", seed=0)
    obs, info = envs.reset(seed=0)                 # obs: torch (N, obs_dim) float32 on envs.device
    obs, reward, terminated, truncated, info = envs.step(actions)   # actions: torch or numpy (N, act_dim)
    # reward (N,) float32; terminated, truncated (N,) bool. Worlds that ended this step are reset
    # within the same step (Gymnasium's SAME_STEP autoreset): `obs` holds their first observation of
    # the next episode, info["final_obs"] (N, obs_dim) their last one (rows valid where
    # info["_final_obs"] is True). The other info entries (e.g. "x_velocity", "success") are (N,)
    # tensors of the step just taken, also for the worlds that were reset.

Seeding: ``reset(seed=s)`` gives world i the JAX key ``fold_in(PRNGKey(s), i)``; each world then
carries its own key, so a run is reproducible from its seed and worlds never share noise.
Episodes are truncated after ``max_episode_steps`` steps (1000 for locomotion, as Gymnasium's
TimeLimit). Every returned tensor is a fresh buffer that the env keeps no reference to (DLPack
shares memory with JAX's output, which the env never reads again), so in-place writes are safe;
the env's own state stays in JAX arrays.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlpt.envs.mjx._jax import import_mjx
from rlpt.errors import EnvSpecError


def jax_platform() -> str:
    """'gpu' when JAX runs on a CUDA/ROCm device, else 'cpu' (or the TPU/other platform name)."""
    jax, _ = import_mjx()
    platform = jax.devices()[0].platform
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def resolve_mjx_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None): CUDA when JAX runs on a GPU and torch sees CUDA, else CPU."""
    if device is None or device == "auto":
        on_gpu = jax_platform() == "gpu" and torch.cuda.is_available()
        return torch.device("cuda" if on_gpu else "cpu")
    return torch.device(device)


class MjxVectorEnv(gym.vector.VectorEnv):
    """`num_envs` worlds of an MJX task (`LocomotionTask`, `TabletopTask`); see the module doc for the API.

    Args:
        task: the single-world task (pure JAX functions reset/step/observe/state_from).
        num_envs: number of worlds, all stepped in one jitted call.
        device: torch device of the returned tensors ("auto": where JAX runs, if torch can use it).
        seed: seed of the first reset when ``reset()`` gets none (default 0).
        max_episode_steps: truncation length (default: the task's, 1000 for locomotion).
    """

    def __init__(self, task, num_envs: int, *, device: str | torch.device | None = "auto", seed: int | None = None,
                 max_episode_steps: int | None = None):
        jax, _ = import_mjx()
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise EnvSpecError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        limit = task.max_episode_steps if max_episode_steps is None else max_episode_steps
        if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
            raise EnvSpecError(f"max_episode_steps must be an integer >= 1, got {max_episode_steps!r}")
        self.task = task
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(limit)
        self.device = resolve_mjx_device(device)
        self._default_seed = 0 if seed is None else int(seed)
        # Runtime parameters are inputs of the compiled programs, not constants: changing the time
        # limit, the tabletop task or its reward type reuses the same compiled step.
        self._params = {"max_episode_steps": np.int32(self.max_episode_steps), **task.params()}
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(task.action_low, task.action_high, dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
        self.render_mode = None
        self._jax_device = jax.devices()[0]
        self._states = self._elapsed = self._keys = None
        self._build()

    # ---------------------------------------------------------------------------- jitted parts
    def _build(self) -> None:
        jax, _ = import_mjx()
        jnp = jax.numpy
        task = self.task

        def reset_all(keys, params):  # keys (N, 2) -> states, next keys, obs (N, obs_dim)
            pairs = jax.vmap(jax.random.split)(keys)  # (N, 2, 2)
            states = jax.vmap(task.reset, in_axes=(0, None))(pairs[:, 1], params)
            return states, pairs[:, 0], jax.vmap(task.observe)(states)

        def select(mask, new, old):
            return jax.tree_util.tree_map(
                lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)

        def step(states, elapsed, keys, actions, params):
            states, reward, terminated, info = jax.vmap(task.step, in_axes=(0, 0, None))(states, actions, params)
            obs = jax.vmap(task.observe)(states)
            elapsed = elapsed + 1
            truncated = elapsed >= params["max_episode_steps"]
            done = terminated | truncated

            def with_resets(args):
                states, keys, obs = args
                new_states, new_keys, new_obs = reset_all(keys, params)
                return select(done, new_states, states), select(done, new_keys, keys), select(done, new_obs, obs)

            states, keys, next_obs = jax.lax.cond(jnp.any(done), with_resets, lambda args: args, (states, keys, obs))
            elapsed = jnp.where(done, 0, elapsed)
            return states, elapsed, keys, next_obs, reward, terminated, truncated, obs, done, info

        def set_state(arrays):
            states = jax.vmap(task.state_from)(**arrays)
            return states, jax.vmap(task.observe)(states)

        backend_gpu = jax_platform() == "gpu"
        # Donating the world states lets XLA update them in place on the GPU (CPU XLA ignores donation).
        self._reset_fn = jax.jit(reset_all)
        self._step_fn = jax.jit(step, donate_argnums=(0,) if backend_gpu else ())
        self._set_fn = jax.jit(set_state)

    # ------------------------------------------------------------------------------ conversion
    def _to_torch(self, x) -> torch.Tensor:
        t = torch.from_dlpack(x)  # zero-copy through the __dlpack__ protocol (synchronises streams)
        return t if t.device == self.device else t.to(self.device)

    def _to_jax(self, x, name: str, shape: tuple[int, ...], dtype=np.float32):
        jax, _ = import_mjx()
        if isinstance(x, torch.Tensor):
            t = x.detach()
            if tuple(t.shape) != shape:
                raise EnvSpecError(f"MjxVectorEnv: {name} must have shape {shape}, got {tuple(t.shape)}")
            t = t.to(torch.float32 if dtype == np.float32 else torch.float64)
            if t.device.type == "cuda" and self._jax_device.platform != "cpu":
                # clone: the jitted step runs asynchronously and must not see later in-place writes
                return jax.dlpack.from_dlpack(t.contiguous().clone())
            x = t.cpu().numpy()
        a = np.asarray(x, dtype=dtype)
        if a.shape != shape:
            raise EnvSpecError(f"MjxVectorEnv: {name} must have shape {shape}, got {a.shape}")
        return jax.device_put(a, self._jax_device)

    def _put(self, a: np.ndarray):
        """Commit a host array to JAX's device (jit caches per committed/uncommitted inputs: keep them alike)."""
        jax, _ = import_mjx()
        return jax.device_put(a, self._jax_device)

    def _keys_for(self, seed) -> Any:
        jax, _ = import_mjx()
        jnp = jax.numpy
        if isinstance(seed, list | tuple | np.ndarray):
            if len(seed) != self.num_envs:
                raise EnvSpecError(f"MjxVectorEnv.reset: seed list must have {self.num_envs} entries, got {len(seed)}")
            return self._put(np.stack([np.asarray(jax.random.PRNGKey(int(s))) for s in seed]))
        base = jax.random.PRNGKey(int(seed))
        return self._put(np.asarray(jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(self.num_envs))))

    # ---------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every world; `seed` (int, or one int per world) fixes the worlds' keys. Returns (obs, {})."""
        if options:
            raise EnvSpecError(f"MjxVectorEnv.reset: no options are supported, got {sorted(options)}")
        if seed is None and self._keys is None:
            seed = self._default_seed
        keys = self._keys if seed is None else self._keys_for(seed)
        self._states, self._keys, obs = self._reset_fn(keys, self._params)
        self._elapsed = self._put(np.zeros(self.num_envs, np.int32))
        return self._to_torch(obs), {}

    def step(self, actions):
        """Step every world once; see the module doc for what comes back."""
        if self._states is None:
            raise EnvSpecError("MjxVectorEnv.step called before reset()")
        a = self._to_jax(actions, "actions", (self.num_envs, self.task.act_dim))
        (self._states, self._elapsed, self._keys, obs, reward, terminated, truncated, final_obs, done,
         info) = self._step_fn(self._states, self._elapsed, self._keys, a, self._params)
        infos = {k: self._to_torch(v) for k, v in info.items()}
        infos["final_obs"] = self._to_torch(final_obs)
        infos["_final_obs"] = self._to_torch(done)
        return (self._to_torch(obs), self._to_torch(reward), self._to_torch(terminated),
                self._to_torch(truncated), infos)

    def set_state(self, qpos, qvel, elapsed=None, **extra) -> torch.Tensor:
        """Put world i at (qpos[i], qvel[i]) (arrays (N, nq), (N, nv)) with `elapsed[i]` steps done (default 0).

        For parity checks and for starting batches from recorded states; returns the observations.
        `extra` holds the task's other state arrays (the tabletop's controller targets, see
        `TabletopTask.state_from`), each with a leading N axis.
        """
        m = self.task.mj_model
        dtype = np.dtype(self.task.model.opt.timestep.dtype)
        arrays = {"qpos": self._to_jax(qpos, "qpos", (self.num_envs, m.nq), dtype),
                  "qvel": self._to_jax(qvel, "qvel", (self.num_envs, m.nv), dtype)}
        for key, value in extra.items():
            shape = (self.num_envs, *np.shape(value)[1:])
            arrays[key] = self._to_jax(value, key, shape, dtype)
        if self._keys is None:
            self._keys = self._keys_for(self._default_seed)
        self._states, obs = self._set_fn(arrays)
        steps = np.zeros(self.num_envs, np.int32) if elapsed is None else elapsed
        self._elapsed = self._put(np.broadcast_to(np.asarray(steps, np.int32), (self.num_envs,)).copy())
        return self._to_torch(obs)

    def set_task(self, name: str, max_episode_steps: int | None = None) -> None:
        """Switch every world to another task of the same family (tabletop: "reach", "push", ...) in place.

        The physical state is kept; the new task's success predicate, reward and time limit (its
        default unless given) apply from the next step, and its scenes are sampled at the next reset.
        The compiled programs are reused (the task is a runtime input).
        """
        if not hasattr(self.task, "set_task"):
            raise EnvSpecError(f"MjxVectorEnv.set_task: {type(self.task).__name__} has a single task")
        self.task.set_task(name)
        limit = self.task.max_episode_steps if max_episode_steps is None else int(max_episode_steps)
        if limit < 1:
            raise EnvSpecError(f"max_episode_steps must be an integer >= 1, got {max_episode_steps!r}")
        self.max_episode_steps = limit
        self._params = {"max_episode_steps": np.int32(limit), **self.task.params()}

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(qpos (N, nq), qvel (N, nv)) of every world, as numpy arrays."""
        if self._states is None:
            raise EnvSpecError("MjxVectorEnv.get_state called before reset()")
        d = self._states["data"]
        return np.asarray(d.qpos), np.asarray(d.qvel)

    def close_extras(self, **kwargs) -> None:
        self._states = self._elapsed = self._keys = None
