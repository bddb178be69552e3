"""Training callbacks: `(step, metrics) -> bool | None`, called every log interval by every learner.

Returning False asks the learner to stop (as in SB3). Lives in the core layer so agents, pretraining and
GFlowNets share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: A callback gets `(step, metrics)` after each logged step; returning False stops training.
Callback = Callable[[int, dict[str, Any]], "bool | None"]


def run_callbacks(callbacks: Sequence[Callback], step: int, metrics: dict[str, Any]) -> bool:
    """Call every callback; return False when one asked to stop."""
    keep_going = True
    for cb in callbacks:
        if cb(step, metrics) is False:
            keep_going = False
    return keep_going
