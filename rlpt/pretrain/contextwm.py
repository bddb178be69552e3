"""ContextWM: action-free world-model pretraining on videos (Wu et al., NeurIPS 2023; thuml/ContextWM).

The model, its config presets and its artifact (`VideoWorldModel`, `WorldModelConfig`, `load_pretrained`,
`read_meta`) live in `rlpt.nets.worldmodel` and are re-exported here; this module is the training side:
`make_optimizer`, `train_step` and the resumable loop `pretrain`.

Pretraining (`pretrain`) samples clips from `rlpt.data.video.open_videos(...)`, minimises `VideoWorldModel.loss`
(image reconstruction + balanced KL), logs `metrics.csv`/`metrics.jsonl`, checkpoints every `checkpoint_every`
steps (and every `checkpoint_minutes`) so a killed run resumes with `resume=True`, and ends by writing
`contextwm.json` + `model.safetensors` into the output folder, which `load_pretrained(path)` reads. The
downstream Dreamer agent (rlpt.agents.contextwm) stacks an action-conditioned RSSM on top of the pretrained
`rssm`'s features.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from rlpt.errors import ConfigError, DatasetError
from rlpt.nets.worldmodel import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CONTEXT_CHOICES,
    META_FILE,
    VideoWorldModel,
    WorldModelConfig,
    load_pretrained,
    read_meta,
)
from rlpt.pretrain.common import (
    MetricMeans,
    PeriodicCheckpoints,
    check_resume_config,
    load_training_state,
    open_run,
    save_training_checkpoint,
)
from rlpt.runs import MetricsLogger, progress
from rlpt.utils import resolve_device, set_seed


# ============================================================================ training
def make_optimizer(model: VideoWorldModel) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (DreamerV2's `wd`), eps 1e-5 by default."""
    c = model.config
    return torch.optim.AdamW(model.parameters(), lr=c.lr, eps=c.eps, weight_decay=c.wd, foreach=True)


def train_step(model: VideoWorldModel, optimizer: torch.optim.Optimizer, frames: np.ndarray | torch.Tensor,
               step: int | None = None) -> dict[str, float]:
    """One gradient update on a batch of uint8 clips; returns the loss metrics plus `grad_norm`."""
    model.train()
    loss, metrics, _ = model.loss(frames, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), model.config.clip))
    optimizer.step()
    return metrics


def open_video_source(videos: Any, config: WorldModelConfig, stride: int = 1) -> Any:
    """Anything with `sample(batch_size, rng)` is used as is; paths (or lists of them) go to `open_videos`."""
    if hasattr(videos, "sample"):
        return videos
    from rlpt.data.video import open_videos

    return open_videos(videos, clip_len=config.seq_len, stride=stride, image_size=config.image_size)


def _save_training_checkpoint(folder: Path, model: VideoWorldModel, optimizer: torch.optim.Optimizer, step: int,
                              rng: np.random.Generator) -> None:
    save_training_checkpoint(folder, lambda tmp: model.write_files(tmp, step), optimizer, step, rng)


def _load_training_checkpoint(folder: Path, model: VideoWorldModel, optimizer: torch.optim.Optimizer,
                              rng: np.random.Generator) -> int:
    saved = WorldModelConfig.from_dict(read_meta(folder)["config"], source=str(folder / META_FILE))
    check_resume_config(saved, model.config, folder)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return load_training_state(folder, optimizer, rng, model.device)


