"""Learning-curve plots from a run's metrics (PNG, headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
