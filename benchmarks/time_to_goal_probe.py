"""Can ICVF's encoder see time-to-goal in these clips? The same value network, fitted by regression instead of TD.

    .venv/bin/python benchmarks/time_to_goal_probe.py --train VIDEOS/manifest.jsonl --held-out HELD/manifest.jsonl \
        --steps 3000 --out benchmarks/results/time_to_goal_probe_<name>.json

A diagnostic for `rlpt pretrain vptr` (ICVF): when ICVF's value stays flat along a clip, is the cause the TD
objective or what the encoder can resolve in the frames? This builds the same value function (`ICVFConfig.preset`,
encoder and multilinear heads) and fits V(s_t, s+ = z = last frame) = -(T-1-t) directly (mean squared error,
Adam at the preset's lr) on clips of the training videos, i.e. it is told the answer ICVF has to find by TD. Every
--eval-every steps it reports icvf_probe's `value_order` (mean rank correlation of t with the value) and
`value_spread` on fixed clips of the held-out videos. A value order near 1 means the frames carry time-to-goal
and the encoder can learn it in that many updates; near 0 means even direct supervision does not get there.
Prints one line per evaluation and writes the JSON (machine, command, every number).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, machine, set_threads, versions, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.data.video import open_videos  # noqa: E402
from rlpt.pretrain.vptr import ICVFConfig, build_icvf, check_clips, goal_values, rank_order  # noqa: E402


def run(train: str, held_out: str, steps: int, clips_per_step: int, preset: str, eval_every: int, eval_clips: int,
        seed: int, quiet: bool = False) -> dict:
    """Fit the regression for `steps` updates; returns the config and the evaluation history."""
    torch.manual_seed(seed)
    config = ICVFConfig.preset(preset)
    value = build_icvf(config)
    optimizer = torch.optim.Adam(value.parameters(), lr=config.lr, eps=config.adam_eps)
    source = open_videos([train], clip_len=config.clip_len, stride=config.stride, image_size=config.image_size)
    held = open_videos([held_out], clip_len=config.clip_len, stride=config.stride, image_size=config.image_size)
    fixed = check_clips(held.sample(eval_clips, np.random.default_rng(seed + 5)), config)
    rng, t_len, history, t0 = np.random.default_rng(seed), config.clip_len, [], time.time()
    target = -torch.arange(t_len - 1, -1, -1, dtype=torch.float32)  # (T,): -(T-1-t)
    losses: list[float] = []
    for step in range(1, steps + 1):
        x = torch.as_tensor(check_clips(source.sample(clips_per_step, rng), config))  # (B, T, H, W, 3)
        b = x.shape[0]
        f = value.encoder(x.reshape(b * t_len, *x.shape[2:])).view(b, t_len, -1)  # (B, T, F)
        goal = f[:, -1:].expand(b, t_len, f.shape[-1]).reshape(b * t_len, -1)
        v = value.values(f.reshape(b * t_len, -1), goal, goal).mean(0).view(b, t_len)  # ensemble mean (B, T)
        loss = (v - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            values = goal_values(value, fixed)  # (clips, T)
            row = {"step": step, "loss": float(np.mean(losses)), "value_order": rank_order(values),
                   "value_spread": float(np.ptp(values.mean(0))), "seconds": round(time.time() - t0, 1)}
            losses = []
            history.append(row)
            if not quiet:
                print(f"step {step:>6}  loss {row['loss']:8.3f}  held-out value_order {row['value_order']:+.3f}  "
                      f"spread {row['value_spread']:.3f}  ({row['seconds']:.0f}s)", flush=True)
    return {"config": config.to_dict(), "target_variance": float(target.var(unbiased=False)), "history": history}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="training videos (any open_videos source)")
    p.add_argument("--held-out", required=True, help="held-out videos for the value order")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--clips-per-step", type=int, default=8, help="clips per update (all their frames are used)")
    p.add_argument("--preset", default="cpu-small", choices=ICVFConfig.PRESETS)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-clips", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/time_to_goal_probe.json")
    args = p.parse_args()
    if args.steps < 1 or args.clips_per_step < 1 or args.eval_every < 1 or args.eval_clips < 2:
        p.error("--steps, --clips-per-step and --eval-every must be >= 1 and --eval-clips >= 2")
    set_threads(args.threads)
    result = run(args.train, args.held_out, args.steps, args.clips_per_step, args.preset, args.eval_every,
                 args.eval_clips, args.seed)
    out = write_result(args.out, {
        "benchmark": "time_to_goal_probe", "command": command_line(), "machine": machine(), "versions": versions(),
        "train": args.train, "held_out": args.held_out, "steps": args.steps, "clips_per_step": args.clips_per_step,
        "seed": args.seed, **result})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
