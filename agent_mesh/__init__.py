"""agent-mesh: governance gateway for MCP tool calls."""

from importlib.metadata import version

__version__ = version("agent-mesh")  # as installed, from pyproject.toml
