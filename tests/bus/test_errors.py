"""The error map (bus/errors.py): every code has its HTTP status, and each failure of an upstream
call is said once, in its own words (issue 9, item 6)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bus import errors, frames

ROOT = Path(__file__).resolve().parents[2]

CODES = {
    name: value
    for name, value in vars(frames).items()
    if name.isupper() and isinstance(value, int) and 400 <= value < 600
}


def test_every_code_has_an_http_status_and_a_line_in_the_protocol() -> None:
    protocol = frames.__file__.replace("frames.py", "PROTOCOL.md")
    text = Path(protocol).read_text()
    for name, code in CODES.items():
        assert code in errors.HTTP_STATUS, name
        assert f"| {code} | {name} |" in text, f"{name} is not in bus/PROTOCOL.md"
    assert len(set(CODES.values())) == len(CODES), "two names for one code"


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            errors.upstream_error("fs.read_file", -32603, "EACCES"),
            502,
            "upstream error from fs.read_file: [-32603] EACCES",
        ),
        (
            errors.upstream_gone(
                "upstream 'fs' went away during tools/call (process 7 exited with -9)"
            ),
            502,
            "upstream 'fs' went away during tools/call (process 7 exited with -9)",
        ),
        (
            errors.BusError(frames.WORKER_DIED, "upstream.fs: worker died"),
            502,
            "upstream fs: its worker died during the call (upstream.fs: worker died)",
        ),
        (
            errors.unavailable("upstream.fs: no live worker"),
            503,
            "upstream unavailable: fs (upstream.fs: no live worker)",
        ),
        (
            errors.upstream_timeout("fs.read_file", 2.0),
            504,
            "upstream timeout: fs.read_file gave no answer in 2s (cancelled upstream)",
        ),
        (errors.not_found("unknown tool fs.nope"), 404, "unknown tool fs.nope"),
        (errors.bad_request("fs: invalid tool call: x"), 400, "fs: invalid tool call: x"),
    ],
)
def test_each_upstream_failure_is_said_once(
    error: errors.BusError, status: int, message: str
) -> None:
    assert errors.upstream_failure("fs", error) == (status, message)


def test_an_upstreams_own_error_is_not_unavailability() -> None:
    error = errors.upstream_error("fs.write_file", -32602, "bad path")
    assert error.code == frames.UPSTREAM_ERROR  # (not WORKER_DIED)
    status, message = errors.upstream_failure("fs", error)
    assert status == 502 and "unavailable" not in message and message.count("upstream") == 1


def test_the_protocol_table_is_the_error_map() -> None:
    """Each row of PROTOCOL.md's table (code, name, HTTP, JSON-RPC) is the map's row, and back."""
    text = (ROOT / "bus" / "PROTOCOL.md").read_text()
    rows = re.findall(
        r"^\| (\d{3}) \| ([A-Z_]+) \| .+ \| (\d{3}) \| (-\d+) \|$", text, re.MULTILINE
    )
    documented = {int(code): (name, int(http), int(rpc)) for code, name, http, rpc in rows}
    assert documented == {
        code: (row.name, row.http, row.rpc) for code, row in errors.ERRORS.items()
    }
    assert set(documented) == set(CODES.values())
    for code, row in errors.ERRORS.items():
        assert CODES[row.name] == code and errors.http_status(code) == row.http
        assert errors.rpc_code(row.http) in {
            r.rpc for r in errors.ERRORS.values() if r.http == row.http
        }
        assert row.meaning


@pytest.mark.parametrize(
    ("status", "rpc"),
    [
        (400, errors.RPC_INVALID_PARAMS),
        (404, errors.RPC_INVALID_PARAMS),
        (403, errors.RPC_POLICY_REFUSED),
        (408, errors.RPC_POLICY_REFUSED),
        (429, errors.RPC_POLICY_REFUSED),
        (502, errors.RPC_INTERNAL_ERROR),
        (503, errors.RPC_INTERNAL_ERROR),
        (504, errors.RPC_INTERNAL_ERROR),
        (418, errors.RPC_INTERNAL_ERROR),
    ],
)
def test_what_an_mcp_caller_gets_for_a_status(status: int, rpc: int) -> None:
    assert errors.rpc_code(status) == rpc


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (frames.BAD_REQUEST, 400),
        (frames.FORBIDDEN, 403),
        (frames.NOT_FOUND, 404),
        (frames.CONFLICT, 409),
        (frames.WORKER_DIED, 503),
        (frames.TIMEOUT, 503),
        (frames.INTERNAL, 503),
        (frames.UNAVAILABLE, 503),
        (frames.CANCELLED, 503),
    ],
)
def test_a_mesh_services_error_on_an_http_route(code: int, status: int) -> None:
    assert errors.service_status(code) == status


def test_an_upstreams_own_json_rpc_code_is_traced_with_its_status() -> None:
    assert errors.status_of_rpc_code(errors.RPC_RESOURCE_NOT_FOUND) == 404
    assert errors.status_of_rpc_code(errors.RPC_INVALID_PARAMS) == 400
    assert errors.status_of_rpc_code(-32042) == 502


def test_errors_are_built_only_by_the_named_constructors() -> None:
    """No module of the mesh calls BusError(...) itself: bus/errors.py's constructors do."""
    offenders = []
    for package in ("bus", "gateway", "workers", "policy", "agent_mesh", "observe", "autoresolve"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "bus" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", "")) == "BusError"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
