"""Bad input against a running mesh is a precise 4xx (REST) or JSON-RPC -32602 (MCP over /mcp
and stdio) naming the field, never a 5xx, a dropped connection or a hung call; and every value
JSON allows that the upstream can be given unchanged (integers beyond 64 bits too) reaches it.
Regression tests for issue 15's two causes of HTTP 500: big integers, non-numeric `limit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server

HUGE = 2**70  # 1180591620717411303424: msgpack's ints stop at 64 bits


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = {
        "mcp_servers": [{"name": "ev", "command": npm_server("everything"), "args": ["stdio"]}],
        "policies": [{"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config)) as m:
        yield m


def post(mesh: Mesh, path: str, text: str) -> httpx.Response:
    return mesh.http.post(
        path,
        content=text.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json", "Authorization": "Bearer agent:claude"},
    )


def traced(mesh: Mesh, trace_id: str) -> list[dict[str, Any]]:
    return [
        t
        for t in mesh.http.get("/traces", params={"limit": 500}).json()
        if t["trace_id"] == trace_id
    ]


def test_an_integer_beyond_64_bits_reaches_the_upstream_as_that_number(mesh: Mesh) -> None:
    r = post(mesh, "/tool/ev.get-sum", f'{{"params": {{"a": {HUGE}, "b": -{HUGE * 3}}}}}')
    assert r.status_code == 200, r.text
    # The server (JavaScript) read both as numbers: 2**70 - 3 * 2**70 = -2**71.
    assert r.json()["result"]["content"][0]["text"] == (
        "The sum of 1.1805916207174113e+21 and -3.541774862152234e+21 is -2.3611832414348226e+21."
    )
    (trace,) = traced(mesh, r.json()["trace_id"])
    assert trace["params"] == {"a": HUGE, "b": -HUGE * 3}  # stored and read back exactly


@pytest.mark.parametrize(
    ("value", "path", "why"),
    [
        ("1e400", "params.message", "number out of range"),
        ("-1e999", "params.message", "number out of range"),
        ("NaN", "params.message", "NaN is not a JSON number"),
        ("Infinity", "params.message", "number out of range"),
        ('"ok \\ud800"', "params.message", "string holds a lone surrogate \\ud800 at character 3"),
        (
            '{"a": [1, {"\\udc00": 2}]}',
            'params.message.a[1]["\\udc00"]',
            "key holds a lone surrogate",
        ),
        ("[" * 300 + "]" * 300, "params.message[0][0][0][0][0]…", "nested deeper than 100 levels"),
    ],
)
def test_a_value_the_upstream_could_not_be_given_is_a_400_naming_its_path(
    mesh: Mesh, value: str, path: str, why: str
) -> None:
    r = post(mesh, "/tool/ev.echo", f'{{"params": {{"message": {value}}}}}')
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"].startswith(f"invalid {path}") and why in body["error"], body
    assert body["policy"] == "error" and r.headers["x-trace-id"] == body["trace_id"]
    assert traced(mesh, body["trace_id"]) == []  # refused before it was a call, as bad JSON is
    assert post(mesh, "/tool/ev.echo", '{"params": {"message": "still here"}}').status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # past json.loads's recursion limit
        '{"params": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"params": {"n": 1' + "0" * 5000 + "}}",  # more digits than Python converts
    ],
)
def test_json_the_parser_cannot_take_is_a_400(mesh: Mesh, text: str) -> None:
    r = post(mesh, "/tool/ev.echo", text)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid JSON body: ")


def test_a_lone_surrogate_in_a_grant_is_a_400(mesh: Mesh) -> None:
    r = post(mesh, "/grants", '{"agent": "\\ud800", "tools": "ev.*", "duration": "1m"}')
    assert r.status_code == 400, r.text
    assert "agent" in r.json()["error"] and "lone surrogate" in r.json()["error"]


LIMITED = ["/traces", "/sessions", "/sessions/some-session", "/approvals"]
UNLIMITED = ["/tools", "/mcp-servers", "/grants"]


@pytest.mark.parametrize("route", LIMITED + UNLIMITED)
@pytest.mark.parametrize("limit", ["abc", "", "99999999999999999999", "-1", "1.5", "0x10", "１"])
def test_limit_is_a_400_naming_it_or_taken_never_a_500(mesh: Mesh, route: str, limit: str) -> None:
    r = mesh.http.get(route, params={"limit": limit})
    assert r.headers["content-type"] == "application/json"
    if route in UNLIMITED or limit in ("", "99999999999999999999"):  # none, default, at most 10 000
        assert r.status_code == 200, r.text
        assert isinstance(r.json(), list)
    else:
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith(f"invalid query parameter limit={limit!r}: "), r.json()


# -- MCP: tools/call arguments over /mcp and stdio ----------------------------------------------

INIT = (
    '{"jsonrpc": "2.0", "id": 1, "method": "initialize", '
    '"params": {"protocolVersion": "2025-06-18", "capabilities": {}, '
    '"clientInfo": {"name": "raw", "version": "1"}}}'
)
INITIALIZED = '{"jsonrpc": "2.0", "method": "notifications/initialized"}'


def tool_call(rid: int, arguments: str, name: str = "ev.echo") -> str:
    return (
        f'{{"jsonrpc": "2.0", "id": {rid}, "method": "tools/call", '
        f'"params": {{"name": "{name}", "arguments": {arguments}}}}}'
    )


def rpc_answer(r: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a Streamable HTTP POST (JSON or one SSE event)."""
    if r.headers["content-type"].startswith("application/json"):
        return dict(r.json())
    for line in r.text.splitlines():
        if line.startswith("data: ") and '"id"' in line:
            return dict(json.loads(line[len("data: ") :]))
    raise AssertionError(f"no answer in {r.text!r}")


