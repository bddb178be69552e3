"""`rlpt train`: recipes into run folders, evaluation/checkpoint chunks, resume after a kill, reports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from rlpt.data import Dataset, save_d4rl
from rlpt.errors import ConfigError
from rlpt.runs import read_metrics
from rlpt.train import load_recipe, train
from rlpt.utils import spearman


def pendulum_dataset(path: Path, n: int = 2000, seed: int = 0) -> Path:
    """Random-policy InvertedPendulum-v5 transitions in the D4RL layout, with reference scores."""
    env = gym.make("InvertedPendulum-v5")
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        a = rng.uniform(-3, 3, size=1).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in zip(rows, (obs, a, r, term, trunc, nxt), strict=True):
            rows[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    rows["timeouts"][-1] = True
    ds = Dataset(**{k: np.asarray(v, np.float32 if k not in ("terminals", "timeouts") else bool)
                    for k, v in rows.items()}, metadata={"ref_min_score": 0.0, "ref_max_score": 1000.0})
    save_d4rl(ds, path)
    return path


def write_recipe(tmp_path: Path, **changes) -> Path:
    recipe = {"agent": "bc", "env": "mujoco/InvertedPendulum-v5",
              "dataset": str(pendulum_dataset(tmp_path / "pend.hdf5")),
              "config": {"hidden": [32, 32], "batch_size": 64, "log_interval": 50},
              "offline_steps": 300, "eval_interval": 100, "eval_episodes": 1, "source": "test",
              "env_options": {"time_limit": 100}, **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_writes_a_complete_run_folder(tmp_path):
    recipe = load_recipe(str(write_recipe(tmp_path)), ["seed=1"])
    summary = train(recipe, out_root=tmp_path / "runs", quiet=True)
    run = Path(summary["run"])
    assert "-recipe__mujoco-InvertedPendulum-v5__seed1__" in run.name
    for f in ("config.yaml", "metrics.csv", "metrics.jsonl", "summary.json", "plots/learning_curve.png",
              "videos/final.mp4", "final/agent.json", "checkpoints/latest"):
        assert (run / f).exists(), f
    assert list((run / "tb").glob("events.*"))
    rows = read_metrics(run)
    evals = [r for r in rows if "eval/return" in r]
    assert [r["step"] for r in evals] == [100, 200, 300]
    assert all("eval/normalized_score" in r for r in evals)
    assert any("train/loss" in r or "train/bc_loss" in r for r in rows)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["offline_steps"] == 300 and saved["offline_score"] == evals[-1]["eval/normalized_score"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["recipe"]["seed"] == 1 and cfg["agent_config"]["hidden"] == [32, 32]


def test_train_is_reproducible_for_a_seed(tmp_path):
    path = write_recipe(tmp_path, offline_steps=100, eval_interval=100)
    a = train(load_recipe(str(path)), out_root=tmp_path / "a", quiet=True)
    b = train(load_recipe(str(path)), out_root=tmp_path / "b", quiet=True)
    assert a["offline_return"] == b["offline_return"]


def test_online_phase_after_offline(tmp_path):
    path = write_recipe(tmp_path, agent="iql", offline_steps=100, online_steps=200, online_eval_interval=100,
                        config={"hidden": [32, 32], "batch_size": 64, "log_interval": 50})
    summary = train(load_recipe(str(path)), out_root=tmp_path / "runs", quiet=True)
    assert summary["online_steps"] == 200
    online = summary["evaluations"]["online"]
    assert [e["online_step"] for e in online] == [0, 100, 200]  # one evaluation right at the switch
    assert summary["first_online_step"] == 100 and summary["first_online_score"] == online[1]["eval/normalized_score"]
    rows = read_metrics(summary["run"])
    assert max(r["step"] for r in rows) == 300 and any("online/step" in r for r in rows)


def test_bad_recipes_are_rejected(tmp_path):
    path = write_recipe(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['offline_stpes'\] for Recipe"):
        load_recipe(str(path), ["offline_stpes=3"])
    with pytest.raises(ConfigError, match="valid keys"):
        train(load_recipe(str(path), ["config.hiden=[8]"]), out_root=tmp_path / "runs", quiet=True)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe("agents/nope/nothing.yaml")


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    path = write_recipe(tmp_path, offline_steps=1000, eval_interval=100)
    out = tmp_path / "runs"
    env = {**os.environ, "RLPT_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlpt.cli", "train", str(path), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    run = None
    while time.time() < deadline:
        runs = list(out.glob("*/checkpoints/latest"))
        if runs and (runs[0].parent / runs[0].read_text().strip()).exists():
            run = runs[0].parent.parent
            break
        time.sleep(0.2)
    assert run is not None, proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int((run / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 100 <= killed_at < 1000
    summary = train(load_recipe(str(path)), out_root=out, resume=run, quiet=True)
    assert summary["run"] == str(run) and summary["offline_steps"] == 1000
    steps = [r["step"] for r in read_metrics(run) if "eval/return" in r]
    assert steps == sorted(steps) and steps[-1] == 1000  # one continuous history, no duplicates
    assert len(steps) == len(set(steps))


def test_spearman_matches_rank_definition():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(0.5)


def test_progress_goes_to_the_log_as_status_lines_when_not_on_a_terminal(tmp_path, monkeypatch, capsys):
    """Output sent to a file (stderr is not a terminal under pytest) gets one-line statuses, not silence."""
    for var in ("CI", "RLPT_QUIET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLPT_STATUS_SECONDS", "0")
    train(load_recipe(str(write_recipe(tmp_path))), out_root=tmp_path / "runs")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("bc offline: ")]
    assert lines and lines[-1].startswith("bc offline: 300/300 (100%)") and lines[-1].endswith("done")
    assert any("it/s" in ln and "ETA" in ln for ln in lines[:-1])
    monkeypatch.setenv("RLPT_QUIET", "1")  # and --quiet / CI silence it
    train(load_recipe(str(write_recipe(tmp_path))), out_root=tmp_path / "runs2")
    assert "bc offline: " not in capsys.readouterr().out


def test_unio4_run_tells_its_offline_to_online_story(tmp_path):
    config = {"critic_steps": 60, "dynamics_steps": 40, "bc_steps": 60, "improve_steps": 40, "batch_size": 64,
              "q_hidden": [32, 32], "v_hidden": [32, 32], "policy_hidden": [32, 32], "ensemble_size": 2,
              "dynamics_ensemble_size": 2, "dynamics_elites": 1, "dynamics_hidden": [32], "ope_interval": 20,
              "ope_start_states": 16, "ope_horizon": 5, "report_true_returns": True, "report_episodes": 1,
              "online_rollout_steps": 100, "online_minibatch": 50, "online_epochs": 1}
    path = write_recipe(tmp_path, agent="unio4", offline_steps="auto", eval_interval=1000, online_steps=200,
                        online_eval_interval=100, config=config)
    summary = train(load_recipe(str(path)), out_root=tmp_path / "runs", quiet=True)
    ope = summary["ope"]
    assert len(ope["bc_members"]) == 2 and ope["accepted"][0][0] == 160  # every BC policy is accepted first
    assert summary["dataset_score"] is not None and "best BC member" in summary["story"]
    assert "online" in summary["story"] and Path(summary["story_plot"]).stat().st_size > 10_000
    assert summary["success_plot"] is None  # InvertedPendulum reports no success
    assert "eval/success_rate" not in summary["evaluations"]["offline"][-1]


def test_ope_noise_command_reports_noise_beside_the_spread_of_iterate_scores(tmp_path, monkeypatch, capsys):
    from rlpt.cli import main

    config = {"critic_steps": 60, "dynamics_steps": 40, "bc_steps": 60, "improve_steps": 60, "batch_size": 64,
              "q_hidden": [32, 32], "v_hidden": [32, 32], "policy_hidden": [32, 32], "ensemble_size": 2,
              "dynamics_ensemble_size": 2, "dynamics_elites": 1, "dynamics_hidden": [32], "ope_interval": 20,
              "ope_start_states": 16, "ope_horizon": 5}
    path = write_recipe(tmp_path, agent="unio4", offline_steps="auto", eval_interval=1000, config=config)
    summary = train(load_recipe(str(path)), out_root=tmp_path / "runs", quiet=True)
    capsys.readouterr()
    assert main(["ope", "noise", summary["run"], "--repeats", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["noise_sd"] > 0 and len(report["noise_sd_per_member"]) == 2
    assert report["iterates"] == 8 and report["iterate_scores_sd"] > 0  # 4 scorings x 2 members
    assert report["signal_to_noise"] == pytest.approx(report["iterate_scores_sd"] / report["noise_sd"])
    assert json.loads((Path(summary["run"]) / "ope_noise.json").read_text())["repeats"] == 3
    assert main(["ope", "noise", str(tmp_path)]) != 0  # not a run folder: a one-line error, no traceback


def test_quickstart_shows_progress_and_its_story_in_a_log(tmp_path, monkeypatch, capsys):
    """`rlpt quickstart > log`: one-line statuses for both phases, then the story line (tiny budgets here)."""
    from rlpt.quickstart import quickstart

    for var in ("CI", "RLPT_QUIET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLPT_STATUS_SECONDS", "0")
    data = pendulum_dataset(tmp_path / "pend.hdf5")
    tiny = {"critic_steps": 60, "dynamics_steps": 40, "bc_steps": 60, "improve_steps": 40, "ope_interval": 20,
            "q_hidden": [32, 32], "v_hidden": [32, 32], "policy_hidden": [32, 32], "dynamics_hidden": [32],
            "ope_start_states": 16, "ope_horizon": 5, "ope_noise_repeats": 2, "termination_fn": "none",
            "online_rollout_steps": 100, "online_minibatch": 50, "online_epochs": 1, "log_interval": 20}
    brief = quickstart(out_root=tmp_path / "runs", overrides=[
        f"dataset={data}", "env=mujoco/InvertedPendulum-v5", "online_steps=200", "online_eval_interval=100",
        "eval_episodes=1", "video_steps=0", *[f"config.{k}={json.dumps(v)}" for k, v in tiny.items()]])
    out = capsys.readouterr().out
    assert "unio4 offline: 200/200 (100%)" in out and "unio4 online: 200/200 (100%)" in out
    assert brief["story"] in out and "best BC member" in brief["story"] and brief["best_bc_member"] is not None
    assert Path(brief["plot"]).name == "offline_to_online.png"


def test_train_online_on_a_vector_env_from_env_options(tmp_path):
    """`env_options.num_envs` (and `backend`, `device`) make the training env a vector env; evaluation stays one
    CPU env. PPO from scratch, 4 worlds of InvertedPendulum."""
    path = write_recipe(tmp_path, agent="ppo", dataset=None, offline_steps=0, online_steps=512,
                        online_eval_interval=256, config={"rollout_steps": 128, "minibatch": 64, "epochs": 2,
                                                          "hidden": [16, 16]},
                        env_options={"time_limit": 100, "num_envs": 4, "backend": "gymnasium", "device": "cpu"})
    summary = train(load_recipe(str(path)), out_root=tmp_path / "runs", quiet=True)
    rows = [r for r in read_metrics(Path(summary["run"])) if r.get("online/policy_loss") is not None]
    assert rows and np.isfinite(summary["online_score"])
    saved = yaml.safe_load((Path(summary["run"]) / "config.yaml").read_text())
    assert saved["recipe"]["env_options"]["num_envs"] == 4
    with pytest.raises(ConfigError, match="vector env"):
        bad = write_recipe(tmp_path, reward={"model": {"type": "env"}},
                           env_options={"num_envs": 2, "device": "cpu"})
        train(load_recipe(str(bad)), out_root=tmp_path / "runs2", quiet=True)
