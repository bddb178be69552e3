"""The ContextWM/APV Dreamer agent (rlpt.agents.contextwm) and recurrent evaluation (rlpt.eval.evaluate).

Everything runs on the "tiny" world-model preset (16x16 frames) and a tiny pixel env (`DotEnv`, tests/conftest.py):
a red dot that the 2-d action moves on a blue field, rewarded for staying near the centre.
"""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import DotEnv  # the 16x16 red-dot env (tests/conftest.py)
from safetensors.torch import load_file

import rlpt
from rlpt.agents.contextwm import (
    ContextWM,
    ContextWMConfig,
    SequenceReplay,
    VideoIntrinsicBonus,
    lambda_returns,
)
from rlpt.data.dataset import Dataset
from rlpt.errors import CheckpointError, ConfigError, DatasetShapeError
from rlpt.eval import evaluate
from rlpt.pretrain.contextwm import VideoWorldModel, WorldModelConfig, pretrain

SIZE = 16  # the tiny preset's image size


TINY = dict(preset="tiny", batch_size=3, seq_len=6, horizon=4, prefill=30, train_every=10, pretrain_updates=4,
            log_interval=50, buffer_size=2000)


def make_agent(**overrides) -> ContextWM:
    env = DotEnv()
    return ContextWMConfig(**{**TINY, **overrides}).create(env.observation_space, env.action_space, device="cpu")


