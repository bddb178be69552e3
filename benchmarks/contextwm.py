"""ContextWM transfer experiment: world-model fine-tuning on a held-out task with held-out looks, from scratch vs a
plain video-pretrained world model vs a ContextWM-pretrained one (research note §1.8, scaled to the 2-core CPU).

    nice -n 5 .venv/bin/python benchmarks/contextwm.py            # the experiment, 3 seeds (see "Time" below)
    .venv/bin/python benchmarks/contextwm.py --quick              # end-to-end smoke run (< 3 min), not a result
    .venv/bin/python benchmarks/contextwm.py --agent-only --agent-seeds 0 1 2 3 4 --out A.json
                                                                  # part two alone: Dreamer agent return (hours)
    .venv/bin/python benchmarks/contextwm.py --agent-only --agent-seeds 0 --agent-inits plain --out P.json &
    .venv/bin/python benchmarks/contextwm.py --agent-only --agent-seeds 1 --agent-inits plain --out Q.json
    .venv/bin/python benchmarks/contextwm.py --merge P.json Q.json --out PQ.json  # parallel parts, then joined
    bash benchmarks/device/contextwm_gpu.sh                       # part two on one GPU machine (see its header)

Data
- Pretraining videos (action-free): `rlpt video render` of cheetah, walker, hopper, finger, tabletop-push and
  tabletop-hand-push with texture seeds 0:1000, rendered at the world model's 32x32 into <work>/videos
  (--render-clips, default 240 clips x 50 frames, ~2-4 min; 0 uses the committed video_data/sample instead).
- Target: dm_control cartpole-swingup (not in pretraining) under HELD-OUT texture seeds 5000:6000: --train-episodes
  (10) + --eval-episodes (5) episodes of 200 steps with OU-noise actions, action repeat 2, and the true physics
  state (qpos, qvel) per frame (`rlpt.collect.video_render.collect_target_episodes`).

Phase A: `rlpt.pretrain.contextwm.pretrain` of a plain world model (contextual=False) and a ContextWM, cpu-small
preset, the same --pretrain-steps (1500) and seed; once, shared by every fine-tuning seed. Cached in <work>.

Phase B: for each init in {scratch, plain, contextwm} and seed, the ContextWM/APV fine-tuning agent
(`rlpt.agents.contextwm`, cpu-small, DMC settings: concat_embed, KL free nats 1, batch 16 x 16) trains its WORLD
MODEL ONLY (`ContextWM._train_world_model`: encoder, action-free RSSM, the new action-conditioned RSSM, decoder,
reward head; no actor-critic, no intrinsic bonus: intr_beta 0, no aux head) for --updates (600) updates on the
train episodes. `scratch` is the plain (DreamerV2-like) architecture from random weights, as the paper's DreamerV2
baseline; `scratch-ctx` (contextual architecture from random weights) can be added with --inits. Every
--eval-every (100) updates, on the held-out episodes:
- open-loop MSE: windows of 15 frames; 5 observed through both RSSMs, 10 imagined from the actions by the
  action-conditioned prior and decoded (`predict_open_loop`; frame 0 is the context frame); mean squared error per
  pixel and channel in [0, 1] units over the 10 imagined frames (a copy-the-last-observed-frame baseline is
  recorded for scale);
- reward MSE: the reward head on the filtered (posterior) features vs the true reward;
- the same open-loop and reward MSE on train episodes (`train_*`: the looks seen in fine-tuning), for contrast;
- state probe: ridge regression from features to the true (qpos, qvel), fitted on the TRAIN episodes' features,
  scored on the held-out ones (R^2 per state dimension, averaged; the first 5 frames of each episode skipped; the
  ridge strength picked by episode-grouped cross-validation on the train episodes), for `af_feat` (action-free
  RSSM) and `feat` (action-conditioned RSSM). A probe on raw pixels is recorded once for scale.

Report: per init, mean ± std (sample std over seeds), IQM and bootstrap 95% intervals (`rlpt.eval.stats.describe`)
of the final metrics and of their mean over the curve; the effects (contextwm vs scratch, contextwm vs plain, plain
vs scratch) as % change, as measured, with bootstrap 95% intervals paired over seeds; the pretraining
time; the curves (a PNG next to the JSON). benchmarks/results/contextwm.json is written after every finished run
and a re-run skips finished runs (same settings required; add seeds or inits freely).

Time (measured on the project's 2-core CPU, 1 torch thread): a pretraining update ~0.2 s of CPU (~0.2-0.4 s wall
depending on the load), a fine-tuning world-model update 0.27-0.38 s CPU (plain-contextual; ~0.55-0.8 s wall on a
busy machine), an evaluation ~2-3 s CPU. Defaults: rendering ~2 min + pretraining 2 x 1500 updates ~10 min + 9
fine-tuning runs x 600 updates ~30-33 min: about 45 min of one free core; more in wall time when the CPU is shared.
The rendered videos, target episodes' settings and pretrained models are cached in <work>.

Part two (--agent-return; --agent-only: without phase B): `rlpt.train.train` on
agents/contextwm/cartpole-swingup-cpu.yaml (pixels 32x32, action repeat 2, the env's own looks) for --agent-steps
(10000) online steps per run, from scratch (contextual, random weights), the plain and the ContextWM phase-A
checkpoint (--agent-inits), --agent-seeds seeds, --agent-eval-episodes (10) evaluation episodes every
--agent-eval-interval (2000) steps. The results file is written after every evaluation point and every run; a rerun
skips finished runs and starts unfinished ones again. --agent-deadline (seconds, or @UNIX_TIME shared by parallel
processes) stops each run at its last evaluation point after which the next chunk would not end in time (`status`
"deadline", `online_steps_reached`); the summary compares the inits at `common_step`, the largest step every run
reached (the budget when all finished): `describe` per init (mean ± sample std, IQM, bootstrap intervals) and
ContextWM - scratch, plain - scratch, ContextWM - plain with bootstrap 95% intervals paired over seeds. --merge joins
part files (one per process), keeping per run the record that got furthest. Measured on the CPU: one agent update
(world model + actor-critic in imagination from 256 starts, batch 16 x 16) ~0.75 s CPU (~1.5 s wall shared), one env
step with acting ~0.018 s CPU; a run at 10k env steps (1900 updates) ~27 min of one free core (~1 h shared). On a GPU
machine: benchmarks/device/contextwm_gpu.sh (5 seeds x 3 inits in parallel, one 10-minute call). Only --quick runs it
by default (a few hundred steps, to check the pipeline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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

# numpy's OpenBLAS threads thrash on a shared 2-core machine (an SVD ran 10x slower): one thread unless told otherwise
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.errors import ConfigError  # noqa: E402
from rlpt.eval.plots import save_figure  # noqa: E402
from rlpt.eval.stats import aggregate_curves, bootstrap_ratio_ci, describe, diff_by_seed, paired_values  # noqa: E402
from rlpt.utils import resolve_device, set_seed, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "agents/contextwm/cartpole-swingup-cpu.yaml"
INITS = ("scratch", "scratch-ctx", "plain", "contextwm")
CONTEXT = 5  # observed frames before open-loop prediction
HORIZON = 10  # imagined frames
BURN_IN = 5  # frames skipped at each episode start in the state probe
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5)


# ============================================================================ data
class InMemoryClips:
    """Whole videos held in memory `(N, F, S, S, 3)` uint8; `sample` draws random windows of `seq_len` frames (the
    `sample(batch_size, rng)` interface `rlpt.pretrain.contextwm.pretrain` accepts)."""

    def __init__(self, videos: np.ndarray, seq_len: int):
        if videos.ndim != 5 or videos.shape[1] < seq_len:
            raise ConfigError(f"InMemoryClips: need (N, F >= {seq_len}, S, S, 3) frames, got {videos.shape}")
        self.videos, self.seq_len = videos, int(seq_len)

    def __len__(self) -> int:
        return len(self.videos)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        idx = rng.integers(0, len(self.videos), batch_size)
        start = rng.integers(0, self.videos.shape[1] - self.seq_len + 1, batch_size)
        return np.stack([self.videos[i, s:s + self.seq_len] for i, s in zip(idx, start, strict=True)])


def pretraining_videos(args, work: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Render (or reuse) the pretraining set and load it whole: uint8 `(N, F, S, S, 3)` and a description."""
    from rlpt.data.video import open_videos

    t0, c0 = time.time(), time.process_time()
    if args.render_clips > 0:
        from rlpt.collect.video_render import render_videos

        folder = work / "videos"
        manifest = folder / "manifest.jsonl"
        want = {"clips": args.render_clips, "frames": args.render_frames, "size": args.image_size, "seed": 1,
                "texture_seeds": [0, 1000]}
        info_path = folder / "render.json"
        if manifest.exists() and info_path.exists():
            have = json.loads(info_path.read_text())
            if any(have.get(k) != v for k, v in want.items()):
                raise ConfigError(f"{folder} was rendered with other settings ({ {k: have.get(k) for k in want} }); "
                                  f"delete it or pass another --work")
            rendered = False
        else:
            render_videos(folder, clips=args.render_clips, frames=args.render_frames, size=args.image_size, seed=1,
                          texture_seeds=(0, 1000), force=True, quiet=args.quiet)
            rendered = True
        source = str(manifest)
        frames = args.render_frames
    else:
        source = str(ROOT / "video_data" / "sample" / "manifest.jsonl")
        frames, rendered = 50, False
    clips = open_videos(source, clip_len=frames, image_size=args.image_size)
    videos = np.stack([clips.read_clip(int(i), 0) for i in clips.usable_indices()])  # (N, F, S, S, 3)
    domains: dict[str, int] = {}
    seeds = []
    for i in clips.usable_indices():
        meta = clips.meta(int(i))
        domains[meta.get("domain", "?")] = domains.get(meta.get("domain", "?"), 0) + 1
        seeds.append(meta.get("texture_seed"))
    render_info = json.loads((Path(source).parent / "render.json").read_text())
    return videos, {
        "source": os.path.relpath(source, ROOT), "rendered_now": rendered, "clips": int(len(videos)),
        "frames_per_clip": int(videos.shape[1]), "image_size": args.image_size, "clips_per_domain": domains,
        "texture_seed_range_seen": [int(min(seeds)), int(max(seeds))] if None not in seeds else None,
        "skipped": len(clips.skipped), "render_command": render_info.get("command"),
        "render_seconds": render_info.get("seconds"),
        "load_seconds": round(time.time() - t0, 1), "load_cpu_seconds": round(time.process_time() - c0, 1)}


