"""V-PTR: ICVF pretraining on video (rlpt.pretrain.vptr, rlpt.nets.icvf) and its encoder in Cal-QL / Uni-O4.

The fast ICVF sanity check (the learned value orders states by distance to the goal) runs on a 1-D chain of
one-hot states with passive random-walk "video"; the pixel parts run on tiny synthetic clips (a square
sweeping across a 16x16 frame) and a 16x16 point-reaching env, so nothing here needs MuJoCo except the
pixel-dataset check.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import DotEnv  # tests/conftest.py (tests/ is on sys.path under pytest)

from rlpt.agents import CalQLConfig
from rlpt.agents.unio4 import UniO4Config
from rlpt.data.dataset import Dataset
from rlpt.errors import CheckpointError, ConfigError, DatasetDtypeError, DatasetShapeError, RunError
from rlpt.nets.icvf import FlatEncoder, MultilinearHead, load_encoder, save_encoder
from rlpt.pretrain.vptr import (
    ArrayClips,
    ICVFConfig,
    ICVFLearner,
    build_icvf,
    expectile_weights,
    icvf_batch,
    icvf_loss,
    load_icvf,
    pretrain,
    read_meta,
)
from rlpt.utils import spearman

S = 16  # frame side of the pixel tests (ResNetEncoder with res_depth 1: 4x4 final maps)


def sweep_clips(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 episodes (n, length, S, S, 3): a 3x3 white square moving one pixel per frame, bouncing at the edges."""
    out = np.zeros((n, length, S, S, 3), np.uint8)
    for i in range(n):
        y, x, d = rng.integers(0, S - 3), rng.integers(0, S - 3), rng.choice([-1, 1])
        for t in range(length):
            out[i, t, y:y + 3, x:x + 3] = 255
            if not 0 <= x + d <= S - 3:
                d = -d
            x += d
    return out


def tiny_config(**overrides) -> ICVFConfig:
    return ICVFConfig.preset("tiny", **overrides)


# ------------------------------------------------------------------------------------------ sampling and loss
def test_goal_and_intent_sampling_follows_the_reference_proportions():
    cfg = ICVFConfig.preset("tiny")
    clips = np.arange(64 * 50, dtype=np.float32).reshape(64, 50, 1)  # every frame holds its own id
    b = icvf_batch(clips, np.random.default_rng(0), cfg, batch_size=40_000)
    own, t = b["clip"], b["t"]
    assert t.min() >= 0 and t.max() == 48  # a transition needs a successor frame
    np.testing.assert_array_equal(b["observations"][:, 0], clips[own, t, 0])
    np.testing.assert_array_equal(b["next_observations"][:, 0], clips[own, t + 1, 0])
    # intents: current frame 0.2, a later frame of the same clip 0.5, a random frame 0.3 (GCSDataset)
    zc, zf = b["intent_clip"], b["intent_frame"]
    current = (zc == own) & (zf == t)
    later = (zc == own) & (zf > t)
    assert abs(current.mean() - 0.2) < 0.02
    assert abs(later.mean() - 0.5) < 0.02
    assert abs((zc != own).mean() - 0.3 * 63 / 64) < 0.02
    assert ((zc == own) & (zf < t)).mean() < 0.01  # "later" never goes back; only random picks of the own clip do
    # outcomes: equal to the intent with p_samegoal = 0.5 (plus independent coincidences)
    same = (b["goal_clip"] == zc) & (b["goal_frame"] == zf)
    assert 0.5 < same.mean() < 0.6
    # rewards 0 and mask 0 exactly at the goal, -1 and 1 elsewhere
    at_goal = (b["goal_clip"] == own) & (b["goal_frame"] == t)
    np.testing.assert_array_equal(b["rewards"], np.where(at_goal, 0.0, -1.0))
    np.testing.assert_array_equal(b["masks"], np.where(at_goal, 0.0, 1.0))
    np.testing.assert_array_equal(b["desired_rewards"], np.where(current, 0.0, -1.0))
    np.testing.assert_array_equal(b["goals"][:, 0], clips[b["goal_clip"], b["goal_frame"], 0])


