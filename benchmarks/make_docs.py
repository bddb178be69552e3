"""Generate docs/benchmarks.md (and its figures under docs/figures/) from benchmarks/results/*.json.

Every number on the page comes from a results file; the prose in this script only explains what a table
holds. Each results family has one small renderer; a file no renderer claims gets a generic table of its
scalar fields, so a new results file always shows up on the page.

    python benchmarks/make_docs.py            # rewrite docs/benchmarks.md and docs/figures/bench_*.png
    python benchmarks/make_docs.py --check    # exit 1 if the committed page differs from what it would write

tests/test_docs.py runs the check, so the page cannot drift from the JSONs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
FIGURES = ROOT / "docs" / "figures"
FIG_PREFIX = "bench_"  # generated figures; anything else in docs/figures is left alone


# ---------------------------------------------------------------- formatting helpers

def num(x, digits: int = 2) -> str:
    """A number as text: ints as ints with thousands separators, floats rounded, None as a dash."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if x == int(x) and abs(x) >= 1000:
            return f"{int(x):,}"
        return f"{x:,.{digits}f}"
    return str(x)


def pm(d, digits: int = 1) -> str:
    """{"mean", "std"} as 'mean ± std'."""
    if not isinstance(d, dict) or "mean" not in d:
        return num(d, digits)
    if d.get("std") is None:
        return num(d["mean"], digits)
    return f"{num(d['mean'], digits)} ± {num(d['std'], digits)}"


def stat_cell(d, digits: int = 1) -> str:
    """One arm over seeds as 'mean ± std [low, high]' (the bootstrap interval of the mean), followed by
    '; IQM x [low, high]' with 4 or more seeds (below that the IQM is the mean). A dict without intervals (an
    older results file: {"mean", "std", "n"}) reads 'mean ± std', as `pm` writes it."""
    text = pm(d, digits)
    if not isinstance(d, dict) or not d.get("mean_ci"):
        return text
    text += f" [{num(d['mean_ci'][0], digits)}, {num(d['mean_ci'][1], digits)}]"
    if d.get("iqm") is not None and d.get("n", 0) >= 4:
        text += f"; IQM {num(d['iqm'], digits)}"
        if d.get("iqm_ci"):
            text += f" [{num(d['iqm_ci'][0], digits)}, {num(d['iqm_ci'][1], digits)}]"
    return text


def diff_cell(c, digits: int = 1, unit: str = "") -> str:
    """A difference with its interval, '+x [lo, hi]': `bootstrap_diff_ci`'s {"diff", "low", "high"} or an older
    {"mean", "ci95": [lo, hi]}; a dash when missing."""
    if not isinstance(c, dict):
        return "–"
    if "diff" in c:
        x, lo, hi = c["diff"], c.get("low"), c.get("high")
    else:
        x, (lo, hi) = c.get("mean"), (c.get("ci95") or [None, None])
    if x is None:
        return "–"
    if lo is None or hi is None:
        return f"{signed(x, digits)}{unit}"
    return f"{signed(x, digits)}{unit} [{signed(lo, digits)}, {signed(hi, digits)}]"


