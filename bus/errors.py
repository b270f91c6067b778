"""The one error type that crosses the bus, with its code (bus/frames.py) and message; the named
constructors that build it; and what each code becomes for an HTTP caller (one table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bus import frames


class BusError(Exception):
    """An error answer to a request. `code` is one of the codes in bus/frames.py."""

    def __init__(self, code: int, message: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = (
            meta or {}
        )  # what workers that forwarded the request added (PROTOCOL.md, FORWARD)

    def __repr__(self) -> str:
        return f"BusError({self.code}, {self.message!r})"


def bad_request(message: str) -> BusError:
    return BusError(frames.BAD_REQUEST, message)


def forbidden(message: str) -> BusError:
    return BusError(frames.FORBIDDEN, message)


def not_found(message: str) -> BusError:
    return BusError(frames.NOT_FOUND, message)


def conflict(message: str) -> BusError:
    """The request is well-formed but its target's state forbids it (an approval already
    resolved)."""
    return BusError(frames.CONFLICT, message)


def internal(message: str) -> BusError:
    return BusError(frames.INTERNAL, message)


def received(code: int, message: str, meta: dict[str, Any] | None) -> BusError:
    """An ERROR frame as it arrived (bus/client.py): its code as the worker or broker sent it."""
    return BusError(code, message, meta)


def unavailable(message: str) -> BusError:
    return BusError(frames.UNAVAILABLE, message)


def timed_out(message: str) -> BusError:
    return BusError(frames.TIMEOUT, message)


def upstream_error(what: str, code: int, message: str) -> BusError:
    """The upstream's own JSON-RPC error to a request (`what`: `<server>.<tool>` or a method)."""
    return BusError(frames.UPSTREAM_ERROR, f"upstream error from {what}: [{code}] {message}")


def upstream_gone(why: str) -> BusError:
    """The upstream server exited or its connection dropped while it held the request (`why`
    names the server and what happened, as workers/mcp_client.py's UpstreamGone does)."""
    return BusError(frames.UPSTREAM_GONE, why)


def upstream_timeout(what: str, seconds: float) -> BusError:
    return timed_out(
        f"upstream timeout: {what} gave no answer in {seconds:g}s (cancelled upstream)"
    )


# JSON-RPC error codes the MCP front-ends answer with (JSON-RPC 2.0 and the MCP spec).
RPC_METHOD_NOT_FOUND: Final = -32601
RPC_INVALID_PARAMS: Final = -32602
RPC_INTERNAL_ERROR: Final = -32603
RPC_RESOURCE_NOT_FOUND: Final = -32002  # the MCP spec's
RPC_POLICY_REFUSED: Final = -32003  # implementation-defined: denied, rate limited, not approved
RPC_CANCELLED: Final = -32800  # as LSP's RequestCancelled (MCP defines none)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One row of the error map: a bus code, what it is called, what an HTTP caller and an MCP
    caller get for it, and what it means (the user's words; the message says the particulars)."""

    code: int
    name: str
    http: int
    rpc: int
    meaning: str


# The one error map (bus/PROTOCOL.md, Error codes): every front-end answers a BusError from it —
# REST (gateway/pipeline.py, gateway/http.py), /mcp and stdio (gateway/mcp_*.py). Every failure
# of an upstream is a 502, as in the Go project (proxy/handler.go); the message says which one.
ERRORS: Final[dict[int, ErrorKind]] = {
    row.code: row
    for row in (
        ErrorKind(frames.BAD_REQUEST, "BAD_REQUEST", 400, RPC_INVALID_PARAMS, "malformed request"),
        ErrorKind(frames.FORBIDDEN, "FORBIDDEN", 403, RPC_POLICY_REFUSED, "refused to this caller"),
        ErrorKind(frames.NOT_FOUND, "NOT_FOUND", 404, RPC_INVALID_PARAMS, "no such thing"),
        ErrorKind(
            frames.CONFLICT, "CONFLICT", 409, RPC_INVALID_PARAMS, "not in a state that allows it"
        ),
        ErrorKind(frames.CANCELLED, "CANCELLED", 499, RPC_CANCELLED, "cancelled by the client"),
        ErrorKind(frames.INTERNAL, "INTERNAL", 500, RPC_INTERNAL_ERROR, "internal error"),
        ErrorKind(frames.WORKER_DIED, "WORKER_DIED", 502, RPC_INTERNAL_ERROR, "its worker died"),
        ErrorKind(
            frames.UPSTREAM_ERROR, "UPSTREAM_ERROR", 502, RPC_INTERNAL_ERROR, "upstream error"
        ),
        ErrorKind(frames.UPSTREAM_GONE, "UPSTREAM_GONE", 502, RPC_INTERNAL_ERROR, "upstream gone"),
        ErrorKind(frames.UNAVAILABLE, "UNAVAILABLE", 503, RPC_INTERNAL_ERROR, "unavailable"),
        ErrorKind(frames.TIMEOUT, "TIMEOUT", 504, RPC_INTERNAL_ERROR, "timed out"),
    )
}
HTTP_STATUS: Final[dict[int, int]] = {code: row.http for code, row in ERRORS.items()}

# An upstream's own JSON-RPC error to a passed-through request → the HTTP-like status it is
# traced with (anything else: 502, an upstream failure).
_RPC_STATUS: Final[dict[int, int]] = {
    RPC_RESOURCE_NOT_FOUND: 404,
    RPC_INVALID_PARAMS: 400,
    RPC_METHOD_NOT_FOUND: 404,
}


def http_status(code: int) -> int:
    """The HTTP status of a bus error code (an unknown code: 502, something upstream failed)."""
    row = ERRORS.get(code)
    return row.http if row is not None else 502


def service_status(code: int) -> int:
    """The HTTP status of a mesh service's error (approval, trace store) on an HTTP route: the
    caller's mistakes (4xx) keep theirs; anything else means the service is unavailable (503)."""
    status = http_status(code)
    return status if 400 <= status < 499 else 503


def rpc_code(status: int) -> int:
    """The JSON-RPC code for a request that ended with HTTP-like `status` (a bus code's status,
    or the pipeline's own: 408 and 429 are policy refusals)."""
    if status in (408, 429):
        return RPC_POLICY_REFUSED
    for row in ERRORS.values():
        if row.http == status:
            return row.rpc
    return RPC_INTERNAL_ERROR


def status_of_rpc_code(code: int) -> int:
    return _RPC_STATUS.get(code, 502)


def unavailable_service(service: str, exc: BusError) -> str:
    """The one wording of 'a mesh service did not answer' (policy, approval, trace store)."""
    return f"{service} unavailable: {exc.message}"


def upstream_failure(server: str, exc: BusError, reason: str = "") -> tuple[int, str]:
    """(HTTP status, message) for a request to `upstream.<server>` that failed. The upstream
    worker's own errors already name the server; the broker's (no worker, worker died) are
    about the service, so they are said once here in the caller's terms. `reason`: why the
    server is down, as its workers said (gateway/catalog.py), when known."""
    if exc.code == frames.UNAVAILABLE:
        if reason:
            return 503, f"upstream unavailable: {server}: {reason}"
        return 503, f"upstream unavailable: {server} ({exc.message})"
    if exc.code == frames.WORKER_DIED:
        return 502, f"upstream {server}: its worker died during the call ({exc.message})"
    return http_status(exc.code), exc.message