def test_random_goals_from_the_own_clip():
    cfg = ICVFConfig.preset("tiny", random_goals="clip")
    clips = np.arange(64 * 50, dtype=np.float32).reshape(64, 50, 1)
    b = icvf_batch(clips, np.random.default_rng(0), cfg, batch_size=20_000)
    own, t = b["clip"], b["t"]
    for kind in ("goal", "intent"):
        assert (b[f"{kind}_clip"] == own).all()  # no frame of another clip, so looks cannot tell a far goal
        earlier = (b[f"{kind}_frame"] < t).mean()
        assert 0.1 < earlier < 0.2  # the random picks (0.3) land before t about half the time
    np.testing.assert_array_equal(b["goals"][:, 0], clips[own, b["goal_frame"], 0])
    with pytest.raises(ConfigError, match="random_goals"):
        ICVFConfig.preset("tiny", random_goals="video")


def test_mc_floor_bounds_targets_by_the_clips_own_return():
    cfg = ICVFConfig.preset("tiny", discount=0.9, mc_floor=True)
    clips = np.arange(16 * 20, dtype=np.float32).reshape(16, 20, 1)
    b = icvf_batch(clips, np.random.default_rng(0), cfg, batch_size=5000)
    own, t, gc, gf = b["clip"], b["t"], b["goal_clip"], b["goal_frame"]
    on_path = (gc == own) & (gf >= t) & (gc == b["intent_clip"]) & (gf == b["intent_frame"])
    assert 0.2 < on_path.mean() < 0.5
    k = gf[on_path] - t[on_path]
    np.testing.assert_allclose(b["mc_returns"][on_path], -(1 - 0.9 ** k) / 0.1, rtol=1e-5)
    assert np.isneginf(b["mc_returns"][~on_path]).all()  # another goal or intent: the clip says nothing
    # the floor lifts TD targets below the clip's return: a value at -50 everywhere is pulled up on the path
    value = build_icvf(cfg.replace(encoder="FlatEncoder", encoder_kwargs={"in_dim": 1}))
    with torch.no_grad():
        for head in value.heads:
            head.matrix_a.weight.zero_()
            head.matrix_b.weight.zero_()
            head.matrix_a.bias.fill_(1.0)
            head.matrix_b.bias.fill_(-50.0 / head.matrix_a.bias.numel())
    learner = ICVFLearner(cfg.replace(encoder="FlatEncoder", encoder_kwargs={"in_dim": 1}), device="cpu")
    tensors = learner.tensors(b)
    floored = icvf_loss(value, value, tensors, cfg)[0].item()
    plain = icvf_loss(value, value, tensors, cfg.replace(mc_floor=False))[0].item()
    assert floored > plain  # targets moved away from the -50 value on the path rows
    mixed = icvf_loss(value, value, tensors, cfg.replace(mc_floor=False, mc_weight=1.0))[0].item()
    assert mixed == pytest.approx(floored, rel=1e-5)  # here the clip's return is above every TD target
    with pytest.raises(ConfigError, match="mc_weight"):
        cfg.replace(mc_weight=1.5)


def test_expectile_weights_and_multilinear_form():
    adv = torch.tensor([-2.0, -1e-6, 0.0, 3.0])
    np.testing.assert_allclose(expectile_weights(adv, 0.9).numpy(), [0.1, 0.1, 0.9, 0.9], rtol=1e-6)
    torch.manual_seed(0)
    head = MultilinearHead(5, hidden=(8, 6))
    fs, fg, fz = torch.randn(3, 4, 5).unbind(0)
    info = head.info(fs, fg, fz)
    # brute force: V = (A diag(T(z)) phi(s) + a)^T (B diag(T(z)) psi(g) + b)
    a_w, a_b, b_w, b_b = head.matrix_a.weight, head.matrix_a.bias, head.matrix_b.weight, head.matrix_b.bias
    tz = head.t_net(head.psi_net(fz))
    brute = [(a_w @ torch.diag(tz[i]) @ head.phi_net(fs)[i] + a_b) @ (b_w @ torch.diag(tz[i]) @ head.psi_net(fg)[i]
                                                                       + b_b) for i in range(4)]
    torch.testing.assert_close(info["v"], torch.stack(brute))
    assert info["phi"].shape == (4, 6)


