"""What every front-end process (HTTP gateway, stdio connector) holds: one bus client, the tool
catalogue with its pins (gateway/pins.py), the trace and audit outboxes and the call pipeline
built on them."""

from __future__ import annotations

from typing import Any

from bus.audit_outbox import AuditOutbox
from bus.client import BusClient
from bus.events import Publisher
from bus.state_dir import StateDir
from gateway.catalog import Catalog
from gateway.pins import Pins
from gateway.pipeline import Pipeline
from gateway.policy_follower import PolicyFollower
from gateway.trace_outbox import TraceOutbox
from mesh_config.model import LoadedConfig


class FrontEnd:
    session_prefix = ""  # of its /mcp session ids: several gateway processes (gateway/peers.py)

    def __init__(
        self,
        loaded: LoadedConfig,
        bus_endpoint: str,
        events_endpoint: str | None = None,
        events_in: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.events_endpoint = (
            events_endpoint  # the broker's XPUB: resource updates, worker up/down
        )
        config = loaded.config
        self.client = BusClient(bus_endpoint)
        sources = config.sources()  # MCP servers, CLI tools, OpenAPI imports
        self.catalog = Catalog(self.client, [], sources=sources)
        state = StateDir(loaded.state_dir())
        self.publisher = Publisher(events_in) if events_in is not None else None
        self.pins = Pins(
            state.pins_db,
            {s.name: s.pinning.mode for s in config.mcp_servers},
            publish=self.publisher.publish if self.publisher is not None else None,
        )
        # tool pin changes and acceptances are audit events: the outbox's table in pins.db,
        # written on the pins' connection in the same commit as the change
        self.audit = self.pins.audit = AuditOutbox(self.client, self.pins.db)
        self.catalog.pins = self.pins
        self.outbox = TraceOutbox(
            self.client, StateDir(loaded.state_dir()).trace_journal, type(self).__name__.lower()
        )
        # The policy set in force: the gateway replaces this with its reloader
        # (gateway/reload.py).
        self.policy_set: PolicyFollower | Any = PolicyFollower(
            self.client, loaded.state_dir(), list(config.policies)
        )
        self.pipeline = Pipeline(
            self.client,
            self.catalog,
            self.outbox,
            {s.name: s.timeout_seconds for s in sources},
            approval_timeout=config.approval.timeout_seconds,
            generation=lambda: self.policy_set.current.generation,
        )

    async def start(self) -> None:
        await self.client.start()
        self.outbox.start()
        self.audit.start()
        self.catalog.start(self.events_endpoint)
        if isinstance(self.policy_set, PolicyFollower):
            self.policy_set.start(self.events_endpoint)
        await self.catalog.refresh()

    async def stop(self) -> None:
        if isinstance(self.policy_set, PolicyFollower):
            await self.policy_set.stop()
        await self.catalog.stop()
        await self.outbox.stop()  # flushes what is queued: traces are not lost on a clean stop
        await self.audit.stop()  # what it did not send stays in pins.db for the next start
        if self.publisher is not None:
            self.publisher.close()
        self.pins.close()
        await self.client.close()
