"""rlpt.eval: evaluating callables, SB3 models and rlpt agents; videos; learning-curve plots; `rlpt eval`."""

import json

import gymnasium as gym
import numpy as np
import pytest

from rlpt.cli import main
from rlpt.eval import evaluate, plot_learning_curve
from rlpt.media import read_video
from rlpt.runs import MetricsLogger, RunDir

ENV = "mujoco/InvertedPendulum-v5"


def test_evaluate_a_callable_with_scores_and_video(tmp_path):
    res = evaluate(lambda obs: np.zeros(1, np.float32), ENV, episodes=3, seed=0, ref_scores=(0.0, 1000.0),
                   video_path=tmp_path / "ep.mp4", env_options={"time_limit": 50})
    assert len(res.returns) == 3 and all(length <= 50 for length in res.lengths)
    np.testing.assert_allclose(res.normalized_scores, [r / 10.0 for r in res.returns])
    frames = read_video(res.video)
    assert frames.shape[1:] == (64, 64, 3) and len(frames) == res.lengths[0] + 1
    m = res.metrics()
    assert m["eval/return"] == pytest.approx(np.mean(res.returns)) and "eval/normalized_score" in m


def test_same_seed_same_returns_and_policies_differ():
    zero = evaluate(lambda obs: np.zeros(1, np.float32), ENV, episodes=2, seed=3)
    again = evaluate(lambda obs: np.zeros(1, np.float32), ENV, episodes=2, seed=3)
    push = evaluate(lambda obs: np.full(1, 3.0, np.float32), ENV, episodes=2, seed=3)
    assert zero.returns == again.returns
    assert push.mean_return < zero.mean_return  # pushing the cart hard drops the pole sooner


def test_evaluate_an_sb3_model():
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("InvertedPendulum-v5"), n_steps=64, seed=0, device="cpu")
    res = evaluate(model, ENV, episodes=2, seed=0)
    assert len(res.returns) == 2 and res.success_rate is None  # InvertedPendulum has no success predicate
    assert "eval/success_rate" not in res.metrics()


def test_success_rate_only_for_tasks_that_report_success():
    from rlpt.envs.tabletop import TabletopEnv

    res = evaluate(lambda obs: np.zeros(4, np.float32), TabletopEnv("reach"), episodes=1, seed=0)
    assert res.success_rate in (0.0, 1.0) and "eval/success_rate" in res.metrics()


def test_evaluate_rejects_non_policies():
    with pytest.raises(TypeError, match="predict"):
        evaluate(42, ENV, episodes=1)


def test_learning_curve_covers_offline_and_online(tmp_path):
    run = RunDir.create(tmp_path, "r", "e", 0)
    run.write_config({})
    log = MetricsLogger(run, tensorboard=False)
    for step in (100, 200, 300):
        log.log(step, {"eval/normalized_score": step / 10, "eval/normalized_score_std": 1.0, "ope/score": step})
    for online in (0, 1000, 2000):
        log.log(300 + online, {"eval/normalized_score": 30 + online / 100, "online/step": online})
    log.close()
    png = plot_learning_curve(run.path)
    assert png.exists() and png.stat().st_size > 5000
    with pytest.raises(ValueError, match="none of"):
        plot_learning_curve(run.path, keys=("eval/nothing",))


def test_rlpt_eval_on_a_checkpoint(tmp_path, capsys):
    from rlpt.agents import BCConfig

    env = gym.make("InvertedPendulum-v5")
    agent = BCConfig(hidden=(8,)).create(env.observation_space, env.action_space, device="cpu")
    agent.save(tmp_path / "ckpt")
    video = tmp_path / "e.mp4"
    assert main(["eval", str(tmp_path / "ckpt"), "--env", ENV, "--episodes", "2", "--video", str(video)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == ENV and "return" in out and video.exists()
    assert main(["eval", str(tmp_path / "ckpt"), "--episodes", "1"]) == 2  # no env known: a clear error


def test_bootstrap_intervals_cover_the_difference_and_separate_distinct_arms():
    from rlpt.eval.stats import bootstrap_ci, bootstrap_diff_ci, mean_std

    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 8), rng.normal(0, 1, 8)
    lo, hi = bootstrap_ci(a)
    assert lo < a.mean() < hi and hi - lo < 2
    d = bootstrap_diff_ci(a, b)
    assert 5 < d["low"] < d["diff"] < d["high"] < 15
    same = bootstrap_diff_ci(a, a + rng.normal(0, 0.1, 8), paired=True)
    assert same["low"] < 0 < same["high"]  # no difference: the interval straddles 0
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2}
    with pytest.raises(ValueError):
        bootstrap_ci([1.0])


