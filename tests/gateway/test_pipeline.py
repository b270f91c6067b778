"""The governed path (gateway/pipeline.py, `Pipeline.governed`) on its own: every outcome a
front-end answers — allowed, denied, rate limited, approved / denied / timed out / pending,
a mesh service or the upstream failing, a cancelled caller — and the trace each leaves.

Only the bus is a stand-in (`FakeBus`: requests answered in this process, no ZeroMQ); what
answers them is real: the policy engine (with the policy worker's FORWARD of an allowed call,
as workers/policy.py does it) and the approval service on its own SQLite store. The upstream
is the test's handler. The end-to-end tests (tests/e2e) cover the same path across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bus import frames
from bus.approval_messages import ApprovalList, GrantCreate
from bus.client import CONNECTION_LOST, BusClient, PartialHandler, Reply
from bus.errors import BusError, received, unavailable, upstream_error, upstream_timeout
from bus.messages import (
    APPROVAL,
    POLICY,
    PolicyCheck,
    ToolCall,
    UpstreamRequest,
    UpstreamState,
    UpstreamStateName,
    upstream_service,
)
from bus.worker import Request
from gateway.call import Outcome
from gateway.catalog import Catalog
from gateway.pipeline import Pipeline
from gateway.trace_outbox import TraceOutbox
from mesh_config.model import Config
from policy.engine import PolicyEngine
from policy.model import Policy
from workers.approval import ApprovalService
from workers.approval_store import StateStore

Upstream = Callable[[dict[str, Any], PartialHandler | None], Awaitable[Any]]

POLICIES = [
    Policy.model_validate(
        {
            "name": "claude",
            "agent": "claude",
            "rate_limit": {"max_per_minute": 3},
            "rules": [
                {"tools": ["fs.read_*"], "action": "allow"},
                {"tools": ["fs.write_file"], "action": "human_approval"},
                {"tools": ["fs.*"], "action": "deny"},
            ],
        }
    )
]
RESULT = {"content": [{"type": "text", "text": "hello"}], "isError": False}


async def _answers(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
    return RESULT


class _Request:
    def __init__(self, body: Any) -> None:
        self.body = body  # what the approval service reads of a bus request


class FakeBus(BusClient):
    """`exchange` answered in-process: `policy` by the engine, `approval` by the service,
    `upstream.fs` by `upstream`. `down` services answer UNAVAILABLE, as the broker does for a
    service with no worker. Every request is kept in `sent` (service, body, timeout)."""

    def __init__(self, approvals: ApprovalService) -> None:
        super().__init__("inproc://pipeline-test")  # never connected
        self.engine = PolicyEngine(POLICIES)
        self.approvals = approvals
        self.upstream: Upstream = _answers
        self.down: dict[str, BusError] = {}
        self.sent: list[tuple[str, Any, float]] = []

    def to(self, service: str) -> list[Any]:
        return [body for s, body, _ in self.sent if s == service]

    async def exchange(
        self,
        service: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        on_partial: PartialHandler | None = None,
    ) -> Reply:
        self.sent.append((service, body, timeout))
        if service in self.down:
            raise self.down[service]
        if service == POLICY:
            return await self._policy(PolicyCheck.model_validate(body), on_partial)
        if service == APPROVAL:
            request: Request = _Request(body)  # type: ignore[assignment]
            return Reply(await self.approvals.handle(request), {})
        assert service == upstream_service("fs"), service
        return Reply(await self.upstream(body, on_partial), {"upstream_ns": [1, 2]})

    async def _policy(self, check: PolicyCheck, on_partial: PartialHandler | None) -> Reply:
        decision = self.engine.evaluate(check.agent, check.tool, check.params, time.monotonic())
        decided = {**decision.model_dump(), "version": "v1"}
        if check.then is None or decided["action"] != "allow":
            return Reply(decided, {"policy_ns": [1, 2]})
        # FORWARD: the upstream's answer (or error) comes back with the decision in its meta
        then = check.then
        forwarded = (
            then.request.model_copy(update={"timeout": then.timeout}).dump()
            if then.request is not None
            else ToolCall(tool=then.tool, arguments=check.params, timeout=then.timeout).dump()
        )
        meta = {"policy": decided, "policy_ns": [1, 2]}
        self.sent.append((upstream_service(then.server), forwarded, then.timeout))
        try:
            return Reply(await self.upstream(forwarded, on_partial), meta)
        except BusError as exc:
            raise received(exc.code, exc.message, {**exc.meta, **meta}) from None


class Traces(TraceOutbox):
    """The outbox, keeping what the pipeline hands it (no trace worker here)."""

    def __init__(self, client: BusClient) -> None:
        super().__init__(client)
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.approvals = ApprovalService(StateStore(tmp_path / "state.db"), Config())
        self.bus = FakeBus(self.approvals)
        self.catalog = Catalog(self.bus, ["fs"])
        self.catalog.servers["fs"].workers = [{"pid": 1}]  # up
        self.traces = Traces(self.bus)
        self.pipeline = Pipeline(self.bus, self.catalog, self.traces, {"fs": 7.0})

    async def call(self, tool: str, agent: str = "claude", **kw: Any) -> Outcome:
        upstream = self.pipeline.upstream_call("fs", ToolCall(tool=tool, arguments={"p": 1}))
        assert upstream is not None
        return await self.pipeline.governed(agent, f"fs.{tool}", {"p": 1}, upstream, **kw)

    async def pending(self) -> str:
        """The id of the approval a call is waiting on (waited for, with a deadline)."""
        deadline = time.monotonic() + 5
        while not self.approvals.waiters:
            assert time.monotonic() < deadline, "no call is waiting for approval"
            await asyncio.sleep(0.001)
        (approval_id,) = self.approvals.waiters
        return approval_id


@pytest.fixture
def mesh(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


async def test_allowed_goes_straight_on_from_the_policy_worker(mesh: Setup) -> None:
    progress: list[Any] = []

    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        assert on_partial is not None
        on_partial({"progress": 1})
        return RESULT

    mesh.bus.upstream = upstream
    outcome = await mesh.call("read_file", on_progress=progress.append, trace_id="t-1")
    assert (outcome.status, outcome.policy, outcome.rule) == (200, "allow", "claude")
    assert (outcome.result, outcome.policy_version, outcome.forwarded) == (RESULT, "v1", True)
    assert progress == [{"progress": 1}]
    (policy, check, timeout), (upstream_fs, _, _) = mesh.bus.sent  # one round trip
    assert (policy, upstream_fs) == (POLICY, "upstream.fs")
    assert check["then"] == {"server": "fs", "tool": "read_file", "timeout": 7.0}
    assert timeout > 7.0  # the upstream worker's own timeout fires first, with a better message
    (trace,) = mesh.traces.records
    assert (trace["trace_id"], trace["status_code"], trace["policy"]) == ("t-1", 200, "allow")
    assert trace["policy_version"] == "v1" and trace["span"]["policy"] == [1, 2]


async def test_denied_never_reaches_the_upstream(mesh: Setup) -> None:
    outcome = await mesh.call("move_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (403, "deny", "claude")
    assert outcome.error.startswith("denied by policy claude: ")
    assert outcome.refused_by_policy and not outcome.forwarded
    assert mesh.bus.to("upstream.fs") == []
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["policy"], trace["error"]) == (403, "deny", outcome.error)


async def test_an_agent_no_policy_names_is_denied(mesh: Setup) -> None:
    outcome = await mesh.call("read_file", agent="stranger")
    assert (outcome.status, outcome.policy) == (403, "deny")
    assert mesh.bus.to("upstream.fs") == []


async def test_rate_limited_past_the_policy_limit(mesh: Setup) -> None:
    statuses = [(await mesh.call("read_file")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert mesh.traces.records[-1]["policy"] == "rate_limited"
    assert len(mesh.bus.to("upstream.fs")) == 3


async def test_approved_by_a_human_then_called(mesh: Setup) -> None:
    call = asyncio.create_task(mesh.call("write_file", trace_id="t-2"))
    approval_id = await mesh.pending()
    (provisional,) = mesh.traces.records  # visible in /traces while it waits
    assert (provisional["trace_id"], provisional["approval_status"]) == ("t-2", "pending")
    assert provisional["status_code"] == 0 and mesh.bus.to("upstream.fs") == []
    mesh.approvals.resolve(approval_id, "approved", "alice", "looks fine", None)
    outcome = await call
    assert (outcome.status, outcome.policy, outcome.result) == (200, "human_approval", RESULT)
    assert (outcome.approval_id, outcome.approval_status) == (approval_id, "approved")
    assert (outcome.approved_by, outcome.reasoning) == ("alice", "looks fine")
    assert len(mesh.bus.to("upstream.fs")) == 1
    final = mesh.traces.records[-1]
    assert (final["trace_id"], final["status_code"], final["approved_by"]) == ("t-2", 200, "alice")
    assert final["timestamp"] == provisional["timestamp"]  # the final record keeps its place
    assert len(final["span"]["approval"]) == 2


@pytest.mark.parametrize(
    ("status", "by", "http", "said"),
    [
        ("denied", "alice", 403, "denied by alice: no"),
        ("timeout", "system:timeout", 408, "timed out: no"),
    ],
)
async def test_approval_refused_or_timed_out(
    mesh: Setup, status: str, by: str, http: int, said: str
) -> None:
    call = asyncio.create_task(mesh.call("write_file"))
    approval_id = await mesh.pending()
    mesh.approvals.resolve(approval_id, status, by, "no", None)
    outcome = await call
    assert (outcome.status, outcome.policy, outcome.approval_status) == (
        http,
        "human_approval",
        status,
    )
    assert outcome.error == f"approval {approval_id[:8]} {said}"
    assert outcome.refused_by_policy and mesh.bus.to("upstream.fs") == []
    assert mesh.traces.records[-1]["status_code"] == http


async def test_not_waiting_answers_202_with_the_approval(mesh: Setup) -> None:
    outcome = await mesh.call("write_file", wait_for_approval=False)
    (approval_id,) = [a["id"] for a in (await mesh.approvals.op_list(ApprovalList()))["approvals"]]
    assert (outcome.status, outcome.approval_id, outcome.approval_status) == (
        202,
        approval_id,
        "pending",
    )
    assert f"`mesh approve {approval_id[:8]}`" in outcome.error
    assert mesh.bus.to("upstream.fs") == [] and mesh.approvals.waiters == {}


async def test_a_grant_turns_approval_into_allow(mesh: Setup) -> None:
    grant = await mesh.approvals.op_grant_create(
        GrantCreate(agent="claude", tools=["fs.write_*"], duration="1h")
    )
    outcome = await mesh.call("write_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (200, "allow", f"grant:{grant['id']}")
    assert outcome.result == RESULT and outcome.approval_id == ""


@pytest.mark.parametrize(
    ("service", "tool", "said"),
    [
        (POLICY, "read_file", "policy service unavailable: no worker"),
        (APPROVAL, "write_file", "approval service unavailable: no worker"),
    ],
)
async def test_a_mesh_service_down_is_a_503(
    mesh: Setup, service: str, tool: str, said: str
) -> None:
    mesh.bus.down[service] = unavailable("no worker")
    outcome = await mesh.call(tool)
    assert (outcome.status, outcome.policy, outcome.error) == (503, "error", said)
    assert mesh.bus.to("upstream.fs") == []
    assert mesh.traces.records[-1]["status_code"] == 503


async def test_the_bus_lost_mid_call_says_it_may_have_run(mesh: Setup) -> None:
    mesh.bus.down[POLICY] = BusError(frames.UNAVAILABLE, CONNECTION_LOST)
    outcome = await mesh.call("read_file")
    assert outcome.status == 503
    assert outcome.error == (
        f"mesh bus unavailable: {CONNECTION_LOST} (the call may or may not have reached fs)"
    )


def _failing(exc: BusError) -> Upstream:
    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        raise exc

    return upstream


@pytest.mark.parametrize(
    ("exc", "http", "said"),
    [
        (upstream_error("fs.read_file", -32000, "boom"), 502, "upstream error from fs.read_file"),
        (upstream_timeout("fs.read_file", 7.0), 504, "upstream timeout: fs.read_file gave no"),
        (BusError(frames.UPSTREAM_GONE, "fs exited (code 1)"), 502, "fs exited (code 1)"),
        (BusError(frames.WORKER_DIED, "worker gone"), 502, "upstream fs: its worker died"),
        (unavailable("no worker for upstream.fs"), 503, "upstream unavailable: fs (no worker"),
    ],
)
async def test_an_upstream_failure_after_allow(
    mesh: Setup, exc: BusError, http: int, said: str
) -> None:
    mesh.bus.upstream = _failing(exc)
    outcome = await mesh.call("read_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (http, "allow", "claude")
    assert outcome.error.startswith(said), outcome.error
    assert outcome.forwarded and not outcome.refused_by_policy
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["policy"], trace["error"]) == (http, "allow", outcome.error)


async def test_a_down_upstream_is_named_with_its_reason(mesh: Setup) -> None:
    view = mesh.catalog.servers["fs"]
    view.workers = []
    view.states = [
        UpstreamState(
            server="fs",
            instance="fs:0",
            state=UpstreamStateName.BACKING_OFF,
            reason="command 'mcp-fs' not found on PATH",
            failures=1,
        )
    ]
    mesh.bus.upstream = _failing(unavailable("no worker for upstream.fs"))
    outcome = await mesh.call("read_file")
    assert (outcome.status, outcome.error) == (
        503,
        "upstream unavailable: fs: command 'mcp-fs' not found on PATH",
    )


async def test_an_upstream_failure_after_approval(mesh: Setup) -> None:
    mesh.bus.upstream = _failing(upstream_timeout("fs.write_file", 7.0))
    call = asyncio.create_task(mesh.call("write_file"))
    mesh.approvals.resolve(await mesh.pending(), "approved", "alice", None, None)
    outcome = await call
    assert (outcome.status, outcome.policy, outcome.approval_status) == (
        504,
        "human_approval",
        "approved",
    )
    assert outcome.error.startswith("upstream timeout: fs.write_file")


async def test_a_passed_through_request_keeps_the_upstreams_error(mesh: Setup) -> None:
    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        assert body["method"] == "resources/read" and body["timeout"] == 7.0
        return {"error": {"code": -32002, "message": "no such resource", "data": {"uri": "x"}}}

    mesh.bus.upstream = upstream
    request = UpstreamRequest(method="resources/read", params={"uri": "file:///x"})
    upstream_call = mesh.pipeline.upstream_call("fs", request)
    assert upstream_call is not None
    params = {"uri": "file:///x"}
    outcome = await mesh.pipeline.governed("claude", "fs.read_x", params, upstream_call)
    assert (outcome.status, outcome.policy, outcome.rpc_code) == (404, "allow", -32002)
    assert (outcome.error, outcome.rpc_data) == ("no such resource", {"uri": "x"})


async def test_a_cancelled_caller_is_traced_499(mesh: Setup) -> None:
    started = asyncio.Event()

    async def upstream(body: dict[str, Any], on_partial: PartialHandler | None) -> Any:
        started.set()
        await asyncio.Event().wait()  # never answers

    mesh.bus.upstream = upstream
    call = asyncio.create_task(mesh.call("read_file"))
    await asyncio.wait_for(started.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["error"]) == (499, "cancelled by the client")


async def test_params_the_bus_cannot_carry_are_refused_untraced(mesh: Setup) -> None:
    upstream = mesh.pipeline.upstream_call("fs", ToolCall(tool="read_file"))
    assert upstream is not None
    params = {"x": float("nan")}
    outcome = await mesh.pipeline.governed("claude", "fs.read_file", params, upstream)
    assert (outcome.status, outcome.traced) == (400, False)
    assert outcome.error == "invalid params.x: NaN is not a JSON number"
    assert mesh.bus.sent == [] and mesh.traces.records == []


async def test_a_name_that_is_no_tool_is_a_404_untraced(mesh: Setup) -> None:
    mesh.catalog.servers["fs"].tools = {"read_file": {"name": "read_file"}}
    outcome = await mesh.pipeline.call_tool("claude", "fs.nope", {})
    assert (outcome.status, outcome.error) == (404, "unknown tool fs.nope: fs has no tool 'nope'")
    assert mesh.bus.sent == [] and mesh.traces.records == []
    outcome = await mesh.pipeline.call_tool("claude", "fs.read_file", {})
    assert (outcome.status, outcome.result) == (200, RESULT)
