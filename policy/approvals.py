"""Pure rules around approvals (no I/O): the parameter *shape* that Level-1 memory keys on,
content isolation for supervisor views, and the prompt-injection risk flag (compat.md §7)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

CONTENT_FIELDS = frozenset({"content", "body", "data", "file_content", "text"})
MAX_INLINE_BYTES = 256
INJECTION_PHRASES = (
    "ignore previous instructions",
    "you are now",
    "system prompt:",
    "override policy",
    "pre-approved",
    "do not deny",
    "do not escalate",
    "pretend you are",
    "act as",
    "important: approve",
    "confidence should be",
)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_type_name(v)}" for k, v in sorted(value.items())) + "}"
    return type(value).__name__


def param_shape(params: Mapping[str, Any]) -> str:
    """The shape of a call's params: parameter names and JSON types, nested objects included,
    values ignored. `{"path": "/a", "n": 2}` and `{"n": 5, "path": "/b"}` share the shape
    `{n:number,path:string}`; adding a parameter or changing a type makes a new shape."""
    return _type_name(dict(params))


def _describe(value: str | bytes) -> dict[str, Any]:
    raw = value.encode() if isinstance(value, str) else value
    return {
        "content_length": len(raw),
        "content_sha256": hashlib.sha256(raw).hexdigest(),
        "content_type_detected": _detect(raw),
    }


def _detect(raw: bytes) -> str:
    head = raw.lstrip()[:1]
    if head in (b"{", b"["):
        try:
            json.loads(raw)
            return "application/json"
        except ValueError:
            pass
    if raw.startswith(b"\x89PNG"):
        return "image/png"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def redact_content(params: Any, _key: str | None = None) -> Any:
    """Content isolation (`supervisor.expose_content: false`): params named like content, and any
    string over 256 bytes, become `{content_length, content_sha256, content_type_detected}`."""
    if isinstance(params, str) and (
        _key in CONTENT_FIELDS or len(params.encode()) > MAX_INLINE_BYTES
    ):
        return _describe(params)
    if _key in CONTENT_FIELDS and isinstance(params, Mapping | list):
        return _describe(json.dumps(params, sort_keys=True))
    if isinstance(params, Mapping):
        return {k: redact_content(v, k) for k, v in params.items()}
    if isinstance(params, list):
        return [redact_content(v) for v in params]
    return params


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def injection_risk(params: Any) -> bool:
    """True when any string in the params (keys included) contains a known injection phrase."""
    return any(phrase in text.lower() for text in _strings(params) for phrase in INJECTION_PHRASES)
