"""Progress in a log file: `rlpt.runs.progress` prints a one-line status at least every RLPT_STATUS_SECONDS."""

from __future__ import annotations

import io

import pytest

import rlpt.runs as runs
from rlpt.runs import StatusLines, progress


class Clock:
    """A stand-in for time.monotonic that the test advances by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(runs.time, "monotonic", c)
    return c


def test_status_lines_come_once_per_interval_while_work_advances(clock):
    out = io.StringIO()
    bar = StatusLines(total=1000, desc="bc offline", interval=30.0, stream=out)
    stamps = []
    for _ in range(1000):  # one update every 0.5 s: 500 s of work
        clock.t += 0.5
        before = out.getvalue().count("\n")
        bar.update(1)
        if out.getvalue().count("\n") > before:
            stamps.append(clock.t)
    bar.close()
    lines = out.getvalue().splitlines()
    gaps = [b - a for a, b in zip([1000.0, *stamps], stamps, strict=False)]
    assert len(stamps) == 500 // 30 and all(g == pytest.approx(30.0) for g in gaps)  # every 30 s, not more often
    first = lines[0]
    assert first.startswith("bc offline: 60/1000 (6%)") and "2.0 it/s" in first and "ETA 7:50" in first
    assert lines[-1].startswith("bc offline: 1000/1000 (100%)") and lines[-1].endswith("done")


def test_progress_to_a_file_defaults_to_status_lines_every_30_s(monkeypatch):
    for var in ("CI", "RLPT_QUIET", "RLPT_STATUS_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runs.sys, "stderr", io.StringIO())  # not a terminal: output goes to a log
    bar = progress(total=10, desc="x")
    assert isinstance(bar, StatusLines) and bar.interval == 30.0
    monkeypatch.setenv("RLPT_STATUS_SECONDS", "5")
    assert progress(total=10, desc="x").interval == 5.0
    monkeypatch.setenv("RLPT_QUIET", "1")
    assert not isinstance(progress(total=10, desc="x"), StatusLines)