def test_icvf_loss_decreases_on_tiny_video():
    """With the target held fixed, Adam on the ICVF loss of a fixed batch of tiny video frames drives it down."""
    torch.manual_seed(0)
    cfg = tiny_config(lr=3e-3)
    learner = ICVFLearner(cfg, device="cpu")
    clips = ArrayClips(sweep_clips(16, 12, np.random.default_rng(0)), cfg.clip_len).sample(16, np.random.default_rng(1))
    batch = learner.tensors(icvf_batch(clips, np.random.default_rng(2), cfg, batch_size=32))
    losses = []
    for _ in range(60):
        loss, metrics = icvf_loss(learner.value, learner.target, batch, cfg)
        learner.optimizer.zero_grad()
        loss.backward()
        learner.optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and metrics["reward_mean"] < 0
    assert losses[-1] < 0.3 * losses[0]


def _train_on_chain(cfg: ICVFConfig, steps: int) -> tuple[list[float], list[float], bool]:
    """TD on passive random walks of a 7-state chain (one-hot states, no actions); returns the Spearman
    correlation of V(s, g, z=g) with -|s - g| for each goal g before and after, and whether V peaks at s = g."""
    n, rng = 7, np.random.default_rng(0)
    torch.manual_seed(0)
    pos = np.zeros((100, 40), int)
    pos[:, 0] = rng.integers(0, n, 100)
    for t in range(1, 40):
        pos[:, t] = np.clip(pos[:, t - 1] + rng.choice([-1, 1], 100), 0, n - 1)
    episodes = np.eye(n, dtype=np.float32)[pos]  # (100, 40, n) one-hot states
    learner = ICVFLearner(cfg, device="cpu")

    def order() -> tuple[list[float], bool]:
        states, out, peaks = torch.eye(n), [], []
        with torch.no_grad():
            for g in range(n):
                goal = states[g].expand(n, n)
                v = learner.value(states, goal, goal).mean(0).numpy()
                out.append(spearman(-np.abs(np.arange(n) - g), v))
                peaks.append(int(v.argmax()) == g)
        return out, all(peaks)

    before, _ = order()
    source = ArrayClips(episodes, cfg.clip_len)
    for _ in range(steps):
        learner.update(source.sample(cfg.clips_per_batch, rng), rng)
    after, goal_is_best = order()
    return before, after, goal_is_best


@pytest.mark.slow  # ~10 s of CPU (500 updates at batch 256)
def test_icvf_on_a_chain_orders_states_by_distance_to_the_goal():
    """State-based ICVF sanity check: after TD learning on passive random walks (fast TD: tau 0.1, discount 0.8),
    V(s, g, z=g) ranks states by their distance to g (Spearman), which the untrained value does not."""
    cfg = ICVFConfig(name="chain", encoder="FlatEncoder", encoder_kwargs={"in_dim": 7}, hidden=(64, 64),
                     batch_size=256, clip_len=16, lr=3e-3, adam_eps=1e-8, tau=0.1, discount=0.8)
    before, after, goal_is_best = _train_on_chain(cfg, 500)  # 300 steps are not enough for every seed
    assert np.mean(after) > 0.85 and min(after) > 0.5, after  # seeds 0-5 measured: mean >= 0.93, min >= 0.70
    assert goal_is_best  # V(s, g, g) is highest at s = g
    assert np.mean(after) > np.mean(before) + 0.3


@pytest.mark.slow  # ~15 s of CPU (3,000 updates at batch 32)
def test_icvf_with_the_paper_td_settings_orders_the_chain_at_the_cpu_small_learning_rate():
    """The paper's tau 0.005 and discount 0.99 with cpu-small's optimizer (lr 3e-4, eps 1e-5, batch 32) also
    order the chain within 3,000 updates (measured: mean 0.99), so the short-budget failure to order tabletop
    video frames (benchmarks/icvf_probe.py) is not the TD settings alone."""
    cfg = ICVFConfig(name="chain", encoder="FlatEncoder", encoder_kwargs={"in_dim": 7}, hidden=(64, 64),
                     batch_size=32, clip_len=16, lr=3e-4, adam_eps=1e-5)
    assert (cfg.tau, cfg.discount) == (0.005, 0.99)
    before, after, goal_is_best = _train_on_chain(cfg, 3000)
    assert np.mean(after) > 0.85 and min(after) > 0.5, after
    assert goal_is_best and np.mean(after) > np.mean(before) + 0.3


