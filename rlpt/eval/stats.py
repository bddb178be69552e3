"""Statistics for claims over seeds: mean ± std and percentile-bootstrap confidence intervals.

One place for every benchmark that compares arms (a claim that two arms differ comes with an interval).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std" (population, as the benchmarks report), "n"} of finite values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        raise ValueError("mean_std: no finite values")
    return {"mean": float(x.mean()), "std": float(x.std()), "n": int(len(x))}


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"bootstrap_ci needs at least 2 values, got {len(x)}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    a = (1.0 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                      seed: int = 0, paired: bool = False) -> dict[str, float]:
    """Mean difference `mean(a) - mean(b)` with a percentile-bootstrap interval. `paired=True` resamples the
    per-seed differences (a[i] and b[i] share seed i); otherwise each group is resampled on its own."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"bootstrap_diff_ci needs at least 2 values per arm, got {len(x)} and {len(y)}")
    if paired:
        if len(x) != len(y):
            raise ValueError(f"paired bootstrap needs equal lengths, got {len(x)} and {len(y)}")
        lo, hi = bootstrap_ci(x - y, level, n_boot, seed)
        return {"diff": float((x - y).mean()), "low": lo, "high": hi, "level": level, "paired": True}
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    my = y[rng.integers(0, len(y), size=(n_boot, len(y)))].mean(1)
    d = mx - my
    q = (1.0 - level) / 2
    return {"diff": float(x.mean() - y.mean()), "low": float(np.quantile(d, q)), "high": float(np.quantile(d, 1 - q)),
            "level": level, "paired": False}
