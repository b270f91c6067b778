"""agent-mesh: governance gateway for MCP tool calls."""
__version__ = "0.1.0"
