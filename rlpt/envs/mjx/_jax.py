"""Importing JAX and MJX for rlpt: memory settings first, a persistent compilation cache, clear errors.

Nothing outside `rlpt.envs.mjx` imports JAX; this module is its single entry point.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from types import ModuleType

from rlpt.errors import EnvSpecError

INSTALL_HINT = "install the extra: pip install -e '.[mjx]' (mujoco-mjx==3.17.0 and jax)"
DEFAULT_CACHE_DIR = Path(os.environ.get("RLPT_JAX_CACHE", Path.home() / ".cache" / "rlpt" / "jax"))
_cache_dir_set: str | None = None


def import_mjx() -> tuple[ModuleType, ModuleType]:
    """Return `(jax, mujoco.mjx)`, setting `XLA_PYTHON_CLIENT_PREALLOCATE=false` before JAX starts.

    Without that setting JAX takes 75% of the GPU's memory at its first operation and torch, which
    shares the GPU with it, runs out. A user's own value of the variable is kept.
    Raises EnvSpecError naming the missing package when mujoco-mjx or jax is not installed.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
    except ImportError as e:
        raise EnvSpecError(f"backend 'mjx' needs jax, which is not installed ({e}); {INSTALL_HINT}") from e
    try:
        # mujoco.mjx prints "Failed to import warp" when the optional MuJoCo Warp backend is absent.
        with contextlib.redirect_stdout(io.StringIO()):
            from mujoco import mjx
    except ImportError as e:
        raise EnvSpecError(f"backend 'mjx' needs mujoco-mjx, which is not installed ({e}); {INSTALL_HINT}") from e
    return jax, mjx


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in `path` (default ~/.cache/rlpt/jax or $RLPT_JAX_CACHE).

    Compiling an MJX step takes 30-80 s on a small CPU; with the cache a second process loads it in
    about a second. Every compiled program is cached (no minimum compile time). JAX reads the
    directory once, when it first compiles, so call this before the first env is built; a later
    call with another path raises EnvSpecError.
    """
    global _cache_dir_set
    jax, _ = import_mjx()
    target = Path(path) if path is not None else DEFAULT_CACHE_DIR
    target.mkdir(parents=True, exist_ok=True)
    if _cache_dir_set is not None and _cache_dir_set != str(target):
        raise EnvSpecError(
            f"the JAX compilation cache is already at {_cache_dir_set}; cannot move it to {target} in this process"
        )
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_dir_set = str(target)
    return target
