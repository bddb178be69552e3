"""Build reward models and their wrappers from recipe dicts (the `reward:` section of a recipe).

    reward:
      model: {type: classifier, path: auto, task: push}   # or http_vlm, hf_clip, hf_vlm, kagi, ground_truth
      mode: replace            # RewardWrapper keys: mode, weight, scale, offset, fallback, terminate_on_success,
      scale: 1.0               #   camera, image_size, instruction
      offset: -1.0             # success 1/0 -> 0/-1 (RoboFuME's Cal-QL rewards)
      terminate_on_success: true
      offline: success         # the dataset's rewards: keep | success (its ground-truth labels) | model (relabel)

Backends that need optional packages (transformers) are imported only when a recipe names them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlpt.data.dataset import Dataset
from rlpt.errors import ConfigError
from rlpt.rewards.base import RewardModel, RewardOutput, RewardQuery
from rlpt.rewards.wrapper import RewardWrapper, relabel

WRAPPER_KEYS = ("mode", "weight", "scale", "offset", "env_scale", "env_offset", "fallback", "terminate_on_success",
                "camera", "image_size", "instruction")
OFFLINE_MODES = ("keep", "success", "model")


@dataclasses.dataclass
class BuildContext:
    """What a builder may use: the (unwrapped) training env, where datasets/classifiers live, the run folder."""

    env: gym.Env | None = None
    data_root: Path = Path("data")
    run_dir: Path | None = None
    seed: int = 0
    quiet: bool | None = None


Builder = Callable[[dict[str, Any], BuildContext], RewardModel]
BUILDERS: dict[str, Builder] = {}


def register_reward_builder(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        BUILDERS[name] = fn
        return fn

    return deco


def build_reward_model(spec: dict[str, Any], ctx: BuildContext | None = None) -> RewardModel:
    """A reward model from `{"type": ..., **options}`; unknown types and options give a ConfigError."""
    ctx = ctx or BuildContext()
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"reward.model must be a mapping with a 'type' (one of {sorted(BUILDERS)}); got {spec!r}")
    kind = spec["type"]
    if kind not in BUILDERS:
        raise ConfigError(f"reward.model.type {kind!r} is unknown; valid types: {sorted(BUILDERS)}")
    options = {k: v for k, v in spec.items() if k != "type"}
    try:
        return BUILDERS[kind](options, ctx)
    except TypeError as e:  # unexpected keyword arguments name the bad option
        raise ConfigError(f"reward.model ({kind}): {e}") from None


def wrap_with_reward(env: gym.Env, reward: dict[str, Any], *, data_root: Path = Path("data"),
                     run_dir: Path | None = None, seed: int = 0, quiet: bool | None = None
                     ) -> tuple[RewardWrapper, RewardModel]:
    """`RewardWrapper(env, build_reward_model(reward["model"]), **wrapper keys)` from a recipe's `reward:`."""
    unknown = sorted(set(reward) - {"model", "offline", *WRAPPER_KEYS})
    if unknown:
        raise ConfigError(f"reward: unknown key(s) {unknown}; valid keys: {['model', 'offline', *WRAPPER_KEYS]}")
    if "model" not in reward:
        raise ConfigError("reward: the 'model' key is required (e.g. {type: classifier, path: auto})")
    model = build_reward_model(reward["model"], BuildContext(env, Path(data_root), run_dir, seed, quiet))
    kwargs = {k: reward[k] for k in WRAPPER_KEYS if k in reward}
    return RewardWrapper(env, model, **kwargs), model


def cut_at_first_success(dataset: Dataset, success: np.ndarray) -> Dataset:
    """Keep each episode up to and including its first successful row, which becomes a terminal (the
    goal-reaching convention of RoboFuME's -1/0 rewards); episodes without success are kept whole."""
    keep = np.ones(len(dataset), bool)
    terminals = dataset.terminals.copy()
    b = dataset.episode_bounds()
    for s, e in zip(b.starts, b.ends, strict=True):
        hits = np.flatnonzero(success[s:e])
        if len(hits):
            first = s + int(hits[0])
            terminals[first] = True
            keep[first + 1:e] = False
    out = dataclasses.replace(dataset, terminals=terminals)
    return out.select(np.flatnonzero(keep))