# ------------------------------------------------------------------------------------------ pretrain, save, load
def test_pretrain_checkpoint_resume_and_encoder_round_trip(tmp_path):
    episodes = sweep_clips(12, 12, np.random.default_rng(0))
    cfg = tiny_config()
    full = pretrain(episodes, cfg, steps=6, out_dir=tmp_path / "full", seed=1, device="cpu", log_every=2,
                    eval_every=3, checkpoint_every=3, eval_clips=4, quiet=True)
    part = pretrain(episodes, cfg, steps=3, out_dir=tmp_path / "part", seed=1, device="cpu", log_every=2,
                    eval_every=3, checkpoint_every=3, eval_clips=4, quiet=True)
    with pytest.raises(RunError, match="resume"):
        pretrain(episodes, cfg, steps=6, out_dir=tmp_path / "part", seed=1, device="cpu", quiet=True)
    pretrain(episodes, cfg, steps=6, out_dir=part, seed=1, device="cpu", log_every=2, eval_every=3,
             checkpoint_every=3, eval_clips=4, resume=True, quiet=True)
    a, _ = load_icvf(full, device="cpu")
    b, loaded_cfg = load_icvf(part, device="cpu")
    assert loaded_cfg == cfg and read_meta(part)["step"] == 6
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=f"resumed run differs at {k}")
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # resumed logs continue, no duplicates
    assert {"train/loss", "eval/value_order", "perf/updates_per_s"} <= set(
        (part / "metrics.csv").read_text().splitlines()[0].split(","))

    enc = load_encoder(full)
    frames = torch.as_tensor(episodes[0, :5])  # (5, S, S, 3) uint8
    with torch.no_grad():
        torch.testing.assert_close(enc(frames), a.encoder(frames))
    assert enc.out_dim == a.encoder.out_dim and enc(frames).shape == (5, enc.out_dim)
    # a standalone encoder folder round-trips too
    save_encoder(enc, tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    with torch.no_grad():
        torch.testing.assert_close(again(frames), enc(frames))


def test_cli_pretrain_vptr_on_an_mp4_folder(tmp_path):
    import cv2

    from rlpt.cli import main

    folder = tmp_path / "videos"
    folder.mkdir()
    for k, clip in enumerate(sweep_clips(3, 12, np.random.default_rng(0))):
        writer = cv2.VideoWriter(str(folder / f"{k}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (S, S))
        for frame in clip:
            writer.write(frame[:, :, ::-1])
        writer.release()
    out = tmp_path / "icvf"
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(folder), "--preset", "tiny", "--steps", "2",
                 "--out", str(out), "--log-every", "1", "--device", "cpu"]) == 0
    assert (out / "vptr.json").exists() and (out / "encoder.json").exists()
    assert load_encoder(out).out_dim == build_icvf(tiny_config()).encoder.out_dim
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(folder), "--preset", "tiny", "--steps", "3",
                 "--out", str(out), "--resume", "--device", "cpu"]) == 0
    assert read_meta(out)["step"] == 3
    assert main(["pretrain", "vptr", "--videos", str(folder), "--steps", "2", "--out", str(out)]) == 2  # exists
    # the TD settings and LayerNorm heads are CLI options too, validated like the config
    td = tmp_path / "icvf_td"
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(folder), "--preset", "tiny", "--steps", "1",
                 "--out", str(td), "--tau", "0.05", "--discount", "0.9", "--layer-norm", "--device", "cpu"]) == 0
    saved = read_meta(td)["config"]
    assert (saved["tau"], saved["discount"], saved["layer_norm"]) == (0.05, 0.9, True)
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(folder), "--preset", "tiny", "--steps", "1",
                 "--out", str(tmp_path / "bad"), "--tau", "2", "--device", "cpu"]) == 2
    # a wall-clock budget stops the run early and still writes the model (and key=value config overrides apply)
    timed = tmp_path / "icvf_timed"
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(folder), "--preset", "tiny", "--steps", "1000000",
                 "--out", str(timed), "--max-seconds", "1", "--log-every", "1", "--device", "cpu",
                 "mc_weight=1.0"]) == 0
    meta = read_meta(timed)
    assert 1 <= meta["step"] < 1000000 and meta["config"]["mc_weight"] == 1.0
    assert load_encoder(timed).out_dim == build_icvf(tiny_config()).encoder.out_dim


