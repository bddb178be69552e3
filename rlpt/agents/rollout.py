"""Env stepping for the agents' online loops: one Gymnasium env or a vector env (N worlds, CPU or MJX on a GPU)
behind one batched interface, and GAE over the on-policy rollouts PPO stores (`rlpt.data.buffers.RolloutBuffer`).

`BatchedEnv(env, device)` makes both look like N worlds whose observations, rewards and flags are torch tensors
on the agent's device: a single env is N=1 and is reset here when its episode ends; a vector env must reset its
worlds itself in the same step (Gymnasium's `AutoresetMode.SAME_STEP`, the mode `rlpt.envs.make_vec_env` uses),
returning the reset observation and putting the last observation of the finished episode in
`info["final_obs"]`. `step` returns both: the transition's next observation (the final one where a world just
finished) and the observation to act on next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlpt.errors import ConfigError


def as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    """Observations as tensors on `device`: uint8 stays uint8, everything else becomes float32."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device)
    return t if t.dtype == torch.uint8 else t.float()


@dataclass
class EpisodeStats:
    """Returns and lengths of the episodes each world finishes (raw env rewards)."""

    running_return: torch.Tensor
    running_length: torch.Tensor
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.running_return += reward
        self.running_length += 1
        if bool(done.any()):
            self.returns += self.running_return[done].tolist()
            self.lengths += self.running_length[done].tolist()
            self.running_return[done] = 0.0
            self.running_length[done] = 0

    def pop(self) -> dict[str, float]:
        out = {}
        if self.returns:
            out = {"online/episode_return": float(np.mean(self.returns)),
                   "online/episode_length": float(np.mean(self.lengths)), "online/episodes": len(self.returns)}
        self.returns, self.lengths = [], []
        return out


class BatchedEnv:
    """One env or a SAME_STEP-autoreset vector env as N worlds with torch tensors (see the module docstring)."""

    def __init__(self, env: gym.Env | gym.vector.VectorEnv, device: torch.device, seed: int):
        self.env, self.device = env, device
        self.vector = isinstance(env, gym.vector.VectorEnv)
        if self.vector:
            mode = env.metadata.get("autoreset_mode")
            if getattr(mode, "name", mode) not in ("SAME_STEP", "same-step"):
                raise ConfigError(f"a vector env for training must reset its worlds in the same step "
                                  f"(autoreset_mode=SAME_STEP, as rlpt.envs.make_vec_env makes them); got {mode}")
            self.num_envs = int(env.num_envs)
        else:
            self.num_envs = 1
        obs, _ = env.reset(seed=seed)
        self.torch_io = isinstance(obs, torch.Tensor)  # MJX and TorchVectorEnv speak torch: actions stay tensors
        self.obs = self._batch(obs)  # (N, *obs_shape): what the policy acts on next
        self.stats = EpisodeStats(torch.zeros(self.num_envs, device=device),
                                  torch.zeros(self.num_envs, dtype=torch.long, device=device))

    def _batch(self, x: Any) -> torch.Tensor:
        t = as_tensor(x, self.device)
        return t if self.vector else t.unsqueeze(0)

    def step(self, env_actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step every world with env-bounded actions (N, A). Returns `next_obs` (the transition's successor),
        `reward`, `terminated`, `done` (terminated or truncated), all (N, ...) tensors; `self.obs` becomes the
        observation to act on next (the reset one where a world finished)."""
        if self.vector:
            actions = env_actions if self.torch_io else env_actions.cpu().numpy()
            obs, reward, terminated, truncated, info = self.env.step(actions)
            obs_t = self._batch(obs)
            terminated_t = torch.as_tensor(terminated, device=self.device).bool().reshape(-1)
            done_t = terminated_t | torch.as_tensor(truncated, device=self.device).bool().reshape(-1)
            next_obs = obs_t.clone()
            if bool(done_t.any()):
                final = info.get("final_obs")
                if final is None:
                    raise ConfigError("vector env: a world finished but info has no 'final_obs'")
                idx = torch.nonzero(done_t).flatten()
                if isinstance(final, torch.Tensor):
                    next_obs[idx] = as_tensor(final, self.device)[idx]
                else:  # gymnasium: an object array with the final obs of the finished worlds
                    next_obs[idx] = torch.stack([as_tensor(final[int(i)], self.device) for i in idx.tolist()])
        else:
            obs, reward, terminated, truncated, _ = self.env.step(env_actions[0].cpu().numpy())
            next_obs = self._batch(obs)
            terminated_t = torch.tensor([bool(terminated)], device=self.device)
            done_t = torch.tensor([bool(terminated or truncated)], device=self.device)
            obs_t = self._batch(self.env.reset()[0]) if bool(done_t[0]) else next_obs
        reward_t = torch.as_tensor(np.asarray(reward) if not isinstance(reward, torch.Tensor) else reward,
                                   device=self.device).float().reshape(-1)
        self.stats.update(reward_t, done_t)
        self.obs = obs_t
        return {"next_obs": next_obs, "reward": reward_t, "terminated": terminated_t.float(), "done": done_t}



def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        done: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """GAE(lambda) advantages (T, N): `terminated` stops bootstrapping, `done` (terminated or truncated) stops the
    trace; every input is (T, N)."""
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    adv = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * (1.0 - done[t]) * running
        adv[t] = running
    return adv
