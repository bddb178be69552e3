"""Agents: one module per algorithm on the shared `Agent` protocol (`rlpt.agents.base`); the dataset-trained ones
build on `rlpt.agents.core.OfflineAgent`. Importing this package registers them (the RLlib agents import Ray
only when they train)."""

from rlpt.agents.base import AGENT_REGISTRY, Agent, AgentConfig, Callback, agent_class, load, register_agent
from rlpt.agents.bc import BC, BCConfig
from rlpt.agents.calql import CalQL, CalQLConfig
from rlpt.agents.contextwm import ContextWM, ContextWMConfig
from rlpt.agents.core import OfflineAgent, OfflineConfig, OffPolicyConfig
from rlpt.agents.iql import IQL, IQLConfig
from rlpt.agents.ppo import PPO, PPOConfig
from rlpt.agents.rllib import RLlibPPO, RLlibSAC
from rlpt.agents.sb3 import SB3PPO, SB3SAC, SB3PPOConfig, SB3SACConfig
from rlpt.agents.unio4 import UniO4, UniO4Config

__all__ = ["AGENT_REGISTRY", "BC", "Agent", "AgentConfig", "BCConfig", "CalQL", "CalQLConfig", "Callback",
           "ContextWM", "ContextWMConfig", "IQL", "IQLConfig", "OffPolicyConfig", "OfflineAgent", "OfflineConfig",
           "PPO", "PPOConfig",
           "RLlibPPO", "RLlibSAC", "SB3PPO", "SB3PPOConfig", "SB3SAC", "SB3SACConfig", "UniO4", "UniO4Config",
           "agent_class", "load", "register_agent"]
