"""The broker's routing state machine on plain data: no sockets, a fake clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bus import frames
from bus.routing import Router


def msg(command: bytes, header: dict[str, Any], body: Any = None) -> list[bytes]:
    out = [frames.PROTOCOL, command, frames.pack(header)]
    if body is not None:
        out.append(frames.pack(body))
    return out


def sent(router: Router) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    out = [(m[0], m[2], frames.unpack(m[3])) for m in router.outbox]
    router.outbox.clear()
    return out


def ready(
    router: Router,
    ident: bytes,
    service: str = "s",
    capacity: int = 1,
    now: float = 0.0,
    slot: str | None = None,
) -> None:
    header: dict[str, Any] = {"s": service, "n": capacity}
    if slot:
        header["slot"] = slot
    router.on_message(ident, msg(frames.READY, header, {"tools": []}), now)


def request(
    router: Router,
    client: bytes,
    rid: int,
    service: str = "s",
    t: int = 1000,
    now: float = 0.0,
    key: str | None = None,
) -> None:
    header: dict[str, Any] = {"s": service, "id": rid, "t": t}
    if key:
        header["k"] = key
    router.on_message(client, msg(frames.REQUEST, header, {"x": rid}), now)


def test_queue_waits_for_capacity_then_dispatches_in_order() -> None:
    r = Router()
    ready(r, b"w1")
    request(r, b"c", 1)
    request(r, b"c", 2)
    assert [(to, cmd, h["id"]) for to, cmd, h in sent(r)] == [(b"w1", frames.REQUEST, 1)]
    r.on_message(b"w1", msg(frames.REPLY, {"c": b"c", "id": 1}, "ok"), 0.1)
    out = sent(r)
    assert [(to, cmd, h["id"]) for to, cmd, h in out] == [
        (b"c", frames.REPLY, 1),
        (b"w1", frames.REQUEST, 2),
    ]


def test_deadline_in_queue_times_out_and_inflight_is_cancelled() -> None:
    r = Router()
    ready(r, b"w1")
    request(r, b"c", 1, t=100)
    request(r, b"c", 2, t=100)
    sent(r)
    r.tick(0.2)
    out = sent(r)
    errors = {h["id"]: h["code"] for to, cmd, h in out if cmd == frames.ERROR}
    assert errors == {1: frames.TIMEOUT, 2: frames.TIMEOUT}
    assert (b"w1", frames.CANCEL, {"c": b"c", "id": 1}) in out
    # A late reply from the worker is dropped, not forwarded.
    r.on_message(b"w1", msg(frames.REPLY, {"c": b"c", "id": 1}, "late"), 0.3)
    assert sent(r) == []


def test_dead_worker_fails_inflight_and_queue_when_last() -> None:
    r = Router()
    ready(r, b"w1", service="upstream.fs")
    request(r, b"c", 1, service="upstream.fs", t=60_000)
    request(r, b"c", 2, service="upstream.fs", t=60_000)
    sent(r)
    r.tick(frames.HEARTBEAT_INTERVAL * frames.LIVENESS + 0.01)
    out = {h["id"]: (h["code"], h["msg"]) for to, cmd, h in sent(r) if cmd == frames.ERROR}
    assert out == {
        1: (frames.WORKER_DIED, "upstream.fs: worker died"),
        2: (frames.UNAVAILABLE, "upstream.fs: no live worker"),
    }
    assert r.events[-1][0] == "worker.upstream.fs.down"


def test_any_message_keeps_a_worker_alive() -> None:
    r = Router()
    ready(r, b"w1")
    for step in range(1, 10):
        r.on_message(b"w1", msg(frames.HEARTBEAT, {}), step * 1.0)
        r.tick(step * 1.0 + 0.5)
    assert b"w1" in r.workers


def test_ready_again_on_the_same_connection_refreshes_and_keeps_inflight() -> None:
    # A worker process that restarts connects anew (a new identity; the old one dies by
    # heartbeat). The same identity saying READY again is answering a DISCONNECT that crossed
    # its first READY: failing what it holds would fail requests it is serving (PROTOCOL.md).
    r = Router()
    ready(r, b"w1", capacity=1)
    request(r, b"c", 1)
    sent(r)
    ready(r, b"w1", capacity=2, now=0.1)
    assert sent(r) == []
    assert r.workers[b"w1"].inflight == {(b"c", 1)} and r.workers[b"w1"].capacity == 2
    r.on_message(b"w1", msg(frames.REPLY, {"c": b"c", "id": 1}, "done"), 0.2)
    assert [(to, cmd) for to, cmd, _ in sent(r)] == [(b"c", frames.REPLY)]


def test_ready_for_another_service_fails_what_the_old_one_held() -> None:
    r = Router()
    ready(r, b"w1")
    request(r, b"c", 1)
    sent(r)
    ready(r, b"w1", service="other", now=0.1)
    assert [(cmd, h.get("code")) for to, cmd, h in sent(r)] == [(frames.ERROR, frames.WORKER_DIED)]
    assert "s" not in {name for name, svc in r.services.items() if svc.workers}


def test_unknown_worker_is_told_once_then_registers_without_losing_new_requests() -> None:
    # After a broker restart a worker's queued messages all reach the new broker before its
    # READY: one DISCONNECT for all of them, not one each (each would cause another READY).
    r = Router()
    for i in range(5):
        r.on_message(b"w1", msg(frames.REPLY, {"c": b"c", "id": i}, "late"), 0.01 * i)
    r.on_message(b"w1", msg(frames.HEARTBEAT, {"s": "s"}), 0.06)
    assert sent(r) == [(b"w1", frames.DISCONNECT, {})]
    ready(r, b"w1", now=0.1)
    request(r, b"c", 9, now=0.1)
    r.on_message(b"w1", msg(frames.HEARTBEAT, {"s": "s"}), 0.2)
    assert [(to, cmd) for to, cmd, _ in sent(r)] == [(b"w1", frames.REQUEST)]
    # still unknown long after being told (its READY was lost): told again
    r.on_message(b"w2", msg(frames.HEARTBEAT, {"s": "s"}), 0.0)
    r.tick(5.0)
    r.on_message(b"w2", msg(frames.HEARTBEAT, {"s": "s"}), 5.0)
    assert [cmd for to, cmd, _ in sent(r) if to == b"w2"] == [frames.DISCONNECT, frames.DISCONNECT]


def test_heartbeats_from_unknown_peers_client_answered_worker_told() -> None:
    r = Router()
    r.on_message(b"client", msg(frames.HEARTBEAT, {}), 0)
    r.on_message(b"worker", msg(frames.HEARTBEAT, {"s": "policy"}), 0)
    r.on_message(b"leaving", msg(frames.DISCONNECT, {}), 0)  # never knew it: nothing to say
    assert sent(r) == [(b"client", frames.HEARTBEAT, {}), (b"worker", frames.DISCONNECT, {})]


def test_affinity_is_deterministic_by_slot() -> None:
    def owner(order: list[tuple[bytes, str]], key: str) -> str:
        r = Router()
        for ident, slot in order:
            ready(r, ident, capacity=100, slot=slot)
        request(r, b"c", 1, key=key)
        ((to, _, _),) = sent(r)
        return r.workers[to].slot

    slots = [(b"a", "p:0"), (b"b", "p:1"), (b"c", "p:2")]
    for key in ("alice", "bob", "carol", "x" * 50):
        # Same owner whatever the registration order or identities (e.g. after a broker restart).
        assert owner(slots, key) == owner(list(reversed([(i + b"'", s) for i, s in slots])), key)
    owners = {owner(slots, f"agent-{i}") for i in range(50)}
    assert owners == {"p:0", "p:1", "p:2"}


def test_unknown_worker_is_told_to_reregister_and_garbage_is_dropped() -> None:
    r = Router()
    r.on_message(b"ghost", msg(frames.REPLY, {"c": b"c", "id": 1}, "x"), 0)
    assert sent(r) == [(b"ghost", frames.DISCONNECT, {})]
    for garbage in (
        [b"XXXX", frames.REQUEST, b"\x80"],
        [frames.PROTOCOL],
        [frames.PROTOCOL, frames.REQUEST, b"\xc1"],
        [frames.PROTOCOL, frames.REQUEST, frames.pack({"s": "s"})],
        [frames.PROTOCOL, frames.REQUEST, frames.pack([1, 2])],
    ):
        r.on_message(b"c", garbage, 0)
    assert sent(r) == []


def test_request_without_timeout_is_refused_and_mmi_reports_services() -> None:
    r = Router()
    ready(r, b"w1", service="policy", capacity=4, slot="policy:0")
    request(r, b"c", 1, service="policy", t=0)
    assert sent(r)[0][2]["code"] == frames.BAD_REQUEST
    request(r, b"c", 2, service="mmi.services")
    (reply,) = r.outbox
    assert (reply[0], reply[2]) == (b"c", frames.REPLY)
    report = frames.unpack(reply[4])
    assert report["policy"]["workers"][0]["slot"] == "policy:0"
    assert report["policy"]["workers"][0]["capacity"] == 4


def forward(
    router: Router,
    worker: bytes,
    client: bytes,
    rid: int,
    service: str,
    now: float = 0.0,
    meta: dict[str, Any] | None = None,
    key: str | None = None,
) -> None:
    header: dict[str, Any] = {"c": client, "id": rid, "s": service}
    if meta:
        header["m"] = meta
    if key:
        header["k"] = key
    router.on_message(worker, msg(frames.FORWARD, header, {"fwd": rid}), now)


def test_forward_hands_the_request_on_and_the_caller_gets_meta_with_the_answer() -> None:
    r = Router()
    ready(r, b"p", service="policy")
    ready(r, b"u", service="upstream.fs")
    request(r, b"c", 1, service="policy", t=1000)
    request(r, b"c", 2, service="policy", t=1000)  # queued behind 1: p has capacity 1
    sent(r)
    forward(r, b"p", b"c", 1, "upstream.fs", now=0.1, meta={"policy": {"action": "allow"}})
    out = r.outbox[:]
    msgs = sent(r)
    # The upstream gets the new body with the remaining deadline; p is free for request 2.
    assert [(to, cmd, h["id"]) for to, cmd, h in msgs] == [
        (b"p", frames.REQUEST, 2),
        (b"u", frames.REQUEST, 1),
    ]
    assert msgs[1][2]["t"] == 900 and frames.unpack(out[1][4]) == {"fwd": 1}
    r.on_message(b"u", msg(frames.PARTIAL, {"c": b"c", "id": 1}, "p"), 0.2)
    r.on_message(b"u", msg(frames.REPLY, {"c": b"c", "id": 1}, "done"), 0.3)
    assert [(to, cmd, h) for to, cmd, h in sent(r)] == [
        (b"c", frames.PARTIAL, {"id": 1}),  # partials do not repeat the meta
        (b"c", frames.REPLY, {"id": 1, "m": {"policy": {"action": "allow"}}}),
    ]
    served = {w.identity: w.served for w in r.workers.values()}
    assert served == {b"p": 1, b"u": 1} and not r.pending.keys() - {(b"c", 2)}


def test_forward_failures_carry_the_meta_and_late_forwards_are_dropped() -> None:
    r = Router()
    ready(r, b"p", service="policy", capacity=4)
    ready(r, b"u", service="upstream.fs")
    for rid in (1, 2, 3):
        request(r, b"c", rid, service="policy", t=1000)
    sent(r)
    meta = {"policy": {"rule": "r1"}}
    forward(r, b"p", b"c", 1, "upstream.gone", meta=meta)  # no such service: at once, with meta
    assert sent(r) == [
        (
            b"c",
            frames.ERROR,
            {
                "id": 1,
                "code": frames.UNAVAILABLE,
                "msg": "upstream.gone: no live worker",
                "m": meta,
            },
        )
    ]
    forward(r, b"p", b"c", 2, "upstream.fs", meta=meta)
    r.tick(1.01)  # the original deadline still holds after the forward
    out = sent(r)
    assert (
        b"c",
        frames.ERROR,
        {"id": 2, "code": frames.TIMEOUT, "msg": "upstream.fs: deadline exceeded", "m": meta},
    ) in out
    assert (b"u", frames.CANCEL, {"c": b"c", "id": 2}) in out
    forward(r, b"p", b"c", 2, "upstream.fs")  # late: the request is gone
    forward(r, b"u", b"c", 3, "upstream.fs")  # not the worker holding it
    assert sent(r) == []
    assert r.pending == {} and not r.workers[b"p"].inflight and not r.workers[b"u"].inflight


def test_a_forwarded_request_whose_worker_dies_fails_with_the_meta() -> None:
    r = Router()
    ready(r, b"p", service="policy")
    ready(r, b"u", service="upstream.fs")
    request(r, b"c", 1, service="policy", t=60_000)
    forward(r, b"p", b"c", 1, "upstream.fs", meta={"policy": {"rule": "r"}})
    sent(r)
    r.on_message(b"u", msg(frames.DISCONNECT, {}), 0.1)
    assert sent(r)[0] == (
        b"c",
        frames.ERROR,
        {
            "id": 1,
            "code": frames.WORKER_DIED,
            "msg": "upstream.fs: worker disconnected",
            "m": {"policy": {"rule": "r"}},
        },
    )


def event(router: Router, worker: bytes, topic: Any, body: bytes, now: float = 0.0) -> None:
    router.on_message(
        worker, [frames.PROTOCOL, frames.EVENT, frames.pack({"topic": topic}), body], now
    )


def test_an_upstream_worker_publishes_its_resource_events_as_sent() -> None:
    r = Router()
    ready(r, b"u", service="upstream.fs", slot="fs:0")
    r.events.clear()
    body = frames.pack({"uri": "file:///a"})
    event(r, b"u", "resource.fs.updated", body, now=1.0)
    assert r.events == [("resource.fs.updated", body)]  # the bytes it sent, not re-encoded
    assert sent(r) == []
    assert (
        r.workers[b"u"].expiry == 1.0 + frames.HEARTBEAT_INTERVAL * frames.LIVENESS
    )  # counts as a heartbeat


def test_forged_topics_are_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    r = Router()
    ready(r, b"u", service="upstream.fs", slot="fs:0")
    ready(r, b"p", service="policy", slot="policy:0")
    r.events.clear()
    body = frames.pack({"uri": "file:///a"})
    caplog.set_level(logging.WARNING, logger="bus.routing")
    for topic in (
        "worker.upstream.fs.ready",
        "trace.claude.recorded",
        "resource.other.updated",
        "resource.fs.",
        "resource.fsx.updated",
        "resource.",
        b"resource.fs.updated",
    ):
        event(r, b"u", topic, body)
    event(r, b"p", "resource.policy.updated", body)  # not an upstream: publishes nothing
    assert r.events == [] and sent(r) == []
    once = ": dropped (and any more such events from it)"
    assert [rec.getMessage() for rec in caplog.records] == [
        f"upstream.fs fs:0 may not publish 'worker.upstream.fs.ready'{once}",
        f"policy policy:0 may not publish 'resource.policy.updated'{once}",
    ]


def test_a_lifecycle_worker_publishes_its_own_servers_states_only() -> None:
    r = Router()
    ready(r, b"s", service="upstream-state.fs", slot="fs:0")
    r.events.clear()
    body = frames.pack({"server": "fs", "state": "up"})
    for topic in (
        "upstream.fs.up",
        "upstream.fs.backing_off",
        "upstream.other.up",  # another server's
        "upstream.fs.",
        "upstream.fs.up.more",
        "upstream.fsx.up",
        "resource.fs.updated",  # an upstream.<name> worker's, not this one's
        "worker.upstream.fs.ready",
    ):
        event(r, b"s", topic, body)
    assert r.events == [("upstream.fs.up", body), ("upstream.fs.backing_off", body)]


def test_events_need_a_known_worker_and_a_map_body() -> None:
    r = Router()
    event(r, b"ghost", "resource.fs.updated", frames.pack({"uri": "x"}))  # never said READY
    assert sent(r) == [(b"ghost", frames.DISCONNECT, {})] and r.events == []
    ready(r, b"u", service="upstream.fs")
    r.events.clear()
    for bad in (frames.pack([1, 2]), b"\xc1", b"", b"\x81\x90\x01", frames.pack("uri")):
        event(r, b"u", "resource.fs.updated", bad)
    r.on_message(b"u", [frames.PROTOCOL, frames.EVENT, frames.pack({})], 0)  # no topic, no body
    assert r.events == [] and sent(r) == []
    assert b"u" in r.workers  # bad events are dropped; the worker stays