REFUSED_ARGUMENTS = [
    ('{"message": 1e400}', "arguments.message: number out of range"),
    ('{"message": [1, {"x": NaN}]}', "arguments.message[1].x: NaN is not a JSON number"),
    ('{"message": ' + "[" * 150 + "]" * 150 + "}", "nested deeper than 100 levels"),
]
TOO_DEEP_TO_PARSE = '{"message": ' + "[" * 300 + "]" * 300 + "}"  # the SDK's parser: -32700


def test_mcp_http_arguments_the_upstream_could_not_be_given_are_invalid_params(mesh: Mesh) -> None:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": "Bearer agent:claude",
    }
    init = mesh.http.post("/mcp", content=INIT, headers=headers)
    assert init.status_code == 200, init.text
    headers["mcp-session-id"] = init.headers["mcp-session-id"]
    assert mesh.http.post("/mcp", content=INITIALIZED, headers=headers).status_code == 202
    for rid, (arguments, message) in enumerate(REFUSED_ARGUMENTS, start=2):
        answer = rpc_answer(
            mesh.http.post("/mcp", content=tool_call(rid, arguments), headers=headers)
        )
        assert answer["id"] == rid and answer["error"]["code"] == -32602, answer
        assert message in answer["error"]["message"], answer
    answer = rpc_answer(
        mesh.http.post("/mcp", content=tool_call(8, TOO_DEEP_TO_PARSE), headers=headers)
    )
    assert answer["error"]["code"] == -32700, answer
    answer = rpc_answer(
        mesh.http.post(
            "/mcp", content=tool_call(9, f'{{"a": {HUGE}, "b": 0}}', "ev.get-sum"), headers=headers
        )
    )
    assert "1.1805916207174113e+21" in answer["result"]["content"][0]["text"], answer


def test_mcp_stdio_arguments_the_upstream_could_not_be_given_are_invalid_params(mesh: Mesh) -> None:
    # `--mcp` with the running mesh's config attaches to it.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_mesh",
            "--mcp",
            "--config",
            str(mesh.config_path),
            "--mcp-agent",
            "claude",
        ],
        env=mesh.env,
        cwd=os.getcwd(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(line: str) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
        while True:
            answer = json.loads(proc.stdout.readline())
            if "id" in answer:
                return dict(answer)

    try:
        assert "result" in ask(INIT)
        proc.stdin.write(INITIALIZED.encode() + b"\n")
        for rid, (arguments, message) in enumerate(REFUSED_ARGUMENTS, start=2):
            answer = ask(tool_call(rid, arguments))
            assert answer["id"] == rid and answer["error"]["code"] == -32602, answer
            assert message in answer["error"]["message"], answer
        # A lone surrogate: the SDK's parser refuses the line; the caller still gets its answer.
        answer = ask(tool_call(8, '{"message": "ok \\ud800"}'))
        assert answer["id"] == 8 and answer["error"]["code"] == -32602, answer
        assert (
            "params.arguments.message: string holds a lone surrogate \\ud800"
            in answer["error"]["message"]
        )
        answer = ask(tool_call(9, '{"message": "still served"}'))
        assert answer["result"]["content"][0]["text"] == "Echo: still served", answer
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
