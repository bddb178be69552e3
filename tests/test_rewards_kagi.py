"""KAGI keypoint rewards: pixel <-> world lifting, oracle and VLM keypoint proposers, progress rewards."""

import json

import numpy as np
import pytest

from rlpt.data.dataset import Dataset
from rlpt.envs.tabletop import STATE_KEYS, TabletopEnv, scripted_policy
from rlpt.envs.tabletop.env import WORKSPACE_HIGH, WORKSPACE_LOW
from rlpt.errors import ConfigError, RewardModelError
from rlpt.rewards import RewardModel, RewardOutput, RewardQuery, RewardWrapper, relabel
from rlpt.rewards.kagi import (
    TABLETOP_POSITIONS,
    KeypointPlan,
    KeypointProgressReward,
    OracleKeypointProposer,
    PinholeCamera,
    SuccessOverrideReward,
    VLMKeypointProposer,
    lift_height,
    lift_to_plane,
    lift_two_views,
    pixel_round,
    scene_from_env,
    tabletop_block_success,
)

SIZE = 256


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv("push")
    e.reset(seed=1)
    yield e
    e.close()


@pytest.fixture()
def scene(env):
    return scene_from_env(env, SIZE)


# ------------------------------------------------------------------------------------------- geometry
def test_lifting_round_trip_through_tabletop_cameras(env):
    rng = np.random.default_rng(0)
    pts = rng.uniform(WORKSPACE_LOW - [0, 0, 0.02], WORKSPACE_HIGH, (200, 3))
    top, side = PinholeCamera.from_env(env, "top", SIZE), PinholeCamera.from_env(env, "side", SIZE)
    uv_top, uv_side = env.project(pts, "top", SIZE), env.project(pts, "side", SIZE)
    np.testing.assert_allclose(top.project(pts), uv_top, atol=1e-6)  # the same camera model as the env
    np.testing.assert_allclose(top.position, env.data.cam_xpos[env.model.camera("top").id], atol=1e-9)
    px_top, px_side = pixel_round(uv_top), pixel_round(uv_side)
    assert np.all(np.abs(px_top - uv_top) <= 0.5)
    err_plane = np.linalg.norm(lift_to_plane(px_top, top, pts[:, 2]) - pts, axis=1)
    err_two = np.linalg.norm(lift_two_views(px_top, top, px_side, side) - pts, axis=1)
    err_z = np.abs(lift_height(pts[:, :2], px_side, side) - pts[:, 2])
    assert err_plane.max() < 0.01 and err_two.max() < 0.01 and err_z.max() < 0.01
    # without rounding the lifts are exact
    np.testing.assert_allclose(lift_two_views(uv_top, top, uv_side, side), pts, atol=1e-6)


def test_lifting_with_a_robot_config_camera():
    # a camera 1 m above the origin looking straight down (OpenCV: x right, y down, z forward = world -z)
    K = np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]])
    E = np.eye(4)
    E[:3, :3] = np.diag([1.0, -1.0, -1.0])
    E[:3, 3] = -E[:3, :3] @ np.array([0.0, 0.0, 1.0])
    cam = PinholeCamera(K, E, (240, 320))
    pts = np.array([[0.1, -0.2, 0.0], [-0.3, 0.1, 0.05]])
    np.testing.assert_allclose(lift_to_plane(cam.project(pts), cam, pts[:, 2]), pts, atol=1e-9)
    with pytest.raises(RewardModelError) as e:  # the plane z = 2 is behind the camera
        lift_to_plane(np.array([[160.0, 120.0]]), cam, 2.0)
    assert e.value.reason == "out_of_bounds"
    with pytest.raises(ConfigError):
        PinholeCamera(K, np.eye(3), (240, 320))


# -------------------------------------------------------------------------------------------- oracle
def _goal_dir(scene):
    b, t = scene.position("block"), scene.position("target")
    u = t[:2] - b[:2]
    return b, t, u / np.linalg.norm(u)


