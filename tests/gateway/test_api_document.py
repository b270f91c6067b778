"""`GET /openapi.json`: a valid OpenAPI 3.1 document (openapi-spec-validator) of every REST
route the gateway serves, generated from the routes' own models, whose examples fit its schemas.
In-process (no bus needed: these routes never reach it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.http import create_app
from mesh_config.file import load_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "filesystem.yaml"


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path))  # the gateway's trace journal goes there
    app = create_app(load_config(EXAMPLE), f"ipc://{tmp_path}/nobody.ipc")  # no lifespan: no bus
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mesh"
    ) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


async def fetch(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return dict(r.json())


async def test_the_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    doc = await fetch(client)
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "agent-mesh"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema


async def test_every_rest_route_is_in_the_document(client: httpx.AsyncClient) -> None:
    doc = await fetch(client)
    starlette = client.app.app.app  # type: ignore[attr-defined]  # EdgeRoutes → LastResort → Starlette
    served = {
        (method.lower(), route.path.replace(":path", "").replace(":str", ""))
        for route in starlette.routes
        if isinstance(route, Route)
        and route.methods
        and route.path != "/ui/"  # the console's redirect to /ui
        for method in route.methods - {"HEAD"}
    }
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    for required in [
        "/tool/{tool}",
        "/tools",
        "/mcp-servers",
        "/traces",
        "/sessions",
        "/sessions/{id}",
        "/approvals",
        "/approvals/{id}",
        "/approvals/{id}/{decision}",
        "/grants",
        "/grants/{id}",
        "/health",
        "/ready",
        "/version",
        "/openapi.json",
        "/metrics",
        "/reload",
        "/otel-traces",
        "/ui",
        "/ui/events",
    ]:
        assert required in doc["paths"], required
    assert "/mcp" not in doc["paths"]  # JSON-RPC: the MCP specification is its contract


async def test_every_operation_says_what_it_takes_and_answers(client: httpx.AsyncClient) -> None:
    doc = await fetch(client)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"] and operation["operationId"], where
            assert "200" in operation["responses"] or "201" in operation["responses"], where
            assert "500" in operation["responses"], where  # the last resort's answer, described
            if method == "post" and path not in ("/reload",):
                assert "requestBody" in operation and "400" in operation["responses"], where
            if any(p["name"] == "limit" for p in operation["parameters"]):
                assert "400" in operation["responses"], where
    ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    links = [
        link
        for item in doc["paths"].values()
        for op in item.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert (
        len(links) >= 5 and {link["operationId"] for link in links} <= ids
    )  # stateful testing follows them
    limit = next(p for p in doc["paths"]["/traces"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {
        "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 0}],
        "default": 0,
    }


def _examples(node: Any, schema: Any = None) -> list[tuple[Any, Any]]:
    """(example, its schema) for every example in an operation's media types."""
    found = []
    if isinstance(node, dict):
        if "example" in node and "schema" in node:
            found.append((node["example"], node["schema"]))
        for value in node.values():
            found += _examples(value)
    elif isinstance(node, list):
        for value in node:
            found += _examples(value)
    return found


async def test_the_examples_fit_their_schemas(client: httpx.AsyncClient) -> None:
    doc = await fetch(client)
    examples = _examples(doc["paths"])
    assert len(examples) > 30
    for example, schema in examples:
        resolver_doc = {**schema, "components": doc["components"]}
        jsonschema.Draft202012Validator(resolver_doc).validate(example)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/traces?limit=abc", "invalid query parameter limit='abc': expected a valid integer"),
        (
            "/sessions?limit=-1",
            "invalid query parameter limit='-1': expected greater than or equal to 0",
        ),
        ("/approvals?limit=1.5", "invalid query parameter limit='1.5': expected a valid integer"),
        (
            "/sessions/x?limit=%EF%BC%91",
            "invalid query parameter limit='１': expected a valid integer",
        ),
    ],
)
async def test_a_bad_query_parameter_is_a_400_naming_it(
    client: httpx.AsyncClient, path: str, message: str
) -> None:
    r = await client.get(path)
    assert (r.status_code, r.json()) == (400, {"error": message})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "invalid body: expected a JSON object, got an array"),
        (b'{"tools": "fs.*", "duration": "1m"}', "invalid body.agent: field required"),
        (
            b'{"agent": "", "tools": "fs.*", "duration": "1m"}',
            "invalid body.agent: string should have at least 1 character",
        ),
        (
            b'{"agent": "a", "tools": 5, "duration": "1m"}',
            "invalid body.tools: expected a valid string or a valid list",
        ),
        (
            b'{"agent": "a", "tools": ["fs.*", 3], "duration": "1m"}',
            "invalid body.tools[1]: expected a valid string",
        ),
        (
            b'{"agent": "a", "tools": "fs.*", "duration": 30}',
            "invalid body.duration: expected a valid string",
        ),
        (
            b'{"agent": "a\\ud800", "tools": "fs.*", "duration": "1m"}',
            (
                "invalid body.agent: string holds a lone "
                "surrogate \\ud800 at character 1: not Unicode, which a JSON string must be"
            ),
        ),
        (
            b'{"agent": "a", "tools": "fs.*", "duration": "1m", "created_by": 7}',
            "invalid body.created_by: expected a valid string",
        ),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    r = await client.post("/grants", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": message})


def test_a_limit_of_any_length_is_an_integer() -> None:
    """The document says integer ≥ 0: a 40-digit one is valid (capped), a 40-digit negative one
    is refused as negative, not as a non-integer (schemathesis found this)."""
    from pydantic import ValidationError

    from gateway.api_requests import MAX_LIMIT, TracesQuery

    assert TracesQuery.model_validate({"limit": "9" * 40}).limit_or(20) == MAX_LIMIT
    assert TracesQuery.model_validate({"limit": "9" * 5000}).limit_or(20) == MAX_LIMIT
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        TracesQuery.model_validate({"limit": "-" + "9" * 40})


async def test_every_route_documents_the_answers_its_kind_implies(
    client: httpx.AsyncClient,
) -> None:
    """Said once in gateway/openapi.py, not per route: 500 everywhere, 401/403 where the
    operator token is needed, 400/413 where a body is read."""
    doc = await fetch(client)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            assert "500" in statuses, (method, path)
            if "X-Operator-Token" in headers:
                assert {"401", "403"} <= statuses, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= statuses, (method, path)
                too_large = op["responses"]["413"]["content"]["application/json"]["example"]
                assert too_large["error"].startswith("request body too large"), (method, path)
