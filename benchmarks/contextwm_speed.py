"""ContextWM pretraining speed: world-model updates/s and frames/s per size preset, and the r2dreamer comparison.

    nice -n 10 .venv/bin/python benchmarks/contextwm_speed.py                 # CPU, ~3-5 min on 2 cores
    .venv/bin/python benchmarks/contextwm_speed.py --device cuda --threads 1 --presets paper,cpu-small \
        --out benchmarks/results/contextwm_speed_cuda.json                    # a GPU machine

What is timed: `rlpt.pretrain.contextwm.train_step` (forward, loss, backward, grad clipping, AdamW step) on a fixed
uint8 batch already in memory, after warm-up updates; the median over the timed updates is reported. Data loading
is measured separately (clips/s from the committed video sample through `rlpt.data.video.open_videos`).

1. Presets: tiny, cpu-small (contextual and plain; batch 16 x 12 at 32x32, and the same at 16 x 16 frames),
   paper (batch 16 x 25, 64x64; only a couple of updates on a CPU). Target: cpu-small >= 5 updates/s on the
   project's 2-core CPU with 1-2 threads.
2. r2dreamer shapes (../shared/research/anchor-dreamer-cpu.md): batch 16 x 64 frames of 64x64, RSSM deter 2048,
   hidden 256, stoch 32 x 16 classes, CNN depth 16; NM512/r2dreamer's smallest preset (`size12M`, with pixel
   decoder) took 15.39 s per update there (fp32, 2 threads) for world model + actor-critic in one backward pass,
   of which the world model is about 60-70 % (~9-11 s). Target: rlpt's world-model update <= 15.4 s.
Every measurement records the load average before and after it: the CPU is shared, so absolute times drift.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, loadavg, machine, versions, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.pretrain.contextwm import VideoWorldModel, WorldModelConfig, make_optimizer, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
R2DREAMER_S_PER_UPDATE = 15.39  # anchor-dreamer-cpu.md: `dreamer` size12M, 16 x 64, 64x64, fp32, 2 threads
R2DREAMER_WM_SHARE = (0.6, 0.7)  # the note's rough world-model share of that update

R2D_SHAPE = dict(image_size=64, depth=16, res_depth=3, res_layers=2, deter=2048, hidden=256, stoch=32, discrete=16,
                 batch_size=16, seq_len=64)


def configs(presets: list[str]) -> dict[str, WorldModelConfig]:
    out: dict[str, WorldModelConfig] = {}
    for name in presets:
        if name == "cpu-small-16x16":
            out[name] = WorldModelConfig.preset("cpu-small", seq_len=16)
        elif name.startswith("r2dreamer-shape"):
            out[name] = WorldModelConfig.preset("paper", name="r2dreamer-shape", contextual=not name.endswith("-plain"),
                                                **R2D_SHAPE)
        elif name.endswith("-plain"):
            out[name] = WorldModelConfig.preset(name[:-6], contextual=False)
        else:
            out[name] = WorldModelConfig.preset(name)
    return out


def time_updates(config: WorldModelConfig, device: str, updates: int, warmup: int, max_seconds: float,
                 seed: int = 0) -> dict:
    """Median seconds per `train_step` over up to `updates` timed updates (stops early after `max_seconds`)."""
    torch.manual_seed(seed)
    model = VideoWorldModel(config).to(device)
    opt = make_optimizer(model)
    rng = np.random.default_rng(seed)
    s = config.image_size
    batch = torch.as_tensor(rng.integers(0, 256, (config.batch_size, config.seq_len, s, s, 3), dtype=np.uint8))
    batch = batch.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    load0 = os.getloadavg()
    t_warm = time.perf_counter()
    for i in range(warmup):
        train_step(model, opt, batch, i)
    sync()
    warm_s = time.perf_counter() - t_warm
    times: list[float] = []
    cpu: list[float] = []
    t_all = time.perf_counter()
    for i in range(updates):
        t, c = time.perf_counter(), time.process_time()
        train_step(model, opt, batch, warmup + i)
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if time.perf_counter() - t_all > max_seconds:
            break
    med = statistics.median(times)
    frames = config.batch_size * config.seq_len
    return {"preset": config.name, "contextual": config.contextual, "image_size": s,
            "batch": [config.batch_size, config.seq_len], "params": sum(p.numel() for p in model.parameters()),
            "warmup_updates": warmup, "warmup_seconds": round(warm_s, 3), "timed_updates": len(times),
            "seconds_per_update": round(med, 4), "seconds_min": round(min(times), 4),
            "updates_per_s": round(1.0 / med, 3), "frames_per_s": round(frames / med, 1),
            "all_seconds": [round(t, 4) for t in times],
            "cpu_seconds_per_update": round(statistics.median(cpu), 4),  # process CPU time, all threads
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "config": config.to_dict()}


def matmul_gmacs() -> float:
    """Machine state at measurement time: one-thread fp32 1024x1024 matmul throughput (GMAC/s, wall clock)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.set_num_threads(threads)
    return round(10 * 1024**3 / (time.perf_counter() - t) / 1e9, 1)


