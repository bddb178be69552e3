"""Real-robot config adapters: typed robot configs, a safety layer, drivers and a Gymnasium env.

    cfg = rlpt.robots.load_robot_config("robot_configs/sim_widowx_tabletop_push.yaml")
    env = rlpt.robots.make_robot_env(cfg, realtime=False, record_path="runs/robot/episodes.hdf5")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(policy(obs))   # info["action_sent"], info["fault"]

Configs: `rlpt.robots.config` (schema). Safety: `rlpt.robots.env` (`clip_command`, faults). Drivers:
`rlpt.robots.drivers` (``sim``, ``remote``, ``franka``, ``ur``, ``dynamixel``). Check a config with
``rlpt robot check CONFIG [--connect]``; serve a robot to a remote policy with
``python -m rlpt.robots.drivers.remote CONFIG``.
"""

from rlpt.robots.config import RobotConfig, load_robot_config
from rlpt.robots.drivers.base import Command, RobotDriver, RobotObservation, make_driver
from rlpt.robots.env import FAULT_REASONS, RobotEnv, clip_command, make_robot_env

__all__ = ["FAULT_REASONS", "Command", "RobotConfig", "RobotDriver", "RobotEnv", "RobotObservation", "clip_command",
           "load_robot_config", "make_driver", "make_robot_env"]
