"""Behaviour policies for dataset generation.

`rlpt data train-behavior ENV` trains Stable-Baselines3 SAC or PPO and saves actor snapshots along the way
(safetensors + a JSON manifest with each snapshot's measured return). The snapshots are small and
committed under `rlpt/collect/behavior/<env>/`, so datasets regenerate in minutes without retraining:

- `expert`: the last snapshot; `medium`: the snapshot whose return is closest to one third of the
  way from the random policy to the expert (D4RL's "medium" is about a third of expert);
- `medium-replay`: rollouts of every snapshot from the start of training up to `medium`, each for
  a share of steps proportional to the training steps it covered, replaying what the training
  buffer saw (D4RL stores the buffer itself; we regenerate it from the snapshots; with PPO, what
  the on-policy rollouts saw);
- `random`: uniform actions. Reference min/max scores are the random and expert average returns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlpt.errors import CheckpointError
from rlpt.nets import GaussianMLPActor, TanhGaussianActor
from rlpt.utils import write_json

BEHAVIOR_DIR = Path(__file__).resolve().parent / "behavior"


def behavior_dir() -> Path:
    """Where behaviour policies live: $RLPT_BEHAVIOR_DIR, else the committed `rlpt/collect/behavior/`."""
    return Path(os.environ.get("RLPT_BEHAVIOR_DIR", BEHAVIOR_DIR))


@dataclass
class Snapshot:
    step: int
    path: Path
    mean_return: float


class BehaviorPolicy:
    """A saved SAC or PPO actor that acts on a batch of observations (stochastic by default, as D4RL)."""

    def __init__(self, actor: TanhGaussianActor | GaussianMLPActor, action_space: gym.spaces.Box, seed: int = 0):
        self.actor = actor.eval()
        self.low = np.asarray(action_space.low, dtype=np.float32)
        self.high = np.asarray(action_space.high, dtype=np.float32)
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def load(cls, path: str | Path, action_space: gym.spaces.Box, seed: int = 0) -> BehaviorPolicy:
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            raise CheckpointError(f"behaviour snapshot {path} (and its {meta_path.name}) not found")
        meta = json.loads(meta_path.read_text())
        actor_cls = GaussianMLPActor if meta.get("kind") == "ppo" else TanhGaussianActor
        actor = actor_cls(meta["obs_dim"], meta["act_dim"], meta["hidden"])
        actor.load_state_dict(load_file(str(path)))
        return cls(actor, action_space, seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        squeeze = obs_t.ndim == 1
        if squeeze:
            obs_t = obs_t[None]
        a, _ = self.actor.sample(obs_t, deterministic=deterministic, generator=self.generator)
        a = a.numpy()
        if isinstance(self.actor, GaussianMLPActor):  # PPO acts in env units, clipped to the bounds (as SB3)
            a = np.clip(a, self.low, self.high)
        else:  # SAC's tanh output in [-1, 1] rescaled to the bounds
            a = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        return a[0] if squeeze else a


def save_actor(actor: TanhGaussianActor | GaussianMLPActor, path: Path, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}, str(path))
    write_json(path.with_suffix(".json"), {"obs_dim": actor.obs_dim, "act_dim": actor.act_dim,
                                           "hidden": list(actor.hidden), **meta})


def evaluate_returns(policy, env_id: str, episodes: int, seed: int, deterministic: bool = False) -> np.ndarray:
    """Average undiscounted return of `policy(obs) -> action` over full episodes (time limit included)."""
    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs, deterministic=deterministic))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return np.asarray(returns)


def random_policy(action_space: gym.spaces.Box, seed: int = 0):
    rng = np.random.default_rng(seed)

    def act(obs, deterministic: bool = False):
        shape = (len(obs), *action_space.shape) if np.ndim(obs) == 2 else action_space.shape
        return rng.uniform(action_space.low, action_space.high, size=shape).astype(np.float32)

    return act


def train_behavior(env_id: str, total_steps: int, snapshot_every: int, out_dir: Path, seed: int = 0,
                   eval_episodes: int = 5, hidden: tuple[int, ...] | None = None, algo: str = "sac",
                   log=print) -> dict:
    """Train SB3 SAC (2x128, warm-up 5000 steps) or PPO (2x64 tanh, SB3 defaults) on `env_id`, saving actor
    snapshots and a manifest into `out_dir`. PPO is ~30x cheaper per env step on a CPU."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import BaseCallback

    out_dir.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if algo == "sac":
        hidden = tuple(hidden or (128, 128))
        learning_starts = 5000
        model = SAC("MlpPolicy", env, seed=seed, learning_starts=learning_starts, verbose=0, device="cpu",
                    policy_kwargs={"net_arch": list(hidden)})
    elif algo == "ppo":
        hidden = tuple(hidden or (64, 64))
        learning_starts = 0
        model = PPO("MlpPolicy", env, seed=seed, verbose=0, device="cpu",
                    policy_kwargs={"net_arch": {"pi": list(hidden), "vf": list(hidden)}})
    else:
        raise ValueError(f"algo must be 'sac' or 'ppo', got {algo!r}")
    snapshots: list[dict] = []
    t0 = time.time()

    def current_actor() -> TanhGaussianActor | GaussianMLPActor:
        if algo == "sac":
            actor = TanhGaussianActor(obs_dim, act_dim, hidden)
            actor.load_state_dict({k: v for k, v in model.actor.state_dict().items()
                                   if k.split(".")[0] in ("latent_pi", "mu", "log_std")})
            return actor
        actor = GaussianMLPActor(obs_dim, act_dim, hidden)
        sd = model.policy.state_dict()
        actor.load_state_dict({"log_std": sd["log_std"],
                               **{k.replace("mlp_extractor.", ""): v for k, v in sd.items()
                                  if k.startswith("mlp_extractor.policy_net.")},
                               **{k: v for k, v in sd.items() if k.startswith("action_net.")}})
        return actor

    def snapshot(step: int) -> None:
        actor = current_actor()
        policy = BehaviorPolicy(actor, env.action_space, seed=seed)
        rets = evaluate_returns(policy, env_id, eval_episodes, seed=10_000 + step)
        path = out_dir / f"step_{step:07d}.safetensors"
        save_actor(actor, path, env_id=env_id, step=step, kind=algo, mean_return=float(rets.mean()),
                   std_return=float(rets.std()))
        snapshots.append({"step": step, "file": path.name, "mean_return": float(rets.mean()),
                          "std_return": float(rets.std())})
        log(f"[{time.time() - t0:7.0f}s] step {step:>8d}  return {rets.mean():9.1f} ± {rets.std():7.1f}")

    class SnapshotCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % snapshot_every == 0:
                snapshot(self.num_timesteps)
            return True

    snapshot(0)
    model.learn(total_timesteps=total_steps, callback=SnapshotCallback())
    rand = evaluate_returns(random_policy(env.action_space, seed), env_id, 100, seed=20_000)
    manifest = select_snapshots(env_id, snapshots, float(rand.mean()))
    manifest.update(algo=f"sb3-{algo}", total_steps=total_steps, seed=seed, train_seconds=time.time() - t0,
                    learning_starts=learning_starts, hidden=list(hidden))
    manifest["expert_return"] = measure_expert_return(out_dir / manifest["expert"]["file"], env_id, seed)
    # Keep only what datasets need: snapshots up to `medium` (for medium-replay), and the expert.
    keep = {s["file"] for s in manifest["replay_snapshots"]} | {manifest["expert"]["file"]}
    for s in snapshots:
        if s["file"] not in keep:
            (out_dir / s["file"]).unlink()
            (out_dir / s["file"]).with_suffix(".json").unlink()
    write_json(out_dir / "manifest.json", manifest)
    log(f"random {manifest['random_return']:.1f}  medium {manifest['medium']['mean_return']:.1f} "
        f"(step {manifest['medium']['step']})  expert {manifest['expert']['mean_return']:.1f}")
    return manifest


