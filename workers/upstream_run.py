"""The life of an upstream worker process (`agent-mesh run upstream`): start its upstream, claim
a slot of the server (workers/upstream_slots.py) or wait as the warm spare, serve it on the bus
(workers/upstream.py) until it dies, and start it again — at once after a healthy run, after a
back-off when it fails to start or dies soon after. Every step is a transition of its lifecycle
(workers/upstream_lifecycle.py), which the process reports on the bus for its whole life
(workers/upstream_report.py): `starting`, `up`, `spare`, `restarting`, `backing_off`, `failed`,
with the reason (`command 'x' not found on PATH`, `exited with code 1: ...`).

A killed worker is restarted by supervisord; meanwhile the broker answers its in-flight calls
with a clear error, and the spare serves its slot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from bus.messages import UpstreamStateName as S
from bus.messages import upstream_service
from bus.worker import BusWorker
from workers.mcp_client import UpstreamClient
from workers.upstream import Server, Source, UpstreamService, source_for
from workers.upstream_lifecycle import Backoff, Lifecycle
from workers.upstream_report import StateReport
from workers.upstream_slots import SlotClaim, candidates
from workers.upstream_types import UpstreamError, UpstreamGone, UpstreamTimeout

log = logging.getLogger(__name__)

CAPACITY = 64  # concurrent calls per worker: one MCP session multiplexes them
PING_INTERVAL = 2.0  # s between pings of a remote (sse, streamable_http) upstream
PING_TIMEOUT = 5.0
DRAIN = 0.5  # s the calls of a dead upstream get to answer before the worker leaves the bus


async def run(
    endpoint: str,
    server: Server,
    slot: int,
    default_cwd: str | None = None,
    slots_dir: Path | None = None,
) -> int:
    """Start an upstream, then serve a slot of this server: the slot `slot` if free, else any
    free one, else wait for one as the warm spare. When the upstream dies the slot is released
    at once (a spare takes it) and a new upstream is started in this process, which then claims
    a slot again. One that fails to start or dies soon after is started again after a back-off
    (1 s, 2 s, 4 s… 30 s). Runs until cancelled. Without `slots_dir` the process serves `slot`,
    no claim (tests)."""
    claim = (
        SlotClaim(slots_dir, server.name, candidates(slot, server.workers)) if slots_dir else None
    )
    backoff = Backoff()
    life = Lifecycle(server.name, f"{server.name}:{slot}")
    report = StateReport(endpoint, life.body())
    life.emit = report.emit
    try:
        while True:
            reason, ran_for = await _serve_once(endpoint, server, slot, default_cwd, claim, life)
            delay = backoff.after(ran_for)
            if not delay:
                log.warning("%s: upstream stopped (%s); starting a new one", server.name, reason)
                life.transition(S.RESTARTING, reason, failures=0)
                continue
            log.error(
                "%s: %s; next start in %gs (%d failed in a row)",
                server.name,
                reason,
                delay,
                backoff.failures,
            )
            waiting = S.FAILED if backoff.at_cap else S.BACKING_OFF
            life.transition(
                waiting, reason, failures=backoff.failures, retry_at=time.time() + delay
            )
            await asyncio.sleep(delay)
            life.transition(S.STARTING, reason)  # the last failure stays the reason meanwhile
    finally:
        life.transition(S.STOPPED, "the worker stopped")
        await report.close()


async def _serve_once(
    endpoint: str,
    server: Server,
    slot: int,
    default_cwd: str | None,
    claim: SlotClaim | None,
    life: Lifecycle,
) -> tuple[str, float]:
    """Start an upstream; serve a slot with it until it dies (or fails to start). Returns why
    it stopped (`command 'x' not found on PATH`, `exited with code 1: ...`) and how long it ran
    (0 when it did not start)."""
    try:
        client = source_for(server, default_cwd)
        await client.start()
    except Exception as exc:  # noqa: BLE001 - any start failure: report it, try again
        return getattr(exc, "reason", "") or str(exc) or type(exc).__name__, 0.0
    started = time.monotonic()
    try:
        # (a spare whose upstream died while it waited for a slot serves nothing)
        if claim is None or (slot := await _claimed(server, claim, client, life)) >= 0:
            await _serve(endpoint, server, f"{server.name}:{slot}", client, life)
    finally:
        if claim is not None:
            claim.release()  # before the close: a spare takes over while this upstream shuts down
        await client.close()
    return client.gone_reason, time.monotonic() - started


async def _claimed(server: Server, claim: SlotClaim, client: Source, life: Lifecycle) -> int:
    """The slot this process now holds, or -1 if its upstream died while it waited for one."""
    if (slot := claim.try_claim()) is not None:
        return slot
    log.info(
        "%s: every slot is served; this worker (pid %d) is the warm spare", server.name, os.getpid()
    )
    life.transition(S.SPARE, "every slot is served: the warm spare", failures=0)
    claiming = asyncio.create_task(claim.claim())
    lost = asyncio.create_task(client.closed.wait())
    await asyncio.wait({claiming, lost}, return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    if not claiming.done():
        claiming.cancel()
        log.error("%s: the spare's upstream exited", server.name)
        return -1
    slot = claiming.result()
    log.warning("%s: slot %d was free; this spare serves it now", server.name, slot)
    return slot


async def _serve(
    endpoint: str, server: Server, slot: str, client: Source, life: Lifecycle | None = None
) -> None:
    """Serve until the upstream dies."""
    service = UpstreamService(server, client)
    log.info(
        "%s: upstream ready with %d tools, serving slot %s",
        server.name,
        len(service.tool_names),
        slot,
    )
    worker = BusWorker(
        endpoint,
        upstream_service(server.name),
        service.handle,
        capacity=CAPACITY,
        slot=slot,
        meta=service.meta(),
    )
    # Resource subscriptions: every front-end hears the updates, through the broker (EVENT),
    # so a worker on another host publishes them too.
    client.on_resource_updated = lambda params: worker.publish(
        f"resource.{server.name}.updated", {"uri": params.get("uri")}
    )
    serving = asyncio.create_task(worker.run())
    upstream_lost = asyncio.create_task(client.closed.wait())
    changes = asyncio.create_task(service.follow_list_changes(worker))
    # A remote server that dies is not seen by a streamable HTTP session until it is asked
    # something: ask (MCP ping), so the next call gets "unavailable", not a failed call.
    pings = None
    if isinstance(client, UpstreamClient) and client.spec.transport in (
        "sse",
        "streamable_http",
        "http",
    ):
        pings = asyncio.create_task(_ping(server.name, client))
    tasks = [t for t in (serving, upstream_lost, changes, pings) if t is not None]
    try:
        if life is not None:
            await worker.connected.wait()  # its READY is on the way: the slot is served
            life.transition(S.UP, failures=0)
        await asyncio.wait({serving, upstream_lost}, return_when=asyncio.FIRST_COMPLETED)
        if upstream_lost.done():  # its calls fail at once (UPSTREAM_GONE): let them answer first
            await worker.drain(DRAIN)
    finally:
        worker.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ping(name: str, client: UpstreamClient) -> None:
    """Ping a remote upstream every PING_INTERVAL; one that does not answer in PING_TIMEOUT, or
    whose connection fails, is closed (its worker then reconnects, backing off)."""
    while not client.closed.is_set():
        await asyncio.sleep(PING_INTERVAL)
        try:
            await client.request("ping", None, PING_TIMEOUT)
        except UpstreamError:
            continue  # it answered, if only with an error: it is there
        except (UpstreamGone, UpstreamTimeout) as exc:
            log.error(
                "%s: %s did not answer a ping (%s): reconnecting",
                name,
                client.spec.url,
                exc.reason or exc or type(exc).__name__,
            )
            await client.close()
            return
