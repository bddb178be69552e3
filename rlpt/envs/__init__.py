"""Environments: `make_env(spec)` for Gymnasium MuJoCo, dm_control and rlpt's tabletop tasks.

    env = make_env("dmc/cheetah-run", pixels=True, frame_stack=3, action_repeat=2, seed=0)
    envs = make_vec_env("mujoco/Hopper-v5", 4, vectorization="async")            # numpy, CPU processes
    envs = make_vec_env("mujoco/Hopper-v5", 4096, backend="mjx", device="auto")   # torch, one jitted step
    report = check_env("hopper", pixels=True, video_path="hopper.mp4")
    [spec.name for spec in list_envs()]   # the envs/*.yaml catalog
"""

from rlpt.envs.dmc import DMCEnv
from rlpt.envs.make import check_env, make_env, make_vec_env, resolve_spec
from rlpt.envs.rendering import setup_offscreen_rendering
from rlpt.envs.specs import EnvSpec, envs_dir, find_env_spec, list_envs, load_env_spec
from rlpt.envs.wrappers import ActionRepeat, FrameStack, PixelObservation

# Only sets MUJOCO_GL/PYOPENGL_PLATFORM when there is no display: dm_control fixes its GL backend
# when first imported, so this must happen before any user import of dm_control.
setup_offscreen_rendering()

__all__ = [
    "ActionRepeat",
    "DMCEnv",
    "EnvSpec",
    "FrameStack",
    "PixelObservation",
    "check_env",
    "envs_dir",
    "find_env_spec",
    "list_envs",
    "load_env_spec",
    "make_env",
    "make_vec_env",
    "resolve_spec",
    "setup_offscreen_rendering",
]
