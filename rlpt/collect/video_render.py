"""`rlpt video render`: in-the-wild-style video clips from simulators with randomized appearance.

An offline stand-in for internet video (Something-Something-v2, Ego4D, YouTube) for action-free pretraining
(ContextWM, V-PTR): many short clips of varied bodies, behaviours and looks.

Domains:
  * dm_control suite domains (``cheetah``, ``walker``, ``hopper``, ``finger``, ``reacher``, ``cartpole``, ... or
    ``domain-task``), driven by Ornstein-Uhlenbeck noise or sinusoidal actions. Appearance: the skybox and
    floor textures are regenerated per clip by MuJoCo's own procedural builtins (gradient / checker / flat, with
    random colours, edge / cross / random-dot marks, compiled through `mujoco.MjSpec`), floor tint, texture
    repeat and reflectance (0-0.5), body, effector and decoration colours, light colour and direction,
    headlight, and camera position / orientation / field of view jitter.
  * ``tabletop-<task>`` (``push``, ``reach``, ``pick-place``, ``drawer-open``, ... see `rlpt.envs.tabletop.TASKS`):
    rlpt's WidowX-like arm run by the task's scripted policy with random noise, or by OU noise actions;
    appearance through `rlpt.envs.tabletop.randomize.Appearance` (table texture, colours, lights, background,
    camera jitter) and a random static camera (front, side, top by default; ``cameras`` picks others, e.g. the
    "workspace" camera that frames the block's start and goal regions).
  * ``tabletop-hand-push``: another embodiment in the same scene (a stand-in for human video): the arm is hidden
    and a mocap "hand" (palm and forearm, random skin or glove colour) pushes the block towards the target.

Appearance is a function of the clip's texture seed (drawn from ``texture_seeds``), so a held-out range of
texture seeds gives looks never seen in pretraining; behaviour and initial state come from ``(seed, clip)``.
Everything is deterministic given the arguments.

Output folder::

    manifest.jsonl          one JSON object per clip (see `render_videos`); `rlpt.data.video.open_videos` reads it
    render.json             the arguments, versions, counts per domain and timing
    <domain>/<clip>.mp4     RGB clip (mp4v)
    <domain>/<clip>.states.npy  (frames, state_dim) float32: qpos, qvel and mocap positions per frame
"""

from __future__ import annotations

import colorsys
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlpt.envs.rendering import setup_offscreen_rendering
from rlpt.errors import ConfigError

DMC_DEFAULT_TASKS = {
    "acrobot": "swingup", "ball_in_cup": "catch", "cartpole": "swingup", "cheetah": "run", "finger": "spin",
    "fish": "swim", "hopper": "hop", "humanoid": "walk", "manipulator": "bring_ball", "pendulum": "swingup",
    "point_mass": "easy", "quadruped": "walk", "reacher": "easy", "swimmer": "swimmer6", "walker": "walk",
}
DEFAULT_DOMAINS = ("cheetah", "walker", "hopper", "finger", "tabletop-push", "tabletop-hand-push")
DEFAULT_TEXTURE_SEEDS = (0, 1000)
DEFAULT_TABLETOP_CAMERAS = (("front", "side", "top"), (0.6, 0.25, 0.15))  # tabletop clips: cameras, probabilities
TABLETOP_VIDEO_CAMERAS = ("front", "side", "top", "workspace")  # static cameras a clip may be filmed from
FRAME_DT = 0.04  # target seconds between frames for dm_control domains (action repeat rounds to it)


def parse_texture_seeds(text: str | tuple[int, int]) -> tuple[int, int]:
    """"A:B" (B exclusive) -> (A, B)."""
    if isinstance(text, tuple):
        a, b = text
    else:
        parts = str(text).split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ConfigError(f"--texture-seeds: expected A:B with integers A < B (B exclusive), got {text!r}")
        a, b = int(parts[0]), int(parts[1])
    if not a < b:
        raise ConfigError(f"--texture-seeds: expected A < B, got {a}:{b}")
    return int(a), int(b)


def _hsv(rng: np.random.Generator, h=(0.0, 1.0), s=(0.3, 1.0), v=(0.2, 1.0)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v)))


def _small_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = rng.uniform(-max_angle, max_angle)
    return np.r_[np.cos(ang / 2), np.sin(ang / 2) * axis]


def _state(model, data) -> np.ndarray:
    return np.concatenate([data.qpos, data.qvel, data.mocap_pos.ravel()]).astype(np.float32)