def measure_expert_return(path: Path, env_id: str, seed: int = 0, episodes: int = 20) -> float:
    """The D4RL-style max reference: the expert's average return over `episodes`, sampling actions
    stochastically exactly as the expert dataset is collected."""
    env = gym.make(env_id)
    policy = BehaviorPolicy.load(path, env.action_space, seed=seed)
    return float(evaluate_returns(policy, env_id, episodes, seed=30_000).mean())


def select_snapshots(env_id: str, snapshots: list[dict], random_return: float) -> dict:
    """Pick expert (last) and medium (closest to 1/3 of the random->expert gap) snapshots."""
    expert = snapshots[-1]
    target = random_return + (expert["mean_return"] - random_return) / 3.0
    medium = min(snapshots[:-1] or snapshots, key=lambda s: abs(s["mean_return"] - target))
    replay = [s for s in snapshots if s["step"] <= medium["step"]]
    return {"env_id": env_id, "random_return": random_return, "expert": expert, "medium": medium,
            "medium_target_return": target, "replay_snapshots": replay, "all_snapshots": snapshots}


def load_manifest(env_id: str, root: Path | None = None) -> tuple[dict, Path]:
    folder = (root or behavior_dir()) / env_id.replace("/", "_")
    path = folder / "manifest.json"
    if not path.exists():
        raise CheckpointError(
            f"no behaviour policies for {env_id}: {path} is missing; train them with "
            f"`rlpt data train-behavior {env_id}`")
    return json.loads(path.read_text()), folder
