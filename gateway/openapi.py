"""The OpenAPI 3.1 document of the REST API (`GET /openapi.json`), generated from the routes'
own declarations (gateway/api_route.py): their query and body models, the shapes they answer
(gateway/api_shapes.py) and their examples. Nothing here is written by hand per route.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from gateway.api_answers import BAD_BODY, INTERNAL, NOT_AN_AGENT, NOT_AN_OPERATOR, TOO_LARGE
from gateway.api_route import Answer, ApiRoute
from gateway.http_edge import AUTHORIZATION_PATTERN

_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
REF = "#/components/schemas/{model}"
AUTHORIZATION = {
    "name": "Authorization",
    "in": "header",
    "required": False,
    "description": "The calling agent: `Bearer agent:<id>`. Absent: `anonymous`; "
    "any other form: 401.",
    "schema": {"type": "string", "pattern": AUTHORIZATION_PATTERN},
    "example": "Bearer agent:claude",
}
OPERATOR_TOKEN = {
    "name": "X-Operator-Token",
    "in": "header",
    "required": False,
    "description": "Required when the mesh has `auth.operator_token` (403 without it). "
    "Without one, an agent's bearer may not approve its own calls nor grant itself tools.",
    "schema": {"type": "string"},
}


def document(routes: Sequence[ApiRoute], *, version: str, description: str = "") -> dict[str, Any]:
    key_map, schemas = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, path, key_map)
    return {
        "openapi": "3.1.0",
        "info": {"title": "agent-mesh", "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": schemas},
    }


Key = tuple[Any, JsonSchemaMode]


def _schemas(routes: Sequence[ApiRoute]) -> tuple[dict[Key, dict[str, Any]], dict[str, Any]]:
    """Every model and shape once, as JSON Schema 2020-12 (what OpenAPI 3.1 uses), with shared
    definitions under components/schemas."""
    inputs: dict[Key, TypeAdapter[Any]] = {}
    for route in routes:
        for model in (route.query, route.body):
            if model is not None:
                inputs.setdefault((model, "validation"), TypeAdapter(model))
        for answer in answers(route).values():
            inputs.setdefault((answer.shape, "serialization"), TypeAdapter(answer.shape))
    key_map, definitions = TypeAdapter.json_schemas(
        [(shape, mode, adapter) for (shape, mode), adapter in inputs.items()], ref_template=REF
    )
    return dict(key_map), dict(definitions.get("$defs", {}))


def _operation(route: ApiRoute, path: str, key_map: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    doc = route.description or (route.handler.__doc__ or "").strip()
    operation: dict[str, Any] = {
        "operationId": _operation_id(route.method, path),
        "summary": route.summary,
        **({"description": _dedent(doc)} if doc else {}),
        **({"tags": list(route.tags)} if route.tags else {}),
        "parameters": [
            *_path_parameters(route, path),
            *_query_parameters(route.query),
            *([AUTHORIZATION] if route.bearer or route.operator else []),
            *([OPERATOR_TOKEN] if route.operator else []),
        ],
        "responses": {},
    }
    if route.body is not None:
        media: dict[str, Any] = {"schema": key_map[(route.body, "validation")]}
        if route.body_example is not None:
            media["example"] = route.body_example
        operation["requestBody"] = {"required": False, "content": {"application/json": media}}
    for status, answer in sorted(answers(route).items()):
        content: dict[str, Any] = {"schema": key_map[(answer.shape, "serialization")]}
        if answer.example is not None:
            content["example"] = answer.example
        operation["responses"][str(status)] = {
            "description": answer.description,
            "content": {answer.media_type: content},
            **({"links": answer.links} if answer.links else {}),
        }
    return operation


def answers(route: ApiRoute) -> dict[int, Answer]:
    """A route's answers with those its kind implies (a route's own, with its own words, win):
    a fault of the mesh on every route, who may not call on routes that read the bearer or need
    the operator token, a bad or too large body on routes that take one."""
    implied = {500: INTERNAL}
    if route.bearer or route.operator:
        implied[401] = NOT_AN_AGENT
    if route.operator:
        implied[403] = NOT_AN_OPERATOR
    if route.body is not None:
        implied |= {400: BAD_BODY, 413: TOO_LARGE}
    return implied | route.answers


def _path_parameters(route: ApiRoute, path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": route.path_params.get(name, {"type": "string", "minLength": 1}),
        }
        for name in _PATH_PARAM.findall(path)
    ]


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        examples = prop.pop("examples", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        if examples:
            parameter["example"] = examples[0]
        out.append(parameter)
    return out


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path).replace("-", "_").strip("/").replace("/", "_") or "root"
    return f"{method.lower()}_{words.replace('.', '_')}"


def _dedent(text: str) -> str:
    lines = text.splitlines()
    return "\n".join([lines[0], *(line.strip() for line in lines[1:])])
