"""RoboFuME's success classifier: labelling rule, episode split, calibration, training, checkpoints, the
RewardModel seam and the CLI (tiny budgets; the whole file runs in well under a minute on one core)."""

import json

import numpy as np
import pytest
import torch

from rlpt.data.dataset import Dataset
from rlpt.errors import CheckpointError, ConfigError, RlptError
from rlpt.rewards import RewardQuery, RewardWrapper, relabel
from rlpt.rewards.classifier import (
    ClassifierData,
    SuccessClassifier,
    SuccessClassifierReward,
    binary_metrics,
    calibrate_threshold,
    collect_classifier_data,
    evaluate_on_rollouts,
    labels_from_dataset,
    random_shift,
    recipe_labels,
    split_episodes,
    train_classifier,
)

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_data(n_success: int = 16, n_failure: int = 16, length: int = 14, seed: int = 0) -> ClassifierData:
    """Noisy frames; a red square appears (at a random place) in the success frames of successful episodes."""
    rng = np.random.default_rng(seed)
    images, labels, episodes, success = [], [], [], []
    for ep in range(n_success + n_failure):
        flags = np.zeros(length, bool)
        if ep < n_success:
            flags[length - 3:] = True
        for f in flags:
            im = rng.integers(0, 90, (SIZE, SIZE, 3)).astype(np.uint8)
            if f:
                y, x = rng.integers(0, SIZE - 10, 2)
                im[y:y + 10, x:x + 10] = (230, 20, 20)
            images.append(im)
        labels.append(recipe_labels(flags))
        episodes.append(np.full(length, ep))
        success.append(flags)
    return ClassifierData(np.stack(images), np.concatenate(labels), np.concatenate(episodes),
                          np.concatenate(success), {"task": "reach", "camera": "front", "image_size": SIZE})


@pytest.fixture(scope="module")
def trained() -> SuccessClassifier:
    torch.set_num_threads(1)
    return train_classifier(synthetic_data(), steps=150, batch_size=32, lr=1e-3, seed=0, device="cpu", quiet=True)


# ------------------------------------------------------------------------------------------ labels
def test_recipe_labels_exact_indices():
    flags = np.zeros(20, bool)
    flags[17:] = True  # a demo that ends 2 frames after its first success
    lab = recipe_labels(flags)
    assert np.flatnonzero(lab == 1).tolist() == [17, 18, 19]
    assert np.flatnonzero(lab == -1).tolist() == list(range(7, 17))
    assert np.flatnonzero(lab == 0).tolist() == list(range(7))
    assert (recipe_labels(np.zeros(9, bool)) == 0).all()  # a failure: all negatives
    # success early: fewer than 10 frames before it are dropped, none negative
    assert recipe_labels([0, 0, 0, 1, 1, 1]).tolist() == [-1, -1, -1, 1, 1, 1]
    # an episode that goes on after the demo's end: frames past it are dropped; a lost success is not positive
    long = np.r_[np.zeros(12, bool), [True, False, True], np.ones(5, bool)]
    lab = recipe_labels(long, n_pos=3, n_drop=2)
    assert np.flatnonzero(lab == 1).tolist() == [12, 14]
    assert np.flatnonzero(lab == 0).tolist() == list(range(10))
    assert np.flatnonzero(lab == -1).tolist() == [10, 11, 13, *range(15, 20)]
    with pytest.raises(ConfigError, match="n_pos"):
        recipe_labels(flags, n_pos=0)


def test_labels_from_dataset_aligns_success_with_frames():
    n = 30  # episode 0: 18 rows, success after row 14's step (frame 15 on); episode 1: 12 rows, a failure
    succ = np.zeros(n, bool)
    succ[14:18] = True
    timeouts = np.zeros(n, bool)
    timeouts[[17, 29]] = True
    images = np.zeros((n, 8, 8, 3), np.uint8)
    ds = Dataset(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
                 np.zeros(n, bool), timeouts, images=images, infos={"success": succ},
                 metadata={"env_id": "tabletop/push"})
    d = labels_from_dataset(ds)
    assert np.flatnonzero(d.labels == 1).tolist() == [15, 16, 17]
    assert np.flatnonzero(d.labels == -1).tolist() == list(range(5, 15))
    assert (d.labels[:5] == 0).all() and (d.labels[18:] == 0).all()
    assert d.success[15:18].all() and not d.success[:15].any()
    assert d.episodes.tolist() == [0] * 18 + [1] * 12
    assert d.metadata["task"] == "push"
    framewise = labels_from_dataset(ds, success_of="frame")
    assert np.flatnonzero(framewise.labels == 1).tolist() == [14, 15, 16]
    ds_no_images = Dataset(ds.observations, ds.actions, ds.rewards, ds.terminals, ds.timeouts, infos=ds.infos)
    with pytest.raises(ConfigError, match="no images"):
        labels_from_dataset(ds_no_images)
    with pytest.raises(ConfigError, match="infos"):
        labels_from_dataset(ds, success_key="is_success")


