"""The reward-model seam: `RewardModel` scores batches of observations; `RewardOutput` says, per item,
what the model answered and whether it answered at all.

Every backend (rlpt's success classifier, an OpenAI-compatible VLM server, a local Hugging Face model,
KAGI's keypoint reward) implements `RewardModel.score`. A backend that fails for an item marks it
invalid (`valid=False`) with a reason; it raises only for programming errors. `RewardWrapper`
(rlpt.rewards.wrapper) and `relabel` turn invalid items into a logged fallback, never a crash.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlpt.errors import RewardModelError

# Why an item has no valid score (counted in metrics as reward_model/fallback_<reason>).
FAILURE_REASONS = ("timeout", "server_error", "rate_limited", "malformed", "refusal", "empty",
                   "out_of_bounds", "exception")


@dataclass
class RewardQuery:
    """A batch of B observations to score. Backends read what they need and say so in `RewardModel.needs`.

    images: uint8 (B, H, W, 3) frames of the model's camera, or None.
    states: float (B, D) state vectors (proprioception, tracked object positions), or None.
    instruction: the task in words (one per batch).
    views: extra named camera images, each uint8 (B, H, W, 3) (e.g. {"top": ..., "side": ...}).
    """

    images: np.ndarray | None = None
    states: np.ndarray | None = None
    instruction: str = ""
    views: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {len(x) for x in (self.images, self.states, *self.views.values()) if x is not None}
        if len(sizes) > 1:
            raise RewardModelError(f"RewardQuery: images/states/views have different batch sizes {sorted(sizes)}")
        if self.images is not None:
            im = np.asarray(self.images)
            if im.ndim != 4 or im.shape[-1] != 3 or im.dtype != np.uint8:
                raise RewardModelError(f"RewardQuery.images must be uint8 (B, H, W, 3); got {im.dtype} {im.shape}")

    def __len__(self) -> int:
        for x in (self.images, self.states, *self.views.values()):
            if x is not None:
                return len(x)
        return 0

    def select(self, idx: np.ndarray) -> RewardQuery:
        return RewardQuery(None if self.images is None else self.images[idx],
                           None if self.states is None else self.states[idx], self.instruction,
                           {k: v[idx] for k, v in self.views.items()})


@dataclass
class RewardOutput:
    """Per-item answers of a reward model.

    reward: float (B,) reward for valid items (anything for invalid ones; the caller replaces them).
    valid: bool (B,): False where the model gave no usable answer.
    success: bool (B,) or None: the model's success judgement, for models that make one.
    prob: float (B,) or None: P(success) or a similarity score behind `success`.
    reasons: per-item failure reason (one of FAILURE_REASONS) or "" when valid.
    """

    reward: np.ndarray
    valid: np.ndarray
    success: np.ndarray | None = None
    prob: np.ndarray | None = None
    reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reward = np.asarray(self.reward, dtype=np.float32).reshape(-1)
        self.valid = np.asarray(self.valid, dtype=bool).reshape(-1)
        if not self.reasons:
            self.reasons = ["" if v else "exception" for v in self.valid]
        unknown = {r for r in self.reasons if r and r not in FAILURE_REASONS}
        if unknown:
            raise RewardModelError(f"RewardOutput: unknown failure reason(s) {sorted(unknown)}; "
                                   f"expected one of {list(FAILURE_REASONS)}")
        n = len(self.reward)
        if len(self.valid) != n or len(self.reasons) != n:
            raise RewardModelError(f"RewardOutput: reward/valid/reasons lengths differ ({n}, {len(self.valid)}, "
                                   f"{len(self.reasons)})")
        self.valid &= np.isfinite(self.reward)

    @classmethod
    def failed(cls, n: int, reason: str) -> RewardOutput:
        """All n items failed for one reason (e.g. the server timed out)."""
        return cls(np.zeros(n, np.float32), np.zeros(n, bool), reasons=[reason] * n)

    @classmethod
    def concatenate(cls, parts: list[RewardOutput]) -> RewardOutput:
        def cat(name: str):
            xs = [getattr(p, name) for p in parts]
            return None if any(x is None for x in xs) else np.concatenate(xs)

        return cls(np.concatenate([p.reward for p in parts]), np.concatenate([p.valid for p in parts]),
                   cat("success"), cat("prob"), [r for p in parts for r in p.reasons])


class RewardModel(abc.ABC):
    """Scores observations. Subclasses set `needs` (a subset of {"images", "states", "views"}) and implement
    `score`; `batch_size` bounds how many items one `score` call receives from wrappers and `relabel`."""

    needs: tuple[str, ...] = ("images",)
    batch_size: int = 64
    stateful: bool = False  # True: the reward depends on the episode so far (e.g. KAGI's waypoint progress)

    def reset(self) -> None:  # noqa: B027 (an optional hook)
        """Start of an episode. Stateful models clear their per-episode state here; `score` then receives
        the episode's observations in order, one batch after another."""

    @abc.abstractmethod
    def score(self, query: RewardQuery) -> RewardOutput:
        """Score every item of `query`. Failures of the backend (timeouts, bad answers) are returned as
        invalid items with a reason, not raised."""

    def __call__(self, query: RewardQuery) -> RewardOutput:
        """`score` in chunks of `batch_size`. A `RewardModelError` raised by a chunk marks it invalid with the
        error's reason; any other exception (a bug, a bad config) propagates and stops the run."""
        n = len(query)
        parts = []
        for lo in range(0, n, self.batch_size):
            sub = query.select(np.arange(lo, min(n, lo + self.batch_size)))
            try:
                out = self.score(sub)
            except RewardModelError as err:  # a backend that raises instead of marking items invalid
                out = RewardOutput.failed(len(sub), err.reason)
            if len(out.reward) != len(sub):
                raise RewardModelError(f"{type(self).__name__}.score returned {len(out.reward)} rewards for "
                                       f"{len(sub)} inputs")
            parts.append(out)
        return RewardOutput.concatenate(parts) if parts else RewardOutput(np.zeros(0), np.zeros(0, bool))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for run folders (never secrets)."""
        return {"type": type(self).__name__}

    def for_dataset(self) -> RewardModel:
        """The model that scores recorded data (`relabel`); by default this one. Models that read the live env
        (e.g. a keypoint plan of the current scene) return one that reads the recorded states instead."""
        return self

    def metrics(self) -> dict[str, float]:
        """The backend's own counters (requests, retries, cache hits, ...), merged into the wrapper's metrics
        under reward_model/backend_<name>."""
        return {}


class FallbackCounter:
    """Counts calls and fallbacks by reason; `metrics()` gives reward_model/* entries for MetricsLogger."""

    def __init__(self) -> None:
        self.calls = 0
        self.fallbacks: Counter[str] = Counter()

    def add(self, out: RewardOutput) -> None:
        self.calls += len(out.valid)
        self.fallbacks.update(r or "exception" for r, v in zip(out.reasons, out.valid, strict=True) if not v)

    def metrics(self) -> dict[str, float]:
        total = sum(self.fallbacks.values())
        m = {"reward_model/calls": float(self.calls), "reward_model/fallbacks": float(total),
             "reward_model/fallback_rate": total / max(self.calls, 1)}
        m.update({f"reward_model/fallback_{k}": float(v) for k, v in sorted(self.fallbacks.items())})
        return m


class CachedRewardModel(RewardModel):
    """Memoises another model's valid answers by the bytes of each item (image, state, views) and the
    instruction, in an LRU of `maxsize` items. Invalid answers are not cached (a retry may succeed)."""

    def __init__(self, model: RewardModel, maxsize: int = 100_000) -> None:
        self.model, self.maxsize = model, maxsize
        self.needs, self.batch_size = model.needs, model.batch_size
        if model.stateful:
            raise RewardModelError(f"CachedRewardModel: {type(model).__name__} is stateful; its answers depend on "
                                   "the episode so far and cannot be cached per observation")
        self._cache: dict[bytes, tuple[float, bool | None, float | None]] = {}
        self.hits = 0

    def _key(self, query: RewardQuery, i: int) -> bytes:
        import hashlib

        h = hashlib.blake2b(query.instruction.encode(), digest_size=16)
        for x in (query.images, query.states, *(query.views[k] for k in sorted(query.views))):
            if x is not None:
                h.update(np.ascontiguousarray(x[i]).tobytes())
        return h.digest()

    def score(self, query: RewardQuery) -> RewardOutput:
        n = len(query)
        keys = [self._key(query, i) for i in range(n)]
        miss = np.array([k not in self._cache for k in keys], bool)
        self.hits += int((~miss).sum())
        fresh = self.model(query.select(np.flatnonzero(miss))) if miss.any() else None
        reward, valid = np.zeros(n, np.float32), np.ones(n, bool)
        success = np.zeros(n, bool)
        prob = np.full(n, np.nan, np.float32)
        reasons = [""] * n
        has_success = has_prob = True
        j = 0
        for i, k in enumerate(keys):
            if miss[i]:
                r, v = float(fresh.reward[j]), bool(fresh.valid[j])
                s = None if fresh.success is None else bool(fresh.success[j])
                p = None if fresh.prob is None else float(fresh.prob[j])
                reasons[i] = fresh.reasons[j]
                j += 1
                if v:
                    if len(self._cache) >= self.maxsize:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[k] = (r, s, p)
            else:
                r, s, p = self._cache.pop(k)
                self._cache[k] = (r, s, p)  # most recently used last
                v = True
            reward[i], valid[i] = r, v
            has_success &= s is not None
            has_prob &= p is not None
            success[i] = bool(s)
            prob[i] = np.nan if p is None else p
        return RewardOutput(reward, valid, success if has_success else None, prob if has_prob else None, reasons)

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "cached": True}

    def metrics(self) -> dict[str, float]:
        return {**self.model.metrics(), "cache_hits": float(self.hits)}
