"""`rlpt quickstart`: the whole offline-to-online pipeline on embedded defaults, in minutes on a CPU.

1. make (or reuse) the hopper medium-replay dataset with rlpt's committed behaviour policies;
2. Uni-O4 offline: IQL-style critics, the dynamics ensemble, the BC ensemble, and policy improvement
   gated by offline policy evaluation (AM-Q); the policy handed online is chosen by OPE;
3. online PPO fine-tuning from that policy;
4. evaluation and a report: summary.json (offline score, online score, OPE-vs-return rank
   correlation), a learning-curve PNG over both phases, and an mp4 of the final policy.

The recipe is `agents/unio4/quickstart.yaml` (it ships inside the package as well).
"""

from __future__ import annotations

import time
from pathlib import Path

RECIPE = "unio4/quickstart"


def quickstart(out_root: Path = Path("runs"), data_root: Path = Path("data"), quiet: bool | None = None,
               seed: int = 0, overrides: list[str] | None = None) -> dict:
    from rlpt.train import load_recipe, train

    t0 = time.time()
    recipe = load_recipe(RECIPE, [f"seed={seed}", *(overrides or [])])
    print(f"rlpt quickstart: {recipe.agent} on {recipe.env} with {recipe.dataset} "
          f"({recipe.offline_steps} offline steps, {recipe.online_steps} online env steps)")
    summary = train(recipe, out_root=out_root, data_root=data_root, quiet=quiet)
    ope = summary.get("ope") or {}
    brief = {
        "run": summary["run"],
        "dataset_score": summary.get("dataset_score"),
        "best_bc_member": max(ope["bc_members"]) if ope.get("bc_members") else None,
        "offline_score": summary["offline_score"],
        "first_online_score": summary.get("first_online_score"),
        "online_score": summary["online_score"],
        "ope_spearman": ope.get("spearman"),
        "ope_iterates": ope.get("with_true_return"),
        "story": summary.get("story"),
        "plot": summary.get("story_plot") or summary.get("plot"),
        "video": summary.get("video"),
        "minutes": round((time.time() - t0) / 60, 1),
    }
    print(f"{brief['story']} (normalized scores: 0 = random, 100 = expert behaviour policy)")
    print(f"OPE rank correlation {_fmt(brief['ope_spearman'], 2)} over {brief['ope_iterates']} iterates; "
          f"plot {brief['plot']}; run folder {summary['run']} ({brief['minutes']} min)")
    return brief


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
