"""Tabletop tasks: scene samplers, success predicates and shaped rewards.

Every task has a reverse task that undoes it (``reach`` ↔ ``reach-reset``, ``push`` ↔ ``push-reset``,
``pick-place`` ↔ ``pick-place-reset``, ``drawer-open`` ↔ ``drawer-close``), so forward and reverse
episodes can alternate without resetting the scene (reset-free training). A forward task's goal
region is its reverse task's initial region and the other way round.

Functions here take the env (``TabletopEnv``) and use its small scene API
(``ee_pos``, ``block_pos``, ``set_block``, ``set_target``, ``set_drawer``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from rlpt.envs.tabletop.env import TabletopEnv

# Regions (metres, world frame; table top at z = 0, robot base at the origin).
HOME_EE = np.array([0.22, 0.0, 0.16])  # end-effector home position ("reach-reset" goal)
REACH_LOW = np.array([0.18, -0.12, 0.07])
REACH_HIGH = np.array([0.34, 0.12, 0.20])
REGION_A = (np.array([0.22, -0.16]), np.array([0.32, -0.10]))  # block start of push / pick-place
REGION_B = (np.array([0.22, -0.03]), np.array([0.32, 0.02]))  # their goal region
CABINET_X = (0.26, 0.34)  # cabinet x position range (its y is fixed)
DRAWER_TRAVEL = 0.09  # drawer joint range (m)

REACH_TOL = 0.04  # reach: end-effector within 4 cm of the target
PLACE_TOL = 0.04  # push / pick-place: block centre within 4 cm of the target (xy)
DRAWER_OPEN = 0.065  # drawer-open succeeds at >= 6.5 cm
DRAWER_CLOSED = 0.015  # drawer-close succeeds at <= 1.5 cm
BLOCK_HALF = 0.02


def _u(rng: np.random.Generator, low, high) -> np.ndarray:
    return rng.uniform(np.asarray(low, float), np.asarray(high, float))


def _shape(d: float, scale: float = 10.0) -> float:
    """Distance → closeness in [0, 1]: 1 - tanh(scale * d)."""
    return float(1.0 - np.tanh(scale * d))


def _block_resting(env: TabletopEnv) -> bool:
    return bool(env.block_pos[2] < BLOCK_HALF + 0.01)


# ---------------------------------------------------------------------------------------------- reach
def _reach_init(env: TabletopEnv, rng: np.random.Generator) -> None:
    env.set_block(_u(rng, *REGION_A), rng.uniform(-0.3, 0.3))
    env.set_drawer(rng.uniform(0.0, 0.01), rng.uniform(*CABINET_X))
    env.set_arm_home(rng, jitter=0.02)
    _reach_goal(env, rng)


def _reach_goal(env: TabletopEnv, rng: np.random.Generator) -> None:
    env.set_target(_u(rng, REACH_LOW, REACH_HIGH))


def _reach_reset_init(env: TabletopEnv, rng: np.random.Generator) -> None:
    env.set_block(_u(rng, *REGION_A), rng.uniform(-0.3, 0.3))
    env.set_drawer(rng.uniform(0.0, 0.01), rng.uniform(*CABINET_X))
    env.set_arm_at(_u(rng, REACH_LOW, REACH_HIGH))
    _reach_reset_goal(env, rng)


def _reach_reset_goal(env: TabletopEnv, rng: np.random.Generator) -> None:
    env.set_target(HOME_EE.copy())


def _reach_success(env: TabletopEnv) -> bool:
    return bool(np.linalg.norm(env.ee_pos - env.target_pos) < REACH_TOL)


def _reach_dense(env: TabletopEnv) -> float:
    return _shape(float(np.linalg.norm(env.ee_pos - env.target_pos)))


# ------------------------------------------------------------------------------------ push/pick-place
def _block_task_init(start: tuple, goal: tuple) -> Callable[[TabletopEnv, np.random.Generator], None]:
    def init(env: TabletopEnv, rng: np.random.Generator) -> None:
        env.set_block(_u(rng, *start), rng.uniform(-0.3, 0.3))
        env.set_drawer(rng.uniform(0.0, 0.01), rng.uniform(*CABINET_X))
        env.set_arm_home(rng, jitter=0.02)
        env.set_target(np.r_[_u(rng, *goal), 0.0])

    return init


def _block_task_goal(goal: tuple) -> Callable[[TabletopEnv, np.random.Generator], None]:
    def sample(env: TabletopEnv, rng: np.random.Generator) -> None:
        env.set_target(np.r_[_u(rng, *goal), 0.0])

    return sample


def _block_xy_dist(env: TabletopEnv) -> float:
    return float(np.linalg.norm(env.block_pos[:2] - env.target_pos[:2]))


def _push_success(env: TabletopEnv) -> bool:
    return _block_xy_dist(env) < PLACE_TOL and _block_resting(env)


def _push_dense(env: TabletopEnv) -> float:
    return 0.3 * _shape(float(np.linalg.norm(env.ee_pos - env.block_pos))) + 0.7 * _shape(_block_xy_dist(env))


def _pick_success(env: TabletopEnv) -> bool:
    return _block_xy_dist(env) < PLACE_TOL and _block_resting(env) and env.gripper_opening > 0.05


def _pick_dense(env: TabletopEnv) -> float:
    lifted = float(np.clip((env.block_pos[2] - BLOCK_HALF) / 0.05, 0.0, 1.0))
    near = 1.0 - lifted if _block_xy_dist(env) < PLACE_TOL else lifted  # lift first, lower at the goal
    return (
        0.25 * _shape(float(np.linalg.norm(env.ee_pos - env.block_pos)))
        + 0.15 * near
        + 0.6 * _shape(_block_xy_dist(env))
    )


# ------------------------------------------------------------------------------------------ drawer
def _drawer_init(q_range: tuple[float, float], goal_q: float):
    def init(env: TabletopEnv, rng: np.random.Generator) -> None:
        env.set_block(_u(rng, *REGION_A), rng.uniform(-0.3, 0.3))
        env.set_drawer(rng.uniform(*q_range), rng.uniform(*CABINET_X))
        env.set_arm_home(rng, jitter=0.02)
        env.set_target(env.handle_pos_at(goal_q))

    return init


def _drawer_goal(goal_q: float):
    def sample(env: TabletopEnv, rng: np.random.Generator) -> None:
        env.set_target(env.handle_pos_at(goal_q))

    return sample


def _open_dense(env: TabletopEnv) -> float:
    ee_d = float(np.linalg.norm(env.ee_pos - env.handle_pos))
    return 0.3 * _shape(ee_d) + 0.7 * float(np.clip(env.drawer_q / DRAWER_TRAVEL, 0.0, 1.0))


def _close_dense(env: TabletopEnv) -> float:
    ee_d = float(np.linalg.norm(env.ee_pos - env.handle_pos))
    return 0.3 * _shape(ee_d) + 0.7 * float(np.clip(1.0 - env.drawer_q / DRAWER_TRAVEL, 0.0, 1.0))


@dataclass(frozen=True)
class TaskSpec:
    """One tabletop task.

    Attributes:
        name: task id (``tabletop/<name>`` in env specs).
        reverse: the task that undoes this one (for reset-free training).
        instruction: a short natural-language instruction (for language-conditioned / VLM rewards).
        max_episode_steps: default episode length at 10 control steps per second.
        init: samples a full scene (arm, block, drawer, goal) from the env's RNG.
        goal: resamples only the goal (used by ``reset(options={"reset_free": True})``).
        success: ground-truth success predicate.
        dense: shaped reward in [0, 1]; the formula is in ``TASKS_DOC``.
        target_visual: which target marker is drawn: "ball", "disc" or "none".
    """

    name: str
    reverse: str
    instruction: str
    max_episode_steps: int
    init: Callable[[Any, np.random.Generator], None]
    goal: Callable[[Any, np.random.Generator], None]
    success: Callable[[Any], bool]
    dense: Callable[[Any], float]
    target_visual: str


TASKS: dict[str, TaskSpec] = {
    "reach": TaskSpec("reach", "reach-reset", "move the gripper to the green ball", 50,
                      _reach_init, _reach_goal, _reach_success, _reach_dense, "ball"),
    "reach-reset": TaskSpec("reach-reset", "reach", "move the gripper back to its home position", 50,
                            _reach_reset_init, _reach_reset_goal, _reach_success, _reach_dense, "ball"),
    "push": TaskSpec("push", "push-reset", "push the red block onto the green target", 80,
                     _block_task_init(REGION_A, REGION_B), _block_task_goal(REGION_B),
                     _push_success, _push_dense, "disc"),
    "push-reset": TaskSpec("push-reset", "push", "push the red block back onto the green target", 80,
                           _block_task_init(REGION_B, REGION_A), _block_task_goal(REGION_A),
                           _push_success, _push_dense, "disc"),
    "pick-place": TaskSpec("pick-place", "pick-place-reset", "pick up the red block and place it on the "
                           "green target", 100, _block_task_init(REGION_A, REGION_B),
                           _block_task_goal(REGION_B), _pick_success, _pick_dense, "disc"),
    "pick-place-reset": TaskSpec("pick-place-reset", "pick-place", "pick up the red block and place it "
                                 "back on the green target", 100, _block_task_init(REGION_B, REGION_A),
                                 _block_task_goal(REGION_A), _pick_success, _pick_dense, "disc"),
    "drawer-open": TaskSpec("drawer-open", "drawer-close", "open the drawer", 80,
                            _drawer_init((0.0, 0.01), DRAWER_TRAVEL), _drawer_goal(DRAWER_TRAVEL),
                            lambda env: bool(env.drawer_q >= DRAWER_OPEN), _open_dense, "none"),
    "drawer-close": TaskSpec("drawer-close", "drawer-open", "close the drawer", 80,
                             _drawer_init((0.075, DRAWER_TRAVEL), 0.0), _drawer_goal(0.0),
                             lambda env: bool(env.drawer_q <= DRAWER_CLOSED), _close_dense, "none"),
}

TASKS_DOC = """\
Success predicates and dense rewards (d = Euclidean distance in metres, s(d) = 1 - tanh(10 d)):
  reach / reach-reset   success: |ee - target| < 0.04        dense: s(|ee - target|)
  push / push-reset     success: |block_xy - target_xy| < 0.04 and block resting on the table
                        dense: 0.3 s(|ee - block|) + 0.7 s(|block_xy - target_xy|)
  pick-place(-reset)    success: as push, and the gripper open (finger gap > 5 cm), i.e. released
                        dense: 0.25 s(|ee - block|) + 0.15 lift term + 0.6 s(|block_xy - target_xy|),
                        lift term = block height above the table / 5 cm (clipped to [0, 1]) away from
                        the goal and its complement over the goal
  drawer-open           success: drawer opening >= 0.065 m   dense: 0.3 s(|ee - handle|) + 0.7 q / 0.09
  drawer-close          success: drawer opening <= 0.015 m   dense: 0.3 s(|ee - handle|) + 0.7 (1 - q / 0.09)
Sparse reward: 1.0 when the success predicate holds, else 0.0.
"""
