"""Learning-curve plots from a run's metrics (PNG, headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlpt.errors import RunError
from rlpt.runs import read_metrics
from rlpt.utils import atomic_write


def plot_learning_curve(run_path: str | os.PathLike, out: str | os.PathLike | None = None,
                        keys: Sequence[str] = ("eval/normalized_score", "eval/return"),
                        title: str | None = None) -> Path:
    """Draw the first of `keys` present in the run against a global step axis, offline then online.

    Rows carrying `online/step` are placed after the offline phase; a dashed line marks the switch.
    Also drawn, when logged, is `ope/score` on a second axis. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_path)
    key = next((k for k in keys if any(k in r for r in rows)), None)
    if key is None:
        raise ValueError(f"{run_path}: none of {list(keys)} was logged; cannot draw a learning curve")
    offline_end = max((r["step"] for r in rows if "online/step" not in r), default=0)

    def x_of(r: dict) -> float:
        return offline_end + r["online/step"] if "online/step" in r else r["step"]

    pts = sorted((x_of(r), r[key]) for r in rows if key in r and r[key] is not None)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=key)
    std_key = key + "_std"
    stds = [r.get(std_key) for r in sorted(rows, key=x_of) if key in r and r[key] is not None]
    if all(s is not None for s in stds) and stds:
        s = np.array(stds, dtype=float)
        ax.fill_between(xs, ys - s, ys + s, alpha=0.2)
    if any("online/step" in r for r in rows):
        ax.axvline(offline_end, ls="--", c="gray")
        ax.text(offline_end, ax.get_ylim()[1], " online →", va="top", fontsize=8, color="gray")
    ope = sorted((x_of(r), r["ope/score"]) for r in rows if r.get("ope/score") is not None)
    if ope:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in ope], [p[1] for p in ope], c="tab:orange", alpha=0.6, lw=1, label="ope/score")
        ax2.set_ylabel("OPE score", color="tab:orange")
    ax.set_xlabel("offline gradient steps, then online env steps")
    ax.set_ylabel(key)
    ax.set_title(title or Path(run_path).name, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out is not None else Path(run_path) / "plots" / "learning_curve.png"
    save_figure(fig, out)
    return out


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically (a crash never leaves a truncated image) and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def plot_offline_to_online(summary: dict, out: str | os.PathLike, title: str | None = None) -> Path:
    """The offline-to-online story of one run from its summary (`rlpt.train.summarize`): left, offline: the
    data's average episode, each BC member, the true return of every scored improvement iterate (dashed) and of
    each member's reference (steps at acceptances), and the evaluated hand-off policy; right, online: the
    evaluations against env steps. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = summary.get("score_metric", "eval/normalized_score")
    ope = summary.get("ope") or {}
    evals = summary.get("evaluations") or {}
    fig, (ax_off, ax_on) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110, sharey=True,
                                        gridspec_kw={"width_ratios": [1.2, 1]})
    if summary.get("dataset_score") is not None:
        for ax in (ax_off, ax_on):
            ax.axhline(summary["dataset_score"], ls=":", c="gray", lw=1)
        ax_off.text(0.01, summary["dataset_score"], " data average", va="bottom", fontsize=7, color="gray",
                    transform=ax_off.get_yaxis_transform())
    accepted = ope.get("accepted") or []
    bc = ope.get("bc_members") or []
    start = min((a[0] for a in accepted), default=0)
    end = summary.get("offline_steps") or start
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for member in range(len(bc)):
        pts = [(a[0], a[3]) for a in accepted if a[1] == member]
        if not pts:
            continue
        xs = [p[0] for p in pts] + [end]
        ys = [p[1] for p in pts] + [pts[-1][1]]
        c = colors[member % len(colors)]
        its = [(i[0], i[2]) for i in ope.get("iterates") or [] if i[1] == member]
        if its:
            ax_off.plot(*zip(*its, strict=True), c=c, lw=0.8, alpha=0.45, ls="--")
        ax_off.step(xs, ys, where="post", c=c, lw=1.3, label=f"member {member} reference")
        ax_off.plot([p[0] for p in pts[1:]], [p[1] for p in pts[1:]], "o", c=c, ms=4)
        ax_off.plot([start], [bc[member]], "s", c=c, ms=6)
    if bc:
        ax_off.plot([], [], "s", c="k", ms=5, label="BC members (squares); dots: accepted iterates")
        ax_off.plot([], [], c="k", lw=0.8, alpha=0.45, ls="--", label="every scored iterate")
    off = [(e["step"], e[key]) for e in evals.get("offline", []) if e.get(key) is not None]
    if off:
        ax_off.plot(*zip(*off, strict=True), "*", c="k", ms=11, label="evaluated hand-off policy")
    ax_off.set_xlabel("offline gradient steps (improvement phase)")
    ax_off.set_ylabel("normalized score" if key == "eval/normalized_score" else "return")
    ax_off.set_title("offline: BC ensemble, then OPE-gated improvement", fontsize=9)
    ax_off.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    on = [(e["online_step"], e[key]) for e in evals.get("online", []) if e.get(key) is not None]
    if on:
        ax_on.plot(*zip(*on, strict=True), marker="o", ms=4, c="tab:green", label="online evaluations")
        ax_on.legend(fontsize=7, loc="lower right")
    ax_on.set_xlabel("online env steps")
    ax_on.set_title("online fine-tuning", fontsize=9)
    for ax in (ax_off, ax_on):
        ax.grid(alpha=0.3)
    fig.suptitle((title + "\n" if title else "") + summary.get("story", ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(out))
    return Path(out)


# ----------------------------------------------------------------------------- several runs
def _read_rows(run_path: Path) -> list[dict]:
    """A run's logged rows: metrics.jsonl, else metrics.csv (numbers parsed, empty cells dropped)."""
    import csv

    if (run_path / "metrics.jsonl").exists():
        return read_metrics(run_path)
    path = run_path / "metrics.csv"
    if not path.exists():
        raise RunError(f"{run_path}: neither metrics.jsonl nor metrics.csv found; is it an rlpt run folder?")
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                if k is None or v in (None, ""):
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            if "step" in row:
                row["step"] = int(row["step"])
            rows.append(row)
    return rows


def _expand_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders from the given paths: a run folder itself, or a folder whose subfolders (at any depth) are
    run folders (a sweep's output)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise RunError(f"{p}: no such run folder")
        if (p / "metrics.jsonl").exists() or (p / "metrics.csv").exists():
            runs.append(p)
            continue
        found = sorted({m.parent for pat in ("metrics.jsonl", "metrics.csv") for m in p.rglob(pat)})
        if not found:
            raise RunError(f"{p}: neither a run folder (metrics.jsonl or metrics.csv) nor a folder holding run "
                           "folders")
        runs += found
    return list(dict.fromkeys(runs))


def _recipe_of(run_path: Path) -> dict:
    """The run's resolved recipe from config.yaml, without its seed; for a run without config.yaml, its folder
    name without the `__seed<k>__<time>` tail stands for the recipe."""
    import re

    from rlpt.config import load_yaml

    cfg = load_yaml(run_path / "config.yaml") if (run_path / "config.yaml").exists() else None
    recipe = dict((cfg or {}).get("recipe") or {})
    if not recipe:
        return {"name": re.sub(r"__seed\d+__.*$", "", run_path.name)}
    recipe.pop("seed", None)
    return recipe


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def group_runs(runs: Sequence[str | os.PathLike]) -> dict[str, list[Path]]:
    """Group run folders that differ only by seed (same resolved recipe in config.yaml, seed aside).

    Returns {label: [run folders]} in first-seen order. A label is `<recipe name> on <env>`; groups that share it
    get the recipe keys in which they differ appended (e.g. `iql on hopper (config.expectile=0.9)`).
    """
    import json

    groups: dict[str, list[Path]] = {}
    recipes: dict[str, dict] = {}
    for run in map(Path, runs):
        recipe = _recipe_of(run)
        key = json.dumps(recipe, sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
        recipes[key] = recipe
    base = {k: " on ".join(str(r[f]) for f in ("name", "env") if r.get(f)) for k, r in recipes.items()}
    labels: dict[str, list[Path]] = {}
    for key, members in groups.items():
        label = base[key]
        twins = [k for k in groups if base[k] == label and k != key]
        if twins:
            mine = _flatten(recipes[key])
            others = [_flatten(recipes[k]) for k in twins]
            diff = [f for f in sorted(set(mine) | {f for o in others for f in o})
                    if f != "name" and any(o.get(f) != mine.get(f) for o in others)]
            label += " (" + ", ".join(f"{f}={mine.get(f)}" for f in diff[:3]) + (", ..." if len(diff) > 3 else "") + ")"
        while label in labels:  # identical descriptions of different recipes: keep both, numbered
            label += "'"
        labels[label] = members
    return labels


def _curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of `key` on the global step axis: offline steps, then online steps after the offline phase."""
    offline_end = max((r["step"] for r in rows if "online/step" not in r), default=0)
    pts = sorted((offline_end + r["online/step"] if "online/step" in r else r["step"], float(r[key]))
                 for r in rows if r.get(key) is not None and isinstance(r[key], int | float))
    pts = [p for p in pts if np.isfinite(p[1])]
    return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)


def _group_band(curves: list[tuple[np.ndarray, np.ndarray]], band: str, level: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Mean and band of several seeds' curves. Curves logged at the same steps are averaged step by step;
    otherwise each is linearly interpolated onto the union of steps inside the range every seed covers."""
    from rlpt.eval.stats import bootstrap_ci

    if len(curves) == 1:
        return curves[0][0], curves[0][1], None, None
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    if len(common) >= 2:
        xs = np.array(common)
    else:
        lo, hi = max(x.min() for x, _ in curves), min(x.max() for x, _ in curves)
        xs = np.array(sorted({v for x, _ in curves for v in x.tolist() if lo <= v <= hi}))
    ys = np.stack([np.interp(xs, x, y) for x, y in curves])  # (seeds, steps)
    mean = ys.mean(0)
    if band == "std":
        s = ys.std(0)
        return xs, mean, mean - s, mean + s
    cis = np.array([bootstrap_ci(ys[:, j], level=level) for j in range(ys.shape[1])])
    return xs, mean, cis[:, 0], cis[:, 1]


def available_metrics(rows: list[dict]) -> list[str]:
    """Names of the numeric metrics logged in `rows` (`step`, `time` and `*_std` companions aside)."""
    names = {k for r in rows for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return sorted(n for n in names if n not in ("step", "time") and not n.endswith("_std"))


def plot_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike = "learning_curves.png",
              metric: str = "eval/normalized_score", band: str = "std", level: float = 0.95,
              title: str | None = None) -> dict:
    """Overlay the learning curves of several runs: one line per group of runs that differ only by seed (mean
    over seeds with a band: `std` = ± population std, `ci` = percentile-bootstrap interval of the mean at
    `level`), single runs as plain lines. `runs` are run folders or folders holding run folders.

    Raises `RunError` when a run lacks `metric`, naming the metrics every run has. Returns {"out": PNG path,
    "groups": {label: [run folders]}, "metric": metric}.
    """
    if band not in ("std", "ci"):
        raise ValueError(f"band must be 'std' or 'ci', got {band!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = _expand_runs(runs)
    rows = {p: _read_rows(p) for p in paths}
    missing = [p for p in paths if not any(r.get(metric) is not None for r in rows[p])]
    if missing:
        shared = sorted(set.intersection(*(set(available_metrics(rows[p])) for p in paths)))
        raise RunError(f"metric {metric!r} is not logged in {', '.join(str(p) for p in missing)}; metrics every "
                       f"given run has: {', '.join(shared) or '(none in common)'}")
    groups = group_runs(paths)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    any_online = False
    for label, members in groups.items():
        xs, mean, low, high = _group_band([_curve(rows[p], metric) for p in members], band, level)
        n = len(members)
        line, = ax.plot(xs, mean, lw=1.6, marker="o" if len(xs) < 30 else None, ms=3,
                        label=f"{label} ({n} seed{'s' if n > 1 else ''})")
        if low is not None:
            ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color(), lw=0)
        any_online |= any("online/step" in r for p in members for r in rows[p])
    what = "± std" if band == "std" else f"{level:.0%} bootstrap CI of the mean"
    ax.set_xlabel("offline gradient steps, then online env steps" if any_online else "step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric}: mean over seeds, band {what}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = save_figure(fig, Path(out))
    return {"out": Path(out), "groups": {k: [str(p) for p in v] for k, v in groups.items()}, "metric": metric}
