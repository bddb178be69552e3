"""`TorchVectorEnv`: a Gymnasium CPU vector env whose results are torch tensors, shaped like MJX's.

Agents consume ``make_vec_env(..., backend="gymnasium", device=...)`` and
``make_vec_env(..., backend="mjx")`` the same way: observations (N, *obs_shape) (float32, or
uint8 for pixels), rewards (N,) float32, terminations/truncations (N,) bool, all on ``device``;
finished envs are reset within the step (SAME_STEP autoreset), with ``info["final_obs"]`` a dense
(N, *obs_shape) tensor whose rows are valid where ``info["_final_obs"]`` is True. Numeric info
entries become (N,) tensors holding the step's values, also for the envs that were reset (the
values of their final step, taken from Gymnasium's ``final_info``); other entries stay numpy.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


class TorchVectorEnv(gym.vector.VectorWrapper):
    """Wrap a Gymnasium vector env built with ``autoreset_mode=SAME_STEP`` (see the module doc)."""

    def __init__(self, env: gym.vector.VectorEnv, device: str | torch.device):
        super().__init__(env)
        self.device = torch.device(device)

    def _tensor(self, x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        a = np.asarray(x)
        if dtype is None:
            dtype = torch.float32 if a.dtype.kind == "f" else None
        return torch.as_tensor(a, device=self.device, dtype=dtype)

    def _infos(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        final_info = info.pop("final_info", None)
        final_obs = info.pop("final_obs", None)
        mask = np.asarray(info.pop("_final_obs", np.zeros(self.num_envs, bool)), bool)
        info.pop("_final_info", None)
        if final_info:
            for key, values in final_info.items():
                if key.startswith("_") or key not in info:
                    continue
                rows = mask & np.asarray(final_info.get("_" + key, mask), bool)
                merged = np.array(info[key], copy=True)
                merged[rows] = np.asarray(values)[rows]
                info[key] = merged
        out: dict[str, Any] = {}
        for key, value in info.items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "fbiu":
                out[key] = self._tensor(value)
            else:
                out[key] = value
        space = self.env.single_observation_space
        dense = np.zeros((self.num_envs, *space.shape), space.dtype)
        if final_obs is not None:
            for i in np.flatnonzero(mask):
                dense[i] = final_obs[i]
        out["final_obs"] = self._tensor(dense)
        out["_final_obs"] = torch.as_tensor(mask, device=self.device)
        return out

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._tensor(obs), self._infos(info)

    def step(self, actions):
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(actions))
        return (self._tensor(obs), self._tensor(reward, torch.float32), self._tensor(terminated, torch.bool),
                self._tensor(truncated, torch.bool), self._infos(info))
