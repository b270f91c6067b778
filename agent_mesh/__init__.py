"""agent-mesh: governance gateway for MCP tool calls."""

from typing import Any


def __getattr__(name: str) -> Any:
    # `__version__` on demand: importlib.metadata costs every process of the tree ~2 MB.
    if name == "__version__":
        from importlib.metadata import version

        return version("agent-mesh")  # as installed, from pyproject.toml
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
