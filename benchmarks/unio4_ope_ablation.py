"""Uni-O4 offline-improvement ablation on hopper-medium-replay-v5 (CPU preset), from one post-BC checkpoint.

    python benchmarks/unio4_ope_ablation.py --seeds 0 1 --variants '{}' '{"ope_common_random_numbers": true}'
    python benchmarks/unio4_ope_ablation.py --seeds 0 1 --critic-lr 3e-4 --variants '{"improve_steps": 1500}'

Stage 1 (once per seed, cached under --cache): the CPU preset's critics, dynamics and BC ensemble, saved. Stage 2
(per variant): load that checkpoint, override improve/OPE fields of the config, run the improvement phase with
true-return reporting (5 episodes per scored iterate), then report the handed-off policy's score (10 episodes),
each member's reference score, Spearman(OPE score, true return) over the scored iterates, and the best true return
among them. With --critic-lr, the critics are retrained at that lr (same steps) and spliced into the checkpoint.
Results are appended to --results (JSON lines, one per seed and variant). The committed
`unio4_ope_ablation.jsonl` was made with the preset before its critic change (`OLD_PRESET` in
`benchmarks/unio4_critic.py`); a rerun uses the preset as it is now.

    python benchmarks/unio4_ope_ablation.py --summary     # per variant over seeds, from --results; runs nothing

`summarize` groups the rows by (critic lr, variant): offline score and Spearman over seeds (`rlpt.eval.stats.
describe`: mean ± std, IQM, bootstrap intervals) and the offline score minus that of the variant `{}` at the same
critic lr, paired over seeds (docs/benchmarks.md shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, machine, set_threads, versions, write_result

from rlpt.eval.stats import describe, diff_by_seed

PRESET = "unio4/hopper-medium-replay-cpu"


def read_rows(path: str | Path) -> list[dict]:
    """The JSON lines of a results file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (critic lr, variant), in the order they first appear: seeds, `describe` of the offline score
    and of the Spearman over seeds, and `offline_minus_baseline`: offline score minus that of the variant `{}` at
    the same critic lr, with a bootstrap 95% interval paired over seeds (None without that baseline or with fewer
    than 2 values per arm)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps([r.get("critic_lr"), r.get("variant")], sort_keys=True), []).append(r)

    def offline(mine: list[dict]) -> dict:
        return {r["seed"]: r.get("offline") for r in mine}

    out = []
    for mine in groups.values():
        lr, variant = mine[0].get("critic_lr"), mine[0].get("variant")
        base = groups.get(json.dumps([lr, {}], sort_keys=True))
        out.append({"critic_lr": lr, "variant": variant, "seeds": [r["seed"] for r in mine],
                    "offline": describe([r.get("offline") for r in mine]),
                    "spearman": describe([r.get("spearman") for r in mine]),
                    "offline_minus_baseline": diff_by_seed(offline(mine), offline(base))
                    if base is not None and variant != {} else None})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--variants", nargs="+", default=["{}"], help="JSON dicts of UniO4Config overrides")
    p.add_argument("--critic-lr", type=float, help="retrain the critics at this lr before improving")
    p.add_argument("--cache", default="runs/unio4_ablation_cache")
    p.add_argument("--results", default="benchmarks/results/unio4_ope_ablation.jsonl")
    p.add_argument("--summary", action="store_true", help="print the per-variant summary of --results and exit")
    args = p.parse_args()
    if args.summary:
        print(json.dumps(summarize(read_rows(args.results)), indent=1))
        return
    import torch

    from rlpt.agents.base import Agent, agent_class
    from rlpt.envs import make_env
    from rlpt.eval import evaluate
    from rlpt.train import _load_dataset, load_recipe
    from rlpt.utils import set_seed, spearman

    set_threads(1)
    recipe = load_recipe(PRESET)
    ds = _load_dataset(recipe, Path("data"), quiet=True)
    refs = (float(ds.metadata["ref_min_score"]), float(ds.metadata["ref_max_score"]))

    def norm(r: float) -> float:
        return 100.0 * (r - refs[0]) / (refs[1] - refs[0])

    cls = agent_class("unio4").config_class
    for seed in args.seeds:
        env, eval_env = make_env(recipe.env, seed=seed), make_env(recipe.env, seed=seed + 1)
        ck = Path(args.cache) / f"bc_seed{seed}"
        if not ck.exists():
            set_seed(seed)
            cfg = cls.from_dict({"seed": seed, **recipe.config})
            agent = cfg.create(env.observation_space, env.action_space)
            agent.fit(ds, n_steps=cfg.critic_steps + cfg.dynamics_steps + cfg.bc_steps, eval_env=eval_env)
            agent.save(ck)
        critics = None
        if args.critic_lr is not None:
            cpath = Path(args.cache) / f"critics_seed{seed}_lr{args.critic_lr}.pt"
            if not cpath.exists():
                set_seed(seed)
                cfg = cls.from_dict({**recipe.config, "seed": seed, "critic_lr": args.critic_lr})
                b = cfg.create(env.observation_space, env.action_space)
                b.fit(ds, n_steps=cfg.critic_steps)
                torch.save({k: getattr(b.critic, k).state_dict() for k in ("q", "q_target", "v")}, cpath)
            critics = torch.load(cpath)
        for variant in args.variants:
            over = json.loads(variant)
            agent = Agent.load(ck)
            for k, v in (critics or {}).items():
                getattr(agent.critic, k).load_state_dict(v)
            for k, v in over.items():
                setattr(agent.config, k, v)
            agent.config.report_true_returns, agent.config.report_episodes = True, 5
            set_seed(seed)
            t0 = time.time()
            agent.fit(ds, n_steps=10**9, eval_env=eval_env)
            h = np.array(agent.ope_history)
            off = evaluate(agent, recipe.env, 10, seed=10_000 + seed, ref_scores=refs)
            row = {"seed": seed, "critic_lr": args.critic_lr or recipe.config.get("critic_lr", 1e-4), "variant": over,
                   "offline": round(off.normalized_score, 1),
                   "ref_members": [round(norm(agent.member_return(i, eval_env, 5, reference=True)), 1)
                                   for i in range(agent.config.ensemble_size)],
                   "selected": agent.selected, "spearman": round(spearman(h[:, 2], h[:, 4]), 3),
                   "best_true": round(norm(float(np.nanmax(h[:, 4]))), 1), "accepted": int(h[:, 3].sum()),
                   "seconds": round(time.time() - t0), "command": command_line(), "machine": machine(),
                   "versions": versions()}
            print(json.dumps({k: v for k, v in row.items() if k not in ("machine", "versions")}), flush=True)
            write_result(args.results, row, jsonl=True)


if __name__ == "__main__":
    main()
