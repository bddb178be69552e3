"""Agents: one module per algorithm on the shared `Agent` protocol (`rlpt.agents.base`)."""

from rlpt.agents.base import AGENT_REGISTRY, Agent, AgentConfig, Callback, load, register_agent

__all__ = ["AGENT_REGISTRY", "Agent", "AgentConfig", "Callback", "load", "register_agent"]
