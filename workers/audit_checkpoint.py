"""Signed checkpoints of the trace file's chain (docs/audit.md): one JSON line each in
`<trace_file stem>.checkpoints.jsonl` beside the trace file — `file`, `line`, `hash`, `time`,
`key` (the public key's SHA-256, hex) and `signature` (Ed25519, base64, over the canonical JSON
of the first four). Made by `agent-mesh audit checkpoint`, and by the trace writer itself with
`audit: {checkpoint_every: 1h}` (`Checkpoints`): periodically and at each rotation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from workers.audit_chain import GENESIS, ROTATED, ChainFile, canonical

if TYPE_CHECKING:  # cryptography is imported when a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

SIGNED = ("file", "line", "hash", "time")


def checkpoints_of(live: Path) -> Path:
    """The checkpoints file of a trace file (or of one of its rotated files)."""
    base = live.with_name(ROTATED.sub("", live.name))
    return base.with_name(f"{base.stem}.checkpoints.jsonl")


class SigningKeyError(Exception):
    """`audit.signing_key` cannot be used: the message names the file and why."""


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM); SigningKeyError naming the problem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"audit.signing_key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"audit.signing_key {path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"audit.signing_key {path}: not an Ed25519 key")
    return key


def sign(private: Ed25519PrivateKey, file: str, line: int, head: str) -> dict[str, Any]:
    """A checkpoint of now: `head` is the hash of line `line` of `file`."""
    from cryptography.hazmat.primitives import serialization

    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    point: dict[str, Any] = {"file": file, "line": line, "hash": head, "time": now}
    signature = private.sign(canonical(point))
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    point["key"] = hashlib.sha256(public).hexdigest()
    point["signature"] = base64.b64encode(signature).decode()
    return point


def append(live: Path, point: dict[str, Any]) -> Path:
    target = checkpoints_of(live)
    with open(target, "ab") as f:
        f.write(orjson.dumps(point) + b"\n")
    return target


class Checkpoints:
    """The trace writer's checkpoints (`audit.checkpoint_every`): every `every` seconds, of the
    last line of the live file, when the chain moved since the last one this process signed or
    since it started (an idle chain is not signed again and again); and at each rotation, of the
    last line of the file rotated away; and when the writer stops. Runs in the writer's loop,
    between its appends."""

    def __init__(self, chain: ChainFile, key: Ed25519PrivateKey, every: float) -> None:
        self.chain, self.key, self.every = chain, key, every
        chain.count_lines()
        chain.on_rotate = self._rotated
        self.signed = chain.head  # at start: the head of a file this process did not write
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop signing, after one last checkpoint of where the chain ends."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.now()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.now()

    def now(self) -> None:
        """Sign the live file's last line, if it is new."""
        if self.chain.lines:
            self._sign(self.chain.path.name, self.chain.lines, self.chain.head)

    def _rotated(self, rotated: Path, lines: int, head: str) -> None:
        # Always: the rotated file is signed under its own name, even when its last line is the
        # head this process started from (a file rotated at the first write after a restart).
        if lines:
            self._sign(rotated.name, lines, head, again=True)

    def _sign(self, file: str, line: int, head: str, again: bool = False) -> None:
        if head == GENESIS or (head == self.signed and not again):
            return
        try:
            append(self.chain.path, sign(self.key, file, line, head))
        except OSError as exc:  # the chain goes on; the next one is tried at its time
            log.error("audit checkpoint of %s:%d not written: %s", file, line, exc)
            return
        self.signed = head
        self.written += 1
        log.info("audit checkpoint: %s:%d %s", file, line, head[:16])