def pretrain(videos: Any, config: WorldModelConfig | None = None, steps: int = 1000,
             out_dir: str | os.PathLike = "runs/contextwm", seed: int = 0, resume: bool = False,
             device: str | torch.device = "auto", stride: int = 1, log_every: int = 50, checkpoint_every: int = 500,
             checkpoint_minutes: float = 10.0, quiet: bool | None = None,
             callbacks: Sequence[Callable[[int, dict[str, Any]], bool | None]] = ()) -> Path:
    """Action-free pretraining for `steps` updates in total; returns `out_dir`, which then holds the final model.

    `videos`: a video folder / list file / manifest (or a list of them) for `rlpt.data.video.open_videos`, or any
    object with `sample(batch_size, rng) -> uint8 (B, T, S, S, 3)`. `out_dir` gets `config.yaml`, `metrics.csv`,
    `metrics.jsonl`, `tb/`, `checkpoints/step_*/` (with optimizer and RNG state), and at the end `contextwm.json`,
    `model.safetensors` and `summary.json`. With `resume=True` the run continues from the latest checkpoint in
    `out_dir` (same config required) and reproduces the uninterrupted run on the same machine. Callbacks get
    `(step, metrics)` every `log_every` steps; returning False stops early (the final model is still written)."""
    config = config or WorldModelConfig.preset("cpu-small")
    config.validate()
    if steps < 1 or log_every < 1 or checkpoint_every < 1:
        raise ConfigError(f"steps, log_every and checkpoint_every must be >= 1, got {steps}, {log_every}, "
                          f"{checkpoint_every}")
    out = Path(out_dir)
    run, latest = open_run(out, META_FILE, "ContextWM", resume)
    dev = resolve_device(device)
    rng = set_seed(seed)
    model = VideoWorldModel(config).to(dev)
    optimizer = make_optimizer(model)
    start = 0
    if resume and latest is not None:
        start = _load_training_checkpoint(latest, model, optimizer, rng)
    source = open_video_source(videos, config, stride)
    n_videos = len(source) if hasattr(source, "__len__") else None
    if n_videos == 0:
        raise DatasetError(f"{videos}: no usable videos (skipped: {getattr(source, 'skipped', [])[:5]})")
    run.write_config({"contextwm": config.to_dict(), "videos": str(videos), "steps": steps, "seed": seed,
                      "stride": stride, "device": str(dev), "resumed_from": start or None})
    logger = MetricsLogger(run, resume_from_step=start if resume else None)
    means, t_start = MetricMeans("loss"), time.time()
    checkpoints = PeriodicCheckpoints(
        run, lambda folder, step: _save_training_checkpoint(folder, model, optimizer, step, rng),
        every=checkpoint_every, minutes=checkpoint_minutes)
    frames_per_update = config.batch_size * config.seq_len
    step, last_metrics, stopped = start, {}, False
    try:
        with progress(total=steps, initial=start, desc=f"contextwm {config.name}", quiet=quiet) as bar:
            while step < steps and not stopped:
                batch = source.sample(config.batch_size, rng)  # (B, T, S, S, 3) uint8
                means.add(step + 1, train_step(model, optimizer, batch, step))
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == steps:
                    last_metrics = means.row()
                    last_metrics["perf/frames_per_s"] = last_metrics["perf/updates_per_s"] * frames_per_update
                    logger.log(step, last_metrics)
                    bar.set_postfix(loss=f"{last_metrics['train/loss']:.1f}",
                                    mse=f"{last_metrics['train/image_mse']:.4f}")
                    stopped = any(cb(step, last_metrics) is False for cb in callbacks)
                checkpoints.maybe(step)
        checkpoints.final(step)
        seconds = time.time() - t_start
        model.write_files(out, step)
        summary = {"steps": step, "resumed_from": start or None, "seconds": round(seconds, 1),
                   "updates_per_s": round((step - start) / max(seconds, 1e-9), 3),
                   "frames_per_update": frames_per_update, "videos": n_videos,
                   "skipped_videos": len(getattr(source, "skipped", []) or []),
                   "final": last_metrics, "config": config.to_dict()}
        run.write_summary(summary)
    finally:
        logger.close()
        if source is not videos and hasattr(source, "close"):  # we opened it: release its video captures
            source.close()
    return out


# The model side (CHECKPOINT_*, CONTEXT_CHOICES, META_FILE, VideoWorldModel, WorldModelConfig, load_pretrained,
# read_meta) is re-exported from rlpt.nets.worldmodel, so imports from here keep working.
__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CONTEXT_CHOICES", "META_FILE", "VideoWorldModel",
           "WorldModelConfig", "load_pretrained", "make_optimizer", "open_video_source", "pretrain", "read_meta",
           "train_step"]
