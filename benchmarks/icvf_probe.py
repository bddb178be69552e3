"""What an ICVF checkpoint learned, per video source: does V(s_t, s+ = z = last frame) rise along a clip?

    .venv/bin/python benchmarks/icvf_probe.py runs/icvf [runs/icvf2 ...] --videos PATH/manifest.jsonl \
        --out benchmarks/results/icvf_probe.json

For each checkpoint (a `rlpt pretrain vptr` run folder or one of its checkpoints) and each group of videos (the
manifest's `domain` field; otherwise the parent folder of each video), samples --clips clips of the checkpoint's
clip length (a fixed seed, so every checkpoint sees the same clips) and reports:
- `value_order`: mean rank correlation between t and V(s_t, last frame, last frame); 1 = the value orders frames
  by their time to the goal frame, 0 = no order (the method's first sanity check, as in training's
  `eval/value_order`, which pools all sources);
- `value_by_t`: the mean value at each frame position, and `value_spread`: its range over the clip;
- `goal_gap`: V(g, g, g) - mean over t < T-1 of V(s_t, g, g); it is > 0 once the value tells the goal frame
  itself from the frames before it;
- `pixel_change`: mean |last frame - first frame| / 255 of the clips, how much there is to see;
- `feature_std` (the encoder output's std over these frames, mean over features) and `dead_features` (the share
  of outputs that are 0 on every frame): a collapsed encoder has both near 0 and 1.
Prints a table and writes the JSON (machine, command, every number).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, machine, set_threads, versions, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpt.data.video import open_videos  # noqa: E402
from rlpt.pretrain.vptr import check_clips, goal_values, load_icvf, rank_order, read_meta  # noqa: E402


def video_groups(source: str) -> dict[str, list[str]]:
    """Video sources grouped by the manifest's `domain` (a .jsonl manifest), else by subfolder (a folder of
    subfolders), else one group (any other `open_videos` source)."""
    path = Path(source)
    if not path.exists():
        raise SystemExit(f"--videos: {source} does not exist")
    groups: dict[str, list[str]] = {}
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                video = Path(row["path"])
                video = video if video.is_absolute() else path.parent / video
                groups.setdefault(str(row.get("domain") or video.parent.name), []).append(str(video))
    elif path.is_dir() and (subdirs := sorted(d for d in path.iterdir() if d.is_dir())):
        groups = {d.name: [str(d)] for d in subdirs}
    else:
        groups = {path.stem: [str(path)]}
    return groups


def probe(checkpoint: str, groups: dict[str, list[str]], clips: int, seed: int) -> dict:
    value, config = load_icvf(checkpoint, device="cpu")
    meta = read_meta(checkpoint)
    out = {"checkpoint": checkpoint, "step": meta.get("step"), "config": meta.get("config"), "groups": {}}
    for name, paths in sorted(groups.items()):
        source = open_videos(paths, clip_len=config.clip_len, stride=config.stride, image_size=config.image_size)
        batch = check_clips(source.sample(clips, np.random.default_rng(seed)), config)
        v = goal_values(value, batch)  # (B, T)
        with torch.no_grad():
            feats = value.encoder(torch.as_tensor(batch.reshape(-1, *batch.shape[2:])))  # (B*T, F)
        by_t = v.mean(0)
        out["groups"][name] = {
            "videos": len(paths), "clips": int(v.shape[0]), "value_order": rank_order(v),
            "value_by_t": [round(float(x), 4) for x in by_t], "value_spread": float(by_t.max() - by_t.min()),
            "goal_gap": float((v[:, -1] - v[:, :-1].mean(1)).mean()),
            "pixel_change": float(np.abs(batch[:, -1].astype(np.float32) - batch[:, 0]).mean() / 255.0),
            "feature_std": float(feats.std(0).mean()),
            "dead_features": float((feats.abs().amax(0) <= 1e-6).float().mean()),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="rlpt pretrain vptr run folders or checkpoints")
    p.add_argument("--videos", default="video_data/sample/manifest.jsonl",
                   help="a manifest.jsonl (grouped by domain) or any other open_videos source (grouped by folder)")
    p.add_argument("--clips", type=int, default=48, help="clips per group")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/icvf_probe.json")
    args = p.parse_args()
    if args.clips < 2:
        p.error("--clips must be >= 2")
    set_threads(args.threads)
    groups = video_groups(args.videos)
    results = [probe(c, groups, args.clips, args.seed) for c in args.checkpoints]
    print(f"{'checkpoint':<40} {'step':>6} {'group':<20} {'value_order':>11} {'spread':>8} {'goal_gap':>8} "
          f"{'pixels':>7}")
    for r in results:
        for name, g in r["groups"].items():
            print(f"{r['checkpoint'][-40:]:<40} {r['step']!s:>6} {name:<20} {g['value_order']:>+11.3f} "
                  f"{g['value_spread']:>8.4f} {g['goal_gap']:>+8.4f} {g['pixel_change']:>7.4f}")
    out = write_result(args.out, {
        "benchmark": "icvf_probe", "command": command_line(), "machine": machine(), "versions": versions(),
        "videos": args.videos, "clips_per_group": args.clips, "seed": args.seed, "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