def _state_layout(model) -> dict[str, int]:
    return {"qpos": int(model.nq), "qvel": int(model.nv), "mocap_pos": int(3 * model.nmocap)}


# ------------------------------------------------------------------------------------------ textures
def _procedural_texture(rng: np.random.Generator, skybox: bool, width: int, height: int) -> np.ndarray:
    """Texture bytes (flat uint8, MuJoCo's layout) from a random MuJoCo builtin, for a texture of the given
    size. Skyboxes are generated at a quarter of the face size and upsampled (cheap; invisible at 64x64)."""
    import mujoco

    builtins = ["gradient", "checker", "flat"]
    builtin = builtins[rng.choice(3, p=[0.45, 0.35, 0.2] if skybox else [0.25, 0.55, 0.2])]
    marks = ["none", "edge", "cross", "random"]
    mark = marks[rng.choice(4, p=[0.4, 0.25, 0.1, 0.25] if builtin != "flat" else [0.0, 0.3, 0.2, 0.5])]
    rgb1, rgb2, markrgb = _hsv(rng, s=(0.0, 1.0), v=(0.1, 1.0)), _hsv(rng, s=(0.0, 1.0), v=(0.0, 0.9)), _hsv(rng)
    density = float(rng.uniform(0.01, 0.25))
    factor = 4 if skybox and width % 4 == 0 else 1
    w = width // factor
    spec = mujoco.MjSpec()
    spec.add_texture(
        name="t", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX if skybox else mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=getattr(mujoco.mjtBuiltin, f"mjBUILTIN_{builtin.upper()}"), rgb1=rgb1, rgb2=rgb2,
        mark=getattr(mujoco.mjtMark, f"mjMARK_{mark.upper()}"), markrgb=markrgb, random=density,
        width=w, height=w if skybox else height // factor)
    data = spec.compile().tex_data
    if factor > 1:
        faces = data.reshape(6, w, w, 3).repeat(factor, axis=1).repeat(factor, axis=2)
        data = faces.reshape(-1)
    expected = width * height * 3
    if data.size != expected:  # an unusual texture size: fall back to a flat colour of the right size
        data = np.broadcast_to((rgb1 * 255).astype(np.uint8), (expected // 3, 3)).reshape(-1)
    return np.ascontiguousarray(data, dtype=np.uint8)


# ------------------------------------------------------------------------------------- dm_control
class DMCSource:
    """A dm_control domain with per-clip appearance randomization and random action behaviours."""

    def __init__(self, domain: str, task: str, size: int) -> None:
        from rlpt.envs.dmc import DMCEnv

        self.domain, self.task = domain, task
        self.env = DMCEnv(domain, task, task_kwargs={"time_limit": float("inf")}, render_mode="rgb_array",
                          width=size, height=size)
        dt = self.env.dm_env.control_timestep()
        self.repeat = max(1, round(FRAME_DT / dt))
        self.fps = 1.0 / (self.repeat * dt)
        m = self.env.physics.model
        self.model = m
        self._defaults = {k: getattr(m, k).copy() for k in (
            "mat_rgba", "mat_reflectance", "mat_texrepeat", "geom_rgba", "light_ambient", "light_diffuse",
            "light_specular", "light_pos", "light_dir", "cam_pos", "cam_quat", "cam_fovy", "cam_pos0", "cam_mat0")}
        self._head = (m.vis.headlight.ambient.copy(), m.vis.headlight.diffuse.copy())
        self._skybox = [i for i in range(m.ntex) if m.tex_type[i] == 2]  # mjTEXTURE_SKYBOX
        self._floor_tex = [i for i in range(m.ntex) if m.tex_type[i] == 0]  # mjTEXTURE_2D
        names = [m.mat(i).name for i in range(m.nmat)]
        self._mat_groups = {
            "floor": [i for i, n in enumerate(names) if n == "grid"],
            "self": [i for i, n in enumerate(names) if n.startswith("self")],
            "effector": [i for i, n in enumerate(names) if n.startswith("effector")],
            "other": [i for i, n in enumerate(names) if n in ("decoration", "eye") or n.startswith("target")],
        }
        self._plain_geoms = np.flatnonzero(m.geom_matid < 0)
        self.env.render()  # creates the GL context and camera, so textures can be uploaded later
        self.camera_id = self.env.camera_id

    def _upload(self, tex_ids: list[int]) -> None:
        import mujoco

        physics = self.env.physics
        gl = physics.contexts.gl
        with gl.make_current() as ctx:
            ctx.call(gl._platform_make_current)
            for t in tex_ids:
                ctx.call(mujoco.mjr_uploadTexture, physics.model.ptr, physics.contexts.mujoco.ptr, t)

    def randomize(self, rng: np.random.Generator) -> dict[str, Any]:
        """New looks from ``rng``: textures, colours, lighting, camera. Returns a short description."""
        import mujoco

        m, d = self.model, self._defaults
        for key, value in d.items():
            getattr(m, key)[:] = value
        for t in self._skybox + self._floor_tex:
            adr, w, h = int(m.tex_adr[t]), int(m.tex_width[t]), int(m.tex_height[t])
            n = w * h * int(m.tex_nchannel[t])
            if m.tex_nchannel[t] == 3:
                m.tex_data[adr:adr + n] = _procedural_texture(rng, t in self._skybox, w, h)
        self._upload(self._skybox + self._floor_tex)
        # A reflective floor costs a second render pass (about 5x the frame time on CPU): 30% of clips.
        reflective = bool(rng.uniform() < 0.3)
        for i in self._mat_groups["floor"]:
            m.mat_rgba[i, :3] = np.clip(_hsv(rng, s=(0.0, 0.6), v=(0.5, 1.0)), 0, 1)
            m.mat_reflectance[i] = rng.uniform(0.05, 0.5) if reflective else 0.0
            m.mat_texrepeat[i] = d["mat_texrepeat"][i] * rng.uniform(0.5, 3.0)
        self.env._camera.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(reflective)
        for group in ("self", "effector", "other"):
            base = _hsv(rng)
            for i in self._mat_groups[group]:
                m.mat_rgba[i, :3] = np.clip(base * rng.uniform(0.85, 1.15, 3), 0, 1)
        for g in self._plain_geoms:
            if m.geom_rgba[g, 3] > 0:
                m.geom_rgba[g, :3] = _hsv(rng)
        if m.nlight:
            m.light_diffuse[:] = np.clip(d["light_diffuse"] * rng.uniform(0.5, 1.3, (m.nlight, 1))
                                         * rng.uniform(0.8, 1.2, (m.nlight, 3)), 0, 1)
            m.light_ambient[:] = rng.uniform(0.0, 0.3, (m.nlight, 1))
            m.light_dir[:] = d["light_dir"] + rng.uniform(-0.4, 0.4, m.light_dir.shape)
            m.light_dir[:] /= np.maximum(np.linalg.norm(m.light_dir, axis=1, keepdims=True), 1e-6)
        m.vis.headlight.ambient[:] = rng.uniform(0.1, 0.5) * np.ones(3)
        m.vis.headlight.diffuse[:] = rng.uniform(0.3, 0.8) * np.ones(3)
        c = self.camera_id
        if c >= 0:
            # Tracking cameras (cheetah, walker, hopper) are placed from cam_pos0 / cam_mat0, fixed ones from
            # cam_pos / cam_quat: move both the same way.
            dist = float(np.linalg.norm(d["cam_pos"][c])) or 1.0
            shift = rng.uniform(-0.08, 0.08, 3) * dist
            turn = _small_rotation(rng, np.deg2rad(5))
            m.cam_pos[c] = d["cam_pos"][c] + shift
            m.cam_pos0[c] = d["cam_pos0"][c] + shift
            q = np.zeros(4)
            mujoco.mju_mulQuat(q, turn, d["cam_quat"][c])
            m.cam_quat[c] = q
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, turn)
            m.cam_mat0[c] = (rot.reshape(3, 3) @ d["cam_mat0"][c].reshape(3, 3)).reshape(-1)
            m.cam_fovy[c] = d["cam_fovy"][c] * rng.uniform(0.85, 1.15)
        return {"camera": int(c)}

    def clip(self, n_frames: int, app_rng: np.random.Generator, rng: np.random.Generator):
        """Render one clip: (frames (F, H, W, 3) uint8, states (F, D) float32, info dict)."""
        info = self.randomize(app_rng)
        env = self.env
        env.reset(seed=int(rng.integers(2**31)))
        low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
        dim = low.size
        behaviour = "ou" if rng.uniform() < 0.6 else "sine"
        if behaviour == "ou":
            theta, sigma = 0.15, rng.uniform(0.2, 0.6)
            a = rng.uniform(-1, 1, dim)
        else:
            freq, amp = rng.uniform(0.3, 3.0, dim), rng.uniform(0.3, 1.0, dim)
            phase = rng.uniform(0, 2 * np.pi, dim)
        physics = env.physics
        frames, states = [], []
        for t in range(n_frames):
            frames.append(env.render())
            states.append(_state(physics.model, physics.data))
            if t == n_frames - 1:
                break
            if behaviour == "ou":
                a = np.clip(a + theta * (0.0 - a) + sigma * rng.normal(size=dim), -1, 1)
            else:
                a = amp * np.sin(2 * np.pi * freq * (t * self.repeat * env.dm_env.control_timestep()) + phase)
            action = low + (a + 1.0) * 0.5 * (high - low)
            for _ in range(self.repeat):
                env.step(action)
        return np.stack(frames), np.stack(states), {
            **info, "behaviour": behaviour, "fps": round(self.fps, 3), "task": self.task,
            "state_layout": _state_layout(physics.model)}

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------------------ tabletop
def parse_cameras(cameras: tuple[str, ...] | list[str] | None) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """Tabletop cameras for clips and their probabilities: the default mix for None, else the given cameras
    (validated, duplicates dropped) drawn uniformly."""
    if cameras is None:
        return DEFAULT_TABLETOP_CAMERAS
    names = tuple(dict.fromkeys(str(c) for c in cameras))
    bad = [c for c in names if c not in TABLETOP_VIDEO_CAMERAS]
    if not names or bad:
        raise ConfigError(f"video render: --cameras expected one or more of {list(TABLETOP_VIDEO_CAMERAS)}, "
                          f"got {list(cameras)}")
    return names, None


def pick_camera(cameras: tuple[tuple[str, ...], tuple[float, ...] | None], app_rng: np.random.Generator) -> str:
    """One camera of ``parse_cameras``' result, drawn from the clip's appearance rng."""
    names, p = cameras
    return names[app_rng.choice(len(names), p=None if p is None else list(p))]


class TabletopSource:
    """rlpt's tabletop arm on one task: scripted (with noise) or OU-noise behaviour, randomized appearance."""

    def __init__(self, task: str, size: int, cameras: tuple[str, ...] | list[str] | None = None) -> None:
        from rlpt.envs.tabletop import TabletopEnv

        self.task, self.cameras = task, parse_cameras(cameras)
        self.env = TabletopEnv(task, obs_mode="state", image_size=size)
        self.fps = float(self.env.metadata["render_fps"])

    def clip(self, n_frames: int, app_rng: np.random.Generator, rng: np.random.Generator):
        from rlpt.envs.tabletop import scripted_policy

        env = self.env
        env.randomize(app_rng)
        camera = pick_camera(self.cameras, app_rng)
        env.reset(seed=int(rng.integers(2**31)))
        if rng.uniform() < 0.75:
            noise = float(rng.uniform(0.0, 0.4))
            behaviour, policy = f"scripted(noise={noise:.2f})", scripted_policy(env, noise=noise, rng=rng)
        else:
            behaviour, a = "ou", rng.uniform(-1, 1, 4)

            def policy(_obs):
                nonlocal a
                a = np.clip(a - 0.15 * a + 0.4 * rng.normal(size=4), -1, 1)
                return a
        frames, states = [], []
        for t in range(n_frames):
            frames.append(env.render_camera(camera))
            states.append(_state(env.model, env.data))
            if t < n_frames - 1:
                env.step(policy(None))
        return np.stack(frames), np.stack(states), {
            "camera": camera, "behaviour": behaviour, "fps": self.fps, "task": self.task,
            "state_layout": _state_layout(env.model)}

    def close(self) -> None:
        self.env.close()


class HandPushSource:
    """The tabletop scene with the arm hidden and a mocap "hand" pushing the block (another embodiment)."""

    PALM = 0.022  # palm sphere radius (m)

    def __init__(self, size: int, cameras: tuple[str, ...] | list[str] | None = None) -> None:
        setup_offscreen_rendering()
        self.cameras = parse_cameras(cameras)
        import mujoco

        from rlpt.envs.tabletop.env import ASSET_PATH
        from rlpt.envs.tabletop.randomize import Appearance

        spec = mujoco.MjSpec.from_file(str(ASSET_PATH))
        hand = spec.worldbody.add_body(name="hand", mocap=True, pos=[0.25, 0.0, 0.2])
        hand.add_geom(name="palm", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[self.PALM, 0, 0],
                      rgba=[0.8, 0.6, 0.5, 1], contype=1, conaffinity=1, condim=3, friction=[0.8, 0.005, 0.0001])
        hand.add_geom(name="fingers", type=mujoco.mjtGeom.mjGEOM_ELLIPSOID, pos=[0.0, 0.0, 0.012],
                      size=[0.03, 0.026, 0.012], rgba=[0.8, 0.6, 0.5, 1], contype=0, conaffinity=0)
        hand.add_geom(name="forearm", type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0.0, 0.0, 0.02, 0.14, 0.0, 0.3],
                      size=[0.02, 0, 0], rgba=[0.8, 0.6, 0.5, 1], contype=0, conaffinity=0)
        self.model = m = spec.compile()
        self.data = mujoco.MjData(m)
        base = m.body("base_link").id
        arm_geoms = np.flatnonzero(m.body_rootid[m.geom_bodyid] == base)
        m.geom_group[arm_geoms] = 4  # not drawn (the renderer shows groups 0-2)
        m.geom_contype[arm_geoms] = 0
        m.geom_conaffinity[arm_geoms] = 0
        self._hand_geoms = [m.geom(n).id for n in ("palm", "fingers", "forearm")]
        self._hand_mocap = int(m.body_mocapid[m.body("hand").id])
        self._target_mocap = int(m.body_mocapid[m.body("target").id])
        self._block_qadr = int(m.jnt_qposadr[m.joint("block").id])
        self._drawer_qadr = int(m.jnt_qposadr[m.joint("drawer").id])
        self._cabinet = m.body("cabinet").id
        self.appearance = Appearance(m)
        self.appearance.target_visual = "disc"
        self.renderer = mujoco.Renderer(m, height=size, width=size)
        for f in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                  mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG):
            self.renderer.scene.flags[f] = 0
        self.fps = 10.0
        self.substeps = 20

    def _reset(self, rng: np.random.Generator) -> None:
        import mujoco

        from rlpt.envs.tabletop import tasks as T

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        a = self._block_qadr
        yaw = rng.uniform(-0.3, 0.3)
        d.qpos[a:a + 3] = [*rng.uniform(*T.REGION_A), T.BLOCK_HALF]
        d.qpos[a + 3:a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.qpos[self._drawer_qadr] = rng.uniform(0.0, 0.09)
        m.body_pos[self._cabinet, 0] = rng.uniform(*T.CABINET_X)
        d.mocap_pos[self._target_mocap] = [*rng.uniform(*T.REGION_B), 0.0]
        d.mocap_pos[self._hand_mocap] = [rng.uniform(0.15, 0.35), rng.uniform(-0.2, 0.2), rng.uniform(0.1, 0.2)]
        mujoco.mj_forward(m, d)

    def _move(self, goal: np.ndarray, speed: float) -> None:
        """Move the hand towards ``goal`` by at most ``speed`` m this step, interpolated over the substeps."""
        import mujoco

        d = self.data
        pos = d.mocap_pos[self._hand_mocap].copy()
        delta = goal - pos
        dist = float(np.linalg.norm(delta))
        if dist > speed:
            delta *= speed / dist
        for k in range(1, self.substeps + 1):
            d.mocap_pos[self._hand_mocap] = pos + delta * k / self.substeps
            mujoco.mj_step(self.model, d)

    def clip(self, n_frames: int, app_rng: np.random.Generator, rng: np.random.Generator):
        m, d = self.model, self.data
        self.appearance.randomize(app_rng)
        skin = colorsys.hsv_to_rgb(app_rng.uniform(0.02, 0.1), app_rng.uniform(0.2, 0.6), app_rng.uniform(0.3, 0.95))
        colour = np.array(skin) if app_rng.uniform() < 0.7 else _hsv(app_rng)  # bare hand or a glove
        m.geom_rgba[self._hand_geoms, :3] = colour
        m.geom_rgba[self._hand_geoms[2], :3] = np.clip(colour * app_rng.uniform(0.6, 1.1), 0, 1)  # sleeve tint
        camera = pick_camera(self.cameras, app_rng)
        self._reset(rng)
        speed = rng.uniform(0.01, 0.02)
        wobble = rng.uniform(0.0, 0.01)
        phase, wander = 0, None
        frames, states = [], []
        z_low, z_high = self.PALM + 0.003, 0.09
        for t in range(n_frames):
            self.renderer.update_scene(d, camera=camera)
            frames.append(self.renderer.render().copy())
            states.append(_state(m, d))
            if t == n_frames - 1:
                break
            hand = d.mocap_pos[self._hand_mocap]
            block = d.qpos[self._block_qadr:self._block_qadr + 2]
            target = d.mocap_pos[self._target_mocap, :2]
            u = target - block
            u_norm = float(np.linalg.norm(u))
            u = u / max(u_norm, 1e-6)
            behind = block - u * (0.02 + self.PALM + 0.01)
            if phase == 0:  # travel above the point behind the block
                goal = np.r_[behind, z_high]
                if np.linalg.norm(hand[:2] - behind) < 0.01:
                    phase = 1
            elif phase == 1:  # come down behind it
                goal = np.r_[behind, z_low]
                if hand[2] < z_low + 0.005:
                    phase = 2
            elif phase == 2:  # push through the block towards the target
                goal = np.r_[block + u * 0.03, z_low]
                side = np.array([-u[1], u[0]]) @ (hand[:2] - block)
                if u_norm < 0.015 or abs(side) > 0.03 or np.linalg.norm(hand[:2] - block) > 0.08:
                    phase = 3 if u_norm < 0.015 else 0
            else:  # done: lift and wander
                if wander is None:
                    wander = np.r_[rng.uniform(0.15, 0.35), rng.uniform(-0.2, 0.2), rng.uniform(0.1, 0.2)]
                goal = wander
            goal = goal + np.r_[rng.normal(0, wobble, 2), 0.0]
            self._move(goal, speed)
        return np.stack(frames), np.stack(states), {
            "camera": camera, "behaviour": "scripted-push", "fps": self.fps, "task": "hand-push",
            "state_layout": _state_layout(m)}

    def close(self) -> None:
        self.renderer.close()


# ------------------------------------------------------------------------------------------- driver
def make_source(domain: str, size: int, cameras: tuple[str, ...] | list[str] | None = None):
    """The renderer for a domain name: "cheetah", "walker-run", "tabletop-push", "tabletop-hand-push", ...
    ``cameras``: the tabletop domains' static cameras (`parse_cameras`); dm_control domains keep their own."""
    if domain == "tabletop-hand-push":
        return HandPushSource(size, cameras)
    if domain.startswith("tabletop-"):
        from rlpt.envs.tabletop import TASKS

        task = domain.removeprefix("tabletop-")
        if task not in TASKS:
            raise ConfigError(f"video render: unknown tabletop task {task!r} in domain {domain!r}; expected "
                              f"tabletop-<task> with task in {sorted(TASKS)} or tabletop-hand-push")
        return TabletopSource(task, size, cameras)
    name, _, task = domain.partition("-")
    task = task or DMC_DEFAULT_TASKS.get(name, "")
    from rlpt.envs.dmc import dmc_tasks

    if f"{name}-{task}" not in dmc_tasks():
        raise ConfigError(f"video render: unknown domain {domain!r}; expected a dm_control domain "
                          f"({', '.join(sorted(DMC_DEFAULT_TASKS))}) or domain-task, tabletop-<task>, or "
                          "tabletop-hand-push")
    return DMCSource(name, task, size)


def render_videos(out: str | os.PathLike, domains: tuple[str, ...] | list[str] = DEFAULT_DOMAINS, clips: int = 100,
                  frames: int = 50, size: int = 64, seed: int = 0,
                  texture_seeds: tuple[int, int] | str = DEFAULT_TEXTURE_SEEDS,
                  cameras: tuple[str, ...] | list[str] | None = None, force: bool = False,
                  quiet: bool | None = None) -> Path:
    """Render ``clips`` clips of ``frames`` frames at ``size`` x ``size``, domains taken in turn; return the
    manifest path.

    Clip ``i`` uses domain ``domains[i % len(domains)]``, a texture seed drawn uniformly from ``texture_seeds``
    ``(A, B)`` (B exclusive) by ``np.random.default_rng([seed, i])`` (which then drives the initial state and
    behaviour); the appearance comes from ``np.random.default_rng(texture_seed)`` alone. Each manifest line:
    ``path``, ``frames``, ``fps``, ``domain``, ``task``, ``texture_seed``, ``clip_seed`` ([seed, i]),
    ``behaviour``, ``camera``, ``states`` (.npy, (frames, qpos + qvel + mocap_pos) float32), ``state_layout``.

    ``cameras`` (tabletop domains): the static cameras a clip is filmed from, one drawn uniformly per clip by the
    appearance rng; None keeps the default mix (front 0.6, side 0.25, top 0.15).

    The folder is written under ``<out>.partial`` and moved into place at the end.
    """
    from rlpt.media import write_video
    from rlpt.runs import progress
    from rlpt.utils import replace_dir, write_json, write_text_atomic

    setup_offscreen_rendering()
    domains = list(domains)
    if not domains:
        raise ConfigError("video render: --domains needs at least one domain")
    if clips < 1 or frames < 1 or size < 8:
        raise ConfigError(f"video render: expected clips >= 1, frames >= 1 and size >= 8, got clips={clips}, "
                          f"frames={frames}, size={size}")
    a, b = parse_texture_seeds(texture_seeds)
    camera_mix = parse_cameras(cameras)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"video render: {out} exists and is not empty; pass --force to replace it")
    sources = {d: make_source(d, size, cameras) for d in dict.fromkeys(domains)}  # validates every name first
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    t0 = time.time()
    lines: list[str] = []
    per_domain: dict[str, int] = {}
    try:
        for i in progress(range(clips), desc="video render", quiet=quiet):
            domain = domains[i % len(domains)]
            rng = np.random.default_rng([seed, i])
            texture_seed = a + int(rng.integers(b - a))
            app_rng = np.random.default_rng(texture_seed)
            video, states, info = sources[domain].clip(frames, app_rng, rng)
            folder = domain.replace("/", "_")
            rel = f"{folder}/{i:06d}.mp4"
            write_video(staging / rel, video, fps=info["fps"])
            np.save(staging / f"{folder}/{i:06d}.states.npy", states)
            per_domain[domain] = per_domain.get(domain, 0) + 1
            lines.append(json.dumps({
                "path": rel, "frames": int(video.shape[0]), "fps": info["fps"], "domain": domain,
                "task": info["task"], "texture_seed": texture_seed, "clip_seed": [seed, i],
                "behaviour": info["behaviour"], "camera": info["camera"], "size": size,
                "states": f"{folder}/{i:06d}.states.npy", "state_layout": info["state_layout"]}))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for s in sources.values():
            s.close()
    manifest = staging / "manifest.jsonl"
    write_text_atomic(manifest, "\n".join(lines) + "\n")
    import cv2
    import mujoco

    write_json(staging / "render.json", {
        "command": (f"rlpt video render --out {out} --domains {' '.join(domains)} --clips {clips} --frames {frames} "
                    f"--size {size} --seed {seed} --texture-seeds {a}:{b}"
                    + (f" --cameras {' '.join(camera_mix[0])}" if cameras is not None else "")),
        "domains": domains, "clips": clips, "frames": frames, "size": size, "seed": seed,
        "tabletop_cameras": {"cameras": list(camera_mix[0]), "probabilities": list(camera_mix[1]) if camera_mix[1]
                             else None},
        "texture_seeds": [a, b], "clips_per_domain": per_domain, "seconds": round(time.time() - t0, 1),
        "gl_backend": setup_offscreen_rendering(), "codec": "mp4v",
        "versions": {"python": platform.python_version(), "mujoco": mujoco.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__},
        "note": "appearance = f(texture_seed); use a disjoint --texture-seeds range for held-out looks",
    })
    replace_dir(staging, out)
    return out / "manifest.jsonl"



