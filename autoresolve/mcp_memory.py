"""Decisions mirrored to an MCP memory server *through the mesh* (`memory.mcp_tool_prefix`, e.g.
`memory.` for `@modelcontextprotocol/server-memory` as an upstream): governed and traced like any
call, as the supervisor's agent (`supervisor.agent`, default `supervisor`).

One entity per agent + tool, `supervisor:<agent>:<tool>` (type `supervisor_decisions`), one
observation per decision. Its latest observations join the context the model sees. SQLite stays
the memory of record: a failing memory server is logged once and never holds up a decision."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from autoresolve.memory import Record
from autoresolve.mesh_api import MeshApi, MeshUnavailable, ToolCallFailed

log = logging.getLogger("autoresolve.memory")
ENTITY_TYPE = "supervisor_decisions"


class McpMemory:
    def __init__(self, api: MeshApi, prefix: str) -> None:
        self.api, self.prefix = api, prefix
        self.failing: str | None = None

    @staticmethod
    def entity(agent: str, tool: str) -> str:
        return f"supervisor:{agent}:{tool}"

    @staticmethod
    def observation(r: Record) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        params = json.dumps(r.inputs.get("params"), sort_keys=True, default=str)[:300]
        why = r.reasoning[:300]
        return f"{when} {r.action} by {r.by} ({r.confidence:.2f}): {why} | params {params}"

    async def write(self, r: Record) -> None:
        name, line = self.entity(r.agent, r.tool), self.observation(r)
        try:
            try:
                await self.api.call_tool(
                    f"{self.prefix}add_observations",
                    {"observations": [{"entityName": name, "contents": [line]}]},
                )
            except ToolCallFailed as exc:
                if "not found" not in str(exc):
                    raise
                await self.api.call_tool(
                    f"{self.prefix}create_entities",
                    {
                        "entities": [
                            {"name": name, "entityType": ENTITY_TYPE, "observations": [line]}
                        ]
                    },
                )
        except (ToolCallFailed, MeshUnavailable) as exc:
            self._failed(f"writing to the memory server: {exc}")
            return
        self._ok()

    async def read(self, agent: str, tool: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        try:
            result = await self.api.call_tool(
                f"{self.prefix}open_nodes", {"names": [self.entity(agent, tool)]}
            )
        except (ToolCallFailed, MeshUnavailable) as exc:
            self._failed(f"reading from the memory server: {exc}")
            return []
        self._ok()
        return _observations(result)[-limit:]

    def _failed(self, problem: str) -> None:
        if self.failing is None:
            log.warning(
                "%s (decisions stay in SQLite; once a %s* call works again it is said)",
                problem,
                self.prefix,
            )
        self.failing = problem

    def _ok(self) -> None:
        if self.failing is not None:
            log.info("the memory server through the mesh works again")
        self.failing = None


def _observations(result: dict[str, Any]) -> list[str]:
    graph = result.get("structuredContent")
    if not isinstance(graph, dict):  # older servers: the graph as JSON text
        try:
            graph = json.loads(result["content"][0]["text"])
        except (KeyError, IndexError, TypeError, ValueError):
            return []
    entities = graph.get("entities") if isinstance(graph, dict) else None
    out: list[str] = []
    for entity in entities if isinstance(entities, list) else []:
        if isinstance(entity, dict):
            out += [o for o in entity.get("observations", []) if isinstance(o, str)]
    return out
