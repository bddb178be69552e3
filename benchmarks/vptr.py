"""V-PTR benchmark: offline RL from pixels with a video-pretrained encoder (ICVF) vs scratch vs reconstruction.

    .venv/bin/python benchmarks/vptr.py --seeds 0 1 2          # the experiment (hours on 2 CPU cores)
    .venv/bin/python benchmarks/vptr.py --quick                 # end-to-end smoke run (a few minutes)
    .venv/bin/python benchmarks/vptr.py --seeds 0 --arms icvf --eval-every 2000 --deadline-seconds 420 \
        --out parts/vptr_s0_icvf.json                           # one of several parallel processes, then:
    .venv/bin/python benchmarks/vptr.py --merge parts/*.json --out benchmarks/results/vptr.json

Per seed:
1. Phase 1 on the same action-free video (default: the committed sample, video_data/sample/manifest.jsonl,
   which includes tabletop clips with randomized looks and other embodiments):
   - `icvf`: `rlpt.pretrain.vptr.pretrain` (cpu-small preset: 32x32, ResNet depth 16, 2 stages, GroupNorm;
     `--icvf-set KEY=VALUE` changes its ICVFConfig, e.g. `mc_weight=1.0`);
   - `recon`: the plain (non-contextual) ContextWM world model, `rlpt.pretrain.contextwm.pretrain` with its
     cpu-small preset and `norm="layer"`, so its `encoder` is the same ResNetEncoder architecture; its encoder
     learned by reconstructing frames (plus the RSSM's KL).
   - `scratch`: the same architecture, randomly initialised (PTR).
2. Phase 2: Cal-QL from 32x32 pixels on `tabletop-push-noisy-pixels32` (read from --data-root, made there if
   missing) with the hyperparameters of agents/vptr/tabletop-push.yaml, starting from each encoder (fine-tuned
   unless --freeze), for the same number of offline updates; success rate over --eval-episodes.
3. Phase 3: online fine-tuning (50/50 offline/online batches) for the same number of env steps; success again.

--eval-every N also evaluates every N offline updates and every N online env steps: each run gets a `curve`
([{"phase", "step", "success_rate", "return"}, ...]) and the results JSON is rewritten after every evaluation,
so a killed process still leaves its curve (its row says "finished": false).

--deadline-seconds T (needs --eval-every) keeps the process within T seconds of its start: pretraining stops
(at a logging step) once it has used --pretrain-share of the time left to that seed; the offline phase stops at
an evaluation boundary when the next chunk of updates plus its evaluation would not fit in the time left to the
run, less --online-share of it kept for the online phase; the online phase runs only as many env steps as the
measured rates say fit, and stops at an evaluation boundary like the offline one. Estimates are padded by
SAFETY (x1.25). Each row records what actually ran (`offline_steps_run`, `online_steps_run`, `deadline_stops`)
and each pretraining entry its `steps` (with `steps_requested`). Budgets in "budgets" are the requested ones.

Prints a table (mean ± std over the seeds that have each number, with their count, each arm's ratio to
scratch, and its difference from scratch with a paired bootstrap 95% interval; the JSON's summary also holds the
IQM and bootstrap intervals of every number, `rlpt.eval.stats.describe`) and writes benchmarks/results/vptr.json
with the machine, versions, command, seeds and every number (per seed: success rates, returns, curves, pretraining
diagnostics, wall times). --quick writes runs/bench_vptr_quick/vptr.json instead (not a result). --merge joins the
JSON files of parallel processes; --plot A.json [B.json ...] --out FIG.png draws their success curves;
--resummarize FILE recomputes a results file's summary from its stored runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import (
    add_resummarize_arg,
    command_line,
    machine,
    read_parts,
    resummarize,
    set_threads,
    versions,
    write_result,
)

T0 = time.monotonic()  # --deadline-seconds counts from here, before the heavy imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.agents.calql import CalQLConfig  # noqa: E402
from rlpt.envs import make_env  # noqa: E402
from rlpt.eval import evaluate  # noqa: E402
from rlpt.eval.stats import aggregate_curves, describe, diff_by_seed  # noqa: E402
from rlpt.train import _load_dataset, load_recipe  # noqa: E402
from rlpt.utils import merge_nested, resolve_device  # noqa: E402

RECIPE = "agents/vptr/tabletop-push.yaml"
ARMS = ("icvf", "scratch", "recon")
KEYS = ("offline_success_rate", "online_success_rate", "offline_return", "online_return")
SAFETY = 1.25  # time estimates for the deadline are padded by this factor
MIN_ONLINE_STEPS = 100  # an online phase shorter than this (or than --online-steps if smaller) is skipped
# top-level keys that must agree between the files --merge joins
SAME_SETTINGS = ("benchmark", "quick", "recipe", "agent_config", "env", "env_options", "videos", "freeze_encoder",
                 "budgets", "eval_every", "deadline")


class Clock:
    """Seconds since the process started (T0), against an optional deadline."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline

    def elapsed(self) -> float:
        return time.monotonic() - T0

    def end(self, share: float = 1.0, parts: int = 1) -> float:
        """The elapsed time by which `share` of 1/`parts` of the time left is used (inf without a deadline)."""
        if self.deadline is None:
            return math.inf
        now = self.elapsed()
        return now + share * max(self.deadline - now, 0.0) / parts

    def fits(self, seconds: float, until: float) -> bool:
        """Whether work estimated at `seconds` (padded by SAFETY) ends before `until`."""
        return self.elapsed() + SAFETY * seconds <= until


