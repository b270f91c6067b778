"""workers.mcp_client against a scripted MCP server (a few lines of Python): requests from the
server to the client, and handshakes that fail (an ancient protocol, a refusal, silence).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from workers import mcp_client
from workers.mcp_client import UpstreamClient
from workers.upstream_types import (
    UpstreamError,
    UpstreamException,
    UpstreamGone,
    UpstreamSpec,
    UpstreamTimeout,
)

FAKE_SERVER = r"""
import json, sys

mode = sys.argv[1]
waiting = {}  # id of our request to the client -> id of the tools/call that made it


def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    if method is None:  # the client's answer to our request: the tool's result
        send({"id": waiting.pop(rid), "result": {"content": [], "structuredContent": message}})
    elif method == "initialize":
        if mode == "silent":
            continue
        if mode == "refuse":
            send({"id": rid, "error": {"code": -32602, "message": "no thanks"}})
            continue
        version = "1999-01-01" if mode == "ancient" else message["params"]["protocolVersion"]
        send({"id": rid, "result": {"protocolVersion": version, "capabilities": {"tools": {}},
                                    "serverInfo": {"name": "fake", "version": "1"}}})
    elif method == "tools/list":
        send({"id": rid, "result": {"tools": [{"name": "ask", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":  # noise the client must survive, then ask the client
        sys.stdout.write("this is not JSON\n\n")
        send({"id": 12345, "result": {"to": "a request never made"}})
        waiting["q%s" % rid] = rid
        asked = message["params"]["arguments"]["method"]
        send({"id": "q%s" % rid, "method": asked, "params": {"n": 1}})
"""


def fake_spec(tmp_path: Path, mode: str = "ok") -> UpstreamSpec:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return UpstreamSpec(
        name="fake", transport="stdio", command=sys.executable, args=(str(script), mode)
    )


@pytest.mark.timeout(15)
async def test_server_to_client_requests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with UpstreamClient(fake_spec(tmp_path)) as client:
        assert client.server_info == {
            "protocolVersion": mcp_client.PROTOCOL_VERSION, "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake", "version": "1"},
        }  # fmt: skip
        ping = await client.call_tool("ask", {"method": "ping"}, 5)
        assert ping["structuredContent"]["result"] == {}
        roots = await client.call_tool("ask", {"method": "roots/list"}, 5)
        assert roots["structuredContent"]["error"]["code"] == -32601
        unasked = await client.call_tool("ask", {"method": "sampling/createMessage"}, 5)
        assert unasked["structuredContent"]["error"] == {
            "code": -32600, "message": "sampling/createMessage is not supported here"
        }  # fmt: skip

        async def on_ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
            if method == "elicitation/create":
                return {"error": {"code": -1, "message": "declined"}}
            return {"result": {"asked": method, "with": params}}

        client.on_ask = on_ask
        sampled = await client.call_tool("ask", {"method": "sampling/createMessage"}, 5)
        assert sampled["structuredContent"]["result"] == {
            "asked": "sampling/createMessage", "with": {"n": 1}
        }  # fmt: skip
        declined = await client.call_tool("ask", {"method": "elicitation/create"}, 5)
        assert declined["structuredContent"]["error"] == {"code": -1, "message": "declined"}
    assert "unparseable line: b'this is not JSON'" in caplog.text


@pytest.mark.timeout(15)
@pytest.mark.parametrize(
    ("mode", "error"),
    [("ancient", UpstreamGone), ("refuse", UpstreamError), ("silent", UpstreamTimeout)],
)
async def test_handshake_failures(
    tmp_path: Path, mode: str, error: type[UpstreamException]
) -> None:
    client = UpstreamClient(fake_spec(tmp_path, mode), connect_timeout=0.5)
    with pytest.raises(error) as failed:
        await client.start()
    assert client.closed.is_set()
    if mode == "ancient":
        assert "unsupported protocol version '1999-01-01'" in str(failed.value)
