"""Progress in a log file: `rlpt.runs.progress` prints a one-line status at least every RLPT_STATUS_SECONDS."""

from __future__ import annotations

import io
import time

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
    bar = StatusLines(total=1000, desc="bc offline", interval=30.0, stream=out, heartbeat=False)
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
    with progress(total=10, desc="x") as bar:
        assert isinstance(bar, StatusLines) and bar.interval == 30.0
    monkeypatch.setenv("RLPT_STATUS_SECONDS", "5")
    with progress(total=10, desc="x") as bar:
        assert bar.interval == 5.0
    monkeypatch.setenv("RLPT_QUIET", "1")
    with progress(total=10, desc="x") as bar:
        assert not isinstance(bar, StatusLines)


def test_heartbeat_prints_while_the_work_between_updates_is_slow():
    """A training loop that reports progress only every few minutes (a slow logging interval, an evaluation)
    still leaves a line in the log every interval."""
    out = io.StringIO()
    with StatusLines(total=100, desc="unio4 offline", interval=0.2, stream=out) as bar:
        bar.update(10)
        time.sleep(1.3)  # no update for 6.5 intervals
        silent = StatusLines(total=100, desc="no heartbeat", interval=0.2, stream=io.StringIO(), heartbeat=False)
        time.sleep(0.3)
        silent.close()
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 10 and all(ln.startswith("unio4 offline: 10/100 (10%)") for ln in lines[:-1])
    assert lines[-1].endswith("done")
    assert silent.stream.getvalue().count("\n") == 1  # only its final line: updates drive it
    time.sleep(0.5)
    assert out.getvalue().splitlines() == lines  # closed: the heartbeat stopped


def test_a_phase_without_counts_reports_its_elapsed_time(clock):
    out = io.StringIO()
    with StatusLines(desc="iql report (video, plots, summary)", interval=30.0, stream=out, heartbeat=False) as bar:
        clock.t += 31
        bar.refresh()
        clock.t += 20
    assert out.getvalue().splitlines() == ["iql report (video, plots, summary): 0:31 elapsed",
                                           "iql report (video, plots, summary): 0:51 elapsed | done"]


def test_consecutive_phases_keep_the_interval_across_bars(clock):
    """offline bar closes, some work outside any bar, then the online bar: the log's next line is due one interval
    after the offline bar's last line, not one interval after the online bar opened."""
    out = io.StringIO()
    with StatusLines(total=10, desc="offline", interval=30.0, stream=out, heartbeat=False) as bar:
        clock.t += 5
        bar.update(10)
    clock.t += 6  # e.g. the evaluation at the switch
    online = StatusLines(total=10, desc="online", interval=30.0, stream=out, heartbeat=False)
    clock.t += 23
    online.refresh()
    assert len(out.getvalue().splitlines()) == 1  # 29 s since the offline bar's line: not yet
    clock.t += 1
    online.refresh()
    assert out.getvalue().splitlines()[-1].startswith("online: 0/10")  # 30 s after it
    online.close()


def test_iterating_closes_the_bar_when_the_loop_ends_or_is_left():
    out = io.StringIO()
    bar = StatusLines(range(5), desc="probe videos", interval=0.05, stream=out)
    assert sum(bar) == 10 and bar.closed and out.getvalue().splitlines()[-1].startswith("probe videos: 5/5 (100%)")
    out2 = io.StringIO()
    for i in StatusLines(range(100), desc="early", interval=0.05, stream=out2):
        if i == 3:
            break
    lines = out2.getvalue().splitlines()
    assert lines[-1].startswith("early: 3/100") and lines[-1].endswith("done")
    time.sleep(0.3)  # a left loop's bar is closed, so its heartbeat prints nothing more
    assert out2.getvalue().splitlines() == lines
