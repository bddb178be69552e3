"""Video loader speed: decoded frames/s of `VideoClips.sample` vs plain OpenCV reading the same clips.

Usage: python benchmarks/video_loader.py [--clips 192] [--repeats 3] [--out PATH]
(default PATH: benchmarks/results/video_loader.json)

Cells:
  sample-64:  the committed render sample (video_data/sample, 64x64 mp4), clip_len 25, stride 1, 64x64 out.
  synth-256:  synthetic 256x256 mp4 files (12 x 240 frames, written to a temp folder), clip_len 16,
              stride 2, resized to 64x64 (area interpolation).
For each cell the clip plan (video, start) is drawn once; the loader (`clips.sample`, same generator seed, so
the same plan) and the baseline (per clip: cv2.VideoCapture, set CAP_PROP_POS_FRAMES, read every frame of the
span, keep every stride-th, cv2.resize INTER_AREA, BGR->RGB) decode the same clips into the same array, checked
equal. Runs alternate loader / baseline `--repeats` times; the table shows medians of frames per second of
process CPU time (steadier on a shared machine) and of wall-clock time. Also times advancing a
capture by a gap of k frames with grab() vs a seek (the reason for GRAB_MAX_GAP in rlpt/data/video.py).
Shared CPU: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when loaded by file path
from harness import command_line, loadavg, machine, set_threads, versions, write_result

set_threads(1)

from rlpt.data.video import GRAB_MAX_GAP, open_videos  # noqa: E402
from rlpt.media import write_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def synthetic_videos(folder: Path, n: int = 12, frames: int = 240, size: int = 256) -> Path:
    y, x = np.mgrid[0:size, 0:size]
    for v in range(n):
        clip = np.stack([np.stack([(x * 3 + i * 4 + v * 20) % 256, (y * 5 + i) % 256, (x + y + i * 7) % 256], -1)
                         for i in range(frames)]).astype(np.uint8)
        write_video(folder / f"{v:03d}.mp4", clip, fps=30)
    return folder


def baseline(paths: list[str], plan: list[tuple[int, int]], clip_len: int, stride: int, size: int) -> np.ndarray:
    """Plain OpenCV: open, seek, read the span, keep every stride-th frame, resize, to RGB."""
    out = np.empty((len(plan), clip_len, size, size, 3), np.uint8)
    for b, (i, start) in enumerate(plan):
        cap = cv2.VideoCapture(paths[i])
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        for k in range((clip_len - 1) * stride + 1):
            ok, frame = cap.read()
            if not ok:
                raise RuntimeError(f"baseline: cannot read frame {start + k} of {paths[i]}")
            if k % stride == 0:
                if frame.shape[:2] != (size, size):
                    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
                out[b, k // stride] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        cap.release()
    return out


def run_cell(name: str, source: Path, clip_len: int, stride: int, n_clips: int, repeats: int, seed: int = 0) -> dict:
    clips = open_videos(source, clip_len=clip_len, stride=stride, image_size=64)
    paths = [clips.entry(i)["path"] for i in range(clips.num_indexed)]
    plan = clips.sample_index(n_clips, np.random.default_rng(seed))
    clips.close()
    frames = n_clips * clip_len
    wall: dict[str, list[float]] = {"loader": [], "opencv": []}
    cpu: dict[str, list[float]] = {"loader": [], "opencv": []}

    def timed(key, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall[key].append(frames / (time.perf_counter() - t0))
        cpu[key].append(frames / (time.process_time() - c0))
        return result

    for _ in range(repeats):
        ours, index = timed("loader", lambda: clips.sample(n_clips, np.random.default_rng(seed), return_index=True))
        clips.close()  # no captures carried over between repeats
        ref = timed("opencv", lambda: baseline(paths, plan, clip_len, stride, 64))
        assert index == plan, "the loader drew other clips than the plan"
        assert np.array_equal(ours, ref), "the loader's frames differ from plain OpenCV's"

    def med(xs):
        return round(float(np.median(xs)))

    row = {"cell": name, "source": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else "synthetic",
           "videos": len(clips), "clips": n_clips, "clip_len": clip_len, "stride": stride, "out_size": 64,
           "frames_per_run": frames,
           "wall": {"loader_fps": [round(x) for x in wall["loader"]], "opencv_fps": [round(x) for x in wall["opencv"]],
                    "loader_fps_median": med(wall["loader"]), "opencv_fps_median": med(wall["opencv"])},
           "cpu": {"loader_fps": [round(x) for x in cpu["loader"]], "opencv_fps": [round(x) for x in cpu["opencv"]],
                   "loader_fps_median": med(cpu["loader"]), "opencv_fps_median": med(cpu["opencv"])}}
    for kind in ("wall", "cpu"):
        row[kind]["ratio_median"] = round(row[kind]["loader_fps_median"] / row[kind]["opencv_fps_median"], 3)
    return row


def gap_costs(path: Path, gaps=(1, 2, 4, 8, 16, 24, 32, 64), reps: int = 40) -> list[dict]:
    """ms to advance a capture by ``gap`` frames and read one: grab() x (gap - 1) then read, vs seek then read."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    rng = np.random.default_rng(0)
    rows = []
    for gap in gaps:
        times = {}
        for method in ("grab", "seek"):
            starts = rng.integers(0, n - gap - 1, reps)
            total = 0.0
            for s in starts:
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(s))
                cap.read()
                t0 = time.perf_counter()
                if method == "grab":
                    for _ in range(gap - 1):
                        cap.grab()
                else:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, int(s) + gap)
                cap.read()
                total += time.perf_counter() - t0
            times[method] = round(total / reps * 1e3, 3)
        rows.append({"gap": gap, "grab_ms": times["grab"], "seek_ms": times["seek"]})
    cap.release()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=192)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "video_loader.json"))
    args = p.parse_args()
    t_start = time.time()
    rows = []
    sample = ROOT / "video_data" / "sample"
    with tempfile.TemporaryDirectory() as tmp:
        synth = synthetic_videos(Path(tmp))
        if (sample / "manifest.jsonl").is_file():
            rows.append(run_cell("sample-64", sample, 25, 1, args.clips, args.repeats))
        rows.append(run_cell("synth-256", synth, 16, 2, args.clips // 2, args.repeats))
        gaps = gap_costs(synth / "000.mp4")
    print(f"{'cell':<11}{'videos':>7}{'clips':>7}{'T':>4}{'stride':>7}{'clock':>6}{'loader f/s':>12}"
          f"{'opencv f/s':>12}{'ratio':>7}")
    for r in rows:
        for kind in ("cpu", "wall"):
            k = r[kind]
            print(f"{r['cell']:<11}{r['videos']:>7}{r['clips']:>7}{r['clip_len']:>4}{r['stride']:>7}{kind:>6}"
                  f"{k['loader_fps_median']:>12}{k['opencv_fps_median']:>12}{k['ratio_median']:>7.2f}")
    print(f"\n{'gap':>4}{'grab ms':>9}{'seek ms':>9}   (256x256 mp4v; GRAB_MAX_GAP = {GRAB_MAX_GAP})")
    for g in gaps:
        print(f"{g['gap']:>4}{g['grab_ms']:>9.3f}{g['seek_ms']:>9.3f}")
    report = {
        "benchmark": "video_loader",
        "command": command_line(Path(sys.executable).name),
        "machine": machine(loadavg_at_end=loadavg()),
        "versions": versions(opencv=cv2.__version__),
        "settings": {"clips": args.clips, "repeats": args.repeats, "seed": 0, "grab_max_gap": GRAB_MAX_GAP,
                     "opencv_threads": cv2.getNumThreads()},
        "notes": "Same clips (plan drawn once, checked equal) and identical output arrays (checked equal). "
                 "Baseline: per clip open, seek, read the whole span, keep every stride-th frame, resize "
                 "INTER_AREA, BGR->RGB. Loader: VideoClips.sample (grab() forward over gaps <= "
                 "GRAB_MAX_GAP, else a seek; LRU of 4 open captures, area resize into a preallocated batch). "
                 "Medians over alternating repeats. 'cpu' rates use this process's CPU time (time.process_time, "
                 "all its threads), 'wall' rates wall-clock time; on this shared 2-core CPU with other jobs "
                 "running (see loadavg_at_end) the CPU-time ratio is the steadier one.",
        "seconds": round(time.time() - t_start, 1),
        "cells": rows,
        "gap_costs": gaps,
    }
    print(f"\nwrote {write_result(args.out, report)}")


if __name__ == "__main__":
    main()
