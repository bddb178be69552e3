"""benchmarks/contextwm.py part two (agent return): deadline bookkeeping, the summary at the common step, merging
part files of parallel processes and resuming. No agent is trained here (train is replaced by a stand-in)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rlpt.errors import ConfigError
from rlpt.eval.stats import describe, diff_by_seed

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_contextwm_part2", ROOT / "benchmarks" / "contextwm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_chunk_deadline_lets_a_chunk_start_only_when_the_longest_so_far_fits(bench):
    clock = FakeClock()
    d = bench.ChunkDeadline(at=1100.0, margin=1.2, clock=clock)
    assert d.fits()  # no chunk measured yet and no first guess: the first chunk always starts
    clock.t += 30
    assert d.mark() == 30
    clock.t += 20
    d.mark()
    assert d.chunks == [30, 20] and d.expected_chunk() == 30
    assert d.left() == 50 and d.fits()  # 1050 + 1.2 x 30 = 1086 <= 1100
    clock.t = 1060
    assert d.fits()  # 1060 + 36 = 1096 <= 1100
    clock.t = 1065
    assert not d.fits()  # 1065 + 36 = 1101 > 1100
    assert bench.ChunkDeadline(at=None, clock=clock).fits()
    guessed = bench.ChunkDeadline(at=1100.0, margin=1.0, first_guess=40, clock=FakeClock(1070.0))
    assert not guessed.fits() and guessed.expected_chunk() == 40


def test_parse_deadline_takes_seconds_or_an_absolute_time(bench):
    assert bench.parse_deadline(None) is None and bench.parse_deadline("") is None
    assert bench.parse_deadline("540", now=100.0) == 640.0
    assert bench.parse_deadline("@1765170000", now=5.0) == 1765170000.0
    with pytest.raises(ConfigError, match="--agent-deadline.*'soon'"):
        bench.parse_deadline("soon")
    with pytest.raises(ConfigError, match="finite"):
        bench.parse_deadline("inf")


def test_eval_steps_follow_the_train_loop_chunks(bench):
    assert bench.eval_steps(10000, 2000) == [2000, 4000, 6000, 8000, 10000]
    assert bench.eval_steps(1000, 300) == [300, 600, 900, 1000]
    assert bench.eval_steps(500, 500) == [500]
    with pytest.raises(ConfigError, match="eval interval"):
        bench.eval_steps(1000, 0)


def _run(init: str, seed: int, returns: list[float], budget: int = 6000, interval: int = 2000,
         status: str | None = None) -> dict:
    curve = [{"online_step": (k + 1) * interval, "return": r} for k, r in enumerate(returns)]
    reached = curve[-1]["online_step"] if curve else 0
    return {"init": init, "seed": seed, "curve": curve, "online_steps_budget": budget,
            "status": status or ("done" if reached == budget else "deadline"), "online_steps_reached": reached,
            "online_return": curve[-1]["return"] if curve else None}


def _block(runs: list[dict], budget: int = 6000) -> dict:
    return {"settings": {"recipe": "r.yaml", "online_steps": budget, "quick": False, "eval_interval": 2000,
                         "eval_episodes": 10, "video_steps": 0},
            **{f"{r['init']}/seed{r['seed']}/steps{budget}": r for r in runs}}


def test_summary_compares_inits_at_the_largest_step_every_run_reached(bench):
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(5):
        for init, base in (("scratch", 100.0), ("plain", 120.0), ("contextwm", 150.0)):
            n = 2 if (init, seed) == ("plain", 3) else 3  # one run stopped by the deadline at step 4000
            runs.append(_run(init, seed, list(base + 10 * np.arange(n) + rng.normal(0, 5, n))))
    runs.append(_run("scratch", 9, [], status="not started"))  # never evaluated: reported, not compared
    s = bench.summarize_agent_return(_block(runs))
    assert s["common_step"] == 4000 and s["budget"] == 6000 and s["complete"] is False
    assert s["reached"]["plain/seed3"] == 4000 and s["reached"]["scratch/seed0"] == 6000
    assert s["reached"]["scratch/seed9"] == 0
    at = {init: {r["seed"]: r["curve"][1]["return"] for r in runs if r["init"] == init and r["curve"]}
          for init in ("scratch", "plain", "contextwm")}
    for init in at:
        want = describe(list(at[init].values()), ddof=1)
        assert s[init]["mean"] == pytest.approx(want["mean"]) and s[init]["iqm_ci"] == pytest.approx(want["iqm_ci"])
        assert s[init]["seeds"] == [0, 1, 2, 3, 4] and s[init]["step"] == 4000
        assert s[init]["curve"]["steps"][:2] == [2000, 4000]
    assert s["contextwm_minus_scratch_ci"] == diff_by_seed(at["contextwm"], at["scratch"])
    assert s["plain_minus_scratch_ci"]["paired"] and s["plain_minus_scratch_ci"]["n"] == 5
    assert s["contextwm_minus_scratch"] == pytest.approx(np.mean(list(at["contextwm"].values()))
                                                         - np.mean(list(at["scratch"].values())))
    assert s["contextwm_minus_scratch_ci"]["low"] > 0  # +50 with noise of 5: the interval is above 0


def test_summary_of_a_finished_comparison_and_of_records_without_status(bench):
    runs = [_run(i, s, [50.0 + s, 60.0 + s + (20 if i == "contextwm" else 0), 70.0]) for i in ("scratch", "contextwm")
            for s in range(3)]
    for r in runs:  # as the committed CPU result stores them: no status field
        r.pop("status")
        r["online_steps"] = 6000
    s = bench.summarize_agent_return(_block(runs))
    assert s["complete"] and s["common_step"] == 6000 and "plain" not in s and "plain_minus_scratch" not in s
    assert s["contextwm_minus_scratch"] == pytest.approx(0.0)
    assert bench.run_finished(runs[0], 6000) and not bench.run_finished(runs[0], 8000)
    assert not bench.run_finished(_run("scratch", 0, [1.0]), 6000) and not bench.run_finished(None, 6000)


def _part(path: Path, runs: list[dict], settings: dict | None = None) -> str:
    report = {"benchmark": "contextwm", "settings": settings or {"pretrain_steps": 1500, "quick": False},
              "runs": {}, "command": f"python benchmarks/contextwm.py --out {path.name}", "machine": {"cpu_count": 16},
              "commands": [{"command": "x", "started": "t0"}], "agent_return": _block(runs)}
    path.write_text(json.dumps(report))
    return str(path)


def test_merge_unites_parts_keeping_the_run_that_got_furthest(bench, tmp_path):
    files = []
    for seed in range(3):
        for init in ("scratch", "contextwm"):
            files.append(_part(tmp_path / f"p_{seed}_{init}.json",
                               [_run(init, seed, [10.0 * seed, 20.0 + (30 if init == "contextwm" else 0), 40.0])]))
    # an earlier call's copy holds a partial seed-0 scratch run and nothing else: the finished one wins
    files.append(_part(tmp_path / "older.json", [_run("scratch", 0, [-5.0], status="deadline")]))
    out = tmp_path / "merged.json"
    assert bench.merge_parts(files, out) == 0
    merged = json.loads(out.read_text())
    ar = merged["agent_return"]
    assert ar["scratch/seed0/steps6000"]["status"] == "done"
    assert len(bench.agent_runs(ar)) == 6 and ar["settings"]["online_steps"] == 6000
    assert ar["summary"]["complete"] and ar["summary"]["common_step"] == 6000
    assert ar["summary"]["contextwm_minus_scratch_ci"]["n"] == 3
    assert (tmp_path / "merged_agent_return.png").stat().st_size > 0
    assert [p["file"] for p in merged["parts"]] == files and merged["commands"] == [{"command": "x", "started": "t0"}]
    assert "plot" not in merged  # no phase-B runs in these parts
    bad = _part(tmp_path / "other.json", [_run("plain", 0, [1.0, 2.0, 3.0])], settings={"pretrain_steps": 20})
    with pytest.raises(ConfigError, match="other.json.*settings"):
        bench.merge_parts([files[0], bad], tmp_path / "m2.json")


def _args(**kw) -> types.SimpleNamespace:
    base = dict(agent_steps=6000, agent_eval_interval=2000, agent_eval_episodes=10, agent_video_steps=0,
                quick=False, quiet=True)
    return types.SimpleNamespace(**{**base, **kw})


def _fake_train(returns: list[float], steps_reported: list[int] | None = None):
    """A stand-in for rlpt.train.train: calls on_eval after each chunk as train does, records the recipe."""
    seen = {}

    def train(recipe, *, out_root, data_root, quiet, on_eval):
        seen["recipe"], seen["out_root"] = recipe, out_root
        evals = []
        for k, r in enumerate(returns):
            m = {"eval/return": r, "eval/return_std": 1.0, "phase": "online"}
            on_eval(m)
            evals.append({"online_step": (steps_reported or [2000, 4000, 6000])[k], **m})
        return {"online_return": returns[-1], "online_steps": recipe.online_steps, "offline_steps": 1100,
                "evaluations": {"offline": [], "online": evals}, "run": None}
    return train, seen


def test_agent_run_records_every_point_and_stops_at_the_deadline(bench, monkeypatch, tmp_path):
    import rlpt.train

    pretrained = {"plain": {"checkpoint": "data/x/pretrain_plain"}, "contextwm": {"checkpoint": "data/x/p_cwm"}}
    train, seen = _fake_train([10.0, 20.0, 30.0])
    monkeypatch.setattr(rlpt.train, "train", train)
    points = []
    rec = bench.agent_return_run("contextwm", 3, _args(), pretrained, tmp_path,
                                 on_point=lambda r: points.append(r["online_steps_reached"]))
    assert rec["status"] == "done" and rec["online_steps_reached"] == 6000 and rec["online_return"] == 30.0
    assert [p["online_step"] for p in rec["curve"]] == [2000, 4000, 6000] and points == [2000, 4000, 6000]
    recipe = seen["recipe"]
    assert (recipe.seed, recipe.online_steps, recipe.online_eval_interval, recipe.eval_episodes) == (3, 6000, 2000, 10)
    assert recipe.pretrained.endswith("p_cwm") and recipe.video_steps == 0
    assert seen["out_root"] == tmp_path / "agent_runs" / "contextwm"

    # a deadline already passed: the first chunk runs (nothing to estimate it from), then the run stops there
    train, _ = _fake_train([10.0, 20.0, 30.0])
    monkeypatch.setattr(rlpt.train, "train", train)
    rec = bench.agent_return_run("scratch", 0, _args(), pretrained, tmp_path, deadline=1.0)
    assert rec["status"] == "deadline" and rec["online_steps_reached"] == 2000 and len(rec["curve"]) == 1
    assert rec["online_return"] == 10.0 and "step 2000" in rec["stopped"]

    # train evaluating at other steps than the benchmark counts is an error, not a silent mislabel
    train, _ = _fake_train([10.0, 20.0, 30.0], steps_reported=[2000, 4000, 5000])
    monkeypatch.setattr(rlpt.train, "train", train)
    with pytest.raises(RuntimeError, match="evaluated at steps"):
        bench.agent_return_run("plain", 1, _args(), pretrained, tmp_path)