def time_loader(config: WorldModelConfig, batches: int = 5) -> dict | None:
    """Clips/s and frames/s sampled from the committed video sample at the preset's shape."""
    sample = ROOT / "video_data" / "sample"
    if not (sample / "manifest.jsonl").exists():
        return None
    from rlpt.data.video import open_videos

    clips = open_videos(sample, clip_len=config.seq_len, image_size=config.image_size)
    rng = np.random.default_rng(0)
    clips.sample(config.batch_size, rng)
    t = time.perf_counter()
    for _ in range(batches):
        clips.sample(config.batch_size, rng)
    dt = (time.perf_counter() - t) / batches
    return {"preset": config.name, "videos": len(clips), "seconds_per_batch": round(dt, 4),
            "frames_per_s": round(config.batch_size * config.seq_len / dt, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,cpu-small,cpu-small-plain,cpu-small-16x16,r2dreamer-shape-plain,"
                                        "r2dreamer-shape,paper")
    p.add_argument("--threads", default="1,2", help="torch thread counts for the small presets (comma-separated)")
    p.add_argument("--big-threads", type=int, default=1,
                   help="threads for paper and r2dreamer-shape (default 1: on a shared 2-core box, 2 OpenMP threads "
                        "slow down many-fold whenever another process runs; r2dreamer's figure used 2 threads, so 1 "
                        "thread is the conservative side of the comparison)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--updates", type=int, default=20, help="timed updates for small presets")
    p.add_argument("--big-updates", type=int, default=2, help="timed updates for paper and r2dreamer-shape")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop timing a measurement after this long")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contextwm_speed.json"))
    args = p.parse_args()

    t_start, load_start = time.time(), loadavg()
    big = {"paper", "r2dreamer-shape", "r2dreamer-shape-plain"}
    rows = []
    for name, cfg in configs(args.presets.split(",")).items():
        threads = [args.big_threads] if name in big else [int(t) for t in args.threads.split(",")]
        if name in ("tiny", "cpu-small-16x16"):
            threads = threads[:1]
        for th in threads:
            torch.set_num_threads(th)
            n, warm = (args.big_updates, 1) if name in big else (args.updates, 2)
            gmacs = matmul_gmacs()
            row = time_updates(cfg, args.device, n, warm, args.max_seconds)
            row.update(name=name, threads=th, device=args.device, matmul_gmacs_1thread_before=gmacs)
            rows.append(row)
            print(f"{name:24s} threads {th}  {row['seconds_per_update']:8.3f} s/update  {row['updates_per_s']:7.2f} "
                  f"updates/s  {row['frames_per_s']:8.1f} frames/s  (load {row['loadavg_before'][0]:.1f}->"
                  f"{row['loadavg_after'][0]:.1f}, matmul {gmacs:.0f} GMAC/s)", flush=True)
    loader = time_loader(WorldModelConfig.preset("cpu-small"))
    if loader:
        print(f"loader (video_data/sample, cpu-small shape): {loader['frames_per_s']:.0f} frames/s")

    comparison = {}  # r2dreamer's reference time and the 5 updates/s target are CPU numbers: compare on CPU only
    for row in rows:
        if row["name"].startswith("r2dreamer-shape") and args.device == "cpu":
            s = row["seconds_per_update"]
            lo, hi = (R2DREAMER_S_PER_UPDATE * f for f in R2DREAMER_WM_SHARE)
            comparison[row["name"]] = {
                "rlpt_seconds_per_update": s, "r2dreamer_seconds_per_update": R2DREAMER_S_PER_UPDATE,
                "speedup_vs_r2dreamer_update": round(R2DREAMER_S_PER_UPDATE / s, 2),
                "r2dreamer_world_model_share_seconds": [round(lo, 2), round(hi, 2)],
                "speedup_vs_r2dreamer_world_model_share": [round(lo / s, 2), round(hi / s, 2)],
                "meets_target_le_15.4s": s <= R2DREAMER_S_PER_UPDATE,
                "rlpt_threads": row["threads"], "r2dreamer_threads": 2,
                "note": "r2dreamer's 15.39 s (measured in another session on this machine) includes its actor-critic "
                        "(one joint backward pass); its world-model share is ~60-70%. Its RSSM is a block GRU with "
                        "RMSNorm and its CNN uses kernel 5 with 32/48/64/64 channels; rlpt's is ContextWM's ResNet "
                        "(16/32/64 channels, 2 residual layers per stage).",
            }
    small = [r for r in rows if r["name"] == "cpu-small" and args.device == "cpu"]
    result = {
        "benchmark": "contextwm_speed",
        "command": command_line(),
        "machine": machine(args.device, loadavg_at_start=load_start, loadavg_at_end=loadavg(),
                           cuda_device=torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None),
        "versions": versions(),
        "what": "median seconds per world-model update (train_step: forward, loss, backward, clip, AdamW) on a fixed "
                "uint8 batch in memory, fp32; data loading measured separately. cpu_seconds_per_update is the "
                "process CPU time (all threads); matmul_gmacs_1thread_before shows how loaded the machine was "
                "(higher = quieter)",
        "results": rows,
        "loader": loader,
        "r2dreamer_comparison": comparison,
        "cpu_small_target_5_updates_per_s": {str(r["threads"]): r["updates_per_s"] >= 5.0 for r in small},
        "wall_seconds": round(time.time() - t_start, 1),
    }
    print(f"wrote {write_result(args.out, result)} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
