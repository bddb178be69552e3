"""Learning benchmark: Uni-O4 vs IQL vs Cal-QL vs the best BC ensemble member on rlpt's locally generated
D4RL-style data, at equal offline update budgets, then Uni-O4 online vs PPO from scratch.

    python benchmarks/learning.py --datasets hopper-medium-replay-v5 --seeds 0 1 2

Per dataset and seed it runs (CPU presets from agents/*/<dataset>-cpu.yaml, budgets overridable):
- Uni-O4: offline phases, recording every BC member's return after the BC phase (the "best BC member"
  baseline), the offline score, OPE scores with the true return of each scored iterate (reporting only),
  an evaluation right at the offline->online switch, and online PPO fine-tuning;
- IQL, Cal-QL and BC offline with the same number of gradient updates as Uni-O4's critic + BC + improve
  phases (`--offline-budget` overrides; Cal-QL may be given a smaller budget with `--calql-budget`,
  reported as such);
- SB3 PPO from scratch for the same number of online env steps.
Reports final ("last") normalized scores over seeds (`rlpt.eval.stats.describe`: mean ± std, IQM, bootstrap 95%
intervals), paired bootstrap intervals of the differences a claim rests on, and the issue's targets:
Uni-O4 >= best BC member + 10 (medium-replay), Spearman(OPE, return) >= 0.6, first online eval >= 0.9 x
offline, Uni-O4 after the online budget > PPO from scratch. Results: benchmarks/results/learning.json
(partial results are saved after every run, so an interrupted benchmark keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import (
    add_merge_arg,
    add_resummarize_arg,
    command_line,
    machine,
    part_summary,
    read_parts,
    resummarize,
    set_threads,
    versions,
    write_result,
)

from rlpt.agents.base import agent_class
from rlpt.envs import make_env
from rlpt.eval import evaluate
from rlpt.eval.stats import describe, diff_by_seed
from rlpt.train import _load_dataset, load_recipe, ope_report, train
from rlpt.utils import merge_nested, set_seed

RESULTS = Path(__file__).resolve().parent / "results" / "learning.json"


def unio4_preset(name: str) -> str:
    """`hopper-medium-replay-v5` -> `unio4/hopper-medium-replay-cpu` (the benchmark's reference preset)."""
    return f"unio4/{name.rsplit('-', 1)[0]}-cpu"


def dataset_for(name: str, data_root: Path):
    """The dataset file the CPU presets of `name` train on (made, or remade when stale, as `rlpt train` does)."""
    recipe = load_recipe(unio4_preset(name), [])
    if recipe.dataset != name:
        raise SystemExit(f"{unio4_preset(name)} trains on {recipe.dataset}, not {name}")
    return _load_dataset(recipe, data_root, quiet=True)


def norm(ret: float, refs: tuple[float, float]) -> float:
    return 100.0 * (ret - refs[0]) / (refs[1] - refs[0])


def run_unio4(name: str, seed: int, ds, refs, args) -> dict:
    recipe = load_recipe(unio4_preset(name),
                         [f"seed={seed}", f"online_steps={args.online_steps}", *args.unio4_overrides])
    set_seed(seed)
    env = make_env(recipe.env, seed=seed)
    eval_env = make_env(recipe.env, seed=seed + 1)
    cfg = agent_class("unio4").config_class.from_dict({"seed": seed, **recipe.config})
    agent = cfg.create(env.observation_space, env.action_space)
    t0 = time.time()
    bc_end = cfg.critic_steps + cfg.dynamics_steps + cfg.bc_steps
    agent.fit(ds, n_steps=bc_end, eval_env=eval_env)
    bc_members = [norm(agent.member_return(i, eval_env, args.eval_episodes), refs) for i in range(cfg.ensemble_size)]
    agent.fit(ds, n_steps=cfg.offline_total_steps - agent.step, eval_env=eval_env)
    offline = evaluate(agent, recipe.env, args.eval_episodes, seed=10_000 + seed, ref_scores=refs)
    offline_seconds = time.time() - t0
    history = np.array(agent.ope_history)
    has_truth = np.isfinite(history[:, 4]) if len(history) else np.zeros(0, bool)
    report = ope_report(agent.ope_history, lambda r: norm(r, refs))  # Spearman, BC members, acceptances
    online_curve = [(0, offline.normalized_score)]
    t1 = time.time()
    while agent.online_steps < args.online_steps:
        agent.learn(env, total_timesteps=min(args.online_eval_interval, args.online_steps - agent.online_steps))
        res = evaluate(agent, recipe.env, args.eval_episodes, seed=10_000 + seed, ref_scores=refs)
        online_curve.append((agent.online_steps, res.normalized_score))
    return {"bc_members": bc_members, "best_bc_member": max(bc_members), "offline_score": offline.normalized_score,
            "ope_spearman": report.get("spearman"), "ope_pairs": history[has_truth][:, [2, 4]].tolist(),
            "ope_noise_sd": agent.ope_noise_sd or None,
            "ope_iterate_scores_sd": float(np.std(history[:, 2], ddof=1)) if len(history) > 1 else None,
            "ope_accepted": report.get("accepted"), "acceptances_not_worse": report.get("acceptances_not_worse"),
            "first_online_score": online_curve[1][1] if len(online_curve) > 1 else None,
            "online_curve": online_curve, "online_score": online_curve[-1][1],
            "offline_updates": cfg.critic_steps + cfg.bc_steps + cfg.improve_steps,
            "dynamics_updates": cfg.dynamics_steps, "offline_seconds": offline_seconds,
            "online_seconds": time.time() - t1}


def run_recipe(recipe_name: str, seed: int, overrides: list[str], out: Path) -> dict:
    recipe = load_recipe(recipe_name, [f"seed={seed}", *overrides])
    t0 = time.time()
    s = train(recipe, out_root=out, quiet=True)
    return {"offline_score": s["offline_score"], "online_score": s["online_score"], "seconds": time.time() - t0,
            "offline_steps": s["offline_steps"], "online_steps": s["online_steps"], "run": s["run"]}


def summarize(results: dict) -> dict:
    out = {}
    def stat_of(per_seed: dict):
        def stat(key, algo):
            """describe() over the seeds that have the number: mean, std, n, IQM and bootstrap intervals."""
            vals = [r[algo][key] for r in per_seed.values() if algo in r and r[algo].get(key) is not None]
            return describe(vals) if np.isfinite(vals).any() else None

        return stat

    for name, per_seed in results.items():
        stat = stat_of(per_seed)

        row = {"unio4_offline": stat("offline_score", "unio4"), "best_bc_member": stat("best_bc_member", "unio4"),
               "iql": stat("offline_score", "iql"), "calql": stat("offline_score", "calql"),
               "bc": stat("offline_score", "bc"), "unio4_first_online": stat("first_online_score", "unio4"),
               "unio4_online": stat("online_score", "unio4"), "ppo_scratch": stat("online_score", "ppo"),
               "ope_spearman": stat("ope_spearman", "unio4"), "ope_noise_sd": stat("ope_noise_sd", "unio4"),
               "ope_iterate_scores_sd": stat("ope_iterate_scores_sd", "unio4"),
               "acceptances_not_worse": stat("acceptances_not_worse", "unio4")}

        def paired(a: tuple[str, str], b: tuple[str, str], per_seed: dict = per_seed):
            """Difference a - b with a bootstrap 95% interval, paired over the seeds that have both."""
            def by_seed(key, algo):
                return {s: r[algo][key] for s, r in per_seed.items() if r.get(algo, {}).get(key) is not None}

            return diff_by_seed(by_seed(*a), by_seed(*b))

        row["ci"] = {"unio4_minus_iql": paired(("offline_score", "unio4"), ("offline_score", "iql")),
                     "unio4_minus_best_bc": paired(("offline_score", "unio4"), ("best_bc_member", "unio4")),
                     "online_minus_offline": paired(("online_score", "unio4"), ("offline_score", "unio4"))}
        t = {}
        if row["unio4_offline"] and row["iql"]:
            t["unio4_minus_iql"] = row["unio4_offline"]["mean"] - row["iql"]["mean"]
            t["unio4_ge_iql"] = t["unio4_minus_iql"] >= 0
        if row["unio4_offline"] and row["best_bc_member"]:
            t["unio4_minus_best_bc"] = row["unio4_offline"]["mean"] - row["best_bc_member"]["mean"]
            t["unio4_ge_best_bc_plus_10"] = t["unio4_minus_best_bc"] >= 10
        if row["ope_spearman"]:
            t["spearman_ge_0.6"] = row["ope_spearman"]["mean"] >= 0.6
        if row["unio4_first_online"] and row["unio4_offline"]:
            t["first_online_over_offline"] = row["unio4_first_online"]["mean"] / max(row["unio4_offline"]["mean"], 1e-9)
            t["no_collapse_ge_0.9"] = t["first_online_over_offline"] >= 0.9
            ratios = [r["unio4"]["first_online_score"] / max(r["unio4"]["offline_score"], 1e-9)
                      for r in per_seed.values() if r.get("unio4", {}).get("first_online_score") is not None]
            t["first_online_over_offline_per_seed"] = ratios
            t["no_collapse_every_seed"] = bool(ratios) and min(ratios) >= 0.9
        if row["unio4_online"] and row["unio4_offline"]:
            t["online_minus_offline"] = row["unio4_online"]["mean"] - row["unio4_offline"]["mean"]
            t["online_ge_offline_plus_10"] = t["online_minus_offline"] >= 10
        if row["acceptances_not_worse"]:
            t["acceptances_not_worse_ge_0.8"] = row["acceptances_not_worse"]["mean"] >= 0.8
        if row["unio4_online"] and row["ppo_scratch"]:
            t["unio4_online_beats_ppo_scratch"] = row["unio4_online"]["mean"] > row["ppo_scratch"]["mean"]
        row["targets"] = t
        out[name] = row
    return out


ROWS = [("unio4_offline", "Uni-O4 offline"), ("best_bc_member", "best Uni-O4 BC ensemble member"), ("iql", "IQL"),
        ("bc", "BC (deterministic MSE, `agents/bc`)"), ("calql", "Cal-QL, **3,000 updates only**"),
        ("unio4_first_online", "Uni-O4 first online evaluation (10k steps)"),
        ("unio4_online", "Uni-O4 after 50k online steps"), ("ppo_scratch", "SB3 PPO from scratch, 51,200 steps"),
        ("ope_spearman", "Spearman(OPE score, true return)"), ("ope_noise_sd", "OPE noise SD (8 re-scorings)"),
        ("ope_iterate_scores_sd", "SD of OPE scores across iterates"),
        ("acceptances_not_worse", "acceptances not worse than the reference replaced")]


def markdown_table(summary: dict) -> str:
    """The summary as a markdown table (one column per dataset: mean ± std [bootstrap 95% interval of the mean])
    plus the paired intervals of the differences, for the docs."""
    names = list(summary)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in ROWS:
        cells = []
        for n in names:
            v = summary[n].get(key)
            digits = 2 if key in ("ope_spearman", "acceptances_not_worse") else 1
            ci = f" [{v['mean_ci'][0]:.{digits}f}, {v['mean_ci'][1]:.{digits}f}]" if v and v.get("mean_ci") else ""
            cells.append(f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}{ci}" if v else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, label in (("unio4_minus_iql", "Uni-O4 - IQL"), ("unio4_minus_best_bc", "Uni-O4 - best BC member"),
                       ("online_minus_offline", "Uni-O4 online - offline")):
        cells = []
        for n in names:
            ci = summary[n].get("ci", {}).get(key)
            cells.append(f"{ci['diff']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}]" if ci else "-")
        lines.append(f"| {label}, per-seed mean [95% CI] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["hopper-medium-replay-v5", "halfcheetah-medium-v5"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", default=["unio4", "iql", "calql", "bc", "ppo"])
    p.add_argument("--online-steps", type=int, default=50_000)
    p.add_argument("--online-eval-interval", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--offline-budget", type=int, help="offline updates for IQL/Cal-QL/BC (default: Uni-O4's)")
    p.add_argument("--calql-budget", type=int, help="offline updates for Cal-QL if smaller than the others")
    p.add_argument("--unio4-overrides", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--results", default=str(RESULTS), help="results JSON (re-running skips finished cells)")
    p.add_argument("--table", metavar="JSON", help="print a results file's summary as a markdown table and exit")
    add_merge_arg(p, into="--results")  # parts of parallel runs, e.g. one per seed
    add_resummarize_arg(p)
    args = p.parse_args()
    results_path = Path(args.results)
    if args.resummarize:
        resummarize(args.resummarize, lambda report: {"summary": summarize(report["results"])})
        return
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())["summary"]))
        return
    if args.merge:
        parts = read_parts(args.merge, agree=("benchmark",))
        merged = merge_nested([part["results"] for part in parts], depth=3)  # parts may split a seed's algorithms
        report = {"benchmark": "learning", "command": command_line(), "parts": part_summary(args.merge, parts),
                  "versions": parts[0]["versions"], "results": merged, "summary": summarize(merged)}
        write_result(results_path, report)
        print(json.dumps(report["summary"], indent=2))
        return
    set_threads(args.threads)
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    results: dict = previous.get("results", {})
    report = {"benchmark": "learning", "command": command_line(), "machine": machine(cpus=torch.get_num_threads()),
              "versions": versions(), "args": vars(args)}
    for name in args.datasets:
        ds = dataset_for(name, Path(args.data_root))
        refs = (float(ds.metadata["ref_min_score"]), float(ds.metadata["ref_max_score"]))
        task = name.rsplit("-", 1)[0]
        for seed in args.seeds:
            cell = results.setdefault(name, {}).setdefault(str(seed), {})
            budget = None
            for algo in args.algos:
                if algo in cell:
                    continue
                print(f"== {name} seed {seed}: {algo}", flush=True)
                if algo == "unio4":
                    cell[algo] = run_unio4(name, seed, ds, refs, args)
                else:
                    budget = args.offline_budget or cell.get("unio4", {}).get("offline_updates")
                    if algo == "ppo":
                        rec = f"sb3_ppo/{task.split('-')[0]}-cpu"
                        ov = [f"online_steps={args.online_steps}", f"ref_scores=[{refs[0]},{refs[1]}]"]
                    else:
                        steps = args.calql_budget if algo == "calql" and args.calql_budget else budget
                        rec = f"{algo}/{task}-cpu"
                        ov = ["online_steps=0"] + ([f"offline_steps={steps}"] if steps else [])
                    cell[algo] = run_recipe(rec, seed, ov, Path(args.out))
                print(json.dumps({k: v for k, v in cell[algo].items() if "score" in k or k == "best_bc_member"}))
                report["results"] = results
                report["summary"] = summarize(results)
                write_result(results_path, report)
    report["results"] = results
    report["summary"] = summarize(results)
    write_result(results_path, report)
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
