"""`agent-mesh audit verify`'s check of the trace files' hash chain (format: workers/audit_chain.py,
docs/audit.md): the first line that breaks it, and what broke it — edited, deleted, inserted,
reordered, cut short. Fast (the bytes as written are hashed, never re-serialized; a line is parsed
only for its `prev_hash`), so a large log is checked in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from workers.audit_chain import GENESIS, HASH_KEY, SUFFIX_LEN, line_hash

_TAIL = b'"}'


@dataclass
class Result:
    records: int = 0  # chained records checked
    unchained: int = 0  # lines at the start from before the chain existed
    files: int = 0
    head: str = GENESIS  # the last record's hash
    error: str | None = None  # `<file>:<line>: <what>`, the first break
    found: dict[str, tuple[Path, int]] = field(default_factory=dict)  # wanted hash -> where


class Broken(Exception):
    pass


def verify(
    paths: Iterable[Path], after: str = GENESIS, wanted: frozenset[str] = frozenset()
) -> Result:
    """Check the chain through `paths` in order, starting after `after` (GENESIS: the first
    chained record must start the chain). `wanted`: hashes to locate (signed checkpoints)."""
    result = Result(head=after)
    try:
        for path in paths:
            with open(path, "rb") as f:
                result.files += 1
                _check_file(path, f, result, wanted)
    except Broken as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"{exc.filename or ''}: {exc.strerror or exc}"
    return result


def _check_file(path: Path, f: IO[bytes], result: Result, wanted: frozenset[str]) -> None:
    expected = result.head
    chained = result.records > 0 or result.files > 1 or expected != GENESIS
    sha256, loads = hashlib.sha256, orjson.loads
    n = 0
    lines = iter(f)
    for raw in lines:
        n += 1
        # The hot path: a whole chained line whose hash matches and that follows the last one.
        if (
            raw[-1:] == b"\n"
            and raw[-3:-1] == _TAIL
            and raw[-SUFFIX_LEN - 1 : -SUFFIX_LEN + 8] == HASH_KEY
        ):
            digest = raw[-67:-3].decode("ascii", "replace")
            body = raw[: -SUFFIX_LEN - 1] + b"}"
            if sha256(body).hexdigest() != digest:
                raise Broken(f"{path}:{n}: edited: its content does not match its hash")
            try:
                prev = loads(body)["prev_hash"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise Broken(f"{path}:{n}: edited: not a chained JSON record") from None
            if prev != expected:
                raise Broken(_misplaced(path, n, digest, prev, expected, result, lines))
            expected = digest
            chained = True
            result.records += 1
            if digest in wanted:
                result.found[digest] = (path, n)
            continue
        if raw[-1:] != b"\n":
            raise Broken(f"{path}:{n}: cut short (no end of line): the file was truncated")
        if not chained:  # written before the log was chained
            result.unchained += 1
            continue
        raise Broken(_unchained(path, n, raw[:-1], expected, lines))
    result.head = expected


def _prev_of(line: bytes) -> str | None:
    if line_hash(line) is None:
        return None
    try:
        prev = orjson.loads(line[:-SUFFIX_LEN] + b"}").get("prev_hash")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return prev if isinstance(prev, str) else None


def _rest(lines: Iterator[bytes]) -> list[bytes]:
    return [raw.rstrip(b"\n") for raw in lines]


def _unchained(path: Path, n: int, line: bytes, expected: str, lines: Iterator[bytes]) -> str:
    """A line without a hash in the middle of the chain."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return f"{path}:{n}: not a whole record (cut short by a crash or truncation, or edited)"
    rest = _rest(lines)
    if rest and _prev_of(rest[0]) == expected:
        return f"{path}:{n}: inserted: not in the chain (line {n + 1} follows line {n - 1})"
    return f"{path}:{n}: edited: its hash was removed"


def _misplaced(
    path: Path,
    n: int,
    digest: str,
    prev: str,
    expected: str,
    result: Result,
    lines: Iterator[bytes],
) -> str:
    """A record whose own hash is right but that does not follow the one before it: say why."""
    rest = _rest(lines)
    later = {line_hash(line): i for i, line in enumerate(rest, n + 1)}
    if digest in later:
        return f"{path}:{n}: inserted: a copy of line {later[digest]}"
    if prev in later:
        return f"{path}:{n}: reordered: it follows line {later[prev]}, not line {n - 1}"
    if rest and _prev_of(rest[0]) == expected:
        return f"{path}:{n}: inserted: not in the chain (line {n + 1} follows line {n - 1})"
    if n == 1 and result.records == 0 and result.files == 1:
        return (
            f"{path}:1: does not start the chain (prev_hash {prev[:16]}…): its first records "
            "were deleted, or it continues a rotated file — give the earlier files first, "
            "oldest first (or --after <prev_hash> to start there)"
        )
    if n == 1:
        return (
            f"{path}:1: does not continue the previous file: that file was truncated, records "
            "between them deleted, or the files are out of order (oldest first)"
        )
    if prev == GENESIS:
        return f"{path}:{n}: starts a new chain: the records before it were replaced"
    return (
        f"{path}:{n}: does not follow line {n - 1}: a record between them was deleted, "
        f"or line {n - 1} was edited and its hash recomputed"
    )
