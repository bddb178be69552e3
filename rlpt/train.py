"""`rlpt train RECIPE [key=value ...] [--resume RUN]`: run any recipe into a run folder.

A recipe (YAML, `agents/<agent>/<task>.yaml`) names the agent, its config, the env, the dataset and
the offline/online budgets. Training runs in chunks of `eval_interval` steps; after each chunk the
agent is evaluated, metrics are logged and a checkpoint is written atomically, so a killed run
resumes from its last chunk with `--resume RUN_FOLDER`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlpt.config import apply_overrides, load_yaml, set_dotted, validate
from rlpt.errors import CheckpointError, ConfigError, RunError
from rlpt.runs import MetricsLogger, RunDir, progress  # at import: the first status line counts from rlpt's start
from rlpt.utils import repo_root, spearman

__all__ = ["Recipe", "apply_overrides", "find_recipe", "load_recipe", "set_dotted", "train"]


#: env_options that make the training env a vector env (`rlpt.envs.make_vec_env`) instead of one env.
VECTOR_OPTIONS = ("num_envs", "backend", "device", "vectorization")


@dataclass
class Recipe:
    """What `rlpt train` runs. `config` holds the agent config's fields."""

    agent: str
    env: str
    config: dict[str, Any] = field(default_factory=dict)
    dataset: str | list[str] | None = None  # dataset name(s) for `rlpt data make` or D4RL-layout file path(s)
    dataset_size: int | None = None  # when the dataset is made here
    offline_steps: int | Literal["auto"] = 0  # "auto": the agent's own offline schedule length
    online_steps: int = 0
    mix_ratio: float | None = 0.5
    seed: int = 0
    eval_interval: int = 5000  # offline gradient steps between evaluations/checkpoints
    online_eval_interval: int = 5000  # online env steps between evaluations/checkpoints
    eval_episodes: int = 5
    name: str = "recipe"
    source: str = ""  # where the hyperparameters come from (paper table, or "CPU preset")
    env_options: dict[str, Any] = field(default_factory=dict)
    ref_scores: list[float] | None = None  # [random, expert] returns for normalized scores when the dataset has none
    video_steps: int = 300  # length of the final policy's mp4 (0: no video)
    pretrained: str | None = None  # a pretraining checkpoint, passed to agents whose config has `pretrained`
    # A learned reward for online training (rlpt.rewards.factory): {"model": {"type": ..., ...}, wrapper keys
    # (mode, scale, offset, fallback, terminate_on_success, camera, image_size), "offline": how the dataset's
    # rewards are made: "keep" | "success" (ground-truth success labels of the demos) | "model" (relabel)}.
    # Evaluation always uses the env's own reward and ground-truth success.
    reward: dict[str, Any] | None = None
    # Reset-free online training (rlpt.envs.reset_free): {"hard_reset_every": 1000, "record": true}.
    reset_free: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Recipe:
        """Validate a recipe mapping (`rlpt.config.validate`: typed, unknown keys rejected); `where` names its
        file in errors."""
        return validate(cls, data, where)

    def agent_config_dict(self) -> dict[str, Any]:
        """The agent config's fields this recipe sets: `config` plus the recipe's `seed` and `pretrained`."""
        return {"seed": self.seed, **self.config,
                **({"pretrained": self.pretrained} if self.pretrained is not None else {})}

    def check_agent_config(self, where: str) -> None:
        """Validate `config` against the agent's config class now, so a wrong key or type fails before any
        dataset is made (errors name `where` and the key as `config.<field>`)."""
        from rlpt.agents.base import agent_class

        cls = agent_class(self.agent, source=f"{where}: agent")
        if self.pretrained is not None and not cls.takes_pretrained:
            raise ConfigError(f"{where}: pretrained={self.pretrained} was given but agent '{self.agent}' takes no "
                              "pretrained checkpoint")
        validate(cls.config_class, self.agent_config_dict(), where, prefix="config.")


def recipes_dir() -> Path:
    root = repo_root()
    if root is not None and (root / "agents").is_dir():
        return root / "agents"
    return Path(__file__).resolve().parent / "catalog" / "agents"


