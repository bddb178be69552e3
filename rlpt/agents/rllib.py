"""Ray RLlib PPO and SAC (new API stack) as rlpt agents: same `learn` / `predict` / `save` / `rlpt.load` path.

    agent = RLlibPPOConfig(train_batch_size=1000).create(env.observation_space, env.action_space)
    agent.learn(env, total_timesteps=10_000, callbacks=[print_cb])   # algo.train() iterations
    agent.predict(obs)                                                 # the RLModule's deterministic forward
    agent.save("runs/ppo"); agent = rlpt.load("runs/ppo")

In a recipe: `agent: rllib_ppo` or `agent: rllib_sac` (agents/rllib/*.yaml); `rlpt train` then writes the
same run folder, metrics and evaluations as for rlpt's own agents.

Nothing here imports Ray until an agent is built, so registering these agents costs nothing; building one
needs `pip install 'rlpt[cluster]'` (ray[rllib,tune]==2.60.*).

Envs. `learn(env, n)` trains on the env it is given (rlpt's `make_env`, plus the recipe's reward-model and
reset-free wrappers when `rlpt train` builds it) through RLlib's local EnvRunner: that is the default
(`num_env_runners: 0`, one env). To sample with remote EnvRunners (`num_env_runners > 0`, on other cores or
cluster nodes), set `config.env: {spec: ..., env_options: {...}, reward: {...}}` (see `rllib_env_config`):
every runner then builds its own copies through the env creator registered as `"rlpt"` (`register_rlpt_env`),
which calls `make_env` and, with a `reward:` section, `rlpt.rewards.factory.wrap_with_reward`.

Checkpoints. `model.safetensors` holds the RLModule's weights (actor, critics and, for SAC, target critics),
so `rlpt.load`, `rlpt eval` and `predict` need no running Ray. The full RLlib training state (optimizers,
connector state, counters; for SAC also the replay buffer, `save_replay_buffer: true`) goes to the `rllib/`
sub-folder via `Algorithm.save_to_path`; `learn` after `rlpt.load` restores it with `restore_from_path`, so
a resumed run continues the same optimisation. The `rllib/` folder is RLlib's own format (it pickles), read
only to resume training: do not resume from checkpoints you do not trust.

Step accounting: `online_steps` counts env steps sampled by RLlib. `learn(env, n)` runs whole
`algo.train()` iterations until `online_steps` has grown by at least `n` (PPO: `train_batch_size` steps per
iteration; SAC: `steps_per_iteration`), so it may overshoot by part of an iteration, as SB3's PPO does.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlpt.agents.base import Agent, AgentConfig, Callback, register_agent
from rlpt.callbacks import run_callbacks
from rlpt.cluster import init_ray
from rlpt.errors import ConfigError, RlptError
from rlpt.utils import replace_dir

#: Name of rlpt's env creator in Ray's registry (`tune.register_env`).
RLLIB_ENV_NAME = "rlpt"
_LIVE_ENVS: dict[str, gym.Env] = {}  # env instances handed to learn(), for the local EnvRunner of this process
_ids = itertools.count()


def _require_ray():
    try:
        import ray  # noqa: F401
        import ray.rllib  # noqa: F401
    except ImportError as e:
        raise RlptError("RLlib agents need Ray RLlib: pip install 'rlpt[cluster]' (ray[rllib,tune]==2.60.*)") from e


# ----------------------------------------------------------------------------- envs
def make_rllib_env(env_config: dict[str, Any]) -> gym.Env:
    """RLlib env creator: an rlpt env from `env_config` (a dict or RLlib's EnvContext).

    Keys: `spec` (any `make_env` spec), `env_options` (make_env options), `reward` (a recipe's `reward:`
    section: wraps the env in a RewardWrapper), `seed` (each EnvRunner and vector slot gets its own offset),
    `data_root` (where reward models find data). `instance` instead names an env object handed to
    `RLlibAgent.learn` in this process (the local EnvRunner only).
    """
    from rlpt.envs import make_env

    cfg = dict(env_config)
    if "instance" in cfg:
        env = _LIVE_ENVS.get(cfg["instance"])
        if env is None:
            raise RlptError(f"RLlib env instance {cfg['instance']!r} is not in this process: env instances work "
                            "with num_env_runners=0 only; set the agent config's `env: {spec: ...}` for remote "
                            "EnvRunners")
        return env
    if not cfg.get("spec"):
        raise ConfigError(f"RLlib env config needs a 'spec' (an rlpt env spec); got keys {sorted(cfg)}")
    worker = int(getattr(env_config, "worker_index", 0) or 0)
    slot = int(getattr(env_config, "vector_index", 0) or 0)
    seed = int(cfg.get("seed", 0)) + 1000 * worker + slot
    env = make_env(cfg["spec"], seed=seed, **dict(cfg.get("env_options") or {}))
    if cfg.get("reward"):
        from rlpt.rewards.factory import wrap_with_reward

        run_dir = Path(cfg["run_dir"]) if cfg.get("run_dir") else None
        env, _ = wrap_with_reward(env, dict(cfg["reward"]), data_root=Path(cfg.get("data_root") or "data"),
                                  run_dir=run_dir, seed=seed, quiet=True)
    return env


def register_rlpt_env(name: str = RLLIB_ENV_NAME) -> str:
    """Register `make_rllib_env` under `name` for RLlib (`PPOConfig().environment(name, env_config={...})`)."""
    _require_ray()
    from ray.tune.registry import register_env

    register_env(name, make_rllib_env)
    return name


def rllib_env_config(recipe, data_root: str | os.PathLike = "data") -> dict[str, Any]:
    """The `env_config` that makes a recipe's env (with its `reward:` wrapper) in any RLlib EnvRunner."""
    return {"spec": recipe.env, "env_options": dict(recipe.env_options or {}), "reward": recipe.reward,
            "seed": int(recipe.seed), "data_root": str(Path(data_root).resolve())}


# ----------------------------------------------------------------------------- configs
@dataclasses.dataclass
class RLlibConfig(AgentConfig):
    """Settings shared by the RLlib agents. `rllib` passes anything else straight to AlgorithmConfig's
    methods: `{"training": {"use_kl_loss": true}, "env_runners": {"batch_mode": "complete_episodes"}}`."""

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    num_env_runners: int = 0  # 0: sample in the training process (the env given to learn)
    num_envs_per_env_runner: int = 1
    num_cpus_per_env_runner: int = 1
    num_learners: int = 0  # 0: update in the training process
    num_gpus_per_learner: float = 0
    env: dict[str, Any] | None = None  # {spec, env_options, reward, seed}: needed for remote EnvRunners
    rllib: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    log_interval: int = 1  # algo.train() iterations between callback calls


@dataclasses.dataclass
class RLlibPPOConfig(RLlibConfig):
    """RLlib PPO; defaults follow SB3/CleanRL continuous-control PPO (no KL penalty, separate value net)."""

    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_param: float = 0.2
    vf_clip_param: float = 10.0
    vf_loss_coeff: float = 0.5
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    grad_clip: float | None = 0.5
    train_batch_size: int = 2048  # env steps per iteration (train_batch_size_per_learner)
    minibatch_size: int = 64
    num_epochs: int = 10
    vf_share_layers: bool = False


@dataclasses.dataclass
class RLlibSACConfig(RLlibConfig):
    """RLlib SAC (twin Q, automatic entropy tuning)."""

    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    initial_alpha: float = 1.0
    target_entropy: str | float = "auto"
    n_step: int = 1
    twin_q: bool = True
    train_batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 1000  # env steps sampled before the first update
    updates_per_step: float = 1.0  # gradient updates per sampled env step (RLlib's training_intensity / batch)
    rollout_fragment_length: int = 1  # env steps sampled between update rounds (larger: less Python overhead)
    steps_per_iteration: int = 1000  # env steps per algo.train() call
    save_replay_buffer: bool = True  # in checkpoints, so a resumed run keeps its data


# ----------------------------------------------------------------------------- agents
class RLlibAgent(Agent):
    """Common adapter: subclasses name the RLlib algorithm config. The RLlib `Algorithm` is built on the first
    `learn` call; until then (and for eval) the agent acts with its own copy of the RLModule."""

    config: RLlibPPOConfig | RLlibSACConfig
    trains_online = True

    def __init__(self, config, observation_space: gym.Space, action_space: gym.Space, device: str = "auto"):
        super().__init__(config, observation_space, action_space, device)
        _require_ray()
        self.device = torch.device("cpu")  # the acting copy; learners place themselves (num_gpus_per_learner)
        self.algo_config = self._algo_config()
        from ray.rllib.core import DEFAULT_MODULE_ID

        spec = self.algo_config.get_rl_module_spec(
            spaces={DEFAULT_MODULE_ID: (observation_space, action_space)}, inference_only=False)
        self.module = spec.build()
        self.module.eval()
        self.algo = None  # the RLlib Algorithm (built by learn)
        self.iterations = 0
        self._env: gym.Env | None = None
        self._env_key: str | None = None
        self._restore_from: Path | None = None

    # -------------------------------------------------------------- RLlib config
    def _base_config(self):
        raise NotImplementedError

    def _algo_config(self):
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        c = self.config
        cfg = self._base_config()
        cfg = (cfg.framework("torch")
               .environment(observation_space=self.observation_space, action_space=self.action_space)
               .env_runners(num_env_runners=c.num_env_runners, num_envs_per_env_runner=c.num_envs_per_env_runner,
                            num_cpus_per_env_runner=c.num_cpus_per_env_runner)
               .learners(num_learners=c.num_learners, num_gpus_per_learner=c.num_gpus_per_learner)
               .debugging(seed=c.seed, log_level="ERROR"))
        model = {"fcnet_hiddens": list(c.hidden), "fcnet_activation": c.activation}
        if isinstance(c, RLlibPPOConfig):
            model["vf_share_layers"] = c.vf_share_layers
        cfg = cfg.rl_module(model_config=DefaultModelConfig(**model))
        for method, kwargs in (c.rllib or {}).items():
            fn = getattr(cfg, method, None)
            if not callable(fn) or method.startswith("_") or not isinstance(kwargs, dict):
                raise ConfigError(f"{type(c).__name__}.rllib: {method!r} must name an AlgorithmConfig method "
                                  f"(training, env_runners, learners, ...) mapped to its keyword arguments")
            try:
                cfg = fn(**kwargs)
            except TypeError as e:
                raise ConfigError(f"{type(c).__name__}.rllib.{method}: {e}") from None
        return cfg

    # -------------------------------------------------------------- acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        from ray.rllib.core.columns import Columns
        from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

        batch = {Columns.OBS: obs.float()}
        if deterministic:
            out = self.module.forward_inference(batch)
            dist = self.module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            action = dist.to_deterministic().sample()
        else:
            out = self.module.forward_exploration(batch)
            dist = self.module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            action = dist.sample()
        a = action.detach().cpu().numpy()
        # what RLlib's NormalizeAndClipActions connector does before an action reaches the env
        if self.algo_config.normalize_actions:
            a = np.stack([unsquash_action(x, self.action_space) for x in a])
        elif self.algo_config.clip_actions:
            a = np.stack([clip_action(x, self.action_space) for x in a])
        a = np.clip(a, self.action_space.low, self.action_space.high)
        return torch.as_tensor(a, dtype=torch.float32)

    # -------------------------------------------------------------- training
    def _env_config_for(self, env: gym.Env) -> dict[str, Any]:
        c = self.config
        if c.env is not None:
            return {"seed": c.seed, **c.env}
        if c.num_env_runners > 0 or c.num_envs_per_env_runner > 1:
            raise ConfigError(f"{self.agent_name}: num_env_runners={c.num_env_runners}, num_envs_per_env_runner="
                              f"{c.num_envs_per_env_runner} build envs in RLlib's EnvRunners: set config.env "
                              "to {spec: <env spec>, env_options: {...}, reward: {...}} (the recipe's env, "
                              "env_options and reward sections)")
        if self._env_key is None:
            self._env_key = f"{os.getpid()}-{next(_ids)}"
        _LIVE_ENVS[self._env_key] = env
        return {"instance": self._env_key}

    def _build_algo(self, env: gym.Env) -> None:
        init_ray(num_cpus=1 + self.config.num_env_runners * self.config.num_cpus_per_env_runner)
        register_rlpt_env()
        cfg = self.algo_config.copy(copy_frozen=False).environment(RLLIB_ENV_NAME,
                                                                   env_config=self._env_config_for(env))
        self.algo = cfg.build_algo()
        if self._restore_from is not None and self._restore_from.exists():
            self.algo.restore_from_path(str(self._restore_from.resolve()))
            buf = self._restore_from / "replay_buffer.pkl"
            if buf.exists() and getattr(self.algo, "local_replay_buffer", None) is not None:
                with open(buf, "rb") as f:
                    self.algo.local_replay_buffer.set_state(pickle.load(f))
        elif self.step or self.online_steps or self._restore_from is not None:
            # weights from a checkpoint without RLlib's training state: start RLlib from them
            self._push_weights()
        else:
            self._pull_weights()
        self._restore_from = None
        self._env = env

    def _module_state_key(self) -> tuple[str, str, str]:
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

        return COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    def _pull_weights(self) -> None:
        """Copy the learner's RLModule weights into the acting copy."""
        a, b, m = self._module_state_key()
        state = self.algo.learner_group.get_state(components=f"{a}/{b}/{m}")
        self.module.set_state(state[a][b][m])

    def _push_weights(self) -> None:
        a, b, m = self._module_state_key()
        self.algo.learner_group.set_state({a: {b: {m: self.module.get_state()}}})
        self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group,
                                                inference_only=True)

    def learn(self, env: gym.Env, total_timesteps: int, offline=None, mix_ratio: float | None = 0.5,
              callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
        if offline is not None:
            raise ConfigError(f"{type(self).__name__} trains online only; offline data cannot be mixed in "
                              "(use IQL or Cal-QL for offline-to-online)")
        if self.algo is None:
            self._build_algo(env)
        elif env is not self._env:  # a new env object for the local EnvRunner
            if self.config.env is None:
                _LIVE_ENVS[self._env_key] = env
                self.algo.env_runner.make_env()
            self._env = env
        target = self.online_steps + int(total_timesteps)
        metrics: dict[str, Any] = {}
        while self.online_steps < target:
            result = self.algo.train()
            self.iterations += 1
            sampled = result.get("env_runners", {}).get("num_env_steps_sampled", 0)
            self.online_steps += int(_scalar(sampled) or 0)
            if not sampled:
                raise RlptError(f"{self.agent_name}: an RLlib iteration sampled no env steps")
            metrics = _metrics(result)
            if self.iterations % max(1, self.config.log_interval) == 0:
                if not run_callbacks(callbacks, self.online_steps, metrics):
                    break
        self._pull_weights()
        return metrics

    def close(self) -> None:
        """Stop the RLlib Algorithm (its EnvRunners and learners); the agent can still act and save."""
        if self.algo is not None:
            self.algo.stop()
            self.algo = None
        if self._env_key is not None:
            _LIVE_ENVS.pop(self._env_key, None)

    # -------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"rl_module": self.module}

    def extra_state(self) -> dict[str, Any]:
        return {"iterations": int(self.iterations)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iterations = int(state.get("iterations", 0))

    def save(self, path: str | os.PathLike) -> Path:
        """rlpt's checkpoint plus RLlib's (`rllib/`), written beside `path` and swapped into place."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            super().save(staging)
            rllib_dir = staging / "rllib"
            if self.algo is not None:
                self.algo.save_to_path(str(rllib_dir.resolve()))
                buf = getattr(self.algo, "local_replay_buffer", None)
                if buf is not None and getattr(self.config, "save_replay_buffer", False):
                    with open(rllib_dir / "replay_buffer.pkl", "wb") as f:
                        pickle.dump(buf.get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
            elif self._restore_from is not None and self._restore_from.exists():
                shutil.copytree(self._restore_from, rllib_dir)  # loaded, not trained since: keep its state
            replace_dir(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path

    def load_state(self, path: str | os.PathLike, training_state: bool = True) -> None:
        super().load_state(path, training_state=training_state)
        rllib_dir = Path(path) / "rllib"
        self._restore_from = rllib_dir if training_state and rllib_dir.exists() else None


@register_agent("rllib_ppo")
class RLlibPPO(RLlibAgent):
    config_class = RLlibPPOConfig
    config: RLlibPPOConfig

    def _base_config(self):
        from ray.rllib.algorithms.ppo import PPOConfig

        c = self.config
        return (PPOConfig()
                .training(lr=c.lr, gamma=c.gamma, lambda_=c.gae_lambda, clip_param=c.clip_param,
                          vf_clip_param=c.vf_clip_param, vf_loss_coeff=c.vf_loss_coeff,
                          entropy_coeff=c.entropy_coeff, use_kl_loss=c.use_kl_loss, grad_clip=c.grad_clip,
                          train_batch_size_per_learner=c.train_batch_size, minibatch_size=c.minibatch_size,
                          num_epochs=c.num_epochs)
                .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0))


@register_agent("rllib_sac")
class RLlibSAC(RLlibAgent):
    config_class = RLlibSACConfig
    config: RLlibSACConfig

    def _base_config(self):
        from ray.rllib.algorithms.sac import SACConfig

        c = self.config
        return (SACConfig()
                .training(lr=None, actor_lr=c.actor_lr, critic_lr=c.critic_lr, alpha_lr=c.alpha_lr, gamma=c.gamma,
                          tau=c.tau, initial_alpha=c.initial_alpha, target_entropy=c.target_entropy,
                          n_step=c.n_step, twin_q=c.twin_q, train_batch_size_per_learner=c.train_batch_size,
                          num_steps_sampled_before_learning_starts=c.learning_starts,
                          training_intensity=c.updates_per_step * c.train_batch_size,
                          replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": c.buffer_size})
                .env_runners(rollout_fragment_length=c.rollout_fragment_length)
                .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=c.steps_per_iteration))


# ----------------------------------------------------------------------------- metrics
def _scalar(v: Any) -> float | None:
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _metrics(result: dict[str, Any]) -> dict[str, Any]:
    """rlpt-style metrics from an `algo.train()` result: online/* from the EnvRunners, train/* from the learner."""
    out: dict[str, Any] = {}
    runners = result.get("env_runners", {})
    for src, dst in (("episode_return_mean", "online/episode_return"), ("episode_len_mean", "online/episode_length")):
        if (v := _scalar(runners.get(src))) is not None:
            out[dst] = v
    from ray.rllib.core import DEFAULT_MODULE_ID

    for k, v in result.get("learners", {}).get(DEFAULT_MODULE_ID, {}).items():
        if k.startswith(("num_", "weights_seq_no", "diff_num_")) or isinstance(v, dict):
            continue
        if (f := _scalar(v)) is not None:
            out[f"train/{k}"] = f
    if (t := _scalar(result.get("time_this_iter_s"))) is not None:
        out["time/iteration_s"] = t
    return out