# ------------------------------------------------------------------------------------------ downstream agents
class PixelPointEnv(DotEnv):
    """conftest's point env seen as a 2x2 white square on black (16x16); moves 0.2 per unit action, 10 steps."""

    def __init__(self):
        super().__init__(horizon=10, size=S, speed=0.2)

    def _obs(self) -> np.ndarray:
        img = np.zeros((S, S, 3), np.uint8)
        y, x = np.clip(((self.pos + 1) / 2 * (S - 2)).astype(int), 0, S - 2)
        img[y:y + 2, x:x + 2] = 255
        return img


def pixel_dataset(episodes: int = 6) -> Dataset:
    env, rng = PixelPointEnv(), np.random.default_rng(0)
    cols: dict[str, list] = {k: [] for k in ("o", "a", "r", "t")}
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            nxt, r, _, trunc, _ = env.step(a)
            cols["o"].append(obs), cols["a"].append(a), cols["r"].append(r), cols["t"].append(trunc)
            obs, done = nxt, trunc
    n = len(cols["r"])
    return Dataset(observations=np.stack(cols["o"]), actions=np.stack(cols["a"]),
                   rewards=np.asarray(cols["r"], np.float32), terminals=np.zeros(n, bool),
                   timeouts=np.asarray(cols["t"]), metadata={"source": "pixel-point"})


@pytest.fixture(scope="module")
def icvf_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("vptr") / "icvf"
    return pretrain(sweep_clips(8, 10, np.random.default_rng(0)), tiny_config(), steps=2, out_dir=out, device="cpu",
                    eval_clips=2, quiet=True)


SMALL_CALQL = dict(batch_size=16, cql_n_actions=2, policy_hidden=(32, 32), q_hidden=(32, 32), encoder_feature_dim=16,
                   buffer_size=200, log_interval=5)


@pytest.mark.parametrize("freeze", [True, False])
def test_calql_takes_the_icvf_encoder_from_its_pretrained_key(icvf_folder, freeze, tmp_path):
    env, data = PixelPointEnv(), pixel_dataset()
    cfg = CalQLConfig(pretrained=str(icvf_folder), freeze_encoder=freeze, augment_shift=1, **SMALL_CALQL)
    agent = cfg.create(env.observation_space, env.action_space, device="cpu")
    pretrained = load_encoder(icvf_folder).state_dict()
    for k, v in agent.encoder.state_dict().items():  # the agent starts from the ICVF encoder's weights
        torch.testing.assert_close(v, pretrained[k])
    trunk_before = [p.clone() for p in agent.trunk.parameters()]
    m = agent.fit(data, 6)
    agent.learn(env, total_timesteps=12, offline=data)  # phase 3: online fine-tuning from pixels
    assert np.isfinite(list(m.values())).all() and agent.buffer.observations.dtype == np.uint8
    changed = any(not torch.equal(v, pretrained[k]) for k, v in agent.encoder.state_dict().items())
    assert changed is (not freeze)  # frozen: untouched; fine-tuned: the critic loss moves it
    assert any(not torch.equal(a, b) for a, b in zip(trunk_before, agent.trunk.parameters(), strict=True))

    obs = data.observations[:4]
    action = agent.predict(obs)[0]
    assert action.shape == (4, 2) and np.abs(action).max() <= 1.0
    agent.save(tmp_path / "agent")
    import rlpt

    loaded = rlpt.load(tmp_path / "agent", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs)[0], action)
    assert len(loaded.buffer) == len(agent.buffer) and loaded.buffer.observations.dtype == np.uint8


