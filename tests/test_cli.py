"""The `rlpt` command: dataset generation, info, conversion, env listing, and clean error reporting."""

import json

import h5py
import numpy as np
import pytest

from rlpt.cli import main
from rlpt.collect.behavior import load_manifest
from rlpt.collect.generate import _locomotion_plan, parse_name
from rlpt.data import load_d4rl
from rlpt.errors import ConfigError


def test_data_make_writes_d4rl_layout_and_info_reports_it(tmp_path, capsys):
    out = tmp_path / "hmr.hdf5"
    assert main(["--quiet", "data", "make", "hopper-medium-replay-v5", "--size", "1500", "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:  # plain h5py reads the D4RL layout
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
            assert key in f
        n = f["observations"].shape[0]
        assert f["observations"].shape == (n, 11) and f["actions"].shape == (n, 3)
        assert f["terminals"].dtype == np.bool_
    assert n == 1500
    ds = load_d4rl(out)
    assert ds.metadata["ref_max_score"] > ds.metadata["ref_min_score"]
    # consecutive rows inside an episode chain: s'[i] == s[i+1]
    inside = np.flatnonzero(~(ds.terminals | ds.timeouts))[:-1]
    np.testing.assert_allclose(ds.next_observations[inside], ds.observations[inside + 1])
    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["transitions"] == 1500 and info["episodes"] == ds.num_episodes
    assert info["normalized_score_mean"] is not None
    np.testing.assert_allclose(info["return_mean"], ds.episode_returns().mean(), rtol=1e-5)
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "transitions 1,500" in text and "normalized score" in text and "mean return" not in text.lower()[:0]


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"])
def test_medium_replay_plan_follows_the_training_buffer(env_id):
    import gymnasium as gym

    manifest, folder = load_manifest(env_id)
    space = gym.make(env_id).action_space
    plan = _locomotion_plan("medium-replay", manifest, folder, space, seed=0, size=None)
    # one share per training stretch, summing to the steps trained up to the medium snapshot
    assert sum(n for _, _, n in plan) == manifest["medium"]["step"]
    # SAC's warm-up steps were uniform random actions; PPO's first rollouts came from the initial policy
    first = "uniform random" if manifest.get("learning_starts", 0) else "snapshot step 0"
    assert plan[0][0].startswith(first)
    assert manifest["expert_return"] > manifest["medium"]["mean_return"] > manifest["random_return"]
    expert = _locomotion_plan("medium-expert", manifest, folder, space, seed=0, size=1000)
    assert [n for _, _, n in expert] == [500, 500]


def test_unknown_dataset_name_lists_valid_names():
    with pytest.raises(ConfigError, match="hopper-medium-replay-v5"):
        parse_name("hopper-mediocre-v5")


def test_cli_prints_errors_without_traceback(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.hdf5")]) == 2
    err = capsys.readouterr().err
    assert "missing.hdf5" in err and "Traceback" not in err
    assert main(["data", "make", "walker2d-expertish-v5", "--out", str(tmp_path / "x.hdf5")]) == 2


def test_env_list_shows_the_catalog(capsys):
    assert main(["env", "list"]) == 0
    out = capsys.readouterr().out
    assert "mujoco/Hopper-v5" in out and "dmc/cheetah-run" in out


def test_data_convert_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    src = tmp_path / "h.hdf5"
    assert main(["--quiet", "data", "make", "hopper-random-v5", "--size", "600", "--out", str(src)]) == 0
    assert main(["data", "convert", str(src), "rlpt/hopper/random-v0"]) == 0
    back = tmp_path / "back.hdf5"
    assert main(["data", "convert", "rlpt/hopper/random-v0", str(back)]) == 0
    a, b = load_d4rl(src), load_d4rl(back)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.terminals, b.terminals)


def test_cli_never_prints_a_traceback_without_debug(tmp_path, capsys, monkeypatch):
    import rlpt.cli

    d = tmp_path / "a_folder.yaml"
    d.mkdir()
    assert main(["env", "check", str(d)]) == 2  # a folder where a file is expected: OSError, one line
    err = capsys.readouterr().err
    assert err.startswith("rlpt: error:") and "Traceback" not in err

    def boom(args):
        raise ValueError("an unexpected bug")

    monkeypatch.setattr(rlpt.cli, "cmd_robot_check", boom)
    assert main(["robot", "check", "whatever.yaml"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: an unexpected bug" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ValueError):
        main(["--debug", "robot", "check", "whatever.yaml"])


def test_version_prints_the_package_version(capsys):
    import rlpt

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlpt {rlpt.__version__}"


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_help_texts_hold_no_measured_speeds_or_internal_notes():
    """--help says roughly how long a command takes ("minutes on a laptop CPU"), never a measurement from one
    machine or a note about how the project was built."""
    import re

    from rlpt.cli import build_parser

    measured = re.compile(r"\d\s*(ms|s|min)\b|updates/s|it/s|~\s*\d|\b\d+(\.\d+)?x\b|\bH[12]00\b|issue[- #]?\d|"
                          r"\d-core|benchmarks/results|project's", re.IGNORECASE)
    texts = []
    for parser in _all_parsers(build_parser()):
        texts += [parser.description or ""] + [a.help or "" for a in parser._actions]
        texts += [c.help or "" for a in parser._actions for c in getattr(a, "_choices_actions", [])]
    assert len(texts) > 100  # every command's description and option help was seen
    bad = [t for t in texts if measured.search(t)]
    assert not bad, bad
