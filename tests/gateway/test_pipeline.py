"""The governed path (gateway/pipeline.py, `Pipeline.governed`) on its own: every outcome a
front-end answers when it goes well or policy says no — allowed, denied, rate limited,
approved / denied / timed out / pending, granted — and the trace each leaves. When something
fails: tests/gateway/test_pipeline_failures.py.

Only the bus is a stand-in (tests/gateway/fakes.py: requests answered in this process, no
ZeroMQ); what answers them is real: the policy engine (with the policy worker's FORWARD of an
allowed call, as workers/policy.py does it) and the approval service on its own SQLite store.
The upstream is the test's handler. The end-to-end tests (tests/e2e) cover the same path across
processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus.approval_messages import ApprovalList, GrantCreate
from bus.client import PartialHandler
from bus.messages import (
    POLICY,
)
from tests.gateway.fakes import RESULT, Governed


async def test_allowed_goes_straight_on_from_the_policy_worker(mesh: Governed) -> None:
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


async def test_denied_never_reaches_the_upstream(mesh: Governed) -> None:
    outcome = await mesh.call("move_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (403, "deny", "claude")
    assert outcome.error.startswith("denied by policy claude: ")
    assert outcome.refused_by_policy and not outcome.forwarded
    assert mesh.bus.to("upstream.fs") == []
    (trace,) = mesh.traces.records
    assert (trace["status_code"], trace["policy"], trace["error"]) == (403, "deny", outcome.error)


async def test_an_agent_no_policy_names_is_denied(mesh: Governed) -> None:
    outcome = await mesh.call("read_file", agent="stranger")
    assert (outcome.status, outcome.policy) == (403, "deny")
    assert mesh.bus.to("upstream.fs") == []


async def test_rate_limited_past_the_policy_limit(mesh: Governed) -> None:
    statuses = [(await mesh.call("read_file")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert mesh.traces.records[-1]["policy"] == "rate_limited"
    assert len(mesh.bus.to("upstream.fs")) == 3


async def test_approved_by_a_human_then_called(mesh: Governed) -> None:
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
    mesh: Governed, status: str, by: str, http: int, said: str
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


async def test_not_waiting_answers_202_with_the_approval(mesh: Governed) -> None:
    outcome = await mesh.call("write_file", wait_for_approval=False)
    (approval_id,) = [a["id"] for a in (await mesh.approvals.op_list(ApprovalList()))["approvals"]]
    assert (outcome.status, outcome.approval_id, outcome.approval_status) == (
        202,
        approval_id,
        "pending",
    )
    assert f"`mesh approve {approval_id[:8]}`" in outcome.error
    assert mesh.bus.to("upstream.fs") == [] and mesh.approvals.waiters == {}


async def test_a_grant_turns_approval_into_allow(mesh: Governed) -> None:
    grant = await mesh.approvals.op_grant_create(
        GrantCreate(agent="claude", tools=["fs.write_*"], duration="1h")
    )
    outcome = await mesh.call("write_file")
    assert (outcome.status, outcome.policy, outcome.rule) == (200, "allow", f"grant:{grant['id']}")
    assert outcome.result == RESULT and outcome.approval_id == ""


async def test_a_call_traced_after_its_answer_is_recorded_once_when_asked(mesh: Governed) -> None:
    outcome = await mesh.call("read_file", trace_id="t-3", trace_after_answer=True)
    assert outcome.status == 200 and mesh.traces.records == []  # not yet: the REST edge answers
    mesh.pipeline.trace(outcome)
    mesh.pipeline.trace(outcome)  # (a second time records nothing)
    (trace,) = mesh.traces.records
    assert (trace["trace_id"], trace["status_code"], trace["latency_ms"]) == (
        "t-3",
        200,
        round(outcome.latency_ms),
    )
    assert trace["span"]["start"] <= trace["span"]["end"]  # it ended with the call, not later
    refused = await mesh.call("move_file", trace_after_answer=True)
    mesh.pipeline.trace(refused)
    assert [t["policy"] for t in mesh.traces.records] == ["allow", "deny"]
