"""An OpenAPI document as tools: one `Operation` per path + method (compat.md §1, `openapi:`).

- Read from text (JSON or YAML), OpenAPI 3.0 / 3.1 or Swagger 2.0; `agent-mesh check` also
  runs openapi-spec-validator (a document it rejects still loads if its paths can be read: the
  Go project loads it, so that is a warning). `$ref`s, local or in other files and URLs,
  are resolved with jsonschema-path / referencing; a recursive schema stops at the second visit.
- Tool names as the Go project makes them: the `operationId` in snake_case (`getPetById` →
  `get_pet_by_id`), else `<method>_<path>` (`GET /files/{name}` → `get_files_name`).
- Input schema: path, query and header parameters by name, and the JSON request body as `body`.
- The base URL: `backend_url`, else the document's first server (3.x, variables at their
  defaults; relative to the document's URL) or `scheme://host/basePath` (2.0).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import yaml
from jsonschema_path import SchemaPath
from referencing._core import Resolver

log = logging.getLogger(__name__)

METHODS = ("get", "put", "post", "delete", "patch")  # Go skips OPTIONS and HEAD (and TRACE)
LOCATIONS = ("path", "query", "header")
_SCHEMA_KEYS_2 = (
    "type",
    "format",
    "items",
    "enum",
    "default",
    "minimum",
    "maximum",
    "pattern",
    "minLength",
    "maxLength",
    "collectionFormat",
)


class SpecError(Exception):
    """The document cannot be turned into tools; the message says why, for a person."""


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # path | query | header
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    tool: str
    method: str  # upper case
    path: str  # as in the document, e.g. /pet/{petId}
    description: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None  # the JSON request body's schema
    body_required: bool = False
    body_name: str = "body"

    def input_schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        for p in self.params:
            properties[p.name] = {
                **p.schema,
                "description": p.schema.get("description") or f"{p.location} parameter",
            }
            if p.required:
                required.append(p.name)
        if self.body is not None:
            properties[self.body_name] = {
                **self.body,
                "description": self.body.get("description") or "the JSON request body",
            }
            if self.body_required:
                required.append(self.body_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        return schema


@dataclass
class Spec:
    operations: list[Operation]
    base_url: str
    version: str  # "2.0", "3.0.3", "3.1.0"
    problems: list[str] = field(default_factory=list)  # what the validator said (logged)


def parse_text(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{where}: not JSON or YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: not an OpenAPI document (the top level is not a mapping)")
    return data


def snake(operation_id: str) -> str:
    """The Go project's toSnake: '_' before every upper-case letter but the first, lowered."""
    return "".join(
        ("_" if i and c.isupper() else "") + (c.lower() if "A" <= c <= "Z" else c)
        for i, c in enumerate(operation_id)
    )


def tool_name(method: str, path: str, operation: dict[str, Any]) -> str:
    op_id = operation.get("operationId")
    if isinstance(op_id, str) and op_id:
        return snake(op_id)
    clean = path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_").strip("_")
    return f"{method.lower()}_{clean}"


def load(
    data: dict[str, Any],
    base_uri: str,
    backend_url: str | None,
    spec_url: str | None,
    *,
    validate: bool = False,
) -> Spec:
    """The document's operations. `validate`: also run openapi-spec-validator (`agent-mesh
    check` does; a worker does not, to start quickly)."""
    version = str(data.get("openapi") or data.get("swagger") or "")
    if not (version.startswith("3.") or version == "2.0"):
        raise SpecError(
            "not an OpenAPI 3.x or Swagger 2.0 document (no 'openapi: 3.x' or "
            "'swagger: \"2.0\"' at the top)"
        )
    problems = _validation_problems(data, base_uri) if validate else []
    if not isinstance(data.get("paths"), dict):
        raise SpecError("no paths found in the document")
    root = SchemaPath.from_dict(data, base_uri=base_uri)
    with root.resolve() as resolved:
        resolver: Resolver[Any] = resolved.resolver
    operations: list[Operation] = []
    names: dict[str, str] = {}
    for path, item in data["paths"].items():
        item_resolved = _deref(item, resolver, ())
        if not isinstance(item_resolved, dict):
            continue
        shared = item_resolved.get("parameters") or []
        for method in METHODS:
            op = item_resolved.get(method)
            if not isinstance(op, dict):
                continue
            operation = _operation(method, path, op, shared, version)
            if operation.tool in names:
                raise SpecError(
                    f"two operations make the tool {operation.tool!r}: "
                    f"{names[operation.tool]} and {method.upper()} {path}"
                )
            names[operation.tool] = f"{method.upper()} {path}"
            operations.append(operation)
    return Spec(operations, _base_url(data, backend_url, spec_url, version), version, problems)


