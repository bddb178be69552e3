"""V-PTR benchmark: offline RL from pixels with a video-pretrained encoder (ICVF) vs scratch vs reconstruction.

    .venv/bin/python benchmarks/vptr.py --seeds 0 1 2          # the experiment (hours on 2 CPU cores)
    .venv/bin/python benchmarks/vptr.py --quick                 # end-to-end smoke run (a few minutes)

Per seed:
1. Phase 1 on the same action-free video (default: the committed sample, video_data/sample/manifest.jsonl,
   which includes tabletop clips with randomized looks and other embodiments):
   - `icvf`: `rlpt.pretrain.vptr.pretrain` (cpu-small preset: 32x32, ResNet depth 16, 2 stages, GroupNorm);
   - `recon`: the plain (non-contextual) ContextWM world model, `rlpt.pretrain.contextwm.pretrain` with its
     cpu-small preset and `norm="layer"`, so its `encoder` is the same ResNetEncoder architecture; its encoder
     learned by reconstructing frames (plus the RSSM's KL).
   - `scratch`: the same architecture, randomly initialised (PTR).
2. Phase 2: Cal-QL from 32x32 pixels on `tabletop-push-noisy-pixels32` with the hyperparameters of
   agents/vptr/tabletop-push.yaml, starting from each encoder (fine-tuned unless --freeze), for the same number
   of offline updates; success rate over --eval-episodes.
3. Phase 3: online fine-tuning (50/50 offline/online batches) for the same number of env steps; success again.

Prints a table (mean ± std over seeds, and each arm's ratio to scratch) and writes benchmarks/results/vptr.json
with the machine, versions, command, seeds and every number (per seed: success rates, returns, pretraining
diagnostics, wall times). --quick writes runs/bench_vptr_quick/vptr.json instead (not a result).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.agents.calql import CalQLConfig  # noqa: E402
from rlpt.envs import make_env  # noqa: E402
from rlpt.eval import evaluate  # noqa: E402
from rlpt.train import _load_dataset, load_recipe  # noqa: E402
from rlpt.utils import write_json  # noqa: E402

RECIPE = "agents/vptr/tabletop-push.yaml"
ARMS = ("icvf", "scratch", "recon")


def pretrain_icvf(videos: str, seed: int, steps: int, out: Path, device: str, quiet: bool) -> dict:
    from rlpt.pretrain.vptr import ICVFConfig, pretrain

    t0 = time.time()
    path = pretrain(videos, ICVFConfig.preset("cpu-small"), steps=steps, out_dir=out, seed=seed, resume=True,
                    device=device, eval_every=max(steps // 4, 1), checkpoint_every=max(steps // 4, 1), quiet=quiet)
    summary = json.loads((path / "summary.json").read_text())
    return {"path": str(path), "steps": summary["steps"], "seconds": round(time.time() - t0, 1),
            "value_order": summary["final"].get("eval/value_order"), "loss": summary["final"].get("train/loss")}


def pretrain_recon(videos: str, seed: int, steps: int, out: Path, device: str, quiet: bool) -> dict:
    from rlpt.pretrain.contextwm import WorldModelConfig, pretrain

    t0 = time.time()
    config = WorldModelConfig.preset("cpu-small", contextual=False, norm="layer")
    path = pretrain(videos, config, steps=steps, out_dir=out, seed=seed, resume=True, device=device,
                    checkpoint_every=max(steps // 4, 1), quiet=quiet)
    summary = json.loads((path / "summary.json").read_text())
    return {"path": str(path), "steps": summary["steps"], "seconds": round(time.time() - t0, 1),
            "image_mse": summary["final"].get("train/image_mse"), "loss": summary["final"].get("train/loss")}


def encoder_for(arm: str, pre: dict) -> tuple[dict, dict]:
    """(config changes, create kwargs) that give the Cal-QL agent this arm's encoder."""
    if arm == "icvf":
        return {"pretrained": pre["icvf"]["path"]}, {}
    if arm == "recon":
        from rlpt.pretrain.contextwm import load_pretrained

        return {}, {"encoder": load_pretrained(pre["recon"]["path"], device="cpu").encoder}
    return {}, {}


def run_arm(arm: str, seed: int, recipe, dataset, pre: dict, args) -> dict:
    changes, kwargs = encoder_for(arm, pre)
    cfg = CalQLConfig.from_dict({**recipe.config, "seed": seed, **changes, "freeze_encoder": args.freeze,
                                 "log_interval": 10**9}, source=f"{RECIPE} ({arm})")
    env = make_env(recipe.env, seed=seed, **recipe.env_options)
    agent = cfg.create(env.observation_space, env.action_space, device=args.device, **kwargs)
    if arm == "scratch":  # same architecture as the pretrained encoders
        assert agent.encoder.kwargs == {**recipe.config["encoder_config"], "image_size": 32}, agent.encoder.kwargs
    out: dict = {"arm": arm, "seed": seed, "encoder": {"class": type(agent.encoder).__name__,
                                                       "kwargs": getattr(agent.encoder, "kwargs", None),
                                                       "out_dim": agent.encoder.out_dim}}

    def score(phase: str) -> None:
        res = evaluate(agent, recipe.env, args.eval_episodes, seed=10_000 + seed, env_options=recipe.env_options)
        out[f"{phase}_success_rate"] = res.success_rate
        out[f"{phase}_return"] = res.mean_return

    t0 = time.time()
    m = agent.fit(dataset, args.offline_steps)
    out["offline_seconds"] = round(time.time() - t0, 1)
    out["offline_final_metrics"] = {k: round(float(v), 4) for k, v in m.items()}
    score("offline")
    t0 = time.time()
    agent.learn(env, total_timesteps=args.online_steps, offline=dataset, mix_ratio=recipe.mix_ratio)
    out["online_seconds"] = round(time.time() - t0, 1)
    score("online")
    env.close()
    return out


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cell = {"seeds": [r["seed"] for r in mine]}
        for key in ("offline_success_rate", "online_success_rate", "offline_return", "online_return"):
            vals = np.array([r[key] for r in mine], float)
            cell[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "values": vals.tolist()}
        out[arm] = cell
    if "scratch" in out:
        for cell in out.values():
            for key in ("offline_success_rate", "online_success_rate"):
                base = out["scratch"][key]["mean"]
                cell[f"{key}_vs_scratch"] = round(cell[key]["mean"] / base, 3) if base > 0 else None
    return out