def offline_rewards(dataset: Dataset, reward: dict[str, Any], model: RewardModel | None,
                    instruction: str = "") -> Dataset:
    """The offline dataset's rewards for a recipe's `reward:` section (`offline`: keep | success | model).
    `instruction` (the task in words) is used when the section names none."""
    how = reward.get("offline", "keep")
    if how not in OFFLINE_MODES:
        raise ConfigError(f"reward.offline must be one of {list(OFFLINE_MODES)}; got {how!r}")
    scale, offset = float(reward.get("scale", 1.0)), float(reward.get("offset", 0.0))
    if how == "keep":
        return dataset
    if how == "success":
        if "success" not in dataset.infos:
            raise ConfigError(f"reward.offline=success needs per-row success labels (infos/success) in "
                              f"{dataset.source}; tabletop datasets made by `rlpt data make` have them")
        success = np.asarray(dataset.infos["success"], bool)
        cut = cut_at_first_success(dataset, success) if reward.get("terminate_on_success") else dataset
        s = np.asarray(cut.infos["success"], bool)
        # the labels play the env's sparse reward: env_scale/env_offset first, then scale/offset (as fallbacks)
        env_r = float(reward.get("env_scale", 1.0)) * s.astype(np.float32) + float(reward.get("env_offset", 0.0))
        rewards = (scale * env_r + offset).astype(np.float32)
        return dataclasses.replace(cut, rewards=rewards, infos={**cut.infos, "reward_original": cut.rewards},
                                   metadata={**cut.metadata, "relabel": {"offline": "success", "scale": scale,
                                                                          "offset": offset}})
    if model is None:
        raise ConfigError("reward.offline=model needs a reward model")
    terminate = bool(reward.get("terminate_on_success", False))
    out = relabel(dataset, model.for_dataset(), instruction=str(reward.get("instruction", instruction)),
                  mode=reward.get("mode", "replace"), env_scale=float(reward.get("env_scale", 1.0)),
                  env_offset=float(reward.get("env_offset", 0.0)),
                  weight=float(reward.get("weight", 1.0)), scale=scale, offset=offset)
    if terminate and "reward_model_success" in out.infos:  # each episode ends at its first success, as online
        out = cut_at_first_success(out, np.asarray(out.infos["reward_model_success"], bool))
    return out


# ------------------------------------------------------------------------------------------ builders
class EnvSuccessReward(RewardModel):
    """The env's own ground-truth success as a reward model (1/0): the reference run against which learned
    rewards are compared. Online only (it reads the live simulator, not the query)."""

    needs = ("states",)

    def __init__(self, env: gym.Env) -> None:
        base = env.unwrapped
        if not hasattr(base, "task") or not hasattr(base.task, "success"):
            raise ConfigError(f"reward.model.type=ground_truth needs an env with a success predicate (rlpt "
                              f"tabletop); got {type(base).__name__}")
        self.base = base

    def score(self, query: RewardQuery) -> RewardOutput:
        if len(query) != 1:
            raise ConfigError("ground_truth rewards read the live simulator: score one step at a time (online only)")
        s = bool(self.base.task.success(self.base))
        return RewardOutput(np.array([float(s)]), np.array([True]), success=np.array([s]), prob=np.array([float(s)]))


