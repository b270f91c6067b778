"""The poll loop: pending approvals every `poll_interval`; each new one is decided in its own task
(a slow model call never holds up rule decisions) and resolved, or left pending for a human.

A mesh that is down is retried with backoff and logged once per outage; a missing or wrong
operator token is said once (checked at start, after each outage, and on a refused resolve)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from autoresolve.config import Loaded
from autoresolve.decide import Decision, by_rules, call_of, decide
from autoresolve.llm import Model
from autoresolve.mcp_memory import McpMemory
from autoresolve.memory import Memory, Record
from autoresolve.mesh_api import MeshApi, MeshUnavailable, OperatorTokenProblem

log = logging.getLogger("autoresolve")

MAX_BACKOFF = 2.0  # seconds between attempts while the mesh is down (restarts take about that)


class Supervisor:
    def __init__(
        self,
        loaded: Loaded,
        api: MeshApi,
        memory: Memory,
        model: Model | None,
        dry_run: bool = False,
    ) -> None:
        self.loaded, self.api, self.memory, self.model = loaded, api, memory, model
        self.settings = loaded.settings
        self.dry_run = dry_run
        self.inflight: dict[str, asyncio.Task[None]] = {}
        # decided in this run without a final outcome (dry run, refused): not again in this run
        self.skip: set[str] = set()
        self.model_slots = asyncio.Semaphore(
            self.settings.model.concurrency if self.settings.model else 1
        )
        self.down_since: float | None = None
        self.connected = False
        self.wake = asyncio.Event()  # set by mesh_process when the mesh is up again: poll now
        self.token_problem: str | None = None
        self.checked_token = False
        prefix = self.settings.memory.mcp_tool_prefix
        self.mcp_memory = McpMemory(api, prefix) if prefix else None
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.settings.poll_seconds
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                    backoff = self.settings.poll_seconds
                except MeshUnavailable as exc:
                    self._down(str(exc))
                    backoff = min(backoff * 2, max(MAX_BACKOFF, self.settings.poll_seconds))
                await _wait(stop, self.wake, backoff)
                self.wake.clear()
        finally:
            if self._background:  # memory-server writes under way: a moment to finish
                await asyncio.wait(self._background, timeout=5)
            for task in self.inflight.values():
                task.cancel()
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)

    async def poll_once(self) -> None:
        pending = await self.api.pending(self.settings.tool_filter)
        if self.down_since is not None or not self.connected:
            down = (
                ""
                if self.down_since is None
                else f" (unavailable for {time.monotonic() - self.down_since:.1f}s)"
            )
            log.info("connected to the mesh at %s%s: %d pending", self.api.url, down, len(pending))
            self.down_since, self.checked_token, self.connected = None, False, True
        if not self.checked_token and not self.dry_run:
            self._token(await self.api.check_token())
            self.checked_token = True
        for approval in pending:
            approval_id = approval["id"]
            if (
                approval_id in self.inflight
                or approval_id in self.skip
                or self.memory.done(approval_id)
            ):
                continue
            task = asyncio.create_task(self.handle(approval))
            self.inflight[approval_id] = task
            task.add_done_callback(functools.partial(self._finished, approval_id))

    def _finished(self, approval_id: str, _: asyncio.Task[None]) -> None:
        self.inflight.pop(approval_id, None)

    async def handle(self, listed: dict[str, Any]) -> None:
        approval_id = listed["id"]
        started = time.perf_counter()
        try:
            approval = await self.api.detail(approval_id)
            if approval is None:
                return  # resolved or expired meanwhile
            decision = await self._decide(approval)
            outcome = await self._apply(approval_id, decision)
        except MeshUnavailable as exc:
            self._down(str(exc))  # decided again on the next successful poll
            return
        except Exception:
            log.exception("approval %s: unexpected error; left pending", approval_id)
            self.skip.add(approval_id)
            return
        elapsed = (time.perf_counter() - started) * 1000
        if outcome is None:
            return
        record = Record(
            approval_id,
            str(approval.get("agent_id", "")),
            str(approval.get("tool", "")),
            decision.action,
            decision.by,
            decision.confidence,
            decision.reasoning,
            outcome,
            elapsed,
            bool(call_of(approval)["injection_risk"]),  # the mesh's flag or our own check
            approval,
        )
        self.memory.record(record)
        if self.mcp_memory is not None and outcome in ("resolved", "escalated"):
            self._spawn(self.mcp_memory.write(record))  # off the decision path
        if outcome not in ("resolved", "already", "gone", "escalated"):
            self.skip.add(approval_id)
        log.info(
            "%s %s %s %s by %s (%.2f) in %.0f ms%s: %s",
            decision.action,
            approval_id[:8],
            approval.get("agent_id"),
            approval.get("tool"),
            decision.by,
            decision.confidence,
            elapsed,
            "" if outcome in ("resolved", "escalated") else f" [{outcome}]",
            decision.reasoning,
        )

    async def _decide(self, approval: dict[str, Any]) -> Decision:
        decision = by_rules(self.settings.rules, call_of(approval))
        if decision is not None:
            return decision
        if self.model is None:
            return await decide(approval, [], None, None, [])  # escalate: nobody else to ask
        # The model's context: recent decisions on this agent + tool, and the memory server's notes.
        agent, tool, limit = (
            str(approval.get("agent_id", "")),
            str(approval.get("tool", "")),
            self.settings.memory.context,
        )
        history: list[dict[str, Any]] = self.memory.context(agent, tool, limit)
        if self.mcp_memory is not None:
            history += [
                {"memory_server_note": note}
                for note in await self.mcp_memory.read(agent, tool, limit)
            ]
        return await decide(
            approval,
            self.settings.rules,
            self.model,
            self.settings.model,
            history,
            self.model_slots,
        )

    async def _apply(self, approval_id: str, decision: Decision) -> str | None:
        """Resolve (unless escalating or dry-running); the outcome to record, None: retry later."""
        if self.dry_run:
            return "dry-run"
        if decision.action == "escalate":
            return "escalated"
        try:
            outcome = await self.api.resolve(
                approval_id,
                decision.action,
                resolved_by=decision.resolved_by,
                reasoning=decision.reasoning,
                confidence=decision.confidence,
            )
        except OperatorTokenProblem as exc:
            self._token(str(exc))
            return "refused"
        self._token(None)
        return outcome

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _down(self, why: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("mesh at %s unavailable (%s); retrying until it is back", self.api.url, why)

    def _token(self, problem: str | None) -> None:
        if problem and problem != self.token_problem:
            log.error("%s", problem)
        elif problem is None and self.token_problem:
            log.info("the mesh accepts our operator token now")
        self.token_problem = problem


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when stopping or woken (the mesh is back up)."""
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
