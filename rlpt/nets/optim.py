"""The optimizer the agents use: Adam with PyTorch's fused kernel where the device has one (CPU and CUDA).

The fused kernel updates every parameter tensor of the optimizer in one pass; on a CPU core it is about 2.5x
faster than the default per-tensor loop for a 2x256 MLP (0.9 vs 2.3 ms per step), which is a large part of an
IQL update. The arithmetic is Adam's; results differ from the loop only by float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adam(params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.Adam:
    """`torch.optim.Adam(params, lr, **kwargs)`, fused when every parameter lives on a CPU or CUDA device."""
    params = list(params)
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fused = bool(tensors) and all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    return torch.optim.Adam(params, lr=lr, fused=fused, **kwargs)
