"""rlpt: a pretraining stack for reinforcement learning and robotics.

Pretrained parts plug into offline-to-online agents evaluated in MuJoCo simulators. Start with
`rlpt quickstart`, or in Python::

    import rlpt
    dataset = rlpt.data.load_d4rl("hopper-medium-replay-v5.hdf5")
    env = rlpt.envs.make_env("mujoco/Hopper-v5")
"""

from __future__ import annotations

from rlpt._version import __version__

__all__ = ["__version__", "load"]


def load(path, device: str = "auto", **kwargs):
    """Load any rlpt agent checkpoint folder (see `rlpt.agents.base`); kwargs (e.g. `encoder=`) go to the
    agent's constructor."""
    from rlpt.agents.base import load as _load

    return _load(path, device=device, **kwargs)


def __getattr__(name: str):
    # Subpackages import lazily so `import rlpt` stays fast and never touches MuJoCo or the network.
    import importlib

    if name in {"agents", "data", "envs", "eval", "nets", "utils", "runs", "errors"}:
        return importlib.import_module(f"rlpt.{name}")
    raise AttributeError(f"module 'rlpt' has no attribute {name!r}")
