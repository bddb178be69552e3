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
  of outputs that are 0 on every frame): a collapsed encoder has both near 0 and 1;
- `other_clip_gap`: mean V(s_t, own last frame) - V(s_t, another clip's last frame); > 0 when the value tells
  its own clip's goal from another clip's (with randomized looks per clip, appearance alone can do that), and
  `feature_std_within_clip` (the encoder output's std over the frames of one clip, mean over features and
  clips) beside `feature_std`: a value that ordered frames needs features that change along a clip;
- references that need no training, for what the clips allow: `pixel_order`, the same rank correlation for
  -|frame_t - last frame| (mean absolute pixel difference at the probe's resolution), `state_order` for
  -||qpos_t - qpos_last|| when the manifest has per-frame states (`rlpt video render` writes them), and
  `static_share`, the share of consecutive frame pairs whose mean pixel difference is below 0.5/255 (nothing
  visible happens).
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

MANIFEST_ROWS: dict[str, dict] = {}  # video path -> its manifest row (states file absolute), filled by video_groups


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
                if row.get("states"):
                    states = Path(row["states"])
                    row["states"] = str(states if states.is_absolute() else path.parent / states)
                MANIFEST_ROWS[str(video)] = row
    elif path.is_dir() and (subdirs := sorted(d for d in path.iterdir() if d.is_dir())):
        groups = {d.name: [str(d)] for d in subdirs}
    else:
        groups = {path.stem: [str(path)]}
    return groups


def references(source, batch: np.ndarray, index: list[tuple[int, int]], config) -> dict:
    """Orderings that need no training (see the module docstring): `pixel_order`, `state_order` (NaN without
    states) and `static_share`."""
    x = batch.astype(np.float32)  # (B, T, H, W, C)
    pixel_dist = np.abs(x - x[:, -1:]).mean(axis=(2, 3, 4))  # (B, T)
    steps = np.abs(np.diff(x, axis=1)).mean(axis=(2, 3, 4))  # (B, T-1)
    state_dist = []
    for i, start in index:
        path = str(source.entry(i)["path"])
        row = MANIFEST_ROWS.get(path, {})
        states_file = row.get("states") or (path.rsplit(".", 1)[0] + ".states.npy")
        if not Path(states_file).exists():
            break
        states = np.load(states_file, mmap_mode="r")
        n_qpos = row.get("state_layout", {}).get("qpos", states.shape[1])
        qpos = np.asarray(states[start:start + config.clip_len * config.stride:config.stride, :n_qpos], np.float32)
        state_dist.append(np.linalg.norm(qpos - qpos[-1:], axis=1))
    return {"pixel_order": rank_order(-pixel_dist),
            "state_order": rank_order(-np.stack(state_dist)) if len(state_dist) == len(index) else float("nan"),
            "static_share": float((steps < 0.5).mean())}


def probe(checkpoint: str, groups: dict[str, list[str]], clips: int, seed: int) -> dict:
    value, config = load_icvf(checkpoint, device="cpu")
    meta = read_meta(checkpoint)
    out = {"checkpoint": checkpoint, "step": meta.get("step"), "config": meta.get("config"), "groups": {}}
    for name, paths in sorted(groups.items()):
        source = open_videos(paths, clip_len=config.clip_len, stride=config.stride, image_size=config.image_size)
        frames, index = source.sample(clips, np.random.default_rng(seed), return_index=True)
        batch = check_clips(frames, config)
        v = goal_values(value, batch)  # (B, T)
        with torch.no_grad():
            feats = value.encoder(torch.as_tensor(batch.reshape(-1, *batch.shape[2:])))  # (B*T, F)
        b, t_len = batch.shape[:2]
        f = feats.view(b, t_len, -1)  # (B, T, F)
        with torch.no_grad():
            other = torch.roll(f[:, -1], 1, 0)[:, None].expand_as(f).reshape(b * t_len, -1)  # another clip's goal
            v_other = value.values(f.reshape(b * t_len, -1), other, other).mean(0).view(b, t_len).numpy()
        by_t = v.mean(0)
        out["groups"][name] = {
            "videos": len(paths), "clips": int(v.shape[0]), "value_order": rank_order(v),
            "value_by_t": [round(float(x), 4) for x in by_t], "value_spread": float(by_t.max() - by_t.min()),
            "goal_gap": float((v[:, -1] - v[:, :-1].mean(1)).mean()),
            "pixel_change": float(np.abs(batch[:, -1].astype(np.float32) - batch[:, 0]).mean() / 255.0),
            "feature_std": float(feats.std(0).mean()),
            "dead_features": float((feats.abs().amax(0) <= 1e-6).float().mean()),
            "other_clip_gap": float((v - v_other).mean()), "feature_std_within_clip": float(f.std(1).mean()),
            **references(source, batch, index, config),
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
          f"{'pixels':>7} {'px_ord':>6} {'st_ord':>6} {'static':>6}")
    for r in results:
        for name, g in r["groups"].items():
            print(f"{r['checkpoint'][-40:]:<40} {r['step']!s:>6} {name:<20} {g['value_order']:>+11.3f} "
                  f"{g['value_spread']:>8.4f} {g['goal_gap']:>+8.4f} {g['pixel_change']:>7.4f} "
                  f"{g['pixel_order']:>+6.2f} {g['state_order']:>+6.2f} {g['static_share']:>6.2f}")
    out = write_result(args.out, {
        "benchmark": "icvf_probe", "command": command_line(), "machine": machine(), "versions": versions(),
        "videos": args.videos, "clips_per_group": args.clips, "seed": args.seed, "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
