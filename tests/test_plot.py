"""`rlpt plot` / rlpt.eval.plots.plot_runs: several runs' learning curves, seeds grouped as mean ± band."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rlpt.cli import main
from rlpt.errors import RunError
from rlpt.eval.plots import _group_band, group_runs, plot_runs
from rlpt.runs import MetricsLogger, RunDir


def make_run(root, name: str, seed: int, scores, lr: float = 3e-4, online: bool = False, extra: str | None = None):
    """A tiny run folder as `rlpt train` writes it: config.yaml with the recipe, metrics.jsonl/csv."""
    run = RunDir.create(root, name, "mujoco/Hopper-v5", seed)
    run.write_config({"recipe": {"agent": "iql", "env": "mujoco/Hopper-v5", "name": name, "seed": seed,
                                 "config": {"lr": lr}}, "env": "mujoco/Hopper-v5"})
    log = MetricsLogger(run, tensorboard=False)
    for i, s in enumerate(scores):
        row = {"eval/normalized_score": s, "eval/return": 10 * s}
        if extra:
            row[extra] = 1.0
        if online:
            row["online/step"] = 100 * i
        log.log(100 * (i + 1), row)
    log.close()
    return run.path


def test_runs_differing_only_by_seed_form_one_group(tmp_path):
    a = [make_run(tmp_path, "iql", s, [s, s + 1, s + 2]) for s in range(3)]
    b = [make_run(tmp_path, "iql", s, [5, 6, 7], lr=1e-3) for s in range(2)]
    c = make_run(tmp_path, "cql", 0, [1, 2, 3])
    groups = group_runs(a + b + [c])
    assert sorted(len(v) for v in groups.values()) == [1, 2, 3]
    # the two iql recipes share a name and env: their labels name the key in which they differ
    iql = [k for k in groups if k.startswith("iql")]
    assert len(iql) == 2 and all("config.lr=" in k for k in iql)
    assert {tuple(v) for v in groups.values()} >= {tuple(a), tuple(b), (c,)}


def test_band_is_std_over_seeds_and_bootstrap_ci_contains_the_mean():
    x = np.array([1.0, 2.0, 3.0])
    curves = [(x, np.array([0.0, 1.0, 2.0])), (x, np.array([2.0, 3.0, 4.0]))]
    xs, mean, lo, hi = _group_band(curves, "std", 0.95)
    np.testing.assert_allclose(mean, [1, 2, 3])
    np.testing.assert_allclose(hi - mean, [1, 1, 1])
    _, mean, lo, hi = _group_band(curves + [(x, np.array([1.0, 2.0, 3.0]))], "ci", 0.95)
    assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(hi - lo > 0)
    # seeds logged at different steps: interpolated inside the range every seed covers
    xs, mean, _, _ = _group_band([(np.array([0.0, 10.0]), np.array([0.0, 10.0])),
                                  (np.array([5.0, 15.0]), np.array([5.0, 15.0]))], "std", 0.95)
    np.testing.assert_allclose(xs, [5, 10])
    np.testing.assert_allclose(mean, [5, 10])


def test_rlpt_plot_writes_a_png_with_one_line_per_group(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for s in range(3):
        make_run(sweep, "iql", s, [s, s + 1, s + 2, s + 3], online=True)
    other = make_run(tmp_path, "cql", 0, [1, 2, 3, 4])
    out = tmp_path / "fig" / "curves.png"
    # a folder holding run folders stands for all of them
    assert main(["plot", str(sweep), str(other), "--out", str(out), "--band", "ci"]) == 0
    text = capsys.readouterr().out
    assert "iql on mujoco/Hopper-v5: 3 run(s)" in text and "cql on mujoco/Hopper-v5: 1 run(s)" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    res = plot_runs([sweep], out=tmp_path / "r.png", metric="eval/return")
    assert len(res["groups"]) == 1 and len(next(iter(res["groups"].values()))) == 3


def test_a_missing_metric_lists_the_metrics_the_runs_have(tmp_path, capsys):
    a = make_run(tmp_path, "iql", 0, [1, 2], extra="online/success_rate")
    b = make_run(tmp_path, "iql", 1, [1, 2])
    with pytest.raises(RunError, match=r"'online/success_rate' is not logged in .*seed1.*eval/normalized_score, "
                                       r"eval/return"):
        plot_runs([a, b], out=tmp_path / "x.png", metric="online/success_rate")
    assert not (tmp_path / "x.png").exists()
    assert main(["plot", str(a), "--metric", "eval/success", "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err
    assert "rlpt: error:" in err and "eval/return" in err and "Traceback" not in err


def test_bad_run_folders_are_rejected(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        plot_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="neither a run folder"):
        plot_runs([tmp_path / "empty"])


def test_runs_with_only_metrics_csv_and_no_config_group_by_folder_name(tmp_path):
    for seed in (0, 1):
        d = tmp_path / f"bc__hopper__seed{seed}__20260101-000000"
        d.mkdir()
        with open(d / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "eval/return", "train/loss"])
            w.writerows([[100, 1 + seed, 0.5], [200, 2 + seed, ""], [300, 3 + seed, 0.1]])
    res = plot_runs([tmp_path], out=tmp_path / "c.png", metric="eval/return")
    assert res["groups"] == {"bc__hopper": [str(tmp_path / f"bc__hopper__seed{s}__20260101-000000") for s in (0, 1)]}
    assert (tmp_path / "c.png").exists()