def find_recipe(name_or_path: str) -> Path:
    """A recipe path, or a catalog name like `unio4/hopper-medium-replay-cpu`."""
    p = Path(name_or_path)
    if p.exists():
        return p
    cand = recipes_dir() / (name_or_path if name_or_path.endswith(".yaml") else name_or_path + ".yaml")
    if cand.exists():
        return cand
    known = sorted(str(q.relative_to(recipes_dir()))[:-5] for q in recipes_dir().glob("*/*.yaml"))
    raise ConfigError(f"recipe '{name_or_path}' not found (neither a file nor in {recipes_dir()}); known: {known}")


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> Recipe:
    """Read a recipe (file or catalog name), apply `a.b=c` overrides and validate it (`Recipe.from_dict`); its
    agent config is validated by `train` before anything runs (`Recipe.check_agent_config`)."""
    path = find_recipe(name_or_path)
    data = load_yaml(path) or {}
    if isinstance(data, dict):
        data.setdefault("name", f"{path.parent.name}-{path.stem}")
    return Recipe.from_dict(apply_overrides(data, list(overrides), str(path)), str(path))


def _load_dataset(recipe: Recipe, data_root: Path, quiet: bool | None):
    from rlpt.collect.generate import is_stale, make_dataset, parse_name
    from rlpt.data import load_d4rl, save_d4rl

    if recipe.dataset is None:
        return None
    if isinstance(recipe.dataset, list | tuple):  # several datasets (e.g. forward and reset demos) as one
        from rlpt.data.dataset import Dataset

        parts = [_load_dataset(dataclasses.replace(recipe, dataset=d), data_root, quiet) for d in recipe.dataset]
        return Dataset.concatenate(parts, metadata={**parts[0].metadata, "source": " + ".join(
            p.source for p in parts)})
    path = Path(recipe.dataset)
    if path.suffix in (".hdf5", ".h5") or path.exists():
        return load_d4rl(path)
    parse_name(recipe.dataset)  # clear error for unknown names
    suffix = f"-n{recipe.dataset_size}" if recipe.dataset_size else ""
    path = data_root / f"{recipe.dataset}{suffix}.hdf5"
    if path.exists() and (why := is_stale(load_d4rl(path, mmap=True))):
        print(f"regenerating {path}: {why}", flush=True)
        path.unlink()
    if not path.exists():
        print(f"making dataset {recipe.dataset} -> {path}", flush=True)
        save_d4rl(make_dataset(recipe.dataset, size=recipe.dataset_size, seed=0, quiet=quiet), path)
    return load_d4rl(path)


def load_checkpoint_for_resume(run: Any) -> tuple[Path | None, Any]:
    """The newest checkpoint of the run folder `run` (a `RunDir`) that loads, and its agent; (None, None) when
    the run holds none. A damaged checkpoint (`CheckpointError`: truncated or changed file, NaN weights) is
    reported on stderr and the previous one is tried; raises CheckpointError when none is intact."""
    from rlpt.agents.base import Agent

    candidates = run.checkpoints_newest_first()
    damaged = []
    for ckpt in candidates:
        try:
            return ckpt, Agent.load(ckpt)
        except CheckpointError as e:
            damaged.append(f"{ckpt.name}: {e}")
            print(f"rlpt: warning: checkpoint {ckpt.name} is damaged and is skipped: {e}", file=sys.stderr)
    if damaged:
        raise CheckpointError(f"{run.path}: no intact checkpoint to resume from; every one is damaged:\n  "
                              + "\n  ".join(damaged))
    return None, None