def test_calql_image_encoder_options_and_errors(icvf_folder):
    env = PixelPointEnv()
    scratch = CalQLConfig(encoder_config={"depth": 4, "res_depth": 1, "res_layers": 1, "norm": "layer"},
                          **SMALL_CALQL).create(env.observation_space, env.action_space, device="cpu")
    assert scratch.encoder.out_dim == 4 * 4 * 4 and scratch.encoder.kwargs["image_size"] == S
    given = load_encoder(icvf_folder)
    agent = CalQLConfig(**SMALL_CALQL).create(env.observation_space, env.action_space, device="cpu", encoder=given)
    assert agent.encoder is given
    with pytest.raises(ConfigError, match="32x32"):  # an encoder pretrained at another image size
        big = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
        CalQLConfig(pretrained=str(icvf_folder), **SMALL_CALQL).create(big, env.action_space, device="cpu")
    with pytest.raises(ConfigError, match="encoder="):
        CalQLConfig().create(gym.spaces.Box(-1, 1, (3,)), env.action_space, device="cpu", encoder=given)
    with pytest.raises(CheckpointError, match="does not exist"):
        CalQLConfig(pretrained="/nonexistent/icvf", **SMALL_CALQL).create(env.observation_space, env.action_space)
    with pytest.raises(ConfigError, match="encoder_config"):
        CalQLConfig(encoder_config={"width": 3}, **SMALL_CALQL).create(env.observation_space, env.action_space)