@dataclasses.dataclass
class Episodes:
    """Target episodes as sequences: frames `(E, T, S, S, 3)`, actions that led to each frame `(E, T, A)` (zeros at
    t=0), rewards received on arriving at each frame `(E, T)` (0 at t=0), states `(E, T, D)`."""

    obs: np.ndarray
    led_actions: np.ndarray
    led_rewards: np.ndarray
    states: np.ndarray
    texture_seeds: list[int]


def to_episodes(ds) -> Episodes:
    b = ds.episode_bounds()
    obs, acts, rews, states = [], [], [], []
    for s, e in zip(b.starts, b.ends, strict=True):
        obs.append(ds.observations[s:e])
        led = np.zeros_like(ds.actions[s:e])
        led[1:] = ds.actions[s:e - 1]
        acts.append(led)
        r = np.zeros(e - s, np.float32)
        r[1:] = ds.rewards[s:e - 1]
        rews.append(r)
        states.append(ds.infos["states"][s:e])
    return Episodes(np.stack(obs), np.stack(acts), np.stack(rews), np.stack(states),
                    [int(ds.infos["texture_seed"][s]) for s in b.starts])


def target_data(args) -> tuple[Any, Episodes, Episodes, dict[str, Any]]:
    from rlpt.collect.video_render import collect_target_episodes

    t0, c0 = time.time(), time.process_time()
    common = dict(domain_task=args.target, steps=args.episode_steps, size=args.image_size, texture_seeds=(5000, 6000),
                  action_repeat=2, quiet=args.quiet)
    train = collect_target_episodes(episodes=args.train_episodes, seed=100, **common)
    held = collect_target_episodes(episodes=args.eval_episodes, seed=200, **common)
    tr, ev = to_episodes(train), to_episodes(held)
    overlap = sorted(set(tr.texture_seeds) & set(ev.texture_seeds))
    info = {"task": args.target, "texture_seeds": [5000, 6000], "train_episodes": args.train_episodes,
            "eval_episodes": args.eval_episodes, "steps_per_episode": args.episode_steps, "action_repeat": 2,
            "behaviour": "OU noise (theta 0.15, sigma 0.5)", "train_texture_seeds": tr.texture_seeds,
            "eval_texture_seeds": ev.texture_seeds, "train_eval_texture_overlap": overlap,
            "state": "qpos (cart x, pole angle), qvel", "reward_mean": float(train.rewards.mean()),
            "reward_var_eval": float(ev.led_rewards[:, 1:].var()),
            "state_std_eval": ev.states.reshape(-1, ev.states.shape[-1]).std(0).round(3).tolist(),
            "seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
    return train, tr, ev, info


# ============================================================================ metrics
def ridge_probe(x_tr: np.ndarray, y_tr: np.ndarray, groups: np.ndarray, x_ev: np.ndarray, y_ev: np.ndarray,
                folds: int = 5) -> dict[str, Any]:
    """Ridge regression x -> y on standardised features (every alpha from one eigendecomposition per fold); alpha
    by episode-grouped K-fold CV on the train rows; R^2 per target dimension on the held-out rows."""
    x_tr, y_tr, x_ev, y_ev = (np.asarray(a, np.float64) for a in (x_tr, y_tr, x_ev, y_ev))

    def fit_all(x: np.ndarray, y: np.ndarray):
        """A predictor q -> {alpha: prediction} for every alpha in RIDGE_ALPHAS (one eigendecomposition of the
        smaller Gram matrix: Z^T Z when rows outnumber features, else the dual Z Z^T)."""
        mu, sd, ym = x.mean(0), x.std(0), y.mean(0)
        # dims (almost) constant on the fitting rows are dropped (z = 0): e.g. a one-hot latent class never used
        # there carries float noise ~1e-8 through the straight-through sample, and rescaling it would blow up
        sd = np.where(sd < 1e-3, np.inf, sd)
        z, yc = (x - mu) / sd, y - ym
        if z.shape[0] >= z.shape[1]:
            lam, v = np.linalg.eigh(z.T @ z)
            vty = v.T @ (z.T @ yc)  # (F, D)
            ws = {a: v @ (vty / (lam + a)[:, None]) for a in RIDGE_ALPHAS}
        else:
            lam, u = np.linalg.eigh(z @ z.T)
            uty = u.T @ yc  # (N, D)
            ws = {a: z.T @ (u @ (uty / (lam + a)[:, None])) for a in RIDGE_ALPHAS}
        return lambda q: {a: ((q - mu) / sd) @ w + ym for a, w in ws.items()}

    def r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return 1.0 - ((y - pred) ** 2).sum(0) / np.maximum(((y - y.mean(0)) ** 2).sum(0), 1e-12)

    uniq = np.unique(groups)
    k = min(folds, len(uniq))
    cv: dict[float, list[float]] = {a: [] for a in RIDGE_ALPHAS}
    for f in range(k):
        val = np.isin(groups, uniq[f::k])
        for a, pred in fit_all(x_tr[~val], y_tr[~val])(x_tr[val]).items():
            cv[a].append(float(r2(y_tr[val], pred).mean()))
    best = max(RIDGE_ALPHAS, key=lambda a: np.mean(cv[a]))
    per_dim = r2(y_ev, fit_all(x_tr, y_tr)(x_ev)[best])
    return {"r2": float(per_dim.mean()), "r2_per_dim": per_dim.round(4).tolist(), "alpha": best,
            "cv_r2": round(float(np.mean(cv[best])), 4)}


def probe_rows(feat: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, T, F), (E, T, D) -> rows after the burn-in, and the episode of each row."""
    e, t = feat.shape[:2]
    groups = np.repeat(np.arange(e), t - BURN_IN)
    return feat[:, BURN_IN:].reshape(e * (t - BURN_IN), -1), states[:, BURN_IN:].reshape(-1, states.shape[-1]), groups


def open_loop_windows(ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of CONTEXT + HORIZON frames from every episode: obs `(W, L, S, S, 3)`, led actions
    `(W, L, A)` (zero at the window's first frame, where the model starts fresh)."""
    length = CONTEXT + HORIZON
    obs, act = [], []
    for e in range(len(ep.obs)):
        for s in range(0, ep.obs.shape[1] - length + 1, length):
            obs.append(ep.obs[e, s:s + length])
            a = ep.led_actions[e, s:s + length].copy()
            a[0] = 0.0
            act.append(a)
    return np.stack(obs), np.stack(act)


def copy_last_baseline(windows: np.ndarray) -> float:
    x = windows.astype(np.float32) / 255.0
    return float(((x[:, CONTEXT:] - x[:, CONTEXT - 1:CONTEXT]) ** 2).mean())


def pixel_probe(tr: Episodes, ev: Episodes) -> dict[str, Any]:
    """The state probe on raw pixels (flattened frames in [0, 1]), for scale."""
    def flat(ep: Episodes) -> np.ndarray:
        return ep.obs.reshape(*ep.obs.shape[:2], -1).astype(np.float32) / 255.0

    x_tr, y_tr, g = probe_rows(flat(tr), tr.states)
    x_ev, y_ev, _ = probe_rows(flat(ev), ev.states)
    return ridge_probe(x_tr, y_tr, g, x_ev, y_ev)


@torch.no_grad()
def evaluate_world_model(agent, tr: Episodes, ev: Episodes, windows: tuple[np.ndarray, np.ndarray],
                         train_windows: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Held-out open-loop MSE, reward MSE and the state probes (see the module docstring); the open-loop and reward
    MSE on (a subset of) the train episodes too, to tell fitting from transfer to the held-out looks."""
    t0 = time.process_time()
    out: dict[str, Any] = {}
    f_tr = agent.features(tr.obs, tr.led_actions)  # {"af_feat", "feat"}: (E, T, F)
    f_ev = agent.features(ev.obs, ev.led_actions)
    for key in ("af_feat", "feat"):
        x_tr, y_tr, g = probe_rows(f_tr[key], tr.states)
        x_ev, y_ev, _ = probe_rows(f_ev[key], ev.states)
        p = ridge_probe(x_tr, y_tr, g, x_ev, y_ev)
        out[f"probe_r2_{key}"] = p["r2"]
        out[f"probe_{key}"] = p
    for name, f, ep in (("reward_mse", f_ev, ev), ("train_reward_mse", f_tr, tr)):
        r_hat = agent.reward_head(torch.as_tensor(f["feat"], device=agent.device)).squeeze(-1).cpu().numpy()  # (E, T)
        out[name] = float(((r_hat[:, 1:] - ep.led_rewards[:, 1:]) ** 2).mean())
    obs, act = windows
    pred = agent.predict_open_loop(obs, act, context=CONTEXT, seed=0)  # (W, L, S, S, 3) in [0, 1]
    err = (pred - obs.astype(np.float32) / 255.0) ** 2
    out["open_loop_mse"] = float(err[:, CONTEXT:].mean())
    out["open_loop_mse_per_step"] = err[:, CONTEXT:].mean((0, 2, 3, 4)).round(6).tolist()
    out["recon_mse"] = float(err[:, :CONTEXT].mean())
    obs, act = train_windows
    pred = agent.predict_open_loop(obs, act, context=CONTEXT, seed=0)
    out["train_open_loop_mse"] = float(((pred - obs.astype(np.float32) / 255.0) ** 2)[:, CONTEXT:].mean())
    out["eval_cpu_seconds"] = round(time.process_time() - t0, 2)
    return out


# ============================================================================ phases
def pretrain_models(args, work: Path, videos: np.ndarray | Callable[[], np.ndarray], device: str) -> dict[str, Any]:
    """Phase A: plain and contextual world models, the same preset, steps and seed (cached in <work>). `videos`
    may be a function that loads them, called only when a model has to be trained."""
    from rlpt.pretrain.contextwm import WorldModelConfig, pretrain

    out: dict[str, Any] = {}
    for kind, contextual in (("plain", False), ("contextwm", True)):
        folder = work / f"pretrain_{kind}"
        config = WorldModelConfig.preset("cpu-small", contextual=contextual)
        timing_path = folder / "bench_timing.json"
        if (folder / "contextwm.json").exists() and timing_path.exists():
            timing = json.loads(timing_path.read_text())
            if timing.get("steps") != args.pretrain_steps:
                raise ConfigError(f"{folder} holds a {timing.get('steps')}-step pretraining, not "
                                  f"--pretrain-steps {args.pretrain_steps}; delete it or pass another --work")
            print(f"phase A {kind}: reusing {folder}", flush=True)
        else:
            if folder.exists() and not (folder / "checkpoints").exists():
                shutil.rmtree(folder)
            if callable(videos):
                videos = videos()
            print(f"phase A {kind}: pretraining {args.pretrain_steps} steps ...", flush=True)
            t0, c0, load0 = time.time(), time.process_time(), os.getloadavg()[0]
            pretrain(InMemoryClips(videos, config.seq_len), config, steps=args.pretrain_steps, out_dir=folder, seed=0,
                     resume=True, device=device, log_every=max(args.pretrain_steps // 10, 1),
                     checkpoint_every=max(args.pretrain_steps // 3, 1), quiet=args.quiet)
            timing = {"steps": args.pretrain_steps, "wall_seconds": round(time.time() - t0, 1),
                      "cpu_seconds": round(time.process_time() - c0, 1), "loadavg_1min_before": round(load0, 2),
                      "loadavg_1min_after": round(os.getloadavg()[0], 2)}
            write_json(timing_path, timing)
        summary = json.loads((folder / "summary.json").read_text())
        final = summary.get("final", {})
        out[kind] = {"checkpoint": os.path.relpath(folder, ROOT), "contextual": contextual, **timing,
                     "cpu_seconds_per_update": round(timing["cpu_seconds"] / max(timing["steps"], 1), 4),
                     "final_train_image_mse": final.get("train/image_mse"), "final_train_kl": final.get("train/kl"),
                     "final_train_loss": final.get("train/loss"), "batch": [config.batch_size, config.seq_len],
                     "preset": "cpu-small"}
        print(f"phase A {kind}: {timing['wall_seconds']:.0f} s wall, {timing['cpu_seconds']:.0f} s CPU, final train "
              f"image MSE {out[kind]['final_train_image_mse']}", flush=True)
    return out


def make_agent(init: str, seed: int, args, pretrained: dict[str, Any], n_rows: int, device: str):
    import gymnasium as gym

    from rlpt.agents.contextwm import ContextWMConfig

    ckpt = {"plain": pretrained.get("plain", {}).get("checkpoint"),
            "contextwm": pretrained.get("contextwm", {}).get("checkpoint")}.get(init)
    contextual = {"scratch": False, "scratch-ctx": True}.get(init)
    cfg = ContextWMConfig(seed=seed, preset="cpu-small", pretrained=str(ROOT / ckpt) if ckpt else None,
                          contextual=contextual, concat_embed=True, kl_free=1.0, batch_size=16, seq_len=16,
                          intr_beta=0.0, aux_reward_scale=0.0, buffer_size=n_rows + 64)
    s = args.image_size
    obs_space = gym.spaces.Box(0, 255, (s, s, 3), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)  # cartpole's action bounds
    return cfg.create(obs_space, act_space, device=device)


def finetune_run(init: str, seed: int, args, pretrained: dict[str, Any], train_ds, tr: Episodes, ev: Episodes,
                 windows: tuple[np.ndarray, np.ndarray], train_windows: tuple[np.ndarray, np.ndarray],
                 device: str) -> dict[str, Any]:
    """Phase B, one (init, seed): world-model-only fine-tuning with evaluations every --eval-every updates."""
    set_seed(seed)
    t0, c0 = time.time(), time.process_time()
    agent = make_agent(init, seed, args, pretrained, len(train_ds), device)
    agent.add_dataset(train_ds)
    curve = [{"update": 0, **evaluate_world_model(agent, tr, ev, windows, train_windows)}]
    train_cpu, sums, count = 0.0, {}, 0
    for u in range(1, args.updates + 1):
        c = time.process_time()
        metrics, _, _ = agent._train_world_model(agent._sample())  # the agent's world-model update alone
        agent.step += 1
        train_cpu += time.process_time() - c
        for k in ("train/model_loss", "train/image_loss", "train/kl", "train/reward_loss"):
            sums[k] = sums.get(k, 0.0) + metrics[k]
        count += 1
        if not np.isfinite(metrics["train/model_loss"]):
            raise RuntimeError(f"{init} seed {seed}: non-finite loss at update {u}: {metrics}")
        if u % args.eval_every == 0 or u == args.updates:
            point = {"update": u, **evaluate_world_model(agent, tr, ev, windows, train_windows),
                     **{k: round(v / count, 5) for k, v in sums.items()}}
            sums, count = {}, 0
            curve.append(point)
            print(f"  {init:11s} seed {seed} update {u:5d}: open-loop MSE {point['open_loop_mse']:.5f} (train looks "
                  f"{point['train_open_loop_mse']:.5f})  "
                  f"probe R2 af {point['probe_r2_af_feat']:.3f} feat {point['probe_r2_feat']:.3f}  "
                  f"reward MSE {point['reward_mse']:.5f}", flush=True)
    return {"init": init, "seed": seed, "curve": curve, "final": {k: curve[-1][k] for k in METRICS},
            "curve_mean": {k: float(np.mean([p[k] for p in curve[1:]])) for k in METRICS},
            "wall_seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
            "train_cpu_seconds_per_update": round(train_cpu / max(args.updates, 1), 4)}


METRICS = ("open_loop_mse", "probe_r2_af_feat", "probe_r2_feat", "reward_mse", "recon_mse", "train_open_loop_mse",
           "train_reward_mse")
LOWER_IS_BETTER = {"open_loop_mse": True, "reward_mse": True, "recon_mse": True, "probe_r2_af_feat": False,
                   "probe_r2_feat": False, "train_open_loop_mse": True, "train_reward_mse": True}


def summarize(runs: dict[str, dict], inits: list[str]) -> tuple[dict, dict]:
    """Per init `describe` over seeds (mean ± sample std, IQM, bootstrap intervals); effects between inits as %
    change (and R^2 differences), with bootstrap 95% intervals paired over the seeds both inits ran: of the
    difference (`diff_ci`) and, for the error metrics, of the % change of the means (`pct_change_ci`)."""
    table: dict[str, Any] = {}
    by_seed: dict[str, dict[str, dict[int, float]]] = {}  # init -> "final/metric" -> {seed: value}
    for init in inits:
        rs = [r for r in runs.values() if r["init"] == init]
        if not rs:
            continue
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in rs)}
        for which in ("final", "curve_mean"):
            for k in METRICS:
                v = np.array([r[which][k] for r in rs], float)
                row[f"{which}/{k}"] = {**describe(v, ddof=1), "values": v.round(6).tolist()}
                by_seed.setdefault(init, {})[f"{which}/{k}"] = {r["seed"]: r[which][k] for r in rs}
        table[init] = row
    effects: dict[str, Any] = {}
    for a, b in (("contextwm", "scratch"), ("contextwm", "plain"), ("plain", "scratch"),
                 ("contextwm", "scratch-ctx"), ("scratch-ctx", "scratch")):
        if a not in table or b not in table:
            continue
        eff = {}
        for which in ("final", "curve_mean"):
            for k in METRICS:
                ma, mb = table[a][f"{which}/{k}"]["mean"], table[b][f"{which}/{k}"]["mean"]
                sa, sb = table[a][f"{which}/{k}"]["std"], table[b][f"{which}/{k}"]["std"]
                pooled = float(np.sqrt((sa**2 + sb**2) / 2))
                e = {"a": ma, "b": mb, "pct_change": 100.0 * (ma - mb) / abs(mb) if mb else None,
                     "better": (ma < mb) if LOWER_IS_BETTER[k] else (ma > mb),
                     "diff_over_pooled_std": (ma - mb) / pooled if pooled > 0 else None}
                if not LOWER_IS_BETTER[k]:
                    e["difference"] = ma - mb
                va, vb = by_seed[a][f"{which}/{k}"], by_seed[b][f"{which}/{k}"]
                e["diff_ci"] = diff_by_seed(va, vb)
                seeds, xa, xb = paired_values(va, vb)
                if LOWER_IS_BETTER[k] and len(seeds) >= 2 and xb.mean() > 0:  # errors: positive, ratio of means
                    r = bootstrap_ratio_ci(xa, xb, paired=True)
                    e["pct_change_ci"] = [100.0 * (r["low"] - 1.0), 100.0 * (r["high"] - 1.0)]
                else:
                    e["pct_change_ci"] = None
                eff[f"{which}/{k}"] = e
        effects[f"{a} vs {b}"] = eff
    return table, effects


def plot_curves(runs: dict[str, dict], inits: list[str], path: Path, title: str,
                baselines: dict[str, Any] | None = None) -> Path:
    """Mean over seeds per init with a bootstrap 95% interval (`aggregate_curves`), one panel per metric; dashed
    lines: the baselines for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("open_loop_mse", "held-out open-loop MSE (10 imagined frames)"),
              ("probe_r2_feat", "state probe R² (action-conditioned feat)"),
              ("probe_r2_af_feat", "state probe R² (action-free af_feat)"), ("reward_mse", "held-out reward MSE")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110)
    colors = {"scratch": "tab:gray", "scratch-ctx": "tab:brown", "plain": "tab:blue", "contextwm": "tab:red"}
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for init in inits:
            rs = [r for r in runs.values() if r["init"] == init]
            if not rs:
                continue
            agg = aggregate_curves([{p["update"]: p[key] for p in r["curve"]} for r in rs])
            ax.plot(agg["steps"], agg["mean"], marker="o", ms=3, color=colors.get(init), label=f"{init} (n={len(rs)})")
            ax.fill_between(agg["steps"], agg["low"], agg["high"], color=colors.get(init), alpha=0.15)
        ref = {"open_loop_mse": ("copy last observed frame", "open_loop_mse_copy_last_frame"),
               "probe_r2_feat": ("raw-pixel probe", "probe_raw_pixels_r2"),
               "probe_r2_af_feat": ("raw-pixel probe", "probe_raw_pixels_r2"),
               "reward_mse": ("predict the train mean", "reward_mse_train_mean")}[key]
        if baselines and baselines.get(ref[1]) is not None:
            ax.axhline(baselines[ref[1]], ls="--", c="k", lw=1, alpha=0.6, label=ref[0])
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("fine-tuning updates")
        ax.grid(alpha=0.3)
        if key == "open_loop_mse":
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ============================================================================ part two: agent return
AGENT_INITS = ("scratch", "plain", "contextwm")
#: agent-return effects reported, (a, b): a - b in eval return, paired over the seeds both ran
AGENT_EFFECTS = (("contextwm", "scratch"), ("plain", "scratch"), ("contextwm", "plain"))


class DeadlineReached(Exception):
    """Raised from `rlpt.train.train`'s `on_eval` hook when the next chunk of online steps would end past the
    deadline; `agent_return_run` catches it and keeps the evaluation points reached."""


class ChunkDeadline:
    """Deadline bookkeeping of one agent run, which trains in chunks of online steps with an evaluation after each.

    `at` is a `time.time()` instant (None: no deadline). `mark()` is called at each evaluation point; another chunk
    `fits()` when now + `margin` x the longest chunk so far ends by `at`. The first chunk's estimate is `first_guess`
    seconds (e.g. the first chunk of the run before it in the same process; 0: no estimate, it always starts).
    `clock` is injectable for tests."""

    def __init__(self, at: float | None, margin: float = 1.2, first_guess: float = 0.0,
                 clock: Callable[[], float] | None = None):
        self.at, self.margin, self.first_guess = at, float(margin), float(first_guess)
        self.clock = clock or time.time
        self.started = self._last = self.clock()
        self.chunks: list[float] = []  # seconds of each finished chunk (training + its evaluation)

    def mark(self) -> float:
        """An evaluation point was reached: record the chunk that ended now and return its seconds."""
        now = self.clock()
        self.chunks.append(now - self._last)
        self._last = now
        return self.chunks[-1]

    def expected_chunk(self) -> float:
        """Seconds the next chunk is expected to take: the longest so far, else the first guess."""
        return max(self.chunks) if self.chunks else self.first_guess

    def fits(self) -> bool:
        """Whether the next chunk is expected to end by the deadline (always True without one)."""
        return self.at is None or self.clock() + self.margin * self.expected_chunk() <= self.at

    def left(self) -> float | None:
        """Seconds until the deadline (None without one)."""
        return None if self.at is None else self.at - self.clock()


def parse_deadline(text: str | None, now: float | None = None) -> float | None:
    """`--agent-deadline`: seconds from now (`600`), or an absolute Unix time (`@1765170000`, as `date +%s` prints,
    so parallel processes share one end). Returns a `time.time()` instant, or None for no deadline."""
    if text is None or text == "":
        return None
    now = time.time() if now is None else now
    try:
        value = float(text[1:]) if text.startswith("@") else now + float(text)
    except ValueError:
        raise ConfigError(f"--agent-deadline: expected seconds (e.g. 540) or @UNIX_TIME (e.g. @1765170000), given "
                          f"{text!r}") from None
    if not np.isfinite(value):
        raise ConfigError(f"--agent-deadline: expected a finite time, given {text!r}")
    return value


def eval_steps(total: int, interval: int) -> list[int]:
    """The online steps at which `rlpt.train.train` evaluates a run without an offline phase: after each chunk of
    `interval` steps (the last chunk shorter), i.e. min(k x interval, total) for k = 1, 2, ..."""
    if total < 1 or interval < 1:
        raise ConfigError(f"agent return: online steps and eval interval must be >= 1, given {total} and {interval}")
    return sorted({min(k * interval, total) for k in range(1, -(-total // interval) + 1)})


def run_finished(record: dict[str, Any] | None, budget: int) -> bool:
    """Whether an agent-return record reached its online step budget (records written before the `status` field
    count as finished when they hold a final return at the budget)."""
    if not isinstance(record, dict):
        return False
    if "status" in record:
        return record["status"] == "done"
    return record.get("online_return") is not None and record.get("online_steps") == budget


def run_progress(record: dict[str, Any]) -> tuple[int, int]:
    """Sort key of two records of one run (the better one is larger): finished first, then the step reached."""
    reached = record.get("online_steps_reached", record.get("online_steps") or 0) or 0
    return (1 if record.get("status", "done" if record.get("online_return") is not None else "") == "done" else 0,
            int(reached))


def agent_return_run(init: str, seed: int, args, pretrained: dict[str, Any], work: Path, *,
                     deadline: float | None = None, first_guess: float = 0.0,
                     on_point: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Part two, one (init, seed): the Dreamer agent recipe for --agent-steps online steps with
    --agent-eval-episodes evaluation episodes every --agent-eval-interval steps. `on_point(record)` is called at
    each evaluation point (to save partial results). With a `deadline` (a `time.time()` instant) the run stops at
    the last evaluation point after which another chunk would not end in time (`status` "deadline"); the record
    says how far it got (`online_steps_reached`) and keeps every point reached."""
    from rlpt.train import load_recipe, train

    ckpt = pretrained[init]["checkpoint"] if init in ("plain", "contextwm") else None
    interval = args.agent_eval_interval or args.agent_steps
    overrides = [f"seed={seed}", f"online_steps={args.agent_steps}", f"pretrained={ROOT / ckpt if ckpt else 'null'}",
                 f"online_eval_interval={interval}", f"eval_episodes={args.agent_eval_episodes}"]
    if args.agent_video_steps is not None:
        overrides.append(f"video_steps={args.agent_video_steps}")
    if args.quick:
        overrides += ["config.prefill=200", "config.train_every=50", "config.pretrain_updates=2",
                      "config.log_interval=100", "env_options.time_limit=100"]
        if args.agent_video_steps is None:
            overrides.append("video_steps=0")
    recipe = load_recipe(str(ROOT / RECIPE), overrides)
    steps = eval_steps(args.agent_steps, interval)
    clock = ChunkDeadline(deadline, first_guess=first_guess)
    t0, c0 = time.time(), time.process_time()
    record: dict[str, Any] = {
        "init": init, "seed": seed, "recipe": RECIPE, "overrides": overrides, "status": "running",
        "online_steps_budget": args.agent_steps, "online_steps_reached": 0, "curve": [], "online_return": None,
        "deadline_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)) if deadline else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}

    def timing() -> None:
        record.update(wall_seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                      chunk_seconds=[round(c, 1) for c in clock.chunks])

    def on_eval(m: dict[str, Any]) -> None:
        if m.get("phase") != "online":
            return
        seconds = clock.mark()
        k = len(record["curve"])
        if k >= len(steps):
            raise RuntimeError(f"{init} seed {seed}: evaluation {k + 1} but only {len(steps)} were expected at "
                               f"steps {steps}")
        record["curve"].append({"online_step": steps[k], "return": m["eval/return"],
                                "return_std": m.get("eval/return_std"), "seconds": round(seconds, 1)})
        record["online_steps_reached"] = steps[k]
        record["online_return"] = m["eval/return"]
        timing()
        print(f"  agent {init:9s} seed {seed} step {steps[k]:6d}: return {m['eval/return']:7.1f} "
              f"({seconds:.0f} s chunk)", flush=True)
        if on_point is not None:
            on_point(record)
        if steps[k] < args.agent_steps and not clock.fits():
            raise DeadlineReached(f"step {steps[k]}: {clock.left():.0f} s left, the next chunk takes "
                                  f"~{clock.expected_chunk():.0f} s")

    try:
        summary = train(recipe, out_root=work / "agent_runs" / init, data_root=ROOT / "data", quiet=args.quiet,
                        on_eval=on_eval)
    except DeadlineReached as e:
        record["status"], record["stopped"] = "deadline", str(e)
        print(f"  agent {init} seed {seed}: stopped by the deadline at {e}", flush=True)
    else:
        got = [e["online_step"] for e in (summary.get("evaluations") or {}).get("online", [])]
        if got != [p["online_step"] for p in record["curve"]]:
            raise RuntimeError(f"{init} seed {seed}: train evaluated at steps {got}, the benchmark counted "
                               f"{[p['online_step'] for p in record['curve']]}")
        record.update(status="done", online_return=summary.get("online_return"), online_steps=summary["online_steps"],
                      updates=summary.get("offline_steps"),
                      run=os.path.relpath(summary["run"], ROOT) if summary.get("run") else None)
    timing()
    return record


def agent_runs(ar: dict[str, Any]) -> list[dict[str, Any]]:
    """The run records of a part-two block (entries with an init and a seed)."""
    return [r for r in ar.values() if isinstance(r, dict) and "init" in r and "seed" in r]


def summarize_agent_return(ar: dict[str, Any]) -> dict[str, Any]:
    """Part two: eval return per init over seeds at `common_step`, the largest evaluation step every run with an
    evaluation reached (the budget when all finished): `describe` (mean ± sample std, IQM, bootstrap 95% intervals
    of both); the effects a - b for `AGENT_EFFECTS` as differences of the means (`<a>_minus_<b>`) and with a
    bootstrap 95% interval paired over the seeds both ran (`<a>_minus_<b>_ci`); mean curves with intervals over
    the steps every seed of an init reached; how far each run got."""
    runs = agent_runs(ar)
    budget = (ar.get("settings") or {}).get("online_steps")
    reached = {f"{r['init']}/seed{r['seed']}": int(r["curve"][-1]["online_step"]) if r.get("curve") else 0
               for r in runs}
    with_points = [r for r in runs if r.get("curve")]
    common = min((r["curve"][-1]["online_step"] for r in with_points), default=None)
    table: dict[str, Any] = {"common_step": common, "budget": budget,
                             "complete": bool(runs) and all(run_finished(r, budget) for r in runs),
                             "reached": dict(sorted(reached.items()))}
    returns: dict[str, dict[int, float]] = {}
    for init in AGENT_INITS:
        rs = sorted((r for r in with_points if r["init"] == init), key=lambda r: r["seed"])
        if not rs:
            continue
        at = {r["seed"]: next(p["return"] for p in r["curve"] if p["online_step"] == common) for r in rs}
        v = np.array(list(at.values()), float)
        curve = aggregate_curves([{p["online_step"]: p["return"] for p in r["curve"]} for r in rs])
        table[init] = {"seeds": list(at), **describe(v, ddof=1), "values": v.round(3).tolist(), "step": common,
                       "curve": {k: np.round(curve[k], 3).tolist() if k != "steps" else curve[k]
                                 for k in ("steps", "mean", "low", "high")}}
        returns[init] = at
    for a, b in AGENT_EFFECTS:
        if a in table and b in table:
            table[f"{a}_minus_{b}"] = table[a]["mean"] - table[b]["mean"]
            table[f"{a}_minus_{b}_ci"] = diff_by_seed(returns[a], returns[b])
    return table


def plot_agent_return(ar: dict[str, Any], path: Path, title: str) -> Path:
    """Each run's eval-return curve (thin) and per init the mean with a bootstrap 95% interval over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init, color in (("scratch", "tab:gray"), ("plain", "tab:blue"), ("contextwm", "tab:red")):
        curves = [r["curve"] for r in agent_runs(ar) if r["init"] == init and r.get("curve")]
        for c in curves:
            ax.plot([p["online_step"] for p in c], [p["return"] for p in c], color=color, alpha=0.3, lw=1)
        if curves:
            agg = aggregate_curves([{p["online_step"]: p["return"] for p in c} for c in curves])
            ax.plot(agg["steps"], agg["mean"], color=color, lw=2, label=f"{init} (mean of {len(curves)})")
            ax.fill_between(agg["steps"], agg["low"], agg["high"], color=color, alpha=0.15)
    ax.set_xlabel("online env steps (agent steps, action repeat 2)")
    ax.set_ylabel("eval return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def merge_agent_blocks(blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Join part-two blocks of several part files: settings from the first, and per run key the record that got
    furthest (`run_progress`: finished first, then the step reached; the first part wins a tie)."""
    merged: dict[str, Any] = {}
    for block in blocks:
        for key, rec in block.items():
            if not (isinstance(rec, dict) and "init" in rec and "seed" in rec):
                continue
            if key not in merged or run_progress(rec) > run_progress(merged[key]):
                merged[key] = rec
    settings = next((b["settings"] for b in blocks if b.get("settings")), None)
    return {"settings": settings, **dict(sorted(merged.items()))} if settings else dict(sorted(merged.items()))


def merge_parts(files: list[str], out: Path) -> int:
    """Join the part files of parallel invocations (copies of one results file, or part-two-only files from
    --agent-only) into `out`: phase B must agree; part two's runs are united (`merge_agent_blocks`) and
    summarized again."""
    try:
        parts = read_parts(files, agree=("settings",))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    base = parts[0]
    for f, part in zip(files[1:], parts[1:], strict=True):
        if part.get("runs") != base.get("runs"):
            raise ConfigError(f"--merge: {f} has other phase-B runs than {files[0]} (key 'runs'): merge copies of "
                              "one results file or --agent-only part files")
        settings = [p.get("agent_return", {}).get("settings") for p in (base, part)]
        if None not in settings and settings[0] != settings[1]:
            raise ConfigError(f"--merge: {f} ran part two with other settings ({settings[1]} vs {settings[0]})")
    commands = []  # part files that began as copies of one file repeat its commands: each once
    for c in (c for p in parts for c in p.get("commands", [])):
        if c not in commands:
            commands.append(c)
    merged = {**base, "commands": commands,
              "parts": part_summary(files, parts, keys=("command", "machine", "wall_seconds_this_invocation")),
              "merged_from": [os.path.relpath(Path(f).resolve(), ROOT) for f in files]}
    blocks = [p["agent_return"] for p in parts if p.get("agent_return")]
    if blocks:
        ar = merge_agent_blocks(blocks)
        ar["summary"] = summarize_agent_return(ar)
        ar["plot"] = os.path.relpath(plot_agent_return(ar, out.with_name(out.stem + "_agent_return.png"),
                                                       f"ContextWM agent on {RECIPE}: eval return"), ROOT)
        merged["agent_return"] = ar
        print(agent_return_table(ar["summary"]))
    if base.get("runs"):
        merged["plot"] = os.path.relpath(plot_curves(
            base["runs"], list(INITS), out.with_name(out.stem + "_finetune.png"),
            f"ContextWM transfer: world-model fine-tuning on {base['settings']['target']} (held-out looks), mean and "
            "bootstrap 95% interval over seeds", base["baselines"]), ROOT)
    write_result(out, merged)
    print(f"wrote {out}")
    return 0


def agent_return_table(s: dict[str, Any]) -> str:
    """Part two's summary as text: per init mean ± std, IQM and the interval at the common step; the effects."""
    lines = [f"agent return at online step {s.get('common_step')} (budget {s.get('budget')}; "
             f"{'all runs finished' if s.get('complete') else 'not all runs finished: see reached'})"]
    for init in AGENT_INITS:
        if init in s:
            c = s[init]
            ci = c.get("mean_ci") or [float("nan")] * 2
            lines.append(f"  {init:10s} {c['mean']:7.1f} ± {c['std'] if c['std'] is not None else float('nan'):5.1f}"
                         f"  IQM {c['iqm']:7.1f}  mean 95% CI [{ci[0]:.1f}, {ci[1]:.1f}]  n={c['n']}  "
                         f"seeds {c['seeds']}")
    for a, b in AGENT_EFFECTS:
        ci = s.get(f"{a}_minus_{b}_ci")
        if ci:
            lines.append(f"  {a} - {b}: {ci['diff']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}] "
                         f"({'paired over seeds ' + str(ci['seeds']) if ci.get('paired') else 'unpaired'})")
    return "\n".join(lines)


# ============================================================================ main
def _pct(effect: dict[str, Any]) -> str:
    return "n/a" if effect["pct_change"] is None else f"{effect['pct_change']:+.1f}%"


def _pct_ci(effect: dict[str, Any]) -> str:
    ci = effect.get("pct_change_ci")
    return "" if not ci else f"[{ci[0]:+.1f}%, {ci[1]:+.1f}%]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (< 3 min): tiny data, steps and one seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (default 0 1 2)")
    p.add_argument("--inits", default="scratch,plain,contextwm", help=f"comma-separated, from {INITS}")
    p.add_argument("--pretrain-steps", type=int, default=1500, help="phase-A updates per model (default 1500)")
    p.add_argument("--updates", type=int, default=600, help="phase-B world-model updates per run (default 600)")
    p.add_argument("--eval-every", type=int, default=100, help="updates between held-out evaluations (default 100)")
    p.add_argument("--render-clips", type=int, default=240,
                   help="pretraining clips to render (x --render-frames frames, at --image-size; cached in --work); "
                        "0: use the committed video_data/sample (96 clips, resized)")
    p.add_argument("--render-frames", type=int, default=50)
    p.add_argument("--image-size", type=int, default=32, help="the cpu-small preset's frame size (32)")
    p.add_argument("--target", default="cartpole-swingup", help="dm_control task held out of pretraining")
    p.add_argument("--train-episodes", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--episode-steps", type=int, default=200)
    p.add_argument("--agent-return", action="store_true", help="also run part two (Dreamer agent return)")
    p.add_argument("--agent-only", action="store_true",
                   help="part two alone: phase A (cached pretrained models, or made now), no target data, no phase B")
    p.add_argument("--pretrain-only", action="store_true", help="phase A alone (render + pretrain into --work)")
    p.add_argument("--agent-steps", type=int, default=None,
                   help="online env steps per agent run (default 10000; --quick 300)")
    p.add_argument("--agent-seeds", type=int, nargs="+", default=None, help="part two's seeds (default 0)")
    p.add_argument("--agent-inits", default="scratch,plain,contextwm", help=f"part two's inits, from {AGENT_INITS}")
    p.add_argument("--agent-eval-interval", type=int, default=None,
                   help="online steps between part two's evaluations (0: only at the end; default 2000; --quick 150)")
    p.add_argument("--agent-eval-episodes", type=int, default=None,
                   help="evaluation episodes per point (default 10; --quick 1)")
    p.add_argument("--agent-video-steps", type=int, default=None,
                   help="length of each agent run's final video (default: the recipe's; 0: none)")
    p.add_argument("--agent-deadline", default=None,
                   help="end part two by then: seconds from now (540) or @UNIX_TIME; each run stops at its last "
                        "evaluation point after which the next chunk would not end in time, runs not begun by then "
                        "are recorded as not started, and the summary compares the inits at the largest step every "
                        "run reached")
    add_merge_arg(p)  # part two of parallel invocations (copies of one results file)
    add_resummarize_arg(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default=None, help="cache folder (default data/contextwm_bench[_quick])")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/contextwm.json; --quick: "
                                               "<work>/contextwm_quick.json; --agent-only, --pretrain-only: "
                                               "<work>/contextwm_agent.json)")
    p.add_argument("--fresh", action="store_true", help="discard finished runs in --out instead of skipping them")
    p.add_argument("--quiet", action="store_true", default=None)
    args = p.parse_args()
    if args.resummarize:
        def summaries(report: dict) -> dict:
            table, effects = summarize(report["runs"], list(INITS))
            new: dict = {"summary": table, "effects": effects}
            if ar := report.get("agent_return"):
                new["agent_return"] = {**ar, "summary": summarize_agent_return(ar)}
            return new

        resummarize(args.resummarize, summaries)
        return 0
    if args.merge:
        return merge_parts(args.merge, Path(args.out) if args.out else ROOT / "benchmarks" / "results" /
                           "contextwm.json")
    agent_inits = [s.strip() for s in args.agent_inits.split(",") if s.strip()]
    if not set(agent_inits) <= set(AGENT_INITS):
        p.error(f"--agent-inits: choose from {', '.join(AGENT_INITS)} (got {agent_inits})")
    if args.quick:
        args.seeds, args.pretrain_steps, args.updates, args.eval_every = [0], 20, 10, 5
        args.render_clips, args.render_frames = 6, 20
        args.train_episodes, args.eval_episodes, args.episode_steps = 2, 1, 40
        args.agent_return = True
    for name, full, quick in (("agent_steps", 10000, 300), ("agent_seeds", [0], [0]),
                              ("agent_eval_interval", 2000, 150), ("agent_eval_episodes", 10, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.agent_only:
        args.agent_return = True
    if args.agent_eval_episodes < 1 or args.agent_steps < 1 or args.agent_eval_interval < 0:
        p.error("--agent-steps and --agent-eval-episodes must be >= 1, --agent-eval-interval >= 0")
    deadline = parse_deadline(args.agent_deadline)
    if args.device == "cpu":  # part two's agent picks its device itself ("auto"): hide the GPUs from it
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    inits = [s.strip() for s in args.inits.split(",") if s.strip()]
    bad = [i for i in inits if i not in INITS]
    if bad:
        p.error(f"--inits: unknown {bad}; choose from {INITS}")
    set_threads(args.threads)
    device = str(resolve_device(args.device))
    # import everything up front: a long run then keeps the code it started with
    import rlpt.agents.contextwm  # noqa: F401
    import rlpt.collect.video_render  # noqa: F401
    import rlpt.data.video  # noqa: F401
    import rlpt.pretrain.contextwm  # noqa: F401
    if args.agent_return:
        import rlpt.train  # noqa: F401
    default_work = "contextwm_bench_quick" if args.quick else "contextwm_bench"
    work = Path(args.work) if args.work else ROOT / "data" / default_work
    work.mkdir(parents=True, exist_ok=True)
    if args.out:
        out = Path(args.out)
    elif args.agent_only or args.pretrain_only:  # never into the committed results file by default
        out = work / "contextwm_agent.json"
    else:
        out = work / "contextwm_quick.json" if args.quick else ROOT / "benchmarks" / "results" / "contextwm.json"
    plot_path = out.with_name(out.stem + "_finetune.png")
    plot_title = (f"ContextWM transfer: world-model fine-tuning on {args.target} (held-out looks), mean and bootstrap "
                  f"95% interval over seeds")

    settings = {k: getattr(args, k) for k in ("pretrain_steps", "updates", "eval_every", "render_clips",
                                              "render_frames", "image_size", "target", "train_episodes",
                                              "eval_episodes", "episode_steps", "quick")}
    result: dict[str, Any] = {}
    if out.exists() and not args.fresh:
        result = json.loads(out.read_text())
        if result.get("settings") != settings:
            raise ConfigError(f"{out} holds results made with other settings ({result.get('settings')}); rerun with "
                              f"the same ones, pass --fresh to discard them, or --out another file")
    t_start = time.time()
    command = command_line()
    result.setdefault("command", command)  # the first invocation; every one (with its runs) is in "commands"
    result.setdefault("commands", []).append({"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "seeds": args.seeds, "inits": inits})
    result.update({
        "benchmark": "contextwm",
        "settings": settings,
        "machine": machine(device, cuda_device=torch.cuda.get_device_name(0) if device.startswith("cuda") else None),
        "versions": versions(),
        "design": {
            "pretraining": "action-free video of cheetah/walker/hopper/finger/tabletop-push/tabletop-hand-push, "
                           "texture seeds 0:1000; plain (contextual=False) and ContextWM, cpu-small, same steps/seed, "
                           "once (shared by all fine-tuning seeds)",
            "target": "cartpole-swingup (held out of pretraining), texture seeds 5000:6000 (held out)",
            "finetuning": "ContextWM agent's world-model update only (ContextWM._train_world_model): concat_embed, "
                          "kl_free 1, batch 16 x 16, lr 3e-4, intr_beta 0, no aux reward head, no actor-critic; "
                          "scratch = plain architecture from random weights (DreamerV2 baseline), scratch-ctx = "
                          "contextual architecture from random weights",
            "metrics": "held-out episodes: open-loop MSE per pixel-channel in [0,1] over 10 imagined frames after 5 "
                       "observed; reward MSE of the reward head on posterior features; ridge state probe R^2 "
                       "(qpos, qvel; mean over dims; fitted on train episodes, scored on held-out; alpha by "
                       "episode-grouped CV)",
            "std": "sample std (ddof=1) over seeds; pretraining variance is not included (one pretraining run)"},
    })
    runs: dict[str, dict] = result.setdefault("runs", {})

    def save() -> None:
        result["wall_seconds_this_invocation"] = round(time.time() - t_start, 1)
        result["machine"]["loadavg_at_save"] = loadavg()
        write_result(out, result)

    print(f"work folder {work}; results -> {out}", flush=True)

    def load_videos() -> np.ndarray:
        videos, result["videos"] = pretraining_videos(args, work)
        print(f"pretraining videos: {result['videos']['clips']} clips x {result['videos']['frames_per_clip']} frames "
              f"({result['videos']['clips_per_domain']})", flush=True)
        return videos

    result["pretrain"] = pretrain_models(args, work, load_videos, device)
    save()
    if args.pretrain_only:
        print(f"phase A done: {', '.join(v['checkpoint'] for v in result['pretrain'].values())}; wrote {out}")
        return 0
    if not args.agent_only:
        train_ds, tr, ev, result["target"] = target_data(args)
        windows = open_loop_windows(ev)
        train_windows = open_loop_windows(dataclasses.replace(tr, obs=tr.obs[:len(ev.obs)],
                                                              led_actions=tr.led_actions[:len(ev.obs)]))
        pix = pixel_probe(tr, ev)
        result["baselines"] = {
            "open_loop_mse_copy_last_frame": copy_last_baseline(windows[0]),
            "train_open_loop_mse_copy_last_frame": copy_last_baseline(train_windows[0]),
            "open_loop_windows": int(len(windows[0])), "probe_raw_pixels": pix, "probe_raw_pixels_r2": pix["r2"],
            "reward_mse_train_mean": float(((ev.led_rewards[:, 1:] - tr.led_rewards[:, 1:].mean()) ** 2).mean()),
            "train_reward_var": float(tr.led_rewards[:, 1:].var())}
        print(f"target: {len(train_ds)} train rows, {len(windows[0])} held-out windows; copy-last-frame open-loop "
              f"MSE {result['baselines']['open_loop_mse_copy_last_frame']:.5f}, pixel probe R2 "
              f"{result['baselines']['probe_raw_pixels']['r2']:.3f}", flush=True)

        for seed in args.seeds:
            for init in inits:
                key = f"{init}/seed{seed}"
                if key in runs:
                    print(f"phase B {key}: done already, skipped", flush=True)
                    continue
                print(f"phase B {key}: {args.updates} updates ...", flush=True)
                runs[key] = finetune_run(init, seed, args, result["pretrain"], train_ds, tr, ev, windows,
                                         train_windows, device)
                result["summary"], result["effects"] = summarize(runs, list(INITS))
                save()
                plot_curves(runs, list(INITS), plot_path, plot_title, result["baselines"])
        if runs:
            result["summary"], result["effects"] = summarize(runs, list(INITS))
            result["plot"] = os.path.relpath(plot_curves(runs, list(INITS), plot_path, plot_title,
                                                         result["baselines"]), ROOT)
        save()

    if args.agent_return:
        ar = result.setdefault("agent_return", {})
        ar_settings = {"recipe": RECIPE, "online_steps": args.agent_steps, "quick": args.quick,
                       "eval_interval": args.agent_eval_interval or args.agent_steps,
                       "eval_episodes": args.agent_eval_episodes, "video_steps": args.agent_video_steps}
        if ar.get("settings", ar_settings) != ar_settings and agent_runs(ar):
            raise ConfigError(f"{out}: part two ran with {ar['settings']}, not {ar_settings}; use another --out")
        ar["settings"] = ar_settings
        ar["device"] = device
        first_chunk = 0.0  # the first chunk of the run before, as the estimate for the next run's first chunk
        for seed in args.agent_seeds:
            for init in agent_inits:
                key = f"{init}/seed{seed}/steps{args.agent_steps}"
                if run_finished(ar.get(key), args.agent_steps):
                    print(f"agent return {key}: done already, skipped", flush=True)
                    continue
                clock = ChunkDeadline(deadline, first_guess=first_chunk)
                if not clock.fits() or (deadline is not None and clock.left() <= 0):
                    print(f"agent return {key}: not started, the deadline is too near", flush=True)
                    if not agent_runs({key: ar.get(key)}):
                        ar[key] = {"init": init, "seed": seed, "status": "not started", "curve": [],
                                   "online_steps_budget": args.agent_steps, "online_steps_reached": 0,
                                   "online_return": None}
                    continue
                print(f"agent return {key} ...", flush=True)
                previous = ar.get(key)
                if previous is None:  # a process killed before the first evaluation still shows the run began
                    ar[key] = {"init": init, "seed": seed, "status": "running", "curve": [],
                               "online_steps_budget": args.agent_steps, "online_steps_reached": 0,
                               "online_return": None, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                   time.gmtime())}
                    save()

                def on_point(record: dict[str, Any], key: str = key, previous: Any = previous) -> None:
                    # a partial record replaces an older one of the same run only once it got further
                    if previous is None or run_progress(record) > run_progress(previous):
                        ar[key] = dict(record)
                    ar["summary"] = summarize_agent_return(ar)
                    save()

                record = agent_return_run(init, seed, args, result["pretrain"], work, deadline=deadline,
                                          first_guess=first_chunk, on_point=on_point)
                if record.get("chunk_seconds"):
                    first_chunk = max(first_chunk, record["chunk_seconds"][0])
                if previous is None or run_progress(record) >= run_progress(previous):
                    ar[key] = record
                print(f"  {key}: {record['status']} at step {record['online_steps_reached']}, return "
                      f"{record['online_return']} ({record['wall_seconds']:.0f} s)", flush=True)
                ar["summary"] = summarize_agent_return(ar)
                save()
        if agent_runs(ar):
            ar["summary"] = summarize_agent_return(ar)
            ar["plot"] = os.path.relpath(plot_agent_return(ar, out.with_name(out.stem + "_agent_return.png"),
                                                           f"ContextWM agent on {RECIPE}: eval return"), ROOT)
            save()
            print(agent_return_table(ar["summary"]))

    # ------------------------------------------------------------------ table
    print(f"\n{'init':12s} {'open-loop MSE':>22s} {'probe R2 (feat)':>18s} {'probe R2 (af)':>18s} "
          f"{'reward MSE':>22s}   (final, mean ± std over seeds)")
    for init, row in result.get("summary", {}).items():
        cells = []
        for k, fmt in (("open_loop_mse", ".5f"), ("probe_r2_feat", ".3f"), ("probe_r2_af_feat", ".3f"),
                       ("reward_mse", ".5f")):
            c = row[f"final/{k}"]
            cells.append(f"{c['mean']:{fmt}} ± {c['std']:{fmt}}")
        print(f"{init:12s} {cells[0]:>22s} {cells[1]:>18s} {cells[2]:>18s} {cells[3]:>22s}")
    for name, eff in result.get("effects", {}).items():
        ol, pr = eff["final/open_loop_mse"], eff["final/probe_r2_feat"]
        rw = eff["final/reward_mse"]
        print(f"{name:26s} open-loop MSE {_pct(ol)} {_pct_ci(ol)}   probe R2 (feat) {pr['difference']:+.3f}   "
              f"reward MSE {_pct(rw)}   (final; negative % = lower error)")
    for kind, pre in result["pretrain"].items():
        print(f"pretraining {kind}: {pre['steps']} updates, {pre['wall_seconds']:.0f} s wall, "
              f"{pre['cpu_seconds']:.0f} s CPU ({pre['cpu_seconds_per_update']:.3f} s CPU/update)")
    print(f"wrote {out} and {plot_path} ({time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