def test_oracle_push_contact_is_behind_the_block_and_wrong_contact_is_mirrored(scene):
    b, t, u = _goal_dir(scene)
    plan = OracleKeypointProposer().propose(scene)
    wrong = OracleKeypointProposer(wrong_contact=True).propose(scene)
    assert plan.tracks == ("ee", "ee", "object") and len(plan) == 3
    contact, centre, goal = plan.waypoints
    assert (contact[:2] - b[:2]) @ u < -0.03  # behind the block w.r.t. the goal direction
    assert abs(contact[2] - b[2]) < 0.01  # at block height
    np.testing.assert_allclose(centre, b, atol=0.01)
    np.testing.assert_allclose(goal[:2], t[:2], atol=0.01)
    assert (wrong.waypoints[0, :2] - b[:2]) @ u > 0.03  # the wrong side
    np.testing.assert_allclose(wrong.waypoints[0], 2 * b - contact, atol=0.01)  # mirrored through the centre
    np.testing.assert_allclose(wrong.waypoints[1:], plan.waypoints[1:], atol=1e-9)
    # the image path: the plan's pixels are where the top camera sees the waypoints
    np.testing.assert_allclose(plan.pixels, scene.camera("top").project(plan.waypoints), atol=1e-6)


def test_oracle_pick_place_waypoints(env):
    e = TabletopEnv("pick-place")
    e.reset(seed=4)
    plan = OracleKeypointProposer(lift_height=0.08).propose(e)
    b, t = e.block_pos, e.target_pos
    assert plan.labels == ("grasp", "above_block", "above_goal", "goal")
    expected = [b, [b[0], b[1], 0.08], [t[0], t[1], 0.08], [t[0], t[1], b[2]]]
    np.testing.assert_allclose(plan.waypoints, expected, atol=0.01)
    with pytest.raises(ConfigError, match="no oracle"):
        OracleKeypointProposer(task="drawer-open").propose(e)


def test_oracle_noise_has_the_requested_scale(scene):
    clean = OracleKeypointProposer().propose(scene).waypoints
    noisy = OracleKeypointProposer(noise=0.05, rng=0)
    errs = np.stack([noisy.propose(scene).waypoints - clean for _ in range(300)])  # (300, 3, 3)
    std = errs.reshape(-1, 3).std(0)
    expected = 0.05 * (WORKSPACE_HIGH - WORKSPACE_LOW)
    np.testing.assert_allclose(std, expected, rtol=0.12)
    assert np.all(np.abs(errs.reshape(-1, 3).mean(0)) < 0.2 * expected)


