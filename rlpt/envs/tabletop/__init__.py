"""rlpt's tabletop manipulation family: a WidowX-250-like arm, a block, a target and a drawer (MuJoCo).

``TabletopEnv(task=...)`` serves the env specs ``tabletop/<task>`` for every key of ``TASKS``;
``scripted_policy(env)`` gives a hand-written controller for demonstrations.
"""

from rlpt.envs.rendering import setup_offscreen_rendering

setup_offscreen_rendering()  # before the first mujoco import

from rlpt.envs.tabletop.env import CAMERAS, OBS_MODES, STATE_DIM, STATE_KEYS, TabletopEnv  # noqa: E402
from rlpt.envs.tabletop.scripted import scripted_policy  # noqa: E402
from rlpt.envs.tabletop.tasks import TASKS, TASKS_DOC, TaskSpec  # noqa: E402

__all__ = ["CAMERAS", "OBS_MODES", "STATE_DIM", "STATE_KEYS", "TASKS", "TASKS_DOC", "TabletopEnv", "TaskSpec",
           "scripted_policy"]