def test_split_is_by_episode_with_both_classes_held_out():
    d = synthetic_data(n_success=10, n_failure=15, length=6)
    train, held = split_episodes(d.episodes, 0.2, seed=3, labels=d.labels)
    assert (train ^ held).all()
    assert not set(d.episodes[train]) & set(d.episodes[held])
    assert len(np.unique(d.episodes[held])) == 5
    assert (d.labels[held] == 1).any() and (d.labels[held] == 0).any()
    assert (d.labels[train] == 1).any() and (d.labels[train] == 0).any()


def test_calibration_respects_fp_target_and_keeps_most_positives():
    rng = np.random.default_rng(0)
    neg = rng.uniform(0.0, 0.8, 200)
    pos = rng.uniform(0.5, 1.0, 50)
    probs, labels = np.r_[neg, pos], np.r_[np.zeros(200, int), np.ones(50, int)]
    t = calibrate_threshold(probs, labels, fp_target=0.05)
    m = binary_metrics(probs, labels, t)
    assert m["fp"] <= 10 and m["fp_rate"] <= 0.05
    # any threshold below the 11th-largest negative lets through more than 10 negatives
    assert binary_metrics(probs, labels, np.sort(neg)[::-1][10] - 1e-9)["fp"] > 10
    # the threshold sits in the middle of the gap: the counts at t equal those at the 11th-largest negative
    assert binary_metrics(probs, labels, np.sort(neg)[::-1][10])["tp"] == m["tp"]
    # perfectly separated scores: no FP, no FN, threshold between the classes
    t2 = calibrate_threshold([0.1, 0.2, 0.9, 0.95], [0, 0, 1, 1], fp_target=0.0)
    assert t2 == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="negative"):
        calibrate_threshold([0.9], [1])


def test_random_shift_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.equal(random_shift(x, 0), x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):  # each output is an 8x8 crop of its own padded image
        assert any(torch.equal(y[i], padded[i, :, oy:oy + 8, ox:ox + 8]) for oy in range(5) for ox in range(5))


# ---------------------------------------------------------------------------------------- training
def test_classifier_learns_a_tiny_problem(trained):
    r = trained.report
    assert r["heldout"]["accuracy"] > 0.8
    assert r["heldout"]["balanced_accuracy"] > 0.8
    assert r["heldout"]["fp_rate"] <= 0.05
    assert r["split"]["heldout_episodes"] > 0 and r["split"]["train_episodes"] > 0
    fresh = synthetic_data(4, 4, seed=7)
    pred = trained.predict(fresh.images)
    assert (pred == fresh.success).mean() > 0.8


def test_training_needs_both_classes():
    d = synthetic_data(0, 6, length=5)
    with pytest.raises(RlptError, match="positive"):
        train_classifier(d, steps=2, quiet=True)


def test_save_load_gives_identical_probabilities(trained, tmp_path):
    trained.save(tmp_path / "clf")
    cfg = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert cfg["task"] == "reach" and cfg["image_size"] == SIZE and cfg["threshold"] == trained.threshold
    assert "heldout" in cfg["report"]
    loaded = SuccessClassifier.load(tmp_path / "clf", device="cpu")
    images = synthetic_data(2, 2, seed=5).images
    np.testing.assert_array_equal(loaded.predict_proba(images), trained.predict_proba(images))
    assert loaded.threshold == trained.threshold


