"""Statistics for claims over seeds: mean ± std, interquartile mean, percentile-bootstrap confidence intervals,
differences and ratios between arms, and curves aggregated over seeds.

One place for every benchmark that compares arms (a claim that two arms differ comes with an interval). The
interquartile mean (IQM) and bootstrap intervals beside mean ± std follow rliable (Agarwal et al., 2021): with a
handful of seeds the IQM is less swayed by one outlying run than the mean, and the interval says how far the
seeds pin a number down.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]  # reduces the last axis: (..., n) -> (...)


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def mean_std(values: Sequence[float], ddof: int = 0) -> dict[str, float]:
    """{"mean", "std", "n"} of the finite values; `std` is the population std (ddof 0, as most benchmarks report)
    unless `ddof=1` asks for the sample std (0 with a single value)."""
    x = _finite(values)
    if len(x) == 0:
        raise ValueError("mean_std: no finite values")
    std = float(x.std(ddof=ddof)) if len(x) > ddof else 0.0
    return {"mean": float(x.mean()), "std": std, "n": int(len(x))}


def _iqm_last_axis(x: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis: drop the lowest and highest floor(n/4) values, average the rest
    (scipy.stats.trim_mean(x, 0.25), rliable's convention)."""
    n = x.shape[-1]
    k = n // 4
    return np.sort(x, axis=-1)[..., k:n - k].mean(-1)


STATISTICS: dict[str, Statistic] = {"mean": lambda x: x.mean(-1), "iqm": _iqm_last_axis}


def _statistic(stat: str | Statistic) -> Statistic:
    if callable(stat):
        return stat
    if stat not in STATISTICS:
        raise ValueError(f"unknown statistic {stat!r}; known: {sorted(STATISTICS)}")
    return STATISTICS[stat]


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean of `values` (the mean of the middle half; the plain mean below 4 values)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("iqm: no values")
    return float(_iqm_last_axis(x))


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0, stat: str | Statistic = "mean") -> tuple[float, float]:
    """Percentile-bootstrap interval of a statistic ("mean" or "iqm") of `values`, resampled with replacement."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"bootstrap_ci needs at least 2 values, got {len(x)}")
    rng = np.random.default_rng(seed)
    boots = _statistic(stat)(x[rng.integers(0, len(x), size=(n_boot, len(x)))])
    a = (1.0 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def describe(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
             ddof: int = 0) -> dict:
    """One arm over seeds: mean, std (population; sample with `ddof=1`, recorded as `ddof`), n, IQM, and bootstrap
    intervals of the mean and the IQM (`None` with fewer than 2 finite values). Non-finite and missing values are
    left out."""
    x = _finite(values)
    out: dict = {**mean_std(x, ddof), "ddof": ddof, "iqm": iqm(x), "mean_ci": None, "iqm_ci": None, "level": level}
    if len(x) >= 2:
        out["mean_ci"] = list(bootstrap_ci(x, level, n_boot, seed, "mean"))
        out["iqm_ci"] = list(bootstrap_ci(x, level, n_boot, seed, "iqm"))
    return out


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


def paired_values(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None]
                  ) -> tuple[list, np.ndarray, np.ndarray]:
    """The seeds (keys) where both arms have a finite value, in `a`'s order, and the two arms' values there."""
    seeds = [k for k, v in a.items() if v is not None and np.isfinite(v) and b.get(k) is not None
             and np.isfinite(b[k])]
    return seeds, np.asarray([a[k] for k in seeds], dtype=float), np.asarray([b[k] for k in seeds], dtype=float)


def diff_by_seed(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None], level: float = 0.95,
                 n_boot: int = 10_000, seed: int = 0) -> dict | None:
    """Difference of two arms given as {seed: value}, with a bootstrap interval (`bootstrap_diff_ci`): paired over
    the seeds both arms have when there are at least 2 of them (the difference is then over those seeds only),
    otherwise unpaired over each arm's own finite values. Adds `n` (seeds, or values per arm) and `seeds` (the
    shared seeds when paired). None when an arm has fewer than 2 finite values."""
    seeds, x, y = paired_values(a, b)
    if len(seeds) >= 2:
        return {**bootstrap_diff_ci(x, y, level, n_boot, seed, paired=True), "n": len(seeds), "seeds": seeds}
    xa, xb = _finite(list(a.values())), _finite(list(b.values()))
    if len(xa) < 2 or len(xb) < 2:
        return None
    return {**bootstrap_diff_ci(xa, xb, level, n_boot, seed, paired=False), "n": [len(xa), len(xb)], "seeds": None}


def bootstrap_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                       seed: int = 0, paired: bool = False) -> dict[str, float]:
    """Ratio of means `mean(a) / mean(b)` with a percentile-bootstrap interval (e.g. steps to a success level,
    treatment over control). `paired=True` resamples seeds jointly. Resamples whose `b` mean is 0 are dropped."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"bootstrap_ratio_ci needs at least 2 values per arm, got {len(x)} and {len(y)}")
    if y.mean() == 0:
        raise ValueError("bootstrap_ratio_ci: the denominator's mean is 0")
    rng = np.random.default_rng(seed)
    if paired:
        if len(x) != len(y):
            raise ValueError(f"paired bootstrap needs equal lengths, got {len(x)} and {len(y)}")
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        mx, my = x[idx].mean(1), y[idx].mean(1)
    else:
        mx = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
        my = y[rng.integers(0, len(y), size=(n_boot, len(y)))].mean(1)
    keep = my != 0
    r = mx[keep] / my[keep]
    q = (1.0 - level) / 2
    return {"ratio": float(x.mean() / y.mean()), "low": float(np.quantile(r, q)), "high": float(np.quantile(r, 1 - q)),
            "level": level, "paired": paired}


def aggregate_curves(curves: Sequence[Mapping[int, float]], level: float = 0.95, n_boot: int = 2_000,
                     seed: int = 0) -> dict[str, list]:
    """Learning curves of one arm over seeds ({step: value} each) on the steps every seed has: per step the mean,
    the IQM and a bootstrap interval of the mean (`low`/`high`, the mean itself with one seed)."""
    if not curves:
        raise ValueError("aggregate_curves: no curves")
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    table = np.asarray([[c[s] for c in curves] for s in steps], dtype=float).reshape(len(steps), len(curves))
    out: dict[str, list] = {"steps": steps, "mean": table.mean(1).tolist(), "iqm": _iqm_last_axis(table).tolist(),
                            "low": [], "high": [], "n": [len(curves)] * len(steps)}
    for row in table:
        lo, hi = bootstrap_ci(row, level, n_boot, seed) if len(row) >= 2 else (float(row[0]), float(row[0]))
        out["low"].append(lo)
        out["high"].append(hi)
    return out
