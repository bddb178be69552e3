"""GFlowNet benchmark (docs/gfn.md): rlpt's TB vs torchgfn, OC-GFN pretraining, adaptation to new rewards.

    .venv/bin/python benchmarks/gfn.py                       # seeds 0 1 2, both tasks, defaults below
    .venv/bin/python benchmarks/gfn.py --seeds 1 --tasks bitseq --skip-tb --out /tmp/gfn_s1.json
    .venv/bin/python benchmarks/gfn.py --merge /tmp/gfn_s0.json /tmp/gfn_s1.json ...   # parallel parts -> --out

1. From-scratch TB on the 2-D HyperGrid of side 16 (R0=0.1, R1=0.5, R2=2; torchgfn's example: 2x256 ReLU MLP with
   a learned P_B head on the P_F trunk, Adam 1e-3 / log Z 0.1, batch 16, grad clip 1, one thread), rlpt vs
   torchgfn: training iterations/s (evaluation excluded) by wall clock and by process CPU time (the fair number
   on a shared machine), and the exact L1 curve. torchgfn runs in its own interpreter (`--torchgfn-python`,
   default $TORCHGFN_PYTHON or /tmp/tgfn/venv/bin/python: torchgfn pins numpy < 2, so it is not installed into
   rlpt's venv); its P_F and its own reward are read on every state. Each side is scored with the same exact DP
   against the reward it trained on (rlpt's HyperGridReward, torchgfn's OriginalReward); the run stops with an
   error unless the two rewards agree on every state (to float32 rounding) and have the same top cells. Skipped
   when that interpreter is missing; make one with `python3 -m venv /tmp/tgfn/venv && /tmp/tgfn/venv/bin/pip
   install torch==2.13.0 && /tmp/tgfn/venv/bin/pip install torchgfn==2.4.1` (versions are recorded in the JSON).
2. OC-GFN pretraining (reward-free) on the 2-D HyperGrid of side 16 and on 12-bit sequences of 4-bit words: the
   exact success rate P(x = y | y) (all 256 grid outcomes; 256 random ones of the 4,096 bit strings).
3. Adaptation to new rewards (TASKS below: three per DAG): exact L1 and modes covered vs steps for OC-GFN exact
   conversion (0 steps), the OC-GFN amortized adapter, and TB from scratch (modes found too).
   Target: OC-GFN reaches the scratch run's final L1 within a third of the scratch steps.
Writes benchmarks/results/gfn.json (per seed, and a summary: mean ± std, IQM and bootstrap intervals over seeds, and
paired intervals of the differences between arms); finished parts are kept when it is rerun. --resummarize FILE
recomputes a results file's summary from its stored seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import (
    add_merge_arg,
    add_resummarize_arg,
    command_line,
    loadavg,
    machine,
    part_summary,
    read_parts,
    resummarize,
    set_threads,
    versions,
    write_result,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.eval.stats import describe, diff_by_seed  # noqa: E402
from rlpt.gfn.envs import HyperGrid, Reward, make_dag_env  # noqa: E402
from rlpt.gfn.evaluate import exact_metrics, masked_log_softmax  # noqa: E402
from rlpt.gfn.gflownet import GFlowNet  # noqa: E402
from rlpt.gfn.ocgfn import OCGFN, AmortizedTrainer, OCGFNConfig, convert_exact_many  # noqa: E402
from rlpt.utils import merge_nested  # noqa: E402

TORCHGFN_SCRIPT = r"""
import json, platform, sys, time
from importlib.metadata import version
import numpy as np, torch
torch.set_num_threads(1)
from gfn.estimators import DiscretePolicyEstimator
from gfn.gflownet import TBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.samplers import Sampler
from gfn.utils.modules import MLP
steps, every, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(seed)
env = HyperGrid(ndim=2, height=16, reward_fn_str="original", reward_fn_kwargs={"R0": 0.1, "R1": 0.5, "R2": 2.0})
pre = KHotPreprocessor(height=16, ndim=2)
mpf = MLP(input_dim=pre.output_dim, output_dim=env.n_actions)
mpb = MLP(input_dim=pre.output_dim, output_dim=env.n_actions - 1, trunk=mpf.trunk)
pf = DiscretePolicyEstimator(mpf, env.n_actions, preprocessor=pre, is_backward=False)
pb = DiscretePolicyEstimator(mpb, env.n_actions, preprocessor=pre, is_backward=True)
gfn = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
sampler = Sampler(estimator=pf)
opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=1e-3)
opt.add_param_group({"params": gfn.logz_parameters(), "lr": 1e-1})
enc = torch.tensor(np.load(out + "/encodings.npy"))
np.save(out + "/rewards.npy", env.reward_fn(torch.tensor(np.load(out + "/states.npy"))).double().numpy())
train_s, cpu_s = 0.0, 0.0
for it in range(1, steps + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    traj = sampler.sample_trajectories(env, n=16, save_logprobs=False)
    loss = gfn.loss_from_trajectories(env, traj, recalculate_all_logprobs=True)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(gfn.parameters(), 1.0)
    opt.step()
    train_s += time.perf_counter() - t0
    cpu_s += time.process_time() - c0
    if it % every == 0:
        with torch.no_grad():
            np.save(f"{out}/logits_{it}.npy", mpf(enc).numpy())
versions = {"torchgfn": version("torchgfn"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
json.dump({"train_seconds": train_s, "cpu_seconds": cpu_s, "steps": steps, "versions": versions},
          open(out + "/summary.json", "w"))
"""


def l1_curve_rlpt(env, steps: int, every: int, seed: int, **kw) -> dict:
    gfn = GFlowNet(env, seed=seed, **kw)
    curve, train_s, cpu_s = [], 0.0, 0.0
    for it in range(1, steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        gfn.train_step()
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        if it % every == 0:
            curve.append(exact_curve_point(env, gfn.log_pf_table(), it, modes_found=len(gfn.seen_modes)))
    return {"curve": curve, "train_seconds": train_s, "it_per_s": steps / train_s, "cpu_seconds": cpu_s,
            "cpu_it_per_s": steps / cpu_s}


class TableReward(Reward):
    """A reward given by its values on every state of `env` (torchgfn's, read in torchgfn's interpreter); modes
    are grouped as `like` groups them (the caller checks that both rewards have the same top cells)."""

    def __init__(self, env, values: torch.Tensor, like: Reward, source: str):
        self.env, self.like, self.log_values = env, like, values.double().log()
        self.spec, self.n_modes = {"name": "table", "source": source}, like.n_modes

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_values[self.env.state_index(x)].float()

    def mode_group(self, x: torch.Tensor) -> torch.Tensor:
        return self.like.mode_group(x)


def check_same_reward(env, theirs: torch.Tensor, name: str) -> dict:
    """Fail loudly unless `theirs` (R on every state of `env`, float64) is rlpt's reward on `env`: equal to float32
    rounding everywhere and with the same top cells. Returns what was compared, for the results JSON."""
    ours = env.log_reward(env.all_states).double().exp()
    top = float(ours.max())
    diff = (ours - theirs).abs() / ours
    our_top, their_top = ours > top * (1 - 1e-6), theirs > top * (1 - 1e-6)
    same_top = torch.equal(our_top, their_top)
    if not (float(diff.max()) < 1e-6 and same_top):
        bad = env.all_states[diff >= 1e-6]
        raise RuntimeError(
            f"benchmarks/gfn.py: {name}'s reward differs from rlpt's on {len(bad)} of {env.n_states} states of "
            f"{env.spec()} (max relative difference {float(diff.max()):.3g}, first states {bad[:9].tolist()}; "
            f"top cells: rlpt {int(our_top.sum())}, {name} {int(their_top.sum())}); "
            "the L1 curves would be measured against different targets, so nothing is compared")
    return {"identical": True, "max_relative_difference": float(diff.max()),
            "top_cells": env.all_states[our_top].tolist()}


def torchgfn_run(python: str, env, steps: int, every: int, seed: int) -> dict | None:
    """torchgfn's TB on `env` in its own interpreter; its P_F is scored against torchgfn's own reward (after checking
    it equals rlpt's), and also against rlpt's (`l1_vs_rlpt_reward`)."""
    if not python or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/encodings.npy", env.encode(env.all_states).numpy())
        np.save(f"{d}/states.npy", env.all_states.numpy())
        (Path(d) / "run.py").write_text(TORCHGFN_SCRIPT)
        r = subprocess.run([python, f"{d}/run.py", str(steps), str(every), str(seed), d], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return {"error": r.stderr[-2000:]}
        summary = json.loads((Path(d) / "summary.json").read_text())
        theirs = torch.tensor(np.load(f"{d}/rewards.npy"))
        check = check_same_reward(env, theirs, "torchgfn")
        own = HyperGrid(env.dim, env.side, reward=TableReward(env, theirs, env.reward, "torchgfn OriginalReward"))
        mask = env.forward_mask(env.all_states)
        curve = []
        for it in range(every, steps + 1, every):
            table = masked_log_softmax(torch.tensor(np.load(f"{d}/logits_{it}.npy")), mask)
            curve.append(exact_curve_point(own, table, it, l1_vs_rlpt_reward=exact_metrics(env, table)["l1"]))
    return {"curve": curve, "target": "torchgfn's own reward (OriginalReward read on every state)",
            "reward_check": check, "train_seconds": summary["train_seconds"],
            "it_per_s": steps / summary["train_seconds"], "cpu_seconds": summary["cpu_seconds"],
            "cpu_it_per_s": steps / summary["cpu_seconds"], "versions": summary["versions"]}


def first_step_below(curve: list[dict], threshold: float) -> int | None:
    return next((c["step"] for c in curve if c["l1"] <= threshold), None)


# pretraining DAGs and the new rewards adapted to (the benchmark seed is added to every reward's own seed)
TASKS = {
    "hypergrid": {"env": {"kind": "hypergrid", "dim": 2, "side": 16},
                  "rewards": {"hypergrid_R0_1e-3": {"name": "hypergrid", "R0": 1e-3},
                              "sparse10": {"name": "sparse", "k": 10, "seed": 0},
                              "hypergrid_R0_1e-2": {"name": "hypergrid", "R0": 1e-2}}},
    "bitseq": {"env": {"kind": "bitseq", "length": 12, "word": 4},
               "rewards": {"bitseq20": {"name": "bitseq", "n_modes": 20, "seed": 0},
                           "bitseq5_beta20": {"name": "bitseq", "n_modes": 5, "beta": 20.0, "seed": 100},
                           "sparse10": {"name": "sparse", "k": 10, "seed": 0}}},
}


def exact_curve_point(env, log_pf: torch.Tensor, step: int, **extra) -> dict:
    m = exact_metrics(env, log_pf)
    return {"step": step, "l1": m["l1"], "modes_covered": m.get("modes_covered"), **extra}


def pretrain_and_adapt(task: str, seed: int, args: argparse.Namespace, log) -> dict:
    """Part 2 (OC-GFN pretraining) and part 3 (adaptation: exact, amortized, scratch) on one task."""
    base = make_dag_env({**TASKS[task]["env"], "reward": {"name": "none"}})
    oc = OCGFN(base, OCGFNConfig(seed=seed))
    curve, train_s = [], 0.0
    for it in range(1, args.pretrain_steps + 1):
        a = time.perf_counter()
        oc.train_step()
        train_s += time.perf_counter() - a
        if it % max(args.every, args.pretrain_steps // 10) == 0 or it == args.pretrain_steps:
            curve.append({"step": it, "success_rate": oc.success_rate()})
    out: dict = {"pretrain": {"curve": curve, "train_seconds": train_s, "it_per_s": args.pretrain_steps / train_s},
                 "adapt": {}}
    log(f"{task} OC-GFN pretraining: exact success {curve[-1]['success_rate']:.4f} after {args.pretrain_steps} "
        f"steps ({train_s:.0f}s)")
    specs = {name: {**spec, "seed": spec["seed"] + seed} if "seed" in spec else spec
             for name, spec in TASKS[task]["rewards"].items()}
    envs = {name: base.with_reward(spec) for name, spec in specs.items()}
    t0 = time.perf_counter()  # exact conversion: one sweep over the outcomes serves every reward
    converted = dict(zip(envs, convert_exact_many(oc, list(envs.values())), strict=True))
    out["exact_seconds_all_rewards"] = time.perf_counter() - t0
    for name, env in envs.items():
        row: dict = {"reward": specs[name], "exact": exact_metrics(env, converted[name])}
        row["scratch"] = l1_curve_rlpt(env, args.adapt_steps, args.every, seed, loss="tb")
        am = AmortizedTrainer(oc, env, seed=seed, flows=args.amortized_flows)
        acurve, train_s = [], 0.0
        for it in range(1, args.adapt_steps + 1):
            a = time.perf_counter()
            am.train_step()
            train_s += time.perf_counter() - a
            if it % args.every == 0:
                table = masked_log_softmax(am.logits(env.all_states), env.forward_mask(env.all_states))
                acurve.append(exact_curve_point(env, table, it))
        row["amortized"] = {"curve": acurve, "train_seconds": train_s}
        final = row["scratch"]["curve"][-1]["l1"]
        row["scratch_final_l1"] = final
        row["exact_steps_to_scratch_final"] = 0 if row["exact"]["l1"] <= final else None
        row["amortized_steps_to_scratch_final"] = first_step_below(acurve, final)
        third = args.adapt_steps / 3
        row["target_exact_within_third"] = row["exact_steps_to_scratch_final"] is not None
        reach = row["amortized_steps_to_scratch_final"]
        row["target_amortized_within_third"] = reach is not None and reach <= third
        out["adapt"][name] = row
        log(f"{task}/{name}: scratch final L1 {final:.3f} at {args.adapt_steps}; exact conversion L1 "
            f"{row['exact']['l1']:.3f} (modes {row['exact'].get('modes_covered')}/{row['exact'].get('n_modes')}); "
            f"amortized final L1 {acurve[-1]['l1']:.3f}, reaches scratch's final at {reach}")
    return out


def summarize(seeds: dict) -> dict:
    """The headline numbers per task and reward over seeds (`describe`: mean ± std, IQM, bootstrap intervals), and
    the differences a claim rests on with bootstrap 95% intervals paired over seeds (crude at 3 seeds)."""
    def stat(xs: list) -> dict | None:
        xs = [x for x in xs if x is not None]
        return describe(xs) if xs else None

    def paired_ci(keys: list, a: list, b: list) -> dict | None:
        """a - b over the seeds (`keys`, one per value) that have both, with a paired bootstrap 95% interval."""
        return diff_by_seed(dict(zip(keys, a, strict=True)), dict(zip(keys, b, strict=True)))

    summary: dict = {}
    runs = list(seeds.values())
    tb = [r["tb"] for r in runs if "tb" in r]
    tb_seeds = [k for k, r in seeds.items() if "tb" in r]
    if tb:
        tg = [r.get("torchgfn") or {} for r in tb]

        def ratio(key: str) -> list:
            return [r["rlpt"][key] / t[key] if key in r["rlpt"] and key in t else None
                    for r, t in zip(tb, tg, strict=True)]

        summary["tb_vs_torchgfn"] = {
            "l1_target": "each side's own reward (rlpt HyperGridReward, torchgfn OriginalReward; checked identical)",
            "rlpt_it_per_s": stat([r["rlpt"]["it_per_s"] for r in tb]),
            "torchgfn_it_per_s": stat([t.get("it_per_s") for t in tg]),
            "it_per_s_ratio": stat(ratio("it_per_s")),
            "rlpt_cpu_it_per_s": stat([r["rlpt"].get("cpu_it_per_s") for r in tb]),
            "torchgfn_cpu_it_per_s": stat([t.get("cpu_it_per_s") for t in tg]),
            "cpu_it_per_s_ratio": stat(ratio("cpu_it_per_s")),
            "rlpt_final_l1": stat([r["rlpt"]["curve"][-1]["l1"] for r in tb]),
            "torchgfn_final_l1": stat([(t.get("curve") or [{}])[-1].get("l1") for t in tg]),
            "rlpt_final_l1_per_seed": [r["rlpt"]["curve"][-1]["l1"] for r in tb],
            "torchgfn_final_l1_per_seed": [(t.get("curve") or [{}])[-1].get("l1") for t in tg],
            "final_l1_rlpt_minus_torchgfn": paired_ci(tb_seeds, [r["rlpt"]["curve"][-1]["l1"] for r in tb],
                                                     [(t.get("curve") or [{}])[-1].get("l1") for t in tg])}
    for task in TASKS:
        rows = [r[task] for r in runs if task in r]
        if not rows:
            continue
        t = summary[task] = {"pretrain_success": stat([r["pretrain"]["curve"][-1]["success_rate"] for r in rows])}
        for name in TASKS[task]["rewards"]:
            cells = [r["adapt"][name] for r in rows if name in r["adapt"]]
            keys = [k for k, r in seeds.items() if task in r and name in r[task]["adapt"]]
            scratch = [c["scratch_final_l1"] for c in cells]
            exact = [c["exact"]["l1"] for c in cells]
            amortized = [c["amortized"]["curve"][-1]["l1"] for c in cells]
            t[name] = {"scratch_final_l1": stat(scratch), "exact_l1": stat(exact),
                       "amortized_final_l1": stat(amortized),
                       "exact_minus_scratch_l1": paired_ci(keys, exact, scratch),
                       "amortized_minus_scratch_l1": paired_ci(keys, amortized, scratch),
                       "exact_within_third": sum(c["target_exact_within_third"] for c in cells),
                       "amortized_within_third": sum(c["target_amortized_within_third"] for c in cells),
                       "seeds": len(cells)}
    return summary


def tables(res: dict) -> str:
    """Markdown tables of a results JSON (what docs/gfn.md quotes): part 1 per seed, then parts 2-3 means."""
    def ms(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if xs else "-"

    out, seeds = [], sorted(res["seeds"], key=int)
    tb = {k: res["seeds"][k]["tb"] for k in seeds if "tb" in res["seeds"][k]}
    if tb:
        out += ["| seed | rlpt L1 @1000 | torchgfn L1 @1000 | rlpt it/s | torchgfn it/s | ratio | rlpt it/CPU-s | "
                "torchgfn it/CPU-s | CPU ratio |", "|---|---|---|---|---|---|---|---|---|"]
        for k, r in tb.items():
            a, b = r["rlpt"], r.get("torchgfn") or {}
            if "curve" not in b:
                continue
            ca, cb = a.get("cpu_it_per_s"), b.get("cpu_it_per_s")  # absent in runs before CPU time was recorded
            cpu = [f"{ca:.1f}", f"{cb:.1f}", f"{ca / cb:.2f}"] if ca and cb else ["-"] * 3
            out.append(f"| {k} | {a['curve'][-1]['l1']:.3f} | {b['curve'][-1]['l1']:.3f} | {a['it_per_s']:.1f} | "
                       f"{b['it_per_s']:.1f} | {a['it_per_s'] / b['it_per_s']:.2f} | " + " | ".join(cpu) + " |")
        steps = [c["step"] for c in next(iter(tb.values()))["rlpt"]["curve"]]
        out += ["", "| exact L1 (mean ± std over seeds) | " + " | ".join(map(str, steps)) + " |",
                "|---|" + "---|" * len(steps)]
        own = all("target" in (r.get("torchgfn") or {}) for r in tb.values())  # older runs: rlpt's reward
        for side, label in (("rlpt", "rlpt vs rlpt's reward"),
                            ("torchgfn", f"torchgfn vs {'torchgfn' if own else 'rlpt'}'s reward")):
            rows = [r[side]["curve"] for r in tb.values() if (r.get(side) or {}).get("curve")]
            out.append(f"| {label} | " + " | ".join(ms([c[i]["l1"] for c in rows]) for i in range(len(steps))) + " |")
    tasks = [t for t in TASKS if any(t in res["seeds"][k] for k in seeds)]
    for task in tasks:
        runs = [res["seeds"][k][task] for k in seeds if task in res["seeds"][k]]
        success = ms([r["pretrain"]["curve"][-1]["success_rate"] for r in runs])
        out += ["", f"{task}: OC-GFN pretraining success {success} ({len(runs)} seeds)", "",
                "| reward | scratch TB L1 @final | exact conversion L1 | amortized L1 @final | exact within 1/3 | "
                "amortized within 1/3 |", "|---|---|---|---|---|---|"]
        for name in TASKS[task]["rewards"]:
            cells = [r["adapt"][name] for r in runs if name in r["adapt"]]
            out.append(f"| {name} | {ms([c['scratch_final_l1'] for c in cells])} | "
                       f"{ms([c['exact']['l1'] for c in cells])} | "
                       f"{ms([c['amortized']['curve'][-1]['l1'] for c in cells])} | "
                       f"{sum(c['target_exact_within_third'] for c in cells)}/{len(cells)} | "
                       f"{sum(c['target_amortized_within_third'] for c in cells)}/{len(cells)} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", nargs="*", choices=sorted(TASKS), default=sorted(TASKS),
                   help="parts 2-3 on these DAGs (`--tasks` with none: part 1 only)")
    p.add_argument("--scratch-steps", type=int, default=1000, help="part 1: TB iterations (rlpt and torchgfn)")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--adapt-steps", type=int, default=1500, help="part 3: scratch and amortized iterations")
    p.add_argument("--every", type=int, default=100, help="iterations between exact evaluations")
    p.add_argument("--torchgfn-python", default=os.environ.get("TORCHGFN_PYTHON", "/tmp/tgfn/venv/bin/python"))
    p.add_argument("--skip-tb", action="store_true", help="skip part 1 (rlpt TB vs torchgfn)")
    p.add_argument("--amortized-flows", choices=("ancestors", "learned"), default="ancestors",
                   help="the amortized adapter's F(s|y): exact over the ancestors of s (default) or the OC-GFN's "
                        "flow head (what the results before 2026-11-27 evening used)")
    p.add_argument("--skip-torchgfn", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gfn.json"))
    add_merge_arg(p)
    add_resummarize_arg(p)
    p.add_argument("--table", action="store_true", help="print the markdown tables of --out (docs/gfn.md) and exit")
    args = p.parse_args()
    if args.resummarize:
        resummarize(args.resummarize, lambda report: {"summary": summarize(report["seeds"])})
        return
    if args.table:
        print(tables(json.loads(Path(args.out).read_text())))
        return
    if args.merge:
        parts = read_parts(args.merge)
        seeds = merge_nested([part["seeds"] for part in parts], depth=2)
        res = {"command": command_line(),
               "parts": part_summary(args.merge, parts, keys=("command", "seconds", "versions", "machine")),
               "seeds": seeds, "summary": summarize(seeds)}
        write_result(args.out, res)
        print(json.dumps(res["summary"], indent=1))
        return
    set_threads(1)
    t_start = time.time()
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    res: dict = {"command": command_line(), "torch_threads": 1, "args": vars(args), "versions": versions(),
                 "machine": machine(), "seeds": previous.get("seeds", {})}

    def dump() -> None:
        res["seconds"] = round(time.time() - t_start, 1)
        res["machine"]["loadavg_at_save"] = loadavg()
        res["summary"] = summarize(res["seeds"])
        write_result(args.out, res)

    for seed in args.seeds:
        out = res["seeds"].setdefault(str(seed), {})

        def log(msg: str, seed: int = seed) -> None:
            print(f"[seed {seed}] {msg}", flush=True)

        if not args.skip_tb and "tb" not in out:  # 1. scratch TB, rlpt vs torchgfn
            env = HyperGrid(2, 16, reward={"name": "hypergrid", "R0": 0.1})
            tb = {"rlpt": l1_curve_rlpt(env, args.scratch_steps, args.every, seed, loss="tb", backward="learned")}
            tb["rlpt"]["target"] = "rlpt's HyperGridReward"
            log(f"rlpt TB: {tb['rlpt']['it_per_s']:.1f} it/s ({tb['rlpt']['cpu_it_per_s']:.1f} per CPU second), "
                f"final L1 {tb['rlpt']['curve'][-1]['l1']:.3f}")
            if not args.skip_torchgfn:
                tb["torchgfn"] = torchgfn_run(args.torchgfn_python, env, args.scratch_steps, args.every, seed)
                if tb["torchgfn"] and "curve" in tb["torchgfn"]:
                    log(f"torchgfn TB: {tb['torchgfn']['it_per_s']:.1f} it/s ({tb['torchgfn']['cpu_it_per_s']:.1f} "
                        f"per CPU second), final L1 {tb['torchgfn']['curve'][-1]['l1']:.3f} (own reward)")
                elif tb["torchgfn"]:
                    raise RuntimeError(f"torchgfn run failed:\n{tb['torchgfn']['error']}")
            out["tb"] = tb
            dump()
        for task in args.tasks:  # 2-3. OC-GFN pretraining and adaptation
            if task not in out:
                out[task] = pretrain_and_adapt(task, seed, args, log)
                dump()
    dump()
    print(f"wrote {args.out} in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
