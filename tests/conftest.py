"""Shared test setup: quiet progress bars, one torch thread (the CI machine has 2 cores), headless GL."""

import os

os.environ.setdefault("RLPT_QUIET", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