def test_missing_or_broken_folders_give_clear_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no such success-classifier folder"):
        SuccessClassifierReward.load(tmp_path / "nope")
    trained.save(tmp_path / "clf")
    (tmp_path / "clf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        SuccessClassifier.load(tmp_path / "clf")


# ------------------------------------------------------------------------------------- reward model
def test_reward_model_scores_batches_and_rejects_wrong_sizes(trained):
    model = SuccessClassifierReward(trained)
    d = synthetic_data(2, 2, seed=9)
    out = model(RewardQuery(images=d.images))
    assert out.reward.shape == (len(d),) and out.valid.all()
    assert set(np.unique(out.reward)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out.success, out.prob > trained.threshold)
    np.testing.assert_array_equal(out.reward, out.success.astype(np.float32))
    with pytest.raises(ConfigError, match=f"expects uint8 images \\(B, {SIZE}, {SIZE}, 3\\)"):
        model(RewardQuery(images=np.zeros((2, 48, 48, 3), np.uint8)))
    with pytest.raises(ConfigError, match="needs images"):
        model.score(RewardQuery(states=np.zeros((2, 3), np.float32)))


def test_reward_model_warns_once_about_another_task(trained, caplog):
    model = SuccessClassifierReward(trained)
    images = synthetic_data(1, 0, length=2).images
    model(RewardQuery(images=images, instruction="move the gripper to the green ball"))
    assert not caplog.records
    for _ in range(2):
        model(RewardQuery(images=images, instruction="open the drawer"))
    assert len([r for r in caplog.records if "another task" in r.getMessage()]) == 1


def test_reward_wrapper_and_relabel_on_tabletop(trained):
    from rlpt.envs.tabletop import TabletopEnv

    model = SuccessClassifierReward(trained)
    env = model.wrap(TabletopEnv("reach"), scale=1.0, offset=-1.0)
    assert isinstance(env, RewardWrapper) and env.camera == "front" and env.image_size == SIZE
    env.reset(seed=0)
    for _ in range(3):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert isinstance(r, float) and r in (-1.0, 0.0)
        rm = info["reward_model"]
        assert rm["valid"] and isinstance(rm["success"], bool) and 0.0 <= rm["prob"] <= 1.0
        assert "reward_env" in info and "success" in info
    assert env.reward_metrics()["reward_model/calls"] == 3.0
    env.close()
    d = synthetic_data(2, 1, length=5)
    n = len(d)
    ds = Dataset(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
                 np.zeros(n, bool), np.zeros(n, bool), images=d.images)
    out = relabel(ds, model)
    assert out.rewards.shape == (n,) and out.infos["reward_model_valid"].all()
    assert out.metadata["relabel"]["type"] == "SuccessClassifierReward"


# ----------------------------------------------------------------------------- simulator and CLI
def test_collect_labels_scripted_reach_episodes():
    d = collect_classifier_data("tabletop/reach", n_success=2, n_failure=2, image_size=SIZE, seed=0,
                                reverse=True, quiet=True)
    kinds, tasks = d.metadata["episode_kinds"], d.metadata["episode_tasks"]
    assert tasks == ["reach"] * 4 + ["reach-reset"] * 4
    assert d.images.shape[1:] == (SIZE, SIZE, 3)
    for ep, kind in enumerate(kinds):
        m = d.episodes == ep
        lab, succ = d.labels[m], d.success[m]
        if kind == "demo":  # ends right after its first success: the last 3 frames are the positives
            assert lab[-3:].tolist() == [1, 1, 1] and succ[-3:].all() and not succ[:-3].any()
            assert (lab[:-3] != 1).all()
        else:  # a failure: never successful, all negatives
            assert not succ.any() and (lab == 0).all()
    s = d.summary()
    assert s["success_episodes"] == 4 and s["other_episodes"] == 4 and s["positives"] == 12


def test_evaluate_on_rollouts_reports_frame_and_episode_rates(trained):
    res = evaluate_on_rollouts(trained, 2, kinds=("demo", "away"), quiet=True)
    assert res["task"] == "reach" and res["episode"]["episodes"] == 2
    f = res["frame"]
    assert f["frames"] > 50 and f["positives"] > 0 and f["negatives"] > 0
    assert 0.0 <= f["fp_rate"] <= 1.0 and 0.0 <= f["fn_rate"] <= 1.0
    assert res["episode"]["successes"] >= 1


def test_cli_train_classifier(tmp_path, capsys):
    from rlpt.cli import main

    out = tmp_path / "reach-clf"
    rc = main(["--quiet", "reward", "train-classifier", "--task", "reach", "--out", str(out), "--episodes", "3",
               "--failures", "3", "--steps", "20", "--image-size", str(SIZE), "--eval-episodes", "1",
               "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out FP rate" in printed and "fn_rate" in printed
    model = SuccessClassifierReward.load(out)
    assert model.describe()["task"] == "reach" and model.image_size == SIZE
    assert "rollouts" in model.classifier.report
    assert "move the gripper to the green ball" in model.classifier.config["instructions"]
    assert main(["reward", "train-classifier", "--task", "stack", "--out", str(tmp_path / "x")]) == 2
