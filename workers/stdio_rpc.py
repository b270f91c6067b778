"""A JSON-RPC 2.0 peer over a child process's stdin/stdout, one message per line (MCP's stdio).

`StdioPeer.spawn` starts the child in a session (process group) of its own, its stderr relayed
to ours (the last line kept: why it exited, `exit_reason()`), and then carries: our requests
(`request`, answered through a dict of pending futures), our notifications (`notify`), and the
child's notifications and requests, handed to the owner's callbacks (each request answered in a
task of its own, so the reader never waits).

The child's death is noticed at once, by the event loop's `process_exited`, not by pipe EOF: EOF
never comes when a launcher (npx -> sh -> node) dies and a grandchild still holds the pipe. Then,
or when a pipe breaks, every pending request fails with `PeerGone`, `on_gone` is called, and the
rest of the process group is ended. `close()` asks the child to exit (stdin closed), then
signals the whole group: no orphans.

One MCP convention is kept here, as JSON-RPC has no cancellation of its own: a request its caller
gives up on (timeout or task cancellation) is withdrawn with `notifications/cancelled` (except
`initialize`, which MCP forbids cancelling), and the child's `notifications/cancelled` stops our
answer to its request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from subprocess import PIPE
from typing import Any, cast

import orjson

from bus import json_values

log = logging.getLogger(__name__)

INTERNAL_ERROR = -32603
_STOP_GRACE = 2.0  # s the child gets to exit after its stdin closes, before SIGTERM
_KILL_GRACE = 1.0  # s the process group gets after SIGTERM, before SIGKILL
_GROUP_POLL = 0.01  # s between probes of the group while it shuts down (only then)
_STDERR_GRACE = 0.5  # s for the child's last stderr lines to arrive after it exited
_REASON_CHARS = 300  # of a stderr line kept in exit_reason()
# A line that says what went wrong (`Error: Cannot find module ...`, `ModuleNotFoundError: ...`,
# `error: ...`, `panic: ...`): exit_reason() prefers the last of these among the child's last
# stderr lines to its very last line, which after a crash is often a stack frame, a `}` or a
# runtime's footer (node ends every uncaught error with `Node.js v20.20.2`).
_ERROR_LINE = re.compile(rb"^\s*(?:[\w.]*(?:error|exception)|fatal|panic)\b", re.IGNORECASE)
_RECENT_LINES = 30  # of stderr searched for it

NotificationHandler = Callable[[str, Any], object]  # (method, params)
# (method, params) -> the result, or raise RpcError
RequestHandler = Callable[[str, Any], Awaitable[Any]]


def encode(message: Any) -> bytes:
    """One line of the wire: orjson, or bus/json_values.py for what orjson cannot write (integers
    beyond 64 bits, which callers may send: PROTOCOL.md, "Values")."""
    try:
        return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json_values.dumps(message) + b"\n"


class RpcError(Exception):
    """A JSON-RPC error: the child's answer to our request, or a handler's to the child's."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message)
        self.code, self.message, self.data = code, message, data

    def wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class PeerGone(Exception):
    """The child exited, a pipe closed, or the peer was closed."""


