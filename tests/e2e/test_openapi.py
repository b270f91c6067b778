"""`openapi:` end to end: the shipped Petstore-like spec (examples/openapi/petstore.yaml, with
$refs) against its real Starlette backend (examples/openapi/petstore_backend.py, a process of its
own), governed and traced, over REST, /mcp and the stdio MCP front-end; the SSRF guard."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.e2e.mesh import Mesh, running
from tests.support import free_port, wait_until

REPO = Path(__file__).parents[2]
SPEC = REPO / "examples" / "openapi" / "petstore.yaml"


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "openapi" / "petstore_backend.py"),
            "--port",
            str(port),
        ]
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/_seen").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 20, "petstore backend up")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Mesh]:
    config = {
        "trace_file": "traces.jsonl",
        "openapi": [
            # as the Go project writes it, plus our headers and timeout
            {
                "file": str(SPEC),
                "backend_url": f"{backend}/api/v3",
                "headers": {"X-API-Key": "demo-key"},
                "timeout": "1s",
            },
            # named (its tools are pets2.<tool>), its backend down
            {
                "file": str(SPEC),
                "name": "pets2",
                "backend_url": f"http://127.0.0.1:{free_port()}/api/v3",
            },
        ],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["delete_pet"], "action": "deny"},
                    {"tools": ["*"], "action": "allow"},
                ],
            },
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config), timeout=90) as m:
        yield m


def _seen(backend: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = httpx.get(f"{backend}/_seen").json()
    return seen


def _trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    return next(
        t
        for t in mesh.http.get("/traces", params={"limit": 500}).json()
        if t["trace_id"] == trace_id
    )


def test_operations_are_tools(mesh: Mesh) -> None:
    tools = {t["name"]: t for t in mesh.http.get("/tools").json()}
    names = {
        "add_pet",
        "update_pet",
        "find_pets_by_status",
        "get_pet_by_id",
        "delete_pet",
        "get_inventory",
        "get_files_name",
    }
    assert names | {f"pets2.{n}" for n in names} == set(tools)
    pet = tools["get_pet_by_id"]
    assert (pet["source"], pet["description"]) == ("openapi", "Find a pet by id")
    assert pet["inputSchema"]["properties"]["petId"]["type"] == "integer"  # through a $ref
    assert pet["inputSchema"]["required"] == ["petId"]
    body = tools["add_pet"]["inputSchema"]["properties"]["body"]
    assert body["required"] == ["name"] and body["properties"]["status"]["enum"] == [
        "available",
        "pending",
        "sold",
    ]
    servers = {s["name"]: s for s in mesh.http.get("/mcp-servers").json()}
    assert (servers["openapi-0"]["transport"], servers["openapi-0"]["status"]) == (
        "openapi",
        "ready",
    )
    assert "pets2.get_pet_by_id" in servers["pets2"]["tools"]


def test_calls_over_rest(mesh: Mesh, backend: str) -> None:
    r = mesh.call("get_pet_by_id", {"petId": 1})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {
        "id": 1,
        "name": "rex",
        "status": "available",
        "tags": [],
    }  # Go's shape
    trace = _trace(mesh, r.json()["trace_id"])
    assert (trace["tool"], trace["backend_status"], trace["policy_rule"]) == (
        "get_pet_by_id",
        200,
        "claude",
    )
    sent = _seen(backend)[-1]["headers"]  # the call's trace goes to the backend, as in Go
    assert sent["x-trace-id"] == trace["trace_id"]
    assert sent["traceparent"] == f"00-{trace['trace_id']}-{trace['span']['id']}-01"
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    mesh.call(
        "get_pet_by_id", {"petId": 1}, headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"}
    )
    assert _seen(backend)[-1]["headers"]["traceparent"].startswith(f"00-{caller}-")
    found = mesh.call("find_pets_by_status", {"status": "available", "limit": 5})
    assert [p["name"] for p in found.json()["result"]] == ["rex"]
    assert _seen(backend)[-1]["query"] == "status=available&limit=5"
    added = mesh.call("add_pet", {"body": {"name": "tom", "tags": ["cat"]}})
    assert added.json()["result"]["name"] == "tom" and added.json()["result"]["id"] >= 2
    # the Go project's way: the arguments themselves are the body
    assert mesh.call("add_pet", {"name": "jerry"}).json()["result"]["name"] == "jerry"
    assert mesh.call("get_inventory").json()["result"]["available"] >= 3
    assert _seen(backend)[-1]["headers"]["x-api-key"] == "demo-key"  # configured headers sent
    text = mesh.call("get_files_name", {"name": "notes.txt"}).json()["result"]
    assert text == "contents of notes.txt"
    assert mesh.call("delete_pet", {"petId": 1}).status_code == 403  # policy


def test_backend_errors_are_tool_errors(mesh: Mesh) -> None:
    missing = mesh.call("get_pet_by_id", {"petId": 99})
    assert missing.status_code == 200 and missing.json()["result"] == {
        "message": "pet 99 not found"
    }
    assert _trace(mesh, missing.json()["trace_id"])["backend_status"] == 404
    invalid = mesh.call("add_pet", {"body": {"tags": []}})
    assert invalid.status_code == 200 and invalid.json()["result"] == {
        "message": "name is required"
    }
    refused = mesh.call("get_pet_by_id", {})
    assert (
        refused.status_code == 400
        and "missing required path parameter 'petId'" in refused.json()["error"]
    )
    slow = mesh.call(
        "find_pets_by_status", {"status": "sold", "delay": 3}
    )  # the source's timeout: 1s
    assert slow.status_code == 504 and "gave no answer in 1s" in slow.json()["error"]
    down = mesh.call("pets2.get_pet_by_id", {"petId": 1})
    assert down.status_code == 502 and "unreachable" in down.json()["error"]


@pytest.mark.parametrize(
    "name",
    [
        "../admin",
        "../../admin",
        "a/../../admin",
        "//evil.example/x",
        "@evil.example",
        "evil.example@x",
        "http://evil.example/",
        "%2e%2e%2fadmin",
        "..%2fadmin",
        "%2F%2Fevil.example",
        "a?admin=1#x",
        "..\\admin",
        "%252e%252e",
        "\u2025/admin",
    ],
)
def test_a_path_parameter_never_leaves_its_segment(mesh: Mesh, backend: str, name: str) -> None:
    r = mesh.call("get_files_name", {"name": name})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == f"contents of {name}"  # the backend got it back as one segment
    raw = _seen(backend)[-1]["raw_path"]
    assert raw.startswith("/api/v3/files/") and "/" not in raw.removeprefix("/api/v3/files/")
    assert not [s for s in _seen(backend) if "admin" in s["raw_path"].split("/")]


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_dot_segments_are_refused(mesh: Mesh, backend: str, name: str) -> None:
    before = len(_seen(backend))
    r = mesh.call("get_files_name", {"name": name})
    assert r.status_code == 400 and "may not be" in r.json()["error"]
    assert len(_seen(backend)) == before  # nothing was sent


async def test_over_mcp_http(mesh: Mesh) -> None:
    async with mesh.mcp() as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert {"get_pet_by_id", "pets2.get_pet_by_id", "mesh.catalog"} <= set(listed)
        ok = await client.call_tool("get_pet_by_id", {"petId": 1})
        assert not ok.is_error and ok.structured_content["status"] == 200
        assert ok.structured_content["body"]["name"] == "rex"
        missing = await client.call_tool("get_pet_by_id", {"petId": 42})
        assert missing.is_error and missing.structured_content["status"] == 404
        assert "HTTP 404" in missing.content[0].text  # type: ignore[union-attr]
        denied = await client.call_tool("delete_pet", {"petId": 1})
        assert denied.is_error and "denied by policy claude" in denied.content[0].text  # type: ignore[union-attr]


async def test_over_stdio_mcp(mesh: Mesh) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        env=mesh.env,
        cwd=str(mesh.tmp),
        args=["-m", "agent_mesh", "--mcp", "--config", str(mesh.config_path)],
    )
    async with Client(params, mode="legacy") as client:
        result = await client.call_tool("pets2.get_pet_by_id", {"petId": 1})
        assert result.is_error  # its backend is down: the gateway's 502, as a tool error
        found = await client.call_tool("find_pets_by_status", {"status": "available"})
        assert not found.is_error and found.structured_content["body"][0]["name"] == "rex"


@pytest.mark.parametrize("flags", ["file and --backend", "url alone"])
def test_the_openapi_and_backend_flags(tmp_path: Path, backend: str, flags: str) -> None:
    # `agent-mesh --openapi SPEC [--backend URL]` as with the Go binary: one more (unnamed) source.
    # From a URL, with no --backend: the document's server, relative to where it was fetched.
    top = (
        ("--openapi", str(SPEC), "--backend", f"{backend}/api/v3")
        if flags == "file and --backend"
        else ("--openapi", f"{backend}/openapi.json")
    )
    m = Mesh(
        tmp_path,
        {
            "policies": [
                {"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}
            ]
        },
    )
    m.start(timeout=90, top_args=top)
    try:
        r = m.call("get_pet_by_id", {"petId": 1})
        assert r.status_code == 200 and r.json()["result"]["name"] == "rex", r.text
        assert [s["name"] for s in m.http.get("/mcp-servers").json()] == ["openapi-0"]
    finally:
        assert m.stop() == set()


def test_the_shipped_example(tmp_path: Path, backend: str) -> None:
    import yaml

    config = yaml.safe_load((REPO / "examples" / "openapi.yaml").read_text())
    config["openapi"][0].update(
        file=str(SPEC), backend_url=f"{backend}/api/v3"
    )  # our backend's port
    m = Mesh(tmp_path, config).start(timeout=90)
    try:
        assert m.call("get_inventory").json()["result"]["available"] >= 1  # its X-API-Key is sent
        assert m.call("delete_pet", {"petId": 1}).status_code == 403
    finally:
        assert m.stop() == set()