# ----------------------------------------------------------------------------------------------- VLM
class FakeChat:
    """Returns the queued answers in order (raising queued RewardModelErrors) and records each call."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def chat(self, prompt, images=(), *, temperature=0.0, max_tokens=256, system=None):
        self.calls.append({"prompt": prompt, "images": list(images), "temperature": temperature})
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


def _answer(grasp="P1", target="Q1", pre=None, pre_h=None, **extra):
    return json.dumps({"grasp_keypoint": grasp, "target_keypoint": target, "pre_contact_tile": pre,
                       "pre_contact_height": pre_h, "post_contact_tile": None, "post_contact_height": None, **extra})


def _behind_label(ann, scene):
    """The P label on the far side of the block from the target (the right push contact)."""
    b, _, u = _goal_dir(scene)
    ps = {k: q for k, (_, q) in ann.keypoints.items() if k[0] == "P"}
    return min(ps, key=lambda k: (ps[k][:2] - b[:2]) @ u)


def test_vlm_good_answer_gives_the_expected_waypoints(scene):
    probe = VLMKeypointProposer(FakeChat(), image_size=SIZE)
    ann = probe.annotate(scene)
    label = _behind_label(ann, scene)
    client = FakeChat(f"Reasoning: push from behind.\n{_answer(label, 'Q1', 'c3', 'high')}")
    plan = VLMKeypointProposer(client, image_size=SIZE).propose(scene)
    b, t, u = _goal_dir(scene)
    assert plan.labels == (label, "c3@high", "Q1") and plan.tracks == ("ee", "object", "object")
    grasp, pre, target = plan.waypoints
    assert (grasp[:2] - b[:2]) @ u < -0.02 and abs(grasp[2] - b[2]) < 1e-6
    assert np.linalg.norm(grasp[:2] - b[:2]) < 0.05
    np.testing.assert_allclose(target, [t[0], t[1], b[2]], atol=0.01)
    centre = 0.5 * (WORKSPACE_LOW + WORKSPACE_HIGH)  # tile c3 is the middle of the 5x5 workspace grid
    np.testing.assert_allclose(pre[:2], centre[:2], atol=0.015)
    assert pre[2] == pytest.approx(0.10)
    call, = client.calls
    assert len(call["images"]) == 2 and "push the red block" in call["prompt"] and "P1" in call["prompt"]


def test_vlm_parses_fenced_json_and_skips_null_tiles(scene):
    client = FakeChat("Here you go:\n```json\n" + _answer("p1", "[Q2]") + "\n```\nDone.")
    plan = VLMKeypointProposer(client, image_size=SIZE).propose(scene)
    assert plan.labels == ("P1", "Q2") and len(plan) == 2
    np.testing.assert_allclose(plan.waypoints[0], scene.position("block"), atol=0.01)


@pytest.mark.parametrize("answer,reason", [
    (_answer("P42"), "out_of_bounds"),
    (_answer("P1", "P2"), "out_of_bounds"),
    (_answer(pre="f9", pre_h="low"), "out_of_bounds"),
    (_answer(pre="c3", pre_h="sky"), "out_of_bounds"),
    (_answer(pre="c3"), "malformed"),
    ("I would grasp the block on its left side and push it right.", "malformed"),
    ("{not json at all", "malformed"),
    (json.dumps({"keypoint": "P1"}), "malformed"),
    ("I'm sorry, but I can't help with controlling robots.", "refusal"),
    ("   ", "empty"),
])
def test_vlm_invalid_answers_raise_with_reason(scene, answer, reason):
    client = FakeChat(answer, answer, answer)
    prop = VLMKeypointProposer(client, image_size=SIZE, retries=2)
    with pytest.raises(RewardModelError) as e:
        prop.propose(scene)
    assert e.value.reason == reason
    assert len(client.calls) == 3 and prop.failures[reason] == 3


def test_vlm_retry_after_a_bad_answer_succeeds(scene):
    client = FakeChat("no idea", RewardModelError("timed out", reason="timeout"), _answer("P1", "Q1"))
    prop = VLMKeypointProposer(client, image_size=SIZE, retries=2)
    plan = prop.propose(scene)
    assert plan.labels == ("P1", "Q1") and len(client.calls) == 3
    assert prop.failures == {"malformed": 1, "timeout": 1}


def test_vlm_medoid_of_k_answers(scene):
    answers = [_answer("P1", "Q1"), "garbage", _answer("P2", "Q1", "c3", "mid"), _answer("P1", "Q3"),
               _answer("P1", "Q1", "b2", "low")]
    client = FakeChat(*answers)
    prop = VLMKeypointProposer(client, image_size=SIZE, samples=4, retries=1)
    plan = prop.propose(scene)
    assert len(client.calls) == 5 and all(c["temperature"] > 0 for c in client.calls)
    # grasp: P1 three times, P2 once -> P1; target: Q1 three times -> Q1; pre-contact in 2 of 4 answers: kept,
    # the medoid of two is the first
    assert plan.labels == ("P1", "c3@mid", "Q1")


def test_vlm_annotation_marks_and_saved_files(scene, tmp_path):
    client = FakeChat(_answer("P1", "Q1", "c3", "high"))
    prop = VLMKeypointProposer(client, image_size=SIZE, output_dir=tmp_path)
    ann = prop.annotate(scene)
    raw_top, raw_side = scene.image("top"), scene.image("side")
    assert ann.top.shape == raw_top.shape and ann.side.shape == raw_side.shape
    assert {k for k in ann.keypoints if k[0] == "P"} == {f"P{i}" for i in range(1, 10)}
    assert {k for k in ann.keypoints if k[0] == "Q"} == {f"Q{i}" for i in range(1, 6)}
    for label, (pix, _) in ann.keypoints.items():
        j, i = np.floor(pix).astype(int)
        assert np.any(ann.top[i, j] != raw_top[i, j]), label  # a dot is drawn there
    u0, v0, u1, v1 = ann.grid_rect
    assert np.any(ann.top[int(v0), int(u0):int(u1)] != raw_top[int(v0), int(u0):int(u1)])  # grid line
    assert np.mean(np.any(ann.side != raw_side, axis=-1)) > 0.002  # height lines
    plan = prop.propose(scene)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kagi_0001.json", "kagi_0001_plan.png", "kagi_0001_side.png", "kagi_0001_top.png"]
    saved = json.loads((tmp_path / "kagi_0001.json").read_text())
    assert saved["plan"]["labels"] == list(plan.labels) and saved["answers"] == [_answer("P1", "Q1", "c3", "high")]


# ------------------------------------------------------------------------------------------- rewards
def _states(ee, obj=None):
    """TabletopEnv-layout state vectors (T, 30) with the given ee and object positions."""
    ee = np.asarray(ee, float)
    s = np.zeros((len(ee), sum(n for _, n in STATE_KEYS)), np.float32)
    s[:, 0:3] = ee
    s[:, 4:7] = ee if obj is None else obj
    return s


def _polyline(points, step=0.005):
    out = []
    for a, b in zip(points[:-1], points[1:], strict=True):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out += [a + (b - a) * i / n for i in range(n)]
    return np.array(out + [points[-1]])


PLAN = KeypointPlan(np.array([[0.3, -0.1, 0.05], [0.3, 0.0, 0.05], [0.2, 0.05, 0.1]]), ("ee", "ee", "ee"))
START = np.array([0.2, -0.2, 0.15])


def test_state_layout_matches_tabletop():
    offsets, o = {}, 0
    for key, n in STATE_KEYS:
        offsets[key] = slice(o, o + n)
        o += n
    assert TABLETOP_POSITIONS == {"ee": offsets["ee_pos"], "object": offsets["block_pos"]}


def test_progress_reward_is_bounded_and_rises_along_the_path():
    K = len(PLAN)
    model = KeypointProgressReward(PLAN, delta=0.02)
    path = _polyline(np.vstack([START, PLAN.waypoints]))
    r = model(RewardQuery(states=_states(path))).reward
    assert r[0] == pytest.approx(-1.0) and r[-1] == pytest.approx(-1 / (K + 1), abs=1e-6)
    assert np.all(np.diff(r) >= -1e-6) and model.progress == K
    model.reset()
    rng = np.random.default_rng(0)
    r = model(RewardQuery(states=_states(rng.uniform(-0.5, 0.5, (500, 3))))).reward
    assert np.all(r >= -1 - 1e-6) and np.all(r <= -1 / (K + 1) + 1e-6)


def test_progress_resets_between_episodes_and_chunks_continue():
    model = KeypointProgressReward(PLAN, delta=0.02)
    path = _polyline(np.vstack([START, PLAN.waypoints]))
    whole = model(RewardQuery(states=_states(path))).reward
    assert model.progress == 3
    model.reset()
    assert model.progress == 0
    again = np.concatenate([model(RewardQuery(states=_states(path[lo:lo + 7]))).reward
                            for lo in range(0, len(path), 7)])
    np.testing.assert_allclose(again, whole, atol=1e-6)
    model.reset()  # a new episode that stays at its start gets the minimum
    np.testing.assert_allclose(model(RewardQuery(states=_states([START] * 3))).reward, -1.0)


def test_object_tracked_waypoints_follow_the_object():
    plan = KeypointPlan(np.array([[0.3, -0.15, 0.02], [0.3, 0.0, 0.02]]), ("ee", "object"))
    block = np.array([0.3, -0.12, 0.02])
    ee = _polyline(np.array([START, [0.3, -0.15, 0.02]]))
    states = _states(ee, np.tile(block, (len(ee), 1)))
    model = KeypointProgressReward(plan, delta=0.02)
    before = model(RewardQuery(states=states)).reward[-1]
    assert model.progress == 1
    moved = _states([[0.3, -0.07, 0.02]], [[0.3, -0.04, 0.02]])  # the pusher moved the block 8 cm
    after = model(RewardQuery(states=moved)).reward[0]
    assert after > before + 0.1


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_potential_shaping_telescopes(gamma):
    path = _polyline(np.vstack([START, PLAN.waypoints[:2], START]), step=0.01)  # reaches 2, then wanders back
    dense = KeypointProgressReward(PLAN, delta=0.02)
    phi = dense(RewardQuery(states=_states(path))).reward + 1.0
    pbrs = KeypointProgressReward(PLAN, delta=0.02, potential=True, gamma=gamma, beta=0.5, sparse_reward=-1.0)
    r = pbrs(RewardQuery(states=_states(path))).reward.astype(float)
    T = len(path)
    disc = gamma ** np.arange(T)
    # sum_t gamma^t r_t = sum_t gamma^t r_sparse + beta * (gamma^T Phi(s_T) - Phi(s_0)), Phi(s_0) = 0
    assert np.sum(disc * r) == pytest.approx(np.sum(disc * -1.0) + 0.5 * gamma**T * phi[-1], abs=1e-4)
    assert phi[-1] > 0.2  # the shaping did not vanish trivially


class FlakyProposer:
    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def propose(self, context):
        self.calls += 1
        o = self.outcomes.pop(0)
        if isinstance(o, Exception):
            raise o
        return o


def test_failing_proposer_invalid_before_a_plan_then_keeps_the_last_good_one():
    prop = FlakyProposer(RewardModelError("bad", reason="malformed"), PLAN, RewardModelError("x", reason="refusal"))
    model = KeypointProgressReward(proposer=prop, context=object(), refresh="episode", delta=0.02)
    q = RewardQuery(states=_states([START, START]), instruction="push")
    out = model(q)
    assert not out.valid.any() and out.reasons == ["malformed", "malformed"]
    model(q)  # no new proposal within the episode
    assert prop.calls == 1
    model.reset()
    assert model(q).valid.all() and model.current_plan("push") is PLAN
    model.reset()
    out = model(q)  # the proposer refuses: the last good plan stays
    assert out.valid.all() and prop.calls == 3 and model.plan_failures == {"malformed": 1, "refusal": 1}


def test_refresh_per_task_proposes_once_per_instruction():
    other = KeypointPlan(np.array([[0.1, 0.1, 0.1]]), ("ee",))
    prop = FlakyProposer(PLAN, other)
    model = KeypointProgressReward(proposer=prop, context=lambda: None, refresh="task")
    for instruction in ("push", "push", "push back", "push"):
        model.reset()
        model(RewardQuery(states=_states([START]), instruction=instruction))
    assert prop.calls == 2 and model.current_plan("push") is PLAN and model.current_plan("push back") is other


def test_bad_configs_raise():
    with pytest.raises(ConfigError):
        KeypointProgressReward()
    with pytest.raises(ConfigError):
        KeypointProgressReward(proposer=OracleKeypointProposer())
    with pytest.raises(ConfigError):
        KeypointProgressReward(PLAN, refresh="always")
    with pytest.raises(ConfigError):
        KeypointPlan(np.zeros((2, 3)), ("ee", "gripper"))
    with pytest.raises(ConfigError, match="tracks"):
        KeypointProgressReward(PLAN, positions={"object": slice(4, 7)})(RewardQuery(states=_states([START])))


class InvalidSuccess(RewardModel):
    needs = ("states",)

    def score(self, query):
        n = len(query)
        return RewardOutput(np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), reasons=["timeout"] * n)


def test_success_override():
    dense = KeypointProgressReward(PLAN, delta=0.02)
    model = SuccessOverrideReward(dense, lambda s: s[:, 0] > 0.25)  # "success" once ee x > 0.25
    assert model.stateful and model.needs == ("states",)
    path = _polyline(np.vstack([START, PLAN.waypoints]))
    out = model(RewardQuery(states=_states(path)))
    hit = path[:, 0] > 0.25
    assert hit.any() and not hit.all()
    np.testing.assert_allclose(out.reward[hit], 0.0)
    alone = KeypointProgressReward(PLAN, delta=0.02)(RewardQuery(states=_states(path))).reward
    np.testing.assert_allclose(out.reward[~hit], alone[~hit])  # the dense model saw every state in order
    assert np.all(out.reward[~hit] < 0) and np.array_equal(out.success, hit)
    broken = SuccessOverrideReward(KeypointProgressReward(PLAN, delta=0.02), InvalidSuccess())
    out = broken(RewardQuery(states=_states(path)))
    dense.reset()
    np.testing.assert_allclose(out.reward, dense(RewardQuery(states=_states(path))).reward)
    assert out.valid.all() and broken.success_metrics() == {"reward_model/success_fallback_timeout": len(path)}


def test_relabel_scores_stateful_model_episode_by_episode():
    path = _polyline(np.vstack([START, PLAN.waypoints]))
    obs = np.concatenate([_states(path), _states(path)])
    n, half = len(obs), len(path)
    terminals = np.zeros(n, bool)
    terminals[half - 1] = terminals[-1] = True
    data = Dataset(obs, np.zeros((n, 4), np.float32), np.zeros(n, np.float32), terminals, np.zeros(n, bool))
    model = KeypointProgressReward(PLAN, delta=0.02)
    model.batch_size = 16
    out = relabel(data, model)
    np.testing.assert_allclose(out.rewards[:half], out.rewards[half:])  # the second episode starts over
    assert out.rewards[0] == pytest.approx(-1.0) and out.rewards[half - 1] == pytest.approx(-0.25)


def _scripted_episode(wrapped, policy, seed):
    obs, _ = wrapped.reset(seed=seed)
    rewards, infos = [], []
    for _ in range(80):
        obs, r, terminated, truncated, info = wrapped.step(policy(obs))
        rewards.append(r)
        infos.append(info)
        if info["success"]:
            break
    return np.array(rewards), infos


def test_wrapper_dense_reward_rises_over_a_scripted_push():
    env = TabletopEnv("push", max_episode_steps=80)
    dense = KeypointProgressReward(proposer=OracleKeypointProposer(), context=lambda: env, delta=0.03)
    policy = scripted_policy(env)
    for seed in (0, 1):
        r, infos = _scripted_episode(RewardWrapper(env, dense), policy, seed)
        assert infos[-1]["success"] and all(i["reward_model"]["valid"] for i in infos)
        assert r[0] < -0.95 and r[-1] > -0.45 and r[-1] == r.max()  # contact, block moved, block near the goal
        assert np.all(r >= -1.0) and np.all(r <= -0.25)
        assert np.mean(np.diff(r) >= -1e-2) > 0.9 and dense.progress >= 2
    # with the success override, the success step gets 0 (terminal in the -1/0 convention)
    model = SuccessOverrideReward(dense, tabletop_block_success)
    r, infos = _scripted_episode(RewardWrapper(env, model, terminate_on_success=True), policy, 2)
    assert r[-1] == 0.0 and np.all(r[:-1] < 0) and infos[-1]["reward_model"]["success"]
    assert [i["reward_model"]["success"] for i in infos] == [i["success"] for i in infos]
    env.close()


def test_relabelled_demonstrations_get_the_rewards_they_got_online():
    """`for_dataset` plans each recorded episode on the scene its first reached state shows: relabelling recorded
    scripted pushes (two scenes, no live simulator behind them) repeats the online rewards exactly."""
    env = TabletopEnv("push", max_episode_steps=80)
    proposer = OracleKeypointProposer()
    model = SuccessOverrideReward(KeypointProgressReward(proposer=proposer, context=env), tabletop_block_success)
    wrapped, policy = RewardWrapper(env, model, terminate_on_success=True), scripted_policy(env)
    rows: dict[str, list] = {"obs": [], "next": [], "reward": [], "terminal": []}
    plans = []
    for seed in (3, 4):
        obs, _ = wrapped.reset(seed=seed)
        for _ in range(80):
            nxt, r, terminated, truncated, _ = wrapped.step(policy(obs))
            for k, v in zip(rows, (obs, nxt, r, terminated), strict=True):
                rows[k].append(v)
            obs = nxt
            if terminated or truncated:
                break
        plans.append(model.dense.current_plan(wrapped.instruction).waypoints)
    n = len(rows["reward"])
    data = Dataset(np.array(rows["obs"], np.float32), np.zeros((n, 4), np.float32), np.zeros(n, np.float32),
                   np.array(rows["terminal"]), np.zeros(n, bool), np.array(rows["next"], np.float32))
    offline = model.for_dataset()
    assert offline.dense is not model.dense and offline.dense.proposer is proposer
    out = relabel(data, offline, instruction=wrapped.instruction)
    np.testing.assert_allclose(out.rewards, rows["reward"], atol=1e-6)
    assert out.rewards.min() < -0.9 and (out.rewards == 0).sum() == 2
    np.testing.assert_allclose(offline.dense.current_plan(wrapped.instruction).waypoints, plans[-1], atol=1e-6)
    assert model.dense.current_plan(wrapped.instruction) is not None  # the online model's plans are untouched
    with pytest.raises(ConfigError, match="recorded scene has no 'top' image"):  # what a VLM proposer would need
        offline.dense.context.at(data.observations[0]).image("top")
    env.close()