def _validation_problems(data: dict[str, Any], base_uri: str) -> list[str]:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    try:
        validate(data, base_uri=base_uri)
    except OpenAPIValidationError as exc:
        return [str(exc).splitlines()[0]]
    except Exception as exc:  # noqa: BLE001 - a validator failure must not stop the import
        return [f"{type(exc).__name__}: {exc}"]
    return []


def _operation(
    method: str, path: str, op: dict[str, Any], shared: list[Any], version: str
) -> Operation:
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*shared, *(op.get("parameters") or [])]:  # the operation's own win
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            by_key[raw["name"], str(raw.get("in", "query"))] = raw
    params: list[Param] = []
    body: dict[str, Any] | None = None
    body_required = False
    for (name, location), raw in by_key.items():
        if location == "body":  # Swagger 2.0
            body, body_required = _schema(raw.get("schema")), bool(raw.get("required"))
        elif location in LOCATIONS:
            schema = (
                _schema(raw.get("schema"))
                if "schema" in raw
                else {k: raw[k] for k in _SCHEMA_KEYS_2 if k in raw} or {"type": "string"}
            )
            if raw.get("description"):
                schema = {**schema, "description": raw["description"]}
            params.append(
                Param(name, location, location == "path" or bool(raw.get("required")), schema)
            )
        else:
            log.warning(
                "%s %s: %s parameter %r is not sent (only path, query, header and a JSON body are)",
                method.upper(),
                path,
                location,
                name,
            )
    request_body = op.get("requestBody")
    if isinstance(request_body, dict):
        content = request_body.get("content") or {}
        media = next((m for m in content if m == "application/json" or m.endswith("+json")), None)
        if media is None and content:
            media = next(iter(content))
            log.warning("%s %s: request body %s is sent as JSON", method.upper(), path, media)
        body = _schema((content.get(media) or {}).get("schema")) if media else {"type": "object"}
        body_required = bool(request_body.get("required"))
    taken = {p.name for p in params}
    body_name = "body" if "body" not in taken else "request_body"
    summary, description = op.get("summary"), op.get("description")
    text = summary or description or f"{method.upper()} {path}"
    return Operation(
        tool_name(method, path, op),
        method.upper(),
        path,
        str(text),
        tuple(params),
        body,
        body_required,
        body_name,
    )


def _schema(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _deref(value: Any, resolver: Resolver[Any], chain: tuple[int, ...]) -> Any:
    """`value` with every `$ref` replaced by what it points at; a reference already being
    expanded on this branch (a recursive schema) becomes an open object."""
    if isinstance(value, list):
        return [_deref(v, resolver, chain) for v in value]
    if not isinstance(value, dict):
        return value
    ref = value.get("$ref")
    if isinstance(ref, str):
        try:
            target = resolver.lookup(ref)
        except Exception as exc:  # noqa: BLE001 - referencing raises several kinds
            raise SpecError(f"cannot resolve $ref {ref!r}: {exc}") from None
        if id(target.contents) in chain:
            return {"type": "object", "description": f"(recursive: {ref})"}
        expanded = _deref(target.contents, target.resolver, (*chain, id(target.contents)))
        siblings = {k: _deref(v, resolver, chain) for k, v in value.items() if k != "$ref"}
        return {**expanded, **siblings} if isinstance(expanded, dict) else expanded
    return {k: _deref(v, resolver, chain) for k, v in value.items()}


def _base_url(
    data: dict[str, Any], backend_url: str | None, spec_url: str | None, version: str
) -> str:
    if backend_url:
        return backend_url.rstrip("/")
    if version == "2.0":
        host = data.get("host") or (urlsplit(spec_url).netloc if spec_url else "")
        schemes = data.get("schemes") or [urlsplit(spec_url).scheme if spec_url else "https"]
        if not host:
            raise SpecError("the document names no host: set backend_url")
        return f"{schemes[0]}://{host}{data.get('basePath') or ''}".rstrip("/")
    servers = data.get("servers") or []
    first = servers[0] if servers and isinstance(servers[0], dict) else {}
    url = str(first.get("url") or "")
    for name, var in (first.get("variables") or {}).items():
        url = url.replace("{" + name + "}", str((var or {}).get("default", "")))
    if not re.match(r"https?://", url):
        if spec_url is None:
            raise SpecError(
                "the document's first server is not an absolute http(s) URL "
                f"({url or 'none'}): set backend_url"
            )
        url = urljoin(spec_url, url or "/")
    return url.rstrip("/")