def test_iqm_resists_an_outlying_seed_and_matches_scipy_trim_mean():
    from rlpt.eval.stats import bootstrap_ci, describe, iqm

    values = [0.50, 0.52, 0.48, 0.51, 5.0]  # one run blew up
    assert iqm(values) == pytest.approx(np.mean([0.50, 0.51, 0.52]))  # floor(5/4) = 1 dropped from each end
    assert iqm([1.0, 2.0, 3.0]) == 2.0  # below 4 values nothing is dropped
    assert iqm(list(range(8))) == pytest.approx(3.5)  # 2 dropped from each end
    d = describe(values)
    assert d["n"] == 5 and d["iqm"] < 0.6 < d["mean"]
    assert d["iqm_ci"][0] <= d["iqm"] <= d["iqm_ci"][1] and d["mean_ci"][0] <= d["mean"] <= d["mean_ci"][1]
    assert describe([0.3])["mean_ci"] is None  # one seed: no interval
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_ci(values, stat="median")


def test_ratio_interval_and_aggregated_curves():
    from rlpt.eval.stats import aggregate_curves, bootstrap_ratio_ci

    fast, slow = [1000.0, 1200.0, 900.0, 1100.0, 1000.0], [4000.0, 3800.0, 4200.0, 4100.0, 3900.0]
    r = bootstrap_ratio_ci(fast, slow, paired=True)
    assert r["ratio"] == pytest.approx(5200 / 20000) and r["low"] < r["ratio"] < r["high"] < 0.5
    with pytest.raises(ValueError, match="denominator"):
        bootstrap_ratio_ci(fast, [0.0, 0.0])
    curves = [{0: 0.0, 500: 0.2, 1000: 0.6}, {0: 0.1, 500: 0.4, 1000: 0.8, 1500: 0.9}]
    agg = aggregate_curves(curves)
    assert agg["steps"] == [0, 500, 1000]  # steps every seed has
    assert agg["mean"] == pytest.approx([0.05, 0.3, 0.7])
    assert all(lo <= m <= hi for lo, m, hi in zip(agg["low"], agg["mean"], agg["high"], strict=True))
    one = aggregate_curves(curves[:1])
    assert one["low"] == one["mean"] == one["high"]


def test_sample_std_and_arms_compared_on_the_seeds_they_share():
    from rlpt.eval.stats import describe, diff_by_seed, mean_std

    assert mean_std([1.0, 3.0], ddof=1)["std"] == pytest.approx(np.sqrt(2.0))
    assert mean_std([2.0], ddof=1)["std"] == 0.0  # one value: no spread, not nan
    d = describe([1.0, 3.0, None, float("nan")], ddof=1)
    assert d["n"] == 2 and d["ddof"] == 1 and d["std"] == pytest.approx(np.sqrt(2.0))
    treated = {0: 5.0, 1: 7.0, 2: 6.0, 3: 9.0}  # seed 3 has no control run
    control = {0: 4.0, 1: 6.1, 2: 4.9, 4: 0.0}
    c = diff_by_seed(treated, control)
    assert c["paired"] and c["seeds"] == [0, 1, 2] and c["n"] == 3
    assert c["diff"] == pytest.approx(1.0) and 0.8 < c["low"] <= c["diff"] <= c["high"] < 1.2
    unpaired = diff_by_seed({0: 1.0, 1: 2.0}, {5: 0.0, 6: 0.5, 7: None})  # no shared seed: each arm on its own
    assert not unpaired["paired"] and unpaired["n"] == [2, 2] and unpaired["diff"] == pytest.approx(1.25)
    assert diff_by_seed({0: 1.0}, control) is None  # one value: no interval
