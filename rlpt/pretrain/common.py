"""Run-folder and resumable-checkpoint machinery shared by the pretraining loops (`contextwm`, `vptr`).

A pretraining run folder (`rlpt.runs.RunDir`) holds `checkpoints/step_*/`, each a complete artifact (weights +
the loop's marker JSON, e.g. `contextwm.json` or `vptr.json`) plus `training_state.pt` (optimizer state, torch,
CUDA and numpy RNG states, step), so a killed run resumes where its latest checkpoint left it; at the end the
loop writes the final artifact at the run folder's root. Finding and reading a marker JSON is
`rlpt.utils.read_checkpoint_meta` (model loaders in `rlpt.nets` use it too).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlpt.errors import CheckpointError, ConfigError, RunError
from rlpt.runs import RunDir
from rlpt.utils import replace_dir, to_jsonable, verify_manifest, write_manifest

TRAINING_STATE = "training_state.pt"


def open_run(out_dir: str | os.PathLike, marker: str, kind: str, resume: bool) -> tuple[RunDir, Path | None]:
    """The pretraining run folder `out_dir` and its latest step checkpoint (None when it has none).

    Raises RunError when `out_dir` is a file, or when it already holds a `kind` run (a step checkpoint or the
    final `marker` file) and `resume` is False."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; expected a folder")
    run = RunDir(out)
    latest = run.latest_checkpoint()
    if not resume and (latest is not None or (out / marker).exists()):
        raise RunError(f"{out} already holds a {kind} run; pass resume=True (--resume) to continue it, or choose "
                       f"another output folder")
    return run, latest


def save_training_checkpoint(folder: Path, write_files: Callable[[Path], None], optimizer: torch.optim.Optimizer,
                             step: int, rng: np.random.Generator) -> None:
    """Write a resumable step checkpoint at `folder` atomically: `write_files(tmp)` (the artifact: weights and
    marker JSON) and `training_state.pt` go into a temp folder beside it, which then replaces `folder`."""
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write_files(tmp)
        state: dict[str, Any] = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                                 "numpy_rng": json.dumps(to_jsonable(rng.bit_generator.state)), "step": step}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / TRAINING_STATE)
        write_manifest(tmp)
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_resume_config(saved: Any, requested: Any, folder: Path) -> None:
    """Raise ConfigError listing the differing keys when the dataclass config `saved` in checkpoint `folder` is not
    the `requested` one (a run resumes only with its own config)."""
    if saved != requested:
        diff = {k: (v, getattr(requested, k)) for k, v in dataclasses.asdict(saved).items()
                if getattr(requested, k) != v}
        raise ConfigError(f"cannot resume {folder}: its config differs from the requested one "
                          f"(key: (saved, requested)) {diff}; resume with the same preset/options or pick another out")


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                        device: torch.device) -> int:
    """Restore the optimizer, the torch (and CUDA, when saved and present) and numpy RNGs from `folder`'s
    `training_state.pt` (loaded with `weights_only=True`); returns the step it was saved at."""
    if not (folder / TRAINING_STATE).exists():
        raise CheckpointError(f"{folder} has no {TRAINING_STATE}; it cannot be resumed")
    verify_manifest(folder)
    try:
        state = torch.load(folder / TRAINING_STATE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        return int(state["step"])
    except Exception as e:  # truncated zip, refused unpickling, a state of another shape
        raise CheckpointError(f"{folder / TRAINING_STATE}: unreadable training state: {type(e).__name__}: {e}") \
            from None


class MetricMeans:
    """The training metrics of the updates between two log rows of a pretraining loop, averaged and timed.
    `what` names the loss in the error a non-finite value raises."""

    def __init__(self, what: str = "loss"):
        self.what = what
        self.sums: dict[str, float] = {}
        self.count, self.t0 = 0, time.time()

    def add(self, step: int, metrics: dict[str, float]) -> None:
        """Add the metrics of update number `step` (counted from 1); RunError when one is not finite."""
        if not all(math.isfinite(v) for v in metrics.values()):
            raise RunError(f"non-finite {self.what} at step {step}: {metrics}; lower lr or check the videos")
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def row(self) -> dict[str, float]:
        """`train/<key>` means and `perf/updates_per_s` over the updates added since the last row (at least
        one); starts the next window."""
        dt = max(time.time() - self.t0, 1e-9)
        row = {f"train/{k}": v / self.count for k, v in self.sums.items()}
        row["perf/updates_per_s"] = self.count / dt
        self.sums, self.count, self.t0 = {}, 0, time.time()
        return row


class PeriodicCheckpoints:
    """When a pretraining loop writes step checkpoints: `maybe(step)` saves every `every` steps and whenever
    `minutes` have passed since the last save; `final(step)` makes sure the last step has one. `save(folder, step)`
    writes one checkpoint (e.g. through `save_training_checkpoint`); the newest `keep` are kept."""

    def __init__(self, run: RunDir, save: Callable[[Path, int], None], every: int, minutes: float, keep: int = 2):
        self.run, self.save, self.every, self.minutes, self.keep = run, save, every, minutes, keep
        self.last_time = time.time()

    def save_now(self, step: int) -> None:
        folder = self.run.checkpoint_dir(step)
        self.save(folder, step)
        self.run.mark_latest(folder, keep=self.keep)
        self.last_time = time.time()

    def maybe(self, step: int) -> None:
        if step % self.every == 0 or time.time() - self.last_time > 60 * self.minutes:
            self.save_now(step)

    def final(self, step: int) -> None:
        if self.run.latest_checkpoint() != self.run.checkpoint_dir(step):
            self.save_now(step)


__all__ = ["TRAINING_STATE", "MetricMeans", "PeriodicCheckpoints", "check_resume_config", "load_training_state",
           "open_run", "save_training_checkpoint"]
