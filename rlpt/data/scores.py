"""D4RL-style normalized scores: `100 * (R - R_random) / (R_expert - R_random)`.

The reference returns ship in `reference_scores.json` (copied from D4RL's `infos.py`). They hold for the
D4RL domains and their v0/v1/v2 dataset names only. Gymnasium v3+ MuJoCo envs (`Hopper-v5`) and Minari
re-collections (`mujoco/hopper/medium-v0`) are different environments: their references must be given
explicitly or come from a dataset's metadata (`ref_min_score`, `ref_max_score`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.errors import DatasetKeyError, DatasetValueError

# Versions up to this one name D4RL's own datasets/envs; later versions are Gymnasium's re-implementations.
D4RL_MAX_VERSION = 2
_VERSION_RE = re.compile(r"-v(\d+)$")


@lru_cache(maxsize=1)
def reference_table() -> dict[str, tuple[float, float]]:
    """The shipped D4RL references: domain → (ref_min_score, ref_max_score)."""
    text = resources.files("rlpt.data").joinpath("reference_scores.json").read_text()
    raw = json.loads(text)
    return {k: (float(v["ref_min_score"]), float(v["ref_max_score"])) for k, v in raw.items()
            if not k.startswith("_")}


def _resolve(env_name: str) -> tuple[tuple[float, float] | None, str]:
    """(refs or None, why none) for an env or dataset name."""
    name = env_name.strip()
    if "/" in name:
        return None, (f"'{name}' looks like a Minari dataset id; Minari datasets are re-collected with "
                      f"Gymnasium envs and carry their own ref_min_score/ref_max_score in their metadata")
    lower = name.lower()
    m = _VERSION_RE.search(lower)
    version = int(m.group(1)) if m else None
    base = lower[: m.start()] if m else lower
    domain = re.split(r"[-_]", base)[0]
    table = reference_table()
    if domain not in table:
        return None, f"no D4RL reference scores for domain '{domain}' (known: {sorted(table)})"
    if version is not None and version > D4RL_MAX_VERSION:
        return None, (f"'{name}' is a Gymnasium v{version} env, not the D4RL env version the shipped "
                      f"'{domain}' references were measured on (D4RL names end in -v0/-v1/-v2)")
    return table[domain], ""


def reference_scores(env_name: str) -> tuple[float, float]:
    """D4RL's (ref_min_score, ref_max_score) for `hopper`, `hopper-medium-replay-v2`, `pen-human-v1`, ...

    Raises DatasetKeyError when the name has no D4RL reference (unknown domain, Gymnasium v3+ env such as
    `Hopper-v5`, or a Minari id).
    """
    refs, why = _resolve(env_name)
    if refs is None:
        raise DatasetKeyError(f"normalized score for '{env_name}': {why}; pass ref_min= and ref_max= explicitly")
    return refs


def normalized_score(env_name: str | None, returns: Any, *, ref_min: float | None = None,
                     ref_max: float | None = None) -> float | np.ndarray:
    """Episode returns on D4RL's 0–100 scale: `100 * (R - ref_min) / (ref_max - ref_min)`.

    Args:
        env_name: an env or dataset name (`hopper`, `hopper-medium-v2`, `Hopper-v5`); used to look up D4RL's
            references when `ref_min`/`ref_max` are not given. D4RL references are refused for Gymnasium v3+
            envs and Minari ids, whose envs differ.
        returns: one undiscounted episode return or an array of them.
        ref_min, ref_max: explicit random/expert reference returns (both or neither); they take precedence.

    Returns:
        a float for a scalar `returns`, else a float64 array of the same shape.
    """
    if (ref_min is None) != (ref_max is None):
        raise DatasetValueError(
            f"normalized score for '{env_name}': pass both ref_min and ref_max, got ref_min={ref_min}, "
            f"ref_max={ref_max}")
    if ref_min is None or ref_max is None:
        if env_name is None:
            raise DatasetKeyError("normalized score: no env name and no ref_min/ref_max given")
        ref_min, ref_max = reference_scores(env_name)
    lo, hi = float(ref_min), float(ref_max)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi == lo:
        raise DatasetValueError(
            f"normalized score for '{env_name}': reference scores must be finite and differ; "
            f"got ref_min={lo}, ref_max={hi}")
    r = np.asarray(returns, dtype=np.float64)
    score = 100.0 * (r - lo) / (hi - lo)
    return float(score) if score.ndim == 0 else score


def dataset_normalized_score(dataset: Any, returns: Any) -> float | np.ndarray:
    """Normalized score against a dataset's references.

    Uses `metadata["ref_min_score"]` and `metadata["ref_max_score"]` (Minari datasets and rlpt-made datasets
    carry them); otherwise falls back to D4RL's references for `metadata["env_id"]`,
    `metadata["dataset_name"]` or the source file's name (e.g. `hopper-medium-v2.hdf5`, only with a -v0/-v1/-v2
    suffix) when that resolves to a D4RL name. Raises DatasetKeyError naming the dataset when no reference
    is known.
    """
    meta = dataset.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is not None and hi is not None:
        return normalized_score(meta.get("env_id"), returns, ref_min=lo, ref_max=hi)
    tried = []
    for key in ("env_id", "dataset_name", "source"):
        name = meta.get(key)
        if not name:
            continue
        name = Path(str(name)).stem if key == "source" else str(name)
        if key == "source" and not _VERSION_RE.search(name.lower()):
            continue  # a file name counts only when it is a full D4RL dataset name such as hopper-medium-v2
        tried.append(name)
        refs, _ = _resolve(name)
        if refs is not None:
            return normalized_score(name, returns, ref_min=refs[0], ref_max=refs[1])
    src = meta.get("source", "<in-memory dataset>")
    raise DatasetKeyError(
        f"{src}: metadata has no 'ref_min_score'/'ref_max_score' and no D4RL reference matches "
        f"{tried or 'any name'}; set dataset.metadata['ref_min_score'] and ['ref_max_score'] or use "
        f"normalized_score(..., ref_min=, ref_max=)")
