"""workers/openapi_spec.py and the request builder of workers/openapi_source.py: names, schemas,
$refs (recursive, other files), Swagger 2.0, base URLs, and what a call's arguments become."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from workers.openapi_source import build_request
from workers.openapi_spec import SpecError, load, parse_text, snake, tool_name


@pytest.mark.parametrize(
    ("method", "path", "op", "name"),
    [
        ("get", "/pet/{petId}", {"operationId": "getPetById"}, "get_pet_by_id"),
        ("get", "/x", {"operationId": "listPets"}, "list_pets"),
        ("get", "/x", {"operationId": "GetPet"}, "get_pet"),
        ("get", "/x", {"operationId": "already_snake"}, "already_snake"),
        ("get", "/x", {"operationId": "getHTTPThing"}, "get_h_t_t_p_thing"),  # as Go's toSnake
        ("get", "/files/{name}", {}, "get_files_name"),
        ("delete", "/user-groups/{id}/", {}, "delete_user_groups_id"),
        ("post", "/", {"operationId": ""}, "post_"),
    ],
)
def test_tool_names_as_the_go_project_makes_them(
    method: str, path: str, op: dict[str, Any], name: str
) -> None:
    assert tool_name(method, path, op) == name


def test_snake() -> None:
    assert snake("addPet") == "add_pet" and snake("a") == "a"


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example.com/{v}", "variables": {"v": {"default": "v2"}}}],
        **extra,
    }


def test_recursive_and_external_refs(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text(
        "Tag: {type: object, properties: {label: {type: string}}}\n"
    )
    doc = _doc(
        paths={
            "/nodes": {
                "post": {
                    "operationId": "addNode",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}
                        },
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "children": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Node"},
                        },
                        "tag": {"$ref": "common.yaml#/Tag"},
                    },
                }
            }
        },
    )
    spec = load(doc, (tmp_path / "api.yaml").as_uri(), None, None)
    (op,) = spec.operations
    body = op.input_schema()["properties"]["body"]
    assert body["properties"]["tag"]["properties"]["label"] == {"type": "string"}
    assert (
        body["properties"]["children"]["items"]["description"]
        == "(recursive: #/components/schemas/Node)"
    )
    assert op.input_schema()["required"] == ["body"]
    assert spec.base_url == "https://api.example.com/v2"


def test_swagger_2() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "t", "version": "1"},
        "host": "api.example.com",
        "basePath": "/v1",
        "schemes": ["http"],
        "paths": {
            "/pets/{id}": {
                "put": {
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "type": "integer"},
                        {"name": "dry", "in": "query", "type": "boolean"},
                        {
                            "name": "pet",
                            "in": "body",
                            "required": True,
                            "schema": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                        {"name": "f", "in": "formData", "type": "string"},
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    spec = load(doc, "", None, None)
    (op,) = spec.operations
    schema = op.input_schema()
    assert set(schema["properties"]) == {"id", "dry", "body"}  # formData is not sent
    assert schema["properties"]["id"]["type"] == "integer" and schema["required"] == ["id", "body"]
    assert (op.tool, spec.base_url, spec.version) == (
        "put_pets_id",
        "http://api.example.com/v1",
        "2.0",
    )


@pytest.mark.parametrize(
    ("doc", "spec_url", "problem"),
    [
        ({"info": {}}, None, "not an OpenAPI 3.x or Swagger 2.0 document"),
        ({"openapi": "3.0.0"}, None, "no paths found"),
        ({"openapi": "3.0.0", "paths": {}, "servers": [{"url": "/api"}]}, None, "set backend_url"),
        (
            {
                "openapi": "3.0.0",
                "paths": {"/a": {"get": {"operationId": "x"}}, "/b": {"get": {"operationId": "x"}}},
            },
            "http://h/s.json",
            "two operations make the tool 'x'",
        ),
        (
            {"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "#/nope"}]}}}},
            "http://h/s.json",
            "cannot resolve $ref '#/nope'",
        ),
    ],
)
def test_documents_that_cannot_be_tools(
    doc: dict[str, Any], spec_url: str | None, problem: str
) -> None:
    with pytest.raises(SpecError, match=problem.replace("$", r"\$")):
        load(doc, spec_url or "", None, spec_url)


def test_a_relative_server_is_relative_to_the_documents_url() -> None:
    doc = {"openapi": "3.0.0", "paths": {}, "servers": [{"url": "/api/v3"}]}
    assert (
        load(doc, "", None, "https://petstore.example/openapi.json").base_url
        == "https://petstore.example/api/v3"
    )
    assert load(doc, "", "http://other:8080/x/", None).base_url == "http://other:8080/x"


def test_parse_text() -> None:
    assert parse_text('{"openapi": "3.0.0"}', "a.json") == {"openapi": "3.0.0"}
    assert parse_text("openapi: 3.0.0\n", "a.yaml") == {"openapi": "3.0.0"}
    with pytest.raises(SpecError, match="a.yaml: not an OpenAPI document"):
        parse_text("- a\n", "a.yaml")


PETS = {
    "openapi": "3.0.0",
    "paths": {
        "/pets/{id}": {
            "patch": {
                "operationId": "patchPet",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "tags", "in": "query", "schema": {"type": "array"}},
                    {"name": "X-Req", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}


def _request(args: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Request:
    (op,) = load(PETS, "", "http://backend:8080/api", None).operations
    return build_request(httpx.AsyncClient(), "http://backend:8080/api", op, args, headers or {})


def test_what_a_call_becomes() -> None:
    r = _request(
        {"id": "a b/c", "tags": ["x", "y"], "X-Req": "1", "body": {"n": 1}},
        {"Authorization": "Bearer s"},
    )
    assert (r.method, str(r.url)) == (
        "PATCH",
        "http://backend:8080/api/pets/a%20b%2Fc?tags=x&tags=y",
    )
    assert (r.headers["x-req"], r.headers["authorization"]) == ("1", "Bearer s")
    assert json.loads(r.content) == {"n": 1}
    # Go's way: undeclared arguments are the body when `body` is not given
    assert json.loads(_request({"id": "1", "name": "rex"}).content) == {"name": "rex"}
    # configured headers win over header parameters
    assert _request({"id": "1", "X-Req": "agent"}, {"X-Req": "config"}).headers["x-req"] == "config"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({}, "missing required path parameter 'id'"),
        ({"id": ".."}, "may not be '..'"),
        ({"id": {"a": 1}}, "must be a string, a number or a boolean"),
    ],
)
def test_refused_calls(args: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _request(args)
