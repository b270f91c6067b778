"""What `agent-mesh audit` does (agent_mesh/audit.py parses its command line): verify the chain
and its signed checkpoints, sign a checkpoint, make a key pair (docs/audit.md)."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agent_mesh.errors import UserError
from workers.audit_chain import GENESIS, ROTATED, canonical, last_line, line_hash, rotated_files
from workers.audit_checkpoint import (
    SIGNED,
    SigningKeyError,
    append,
    checkpoints_of,
    load_signing_key,
    sign,
)
from workers.audit_verify import verify

if TYPE_CHECKING:  # cryptography is imported when a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def expand(files: list[Path]) -> list[Path]:
    """Each live file preceded by its rotated files, unless one of them is named too."""
    named = {p.resolve() for p in files}
    out: list[Path] = []
    for path in files:
        rotated = [] if ROTATED.search(path.name) else rotated_files(path)
        if not any(p.resolve() in named for p in rotated):
            out.extend(rotated)
        out.append(path)
    return out


def verify_command(
    files: list[Path], key: Path | None, checkpoints: Path | None, after: str | None
) -> int:
    after = after or GENESIS
    if not re.fullmatch(r"[0-9a-f]{64}", after):
        raise UserError(f"--after: not a SHA-256 hex hash: {after!r}")
    paths = expand(files)
    points: list[dict[str, Any]] = []
    if key is not None:
        public = _public_key(key)
        source = checkpoints or checkpoints_of(files[-1])
        points = _checkpoints(source, public)
    result = verify(paths, after, frozenset(p["hash"] for p in points))
    if result.error is not None:
        raise UserError(result.error)
    for point in points:
        found = result.found.get(point["hash"])
        where = f"checkpoint {point['time']} ({point['file']}:{point['line']})"
        if found is None:
            raise UserError(
                f"{where}: no such record in the files checked: the log was cut or rewritten "
                f"before it (or its file was not given)"
            )
        if found[1] != point["line"]:
            raise UserError(f"{where}: its record is at {found[0]}:{found[1]}: lines were moved")
    old = f", {result.unchained} older unchained" if result.unchained else ""
    signed = f", {len(points)} signed checkpoints" if key is not None else ""
    print(
        f"ok: {result.records} records in {result.files} file(s){old}{signed}; head {result.head}"
    )
    return 0


def checkpoint(live: Path, key_path: Path) -> str:
    """Sign where the chain is now; append it to the checkpoints file; say what was signed."""
    try:
        private = load_signing_key(key_path)
    except SigningKeyError as exc:
        raise UserError(str(exc)) from None
    for path in [live, *reversed(rotated_files(live))]:
        line, whole = last_line(path)
        if line is not None:
            break
    else:
        raise UserError(f"{live}: no records yet: nothing to checkpoint")
    head = line_hash(line)
    if head is None:
        raise UserError(f"{path}: its last line is not chained: nothing to checkpoint")
    with open(path, "rb") as f:  # the lines up to that one (the writer may be appending)
        number, left = 0, whole
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            number, left = number + chunk.count(b"\n"), left - len(chunk)
    point = sign(private, path.name, number, head)
    target = append(live, point)
    return f"checkpoint: {path.name}:{number} {head[:16]}… signed at {point['time']} → {target}"


def keygen(path: Path) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path.exists():
        raise UserError(f"{path}: exists (not overwritten)")
    private = Ed25519PrivateKey.generate()
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    public = path.with_name(path.stem + ".pub")
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(f"{path} (secret: audit.signing_key in the config), {public} (for audit verify --key)")
    return 0


def _public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise UserError(f"--key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"--key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"--key {path}: not an Ed25519 public key")
    return key


def _checkpoints(source: Path, public: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The signed checkpoints of `source`, each checked against `public`."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = source.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"checkpoints {source}: {exc.strerror}") from None
    points = []
    for n, line in enumerate(raw, 1):
        try:
            point = orjson.loads(line)
            signed = {k: point[k] for k in SIGNED}
            public.verify(base64.b64decode(point["signature"], validate=True), canonical(signed))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f"{source}:{n}: not a checkpoint") from None
        except InvalidSignature:
            raise UserError(
                f"{source}:{n}: checkpoint {point['time']} ({point['file']}:{point['line']}): "
                "bad signature — not signed by this key, or edited"
            ) from None
        points.append(point)
    return points