@register_reward_builder("ground_truth")
def _ground_truth(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    if options:
        raise ConfigError(f"reward.model (ground_truth) takes no options; got {sorted(options)}")
    if ctx.env is None:
        raise ConfigError("reward.model (ground_truth) needs the training env")
    return EnvSuccessReward(ctx.env)


@register_reward_builder("http_vlm")
def _http_vlm(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    from rlpt.rewards.http_vlm import OpenAIChatClient, VLMSuccessReward

    client_keys = ("base_url", "model", "api_key_env", "timeout", "max_retries", "backoff", "max_backoff",
                   "max_retry_after", "cache_dir", "headers", "max_response_bytes")
    check = options.pop("check_auth", True)
    client = OpenAIChatClient(**{k: options.pop(k) for k in client_keys if k in options})
    if check:
        client.check_auth()  # a wrong key stops the run here, not after an epoch of fallback rewards
    return VLMSuccessReward(client, **options)


@register_reward_builder("hf_clip")
def _hf_clip(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    from rlpt.rewards.hf import CLIPSimilarityReward

    return CLIPSimilarityReward(**options)


@register_reward_builder("hf_vlm")
def _hf_vlm(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    from rlpt.rewards.hf import VLMYesNoReward

    return VLMYesNoReward(**options)


@register_reward_builder("kagi")
def _kagi(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    """KAGI: `{type: kagi, proposer: {type: oracle, noise, wrong_contact} | {type: vlm, base_url, model, ...},
    potential: false, beta, gamma, delta, refresh: episode|task, success: ground_truth | {<reward model>} | null}`.
    The keypoint plan comes from the proposer at the start of each episode, looking at the training env."""
    from rlpt.rewards.kagi import (
        KeypointProgressReward,
        OracleKeypointProposer,
        SuccessOverrideReward,
        VLMKeypointProposer,
        tabletop_block_success,
    )

    if ctx.env is None:
        raise ConfigError("reward.model (kagi) needs the training env (the proposer looks at its cameras)")
    prop = dict(options.pop("proposer", {"type": "oracle"}))
    kind = prop.pop("type", "oracle")
    if kind == "oracle":
        proposer = OracleKeypointProposer(rng=prop.pop("seed", ctx.seed), **prop)
    elif kind == "vlm":
        from rlpt.rewards.http_vlm import OpenAIChatClient

        client_keys = ("base_url", "model", "api_key_env", "timeout", "max_retries", "cache_dir", "headers",
                       "max_response_bytes")
        check = prop.pop("check_auth", True)
        client = OpenAIChatClient(**{k: prop.pop(k) for k in client_keys if k in prop})
        if check:
            client.check_auth()
        if ctx.run_dir is not None:
            prop.setdefault("output_dir", str(Path(ctx.run_dir) / "keypoints"))
        proposer = VLMKeypointProposer(client, **prop)
    else:
        raise ConfigError(f"reward.model.proposer.type must be 'oracle' or 'vlm'; got {kind!r}")
    success = options.pop("success", "ground_truth")
    success_reward = float(options.pop("success_reward", 0.0))
    dense = KeypointProgressReward(proposer=proposer, context=ctx.env.unwrapped, **options)
    if success is None:
        return dense
    if success == "ground_truth":
        task = getattr(getattr(ctx.env.unwrapped, "task", None), "name", "")
        return SuccessOverrideReward(dense, lambda s: tabletop_block_success(s, require_release="pick" in task),
                                     success_reward=success_reward)
    return SuccessOverrideReward(dense, build_reward_model(dict(success), ctx), success_reward=success_reward)


@register_reward_builder("classifier")
def _classifier(options: dict[str, Any], ctx: BuildContext) -> RewardModel:
    """rlpt's success classifier: `{type: classifier, path: DIR}` loads a folder written by
    `rlpt reward train-classifier`; `path: auto` trains one on first use (task, camera, image_size, episodes,
    failures, steps, reverse as that command) and caches it under `<data_root>/classifiers/`."""
    from rlpt.rewards.classifier import SuccessClassifierReward, train_success_classifier

    path = options.pop("path", "auto")
    device = options.pop("device", "auto")
    if path != "auto":
        if options:
            raise ConfigError(f"reward.model (classifier): with a path, only 'device' may be given; got "
                              f"{sorted(options)}")
        return SuccessClassifierReward.load(path, device=device)
    task = options.pop("task", None)
    if task is None and ctx.env is not None:
        task = getattr(getattr(ctx.env.unwrapped, "task", None), "name", None)
    if task is None:
        raise ConfigError("reward.model (classifier, path: auto) needs 'task' (a tabletop task)")
    train_kw = {"episodes": 40, "failures": 40, "steps": 1000, "camera": "front", "image_size": 64,
                "reverse": True, "seed": 0}
    unknown = sorted(set(options) - set(train_kw) - {"fp_target", "eval_episodes"})
    if unknown:
        raise ConfigError(f"reward.model (classifier): unknown option(s) {unknown}; valid: "
                          f"{sorted([*train_kw, 'path', 'device', 'task', 'fp_target', 'eval_episodes'])}")
    train_kw.update(options)
    tag = "-".join(f"{k}{train_kw[k]}" for k in ("camera", "image_size", "episodes", "failures", "steps", "seed"))
    folder = Path(ctx.data_root) / "classifiers" / f"tabletop-{task}-{tag}{'-rev' if train_kw['reverse'] else ''}"
    if not (folder / "classifier.json").exists():
        print(f"training the success classifier for {task} -> {folder} (once; `rlpt reward train-classifier`)",
              flush=True)
        train_success_classifier(task, folder, device=device, quiet=ctx.quiet, **train_kw)
    return SuccessClassifierReward.load(folder, device=device)