def test_unio4_takes_the_icvf_encoder_through_its_encoder_argument(icvf_folder):
    env, data = PixelPointEnv(), pixel_dataset()
    cfg = UniO4Config(critic_steps=3, dynamics_steps=3, bc_steps=3, improve_steps=3, batch_size=16, q_hidden=(16,),
                      v_hidden=(16,), policy_hidden=(16,), ensemble_size=2, dynamics_ensemble_size=2,
                      dynamics_elites=1, dynamics_hidden=(16,), dynamics_batch_size=16, dynamics_eval_interval=3,
                      ope_interval=3, ope_start_states=4, ope_horizon=2, log_interval=3)
    enc = load_encoder(icvf_folder)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    agent = cfg.create(env.observation_space, env.action_space, device="cpu", encoder=enc)
    agent.fit(data, n_steps=agent.offline_total_steps)
    assert agent.predict(data.observations[:3])[0].shape == (3, 2)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())  # frozen by default


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clear_errors(tmp_path, icvf_folder):
    with pytest.raises(ConfigError, match="p_currgoal"):
        ICVFConfig(p_currgoal=0.5, p_trajgoal=0.5, p_randomgoal=0.5)
    with pytest.raises(ConfigError, match="unknown V-PTR preset"):
        ICVFConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown key"):
        ICVFConfig.from_dict({"batch": 3})
    with pytest.raises(ConfigError, match="clip_len"):
        tiny_config(clip_len=1)
    learner = ICVFLearner(tiny_config(), device="cpu")
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetShapeError, match="16"):
        learner.update(np.zeros((4, 8, 32, 32, 3), np.uint8), rng)  # frames of another size
    with pytest.raises(DatasetDtypeError, match="uint8"):
        learner.update(np.zeros((4, 8, S, S, 3), np.float32), rng)
    with pytest.raises(DatasetShapeError, match="steps"):
        ArrayClips(np.zeros((2, 5, S, S, 3), np.uint8), clip_len=8)
    with pytest.raises(CheckpointError, match="encoder.json"):
        load_encoder(tmp_path)
    with pytest.raises(CheckpointError, match="vptr.json"):
        load_icvf(tmp_path)
    spec = json.loads((icvf_folder / "encoder.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "encoder.json").write_text(json.dumps({**spec, "class": "os.system"}))
    with pytest.raises(ConfigError, match="unknown encoder class"):
        load_encoder(tmp_path / "bad")
    with pytest.raises(ConfigError, match="kwargs"):
        save_encoder(torch.nn.Linear(2, 2), tmp_path / "lin", class_name="FlatEncoder")
    assert FlatEncoder(3).out_dim == 3


def test_pixel_tabletop_dataset_observations_are_the_env_frames():
    from rlpt.collect.generate import make_dataset, parse_name
    from rlpt.envs import make_env

    assert parse_name("tabletop-push-noisy-pixels32").pixels == 32
    assert parse_name("tabletop-push-noisy").pixels == 0
    ds = make_dataset("tabletop-push-scripted-pixels16", size=20, n_envs=1, quiet=True)
    assert ds.observations.shape == (20, 16, 16, 3) and ds.observations.dtype == np.uint8
    assert ds.infos["state"].shape == (20, 30) and ds.metadata["observations"] == "pixels"
    env = make_env("tabletop/push", pixels=True, image_size=16)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, ds.observations[0])
    np.testing.assert_array_equal(env.step(ds.actions[0])[0], ds.observations[1])
    env.close()


# ---------------------------------------------------------------- the benchmark's report (benchmarks/vptr.py)
def _vptr_bench():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "vptr.py"
    spec = importlib.util.spec_from_file_location("bench_vptr", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _row(arm, seed, offline, online):
    curve = [{"phase": "offline", "step": s, "success_rate": v, "return": 10 * v} for s, v in offline]
    curve += [{"phase": "online", "step": s, "success_rate": v, "return": 10 * v} for s, v in online]
    return {"arm": arm, "seed": seed, "finished": True, "curve": curve, "offline_steps_run": offline[-1][0],
            "online_steps_run": online[-1][0], "offline_success_rate": offline[-1][1],
            "online_success_rate": online[-1][1]}


def test_vptr_report_compares_arms_at_the_steps_every_run_reached(tmp_path):
    bench = _vptr_bench()
    rows = [_row("icvf", 0, [(1000, 0.0), (2000, 0.2)], [(1000, 0.4), (1300, 0.5)]),
            _row("icvf", 1, [(1000, 0.1), (2000, 0.4)], [(1000, 0.2)]),
            _row("scratch", 0, [(1000, 0.0), (2000, 0.1), (3000, 0.9)], [(1000, 0.8)])]
    summary = bench.summarize(rows)
    at = summary["icvf"]["offline_success_at_common_step"]
    assert at["step"] == 2000 and at["values"] == [0.2, 0.4] and abs(at["mean"] - 0.3) < 1e-9
    assert summary["scratch"]["offline_success_at_common_step"]["values"] == [0.1]  # not its later 0.9
    assert summary["icvf"]["online_success_at_common_step"]["step"] == 1000
    assert summary["icvf"]["online_return_at_common_step"]["values"] == [4.0, 2.0]
    assert summary["icvf"]["offline_success_rate_vs_scratch"] == round(0.3 / 0.9, 3)
    assert "update 2000" in bench.table(summary)
    # the figure draws one line per (arm, offline budget) and refuses files without curves
    report = {"runs": rows, "machine": {"cuda_device": None, "processor": "x86_64"}, "env": "tabletop/push"}
    assert bench.plot([report], tmp_path / "fig.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no run"):
        bench.plot([{**report, "runs": [{**rows[0], "curve": []}]}], tmp_path / "none.png")



def test_vptr_report_gives_intervals_and_paired_differences_to_scratch():
    bench = _vptr_bench()
    icvf = [0.5, 0.7, 0.6]
    scratch = [0.4, 0.5, 0.6]
    rows = [_row(arm, seed, [(1000, v)], [(500, v)]) for arm, vals in (("icvf", icvf), ("scratch", scratch))
            for seed, v in enumerate(vals)]
    summary = bench.summarize(rows)
    off = summary["icvf"]["offline_success_rate"]
    assert off["iqm"] == pytest.approx(0.6) and off["mean_ci"][0] <= 0.6 <= off["mean_ci"][1]
    d = summary["icvf"]["offline_success_rate_minus_scratch"]
    assert d["paired"] and d["seeds"] == [0, 1, 2] and d["diff"] == pytest.approx(0.1)
    assert d["low"] == pytest.approx(0.0) and d["high"] == pytest.approx(0.2)  # per-seed differences 0.1, 0.2, 0.0
    assert "offline_success_rate_minus_scratch" not in summary["scratch"]
    assert "+0.10 [+0.00, +0.20]" in bench.table(summary)
    assert summary["icvf"]["online_success_rate_minus_scratch"]["diff"] == pytest.approx(0.1)
    longer = [_row("scratch", seed, [(1000, v), (2000, v)], [(500, v)]) for seed, v in enumerate(scratch)]
    uneven = bench.summarize(rows[:3] + longer)  # scratch's online phase started after more offline updates
    assert "offline_success_at_common_step_minus_scratch" in uneven["icvf"]
    assert not any(k.startswith("online") and k.endswith("minus_scratch") for k in uneven["icvf"])


def test_rank_order_scores_rising_values_one_and_skips_constant_rows():
    from rlpt.pretrain.vptr import rank_order

    rising = np.arange(6, dtype=float)[None].repeat(3, 0)
    assert rank_order(rising) == pytest.approx(1.0)
    assert rank_order(-rising) == pytest.approx(-1.0)
    assert rank_order(np.stack([rising[0], np.zeros(6)])) == pytest.approx(1.0)  # the constant row is skipped
    assert np.isnan(rank_order(np.zeros((2, 6))))


def test_icvf_probe_reports_every_video_group(tmp_path, monkeypatch):
    import importlib.util
    import sys

    import cv2

    from rlpt.cli import main

    for group, seed in (("left", 0), ("right", 1)):
        folder = tmp_path / "videos" / group
        folder.mkdir(parents=True)
        for k, clip in enumerate(sweep_clips(2, 12, np.random.default_rng(seed))):
            writer = cv2.VideoWriter(str(folder / f"{k}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (S, S))
            for frame in clip:
                writer.write(frame[:, :, ::-1])
            writer.release()
            if group == "left":  # per-frame states beside the video, as `rlpt video render` writes them
                np.save(folder / f"{k}.states.npy", np.c_[np.arange(len(clip)), np.zeros(len(clip))].astype(np.float32))
    ckpt = tmp_path / "icvf"
    assert main(["--quiet", "pretrain", "vptr", "--videos", str(tmp_path / "videos"), "--preset", "tiny", "--steps",
                 "2", "--out", str(ckpt), "--device", "cpu"]) == 0
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "icvf_probe.py"
    spec = importlib.util.spec_from_file_location("bench_icvf_probe", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    manifest = tmp_path / "videos" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"{g}/{k}.mp4", "domain": f"d-{g}"}) + "\n"
                                for g in ("left", "right") for k in range(2)))
    assert set(bench.video_groups(str(manifest))) == {"d-left", "d-right"}
    assert set(bench.video_groups(str(tmp_path / "videos"))) == {"left", "right"}
    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["icvf_probe.py", str(ckpt), "--videos", str(tmp_path / "videos"),
                                      "--clips", "4", "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())["results"][0]
    assert result["step"] == 2 and set(result["groups"]) == {"left", "right"}
    for g in result["groups"].values():
        assert len(g["value_by_t"]) == tiny_config().clip_len and g["clips"] == 4
        assert np.isfinite([g["value_spread"], g["goal_gap"], g["feature_std"]]).all() and -1 <= g["value_order"] <= 1
        assert g["feature_std"] > 0 and 0 <= g["dead_features"] < 1  # a 2-step model has not collapsed
        assert -1 <= g["pixel_order"] <= 1 and g["static_share"] == 0.0  # the square moves every frame
        assert np.isfinite(g["other_clip_gap"]) and 0 < g["feature_std_within_clip"] <= 2 * g["feature_std"]
    assert result["groups"]["left"]["state_order"] == pytest.approx(1.0)  # states approach the last one
    assert np.isnan(result["groups"]["right"]["state_order"])  # no states
    monkeypatch.setattr(sys, "argv", ["icvf_probe.py", str(ckpt), "--videos", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="does not exist"):
        bench.main()
