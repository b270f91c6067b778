"""A tiny MCP server (official SDK, stdio) used as upstream by scripts/bench.py.

    python scripts/bench_upstream.py [--rounds 8000]

Tools:
- `burn {n}`: pure CPU work, `--rounds` chained SHA-256 of 32 bytes seeded by `n` (~5-10 ms at the
  default on a current x86 core); returns the hex digest. Small inputs keep the GIL held, so one
  server process uses at most one core whatever the SDK's thread pool does.
- `sleep {seconds, n}`: waits `seconds` without using CPU (a slow tool for head-of-line checks);
  `n` only makes calls distinct for the mesh's loop detection.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib

from mcp.server.mcpserver import MCPServer

DEFAULT_ROUNDS = 8000


def burn_digest(n: int, rounds: int) -> str:
    digest = n.to_bytes(16, "big", signed=True)
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def build(rounds: int) -> MCPServer:
    server: MCPServer = MCPServer("bench-upstream", version="1")

    @server.tool(description="CPU-bound work (chained SHA-256); returns the final digest")
    def burn(n: int) -> str:
        return burn_digest(n, rounds)

    @server.tool(description="Wait `seconds` (no CPU); `n` just makes calls distinct")
    async def sleep(seconds: float, n: int = 0) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}s ({n})"

    return server


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="SHA-256 rounds per burn")
    build(ap.parse_args().rounds).run("stdio")


if __name__ == "__main__":
    main()
