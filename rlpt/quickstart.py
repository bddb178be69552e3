"""`rlpt quickstart`: the pipeline end to end on embedded defaults.

Today: make (or reuse) the hopper medium-replay dataset, summarize it, evaluate its behaviour
policies on Hopper-v5 with normalized scores, and write a report (summary.json, a PNG, an mp4).
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym

ENV_ID = "Hopper-v5"
DATASET = "hopper-medium-replay-v5"


def quickstart(out_root: Path = Path("runs"), data_root: Path = Path("data"), quiet: bool | None = None,
               seed: int = 0, eval_episodes: int = 5) -> dict:
    from rlpt.cli import dataset_info
    from rlpt.data import load_d4rl, save_d4rl
    from rlpt.data.behavior import BehaviorPolicy, load_manifest, random_policy
    from rlpt.data.generate import make_dataset
    from rlpt.eval import evaluate
    from rlpt.runs import RunDir

    t0 = time.time()
    run = RunDir.create(out_root, "quickstart", ENV_ID, seed)
    path = data_root / f"{DATASET}.hdf5"
    if path.exists():
        print(f"[1/3] reusing {path}")
    else:
        print(f"[1/3] making {path}")
        save_d4rl(make_dataset(DATASET, seed=seed, quiet=quiet), path)
    info = dataset_info(str(path))
    ds = load_d4rl(path)
    refs = (ds.metadata["ref_min_score"], ds.metadata["ref_max_score"])
    run.write_config({"pipeline": "quickstart", "env": f"mujoco/{ENV_ID}", "dataset": str(path), "seed": seed,
                      "ref_scores": list(refs), "eval_episodes": eval_episodes})
    print(f"      {info['transitions']:,} transitions, {info['episodes']} episodes, "
          f"mean return {info['return_mean']:.1f}, normalized {info['normalized_score_mean']:.1f}")

    print(f"[2/3] evaluating behaviour policies on {ENV_ID} ({eval_episodes} episodes each)")
    manifest, folder = load_manifest(ENV_ID)
    space = gym.make(ENV_ID).action_space
    policies = {"random": random_policy(space, seed),
                "medium": BehaviorPolicy.load(folder / manifest["medium"]["file"], space, seed),
                "expert": BehaviorPolicy.load(folder / manifest["expert"]["file"], space, seed)}
    results = {}
    for name, policy in policies.items():
        video = run.videos / f"{name}.mp4" if name == "medium" else None
        res = evaluate(lambda o, p=policy: p(o), f"mujoco/{ENV_ID}", eval_episodes, seed=10_000 + seed,
                       ref_scores=refs, video_path=video)
        results[name] = res.metrics(prefix="")
        print(f"      {name:<7} return {res.mean_return:8.1f}  normalized {res.normalized_score:6.1f}")

    print("[3/3] writing the report")
    png = _bar_plot(results, run.plots / "behaviour_policies.png")
    summary = {"dataset": info, "behaviour_policies": results, "plot": str(png),
               "video": str(run.videos / "medium.mp4"), "seconds": round(time.time() - t0, 1), "run": str(run.path)}
    run.write_summary(summary)
    print(f"      report in {run.path}")
    return {"run": str(run.path), "seconds": summary["seconds"],
            "normalized_scores": {k: v["normalized_score"] for k, v in results.items()}}


def _bar_plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    vals = [results[n]["normalized_score"] for n in names]
    errs = [results[n]["normalized_score_std"] for n in names]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=110)
    ax.bar(names, vals, yerr=errs, capsize=4, color=["#999", "#4c72b0", "#55a868"][: len(names)])
    ax.set_ylabel("normalized score (0 = random, 100 = expert)")
    ax.set_title(f"{ENV_ID}: behaviour policies")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
