"""`TabletopEnv`: rlpt's own MuJoCo tabletop manipulation family (WidowX-250-like arm).

The scene (``rlpt/envs/assets/tabletop.xml``) holds a 6-DoF arm with the wx250s joint layout and a
two-finger gripper, a 4 cm block (free joint), a target marker (mocap, no collision) and a drawer
(slide joint with a post handle) on a table. Physics runs at 200 Hz; one env step is 20 physics
steps, i.e. a 10 Hz control rate.

Control:
  ``control="ee_delta"`` (default, BridgeData-style "3trans"): action ``[dx, dy, dz, gripper]`` in
  [-1, 1]. The translation is scaled by ``max_step`` (2 cm), added to the previous end-effector
  target, clipped to the workspace box and converted to joint targets by damped-least-squares IK on
  the TCP site Jacobian (``mujoco.mj_jacSite``), with the gripper kept pointing straight down
  (fixed orientation, fingers closing along world y). ``gripper`` is absolute: +1 open, -1 closed.
  ``control="joint_pos"``: action ``[dq_1..dq_6, gripper]`` in [-1, 1]; joint deltas scaled to
  0.1 rad per step, gripper as above.

Observations (``obs_mode``):
  ``"state"``: float32 vector (see ``STATE_KEYS``): ee pos (3), gripper opening (1), block pos (3),
  block quat (4, w x y z), target pos (3), drawer opening (1), handle pos (3), block - ee (3),
  target - block (3), target - ee (3), handle - ee (3); 30 values.
  ``"pixels"``: uint8 (H, W, 3) image from ``camera``; ``"state+pixels"``: Dict {"state", "pixels"}.
"""

from __future__ import annotations

import atexit
import weakref
from pathlib import Path
from typing import Any

from rlpt.envs.rendering import setup_offscreen_rendering

setup_offscreen_rendering()

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from rlpt.envs.tabletop import tasks as T  # noqa: E402
from rlpt.envs.tabletop.randomize import Appearance  # noqa: E402
from rlpt.envs.tabletop.tasks import TASKS, TaskSpec  # noqa: E402
from rlpt.errors import EnvSpecError  # noqa: E402

ASSET_PATH = Path(__file__).resolve().parent.parent / "assets" / "tabletop.xml"

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
FINGER_CLOSED, FINGER_OPEN = 0.015, 0.037  # finger joint targets (m); gap = 2 * value
CAMERAS = ("front", "side", "top", "wrist", "workspace")
OBS_MODES = ("state", "pixels", "state+pixels")
CONTROLS = ("ee_delta", "joint_pos")
REWARDS = ("dense", "sparse")
STATE_KEYS = (
    ("ee_pos", 3), ("gripper_opening", 1), ("block_pos", 3), ("block_quat", 4), ("target_pos", 3),
    ("drawer_opening", 1), ("handle_pos", 3), ("block_minus_ee", 3), ("target_minus_block", 3),
    ("target_minus_ee", 3), ("handle_minus_ee", 3),
)
STATE_DIM = sum(n for _, n in STATE_KEYS)

# End-effector workspace (m). z_min keeps the fingertips ~8 mm above the table. The far top corners
# (x > 0.38 and z > 0.2 together) are slightly out of reach; IK then does its least-squares best.
WORKSPACE_LOW = np.array([0.12, -0.25, 0.02])
WORKSPACE_HIGH = np.array([0.40, 0.25, 0.22])
# Gripper pointing down: tool x axis -> world -z, fingers along world y (BridgeData's D matrix).
EE_DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
_IK_SEED = np.array([0.0, -0.3, 0.6, 0.0, 1.2, 0.0])


# Envs holding GL renderers are closed at exit before MuJoCo's EGL atexit hook terminates the display
# (avoids noisy errors from Renderer.__del__). The hook is registered after the first GL context, and
# atexit runs hooks last-in first-out, so ours is registered after the first renderer exists.
_RENDERING_ENVS: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_renderers() -> None:
    for env in list(_RENDERING_ENVS):
        env.close()


