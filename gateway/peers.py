"""Several gateway processes on one port (`gateway.processes` > 1, SO_REUSEPORT): the kernel
hands each new connection to any of them. What must still have one home:

- A `/mcp` session lives in the process that answered its `initialize` (the SDK's transport: its
  GET stream, server→client requests, its idle timer). Its id says which: `g<slot>-<uuid>`. A
  request for it that lands on another process is forwarded, as it came, to the owner's unix
  socket (`<state>/gateway-<slot>.sock`) and the answer streamed back (`McpRoute`). An owner that
  is gone answers 404 (unknown session), on which the MCP client opens a new session.
- The policy set in force: process 0 holds the reloader (gateway/reload.py: it serves
  `policyset` on the bus and watches the config). The others follow it (PolicyFollower) and
  pass `POST /reload` to it with the caller's headers, which it checks (`ForwardedReload`); a
  SIGHUP they get is passed on as a SIGHUP (the kernel checks who may send it), never as a
  request without the operator token; their /health shows what process 0 stored.

Everything else is on the bus already (traces, approvals, metrics' counters in the trace writer)
or per process by design (the trace outbox's journal is named by pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.state_dir import StateDir
from gateway.policy_follower import PolicyFollower

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SESSION_HEADER = b"mcp-session-id"
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}


def session_prefix(slot: int) -> str:
    return f"g{slot}-"


def owner_of(session_id: str) -> int | None:
    """The slot a session id names (`g<slot>-...`), None if it names none."""
    head, dash, _ = session_id.partition("-")
    if not dash or not head.startswith("g") or not head[1:].isdigit():
        return None
    return int(head[1:])


class Peers:
    """HTTP to the other gateway processes of this mesh, over their unix sockets."""

    def __init__(self, state_dir: Path, slot: int) -> None:
        self.state = StateDir(state_dir)
        self.slot = slot
        self._clients: dict[int, httpx.AsyncClient] = {}
        self.forwarded = 0  # requests passed on to another process (for /metrics)

    def client(self, slot: int) -> httpx.AsyncClient:
        import httpx  # at first use: a gateway's start stays as light

        if slot not in self._clients:
            transport = httpx.AsyncHTTPTransport(uds=str(self.state.gateway_sock(slot)))
            # No timeout: a forwarded GET is a long-lived SSE stream; the owner bounds calls.
            self._clients[slot] = httpx.AsyncClient(
                transport=transport, base_url="http://gateway", timeout=None
            )
        return self._clients[slot]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class McpRoute:
    """`/mcp` in front of this process's endpoint: a session owned by another process is
    forwarded there."""

    def __init__(self, inner: ASGIApp, peers: Peers) -> None:
        self.inner = inner
        self.peers = peers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = next((v for k, v in scope["headers"] if k == SESSION_HEADER), None)
        owner = owner_of(session.decode("latin-1")) if session is not None else None
        if owner is None or owner == self.peers.slot:
            await self.inner(scope, receive, send)
            return
        self.peers.forwarded += 1
        await self._forward(owner, scope, receive, send)

    async def _forward(self, owner: int, scope: Scope, receive: Receive, send: Send) -> None:
        import httpx

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went before sending its body
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        path = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        client = self.peers.client(owner)
        try:
            response = await client.send(
                client.build_request(scope["method"], path, headers=headers, content=bytes(body)),
                stream=True,
            )
        except httpx.TransportError:
            await _gone(send)
            return
        streaming = asyncio.current_task()
        assert streaming is not None

        async def watch_disconnect() -> None:  # the client went: stop relaying (a GET stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            streaming.cancel()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            raw = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": raw}
            )
            with contextlib.suppress(httpx.TransportError):  # the owner died mid-stream
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if watcher.done():  # our own cancel: the client is gone, nothing left to answer
                return
            raise
        finally:
            watcher.cancel()
            await response.aclose()


async def _gone(send: Send) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32600,
                "message": "Session not found: the gateway process that held it is gone; "
                "start a new session",
            },
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


class ForwardedReload:
    """The reloader of a gateway process that does not hold the policy set: `POST /reload`
    goes to process 0, which does; /health shows what process 0 stored (gateway/reload.py)."""

    def __init__(self, peers: Peers, follower: PolicyFollower, state_dir: Path) -> None:
        self.peers = peers
        self.follower = follower
        self.state_file = StateDir(state_dir).policy_set

    async def reload(self, trigger: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """`headers`: the operator's (token, bearer), checked again by process 0."""
        import httpx

        try:
            response = await self.peers.client(0).post("/reload", headers=headers, timeout=60)
            answer: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return {
                "status": "invalid",
                **self.view(),
                "error": f"gateway process 0, which holds the policy set, did not answer: {exc}",
            }
        return answer

    def pass_signal(self) -> None:
        """A SIGHUP this process got (a local operator's `kill -HUP`): sent on to process 0,
        whose reloader takes it as its own. Process 0's pid is the peer credential of its unix
        socket (SO_PEERCRED: the process listening on it now, never a stale pid file's)."""
        path = self.peers.state.gateway_sock(0)
        try:
            pid = listener_pid(path)
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            log.error(
                "SIGHUP not passed on to gateway process 0 (%s): %s; nothing reloaded", path, exc
            )
            return
        log.info("SIGHUP passed on to gateway process 0 (pid %d), which holds the policy set", pid)

    def view(self) -> dict[str, Any]:
        stored: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(self.state_file.read_text())
        current = self.follower.current
        out: dict[str, Any] = {
            "version": stored.get("version", current.version),
            "generation": stored.get("generation", current.generation),
            "policies": len(current.policies),
            "loaded_at": stored.get("loaded_at", ""),
        }
        for key in ("error", "error_at", "restart_needed"):
            if stored.get(key):
                out[key] = stored[key]
        return out


def listener_pid(path: Path) -> int:
    """The pid of the process listening on the unix socket `path`, as the kernel knows it."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:  # not Linux
        raise OSError("no SO_PEERCRED here: send SIGHUP to gateway process 0 itself")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(str(path))
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peercred, 12))
    return int(pid)
