"""The error map (bus/errors.py): every code has its HTTP status, and each failure of an upstream
call is said once, in its own words (issue 9, item 6)."""

from __future__ import annotations

import pytest

from bus import errors, frames

CODES = {name: value for name, value in vars(frames).items()
         if name.isupper() and isinstance(value, int) and 400 <= value < 600}


def test_every_code_has_an_http_status_and_a_line_in_the_protocol() -> None:
    protocol = (frames.__file__.replace("frames.py", "PROTOCOL.md"))
    text = open(protocol).read()
    for name, code in CODES.items():
        assert code in errors.HTTP_STATUS, name
        assert f"| {code} | {name} |" in text, f"{name} is not in bus/PROTOCOL.md"
    assert len(set(CODES.values())) == len(CODES), "two names for one code"


@pytest.mark.parametrize(("error", "status", "message"), [
    (errors.upstream_error("fs.read_file", -32603, "EACCES"), 502,
     "upstream error from fs.read_file: [-32603] EACCES"),
    (errors.upstream_gone("upstream 'fs' went away during tools/call (process 7 exited with -9)"), 502,
     "upstream 'fs' went away during tools/call (process 7 exited with -9)"),
    (errors.BusError(frames.WORKER_DIED, "upstream.fs: worker died"), 502,
     "upstream fs: its worker died during the call (upstream.fs: worker died)"),
    (errors.unavailable("upstream.fs: no live worker"), 503, "upstream unavailable: fs (upstream.fs: no live worker)"),
    (errors.upstream_timeout("fs.read_file", 2.0), 504,
     "upstream timeout: fs.read_file gave no answer in 2s (cancelled upstream)"),
    (errors.not_found("unknown tool fs.nope"), 404, "unknown tool fs.nope"),
    (errors.bad_request("fs: invalid tool call: x"), 400, "fs: invalid tool call: x"),
])
def test_each_upstream_failure_is_said_once(error: errors.BusError, status: int, message: str) -> None:
    assert errors.upstream_failure("fs", error) == (status, message)


def test_an_upstreams_own_error_is_not_unavailability() -> None:
    error = errors.upstream_error("fs.write_file", -32602, "bad path")
    assert error.code == frames.UPSTREAM_ERROR != frames.WORKER_DIED
    status, message = errors.upstream_failure("fs", error)
    assert status == 502 and "unavailable" not in message and message.count("upstream") == 1
