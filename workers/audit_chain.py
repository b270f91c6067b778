"""The trace file's hash chain (docs/audit.md): every line — a call record or an audit event —
carries `prev_hash` (the line before it) and `hash`, so an edited, deleted, inserted or reordered
line shows. One writer (the trace writer) appends; this module owns the format and the file.

A line is the canonical JSON of the record with `prev_hash` and without `hash` (sorted keys, no
whitespace, UTF-8), then `,"hash":"<hex>"` before its closing brace; `hash` is the SHA-256 of that
canonical JSON. The first record of the chain names GENESIS. The chain goes on across restarts
(the last line's hash is read on open) and rotation (the live file is renamed
`<name>.000001`, `.000002`, …, and the new file's first record names the old one's last hash).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HASH_KEY = b',"hash":"'
SUFFIX_LEN = len(HASH_KEY) + 64 + 2  # ,"hash":"<64 hex>"}
ROTATED = re.compile(r"\.(\d{6})\Z")  # <name>.000001: a rotated file of <name>
LOCK_WAIT = 10.0  # seconds a starting writer waits for the previous one to let go of the file


def canonical(value: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: orjson, or the standard library for what orjson
    refuses (integers beyond 64 bits, nesting past 255) — formatted alike for those values."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        text = json.dumps(
            value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
        )
        return text.encode("utf-8", "backslashreplace")


def chained(record: dict[str, Any], prev_hash: str) -> tuple[bytes, str]:
    """The line (no newline) that chains `record` after `prev_hash`, and its hash. `record` must
    not hold `hash`; it is given `prev_hash` and `hash` (callers store or publish it as written)."""
    record["prev_hash"] = prev_hash
    body = canonical(record)
    digest = hashlib.sha256(body).hexdigest()
    record["hash"] = digest
    return body[:-1] + HASH_KEY + digest.encode() + b'"}', digest


def line_hash(line: bytes) -> str | None:
    """The `hash` a chained line (no newline) ends with, else None (not a chained line)."""
    if len(line) > SUFFIX_LEN and line.endswith(b'"}') and line[-SUFFIX_LEN:].startswith(HASH_KEY):
        return line[-66:-2].decode("ascii", "replace")
    return None


def rotated_files(live: Path) -> list[Path]:
    """The rotated files of `live` beside it, oldest first."""
    if not live.parent.is_dir():
        return []
    return sorted(
        p
        for p in live.parent.glob(glob_escape(live.name) + ".*")
        if ROTATED.search(p.name) and p.name[:-7] == live.name
    )


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def last_line(path: Path) -> tuple[bytes | None, int]:
    """The last complete line of `path` (no newline; None if there is none) and the size of the
    file up to its last newline (anything after it is a line cut short)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 — closed below
    except FileNotFoundError:
        return None, 0
    with f:
        end = f.seek(0, os.SEEK_END)
        tail, pos = b"", end
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            complete = tail.rfind(b"\n")
            if complete == -1:
                continue
            before = tail.rfind(b"\n", 0, complete)
            if before != -1 or pos == 0:
                return tail[before + 1 : complete], pos + complete + 1
        return None, 0


def head_of(live: Path) -> str:
    """The hash the next record chains to: the last line's of the live file, else of its newest
    rotated file; GENESIS if neither holds a chained line."""
    for path in [live, *reversed(rotated_files(live))]:
        line, _ = last_line(path)
        if line is not None:
            return line_hash(line) or GENESIS  # a file from before the chain: start one
    return GENESIS


class ChainFile:
    """The live trace file, appended to by this process only (an exclusive lock beside it,
    `.<name>.lock`, held while open), rotated past `rotate_bytes` (None: never)."""

    def __init__(self, path: Path, rotate_bytes: int | None = None) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(path.parent / f".{path.name}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        _lock(self._lock, path)
        self.head = head_of(path)  # of the last whole line
        self._mend()
        self._fd = self._open()
        self.size = os.fstat(self._fd).st_size
        self.lines: int | None = None  # of the live file, once counted (count_lines)
        # (rotated file, its lines, its last hash), before the new file starts: checkpoints
        self.on_rotate: Callable[[Path, int, str], None] | None = None

    def count_lines(self) -> int:
        """The live file's lines, counted now and kept up to date from then on."""
        if self.lines is None:
            count = 0
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    count += chunk.count(b"\n")
            self.lines = count
        return self.lines

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _mend(self) -> None:
        """A line cut short (power loss, disk full) is ended, not removed: it stays as evidence
        (`audit verify` names it) and the chain goes on from the last whole line."""
        _, whole = last_line(self.path)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size > whole:
            log.error(
                "%s: its last line is cut short (%d bytes after the last newline): ended with a "
                "newline; `agent-mesh audit verify` will name it",
                self.path,
                size - whole,
            )
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def append(self, lines: list[bytes], head: str) -> None:
        """Write chained lines (one write) whose last hash is `head`."""
        data = b"\n".join(lines) + b"\n"
        if (
            self.rotate_bytes is not None
            and self.size
            and self.size + len(data) > self.rotate_bytes
        ):
            self.rotate()
        os.write(self._fd, data)
        self.size += len(data)
        self.head = head
        if self.lines is not None:
            self.lines += len(lines)

    def rotate(self) -> Path:
        """Rename the live file to the next `<name>.NNNNNN` and start a new one."""
        done = rotated_files(self.path)
        number = int(ROTATED.search(done[-1].name).group(1)) + 1 if done else 1  # type: ignore[union-attr]
        target = self.path.with_name(f"{self.path.name}.{number:06d}")
        os.close(self._fd)
        os.rename(self.path, target)
        self._fd = self._open()
        self.size = 0
        if self.lines is not None:
            if self.on_rotate is not None:
                self.on_rotate(target, self.lines, self.head)
            self.lines = 0
        log.info("trace file rotated: %s (chain goes on from %s)", target.name, self.head[:16])
        return target

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock)


def _lock(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{path}: another trace writer holds it (one writer per trace file: "
                    "does another mesh use the same trace_file?)"
                ) from None
            time.sleep(0.1)