def train(recipe: Recipe, *, out_root: Path = Path("runs"), data_root: Path = Path("data"),
          resume: str | Path | None = None, quiet: bool | None = None,
          on_eval: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run a recipe end to end (offline phase, then online phase) and return its summary."""
    import gymnasium as gym
    import torch

    import rlpt.gfn  # noqa: F401  (registers the GFlowNet env ids rlpt/HyperGrid-v0, rlpt/BitSeq-v0)
    from rlpt.agents.base import agent_class
    from rlpt.envs import make_env
    from rlpt.eval import evaluate, plot_learning_curve
    from rlpt.utils import set_seed

    agent_cls = agent_class(recipe.agent, source=recipe.name)
    if resume is None:  # wrong keys and types fail now, before a dataset is made or a run folder written
        recipe.check_agent_config(recipe.name)
    set_seed(recipe.seed)
    t_start = time.time()
    if resume is not None:
        run = RunDir.open(resume)
        saved = load_yaml(run.config_path)
        if saved.get("recipe") != dataclasses.asdict(recipe):
            recipe = Recipe.from_dict(saved["recipe"], str(run.config_path))
    else:
        run = RunDir.create(out_root, recipe.name, recipe.env, recipe.seed)

    dataset = _load_dataset(recipe, data_root, quiet)
    # env_options.num_envs / backend / device / vectorization make the training env a vector env (CPU or MJX);
    # evaluation always runs one CPU env with the other options
    env_options = {k: v for k, v in recipe.env_options.items() if k not in VECTOR_OPTIONS}
    vector = {k: v for k, v in recipe.env_options.items() if k in VECTOR_OPTIONS}
    if vector:
        from rlpt.envs import make_vec_env

        if recipe.reward is not None or recipe.reset_free is not None:
            raise ConfigError(f"{recipe.name}: env_options {sorted(vector)} (a vector env) cannot be combined with "
                              "reward or reset_free, which wrap one env")
        env = make_vec_env(recipe.env, int(vector.get("num_envs", 1)), backend=vector.get("backend", "gymnasium"),
                           device=vector.get("device", "auto"), seed=recipe.seed,
                           **({"vectorization": vector["vectorization"]} if "vectorization" in vector else {}),
                           **env_options)
    else:
        env = make_env(recipe.env, seed=recipe.seed, **env_options)
    obs_space = env.single_observation_space if vector else env.observation_space
    act_space = env.single_action_space if vector else env.action_space
    reward_model = None
    if recipe.reward is not None:
        from rlpt.rewards.factory import offline_rewards, wrap_with_reward

        env, reward_model = wrap_with_reward(env, recipe.reward, data_root=data_root, run_dir=run.path,
                                             seed=recipe.seed, quiet=quiet)
        if dataset is not None:
            dataset = offline_rewards(dataset, recipe.reward, reward_model, instruction=env.instruction)
    if recipe.reset_free is not None:
        from rlpt.data.record import EpisodeRecorder
        from rlpt.envs.reset_free import ResetFreeWrapper

        rf = dict(recipe.reset_free)
        record, save_every = rf.pop("record", True), rf.pop("save_every", 10)
        try:
            recorder = EpisodeRecorder(run.path / "online_data.hdf5", save_every) if record else None
            env = ResetFreeWrapper(env, **rf, recorder=recorder)
        except TypeError as e:
            raise ConfigError(f"{recipe.name}: bad reset_free options {recipe.reset_free}: {e}") from None
    eval_env_spec = recipe.env
    ref_scores = None
    if dataset is not None:
        dataset.check_spaces(obs_space, act_space)
        if "ref_min_score" in dataset.metadata and "ref_max_score" in dataset.metadata:
            ref_scores = (float(dataset.metadata["ref_min_score"]), float(dataset.metadata["ref_max_score"]))
    if recipe.ref_scores is not None:
        if len(recipe.ref_scores) != 2 or recipe.ref_scores[0] == recipe.ref_scores[1]:
            raise ConfigError(f"{recipe.name}: ref_scores must be [random_return, expert_return], got "
                              f"{recipe.ref_scores}")
        ref_scores = (float(recipe.ref_scores[0]), float(recipe.ref_scores[1]))

    ckpt, agent = load_checkpoint_for_resume(run) if resume is not None else (None, None)
    if ckpt is not None:
        print(f"resumed {run.path} from {ckpt.name} (offline step {agent.step}, online step {agent.online_steps})")
    else:
        if resume is not None:
            print(f"{run.path} holds no checkpoint yet; starting it from scratch")
        recipe.check_agent_config(recipe.name)  # a resumed run's saved recipe, when it has no checkpoint yet
        config = agent_cls.config_class.from_dict(recipe.agent_config_dict(), source=recipe.name)
        agent = config.create(obs_space, act_space)
    offline_total = recipe.offline_steps
    if offline_total == "auto":
        offline_total = agent.offline_total_steps
    offline_total = int(offline_total)
    if offline_total and dataset is None:
        raise ConfigError(f"{recipe.name}: offline_steps={offline_total} needs a dataset")
    if offline_total and not agent.trains_offline:
        raise ConfigError(f"{recipe.name}: agent '{recipe.agent}' does not train offline; set offline_steps=0")
    if recipe.online_steps and not agent.trains_online:
        raise ConfigError(f"{recipe.name}: agent '{recipe.agent}' does not train online; set online_steps=0")
    run.write_config({"recipe": dataclasses.asdict(recipe), "agent_config": agent.config.to_dict(),
                      "env": recipe.env, "ref_scores": list(ref_scores) if ref_scores else None,
                      "offline_total_steps": offline_total, "device": str(agent.device),
                      "reward_model": reward_model.describe() if reward_model is not None else None,
                      "torch_threads": torch.get_num_threads()})
    def global_step() -> int:
        # offline updates, then online env steps (some agents also count online updates in `agent.step`)
        return offline_total + agent.online_steps if agent.online_steps else agent.step

    logger = MetricsLogger(run, resume_from_step=global_step() if ckpt is not None else None)

    def do_eval(phase: str) -> dict[str, float]:
        res = evaluate(agent, eval_env_spec, recipe.eval_episodes, seed=10_000 + recipe.seed,
                       ref_scores=ref_scores, env_options=env_options)
        m = {**res.metrics(), "phase": phase}
        if on_eval is not None:
            on_eval(m)
        return m

    def checkpoint() -> None:
        path = agent.save(run.checkpoint_dir(global_step()))
        run.mark_latest(path)

    def env_metrics() -> dict[str, float]:
        """Reward-model fallbacks and reset-free counters of the training env, when it has them."""
        out: dict[str, float] = {}
        for name in ("reward_metrics", "stats"):
            e = env
            while e is not None:
                fn = getattr(type(e), name, None)
                if fn is not None and isinstance(e, gym.Wrapper):
                    out.update(fn(e))
                    break
                e = getattr(e, "env", None)
        return out

    evals: dict[str, list[dict]] = {"offline": [], "online": []}
    fit_kwargs: dict[str, Any] = {}
    if agent.scores_with_env:  # agents that report/select with an env
        fit_kwargs["eval_env"] = make_env(eval_env_spec, seed=recipe.seed + 1, **env_options)
    stop = {"flag": False}

    # ---------------------------------------------------------------- offline phase
    if agent.step < offline_total:
        with progress(total=offline_total, initial=agent.step, desc=f"{recipe.agent} offline", quiet=quiet) as bar:
            def offline_cb(step: int, metrics: dict) -> bool:
                logger.log(step, metrics)
                bar.n = min(step, offline_total)
                bar.refresh()
                return not stop["flag"]

            while agent.step < offline_total:
                chunk = min(recipe.eval_interval, offline_total - agent.step)
                agent.fit(dataset, n_steps=chunk, callbacks=[offline_cb], **fit_kwargs)
                m = do_eval("offline")
                logger.log(agent.step, m)
                evals["offline"].append({"step": agent.step, **m})
                bar.set_postfix(ret=f"{m['eval/return']:.0f}")
                checkpoint()
    offline_eval = do_eval("offline") if offline_total and not evals["offline"] else None
    if offline_eval:
        evals["offline"].append({"step": agent.step, **offline_eval})

    # ---------------------------------------------------------------- online phase
    if agent.online_steps < recipe.online_steps:
        with progress(total=recipe.online_steps, initial=agent.online_steps, desc=f"{recipe.agent} online",
                      quiet=quiet) as bar:
            def online_cb(step: int, metrics: dict) -> bool:
                logger.log(offline_total + step, {**metrics, **env_metrics(), "online/step": step})
                bar.n = min(step, recipe.online_steps)
                bar.refresh()
                return True

            first = True
            while agent.online_steps < recipe.online_steps:
                chunk = min(recipe.online_eval_interval, recipe.online_steps - agent.online_steps)
                if first and agent.online_steps == 0 and offline_total:
                    # an evaluation right at the switch, before any online update
                    m = do_eval("online")
                    logger.log(offline_total, {**m, "online/step": 0})
                    evals["online"].append({"online_step": 0, **m})
                first = False
                agent.learn(env, total_timesteps=chunk, offline=dataset, mix_ratio=recipe.mix_ratio,
                            callbacks=[online_cb])
                m = do_eval("online")
                logger.log(offline_total + agent.online_steps,
                           {**m, **env_metrics(), "online/step": agent.online_steps})
                evals["online"].append({"online_step": agent.online_steps, **m})
                checkpoint()

    # ---------------------------------------------------------------- report
    # the video, plots and summary take a while on a busy CPU: a log still gets its status line every interval
    with progress(desc=f"{recipe.agent} report (video, plots, summary)", quiet=quiet):
        final = agent.save(run.path / "final")
        video = None
        if recipe.video_steps > 0:
            try:
                video = evaluate(agent, eval_env_spec, 1, seed=20_000 + recipe.seed, ref_scores=ref_scores,
                                 video_path=run.videos / "final.mp4",
                                 env_options={**env_options, "render_mode": "rgb_array",
                                              "time_limit": recipe.video_steps}).video
            except Exception as e:  # a video is a report extra: never lose a finished run over it
                video = f"not written: {type(e).__name__}: {e}"
                print(f"warning: final video {video}")
        plot = None
        try:
            plot = str(plot_learning_curve(run.path, title=f"{recipe.name} (seed {recipe.seed})"))
        except ValueError:
            pass
        success_plot = None
        if any("eval/success_rate" in e for phase in evals.values() for e in phase):  # tasks with a success predicate
            success_plot = str(plot_learning_curve(run.path, run.path / "plots" / "success_rate.png",
                                                   keys=("eval/success_rate",),
                                                   title=f"{recipe.name} (seed {recipe.seed}): success rate"))
        logger.close()
        summary = summarize(recipe, agent, evals, ref_scores, dataset)
        story_plot = None
        if summary.get("ope", {}).get("bc_members"):
            from rlpt.eval.plots import plot_offline_to_online

            story_plot = str(plot_offline_to_online(summary, run.plots / "offline_to_online.png",
                                                    title=f"{recipe.name} (seed {recipe.seed})"))
        summary.update(run=str(run.path), final_checkpoint=str(final), video=video, plot=plot,
                       success_plot=success_plot, story_plot=story_plot, seconds=round(time.time() - t_start, 1))
        run.write_summary(summary)
    env.close()
    return summary


def summarize(recipe: Recipe, agent, evals: dict[str, list[dict]], ref_scores, dataset=None) -> dict[str, Any]:
    def score(m: dict | None) -> float | None:
        if m is None:
            return None
        return m.get("eval/normalized_score", m.get("eval/return"))

    def norm(ret: float) -> float:
        return 100.0 * (ret - ref_scores[0]) / (ref_scores[1] - ref_scores[0]) if ref_scores else ret

    off = evals["offline"][-1] if evals["offline"] else None
    on = evals["online"][-1] if evals["online"] else None
    out: dict[str, Any] = {
        "recipe": recipe.name, "agent": recipe.agent, "env": recipe.env, "seed": recipe.seed,
        "score_metric": "eval/normalized_score" if ref_scores else "eval/return", "ref_scores": ref_scores,
        "offline_score": score(off), "offline_return": off["eval/return"] if off else None,
        "online_score": score(on), "online_return": on["eval/return"] if on else None,
        "offline_steps": agent.step, "online_steps": agent.online_steps,
        "evaluations": evals,
    }
    if dataset is not None and len(rets := dataset.episode_returns()):
        out["dataset_score"] = norm(float(np.mean(rets)))  # the data's average episode, on the score scale
    if (off or on or {}).get("eval/success_rate") is not None:  # tasks with a success predicate
        out["offline_success_rate"] = off.get("eval/success_rate") if off else None
        out["online_success_rate"] = on.get("eval/success_rate") if on else None
    # the first evaluation after online training began (the one at the switch shows the offline policy)
    first_online = next((e for e in evals["online"] if e.get("online_step", 0) > 0), None)
    if first_online is not None and off is not None:
        out["first_online_score"] = score(first_online)
        out["first_online_step"] = first_online["online_step"]
    history = agent.ope_history if agent.reports_ope else None
    if history:
        out["ope"] = ope_report(history, norm)
        if agent.ope_noise_sd:
            out["ope"]["noise_sd"] = agent.ope_noise_sd
    out["story"] = story_line(out)
    return out


def ope_report(history: list[list[float]], norm: Callable[[float], float] = float) -> dict[str, Any]:
    """What offline improvement did, from `history` rows `[step, member, ope_score, accepted, true_return]`
    (true_return NaN when not measured; `norm` maps returns to the score scale):
    - the Spearman correlation between OPE scores and true returns over the iterates that have both;
    - `bc_members`: each member's true return when first scored (its BC policy);
    - `iterates`: every scored iterate as [step, member, true_return];
    - `accepted`: every accepted iterate as [step, member, ope_score, true_return], and the share of acceptances
      (after the first per member) whose true return is >= the reference it replaced.
    """
    rows = [h for h in history if len(h) >= 5]
    pairs = [(h[2], h[4]) for h in rows if np.isfinite(h[2]) and np.isfinite(h[4])]
    rep: dict[str, Any] = {"iterates": len(history), "with_true_return": len(pairs),
                           "pairs": [[float(a), norm(float(b))] for a, b in pairs]}
    if len(pairs) >= 3:
        a, b = np.array(pairs).T
        rep["spearman"] = spearman(a, b)
    if rows and all(np.isfinite(h[4]) for h in rows):
        first = min(h[0] for h in rows)
        rep["bc_members"] = [norm(h[4]) for h in sorted((h for h in rows if h[0] == first), key=lambda h: h[1])]
        accepted = [[h[0], int(h[1]), h[2], norm(h[4])] for h in rows if h[3]]
        rep["accepted"] = accepted
        rep["iterates"] = [[h[0], int(h[1]), norm(h[4])] for h in rows]  # every scored iterate's true return
        last: dict[int, float] = {}
        better = []
        for _, member, _, true in accepted:
            if member in last:
                better.append(true >= last[member])
            last[member] = true
        rep["acceptances_not_worse"] = float(np.mean(better)) if better else None
    return rep


def story_line(summary: dict[str, Any]) -> str:
    """One sentence on what the run did, from its summary."""
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    parts = []
    if summary.get("dataset_score") is not None:
        parts.append(f"data average {f(summary['dataset_score'])}")
    bc = (summary.get("ope") or {}).get("bc_members")
    if bc:
        parts.append(f"best BC member {f(max(bc))}")
    if summary.get("offline_score") is not None:
        gain = f" ({summary['offline_score'] - max(bc):+.1f} over BC)" if bc else ""
        parts.append(f"offline {f(summary['offline_score'])}{gain}")
    if summary.get("online_steps"):
        gain = (f" ({summary['online_score'] - summary['offline_score']:+.1f})"
                if summary.get("offline_score") is not None and summary.get("online_score") is not None else "")
        parts.append(f"online {f(summary.get('online_score'))} after {summary['online_steps']} env steps{gain}")
    return " -> ".join(parts)


def check_resumable(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "config.yaml").exists():
        raise RunError(f"--resume {p}: not a run folder (config.yaml missing)")
    return p