def signed(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def met(flag) -> str:
    return "–" if flag is None else ("met" if flag else "**missed**")


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out + [""]


def source(name: str, d: dict) -> list[str]:
    """One line naming the file, its command and where it ran."""
    parts = [f"Source: `benchmarks/results/{name}`"]
    cmd = d.get("command")
    if isinstance(cmd, str) and cmd:
        parts.append(f"command `{cmd}`")
    m = d.get("machine")
    if isinstance(m, dict):
        where = m.get("cuda_device") or m.get("cpu_model") or m.get("processor") or m.get("platform")
        if where:
            parts.append(f"machine: {where}")
    elif isinstance(m, str):
        parts.append(f"machine: {m}")
    return ["; ".join(parts) + ".", ""]


# ---------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "svg.hashsalt": "rlpt"})
    return plt


def save_figure(fig, name: str, figdir: Path | None) -> str:
    """Write a PNG without a timestamp or version stamp (same data, same bytes) and return its page link.
    With figdir None nothing is written (the page text alone)."""
    import matplotlib.pyplot as plt

    path = Path(f"{FIG_PREFIX}{name}.png")
    if figdir is not None:
        figdir.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(figdir / path, format="png", metadata={"Software": None})
    plt.close(fig)
    return f"figures/{path.name}"


def ci_band(ax, xs, ys_per_seed, label):
    """The mean over seeds with a bootstrap 95% interval of it as a band (`rlpt.eval.stats.aggregate_curves`)."""
    from rlpt.eval.stats import aggregate_curves

    agg = aggregate_curves([dict(zip(xs, ys, strict=True)) for ys in ys_per_seed])
    (line,) = ax.plot(agg["steps"], agg["mean"], label=f"{label} (n={len(ys_per_seed)})")
    ax.fill_between(agg["steps"], agg["low"], agg["high"], alpha=0.2, color=line.get_color())


def mean_band(ax, xs, ys_per_seed, label):
    """The mean over seeds with ± one standard deviation as a band."""
    import numpy as np

    ys = np.asarray(ys_per_seed, dtype=float)
    m, s = ys.mean(0), ys.std(0)
    (line,) = ax.plot(xs, m, label=f"{label} (n={len(ys)})")
    ax.fill_between(xs, m - s, m + s, alpha=0.2, color=line.get_color())


def common_curves(curves: list[list[tuple[float, float]]]):
    """Curves (per seed) restricted to the x values every seed has."""
    xs = sorted(set.intersection(*[{x for x, _ in c} for c in curves])) if curves else []
    return xs, [[dict(c)[x] for x in xs] for c in curves]


# ---------------------------------------------------------------- renderers

Renderer = Callable[[str, dict, Path], list[str]]


def r_quickstart(name, d, figdir):
    out = [d.get("story", ""), ""] if d.get("story") else []
    out += table(["stage", "normalized score"], [
        ["dataset average", num(d.get("dataset_score"), 1)],
        ["BC ensemble members", ", ".join(num(x, 1) for x in d.get("bc_members", []))],
        ["best BC member", num(d.get("best_bc_member"), 1)],
        ["offline (Uni-O4)", num(d.get("offline_score"), 1)],
        ["first online evaluation", num(d.get("first_online_score"), 1)],
        [f"online after {num(d.get('online_steps'))} env steps", num(d.get("online_score"), 1)],
    ])
    t, ope = d.get("time", {}), d.get("ope", {})
    out += table(["measure", "value"], [
        ["CPU seconds (user + system)", num(t.get("cpu_user_seconds", 0) + t.get("cpu_system_seconds", 0), 1)],
        ["wall seconds", num(t.get("wall_seconds"), 1)],
        ["what the time includes", t.get("includes", "–")],
        ["OPE Spearman (score vs true return)", num(ope.get("spearman"), 2)],
        ["OPE noise SD", num(ope.get("noise_sd"), 2)],
        ["acceptances not worse than the reference replaced", num(ope.get("acceptances_not_worse"), 2)],
    ])
    out += table(["target", "status"], [[k, met(v)] for k, v in d.get("targets", {}).items()])
    online = d.get("evaluations", {}).get("online", [])
    if online:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([e["online_step"] for e in online], [e["eval/normalized_score"] for e in online], marker="o")
        ax.axhline(d.get("best_bc_member", 0), ls="--", color="grey", label="best BC member")
        ax.set_xlabel("online env steps")
        ax.set_ylabel("normalized score")
        ax.legend()
        out += [f"![quickstart online curve]({save_figure(fig, 'quickstart', figdir)})", ""]
    return out


LEARNING_ROWS = [
    ("unio4_offline", "Uni-O4 offline"),
    ("best_bc_member", "best Uni-O4 BC ensemble member"),
    ("iql", "IQL"),
    ("bc", "BC (deterministic MSE)"),
    ("calql", "Cal-QL"),
    ("unio4_first_online", "Uni-O4 first online evaluation"),
    ("unio4_online", "Uni-O4 after the online budget"),
    ("ppo_scratch", "SB3 PPO from scratch"),
    ("ope_spearman", "Spearman(OPE score, true return)"),
    ("ope_noise_sd", "OPE noise SD"),
    ("ope_iterate_scores_sd", "SD of OPE scores across iterates"),
    ("acceptances_not_worse", "acceptances not worse than the reference replaced"),
]
LEARNING_CI = [("unio4_minus_iql", "Uni-O4 − IQL"), ("unio4_minus_best_bc", "Uni-O4 − best BC member"),
               ("online_minus_offline", "Uni-O4 online − offline")]


def _learning_budgets(d, ds):
    """Offline updates and online steps per algorithm, read from the per-seed results."""
    seeds = d.get("results", {}).get(ds, {})
    budget = {}
    for res in seeds.values():
        for algo, r in res.items():
            if not isinstance(r, dict):
                continue
            if algo == "unio4":
                budget.setdefault("unio4", (r.get("offline_updates"), None))
            else:
                budget.setdefault(algo, (r.get("offline_steps"), r.get("online_steps")))
    return budget


def r_learning(name, d, figdir):
    summ = d.get("summary", {})
    dss = list(summ)
    out = table(["", *dss], [[label, *[stat_cell(summ[ds].get(key), 2 if "spearman" in key or "accept" in key
                                                  else 1) for ds in dss]] for key, label in LEARNING_ROWS])
    out += ["Per-seed differences, mean and paired bootstrap 95% interval:", ""]
    out += table(["difference", *dss], [[label, *[diff_cell(summ[ds].get("ci", {}).get(key)) for ds in dss]]
                                        for key, label in LEARNING_CI])
    out += ["Budgets (offline gradient updates / online env steps, from the per-seed results):", ""]
    algos = sorted({a for ds in dss for a in _learning_budgets(d, ds)})
    out += table(["algorithm", *dss], [[a, *[" / ".join(num(x) for x in _learning_budgets(d, ds).get(a, (None, None)))
                                            for ds in dss]] for a in algos])
    keys = []
    for ds in dss:
        keys += [k for k in summ[ds].get("targets", {}) if isinstance(summ[ds]["targets"][k], bool) and k not in keys]
    out += ["Targets (each key names its threshold):", ""]
    out += table(["target", *dss], [[k, *[met(summ[ds].get("targets", {}).get(k)) for ds in dss]] for k in keys])
    if d.get("note"):
        out += [f"Note recorded with the results: {d['note']}", ""]
    plt = _plt()
    fig, axes = plt.subplots(1, len(dss), figsize=(4.5 * len(dss), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], dss, strict=True):
        curves = [[tuple(p) for p in r["unio4"]["online_curve"]] for r in d["results"][ds].values()
                  if "online_curve" in r.get("unio4", {})]
        if curves:
            xs, ys = common_curves(curves)
            ci_band(ax, xs, ys, "Uni-O4 online")
        ax.set_title(ds)
        ax.set_xlabel("online env steps")
        ax.set_ylabel("normalized score")
        ax.legend()
    out += [f"![Uni-O4 online curves, mean and bootstrap 95% interval over seeds]"
            f"({save_figure(fig, 'learning_online', figdir)})", ""]
    return out


def r_unio4_critic(name, d, figdir):
    rows = []
    for arm, a in d.get("arms", {}).items():
        handed = a.get("handed_off") or {}
        rows.append([arm, num(a.get("iterate_return_mean"), 1), num(a.get("iterate_return_max"), 1),
                     num(a.get("share_above_best_bc"), 2), num(handed.get("return"), 1), num(a.get("spearman"), 2),
                     num(a.get("accepted"))])
    out = [f"Dataset `{d.get('dataset')}`, seed {d.get('seed')}, preset `{d.get('preset')}`. Arms: "
           + "; ".join(f"`{c}`" for c in d.get("commands", [])) + ".", ""]
    out += table(["arm", "iterates' mean return", "best iterate", "share above best BC member",
                  "handed-off return", "OPE Spearman", "accepted"], rows)
    if d.get("note"):
        out += [d["note"], ""]
    return out


def r_unio4_ope_probe(name, d, figdir):
    out = [d.get("note", ""), ""]
    out += table(["run", "OPE overrides", "Spearman", "accepted", "iterates' mean return", "share above best BC"],
                 [[k, f"`{json.dumps(r.get('ope_overrides'))}`", num(r.get("spearman"), 2), num(r.get("accepted")),
                   num(r.get("iterate_return_mean"), 1), num(r.get("share_above_best_bc"), 2)]
                  for k, r in d.get("runs", {}).items()])
    return out


def _bench_module(name: str):
    """A script of benchmarks/ loaded by its path (for the summary function that goes with its results file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def r_unio4_ope_ablation(name, rows, figdir):
    out = table(["seed", "variant", "critic lr", "offline", "Spearman", "accepted", "seconds"],
                [[r.get("seed"), f"`{json.dumps(r.get('variant'))}`", num(r.get("critic_lr"), 4),
                  num(r.get("offline"), 1), num(r.get("spearman"), 3), num(r.get("accepted")), num(r.get("seconds"))]
                 for r in rows])
    out += ["Per variant over seeds (`summarize` in `benchmarks/unio4_ope_ablation.py`); with two seeds the "
            "bootstrap interval spans the two values, so read it as their range:", ""]
    out += table(["variant", "critic lr", "seeds", "offline", "Spearman", "offline − the `{}` variant's"],
                 [[f"`{json.dumps(e['variant'])}`", num(e["critic_lr"], 4), ", ".join(map(str, e["seeds"])),
                   stat_cell(e["offline"], 1), stat_cell(e["spearman"], 2), diff_cell(e["offline_minus_baseline"])]
                  for e in _bench_module("unio4_ope_ablation").summarize(rows)])
    return out


def r_agent_speed(name, d, figdir):
    s, m = d.get("settings", {}), d.get("machine", {})
    out = [f"Preset `{d.get('preset')}` on {m.get('cuda_device') or m.get('cpu_model')} (device {m.get('device')}, "
           f"torch {d.get('versions', {}).get('torch')}, {m.get('torch_threads')} torch threads); target: rlpt ≥ "
           f"{num(s.get('target'))} × bare, judged on the {d.get('target_judged_on')}.", ""]
    out += table(["phase", "unit", "rlpt", "bare", "ratio (wall)", "rlpt per CPU s", "bare per CPU s",
                  "ratio (CPU time)", "target"],
                 [[r.get("label"), r.get("unit"), num(r.get("rlpt")), num(r.get("bare")), num(r.get("ratio")),
                   num(r.get("rlpt_per_cpu_s")), num(r.get("bare_per_cpu_s")), num(r.get("cpu_time_ratio")),
                   met(r.get("target_met"))] for r in d.get("rows", [])])
    return out


def r_tabletop_render(name, d, figdir):
    out = table(["task / actions", "steps per second"], [[k, num(v, 1)] for k, v in d.get("steps_per_s", {}).items()])
    out += table(["camera", "size", "render frames/s", "step + render per s"],
                 [[r["camera"], r["size"], num(r["render_fps"], 1), num(r["step_and_render_per_s"], 1)]
                  for r in d.get("render", [])])
    return out


def r_video_loader(name, d, figdir):
    rows = []
    for c in d.get("cells", []):
        for clock in ("wall", "cpu"):
            w = c[clock]
            rows.append([c["cell"], c["source"], f"{c['clip_len']} / {c['stride']} / {c['out_size']}", clock,
                         num(w["loader_fps_median"]), num(w["opencv_fps_median"]), num(w["ratio_median"])])
    out = table(["cell", "source", "clip length / stride / size", "clock", "rlpt frames/s", "OpenCV frames/s",
                 "ratio"], rows)
    out += table(["frame gap", "grab ms", "seek ms"],
                 [[g["gap"], num(g["grab_ms"], 2), num(g["seek_ms"], 2)] for g in d.get("gap_costs", [])])
    return out


def r_contextwm_speed(name, d, figdir):
    out = table(["row", "preset", "contextual", "image", "batch", "threads", "device", "params",
                 "s / update", "updates / s", "CPU s / update"],
                [[r["name"], r["preset"], num(r["contextual"]), r["image_size"], " × ".join(map(str, r["batch"])),
                  r["threads"], r["device"], num(r["params"]), num(r["seconds_per_update"], 3),
                  num(r["updates_per_s"], 2), num(r.get("cpu_seconds_per_update"), 3)] for r in d.get("results", [])])
    comp = d.get("r2dreamer_comparison") or {}
    if comp:
        out += table(["row", "rlpt s / update", "r2dreamer s / update", "r2dreamer world-model share (s)",
                      "rlpt threads", "r2dreamer threads"],
                     [[k, num(c["rlpt_seconds_per_update"], 2), num(c["r2dreamer_seconds_per_update"], 2),
                       " – ".join(num(x, 2) for x in c["r2dreamer_world_model_share_seconds"]),
                       c["rlpt_threads"], c["r2dreamer_threads"]] for k, c in comp.items()])
    return out


CWM_METRICS = [("final/open_loop_mse", "open-loop image MSE (final)", 4),
               ("curve_mean/open_loop_mse", "open-loop image MSE (curve mean)", 4),
               ("final/probe_r2_feat", "linear state probe R² (final)", 3),
               ("final/reward_mse", "reward MSE (final)", 3)]


def _pct_cell(e: dict) -> str:
    if e.get("pct_change") is None:
        return "–"
    ci = e.get("pct_change_ci")
    return f"{signed(e['pct_change'])}%" + (f" [{signed(ci[0])}, {signed(ci[1])}]" if ci else "")


def r_contextwm(name, d, figdir):
    summ = d.get("summary", {})
    inits = list(summ)
    out = table(["metric", *inits], [[label, *[stat_cell(summ[i].get(k), digits) for i in inits]]
                                     for k, label, digits in CWM_METRICS])
    b = d.get("baselines", {})
    out += table(["baseline", "value"], [
        ["open-loop MSE of copying the last frame", num(b.get("open_loop_mse_copy_last_frame"), 4)],
        ["reward MSE of predicting the training mean", num(b.get("reward_mse_train_mean"), 3)],
        ["linear probe R² on raw pixels", num(b.get("probe_raw_pixels_r2"), 3)]])
    eff = d.get("effects", {})
    out += ["Effects: change of the mean open-loop MSE, with a bootstrap 95% interval of the ratio of means paired "
            "over seeds where the file has one (negative: lower error):", ""]
    out += table(["comparison", "final open-loop MSE change", "curve-mean open-loop MSE change"],
                 [[k, *[_pct_cell(e.get(m, {})) for m in ("final/open_loop_mse", "curve_mean/open_loop_mse")]]
                  for k, e in eff.items()])
    ar = d.get("agent_return", {})
    if ar.get("summary"):
        s = ar["summary"]
        arms = [k for k, v in s.items() if isinstance(v, dict)]
        out += [f"Dreamer agent return on the target task (recipe `{ar.get('settings', {}).get('recipe')}`, "
                f"{num(ar.get('settings', {}).get('online_steps'))} online steps):", ""]
        out += table(["init", "final return, mean ± std [95% interval]", "per seed"],
                     [[a, stat_cell(s[a], 1), ", ".join(num(v, 1) for v in s[a]["values"])] for a in arms
                      if "values" in s[a]])
        if s.get("contextwm_minus_scratch_ci"):
            c = s["contextwm_minus_scratch_ci"]
            how = f"paired over seeds {', '.join(map(str, c['seeds']))}" if c.get("paired") else "unpaired"
            out += [f"ContextWM − scratch, final return: {diff_cell(c)} (bootstrap 95% interval, {how}).", ""]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    by_init: dict[str, list] = {}
    for r in d.get("runs", {}).values():
        by_init.setdefault(r["init"], []).append([(c["update"], c["open_loop_mse"]) for c in r["curve"]])
    for init, curves in by_init.items():
        xs, ys = common_curves(curves)
        ci_band(axes[0], xs, ys, init)
    axes[0].set_xlabel("fine-tuning updates")
    axes[0].set_ylabel("held-out open-loop MSE")
    axes[0].legend()
    by_init = {}
    for r in ar.values():
        if isinstance(r, dict) and "curve" in r:
            by_init.setdefault(r["init"], []).append([(c["online_step"], c["return"]) for c in r["curve"]])
    for init, curves in by_init.items():
        xs, ys = common_curves(curves)
        ci_band(axes[1], xs, ys, init)
    axes[1].set_xlabel("online env steps")
    axes[1].set_ylabel("eval return")
    if by_init:
        axes[1].legend()
    out += [f"![ContextWM fine-tuning and agent return, mean and bootstrap 95% interval over seeds]"
            f"({save_figure(fig, 'contextwm', figdir)})", ""]
    return out


def r_vptr(name, d, figdir):
    summ = d.get("summary", {})
    b = d.get("budgets", {})
    out = [f"Budgets requested: {', '.join(f'{k} {num(v)}' for k, v in b.items())}; device "
           f"{d.get('machine', {}).get('device')}; seeds {d.get('seeds')}.", ""]
    rows = []
    for arm, s in summ.items():
        oc, onc = s.get("offline_success_at_common_step"), s.get("online_success_at_common_step")
        rows.append([arm, " / ".join(num(x) for x in s.get("offline_steps_run", []) if x is not None) or "–",
                     " / ".join(num(x) for x in s.get("online_steps_run", []) if x is not None) or "–",
                     f"{stat_cell(oc, 2)} (step {num(oc['step'])})" if oc else "–",
                     f"{stat_cell(onc, 2)} (step {num(onc['step'])})" if onc else "–",
                     stat_cell(s.get("offline_success_rate"), 2), stat_cell(s.get("online_success_rate"), 2)])
    out += table(["arm", "offline updates run", "online steps run", "offline success at the common step",
                  "online success at the common step", "offline success (end)", "online success (end)"], rows)
    keys = ("offline_success_at_common_step", "online_success_at_common_step", "offline_success_rate",
            "online_success_rate")
    drows = [[arm, *[diff_cell(s.get(f"{k}_minus_scratch"), 2) for k in keys]] for arm, s in summ.items()
             if any(f"{k}_minus_scratch" in s for k in keys)]
    if drows:
        out += ["Success minus scratch's, bootstrap 95% interval paired over seeds (online only where both arms ran "
                "the same offline updates):", ""]
        out += table(["arm", "offline, common step", "online, common step", "offline (end)", "online (end)"], drows)
    pre = d.get("pretraining", {})
    prow = [[seed, arm, num(p.get("steps")), num(p.get("value_order"), 2) if "value_order" in p else "–"]
            for seed, arms in pre.items() for arm, p in arms.items()]
    if prow:
        out += table(["seed", "pretraining", "updates", "ICVF value order"], prow)
    curves = [r for r in d.get("runs", []) if r.get("curve")]
    if curves:
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, phase in zip(axes, ("offline", "online"), strict=True):
            by_arm: dict[str, list] = {}
            for r in curves:
                by_arm.setdefault(r["arm"], []).append([(c["step"], c["success_rate"]) for c in r["curve"]
                                                        if c["phase"] == phase])
            for arm, cs in by_arm.items():
                xs, ys = common_curves(cs)
                if xs:
                    ci_band(ax, xs, ys, arm)
            ax.set_title(phase)
            ax.set_xlabel(f"{phase} steps")
            ax.set_ylabel("success rate")
            ax.legend()
        out += [f"![V-PTR success curves, mean and bootstrap 95% interval over seeds]"
                f"({save_figure(fig, Path(name).stem, figdir)})", ""]
    return out


def r_icvf_probe(name, d, figdir):
    rows = []
    for r in d.get("results", []):
        c, g = r.get("config", {}), r.get("groups", {})
        setting = (f"lr {c.get('lr')}, stride {c.get('stride')}, {c.get('image_size')} px, tau {c.get('tau')}, "
                   f"discount {c.get('discount')}, LayerNorm {num(c.get('layer_norm'))}")
        if "random_goals" in c:
            setting += f", random goals {c['random_goals']} (p {c.get('p_randomgoal')})"
        if c.get("mc_floor"):
            setting += ", the clip's return as a floor"
        if c.get("mc_weight"):
            setting += f", the clip's return mixed in at {c['mc_weight']}"
        if c.get("p_samegoal", 0.5) != 0.5:
            setting += f", outcome = intention with p {c['p_samegoal']}"
        tp = g.get("tabletop-push", {})
        rows.append([f"`{r['checkpoint']}`", num(r.get("step")), setting,
                     f"{signed(tp.get('value_order'), 2)} / {num(tp.get('value_spread'), 3)} / "
                     f"{num(tp.get('dead_features'), 2)}" if tp else "–",
                     ", ".join(f"{k} {signed(v['value_order'], 2)}" for k, v in g.items() if k != "tabletop-push")])
    out = [f"Videos `{d.get('videos')}`, {d.get('clips_per_group')} clips per group. Value order: rank correlation "
           "of V(frame, last frame) with time (1 = the value rises towards the goal frame).", ""]
    return out + table(["checkpoint", "updates", "settings", "tabletop-push order / spread / dead outputs",
                        "other domains' order"], rows)


def r_time_to_goal(name, d, figdir):
    """benchmarks/time_to_goal_probe.py: the ICVF network regressed on time to the goal, value order by step."""
    rows = [[num(h["step"]), signed(h.get("value_order"), 2), num(h.get("value_spread"), 2), num(h.get("loss"), 2)]
            for h in d.get("history", [])]
    return [f"Train videos `{d.get('train')}`, held-out videos `{d.get('held_out')}`, {num(d.get('steps'))} updates "
            f"(target variance {num(d.get('target_variance'), 2)}); value order on the held-out clips:", ""] + \
        table(["updates", "held-out value order", "value spread", "regression loss"], rows)


def r_vlm_rewards(name, d, figdir):
    conds = d.get("summary", {}).get("conditions", {})
    online = any(s.get("online_mean_success") for s in conds.values())
    out = table(["condition", "final success", "offline success"] + (["mean online success"] if online else [])
                + ["steps to 50% success", "seeds reaching 50%", "largest dip in the first online steps"],
                [[c, stat_cell(s.get("final_success"), 2), stat_cell(s.get("offline_success"), 2)]
                 + ([stat_cell(s.get("online_mean_success"), 2)] if online else [])
                 + [stat_cell(s.get("steps_to_50"), 0), num(s.get("reached_50")),
                    stat_cell(s.get("max_dip_first_2k"), 2)]
                 for c, s in conds.items()])
    tg = d.get("summary", {}).get("targets", {})

    def value(v):
        if isinstance(v, bool):
            return met(v)
        if isinstance(v, dict) and "ratio" in v:
            return f"{num(v['ratio'], 2)} [{num(v['low'], 2)}, {num(v['high'], 2)}]"
        if isinstance(v, dict):
            return diff_cell(v, 1, " points")
        return num(v, 3)

    if tg:
        out += table(["measure", "value"], [[k, value(v)] for k, v in tg.items()])
    res = d.get("results", {})
    if res:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for c in conds:
            cs = [[tuple(p) for p in seed[c]["curve"]] for seed in res.values() if c in seed]
            if cs:
                xs, ys = common_curves(cs)
                mean_band(ax, xs, ys, c)
        ax.set_xlabel("online env steps (reset-free)")
        ax.set_ylabel("success rate")
        ax.legend(fontsize=7)
        out += [f"![success curves]({save_figure(fig, Path(name).stem, figdir)})", ""]
    return out


def r_gfn(name, d, figdir):
    s = d.get("summary", {})
    tb = s.get("tb_vs_torchgfn", {})
    out = []
    if tb:
        diff = tb.get("final_l1_rlpt_minus_torchgfn", {})
        out += ["Trajectory balance from scratch, rlpt against torchgfn (each on its own reward: "
                f"{tb.get('l1_target')}):", ""]
        out += table(["measure", "rlpt", "torchgfn", "ratio or difference"], [
            ["iterations / s (wall)", stat_cell(tb.get("rlpt_it_per_s")), stat_cell(tb.get("torchgfn_it_per_s")),
             stat_cell(tb.get("it_per_s_ratio"), 2)],
            ["iterations / CPU s", stat_cell(tb.get("rlpt_cpu_it_per_s")), stat_cell(tb.get("torchgfn_cpu_it_per_s")),
             stat_cell(tb.get("cpu_it_per_s_ratio"), 2)],
            ["final exact L1", stat_cell(tb.get("rlpt_final_l1"), 3), stat_cell(tb.get("torchgfn_final_l1"), 3),
             diff_cell(diff, 3)]])
    for dag in ("hypergrid", "bitseq"):
        if dag not in s:
            continue
        g = s[dag]
        out += [f"OC-GFN on `{dag}`: reward-free pretraining success {stat_cell(g.get('pretrain_success'), 3)}; "
                "adaptation, final exact L1 (mean ± std [bootstrap 95% interval] over seeds), each adapter's L1 "
                "minus scratch's (paired over seeds), and how many reward-seed pairs reach scratch's final L1 "
                "within a third of its steps:", ""]
        out += table(["reward", "TB from scratch", "exact conversion", "amortized adapter", "exact − scratch",
                      "amortized − scratch", "exact within a third", "amortized within a third"],
                     [[r, stat_cell(v["scratch_final_l1"], 3), stat_cell(v["exact_l1"], 3),
                       stat_cell(v["amortized_final_l1"], 3), diff_cell(v.get("exact_minus_scratch_l1"), 3),
                       diff_cell(v.get("amortized_minus_scratch_l1"), 3),
                       f"{v['exact_within_third']} of {v['seeds']}", f"{v['amortized_within_third']} of {v['seeds']}"]
                      for r, v in g.items() if isinstance(v, dict) and "exact_l1" in v])
    seeds = d.get("seeds", {})
    tbc = [(sd["tb"]["rlpt"]["curve"], sd["tb"]["torchgfn"]["curve"]) for sd in seeds.values() if "tb" in sd]
    if tbc:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for i, label in enumerate(("rlpt", "torchgfn")):
            xs, ys = common_curves([[(c["step"], c["l1"]) for c in pair[i]] for pair in tbc])
            ci_band(ax, xs, ys, label)
        ax.set_xlabel("TB training steps")
        ax.set_ylabel("exact L1 to R/Z")
        ax.set_yscale("log")
        ax.legend()
        out += [f"![TB from scratch, rlpt vs torchgfn, mean and bootstrap 95% interval over seeds]"
                f"({save_figure(fig, 'gfn_tb', figdir)})", ""]
    return out


def r_tune(name, d, figdir):
    out = []
    for sweep, sw in d.get("sweeps", {}).items():
        out += [f"Sweep `{sweep}`: `{sw.get('command')}`", ""]
        out += table(["trial", "status", "final score", "best score", "seconds"],
                     [[t.get("trial"), t.get("status"), num(float(t["eval/normalized_score"]), 2)
                       if t.get("eval/normalized_score") else "–",
                       num(float(t["best eval/normalized_score"]), 2) if t.get("best eval/normalized_score") else "–",
                       t.get("seconds")] for t in sw.get("trials", [])])
    rep = d.get("reproduction", {})
    if rep:
        out += [f"Retraining the best config: `{rep.get('command')}`; identical scores: "
                f"{num(rep.get('identical'))}.", ""]
        keys = list(rep.get("trial", {}))
        out += table(["", *keys], [[k, *[num(rep[k].get(x), 2) for x in keys]] for k in ("trial", "retrained")])
    return out


def r_part(name, d, figdir):
    """A per-seed or per-part file that a merged file beside it summarises."""
    extra = f"; {num(d['seconds'], 0)} s" if isinstance(d.get("seconds"), int | float) else ""
    return [f"Part of a merged result{extra}.", ""]


def _scalars(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and prefix.count("/") < 2:
            yield from _scalars(v, f"{prefix}{k}/")
        elif isinstance(v, int | float | bool | str) and not (isinstance(v, str) and len(v) > 120):
            yield f"{prefix}{k}", v


def r_generic(name, d, figdir):
    """Any results file no renderer claims: its scalar fields."""
    if not isinstance(d, dict):
        return [f"{len(d)} records.", ""]
    rows = [[f"`{k}`", num(v, 4) if isinstance(v, float) else v] for k, v in _scalars(d)]
    return table(["field", "value"], rows[:60])


# ---------------------------------------------------------------- page layout

SECTIONS: list[tuple[str, str, list[tuple[str, Renderer]]]] = [
    ("Quickstart",
     "`rlpt quickstart`: the whole Uni-O4 offline-to-online pipeline on embedded defaults, timed end to end.",
     [("quickstart.json", r_quickstart)]),
    ("Offline and online learning",
     "`benchmarks/learning.py`: Uni-O4 against IQL, Cal-QL and BC at the same offline update budget on the CPU "
     "presets, then Uni-O4 online against SB3 PPO from scratch. Final (last) normalized scores, mean ± std over "
     "seeds. The merged file is built from the per-seed parts listed after it. The Cal-QL row ran a smaller budget "
     "than the others (see the budgets table), so it is not a like-for-like comparison.",
     [("learning.json", r_learning)]),
    ("Uni-O4 critic and OPE probes",
     "`benchmarks/unio4_critic.py`: one post-BC checkpoint, different critics; the true return of every "
     "OPE-scored improvement iterate shows whether the critic's advantage points the right way. The OPE probe "
     "and the earlier ablation vary the offline policy evaluation on such critics.",
     [("unio4_critic.json", r_unio4_critic), ("unio4_ope_probe.json", r_unio4_ope_probe),
      ("unio4_ope_ablation.jsonl", r_unio4_ope_ablation)]),
    ("Agent speed",
     "`benchmarks/agent_speed.py`: rlpt's gradient updates per phase against a bare PyTorch loop with the same "
     "shapes and batch size, interleaved rounds in one process. On a shared CPU the ratio per CPU second is the "
     "one to read; on a GPU, wall clock.",
     [("agent_speed_cpu.json", r_agent_speed), ("agent_speed_cuda.json", r_agent_speed),
      ("agent_speed_cuda_paper.json", r_agent_speed)]),
    ("Tabletop rendering",
     "`benchmarks/tabletop_render.py`: physics steps per second per task, and offscreen rendering per camera.",
     [("tabletop_render.json", r_tabletop_render)]),
    ("Video loader",
     "`benchmarks/video_loader.py`: `rlpt.data.video` clip sampling against plain OpenCV (open, seek, read, "
     "resize) on the same clips with identical output; and the cost of grabbing versus seeking across a gap.",
     [("video_loader.json", r_video_loader)]),
    ("ContextWM speed",
     "`benchmarks/contextwm_speed.py`: world-model updates per second per preset, on a loaded CPU, a quiet CPU "
     "and a GPU, with r2dreamer's measured update time at the same shapes for comparison.",
     [("contextwm_speed.json", r_contextwm_speed), ("contextwm_speed_quiet.json", r_contextwm_speed),
      ("contextwm_speed_cuda.json", r_contextwm_speed)]),
    ("ContextWM transfer",
     "`benchmarks/contextwm.py`: world-model fine-tuning on a held-out task after video pretraining (plain or "
     "contextual architecture, pretrained or from scratch), then the Dreamer agent's return online from pixels.",
     [("contextwm.json", r_contextwm)]),
    ("V-PTR",
     "`benchmarks/vptr.py`: Cal-QL from pixels on tabletop push with an ICVF-pretrained, a scratch and a "
     "reconstruction-pretrained encoder. The GPU runs gave every process the same wall-clock budget, so arms ran "
     "different numbers of updates; the 'common step' columns compare them at the same number of updates.",
     [("vptr_h200.json", r_vptr), ("vptr_h200_scratch_matched.json", r_vptr), ("vptr.json", r_vptr)]),
    ("ICVF probe",
     "`benchmarks/icvf_probe.py`: does an ICVF checkpoint's value order frames by time to the goal? Per "
     "checkpoint and video domain.",
     [("icvf_probe.json", r_icvf_probe), ("icvf_probe_tabletop64.json", r_icvf_probe),
      ("icvf_probe_tabletop_20k.json", r_icvf_probe), ("icvf_probe_tabletop_default.json", r_icvf_probe),
      ("icvf_probe_tabletop_workspace.json", r_icvf_probe),
      ("icvf_probe_tabletop_workspace_10looks.json", r_icvf_probe), ("icvf_probe_tabletop_mc.json", r_icvf_probe),
      ("time_to_goal_probe_tabletop_default.json", r_time_to_goal),
      ("time_to_goal_probe_tabletop_ws.json", r_time_to_goal),
      ("time_to_goal_probe_tabletop_ws_6k.json", r_time_to_goal)]),
    ("RoboFuME and KAGI rewards",
     "`benchmarks/vlm_rewards.py`: state-based Cal-QL on tabletop push, offline on demos then reset-free online, "
     "with different reward sources: RoboFuME's success classifier against the true reward, and KAGI's keypoint "
     "rewards (dense, dense on the demonstrations too, noisy, wrong contact point) against the sparse reward.",
     [("vlm_rewards_robofume.json", r_vlm_rewards), ("vlm_rewards_robofume_weak.json", r_vlm_rewards),
      ("vlm_rewards_kagi.json", r_vlm_rewards),
      ("vlm_rewards_kagi_weak.json", r_vlm_rewards), ("vlm_rewards_kagi_pickplace.json", r_vlm_rewards)]),
    ("GFlowNets",
     "`benchmarks/gfn.py`: rlpt's trajectory balance against torchgfn on the HyperGrid, then OC-GFN reward-free "
     "pretraining and adaptation to new rewards (exact conversion, amortized adapter, TB from scratch), with "
     "exact L1 computed on the DAG.",
     [("gfn.json", r_gfn)]),
    ("Ray Tune acceptance",
     "`rlpt tune` over the Uni-O4 quickstart recipe, embedded and against a local Ray head node, and the best "
     "config retrained with `rlpt train`.",
     [("tune_acceptance.json", r_tune)]),
]

# What the committed results show, in words (no numbers: those are in the tables above each paragraph). Rerunning a
# benchmark can change a conclusion; update the paragraph in the same commit as the results file.
READING: dict[str, str] = {
    "Offline and online learning":
        "Uni-O4's critic is the IQL agent's critic with the same settings, so the Uni-O4 and IQL rows differ only in "
        "how the policy is obtained. The targets table is the scorecard: rows marked missed are open problems, not "
        "rounding. The OPE rows compare the evaluator's own noise (re-scoring the same policies) with the spread of "
        "its scores across iterates: when the noise is the smaller of the two, the ranking errors are bias.",
    "Uni-O4 critic and OPE probes":
        "The improvement step follows whatever advantage the critic gives it: with the earlier, under-trained critic "
        "(arm A) no iterate beat the best BC member, and clipping sampled actions (C) barely helped, while a critic "
        "trained further (B) or from scratch with the IQL settings (N) made most iterates beat it. That is why the "
        "presets use the IQL critic settings. A longer model horizon in the OPE probe ranked iterates no better.",
    "Agent speed":
        "On the GPU the CPU preset's small networks are launch-bound (a few hundred updates per second whatever the "
        "loop), which is where the Uni-O4 BC ensemble and improvement rows fall short; with the paper's shapes every "
        "row meets the target.",
    "ContextWM speed":
        "r2dreamer's time per update includes its actor-critic, so its world-model share is the fairer comparison. "
        "On the GPU the process CPU time equals the wall time: one thread launches kernels or waits on them.",
    "ContextWM transfer":
        "Pretraining helps early in fine-tuning (the curve means), and at the end the contextual architecture from "
        "scratch is about level with ContextWM: the end result is mostly the architecture. Plain video pretraining "
        "transfers negatively. Every model is far worse than copying the last frame, because the held-out textures "
        "are unseen backgrounds after few training looks, and the linear state probe and reward error sit at the "
        "no-information level for every initialisation. The agent-return comparison (3 seeds, 3 evaluation "
        "episodes per point) shows no effect: the interval of ContextWM − scratch spans 0.",
    "V-PTR":
        "Compared at the same number of updates, the ICVF encoder is level with scratch; at equal wall time scratch's "
        "extra offline updates beat both pretrainings. The matched scratch file reruns scratch with its offline phase "
        "capped at the pretrained arms' update count. The ICVF value-order column explains the result: the pretrained "
        "value does not order tabletop frames by time to the goal, so no value signal reached the encoder.",
    "ICVF probe":
        "ICVF at these budgets orders frames of the locomotion domains but not tabletop-push frames under any variant "
        "tried: the value is nearly constant along a clip even where the encoder's features still vary, and the "
        "faster TD settings and larger frames kill a large share of the encoder's outputs. The implementation itself "
        "orders states on a small chain (tests/test_vptr.py). On held-out tabletop-push clips (new looks) no ICVF "
        "variant orders frames (best +0.05, workspace camera included), although pixel distance to the last frame "
        "orders them at about +0.7: ICVF learns which clip a goal came from (other_clip_gap) while its features "
        "barely change within a clip. The same network regressed on time to the goal reaches +0.50 from the "
        "workspace camera in 6,000 updates (+0.09 from the default cameras in 3,000): the framing makes the order "
        "learnable, the ICVF objective at these budgets does not use it.",
    "RoboFuME and KAGI rewards":
        "RoboFuME's classifier reward ends level with the true reward, from a strong start (0.37 offline success) "
        "and from the weak start below (every seed at 0.0: classifier 0.52 vs true reward 0.54 final success, "
        "difference -2 points, paired interval [-18, +16], 5 seeds). KAGI, first experiment (4,000 demonstrations "
        "per direction, 5,000 offline updates): every condition starts near 0.37 success and ends at 0.87-0.90, and "
        "its sparse arm ran with online rewards on another scale than the offline labels (0/1 against -1/0, kept as "
        "sparse_offset_mismatch), so it has no valid sparse reference. The weak-start experiment (800 "
        "demonstrations per direction, 2,500 offline updates, 5 seeds) starts every seed at 0.0 and sparse-only "
        "needs thousands of online steps to reach 50%, so it can tell rewards apart; the dense keypoint reward does "
        "not speed Cal-QL up there: it reaches 50% in 1.15x sparse's steps (paired interval [1.00, 1.39]) and its "
        "mean online success is level with sparse. Noisy keypoints and a wrong contact point stay within 10 points "
        "of the dense and sparse runs. On pick-place (one seed) neither reward leaves 0.0-0.1 success in 10,000 "
        "online steps.",
    "GFlowNets":
        "Each side's exact L1 is measured against the reward it trained on; the script checks that rlpt's and "
        "torchgfn's rewards agree on every state before comparing. Exact conversion needs no gradient step and meets "
        "the target everywhere; the amortized adapter, which does not need enumerable outcomes, reaches scratch's "
        "final L1 on the grid but not within a third of its steps on every reward, and on bit sequences its outcome "
        "sampler has to find a few targets among thousands of outcomes from its own samples.",
    "Ray Tune acceptance":
        "Retraining the sweep's best config with `rlpt train` and the trial's thread count reproduces the trial's "
        "scores exactly.",
}

PART_PREFIXES = {"learning_": "learning.json", "gfn_part_": "gfn.json",
                 "vlm_rewards_kagi_part_": "vlm_rewards_kagi.json",
                 "vlm_rewards_kagi_weak_part_": "vlm_rewards_kagi_weak.json",
                 "vlm_rewards_robofume_weak_part_": "vlm_rewards_robofume_weak.json",
                 "vlm_rewards_kagi_pickplace_part_": "vlm_rewards_kagi_pickplace.json"}

INTRO = """# Benchmarks

This page is generated by `python benchmarks/make_docs.py` from `benchmarks/results/*.json`; do not edit it by
hand. Each script in `benchmarks/` prints a table and writes its results file with the machine, versions, command
and every number measured. Most runs shared a small CPU with other jobs, so ratios measured side by side in one
run are what to read, not absolute times.

Numbers over seeds read mean ± std [bootstrap 95% interval of the mean] (`rlpt.eval.stats.describe`); with 4 or
more seeds the interquartile mean (IQM) and its interval follow, as rliable recommends (below 4 seeds the IQM trims
nothing and equals the mean). A difference between arms reads +x [low, high]: the mean difference and its bootstrap
95% interval, paired over the seeds both arms ran where the text says so. With three seeds an interval is wide and
rough. Figures are drawn from the curves stored in the same files: a line is the mean over seeds; its band is the
bootstrap 95% interval of that mean where the figure's caption says so, otherwise ± one standard deviation.
"""


def load(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def render_page(results: Path = RESULTS, figdir: Path | None = FIGURES) -> str:
    """The page text for every results file under `results`; figures are written to `figdir` (None: not written)."""
    files = sorted(p.name for p in results.iterdir() if p.suffix in (".json", ".jsonl"))
    done: set[str] = set()
    lines = [INTRO]
    toc = []
    body: list[str] = []
    for title, prose, entries in SECTIONS:
        present = [(f, r) for f, r in entries if f in files]
        if not present:
            continue
        toc.append(title)
        body += [f"## {title}", "", prose, ""]
        if title in READING:
            body += [f"**Reading.** {READING[title]}", ""]
        for fname, renderer in present:
            d = load(results / fname)
            body += [f"### {fname}", ""]
            body += source(fname, d) if isinstance(d, dict) else []
            body += renderer(fname, d, figdir)
            done.add(fname)
            parts = [f for f in files if f not in done and any(
                f.startswith(p) and m == fname for p, m in PART_PREFIXES.items())]
            if parts:
                body += ["Parts merged into this file:", ""]
                rows = []
                for p in parts:
                    pd = load(results / p)
                    rows.append([f"`{p}`", f"`{pd.get('command', '–')}`",
                                 num(pd.get("seconds"), 0) if isinstance(pd.get("seconds"), int | float) else "–"])
                    done.add(p)
                body += table(["file", "command", "seconds"], rows)
    rest = [f for f in files if f not in done]
    if rest:
        toc.append("Other results")
        body += ["## Other results", "", "Results files without a dedicated table: their scalar fields.", ""]
        for fname in rest:
            d = load(results / fname)
            body += [f"### {fname}", ""] + (source(fname, d) if isinstance(d, dict) else [])
            body += r_generic(fname, d, figdir)
    lines += ["Sections: " + ", ".join(f"[{t}](#{slug(t)})" for t in toc) + ".", ""]
    text = "\n".join(lines + body)
    return text.rstrip("\n") + "\n"


def slug(title: str) -> str:
    """The anchor Python-Markdown's toc (mkdocs) and GitHub give a heading made of words, spaces and hyphens."""
    import re

    s = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=PAGE)
    ap.add_argument("--figures", type=Path, default=FIGURES)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 if stale")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            text = render_page(args.results, Path(tmp))
            stale = not args.out.exists() or args.out.read_text() != text
            missing = sorted({p.name for p in Path(tmp).iterdir()} - {p.name for p in args.figures.glob("*.png")})
        if stale or missing:
            print(f"{args.out} is out of date with {args.results}"
                  + (f"; missing figures {missing}" if missing else "")
                  + ": run python benchmarks/make_docs.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    for old in args.figures.glob(f"{FIG_PREFIX}*.png"):
        old.unlink()
    text = render_page(args.results, args.figures)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} and {len(list(args.figures.glob(f'{FIG_PREFIX}*.png')))} figures in {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
