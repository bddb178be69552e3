"""Agents: one module per algorithm on the shared `Agent` protocol (`rlpt.agents.base`)."""

from rlpt.agents.base import AGENT_REGISTRY, Agent, AgentConfig, Callback, load, register_agent
from rlpt.agents.bc import BC, BCConfig
from rlpt.agents.calql import CalQL, CalQLConfig
from rlpt.agents.iql import IQL, IQLConfig
from rlpt.agents.sb3 import SB3PPO, SB3SAC, SB3PPOConfig, SB3SACConfig

__all__ = ["AGENT_REGISTRY", "BC", "Agent", "AgentConfig", "BCConfig", "CalQL", "CalQLConfig", "Callback", "IQL",
           "IQLConfig", "SB3PPO", "SB3PPOConfig", "SB3SAC", "SB3SACConfig", "load", "register_agent"]
from rlpt.agents.unio4 import UniO4, UniO4Config  # noqa: E402  (registers "unio4")

__all__ += ["UniO4", "UniO4Config"]
import rlpt.gfn  # noqa: E402, F401, I001  (registers the "gfn" agent and the rlpt/HyperGrid-v0, rlpt/BitSeq-v0 env ids)
from rlpt.agents.rllib import RLlibPPO, RLlibSAC  # noqa: E402  (registers rllib_ppo / rllib_sac; imports Ray lazily)

__all__ += ["RLlibPPO", "RLlibSAC"]
from rlpt.agents.contextwm import ContextWM, ContextWMConfig  # noqa: E402  (registers "contextwm")

__all__ += ["ContextWM", "ContextWMConfig"]