def stop_after(clock: Clock, until: float, note: dict) -> Callable[[int, dict], bool]:
    """A pretraining callback that stops the run once the elapsed time passes `until`."""

    def callback(step: int, metrics: dict) -> bool:
        if clock.elapsed() > until:
            note["stopped_by_deadline"] = f"after {step} steps ({clock.elapsed():.0f} s elapsed)"
            return False
        return True

    return callback


def pretrain_icvf(videos: str, seed: int, steps: int, out: Path, device: str, quiet: bool, clock: Clock,
                  until: float, overrides: list[str] | None = None) -> dict:
    from rlpt.config import parse_overrides
    from rlpt.pretrain.vptr import ICVFConfig, pretrain

    t0, note = time.time(), {}
    config = ICVFConfig.preset("cpu-small", **parse_overrides(overrides or [], "--icvf-set"))
    path = pretrain(videos, config, steps=steps, out_dir=out, seed=seed, resume=True,
                    device=device, eval_every=max(steps // 4, 1), checkpoint_every=max(steps // 4, 1), quiet=quiet,
                    callbacks=[stop_after(clock, until, note)])
    summary = json.loads((path / "summary.json").read_text())
    return {"path": str(path), "steps": summary["steps"], "steps_requested": steps, "config_overrides": overrides or [],
            "seconds": round(time.time() - t0, 1), "value_order": summary["final"].get("eval/value_order"),
            "loss": summary["final"].get("train/loss"), **note}


def pretrain_recon(videos: str, seed: int, steps: int, out: Path, device: str, quiet: bool, clock: Clock,
                   until: float) -> dict:
    from rlpt.pretrain.contextwm import WorldModelConfig, pretrain

    t0, note = time.time(), {}
    config = WorldModelConfig.preset("cpu-small", contextual=False, norm="layer")
    path = pretrain(videos, config, steps=steps, out_dir=out, seed=seed, resume=True, device=device,
                    checkpoint_every=max(steps // 4, 1), quiet=quiet, callbacks=[stop_after(clock, until, note)])
    summary = json.loads((path / "summary.json").read_text())
    return {"path": str(path), "steps": summary["steps"], "steps_requested": steps,
            "seconds": round(time.time() - t0, 1), "image_mse": summary["final"].get("train/image_mse"),
            "loss": summary["final"].get("train/loss"), **note}


def encoder_for(arm: str, pre: dict) -> tuple[dict, dict]:
    """(config changes, create kwargs) that give the Cal-QL agent this arm's encoder."""
    if arm == "icvf":
        return {"pretrained": pre["icvf"]["path"]}, {}
    if arm == "recon":
        from rlpt.pretrain.contextwm import load_pretrained

        return {}, {"encoder": load_pretrained(pre["recon"]["path"], device="cpu").encoder}
    return {}, {}


def run_arm(arm: str, seed: int, recipe, dataset, pre: dict, args, clock: Clock, until: float, row: dict,
            save: Callable[[], None]) -> None:
    """Fill `row` with this arm's offline and online results (saving after every evaluation); stop both phases
    early at evaluation boundaries so the run ends before `until` (elapsed seconds)."""
    every = args.eval_every
    changes, kwargs = encoder_for(arm, pre)
    cfg = CalQLConfig.from_dict({**recipe.config, "seed": seed, **changes, "freeze_encoder": args.freeze,
                                 "log_interval": every or 10**9}, source=f"{RECIPE} ({arm})")
    env = make_env(recipe.env, seed=seed, **recipe.env_options)
    agent = cfg.create(env.observation_space, env.action_space, device=args.device, **kwargs)
    if arm == "scratch":  # same architecture as the pretrained encoders
        assert agent.encoder.kwargs == {**recipe.config["encoder_config"], "image_size": 32}, agent.encoder.kwargs
    row.update({"encoder": {"class": type(agent.encoder).__name__, "kwargs": getattr(agent.encoder, "kwargs", None),
                            "out_dim": agent.encoder.out_dim},
                "device": str(agent.device), "curve": [], "deadline_stops": []})
    evals = {"seconds": 0.0, "last": 0.0, "env_steps": 1}

    def score(phase: str, step: int) -> dict:
        t = time.monotonic()
        res = evaluate(agent, recipe.env, args.eval_episodes, seed=10_000 + seed, env_options=recipe.env_options)
        evals["last"] = time.monotonic() - t
        evals["seconds"] += evals["last"]
        evals["env_steps"] = max(sum(res.lengths), 1)
        point = {"phase": phase, "step": step, "success_rate": res.success_rate, "return": res.mean_return}
        row["curve"].append(point)
        row["eval_seconds"] = round(evals["seconds"], 1)
        save()
        return point

    def phase_callback(phase: str, total: int, until_phase: float, train: dict) -> Callable[[int, dict], bool]:
        """Evaluate at every boundary; stop when the next chunk and its evaluation would not fit."""

        def callback(step: int, metrics: dict) -> bool:
            train["seconds"] += time.monotonic() - train["since"]
            score(phase, step)
            train["since"] = time.monotonic()
            nxt = min(every, total - step)
            if nxt > 0 and not clock.fits(nxt * train["seconds"] / step + evals["last"], until_phase):
                row["deadline_stops"].append(f"{phase} stopped after {step} of {total} "
                                             f"({clock.elapsed():.0f} s elapsed)")
                return False
            return True

        return callback

    def finish_phase(phase: str, steps_run: int, train: dict) -> None:
        if not row["curve"] or row["curve"][-1]["phase"] != phase or row["curve"][-1]["step"] != steps_run:
            score(phase, steps_run)
        last = row["curve"][-1]
        row[f"{phase}_steps_run"] = steps_run
        row[f"{phase}_seconds"] = round(train["seconds"], 1)  # training only (evaluations: eval_seconds)
        row[f"{phase}_success_rate"], row[f"{phase}_return"] = last["success_rate"], last["return"]
        save()

    # offline: up to `until`, less --online-share of the time left kept for the online phase
    share = 1.0 - args.online_share if args.online_steps > 0 else 1.0
    offline_until = clock.elapsed() + share * (until - clock.elapsed()) if math.isfinite(until) else until
    train = {"seconds": 0.0, "since": time.monotonic()}
    callbacks = [phase_callback("offline", args.offline_steps, offline_until, train)] if every else []
    m = agent.fit(dataset, args.offline_steps, callbacks=callbacks)
    train["seconds"] += time.monotonic() - train["since"]  # since the last evaluation (or the start)
    row["offline_final_metrics"] = {k: round(float(v), 4) for k, v in m.items()}
    finish_phase("offline", agent.step, train)

    # online: as many env steps as the measured rates say fit before `until`
    n_online = args.online_steps
    if math.isfinite(until) and n_online > 0:
        per_step = cfg.utd_ratio * train["seconds"] / max(agent.step, 1) + evals["last"] / evals["env_steps"]
        afford = int(((until - clock.elapsed()) / SAFETY - evals["last"]) / max(per_step, 1e-6))
        if afford < n_online:
            n_online = afford if afford >= min(MIN_ONLINE_STEPS, args.online_steps) else 0
            row["deadline_stops"].append(f"online limited to {n_online} of {args.online_steps} steps: ~{max(afford, 0)}"
                                         f" fit ({clock.elapsed():.0f} s elapsed, ~{per_step * 1000:.1f} ms/step)")
    if n_online > 0:
        train = {"seconds": 0.0, "since": time.monotonic()}
        callbacks = [phase_callback("online", n_online, until, train)] if every else []
        agent.learn(env, total_timesteps=n_online, offline=dataset, mix_ratio=recipe.mix_ratio, callbacks=callbacks)
        train["seconds"] += time.monotonic() - train["since"]
        finish_phase("online", agent.online_steps, train)
    else:
        row["online_steps_run"] = 0
    env.close()
    row["finished"] = True
    save()


def stats(rows: list[dict], key: str) -> dict | None:
    """`describe` of `key` over the rows (seeds) that have it, with the values and their seeds."""
    have = [r for r in rows if r.get(key) is not None]
    if not have:
        return None
    vals = [float(r[key]) for r in have]
    return {**describe(vals), "values": vals, "seeds": [r["seed"] for r in have]}


def common_step(rows: list[dict], phase: str = "offline") -> int | None:
    """The largest `phase` curve step that every row with a `phase` curve reached."""
    steps = [{p["step"] for p in r.get("curve", []) if p["phase"] == phase} for r in rows]
    steps = [s for s in steps if s]
    common = set.intersection(*steps) if steps else set()
    return max(common) if common else None


def summarize(rows: list[dict]) -> dict:
    """Per arm: `describe` (mean ± std, IQM, bootstrap intervals) of each number over the rows (seeds) that have it
    (`n`, `seeds` say which); rows of a killed run lack the later numbers. Also success and return at the largest
    offline and online curve steps that all rows reached (online rows are comparable only where their
    offline_steps_run agree), and each arm's success minus scratch's with a bootstrap 95% interval, paired over the
    seeds both have (`<key>_minus_scratch`; the online ones only where both arms ran the same offline updates per
    seed)."""
    out: dict = {}
    commons = {phase: common_step(rows, phase) for phase in ("offline", "online")}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cell: dict = {"seeds": [r["seed"] for r in mine], "finished": sum(bool(r.get("finished", True)) for r in mine),
                      "offline_steps_run": [r.get("offline_steps_run") for r in mine],
                      "online_steps_run": [r.get("online_steps_run") for r in mine]}
        for key in KEYS:
            if (s := stats(mine, key)) is not None:
                cell[key] = s
        for phase, common in commons.items():
            at = [{"seed": r["seed"], "success_rate": p["success_rate"], "return": p["return"]}
                  for r in mine for p in r.get("curve", []) if p["phase"] == phase and p["step"] == common]
            if common is None or not at:
                continue
            for metric in ("success_rate", "return"):
                vals = [float(a[metric]) for a in at]
                name = "success" if metric == "success_rate" else metric
                cell[f"{phase}_{name}_at_common_step"] = {"step": common, **describe(vals), "values": vals,
                                                          "seeds": [a["seed"] for a in at]}
        out[arm] = cell
    if "scratch" in out:
        for arm, cell in out.items():
            for key in ("offline_success_rate", "online_success_rate"):
                base = out["scratch"].get(key, {}).get("mean")
                mean = cell.get(key, {}).get("mean")
                cell[f"{key}_vs_scratch"] = round(mean / base, 3) if base and mean is not None else None
            if arm == "scratch":
                continue
            same_offline = (dict(zip(cell["seeds"], cell["offline_steps_run"], strict=True))
                            == dict(zip(out["scratch"]["seeds"], out["scratch"]["offline_steps_run"], strict=True)))
            for key in ("offline_success_rate", "online_success_rate", "offline_success_at_common_step",
                        "online_success_at_common_step"):
                a, b = cell.get(key), out["scratch"].get(key)
                if key.startswith("online") and not same_offline:
                    continue  # online phases that started from different offline budgets are not compared
                if a and b and a.get("step") == b.get("step"):  # arm - scratch, paired over shared seeds
                    cell[f"{key}_minus_scratch"] = diff_by_seed(dict(zip(a["seeds"], a["values"], strict=True)),
                                                                dict(zip(b["seeds"], b["values"], strict=True)))
    return out


def table(summary: dict) -> str:
    def fmt(s: dict | None) -> str:
        return f"{s['mean']:>6.2f} ± {s['std']:<4.2f} ({s['n']})" if s else f"{'n/a':>18}"

    def diff(c: dict | None) -> str:
        return f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]" if c else "n/a"

    lines = [f"{'arm':<8} {'offline success':>18} {'online success':>18} {'x scratch (off/on)':>20} "
             f"{'offline updates run':>20}"]
    for arm, c in summary.items():
        ratio = f"{c.get('offline_success_rate_vs_scratch')}/{c.get('online_success_rate_vs_scratch')}"
        lines.append(f"{arm:<8} {fmt(c.get('offline_success_rate')):>18} {fmt(c.get('online_success_rate')):>18} "
                     f"{ratio:>20} {c.get('offline_steps_run')!s:>20}")
    for phase, unit in (("offline", "update"), ("online", "online env step")):
        commons = {arm: c[f"{phase}_success_at_common_step"] for arm, c in summary.items()
                   if f"{phase}_success_at_common_step" in c}
        if commons:
            step = next(iter(commons.values()))["step"]
            lines.append(f"{phase} success at {unit} {step} (reached by every run): "
                         + ", ".join(f"{arm} {fmt(s).strip()}" for arm, s in commons.items()))
            lines.append("  minus scratch, bootstrap 95% interval: " + ", ".join(
                f"{arm} {diff(summary[arm].get(f'{phase}_success_at_common_step_minus_scratch'))}"
                for arm in commons if arm != "scratch"))
    return "\n".join(lines)


def merge(paths: list[str], out: Path) -> dict:
    """Join the result files of parallel processes (same settings required) into one report."""
    parts = read_parts(paths)
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        differ = [k for k in SAME_SETTINGS if part.get(k) != first.get(k)]
        if {k: part["dataset"].get(k) for k in ("name", "transitions")} != \
                {k: first["dataset"].get(k) for k in ("name", "transitions")}:
            differ.append("dataset")
        if differ:
            raise SystemExit(f"--merge: {path} differs from {paths[0]} in {', '.join(differ)}; refusing to merge")
    rows = [row for part in parts for row in part["runs"]]
    keys = [(r["arm"], r["seed"]) for r in rows]
    if dupes := sorted({k for k in keys if keys.count(k) > 1}):
        raise SystemExit(f"--merge: (arm, seed) {dupes} appear in more than one file; refusing to merge")
    seeds = sorted({s for part in parts for s in part["seeds"]})
    arms = [a for a in ARMS if any(a in part["arms"] for part in parts)]
    report = {**first, "command": command_line(), "seeds": seeds, "arms": arms,
              "parts": [{"path": str(p), "command": part["command"], "seeds": part["seeds"], "arms": part["arms"],
                         "finished": part.get("finished", True), "wall_seconds": part.get("wall_seconds"),
                         "machine": part["machine"], **({"error": part["error"]} if "error" in part else {})}
                        for p, part in zip(paths, parts, strict=True)],
              "pretraining": dict(sorted(merge_nested([part["pretraining"] for part in parts], depth=2).items(),
                                         key=lambda kv: int(kv[0]))),
              "runs": sorted(rows, key=lambda r: (r["seed"], ARMS.index(r["arm"]))),
              "wall_seconds": max(part.get("wall_seconds") or 0.0 for part in parts),
              "finished": all(part.get("finished", True) for part in parts)}
    report.pop("error", None)
    report["summary"] = summarize(report["runs"])
    write_result(out, report)
    return report


def plot(reports: list[dict], path: Path) -> Path:
    """Success-rate curves, mean over seeds with a bootstrap 95% interval of it (`aggregate_curves`): offline vs
    update (left), online vs env step (right). One line
    per (arm, offline updates run) across the given reports, so runs whose online phase started from different
    offline budgets are never averaged together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {}
    for report in reports:
        for row in report["runs"]:
            if row.get("curve"):
                groups.setdefault(f"{row['arm']}, {row.get('offline_steps_run')} offline updates", []).append(row)
    if not groups:
        raise SystemExit("--plot: no run in these files has a curve (run with --eval-every N)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    colors = {"icvf": "tab:red", "scratch": "tab:gray", "recon": "tab:blue"}
    for n, (label, rows) in enumerate(sorted(groups.items())):
        arm = rows[0]["arm"]
        for ax, phase in zip(axes, ("offline", "online"), strict=True):
            curves = [{p["step"]: p["success_rate"] for p in r["curve"] if p["phase"] == phase} for r in rows]
            if phase == "online":  # online step 0 is the offline agent it starts from
                last = [[p["success_rate"] for p in r["curve"] if p["phase"] == "offline"][-1:] for r in rows]
                if all(last):
                    curves = [{0: first[0], **c} for first, c in zip(last, curves, strict=True)]
            agg = aggregate_curves(curves)
            if not agg["steps"]:
                continue
            mean = np.array(agg["mean"])
            yerr = [mean - np.array(agg["low"]), np.array(agg["high"]) - mean]
            ax.errorbar(agg["steps"], mean, yerr=yerr, marker="o", capsize=3, color=colors.get(arm), alpha=0.9,
                        ls=("-", "--", ":")[n % 3], label=f"{label} ({len(rows)} seeds)")
    axes[0].set(xlabel="offline Cal-QL updates", ylabel="success rate", title="offline, from pixels")
    axes[1].set(xlabel="online env steps", title="online fine-tuning (starts from the offline agent)")
    for ax in axes:
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    dev = reports[0]["machine"].get("cuda_device") or reports[0]["machine"].get("processor")
    fig.suptitle(f"V-PTR on {reports[0]['env']} ({dev}); mean over seeds, bootstrap 95% interval", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default="video_data/sample/manifest.jsonl",
                   help="phase-1 video (any rlpt.data.video.open_videos source)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--quick", action="store_true", help="tiny budgets end to end (minutes), not a result")
    p.add_argument("--icvf-steps", type=int, default=3000, help="ICVF pretraining updates")
    p.add_argument("--icvf-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="ICVFConfig overrides on the cpu-small preset (e.g. mc_weight=1.0 random_goals=clip)")
    p.add_argument("--recon-steps", type=int, default=3000, help="plain world-model pretraining updates")
    p.add_argument("--offline-steps", type=int, help="Cal-QL offline updates (default: the recipe's)")
    p.add_argument("--online-steps", type=int, help="online env steps (default: the recipe's)")
    p.add_argument("--dataset-size", type=int, help="transitions in the pixel dataset (default: the recipe's)")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every N offline updates and every N online env steps (0: only at the ends)")
    p.add_argument("--deadline-seconds", type=float,
                   help="end within this many seconds of the process start (needs --eval-every); see above")
    p.add_argument("--pretrain-share", type=float, default=0.35,
                   help="with a deadline: the share of each seed's time left that pretraining may use")
    p.add_argument("--online-share", type=float, default=0.25,
                   help="with a deadline: the share of each run's time left kept for the online phase")
    p.add_argument("--freeze", action="store_true", help="keep every encoder frozen (default: fine-tune)")
    p.add_argument("--work", help="pretraining folders (default runs/bench_vptr[_quick])")
    p.add_argument("--data-root", default="data", help="folder of the pixel dataset's HDF5 file")
    p.add_argument("--device", default="auto", help="auto: CUDA when present, else CPU")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="results JSON (default benchmarks/results/vptr.json; --quick: <work>/vptr.json)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="join these result files into --out and exit")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="draw the success curves of these result files "
                   "(one line per arm and offline budget) into --out (a .png) and exit")
    add_resummarize_arg(p)
    args = p.parse_args()
    if args.resummarize:
        resummarize(args.resummarize, lambda report: {"summary": summarize(report["runs"])})
        return
    if args.plot:
        if not args.out:
            p.error("--plot needs --out FIGURE.png")
        print(f"wrote {plot([json.loads(Path(f).read_text()) for f in args.plot], Path(args.out))}")
        return
    if args.merge:
        if not args.out:
            p.error("--merge needs --out")
        report = merge(args.merge, Path(args.out))
        print(table(report["summary"]))
        print(f"wrote {args.out} ({len(report['runs'])} runs from {len(args.merge)} files)")
        return
    if args.deadline_seconds is not None and args.eval_every <= 0:
        p.error("--deadline-seconds needs --eval-every N (the offline and online phases stop at evaluations)")
    if not (0.0 <= args.pretrain_share <= 1.0 and 0.0 <= args.online_share < 1.0):
        p.error("--pretrain-share must be in [0, 1] and --online-share in [0, 1)")
    set_threads(args.threads)
    recipe = load_recipe(RECIPE)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in sys.argv else [0]
        args.icvf_steps = args.recon_steps = 10
        args.offline_steps, args.online_steps = args.offline_steps or 10, args.online_steps or 10
        args.dataset_size, args.eval_episodes = args.dataset_size or 400, 2
    args.offline_steps = args.offline_steps or int(recipe.offline_steps)
    args.online_steps = args.online_steps if args.online_steps is not None else int(recipe.online_steps)
    args.device = str(resolve_device(args.device))  # everything below (pretraining, Cal-QL) runs on this
    recipe = dataclasses.replace(recipe, dataset_size=args.dataset_size or recipe.dataset_size)
    work = Path(args.work or ("runs/bench_vptr_quick" if args.quick else "runs/bench_vptr"))
    out_path = Path(args.out or (work / "vptr.json" if args.quick else "benchmarks/results/vptr.json"))
    quiet = args.quick or None
    clock = Clock(args.deadline_seconds)
    data_path = Path(args.data_root) / f"{recipe.dataset}-n{recipe.dataset_size}.hdf5"
    from rlpt.envs.rendering import setup_offscreen_rendering

    report: dict = {
        "benchmark": "vptr", "command": command_line(), "quick": args.quick, "finished": False,
        "machine": machine(args.device, cuda_device=torch.cuda.get_device_name(0) if torch.cuda.is_available()
                           else None, gl_backend=setup_offscreen_rendering()),
        "versions": versions(),
        "recipe": RECIPE, "agent_config": recipe.config, "env": recipe.env, "env_options": recipe.env_options,
        "dataset": {"name": recipe.dataset, "path": str(data_path), "made_here": not data_path.exists()},
        "videos": args.videos, "seeds": args.seeds, "arms": args.arms, "freeze_encoder": args.freeze,
        "budgets": {"icvf_steps": args.icvf_steps, "recon_steps": args.recon_steps,
                    "offline_steps": args.offline_steps, "online_steps": args.online_steps,
                    "eval_episodes": args.eval_episodes},
        "eval_every": args.eval_every,
        "deadline": None if args.deadline_seconds is None else {
            "seconds": args.deadline_seconds, "pretrain_share": args.pretrain_share,
            "online_share": args.online_share, "safety": SAFETY, "min_online_steps": MIN_ONLINE_STEPS},
        "pretraining": {}, "runs": [],
    }

    def save() -> None:
        report["summary"] = summarize(report["runs"])
        report["wall_seconds"] = round(clock.elapsed(), 1)
        write_result(out_path, report)  # partial results survive an interrupted run

    save()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # a timeout's TERM: save, then exit
    try:
        if report["dataset"]["made_here"]:
            print(f"warning: {data_path} is missing; making it here (minutes)", flush=True)
        dataset = _load_dataset(recipe, Path(args.data_root), quiet)
        report["dataset"].update(transitions=len(dataset), episodes=dataset.num_episodes,
                                 success_rate=dataset.metadata.get("success_rate"))
        probe = make_env(recipe.env, seed=0, **recipe.env_options)  # fail early if offscreen rendering is broken
        probe.reset(seed=0)
        probe.close()
        save()
        for i, seed in enumerate(args.seeds):
            pre: dict = {}
            report["pretraining"][str(seed)] = pre
            pre_until = clock.end(args.pretrain_share, len(args.seeds) - i)
            if "icvf" in args.arms:
                print(f"== seed {seed}: ICVF pretraining ({args.icvf_steps} steps)", flush=True)
                pre["icvf"] = pretrain_icvf(args.videos, seed, args.icvf_steps, work / f"icvf_seed{seed}",
                                            args.device, quiet, clock, pre_until, args.icvf_set)
                save()
            if "recon" in args.arms:
                print(f"== seed {seed}: plain world-model pretraining ({args.recon_steps} steps)", flush=True)
                pre["recon"] = pretrain_recon(args.videos, seed, args.recon_steps, work / f"recon_seed{seed}",
                                              args.device, quiet, clock, pre_until)
                save()
            for j, arm in enumerate(args.arms):
                print(f"== seed {seed}: Cal-QL from pixels, {arm} encoder ({args.offline_steps} offline updates, "
                      f"{args.online_steps} online steps)", flush=True)
                row: dict = {"arm": arm, "seed": seed, "finished": False}
                report["runs"].append(row)
                until = clock.end(1.0, (len(args.seeds) - i) * len(args.arms) - j)
                run_arm(arm, seed, recipe, dataset, pre, args, clock, until, row, save)
                print(json.dumps({k: v for k, v in row.items() if "success" in k or "seconds" in k
                                  or "steps_run" in k}), flush=True)
    except BaseException as e:  # the JSON says why the process stopped (only files come back from a remote run)
        report["error"] = f"{type(e).__name__}: {e}"
        save()
        raise
    report["finished"] = True
    save()
    print(table(report["summary"]))
    print(f"wrote {out_path} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
