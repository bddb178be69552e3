"""Run folders, metric logging (CSV, JSONL, TensorBoard), progress bars and atomic checkpoints.

Layout (conventions.md): `runs/<recipe>__<env>__seed<k>__<timestamp>/` with `config.yaml`,
`metrics.csv`, `metrics.jsonl`, `tb/` (TensorBoard events), `checkpoints/`, `videos/`, `plots/`,
`summary.json`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlpt.errors import RunError
from rlpt.utils import to_jsonable, write_json, write_text_atomic, write_yaml


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def is_quiet(quiet: bool | None = None) -> bool:
    """Progress output is off under --quiet and in CI (the RLPT_QUIET or CI env var)."""
    if quiet is not None:
        return quiet
    return bool(os.environ.get("RLPT_QUIET") or os.environ.get("CI"))


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", quiet: bool | None = None,
             initial: int = 0):
    """Progress of long work: a tqdm bar with rate and ETA on a terminal; when stderr is not a terminal (output
    sent to a log file), a one-line status on stdout every `RLPT_STATUS_SECONDS` (default 30) s; nothing when
    quiet."""
    from tqdm.auto import tqdm

    if not is_quiet(quiet) and not sys.stderr.isatty():
        interval = float(os.environ.get("RLPT_STATUS_SECONDS", "30"))
        return StatusLines(iterable, total=total, desc=desc, initial=initial, interval=interval)
    return tqdm(iterable, total=total, desc=desc, disable=is_quiet(quiet), initial=initial, dynamic_ncols=True,
                smoothing=0.1)


# when a StatusLines last printed (time.monotonic()); at first, when rlpt began its work (this import), so the first
# bar of a command counts from there too
_last_line: list[float | None] = [time.monotonic()]


class StatusLines:
    """The subset of tqdm's interface rlpt uses (`n`, `update`, `refresh`, `set_postfix`, iteration, context
    manager), printing `desc: n/total (pct) | rate it/s | ETA | postfix` every `interval` seconds and once at the
    end, one line each, for logs.

    Updates print when `interval` has passed since the last line; with `heartbeat` (the default) a daemon thread
    also prints the latest counts whenever `interval` passes without an update (work between progress updates,
    such as evaluations or slow logging intervals, would otherwise leave the log silent). A bar opened within
    `interval` of another bar's last line (or of rlpt's start) counts from it, so consecutive phases keep the
    interval."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 initial: int = 0, interval: float = 30.0, stream=None, heartbeat: bool = True):
        self.iterable, self.desc, self.interval = iterable, desc, interval
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.initial = total, initial, initial
        self.stream = stream if stream is not None else sys.stdout
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        if _last_line[0] is not None and 0 <= self.t0 - _last_line[0] < interval:
            self.last = _last_line[0]  # bars in a row (offline, online, report): the log's interval runs on
        self.closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if heartbeat and interval > 0:
            threading.Thread(target=self._heartbeat, name=f"status-{desc}", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(self.last + self.interval - time.monotonic(), 0.01)):  # sleep until due
            if time.monotonic() - self.last >= self.interval:
                self._print()

    def __iter__(self):
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:  # as tqdm: the final line when the loop ends (or is left), and the heartbeat stops
            self.close()

    def __enter__(self) -> StatusLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        if time.monotonic() - self.last >= self.interval:
            self._print()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop.set()
            self._print(final=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        if self.total is None and self.n == self.initial:  # a phase without counts: how long it has run
            return " | ".join([f"{self.desc}: {_clock(elapsed)} elapsed", *([self.postfix] if self.postfix else [])])
        rate = (self.n - self.initial) / elapsed
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"
                                              if self.total else "")]
        parts.append(f"{rate:.1f} it/s, {_clock(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return " | ".join(parts)

    def _print(self, final: bool = False) -> None:
        with self._lock:  # the heartbeat thread and the worker never interleave or double a line
            if not final and (self.closed or time.monotonic() - self.last < self.interval):
                return  # closed, or the other thread has just printed
            self.last = _last_line[0] = time.monotonic()
            print(self.line() + (" | done" if final else ""), file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class RunDir:
    """A run folder and the files in it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        for sub in ("checkpoints", "videos", "plots"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: str | os.PathLike, recipe: str, env: str, seed: int) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{_slug(recipe)}__{_slug(env)}__seed{seed}__{stamp}"
        path, k = base, 1
        while path.exists():
            path, k = Path(f"{base}-{k}"), k + 1
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        path = Path(path)
        if not (path / "config.yaml").exists():
            raise RunError(f"{path} is not an rlpt run folder: config.yaml is missing")
        return cls(path)

    config_path = property(lambda self: self.path / "config.yaml")
    summary_path = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    videos = property(lambda self: self.path / "videos")
    plots = property(lambda self: self.path / "plots")

    def write_config(self, config: dict) -> None:
        write_yaml(self.config_path, config)

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (named by `latest`, else the highest step folder)."""
        pointer = self.checkpoints / "latest"
        if pointer.exists():
            cand = self.checkpoints / pointer.read_text().strip()
            if cand.exists():
                return cand
        steps = sorted(self.checkpoints.glob("step_*"), key=lambda p: p.name)
        return steps[-1] if steps else None

    def checkpoints_newest_first(self) -> list[Path]:
        """Every step checkpoint, the one `latest` names first, then the others from the highest step down (the
        order `--resume` tries them in when the newest is damaged)."""
        steps = sorted((p for p in self.checkpoints.glob("step_*") if p.is_dir()), key=lambda p: p.name,
                       reverse=True)
        latest = self.latest_checkpoint()
        return ([latest] if latest is not None else []) + [p for p in steps if p != latest]

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:09d}"

    def mark_latest(self, ckpt: Path, keep: int = 3) -> None:
        """Point `latest` at `ckpt` and keep only the newest `keep` step folders."""
        write_text_atomic(self.checkpoints / "latest", ckpt.name + "\n")
        steps = sorted(self.checkpoints.glob("step_*"), key=lambda p: p.name)
        for old in steps[:-keep]:
            if old != ckpt:
                shutil.rmtree(old, ignore_errors=True)


class MetricsLogger:
    """Append metrics to `metrics.jsonl`, `metrics.csv` (wide, one row per log call) and TensorBoard.

    Every call is flushed to disk, so a crash loses nothing already logged. On resume, rows after the
    resumed step are dropped so the files read as one continuous run.
    """

    def __init__(self, run: RunDir, tensorboard: bool = True, resume_from_step: int | None = None):
        self.run = run
        self.jsonl = run.path / "metrics.jsonl"
        self.csv = run.path / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if resume_from_step is None or row.get("step", 0) <= resume_from_step:
                        self.rows.append(row)
            write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.columns: list[str] = []
        for r in self.rows:
            self.columns += [k for k in r if k not in self.columns]
        self._rewrite_csv()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run.path / "tb"), purge_step=resume_from_step)
            except ImportError:  # tensorboard is a core dependency, but never crash a run over it
                self._tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), "time": time.time(), **to_jsonable(metrics)}
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite_csv()
        else:
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def _rewrite_csv(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns)
        w.writeheader()
        w.writerows(self.rows)
        write_text_atomic(self.csv, buf.getvalue())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_path: str | os.PathLike) -> list[dict[str, Any]]:
    """All logged rows of a run, from metrics.jsonl."""
    path = Path(run_path) / "metrics.jsonl"
    if not path.exists():
        raise RunError(f"{path} not found: is {run_path} an rlpt run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
