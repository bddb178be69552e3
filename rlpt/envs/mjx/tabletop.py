"""rlpt's tabletop tasks (reach, push, pick-place, drawer-open) as pure-JAX MJX worlds.

The scene is ``rlpt/envs/assets/tabletop.xml`` with the changes MJX needs: the drawer handle, a
cylinder (MJX has no cylinder-box collision), becomes a capsule of the same radius and the same
overall height (half-length 0.03 - 0.01), and the Newton solver stops after 10 iterations (20
line-search steps) instead of 100 (50) (see `mjx_scene`). Everything else (cone, impratio,
timestep, 20 physics steps per env step) is the CPU scene's.

Control, observations, success predicates and dense/sparse rewards follow
`rlpt.envs.tabletop.TabletopEnv` and `rlpt.envs.tabletop.tasks` (constants imported from there):
``control="ee_delta"`` runs the same damped-least-squares IK (3 iterations from the last joint
target, early stop at the same tolerances) on the TCP site Jacobian, ``"joint_pos"`` adds scaled
joint deltas. Resets sample the same regions as the CPU tasks with JAX's random streams (the
cabinet's x position is a per-world model parameter). After the physics steps only the kinematics
is recomputed (the CPU env calls ``mj_forward``): observations and predicates read positions only.

The task index, reward type, ``terminate_on_success`` and ``max_step`` are runtime parameters, so
every tabletop task shares one compiled step.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from rlpt.envs.mjx._jax import import_mjx
from rlpt.envs.tabletop import tasks as T
from rlpt.envs.tabletop.env import (
    ARM_JOINTS,
    ASSET_PATH,
    CONTROLS,
    EE_DOWN,
    FINGER_CLOSED,
    FINGER_OPEN,
    REWARDS,
    STATE_DIM,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
)
from rlpt.errors import EnvSpecError

TASK_INDEX = {"reach": 0, "push": 1, "pick-place": 2, "drawer-open": 3}
SUBSTEPS = 20
IK_DAMPING, IK_ROT_WEIGHT = 0.05, 0.3


SOLVER_ITERATIONS, LS_ITERATIONS = 10, 20


def mjx_scene(iterations: int = SOLVER_ITERATIONS, ls_iterations: int = LS_ITERATIONS) -> mujoco.MjModel:
    """The tabletop MjModel with the drawer handle as a capsule (MJX has no cylinder-box collision) and at most
    `iterations` Newton iterations (`ls_iterations` line-search steps) per physics step.

    The CPU scene keeps MuJoCo's defaults (100 and 50, tolerance 1e-8). Float32 MJX rarely meets that
    tolerance, so it would run every iteration of every step; MJX's guide recommends few iterations.
    The parity test holds the success predicates to the CPU scene's with these settings.
    """
    spec = mujoco.MjSpec.from_file(str(ASSET_PATH))
    spec.option.iterations = int(iterations)
    spec.option.ls_iterations = int(ls_iterations)
    handle = spec.geom("handle")
    radius, half = float(handle.size[0]), float(handle.size[1])
    handle.type = mujoco.mjtGeom.mjGEOM_CAPSULE
    handle.size = [radius, half - radius, 0.0]  # same radius, same top and bottom
    return spec.compile()


class TabletopTask:
    """One tabletop task on the MJX scene as pure JAX functions of one world.

    Args: task ("reach", "push", "pick-place", "drawer-open"), control ("ee_delta" | "joint_pos"),
    reward ("dense" | "sparse"), terminate_on_success, max_step (m per step at action 1),
    max_episode_steps (default: the task's, 50/80/100/80).
    infos: success, reward_dense, reward_sparse (float32 / bool per world).
    """

    def __init__(self, task: str = "push", control: str = "ee_delta", reward: str = "dense",
                 terminate_on_success: bool = False, max_step: float = 0.02, max_episode_steps: int | None = None):
        jax, mjx = import_mjx()
        if task not in TASK_INDEX:
            raise EnvSpecError(f"MJX tabletop: unknown task {task!r}; expected one of {sorted(TASK_INDEX)}")
        if control not in CONTROLS:
            raise EnvSpecError(f"MJX tabletop: unknown control {control!r}; expected one of {sorted(CONTROLS)}")
        if reward not in REWARDS:
            raise EnvSpecError(f"MJX tabletop: unknown reward {reward!r}; expected one of {sorted(REWARDS)}")
        self.name, self.control, self.reward_type = task, control, reward
        self.terminate_on_success, self.max_step = bool(terminate_on_success), float(max_step)
        self.mj_model = m = mjx_scene()
        self.model = mjx.put_model(m)
        self._data0 = mjx.make_data(self.model)
        jid = [m.joint(n).id for n in ARM_JOINTS]
        self.arm_qadr = np.asarray(m.jnt_qposadr[jid])
        self.arm_dadr = np.asarray(m.jnt_dofadr[jid])
        self.arm_lo, self.arm_hi = m.jnt_range[jid, 0].copy(), m.jnt_range[jid, 1].copy()
        self.finger_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("left_finger", "right_finger")])
        self.finger_dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in ("left_finger", "right_finger")])
        self.drawer_qadr = int(m.jnt_qposadr[m.joint("drawer").id])
        self.drawer_dadr = int(m.jnt_dofadr[m.joint("drawer").id])
        self.block_qadr = int(m.jnt_qposadr[m.joint("block").id])
        self.block_dadr = int(m.jnt_dofadr[m.joint("block").id])
        self.ee_sid, self.handle_sid = m.site("ee").id, m.site("handle").id
        self.ee_bid = int(m.site_bodyid[self.ee_sid])
        self.cabinet_bid = m.body("cabinet").id
        self.target_mocap = int(m.body_mocapid[m.body("target").id])
        self.home_q = self._home_q()
        self.obs_dim = STATE_DIM
        self.act_dim = 4 if control == "ee_delta" else 7
        self.action_low = -np.ones(self.act_dim, np.float32)
        self.action_high = np.ones(self.act_dim, np.float32)
        self.max_episode_steps = int(max_episode_steps or T.TASKS[task].max_episode_steps)
        self.info_keys = ("success", "reward_dense", "reward_sparse")

    def set_task(self, name: str) -> None:
        """Switch to another task (its default time limit included); the compiled programs stay valid."""
        if name not in TASK_INDEX:
            raise EnvSpecError(f"MJX tabletop: unknown task {name!r}; expected one of {sorted(TASK_INDEX)}")
        self.name = name
        self.max_episode_steps = int(T.TASKS[name].max_episode_steps)

    def _home_q(self) -> np.ndarray:
        """The CPU env's home joint configuration (200 IK iterations from its seed pose)."""
        from rlpt.envs.tabletop.env import TabletopEnv

        env = TabletopEnv("reach")
        try:
            return env._home_q.copy()
        finally:
            env.close()

    def params(self) -> dict[str, Any]:
        """Runtime parameters (inputs of the compiled programs, so all tasks share one compile)."""
        return {"task": np.int32(TASK_INDEX[self.name]), "sparse": np.bool_(self.reward_type == "sparse"),
                "terminate_on_success": np.bool_(self.terminate_on_success),
                "max_step": np.float32(self.max_step)}

    # --------------------------------------------------------------------------------- helpers
    def _model_at(self, cabinet_x):
        """The MJX model with the cabinet body at x = cabinet_x (a per-world parameter)."""
        return self.model.replace(body_pos=self.model.body_pos.at[self.cabinet_bid, 0].set(cabinet_x))

    def _ik(self, model, data, goal, q0, iters: int):
        """Damped least squares towards (goal, EE_DOWN) from q0, stopping where the CPU env's loop breaks."""
        jax, mjx = import_mjx()
        jnp = jax.numpy
        lam2 = IK_DAMPING**2
        lo, hi = jnp.asarray(self.arm_lo), jnp.asarray(self.arm_hi)
        ee_down = jnp.asarray(EE_DOWN)

        def body(_, carry):
            q, done = carry
            d = data.replace(qpos=data.qpos.at[self.arm_qadr].set(q))
            d = mjx.com_pos(model, mjx.kinematics(model, d))
            R = d.site_xmat[self.ee_sid]
            err_p = goal - d.site_xpos[self.ee_sid]
            err_r = 0.5 * jnp.sum(jnp.cross(R.T, ee_down.T), axis=0)
            converged = (err_p @ err_p < 1e-8) & (err_r @ err_r < 1e-6)
            jacp, jacr = mjx.jac(model, d, d.site_xpos[self.ee_sid], self.ee_bid)  # (nv, 3) each
            J = jnp.concatenate([jacp[self.arm_dadr].T, IK_ROT_WEIGHT * jacr[self.arm_dadr].T])  # (6, 6)
            e = jnp.concatenate([err_p, IK_ROT_WEIGHT * err_r])
            dq = J.T @ jnp.linalg.solve(J @ J.T + lam2 * jnp.eye(6), e)
            stop = done | converged
            return jnp.where(stop, q, jnp.clip(q + dq, lo, hi)), stop

        q, _ = jax.lax.fori_loop(0, iters, body, (q0, jnp.asarray(False)))
        return q

    def _write_arm(self, data, q, finger):
        qpos = data.qpos.at[self.arm_qadr].set(q).at[self.finger_qadr].set(finger)
        qvel = data.qvel.at[self.arm_dadr].set(0.0).at[self.finger_dadr].set(0.0)
        ctrl = data.ctrl.at[:6].set(q).at[6:8].set(finger)
        return data.replace(qpos=qpos, qvel=qvel, ctrl=ctrl)

    # ------------------------------------------------------------------------------------ state
    def state_from(self, qpos, qvel, target_pos, cabinet_x, q_target, ee_target, finger_target,
                   qacc_warmstart=None) -> dict[str, Any]:
        """A world from the CPU env's state: qpos, qvel, target (mocap) position, cabinet x and its controller
        targets (joint targets (6,), end-effector target (3,), finger target ()); optionally the solver's
        warm start (``data.qacc_warmstart``, (nv,)), which contact-rich steps depend on."""
        jax, mjx = import_mjx()
        dtype = self._data0.qpos.dtype
        model = self._model_at(cabinet_x)
        d = self._data0.replace(qpos=qpos, qvel=qvel,
                                mocap_pos=self._data0.mocap_pos.at[self.target_mocap].set(target_pos.astype(dtype)))
        if qacc_warmstart is not None:
            d = d.replace(qacc_warmstart=qacc_warmstart)
        d = d.replace(ctrl=d.ctrl.at[:6].set(q_target).at[6:8].set(finger_target))
        d = mjx.kinematics(model, d)
        return {"data": d, "q_target": q_target, "ee_target": ee_target, "finger_target": finger_target,
                "cabinet_x": cabinet_x}

    def reset(self, key, params) -> dict[str, Any]:
        """Sample a scene like the CPU task's ``init`` (regions from `rlpt.envs.tabletop.tasks`)."""
        jax, mjx = import_mjx()
        jnp = jax.numpy
        dtype = self._data0.qpos.dtype
        k = jax.random.split(key, 7)

        def u(key, low, high):
            low, high = np.asarray(low, float), np.asarray(high, float)
            return jax.random.uniform(key, low.shape, dtype, minval=low, maxval=high)

        block_xy = u(k[0], *T.REGION_A)
        yaw = jax.random.uniform(k[1], (), dtype, -0.3, 0.3)
        drawer_q = jax.random.uniform(k[2], (), dtype, 0.0, 0.01)
        cabinet_x = jax.random.uniform(k[3], (), dtype, *T.CABINET_X)
        model = self._model_at(cabinet_x)
        d = self._data0
        b = self.block_qadr
        qpos = d.qpos.at[b:b + 3].set(jnp.array([block_xy[0], block_xy[1], T.BLOCK_HALF], dtype))
        qpos = qpos.at[b + 3:b + 7].set(jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)], dtype))
        qpos = qpos.at[self.drawer_qadr].set(drawer_q)
        d = d.replace(qpos=qpos)
        home = jnp.asarray(self.home_q, dtype)
        goal = jnp.asarray(T.HOME_EE, dtype) + u(k[4], -0.02 * np.ones(3), 0.02 * np.ones(3))
        q = self._ik(model, d, goal, home, iters=30)
        d = mjx.kinematics(model, self._write_arm(d, q, FINGER_OPEN))
        ee = d.site_xpos[self.ee_sid]
        handle = d.site_xpos[self.handle_sid]
        reach_target = u(k[5], T.REACH_LOW, T.REACH_HIGH)
        place_target = jnp.concatenate([u(k[6], *T.REGION_B), jnp.zeros(1, dtype)])
        drawer_target = handle + jnp.array([0.0, -(T.DRAWER_TRAVEL - drawer_q), 0.0], dtype)
        target = jnp.select([params["task"] == 0, params["task"] == 3], [reach_target, drawer_target], place_target)
        d = d.replace(mocap_pos=d.mocap_pos.at[self.target_mocap].set(target))
        return {"data": d, "q_target": q, "ee_target": ee, "finger_target": jnp.asarray(FINGER_OPEN, dtype),
                "cabinet_x": cabinet_x}

    # ----------------------------------------------------------------------------- observation
    def _parts(self, state):
        d = state["data"]
        b = self.block_qadr
        return {"ee": d.site_xpos[self.ee_sid], "grip": d.qpos[self.finger_qadr].sum(),
                "block": d.qpos[b:b + 3], "quat": d.qpos[b + 3:b + 7],
                "target": d.mocap_pos[self.target_mocap], "drawer": d.qpos[self.drawer_qadr],
                "handle": d.site_xpos[self.handle_sid]}

    def observe(self, state):
        """The CPU env's 30-d state observation (see `rlpt.envs.tabletop.env.STATE_KEYS`), float32."""
        jax, _ = import_mjx()
        jnp = jax.numpy
        p = self._parts(state)
        ee, block, target, handle = p["ee"], p["block"], p["target"], p["handle"]
        return jnp.concatenate([
            ee, p["grip"][None], block, p["quat"], target, p["drawer"][None], handle,
            block - ee, target - block, target - ee, handle - ee,
        ]).astype(jnp.float32)

    def success_and_dense(self, state, task):
        """(success, dense reward) of task index `task` (see `rlpt.envs.tabletop.tasks.TASKS_DOC`)."""
        jax, _ = import_mjx()
        jnp = jax.numpy
        p = self._parts(state)

        def s(dist):
            return 1.0 - jnp.tanh(10.0 * dist)

        ee_target = jnp.linalg.norm(p["ee"] - p["target"])
        ee_block = jnp.linalg.norm(p["ee"] - p["block"])
        xy = jnp.linalg.norm(p["block"][:2] - p["target"][:2])
        resting = p["block"][2] < T.BLOCK_HALF + 0.01
        lifted = jnp.clip((p["block"][2] - T.BLOCK_HALF) / 0.05, 0.0, 1.0)
        near = jnp.where(xy < T.PLACE_TOL, 1.0 - lifted, lifted)
        success = jnp.stack([
            ee_target < T.REACH_TOL,
            (xy < T.PLACE_TOL) & resting,
            (xy < T.PLACE_TOL) & resting & (p["grip"] > 0.05),
            p["drawer"] >= T.DRAWER_OPEN,
        ])[task]
        dense = jnp.stack([
            s(ee_target),
            0.3 * s(ee_block) + 0.7 * s(xy),
            0.25 * s(ee_block) + 0.15 * near + 0.6 * s(xy),
            0.3 * s(jnp.linalg.norm(p["ee"] - p["handle"])) + 0.7 * jnp.clip(p["drawer"] / T.DRAWER_TRAVEL, 0.0, 1.0),
        ])[task]
        return success, dense

    # ------------------------------------------------------------------------------------- step
    def step(self, state, action, params):
        """One control step (20 physics steps): (state, reward, terminated, info)."""
        jax, mjx = import_mjx()
        jnp = jax.numpy
        d = state["data"]
        dtype = d.qpos.dtype
        model = self._model_at(state["cabinet_x"])
        a = jnp.clip(action.astype(dtype), -1.0, 1.0)
        max_step = params["max_step"].astype(dtype)
        if self.control == "ee_delta":
            ee = d.site_xpos[self.ee_sid]
            target = jnp.clip(state["ee_target"] + a[:3] * max_step, WORKSPACE_LOW, WORKSPACE_HIGH)
            lag = target - ee  # keep the target near the real end-effector (as the CPU env)
            n = jnp.linalg.norm(lag)
            limit = 2.5 * max_step
            target = jnp.where(n > limit, ee + lag * (limit / jnp.maximum(n, 1e-12)), target)
            q_target = self._ik(model, d, target, state["q_target"], iters=3)
            ee_target = target
        else:
            q_target = jnp.clip(state["q_target"] + 0.1 * a[:6], self.arm_lo, self.arm_hi)
            ee_target = state["ee_target"]
        finger = FINGER_CLOSED + (FINGER_OPEN - FINGER_CLOSED) * 0.5 * (a[-1] + 1.0)
        d = d.replace(ctrl=d.ctrl.at[:6].set(q_target).at[6:8].set(finger))
        d = jax.lax.fori_loop(0, SUBSTEPS, lambda _, dd: mjx.step(model, dd), d)
        d = mjx.kinematics(model, d)  # positions consistent with the new state
        if self.control == "joint_pos":
            ee_target = d.site_xpos[self.ee_sid]
        state = {"data": d, "q_target": q_target, "ee_target": ee_target, "finger_target": finger,
                 "cabinet_x": state["cabinet_x"]}
        success, dense = self.success_and_dense(state, params["task"])
        sparse = success.astype(jnp.float32)
        reward = jnp.where(params["sparse"], sparse, dense.astype(jnp.float32))
        terminated = params["terminate_on_success"] & success
        info = {"success": success, "reward_dense": dense.astype(jnp.float32), "reward_sparse": sparse}
        return state, reward.astype(jnp.float32), terminated, info