def table(summary: dict) -> str:
    lines = [f"{'arm':<8} {'offline success':>18} {'online success':>18} {'x scratch (off/on)':>20}"]
    for arm, c in summary.items():
        off, on = c["offline_success_rate"], c["online_success_rate"]
        ratio = f"{c.get('offline_success_rate_vs_scratch')}/{c.get('online_success_rate_vs_scratch')}"
        lines.append(f"{arm:<8} {off['mean']:>10.2f} ± {off['std']:<5.2f} {on['mean']:>10.2f} ± {on['std']:<5.2f} "
                     f"{ratio:>20}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default="video_data/sample/manifest.jsonl",
                   help="phase-1 video (any rlpt.data.video.open_videos source)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--quick", action="store_true", help="tiny budgets end to end (minutes), not a result")
    p.add_argument("--icvf-steps", type=int, default=3000, help="ICVF pretraining updates")
    p.add_argument("--recon-steps", type=int, default=3000, help="plain world-model pretraining updates")
    p.add_argument("--offline-steps", type=int, help="Cal-QL offline updates (default: the recipe's)")
    p.add_argument("--online-steps", type=int, help="online env steps (default: the recipe's)")
    p.add_argument("--dataset-size", type=int, help="transitions in the pixel dataset (default: the recipe's)")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--freeze", action="store_true", help="keep every encoder frozen (default: fine-tune)")
    p.add_argument("--work", help="pretraining folders (default runs/bench_vptr[_quick])")
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="results JSON (default benchmarks/results/vptr.json; --quick: <work>/vptr.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    recipe = load_recipe(RECIPE)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in sys.argv else [0]
        args.icvf_steps = args.recon_steps = 10
        args.offline_steps, args.online_steps = args.offline_steps or 10, args.online_steps or 10
        args.dataset_size, args.eval_episodes = args.dataset_size or 400, 2
    args.offline_steps = args.offline_steps or int(recipe.offline_steps)
    args.online_steps = args.online_steps or int(recipe.online_steps)
    recipe = dataclasses.replace(recipe, dataset_size=args.dataset_size or recipe.dataset_size)
    work = Path(args.work or ("runs/bench_vptr_quick" if args.quick else "runs/bench_vptr"))
    out_path = Path(args.out or (work / "vptr.json" if args.quick else "benchmarks/results/vptr.json"))
    quiet = args.quick or None
    t_start = time.time()

    dataset = _load_dataset(recipe, Path(args.data_root), quiet)
    report = {
        "benchmark": "vptr", "command": " ".join(["python", *sys.argv]), "quick": args.quick,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": args.device,
                    "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "recipe": RECIPE, "agent_config": recipe.config, "env": recipe.env, "env_options": recipe.env_options,
        "dataset": {"name": recipe.dataset, "transitions": len(dataset), "episodes": dataset.num_episodes,
                    "success_rate": dataset.metadata.get("success_rate")},
        "videos": args.videos, "seeds": args.seeds, "arms": args.arms, "freeze_encoder": args.freeze,
        "budgets": {"icvf_steps": args.icvf_steps, "recon_steps": args.recon_steps,
                    "offline_steps": args.offline_steps, "online_steps": args.online_steps,
                    "eval_episodes": args.eval_episodes},
        "pretraining": {}, "runs": [],
    }
    for seed in args.seeds:
        pre: dict = {}
        if "icvf" in args.arms:
            print(f"== seed {seed}: ICVF pretraining ({args.icvf_steps} steps)", flush=True)
            pre["icvf"] = pretrain_icvf(args.videos, seed, args.icvf_steps, work / f"icvf_seed{seed}", args.device,
                                        quiet)
        if "recon" in args.arms:
            print(f"== seed {seed}: plain world-model pretraining ({args.recon_steps} steps)", flush=True)
            pre["recon"] = pretrain_recon(args.videos, seed, args.recon_steps, work / f"recon_seed{seed}",
                                          args.device, quiet)
        report["pretraining"][str(seed)] = pre
        for arm in args.arms:
            print(f"== seed {seed}: Cal-QL from pixels, {arm} encoder ({args.offline_steps} offline updates, "
                  f"{args.online_steps} online steps)", flush=True)
            row = run_arm(arm, seed, recipe, dataset, pre, args)
            print(json.dumps({k: v for k, v in row.items() if "success" in k or "seconds" in k}), flush=True)
            report["runs"].append(row)
            report["summary"] = summarize(report["runs"])
            report["wall_seconds"] = round(time.time() - t_start, 1)
            write_json(out_path, report)  # partial results survive an interrupted run
    print(table(report["summary"]))
    print(f"wrote {out_path} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