def _sum_cross(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """sum_i cross(A[:, i], B[:, i]) for 3x3 matrices (np.cross is slow for tiny arrays)."""
    return np.array([
        A[1] @ B[2] - A[2] @ B[1],
        A[2] @ B[0] - A[0] @ B[2],
        A[0] @ B[1] - A[1] @ B[0],
    ])


def _choice_error(what: str, got: Any, valid) -> EnvSpecError:
    return EnvSpecError(f"tabletop: unknown {what} {got!r}; expected one of {sorted(valid)}")


class TabletopEnv(gym.Env):
    """WidowX-like tabletop manipulation env (reach, push, pick-place, drawer and their reverses).

    Args:
        task: a key of ``TASKS``.
        obs_mode: "state", "pixels" or "state+pixels".
        control: "ee_delta" (4-d action) or "joint_pos" (7-d action).
        reward: "dense" (shaped, see ``rlpt.envs.tabletop.tasks.TASKS_DOC``) or "sparse" (1.0 on success).
        image_size: side of square pixel observations (and of ``render()``); an int or (H, W).
        camera: "front", "side", "top", "wrist" or "workspace" (closer, from above the block's start and goal
            regions: the task fills the frame, for low-resolution pixel observations).
        render_mode: None or "rgb_array".
        max_episode_steps: truncation length; default per task (``TaskSpec.max_episode_steps``).
        terminate_on_success: end the episode (terminated=True) when the success predicate holds.
        max_step: end-effector translation per step at action magnitude 1 (m).

    ``info`` carries ``success`` / ``is_success`` (bool), ``reward_dense``, ``reward_sparse`` and ``task``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "reach",
        obs_mode: str = "state",
        control: str = "ee_delta",
        reward: str = "dense",
        image_size: int | tuple[int, int] = 64,
        camera: str = "front",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = False,
        max_step: float = 0.02,
    ) -> None:
        if task not in TASKS:
            raise _choice_error("task", task, TASKS)
        if obs_mode not in OBS_MODES:
            raise _choice_error("obs_mode", obs_mode, OBS_MODES)
        if control not in CONTROLS:
            raise _choice_error("control", control, CONTROLS)
        if reward not in REWARDS:
            raise _choice_error("reward", reward, REWARDS)
        if camera not in CAMERAS:
            raise _choice_error("camera", camera, CAMERAS)
        if render_mode not in (None, "rgb_array"):
            raise _choice_error("render_mode", render_mode, ["rgb_array", "None"])
        self.image_size = self._parse_size(image_size)
        if max(self.image_size) > 512:
            raise EnvSpecError(f"tabletop: image_size must be at most 512 pixels; got {image_size!r}")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise EnvSpecError(f"tabletop: max_episode_steps must be >= 1; got {max_episode_steps!r}")

        self.obs_mode, self.control, self.reward_type = obs_mode, control, reward
        self.camera, self.render_mode = camera, render_mode
        self.terminate_on_success = bool(terminate_on_success)
        self.max_step = float(max_step)
        self._user_max_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.substeps = 20

        self.model = mujoco.MjModel.from_xml_path(str(ASSET_PATH))
        self.data = mujoco.MjData(self.model)
        self._ik_data = mujoco.MjData(self.model)
        m = self.model
        jid = [m.joint(n).id for n in ARM_JOINTS]
        self._arm_qadr = m.jnt_qposadr[jid].copy()
        self._arm_dadr = m.jnt_dofadr[jid].copy()
        self._arm_lo, self._arm_hi = m.jnt_range[jid, 0].copy(), m.jnt_range[jid, 1].copy()
        self._finger_qadr = [m.jnt_qposadr[m.joint(n).id] for n in ("left_finger", "right_finger")]
        self._finger_dadr = [m.jnt_dofadr[m.joint(n).id] for n in ("left_finger", "right_finger")]
        self._drawer_qadr = m.jnt_qposadr[m.joint("drawer").id]
        self._drawer_dadr = m.jnt_dofadr[m.joint("drawer").id]
        self._block_qadr = m.jnt_qposadr[m.joint("block").id]
        self._block_dadr = m.jnt_dofadr[m.joint("block").id]
        self._ee_sid = m.site("ee").id
        self._handle_sid = m.site("handle").id
        self._cabinet_bid = m.body("cabinet").id
        self._target_mocap = m.body_mocapid[m.body("target").id]
        self._target_geoms = {"disc": m.geom("target_disc").id, "ball": m.geom("target_ball").id}
        self._cam_ids = {c: m.camera(c).id for c in CAMERAS}
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.appearance = Appearance(m)
        self._home_q = self._solve_ik(T.HOME_EE, _IK_SEED, iters=200)
        self._q_target = self._home_q.copy()
        self._ee_target = T.HOME_EE.copy()
        self._finger_target = FINGER_OPEN
        self._elapsed = 0
        self._has_reset = False

        self.set_task(task)
        self.action_space = spaces.Box(-1.0, 1.0, (4 if control == "ee_delta" else 7,), np.float32)
        state_space = spaces.Box(-10.0, 10.0, (STATE_DIM,), np.float32)  # metres; the scene is ~1 m wide
        pixel_space = spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        if obs_mode == "state":
            self.observation_space = state_space
        elif obs_mode == "pixels":
            self.observation_space = pixel_space
        else:
            self.observation_space = spaces.Dict({"state": state_space, "pixels": pixel_space})
        mujoco.mj_resetData(m, self.data)
        self._write_arm(self._home_q, FINGER_OPEN)
        mujoco.mj_forward(m, self.data)

    # ------------------------------------------------------------------------------------ config
    @staticmethod
    def _parse_size(size) -> tuple[int, int]:
        try:
            hw = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        except (TypeError, ValueError):
            hw = ()
        if len(hw) != 2 or min(hw) < 1:
            raise EnvSpecError(f"tabletop: image_size must be a positive int or (H, W); got {size!r}")
        return hw  # type: ignore[return-value]

    @property
    def task(self) -> TaskSpec:
        """The current task's spec."""
        return self._task

    @property
    def task_name(self) -> str:
        """The current task's name."""
        return self._task.name

    @property
    def max_episode_steps(self) -> int:
        """Episode length before truncation."""
        return self._user_max_steps or self._task.max_episode_steps

    def set_task(self, name: str) -> None:
        """Switch task in place (e.g. to its reverse) without touching the physical state.

        The new goal is sampled at the next ``reset`` (use ``options={"reset_free": True}`` to keep the
        scene).
        """
        if name not in TASKS:
            raise _choice_error("task", name, TASKS)
        self._task = TASKS[name]
        self.appearance.target_visual = self._task.target_visual
        self.appearance.apply_target_visibility()

    # ------------------------------------------------------------------------------- scene state
    @property
    def ee_pos(self) -> np.ndarray:
        """Tool centre point position (3,)."""
        return self.data.site_xpos[self._ee_sid].copy()

    @property
    def gripper_opening(self) -> float:
        """Finger gap in metres (0.03 closed ... 0.074 open)."""
        return float(self.data.qpos[self._finger_qadr[0]] + self.data.qpos[self._finger_qadr[1]])

    @property
    def block_pos(self) -> np.ndarray:
        return self.data.qpos[self._block_qadr:self._block_qadr + 3].copy()

    @property
    def block_quat(self) -> np.ndarray:
        return self.data.qpos[self._block_qadr + 3:self._block_qadr + 7].copy()

    @property
    def target_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._target_mocap].copy()

    @property
    def drawer_q(self) -> float:
        """Drawer opening in metres (0 closed ... 0.09 fully open)."""
        return float(self.data.qpos[self._drawer_qadr])

    @property
    def handle_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._handle_sid].copy()

    def handle_pos_at(self, q: float) -> np.ndarray:
        """Handle position when the drawer opening is ``q`` (m)."""
        return self.handle_pos + np.array([0.0, -(q - self.drawer_q), 0.0])

    def set_block(self, xy, yaw: float = 0.0) -> None:
        """Place the block on the table at ``xy`` with heading ``yaw`` (rad), at rest."""
        a = self._block_qadr
        self.data.qpos[a:a + 3] = [xy[0], xy[1], T.BLOCK_HALF]
        self.data.qpos[a + 3:a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[self._block_dadr:self._block_dadr + 6] = 0.0
        mujoco.mj_kinematics(self.model, self.data)

    def set_drawer(self, q: float, cabinet_x: float | None = None) -> None:
        """Set the drawer opening (m) and optionally move the cabinet along x."""
        if cabinet_x is not None:
            self.model.body_pos[self._cabinet_bid, 0] = cabinet_x
        self.data.qpos[self._drawer_qadr] = q
        self.data.qvel[self._drawer_dadr] = 0.0
        mujoco.mj_kinematics(self.model, self.data)

    def set_target(self, pos) -> None:
        """Move the target marker (mocap body) to ``pos`` (3,)."""
        self.data.mocap_pos[self._target_mocap] = np.asarray(pos, float)
        mujoco.mj_kinematics(self.model, self.data)

    def set_arm_home(self, rng: np.random.Generator, jitter: float = 0.0) -> None:
        """Put the arm at the home pose, with the end-effector jittered by up to ``jitter`` m per axis."""
        goal = T.HOME_EE + rng.uniform(-jitter, jitter, 3) if jitter > 0 else T.HOME_EE
        self.set_arm_at(goal)

    def set_arm_at(self, ee_pos) -> None:
        """Put the arm (at rest, gripper open, pointing down) with its end-effector at ``ee_pos``."""
        q = self._solve_ik(np.asarray(ee_pos, float), self._home_q, iters=30)
        self._write_arm(q, FINGER_OPEN)

    def _write_arm(self, q: np.ndarray, finger: float) -> None:
        d = self.data
        d.qpos[self._arm_qadr] = q
        d.qvel[self._arm_dadr] = 0.0
        d.qpos[self._finger_qadr] = finger
        d.qvel[self._finger_dadr] = 0.0
        d.ctrl[:6] = q
        d.ctrl[6:8] = finger
        self._q_target = q.copy()
        self._finger_target = finger
        mujoco.mj_kinematics(self.model, d)
        self._ee_target = d.site_xpos[self._ee_sid].copy()

    # ---------------------------------------------------------------------------------------- IK
    def _solve_ik(self, goal: np.ndarray, q0: np.ndarray, iters: int = 3, damping: float = 0.05,
                  rot_weight: float = 0.3) -> np.ndarray:
        """Damped least squares on the TCP site Jacobian: position ``goal`` and orientation ``EE_DOWN``."""
        m, d = self.model, self._ik_data
        q = np.array(q0, float)
        lam2 = damping**2
        for _ in range(iters):
            d.qpos[self._arm_qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            R = d.site_xmat[self._ee_sid].reshape(3, 3)
            err_p = goal - d.site_xpos[self._ee_sid]
            err_r = 0.5 * _sum_cross(R, EE_DOWN)
            if np.dot(err_p, err_p) < 1e-8 and np.dot(err_r, err_r) < 1e-6:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._ee_sid)
            J = np.vstack([self._jacp[:, self._arm_dadr], rot_weight * self._jacr[:, self._arm_dadr]])
            e = np.concatenate([err_p, rot_weight * err_r])
            dq = J.T @ np.linalg.solve(J @ J.T + lam2 * np.eye(6), e)
            q = np.clip(q + dq, self._arm_lo, self._arm_hi)
        return q

    # -------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode.

        options:
            ``reset_free`` (bool): keep the physical state (arm, block, drawer); only restart the
            episode counter and resample the current task's goal. Ignored before the first reset.
            ``randomize`` (bool): apply ``randomize(self.np_random)`` (appearance only) first.

        The same ``seed`` (and options) gives the same episode. The look set by ``randomize`` persists
        until the next randomization; ``randomize(rng, False, False, False, False, False)`` restores it.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"reset_free", "randomize"}
        if unknown:
            raise EnvSpecError(f"tabletop.reset: unknown options {sorted(unknown)}; "
                               "expected any of ['randomize', 'reset_free']")
        if options.get("randomize"):
            self.randomize(self.np_random)
        if options.get("reset_free") and self._has_reset:
            self._task.goal(self, self.np_random)
            self._ee_target = self.ee_pos
        else:
            mujoco.mj_resetData(self.model, self.data)
            self._write_arm(self._home_q, FINGER_OPEN)
            self._task.init(self, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self._elapsed = 0
        self._has_reset = True
        success = self._task.success(self)
        return self._obs(), self._info(success)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise EnvSpecError(f"tabletop.step: action must have shape {self.action_space.shape} for "
                               f"control={self.control!r}; got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise EnvSpecError(f"tabletop.step: action contains NaN or inf: {a}")
        a = np.clip(a, -1.0, 1.0)
        if self.control == "ee_delta":
            ee = self.ee_pos
            target = np.clip(self._ee_target + a[:3] * self.max_step, WORKSPACE_LOW, WORKSPACE_HIGH)
            lag = target - ee  # keep the target near the real end-effector (no wind-up against contacts)
            n = float(np.linalg.norm(lag))
            if n > 2.5 * self.max_step:
                target = ee + lag * (2.5 * self.max_step / n)
            self._ee_target = target
            self._q_target = self._solve_ik(target, self._q_target)
        else:
            self._q_target = np.clip(self._q_target + 0.1 * a[:6], self._arm_lo, self._arm_hi)
        grip = a[-1]
        self._finger_target = FINGER_CLOSED + (FINGER_OPEN - FINGER_CLOSED) * 0.5 * (grip + 1.0)
        d = self.data
        d.ctrl[:6] = self._q_target
        d.ctrl[6:8] = self._finger_target
        mujoco.mj_step(self.model, d, nstep=self.substeps)
        mujoco.mj_forward(self.model, d)  # positions/cameras consistent with the new state
        if self.control == "joint_pos":
            self._ee_target = self.ee_pos
        self._elapsed += 1
        success = self._task.success(self)
        info = self._info(success)
        reward = info["reward_dense"] if self.reward_type == "dense" else info["reward_sparse"]
        terminated = bool(self.terminate_on_success and success)
        truncated = bool(self._elapsed >= self.max_episode_steps)
        return self._obs(), float(reward), terminated, truncated, info

    def _info(self, success: bool) -> dict:
        return {
            "success": bool(success),
            "is_success": bool(success),
            "reward_dense": float(self._task.dense(self)),
            "reward_sparse": 1.0 if success else 0.0,
            "task": self._task.name,
        }

    def state(self) -> np.ndarray:
        """The state observation vector (float32, ``STATE_DIM``); available in every obs_mode."""
        ee, block, target, handle = self.ee_pos, self.block_pos, self.target_pos, self.handle_pos
        return np.concatenate([
            ee, [self.gripper_opening], block, self.block_quat, target, [self.drawer_q], handle,
            block - ee, target - block, target - ee, handle - ee,
        ]).astype(np.float32)

    def _obs(self):
        if self.obs_mode == "state":
            return self.state()
        pixels = self.render_camera(self.camera, self.image_size)
        if self.obs_mode == "pixels":
            return pixels
        return {"state": self.state(), "pixels": pixels}

    # ---------------------------------------------------------------------------------- render
    def _renderer(self, size: tuple[int, int]) -> mujoco.Renderer:
        r = self._renderers.get(size)
        if r is None:
            r = mujoco.Renderer(self.model, height=size[0], width=size[1])
            flags = r.scene.flags
            for f in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                      mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG):
                flags[f] = 0
            self._renderers[size] = r
            _RENDERING_ENVS.add(self)
            global _ATEXIT_REGISTERED
            if not _ATEXIT_REGISTERED:
                atexit.register(_close_renderers)
                _ATEXIT_REGISTERED = True
        return r

    def render_camera(self, camera: str | None = None,
                      size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Render ``camera`` (default: the configured one) at ``size`` (default ``image_size``).

        Returns uint8 (H, W, 3), row 0 at the top.
        """
        camera = self.camera if camera is None else camera
        if camera not in CAMERAS:
            raise _choice_error("camera", camera, CAMERAS)
        hw = self.image_size if size is None else self._parse_size(size)
        r = self._renderer(hw)
        r.update_scene(self.data, camera=self._cam_ids[camera])
        return r.render()

    def render(self):
        """With ``render_mode="rgb_array"``, the configured camera's image at ``image_size``."""
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ------------------------------------------------------------------------ keypoints / cameras
    def object_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World poses ``name -> (pos (3,), quat (4,) w x y z)`` of block, target, handle, gripper (TCP)."""
        d = self.data

        def site_quat(sid: int) -> np.ndarray:
            q = np.zeros(4)
            mujoco.mju_mat2Quat(q, d.site_xmat[sid])
            return q

        return {
            "block": (self.block_pos, self.block_quat),
            "target": (self.target_pos, d.mocap_quat[self._target_mocap].copy()),
            "handle": (self.handle_pos, site_quat(self._handle_sid)),
            "gripper": (self.ee_pos, site_quat(self._ee_sid)),
        }

    def _cam_id(self, camera: str) -> int:
        if camera not in CAMERAS:
            raise _choice_error("camera", camera, CAMERAS)
        return self._cam_ids[camera]

    def camera_intrinsics(self, camera: str | None = None,
                          size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Pinhole matrix K (3, 3) for ``camera`` at image ``size`` (pixel units, origin at the top-left
        corner of the top-left pixel, u to the right, v down)."""
        h, w = self.image_size if size is None else self._parse_size(size)
        fovy = np.deg2rad(self.model.cam_fovy[self._cam_id(camera or self.camera)])
        f = 0.5 * h / np.tan(0.5 * fovy)
        return np.array([[f, 0.0, 0.5 * w], [0.0, f, 0.5 * h], [0.0, 0.0, 1.0]])

    def camera_extrinsics(self, camera: str | None = None) -> np.ndarray:
        """World → camera transform (4, 4), OpenCV convention (x right, y down, z forward)."""
        cid = self._cam_id(camera or self.camera)
        R_wc = self.data.cam_xmat[cid].reshape(3, 3)  # columns: MuJoCo camera axes (x right, y up, -z fwd)
        R = np.diag([1.0, -1.0, -1.0]) @ R_wc.T
        T_ = np.eye(4)
        T_[:3, :3] = R
        T_[:3, 3] = -R @ self.data.cam_xpos[cid]
        return T_

    def project(self, points_world, camera: str | None = None,
                size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Project world points (N, 3) to pixel coordinates (N, 2) as (u = column, v = row) in the image
        ``render_camera(camera, size)`` returns. Points behind the camera get NaN."""
        p = np.asarray(points_world, float)
        if p.ndim != 2 or p.shape[1] != 3:
            raise EnvSpecError(f"tabletop.project: points_world must have shape (N, 3); got {p.shape}")
        E = self.camera_extrinsics(camera)
        K = self.camera_intrinsics(camera, size)
        pc = p @ E[:3, :3].T + E[:3, 3]
        uvw = pc @ K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = uvw[:, :2] / uvw[:, 2:3]
        uv[pc[:, 2] <= 0] = np.nan
        return uv

    # ----------------------------------------------------------------------------- randomization
    def randomize(self, rng: np.random.Generator, textures: bool = True, colours: bool = True,
                  lighting: bool = True, camera: bool = True, background: bool = True) -> None:
        """Randomize appearance (never dynamics) from defaults; deterministic for a given ``rng`` state.

        All flags False restores the default look. See ``rlpt.envs.tabletop.randomize.Appearance``.
        """
        self.appearance.randomize(rng, textures=textures, colours=colours, lighting=lighting,
                                  camera=camera, background=background)
        mujoco.mj_forward(self.model, self.data)
