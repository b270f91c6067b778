"""The one error type that crosses the bus, with its code (bus/frames.py) and message; the named
constructors that build it; and what each code becomes for an HTTP caller (one table)."""

from __future__ import annotations

from typing import Any, Final

from bus import frames


class BusError(Exception):
    """An error answer to a request. `code` is one of the codes in bus/frames.py."""

    def __init__(self, code: int, message: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = meta or {}  # what workers that forwarded the request added (PROTOCOL.md, FORWARD)

    def __repr__(self) -> str:
        return f"BusError({self.code}, {self.message!r})"


def bad_request(message: str) -> BusError:
    return BusError(frames.BAD_REQUEST, message)


def forbidden(message: str) -> BusError:
    return BusError(frames.FORBIDDEN, message)


def not_found(message: str) -> BusError:
    return BusError(frames.NOT_FOUND, message)


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
    return timed_out(f"upstream timeout: {what} gave no answer in {seconds:g}s (cancelled upstream)")


# What an HTTP caller gets for each code. Every failure of an upstream is a 502, as in the Go
# project (proxy/handler.go); the message says which failure it was.
HTTP_STATUS: Final[dict[int, int]] = {
    frames.BAD_REQUEST: 400,
    frames.FORBIDDEN: 403,
    frames.NOT_FOUND: 404,
    frames.CANCELLED: 499,
    frames.INTERNAL: 500,
    frames.WORKER_DIED: 502,
    frames.UPSTREAM_ERROR: 502,
    frames.UPSTREAM_GONE: 502,
    frames.UNAVAILABLE: 503,
    frames.TIMEOUT: 504,
}


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 502)


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
