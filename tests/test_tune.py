"""Ray Tune sweeps (`rlpt tune`) and RLlib agents: small recipes, Ray bounded to 2 CPUs and a private temp folder."""

import csv
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("ray.rllib")

from test_train import pendulum_dataset  # noqa: E402  (tests/ is on sys.path under pytest)

from rlpt.errors import ConfigError  # noqa: E402
from rlpt.train import load_recipe, train  # noqa: E402
from rlpt.tune import (  # noqa: E402
    TrialSpec,
    init_ray,
    parse_space,
    read_pointer,
    run_trial,
    to_param_space,
    tune_recipe,
    write_best_config,
)

SPACE = {"config.lr": {"type": "grid", "values": [1.0e-3, 3.0e-3]}}


@pytest.fixture(scope="module")
def ray_env():
    """Token auth as Ray 2.60 does it by default, with a token of our own (nothing written to ~/.ray).

    RAY_AUTH_MODE stays unset here: `import ray` already cached it, and a local `ray.init()` switches this
    process to token mode itself (the subprocesses below get RAY_AUTH_MODE=token)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_AUTH_MODE", raising=False)  # restored (unset) afterwards, although ray.init sets it
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        mp.setenv("RLPT_QUIET", "1")
        yield


@pytest.fixture(scope="module")
def ray_local(ray_env):
    import ray

    temp = tempfile.mkdtemp(prefix="rlpt-t-", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        init_ray(num_cpus=2, object_store_mb=128, temp_dir=temp)
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    """BC on 1000 random InvertedPendulum transitions: 200 updates, an evaluation (1 short episode) per 100."""
    root = tmp_path_factory.mktemp("tune")
    recipe = {"agent": "bc", "env": "mujoco/InvertedPendulum-v5",
              "dataset": str(pendulum_dataset(root / "pend.hdf5", n=1000)),
              "config": {"hidden": [16, 16], "batch_size": 32, "log_interval": 50},
              "offline_steps": 200, "eval_interval": 100, "eval_episodes": 1, "source": "test", "video_steps": 0,
              "env_options": {"time_limit": 50}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_search_space_parsing_and_errors():
    recipe = {"agent": "iql", "env": "mujoco/Hopper-v5"}
    space = parse_space({"config.actor_lr": {"type": "loguniform", "low": "1e-4", "high": 1e-3},
                         "config.expectile": {"type": "uniform", "low": 0.6, "high": 0.9},
                         "config.batch_size": {"type": "choice", "values": [128, 256]},
                         "config.hidden": {"type": "choice", "values": [[64, 64], [256, 256]]},
                         "config.log_interval": {"type": "randint", "low": 1, "high": 5},
                         "seed": {"type": "grid", "values": [0, 1]}}, "s", recipe)
    assert space["config.actor_lr"] == {"type": "loguniform", "low": 1e-4, "high": 1e-3}  # "1e-4": YAML's string
    params = to_param_space(space)
    assert params["seed"] == {"grid_search": [0, 1]}
    assert 1e-4 <= params["config.actor_lr"].sample() <= 1e-3
    assert params["config.hidden"].sample() in ([64, 64], [256, 256])
    bad = [({"config.actor_lr": {"type": "normal", "low": 0, "high": 1}}, "unknown type 'normal'"),
           ({"config.actor_lr": {"type": "uniform", "low": 0.1}}, r"missing \['high'\]"),
           ({"config.actor_lr": {"type": "uniform", "low": 1, "high": 1}}, "must be below high"),
           ({"config.actor_lr": {"type": "loguniform", "low": 0, "high": 1}}, "needs low > 0"),
           ({"config.actor_lr": {"type": "uniform", "low": "a", "high": 1}}, "expected a number"),
           ({"config.batch_size": {"type": "randint", "low": 1.5, "high": 4}}, "expected an integer"),
           ({"config.batch_size": {"type": "choice", "values": []}}, "non-empty list"),
           ({"config.batch_size": {"type": "choice", "values": [1], "q": 2}}, r"unknown field\(s\) \['q'\]"),
           ({"config.batch_size": [1, 2]}, "expected a mapping with a 'type'"),
           ({"lr": {"type": "grid", "values": [1]}}, "'lr' is not a recipe key"),
           ({"config.alpha_bc": {"type": "grid", "values": [1]}}, "IQLConfig .* has no field 'alpha_bc'"),
           ({}, "non-empty mapping")]
    for data, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            parse_space(data, "s", recipe)


def test_tune_cli_arguments():
    from rlpt.cli import build_parser

    a = build_parser().parse_args(["tune", "r.yaml", "online_steps=0", "--space", "s.yaml", "--num-samples", "3",
                                   "--scheduler", "asha", "--address", "10.0.0.1:6379"])
    assert (a.recipe, a.space, a.num_samples, a.scheduler, a.address, a.overrides) == (
        "r.yaml", "s.yaml", 3, "asha", "10.0.0.1:6379", ["online_steps=0"])
    assert (a.metric, a.mode, a.out) == ("eval/normalized_score", "max", "runs/tune")


def test_best_config_is_a_loadable_recipe(tmp_path, tiny_recipe):
    data = yaml.safe_load(tiny_recipe.read_text())
    data["name"] = "tiny"
    path = write_best_config(data, {"config.lr": np.float64(2e-3), "seed": np.int64(3)}, tmp_path / "best.yaml",
                             metric="eval/return", value=1.0, trial="t0", run=None, sweep="s")
    r = load_recipe(str(path))
    assert r.config["lr"] == 2e-3 and r.seed == 3 and r.name == "tiny-best" and r.config["hidden"] == [16, 16]


def test_embedded_sweep_writes_results_and_a_reproducible_best_config(tmp_path, ray_local, tiny_recipe):
    res = tune_recipe(str(tiny_recipe), SPACE, num_samples=1, out=tmp_path / "out", name="sweep", quiet=True,
                      metric="eval/normalized_score", scheduler="fifo")
    rows = res["rows"]
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows), rows
    assert {r["config.lr"] for r in rows} == {1e-3, 3e-3}
    assert all(r["evaluations"] == 2 and r["rlpt/step"] == 200 for r in rows)
    assert rows[0]["eval/normalized_score"] >= rows[1]["eval/normalized_score"]
    lines = (Path(res["results_csv"])).read_text().splitlines()
    assert lines[0].startswith("trial,status,config.lr,eval/normalized_score") and len(lines) == 3
    run = Path(rows[0]["run"])
    assert (run / "summary.json").exists() and (run / "final" / "agent.json").exists()
    # best_config.yaml reproduces the best trial
    best = load_recipe(res["best_config"])
    trial_recipe = yaml.safe_load((run / "config.yaml").read_text())["recipe"]
    assert {**trial_recipe, "name": best.name} == dataclasses.asdict(best)
    again = train(best, out_root=tmp_path / "again", quiet=True)
    assert again["offline_score"] == rows[0]["eval/normalized_score"]


def _fail_on_second_report(marker: str):
    def hook(metrics):
        with open(marker + ".steps", "a") as f:
            f.write(f"{metrics['rlpt/step']}\n")
        if metrics["rlpt/step"] == 200 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("simulated kill after the step-100 checkpoint")
    return hook


def _flaky_trainable(config, spec: TrialSpec):
    run_trial(config, spec, on_report=_fail_on_second_report(str(Path(spec.runs_root).parent / "killed")))


def test_killed_trial_resumes_from_its_rlpt_checkpoint(tmp_path, ray_local, tiny_recipe):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    res = tune_recipe(str(tiny_recipe), {"config.lr": {"type": "grid", "values": [1e-3]}}, num_samples=1,
                      out=tmp_path / "out", name="flaky", quiet=True, max_failures=1, trainable=_flaky_trainable,
                      overrides=["offline_steps=300"])
    exp = Path(res["experiment"])
    assert (exp / "killed").exists()  # the first attempt died at its second evaluation
    # attempt 1 reported steps 100, 200; attempt 2 resumed from the step-100 rlpt checkpoint: 200, 300
    assert (exp / "killed.steps").read_text().split() == ["100", "200", "200", "300"]
    [row] = res["rows"]
    assert row["status"] == "done" and row["rlpt/step"] == 300
    runs = list((exp / "runs").glob("*/*/config.yaml"))
    assert len(runs) == 1 and str(runs[0].parent) == row["run"]  # one run folder, continued in place
    summary = json.loads((runs[0].parent / "summary.json").read_text())
    assert summary["offline_steps"] == 300
    steps = [json.loads(line)["step"] for line in (runs[0].parent / "metrics.jsonl").read_text().splitlines()
             if "eval/return" in line]
    assert steps == [100, 200, 300]
    assert read_pointer(next(exp.glob("*/checkpoint_*")))["run"] == row["run"]


def test_rllib_ppo_through_the_agent_protocol_and_rlpt_train(tmp_path, ray_local):
    import rlpt
    from rlpt.agents.rllib import RLlibPPO, make_rllib_env
    from rlpt.rewards.wrapper import RewardWrapper

    # the env creator RLlib's EnvRunners call: make_env plus the recipe's reward wrapper
    wrapped = make_rllib_env({"spec": "tabletop/reach", "reward": {"model": {"type": "ground_truth"}, "mode": "add"},
                              "seed": 1})
    assert isinstance(wrapped, RewardWrapper)
    wrapped.close()
    recipe = {"agent": "rllib_ppo", "env": "mujoco/InvertedPendulum-v5", "online_steps": 100,
              "online_eval_interval": 100, "eval_episodes": 1, "video_steps": 0, "source": "test",
              "env_options": {"time_limit": 50},
              "config": {"train_batch_size": 100, "minibatch_size": 50, "num_epochs": 1, "hidden": [16, 16]}}
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = train(load_recipe(str(path)), out_root=tmp_path / "runs", quiet=True)
    assert summary["online_steps"] == 100 and summary["online_return"] is not None  # one algo.train() iteration
    run = Path(summary["run"])
    assert (run / "final" / "rllib" / "rllib_checkpoint.json").exists()
    agent = rlpt.load(run / "final")
    assert isinstance(agent, RLlibPPO) and agent.online_steps == 100
    obs = np.zeros(4, np.float32)
    a1, _ = agent.predict(obs)
    assert a1.shape == (1,) and np.array_equal(a1, agent.predict(obs)[0])  # deterministic forward
    assert np.all(np.abs(a1) <= 3.0)
    # resumes RLlib's training state from the checkpoint's rllib/ folder and continues counting
    from rlpt.envs import make_env

    env = make_env("mujoco/InvertedPendulum-v5", seed=0, time_limit=50)
    agent.learn(env, 100)
    assert agent.online_steps == 200 and agent.iterations == 2
    agent.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sweep_against_a_ray_head_node(tmp_path, ray_env, tiny_recipe):
    import ray

    if ray.is_initialized():  # the embedded instance of the other tests
        ray.shutdown()
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="rlpt-h-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # both sides use the fixture's RAY_AUTH_TOKEN
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         f"--object-store-memory={128 * 2**20}", f"--temp-dir={temp}", "--include-dashboard=false", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    try:
        deadline, log = time.time() + 120, []
        while time.time() < deadline:
            line = head.stdout.readline()
            log.append(line)
            if "Ray runtime started" in line or head.poll() is not None:
                break
        assert head.poll() is None, "".join(log)
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(SPACE))
        out = subprocess.run(
            [sys.executable, "-m", "rlpt.cli", "--quiet", "tune", str(tiny_recipe), "--space", str(space),
             "--num-samples", "1", "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"),
             "--name", "cluster"], capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        exp = tmp_path / "out" / "cluster"
        rows = list(csv.DictReader((exp / "results.csv").open()))
        assert len(rows) == 2 and all(r["status"] == "done" for r in rows), rows
        assert load_recipe(str(exp / "best_config.yaml")).config["lr"] in (1e-3, 3e-3)
        assert "best config:" in out.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head's own process group only
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
