"""What a front-end knows of the policy set: its generation (sent with every policy check, so a
policy worker on an older set fetches the current one first) and its policies (for `mesh.catalog`).

The gateway holds the reloader itself (gateway/reload.py). Other front-ends (stdio `--mcp`
connectors) follow it: the stored generation at start, then each `policy.set.changed` event,
and the set itself from `policyset` when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from bus.client import BusClient
from bus.errors import BusError
from bus.events import Subscriber
from bus.messages import POLICY_SET_CHANGED, POLICYSET, PolicySetQuery
from bus.state_dir import StateDir
from policy.model import Policy
from policy.policyset import PolicySet

log = logging.getLogger(__name__)


class PolicyFollower:
    def __init__(self, client: BusClient, state_dir: Path, policies: list[Policy]) -> None:
        self.client = client
        self.current = PolicySet.of(policies, self._stored_generation(state_dir))
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _stored_generation(state_dir: Path) -> int:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads(StateDir(state_dir).policy_set.read_text())["generation"])
        return 0

    @property
    def generation(self) -> int:
        return self.current.generation

    def start(self, events_endpoint: str | None) -> None:
        if events_endpoint is not None:
            self._task = asyncio.create_task(self._follow(events_endpoint))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self, endpoint: str) -> None:
        subscriber = Subscriber(endpoint, POLICY_SET_CHANGED)
        try:
            async for _topic, body in subscriber:
                if isinstance(body, dict) and isinstance(body.get("generation"), int):
                    await self.fetch(body["generation"])
        finally:
            subscriber.close()

    async def fetch(self, generation: int) -> None:
        """Get the current set (at least `generation`); keep ours on failure, but its number."""
        try:
            fetched = PolicySet.load(
                await self.client.request(POLICYSET, PolicySetQuery().dump(), timeout=2.0)
            )
        except (BusError, ValueError) as exc:
            log.warning("policy set generation %d announced but not fetched: %s", generation, exc)
            self.current = PolicySet(
                max(generation, self.current.generation),
                self.current.version,
                self.current.policies,
            )
            return
        if fetched.generation >= self.current.generation:
            self.current = fetched

    def view(self) -> dict[str, Any]:
        return {"version": self.current.version, "generation": self.current.generation}