def random_batch(agent: ContextWM, b: int = 3, t: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_first = np.zeros((b, t), bool)
    is_first[:, 0] = True
    return {"obs": rng.integers(0, 256, (b, t, SIZE, SIZE, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (b, t, 2)).astype(np.float32), "reward": rng.normal(size=(b, t)).astype(
                np.float32), "is_first": is_first, "is_terminal": np.zeros((b, t), bool)}


class FakeVideos:
    """`sample(B, rng)` like `VideoClips`: bright squares drifting across 16x16 frames."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        t = 8
        out = np.zeros((batch_size, t, SIZE, SIZE, 3), np.uint8)
        for b in range(batch_size):
            x, y, dx = rng.integers(0, SIZE - 4), rng.integers(0, SIZE - 4), rng.choice([-1, 1])
            for i in range(t):
                xi = int(np.clip(x + dx * i, 0, SIZE - 4))
                out[b, i, y:y + 4, xi:xi + 4] = 230
        return out


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cwm") / "pretrained"
    return pretrain(FakeVideos(), WorldModelConfig.preset("tiny"), steps=3, out_dir=out, quiet=True, log_every=1)


# ---------------------------------------------------------------------------------------------- pieces
def test_lambda_returns_hand_computed():
    reward = torch.tensor([[1.0], [2.0], [3.0]])  # r_1, r_2, r_3
    next_value = torch.tensor([[10.0], [20.0], [30.0]])  # v(s_1), v(s_2), v(s_3)
    discount = torch.tensor([[0.9], [0.8], [0.5]])
    lam = 0.5
    g3 = 3.0 + 0.5 * 30.0  # G_2 = r_3 + d * v(s_3) (bootstrap)
    g2 = 2.0 + 0.8 * ((1 - lam) * 20.0 + lam * g3)
    g1 = 1.0 + 0.9 * ((1 - lam) * 10.0 + lam * g2)
    out = lambda_returns(reward, next_value, discount, lam)
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out[:, 0].numpy(), [g1, g2, g3], rtol=1e-6)
    # lambda 0: one-step TD targets; lambda 1: discounted rewards plus the final bootstrap
    np.testing.assert_allclose(lambda_returns(reward, next_value, discount, 0.0)[:, 0].numpy(),
                               [1 + 0.9 * 10, 2 + 0.8 * 20, 3 + 0.5 * 30], rtol=1e-6)
    mc = 1 + 0.9 * (2 + 0.8 * (3 + 0.5 * 30))
    assert lambda_returns(reward, next_value, discount, 1.0)[0, 0].item() == pytest.approx(mc)


def test_intrinsic_bonus_prefers_novel_features():
    bonus = VideoIntrinsicBonus(feat_dim=8, window=1, dim=4, queue_size=64, k=4, momentum=0.0)
    rng = np.random.default_rng(0)
    near = torch.as_tensor(rng.normal(0, 0.1, (2, 3, 8)), dtype=torch.float32)
    assert torch.all(bonus(near, update=True) == 0)  # fewer than k vectors queued: no bonus yet
    assert int(bonus.queue_count) == 6
    bonus(torch.as_tensor(rng.normal(0, 0.1, (4, 8, 8)), dtype=torch.float32))  # 32 familiar vectors queued
    familiar = torch.as_tensor(rng.normal(0, 0.1, (1, 4, 8)), dtype=torch.float32)
    novel = familiar + 5.0
    r_fam, r_nov = bonus(familiar, update=False), bonus(novel, update=False)
    assert r_fam.shape == (1, 4) and torch.all(r_nov > 5 * r_fam)
    # the queue is a FIFO of queue_size vectors
    bonus(torch.zeros(1, 100, 8))
    assert int(bonus.queue_count) == 64 and torch.all(bonus.queue == 0)
    # window averaging: a constant sequence stays constant, a step is smoothed causally
    b3 = VideoIntrinsicBonus(feat_dim=1, window=3, dim=1)
    b3.projection.fill_(1.0)
    steps = torch.tensor([0.0, 0.0, 3.0, 3.0, 3.0]).reshape(1, 5, 1)
    np.testing.assert_allclose(b3.embed(steps)[0, :, 0].numpy(), [0, 0, 1, 2, 3], atol=1e-6)


def test_sequence_replay_layout_and_wraparound():
    buf = SequenceReplay(10, (SIZE, SIZE, 3), 2)
    for t in range(13):  # wraps: the 10 newest steps stay, in order
        buf.add(np.full((SIZE, SIZE, 3), t, np.uint8), None if t % 5 == 0 else np.full(2, t, np.float32),
                float(t), is_first=t % 5 == 0)
    assert len(buf) == 10
    batch = buf.sample(64, 4, np.random.default_rng(0))
    assert batch["obs"].shape == (64, 4, SIZE, SIZE, 3) and batch["action"].shape == (64, 4, 2)
    ids = batch["obs"][:, :, 0, 0, 0].astype(int)
    assert np.all(np.diff(ids, axis=1) == 1) and ids.min() >= 3  # contiguous, oldest three overwritten
    assert batch["is_first"][:, 0].all() and np.all(batch["action"][:, 0] == 0)
    np.testing.assert_array_equal(batch["is_first"][:, 1:], ids[:, 1:] % 5 == 0)
    np.testing.assert_array_equal(batch["reward"], ids)
    restored = SequenceReplay(10, (SIZE, SIZE, 3), 2)
    restored.load_state_dict(buf.state_dict())
    again = restored.sample(64, 4, np.random.default_rng(0))
    for k in batch:
        np.testing.assert_array_equal(again[k], batch[k])
    with pytest.raises(DatasetShapeError, match="uint8"):
        buf.add(np.zeros((SIZE, SIZE, 3), np.float32), None, 0.0, True)


# ---------------------------------------------------------------------------------------------- model
def test_shapes_through_the_stacked_model_and_imagination():
    agent = make_agent()
    batch = random_batch(agent)
    images = torch.as_tensor(batch["obs"]).movedim(-1, 2).float() / 255 - 0.5
    embed, af_post, _, post, _, af_feat = agent._observe(images, torch.as_tensor(batch["action"]),
                                                         torch.as_tensor(batch["is_first"]))
    f = agent.rssm.feat_dim
    assert embed.shape == (3, 6, agent.video.embed_dim) and af_feat.shape == (3, 6, agent.video.feat_dim)
    assert agent.rssm.embed_dim == agent.video.feat_dim + agent.video.embed_dim  # concat_embed
    assert agent.rssm.feat(post).shape == (3, 6, f) and f == agent.video.feat_dim
    assert agent.video.decode(agent.rssm.feat(post), agent.video.context(batch["obs"][:, 0])).shape == (
        3, 6, 3, SIZE, SIZE)
    assert make_agent(concat_embed=False).rssm.embed_dim == agent.video.feat_dim

    start = {k: v.detach().flatten(0, 1) for k, v in post.items()}
    feat, logp = agent.imagine(start, horizon=5)
    assert feat.shape == (6, 18, f) and logp.shape == (5, 18)
    # the actor trains through the dynamics; the world model's parameters get no gradient from it
    metrics = agent._train_actor_critic(start, torch.ones(18))
    assert np.isfinite(list(metrics.values())).all()
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert all(p.grad is None for p in agent.rssm.parameters())
    feats = agent.features(batch["obs"], np.zeros((3, 6, 2), np.float32))
    assert feats["af_feat"].shape == (3, 6, agent.video.feat_dim) and feats["feat"].shape == (3, 6, f)
    pred = agent.predict_open_loop(batch["obs"], batch["action"], context=2)
    assert pred.shape == (3, 6, SIZE, SIZE, 3) and 0 <= pred.min() and pred.max() <= 1


def test_predict_is_recurrent_and_batched():
    agent = make_agent()
    env = DotEnv()
    obs, _ = env.reset(seed=0)
    a0, s0 = agent.predict(obs)
    assert a0.shape == (2,) and [x.shape[0] for x in s0] == [1] * 5
    a1, s1 = agent.predict(obs, state=s0)
    a1_fresh, _ = agent.predict(obs, state=s0, episode_start=np.array([True]))
    np.testing.assert_allclose(a1_fresh, a0, rtol=1e-6)  # episode_start restarts from zeros
    assert not np.allclose(s1[0], s0[0])  # the recurrent state moves on
    batch_actions, batch_state = agent.predict(np.stack([obs, obs, obs]))
    assert batch_actions.shape == (3, 2) and batch_state[2].shape[0] == 3
    np.testing.assert_allclose(batch_actions[1], a0, rtol=1e-5)
    with pytest.raises(DatasetShapeError, match="uint8"):
        agent.predict(np.zeros((SIZE, SIZE, 3), np.float32))


# ---------------------------------------------------------------------------------------------- pretrained
def test_pretrained_checkpoint_loads_into_the_agent(pretrained_dir, tmp_path):
    env = DotEnv()
    agent = ContextWMConfig(**{**TINY, "pretrained": str(pretrained_dir)}).create(env.observation_space,
                                                                                    env.action_space, device="cpu")
    saved = load_file(str(pretrained_dir / "model.safetensors"))
    state = agent.video.state_dict()
    assert set(saved) == set(state)
    for k, v in saved.items():
        torch.testing.assert_close(state[k].cpu(), v, rtol=0, atol=0)
    meta = json.loads((pretrained_dir / "contextwm.json").read_text())
    assert agent.config.world_model == meta["config"] and agent.video.context_encoder is not None
    # the agent checkpoint carries the weights: it loads after the pretrained folder is gone
    agent.learn(env, 40)
    ckpt = agent.save(tmp_path / "agent")
    obs = [env.reset(seed=1)[0]] + [env.step(env.action_space.sample())[0] for _ in range(4)]
    moved = tmp_path / "moved_away"
    shutil.move(str(pretrained_dir), moved)
    try:
        loaded = rlpt.load(ckpt, device="cpu")
    finally:
        shutil.move(str(moved), pretrained_dir)
    assert isinstance(loaded, ContextWM) and loaded.config == agent.config
    for k, v in agent.video.state_dict().items():
        torch.testing.assert_close(loaded.video.state_dict()[k], v, rtol=0, atol=0)
    sa = sb = None
    for o in obs:  # identical deterministic rollouts
        a, sa = agent.predict(o, sa)
        b, sb = loaded.predict(o, sb)
        np.testing.assert_array_equal(a, b)
    assert len(loaded.buffer) == len(agent.buffer) and loaded.online_steps == 40 and loaded.pretrain_done


def test_plain_pretrained_model_stays_plain(tmp_path):
    plain = VideoWorldModel(WorldModelConfig.preset("tiny", contextual=False)).save(tmp_path / "plain")
    env = DotEnv()
    agent = ContextWMConfig(**{**TINY, "pretrained": str(plain)}).create(env.observation_space, env.action_space,
                                                                         device="cpu")
    assert agent.video.context_encoder is None and agent.config.world_model["contextual"] is False
    assert np.isfinite(list(agent.update(random_batch(agent)).values())).all()
    with pytest.raises(ConfigError, match="contextual"):
        ContextWMConfig(**{**TINY, "pretrained": str(plain), "contextual": True}).create(
            env.observation_space, env.action_space, device="cpu")


def test_pretrained_parts_freeze_for_the_first_updates(pretrained_dir):
    env = DotEnv()
    agent = ContextWMConfig(**{**TINY, "pretrained": str(pretrained_dir), "freeze_pretrained_steps": 2}).create(
        env.observation_space, env.action_space, device="cpu")
    params = lambda mod: {k: v.detach().clone() for k, v in mod.named_parameters()}  # noqa: E731
    enc0, af0, dec0 = params(agent.video.encoder), params(agent.video.rssm), params(agent.video.decoder)
    changed = lambda mod, ref: any(not torch.equal(v, ref[k]) for k, v in params(mod).items())  # noqa: E731
    for _ in range(2):
        assert agent.update(random_batch(agent))["train/pretrained_frozen"] == 1.0
    assert not changed(agent.video.encoder, enc0) and not changed(agent.video.rssm, af0)
    assert changed(agent.video.decoder, dec0)  # the rest of the world model trains from the first update
    assert agent.update(random_batch(agent))["train/pretrained_frozen"] == 0.0
    assert changed(agent.video.encoder, enc0) and changed(agent.video.rssm, af0)


def test_bad_pretrained_paths_and_spaces_raise_clear_errors(tmp_path, pretrained_dir):
    env = DotEnv()

    def build(**kw):
        return ContextWMConfig(**{**TINY, **kw}).create(env.observation_space, env.action_space, device="cpu")

    with pytest.raises(CheckpointError, match="no such folder"):
        build(pretrained=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="contextwm.json"):
        build(pretrained=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="fixes the world model"):
        build(pretrained=str(pretrained_dir), world_model={"deter": 64})
    with pytest.raises(ConfigError, match="pixels: true, image_size: 16"):  # state observations
        ContextWMConfig(**TINY).create(gym.spaces.Box(-1, 1, (5,), np.float32), env.action_space, device="cpu")
    with pytest.raises(ConfigError, match="image_size: 16"):  # a 32x32 env for a 16x16 model
        ContextWMConfig(**TINY).create(gym.spaces.Box(0, 255, (32, 32, 3), np.uint8), env.action_space, device="cpu")
    with pytest.raises(ConfigError, match="preset"):
        ContextWMConfig(preset="huge")


# ---------------------------------------------------------------------------------------------- training
def test_learn_trains_the_world_model_and_round_trips(tmp_path):
    env = DotEnv()
    agent = make_agent(log_interval=30, model_lr=1e-3)
    logs: list[dict] = []
    agent.learn(env, 270, callbacks=[lambda step, m: logs.append(dict(m, step=step))])
    assert agent.online_steps == 270 and agent.pretrain_done
    assert agent.step == TINY["pretrain_updates"] + (270 - TINY["prefill"]) // TINY["train_every"] + 1
    losses = [m["train/image_loss"] for m in logs if "train/image_loss" in m]
    assert len(losses) >= 6 and np.mean(losses[-2:]) < 0.75 * losses[0], losses
    assert any("online/episode_return" in m for m in logs)
    assert all(np.isfinite(v) for m in logs for v in m.values())

    path = agent.save(tmp_path / "ckpt")
    loaded = rlpt.load(path, device="cpu")
    assert loaded.step == agent.step and loaded.pretrain_done and len(loaded.buffer) == len(agent.buffer)
    for name, mod in agent.modules().items():
        for k, v in mod.state_dict().items():
            torch.testing.assert_close(loaded.modules()[name].state_dict()[k], v, rtol=0, atol=0)
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    # training continues from the same state: the same batch gives the same update
    torch.manual_seed(0)
    m1 = agent.update(agent.buffer.sample(3, 6, np.random.default_rng(1)))
    torch.manual_seed(0)
    m2 = loaded.update(loaded.buffer.sample(3, 6, np.random.default_rng(1)))
    assert m1["train/model_loss"] == pytest.approx(m2["train/model_loss"], rel=1e-5)


def test_fit_on_an_image_dataset():
    env = DotEnv(horizon=12)
    rng = np.random.default_rng(0)
    obs, acts, rews, terms, touts, nxt = [], [], [], [], [], []
    for ep in range(4):
        o, _ = env.reset(seed=ep)
        for _ in range(12):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            o2, r, term, trunc, _ = env.step(a)
            obs.append(o), acts.append(a), rews.append(r), terms.append(term), touts.append(trunc), nxt.append(o2)
            o = o2
    data = Dataset(np.stack(obs), np.stack(acts), np.array(rews, np.float32), np.array(terms), np.array(touts),
                   next_observations=np.stack(nxt))
    agent = make_agent(log_interval=5)
    assert agent.add_dataset(data) == 4 * 13 and agent.add_dataset(data) == 0  # once per dataset
    logs: list[float] = []
    agent.fit(data, 20, callbacks=[lambda step, m: logs.append(m["train/image_loss"])])
    assert agent.step == 20 and len(logs) == 4 and logs[-1] < logs[0]
    # the replay holds Dreamer's layout: row t is o_t with the action and reward that led to it
    np.testing.assert_array_equal(agent.buffer.obs[1], data.observations[1])
    np.testing.assert_allclose(agent.buffer.action[1], data.actions[0], rtol=1e-6)  # [-1, 1] bounds: unchanged
    assert agent.buffer.reward[1] == pytest.approx(data.rewards[0]) and agent.buffer.is_first[13]
    with pytest.raises(DatasetShapeError, match="uint8"):
        agent.add_dataset(Dataset(np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32), np.zeros(4, np.float32),
                                  np.zeros(4, bool), np.ones(4, bool)))


# ---------------------------------------------------------------------------------------------- evaluation
class CountingPolicy:
    """A recurrent policy whose action is the number of steps since its episode started (from its state)."""

    def __init__(self):
        self.starts = 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if state is None or bool(np.asarray(episode_start).reshape(-1)[0]):
            self.starts += 1
            state = 0
        return np.array([state, 0.0], np.float32), state + 1


class ActionLog(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.actions: list[float] = []

    def step(self, action):
        self.actions.append(float(action[0]))
        return self.env.step(action)


def test_evaluate_passes_recurrent_state_and_resets_each_episode():
    env = ActionLog(DotEnv(horizon=5))
    policy = CountingPolicy()
    res = evaluate(policy, env, episodes=3, seed=0)
    assert res.lengths == [5, 5, 5] and policy.starts == 3
    assert env.actions == [0, 1, 2, 3, 4] * 3

    class FeedForward:  # predict without recurrent arguments: called as before
        def predict(self, obs, deterministic=True):
            return np.zeros(2, np.float32), None

    assert evaluate(FeedForward(), DotEnv(horizon=3), episodes=1).lengths == [3]
    # the agent itself through evaluate: deterministic, so two evaluations agree
    agent = make_agent()
    r1 = evaluate(agent, DotEnv(horizon=8), episodes=2, seed=3)
    r2 = evaluate(agent, DotEnv(horizon=8), episodes=2, seed=3)
    assert r1.returns == r2.returns


def test_same_seed_same_numbers():
    def run(seed: int) -> dict:
        agent = make_agent(seed=seed, log_interval=45)
        logs: list[dict] = []
        agent.learn(DotEnv(), 45, callbacks=[lambda step, m: logs.append(m)])
        return logs[-1]

    a, b, c = run(0), run(0), run(1)
    assert a["train/model_loss"] == b["train/model_loss"] and a["train/actor_loss"] == b["train/actor_loss"]
    assert a["train/model_loss"] != c["train/model_loss"]
