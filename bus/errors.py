"""The one error type that crosses the bus, with its code (bus/frames.py) and message."""

from __future__ import annotations

from typing import Any

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


def not_found(message: str) -> BusError:
    return BusError(frames.NOT_FOUND, message)


def unavailable(message: str) -> BusError:
    return BusError(frames.UNAVAILABLE, message)