# ------------------------------------------------------------------------------- target-task episodes
def collect_target_episodes(domain_task: str = "cartpole-swingup", episodes: int = 10, steps: int = 200,
                            size: int = 32, texture_seeds: tuple[int, int] | str = (5000, 6000), seed: int = 0,
                            action_repeat: int = 2, behaviour: str = "ou", quiet: bool | None = None):
    """Episodes of a dm_control task from pixels, with actions, rewards and true physics states, under
    randomized looks (e.g. texture seeds held out of video pretraining), for world-model fine-tuning and probes.

    Episode ``k`` draws its texture seed from ``texture_seeds`` ``(A, B)`` (B exclusive; distinct seeds per episode
    while the range allows) with ``np.random.default_rng([seed, k])``, which then drives the initial state and the
    actions; the looks come from ``np.random.default_rng(texture_seed)`` alone, as in `render_videos`. Actions are
    Ornstein-Uhlenbeck noise (``behaviour="ou"``: theta 0.15, sigma 0.5, in [-1, 1] then mapped to the action
    bounds) or i.i.d. uniform (``"uniform"``); each is repeated ``action_repeat`` physics steps and the rewards of
    the repeats are summed (as `rlpt.envs` pixel envs with ``action_repeat`` do).

    Returns an `rlpt.data.Dataset` in the D4RL row layout: row i holds the frame o_i (uint8 ``(size, size, 3)``
    observations), the action a_i taken there, the reward r_i received for it, ``timeouts`` closing each episode of
    ``steps`` rows, ``next_observations`` (o_{i+1}), and ``infos``: ``states`` (qpos, qvel at o_i, float32),
    ``next_states``, ``texture_seed`` and ``episode`` (per row). ``metadata`` records the arguments."""
    from rlpt.data.dataset import Dataset
    from rlpt.runs import progress

    if episodes < 1 or steps < 2 or size < 8 or action_repeat < 1:
        raise ConfigError(f"collect_target_episodes: expected episodes >= 1, steps >= 2, size >= 8 and "
                          f"action_repeat >= 1, got {episodes}, {steps}, {size}, {action_repeat}")
    if behaviour not in ("ou", "uniform"):
        raise ConfigError(f"collect_target_episodes: behaviour must be 'ou' or 'uniform', got {behaviour!r}")
    a_lo, b_hi = parse_texture_seeds(texture_seeds)
    name, _, task = domain_task.partition("-")
    source = make_source(f"{name}-{task or DMC_DEFAULT_TASKS.get(name, '')}", size)
    if not isinstance(source, DMCSource):
        source.close()
        raise ConfigError(f"collect_target_episodes: {domain_task!r} is not a dm_control task (e.g. cartpole-swingup)")
    env, used = source.env, set()
    obs, next_obs, acts, rews, states, next_states, tex, ep_ids = [], [], [], [], [], [], [], []
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    try:
        for k in progress(range(episodes), desc=f"collect {domain_task}", quiet=quiet):
            rng = np.random.default_rng([seed, k])
            texture_seed = a_lo + int(rng.integers(b_hi - a_lo))
            while texture_seed in used and len(used) < b_hi - a_lo:
                texture_seed = a_lo + int(rng.integers(b_hi - a_lo))
            used.add(texture_seed)
            source.randomize(np.random.default_rng(texture_seed))
            env.reset(seed=int(rng.integers(2**31)))
            physics = env.physics
            frames = [env.render()]  # (S, S, 3) uint8 each
            st = [np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float32)]
            unit = rng.uniform(-1, 1, low.size)
            for _ in range(steps):
                if behaviour == "ou":
                    unit = np.clip(unit - 0.15 * unit + 0.5 * rng.normal(size=low.size), -1, 1)
                else:
                    unit = rng.uniform(-1, 1, low.size)
                action = low + (unit + 1.0) * 0.5 * (high - low)
                reward = 0.0
                for _ in range(action_repeat):
                    reward += env.step(action)[1]
                acts.append(action.astype(np.float32))
                rews.append(reward)
                frames.append(env.render())
                st.append(np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float32))
            obs.extend(frames[:-1])
            next_obs.extend(frames[1:])
            states.extend(st[:-1])
            next_states.extend(st[1:])
            tex.extend([texture_seed] * steps)
            ep_ids.extend([k] * steps)
    finally:
        source.close()
    n = len(obs)
    timeouts = np.zeros(n, bool)
    timeouts[steps - 1::steps] = True
    return Dataset(
        observations=np.stack(obs), actions=np.stack(acts), rewards=np.asarray(rews, np.float32),
        terminals=np.zeros(n, bool), timeouts=timeouts, next_observations=np.stack(next_obs),
        infos={"states": np.stack(states), "next_states": np.stack(next_states),
               "texture_seed": np.asarray(tex, np.int64), "episode": np.asarray(ep_ids, np.int64)},
        metadata={"source": f"collect_target_episodes({domain_task})", "env_id": f"dmc/{domain_task}",
                  "episodes": episodes, "steps": steps, "size": size, "texture_seeds": [a_lo, b_hi], "seed": seed,
                  "action_repeat": action_repeat, "behaviour": behaviour, "state_layout": "qpos, qvel"})