class StdioPeer(asyncio.SubprocessProtocol):
    """Use `await StdioPeer.spawn(...)`, then `close()`."""

    def __init__(
        self,
        name: str,
        on_notification: NotificationHandler,
        on_request: RequestHandler,
        on_gone: Callable[[], object],
    ) -> None:
        self.name = name  # for log messages
        self.pid = 0  # the child's, which is also its process group's id
        self._on_notification = on_notification
        self._on_request = on_request
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._partial: list[bytes] = []  # the start of a line not yet ended
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._answering: dict[int | str, asyncio.Task[None]] = {}  # the child's requests, by id
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._gone: str | None = None  # why, once gone
        self._recent_stderr: deque[bytes] = deque(maxlen=_RECENT_LINES)  # non-empty lines
        self._stderr_tail = b""  # its stderr since the last newline
        self._stderr_closed: asyncio.Future[None] = self._loop.create_future()
        self._stopping = False
        self._shutdown_task: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        name: str,
        on_notification: NotificationHandler,
        on_request: RequestHandler,
        on_gone: Callable[[], object],
    ) -> StdioPeer:
        """Start the child; raises OSError if it can't be started."""
        _, peer = await asyncio.get_running_loop().subprocess_exec(
            lambda: cls(name, on_notification, on_request, on_gone),
            *argv,
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,  # relayed to our fd 2, last line kept (exit_reason)
            env=env,
            cwd=cwd,
            start_new_session=True,  # own process group, so the whole tree can be ended
        )
        return peer

    async def request(self, method: str, params: Mapping[str, Any] | None, timeout: float) -> Any:
        """Send a request and return its result as sent; raises `RpcError`, `TimeoutError`
        (after withdrawing the request) or `PeerGone`."""
        if self._gone is None and self._stdin is not None and self._stdin.is_closing():
            self._lose("stdin closed")  # the child exited before we wrote (a start that failed)
        if self._gone is not None:
            raise PeerGone(self._gone)
        rid = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        timer = self._loop.call_later(timeout, _expire, future)
        try:
            return await future
        except TimeoutError:
            self._withdraw(rid, method, f"timed out after {timeout}s")
            raise
        except asyncio.CancelledError:
            if future.cancelled():  # not answered yet: our caller gave up
                self._withdraw(rid, method, "cancelled by the client")
            raise
        finally:
            timer.cancel()
            del self._pending[rid]

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    async def close(self) -> None:
        """End the child and its process group (idempotent; finishes even if cancelled)."""
        self._stopping = True
        self._lose("closed")
        await asyncio.shield(self._shut_down())

    # -- asyncio.SubprocessProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports don't derive from asyncio's classes
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self._stderr(data)
            return
        if b"\n" not in data:  # part of a long message
            self._partial.append(data)
            return
        lines = data.split(b"\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
        if rest := lines.pop():
            self._partial.append(rest)
        for line in lines:
            if self._gone is None:
                self._receive(line)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 2:  # (a grandchild may hold it longer: not a sign of the end)
            if not self._stderr_closed.done():
                self._stderr_closed.set_result(None)
            return
        if not self._stopping:  # the exit itself, if that's why, is logged by process_exited
            log.debug(
                "upstream %r: %s closed (%r)", self.name, "stdin" if fd == 0 else "stdout", exc
            )
            self._lose("stdin closed" if fd == 0 else "stdout closed")

    def process_exited(self) -> None:
        assert self._transport is not None
        why = f"process {self.pid} exited with {self._transport.get_returncode()}"
        if not self._stopping:
            log.warning("upstream %r: %s", self.name, why)
        self._lose(why)
        self._exited.set_result(None)

    def exit_reason(self) -> str | None:
        """Why the child is gone, for people: `exited with code 1: <its last stderr line>`,
        `killed by SIGKILL`; its lost pipe (`stdout closed`) before the exit is seen; None while
        it runs and is connected."""
        if self._transport is None or (code := self._transport.get_returncode()) is None:
            return self._gone if self._gone != "closed" else None
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        lines = [*self._recent_stderr, self._stderr_tail]
        said = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
        if said is None:
            said = next((line for line in reversed(lines) if line.strip()), b"")
        last = said.decode(errors="replace").strip()
        return f"{how}: {last[:_REASON_CHARS]}" if last else how

    def _stderr(self, data: bytes) -> None:
        with suppress(OSError):
            os.write(2, data)  # the worker's log: what the server says stays visible
        lines = (self._stderr_tail + data).split(b"\n")
        self._stderr_tail = lines.pop()[-_REASON_CHARS * 4 :]
        self._recent_stderr.extend(line[-_REASON_CHARS * 4 :] for line in lines if line.strip())

    # -- inbound -----------------------------------------------------------------------------

    def _receive(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            if not line.strip():
                return
            try:  # what orjson refuses but JSON libraries write: NaN, Infinity
                message = json.loads(line)
            except ValueError:
                log.warning("upstream %r: unparseable line: %.200r", self.name, line)
                return
        if not isinstance(message, dict):
            log.warning("upstream %r: not a JSON-RPC message: %.200r", self.name, line)
            return
        method = message.get("method")
        rid = message.get("id")
        if method is None:
            self._resolve(rid, message)
        elif rid is None:
            self._notified(method, message.get("params"))
        elif isinstance(rid, int | str):
            task = self._loop.create_task(self._answer(rid, method, message.get("params")))
            self._answering[rid] = task
            task.add_done_callback(lambda _: self._answering.pop(rid, None))

    def _resolve(self, rid: Any, message: dict[str, Any]) -> None:
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is None or future.done():  # not ours, or given up on
            return
        error = message.get("error")
        if error is None:
            future.set_result(message.get("result"))
        elif isinstance(error, dict):
            code = error.get("code")
            code = code if isinstance(code, int) else INTERNAL_ERROR
            future.set_exception(RpcError(code, str(error.get("message", "")), error.get("data")))
        else:
            future.set_exception(RpcError(INTERNAL_ERROR, f"malformed error: {error!r}"))

    def _notified(self, method: str, params: Any) -> None:
        if method == "notifications/cancelled":
            rid = params.get("requestId") if isinstance(params, dict) else None
            task = self._answering.get(rid) if isinstance(rid, int | str) else None
            if task is not None:
                task.cancel()  # and no answer: MCP says a cancelled request gets none
            return
        try:
            self._on_notification(method, params)
        except Exception:  # the reader must go on
            log.exception("upstream %r: handling %s failed", self.name, method)

    async def _answer(self, rid: int | str, method: str, params: Any) -> None:
        reply: dict[str, Any]
        try:
            reply = {"result": await self._on_request(method, params)}
        except RpcError as exc:
            reply = {"error": exc.wire()}
        except Exception:
            log.exception("upstream %r: answering %s failed", self.name, method)
            reply = {"error": {"code": INTERNAL_ERROR, "message": "internal error"}}
        self._write({"jsonrpc": "2.0", "id": rid, **reply})

    # -- outbound and shutdown ---------------------------------------------------------------

    def _write(self, message: dict[str, Any]) -> None:
        if self._gone is None:
            assert self._stdin is not None
            if self._stdin.is_closing():
                return  # the child is gone; process_exited or pipe_connection_lost says so
            self._stdin.write(encode(message))

    def _withdraw(self, rid: int, method: str, reason: str) -> None:
        if method != "initialize":
            self.notify("notifications/cancelled", {"requestId": rid, "reason": reason})

    def _lose(self, why: str) -> None:
        if self._gone is not None:
            return
        self._gone = why
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerGone(why))
        for task in self._answering.values():
            task.cancel()
        self._on_gone()
        self._shut_down()  # the process group goes too, without waiting for close()

    def _shut_down(self) -> asyncio.Task[None]:
        if self._shutdown_task is None:
            self._shutdown_task = self._loop.create_task(self._end_process_group())
        return self._shutdown_task

    async def _end_process_group(self) -> None:
        assert self._transport is not None and self._stdin is not None
        self._stdin.close()  # MCP's shutdown: close stdin, wait for the exit, then signal
        await asyncio.wait([self._exited], timeout=_STOP_GRACE)
        with suppress(ProcessLookupError, PermissionError):  # gone, or not ours to signal
            os.killpg(self.pid, signal.SIGTERM)
            # The group outlives its leader while orphans (npx's node) are in it.
            deadline = self._loop.time() + _KILL_GRACE
            while self._loop.time() < deadline:
                os.killpg(self.pid, 0)
                await asyncio.sleep(_GROUP_POLL)
            os.killpg(self.pid, signal.SIGKILL)
        await asyncio.wait([self._exited], timeout=_KILL_GRACE)  # reaped by the event loop
        await asyncio.wait([self._stderr_closed], timeout=_STDERR_GRACE)  # its last words
        self._transport.close()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
