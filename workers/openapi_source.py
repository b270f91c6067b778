"""An `openapi:` entry as a tool source (workers/tool_source.py): the document's operations as
tools (workers/openapi_spec.py), each call one HTTP request to the backend.

The request: path parameters substituted, each percent-encoded as one path segment (`/`, `?`,
`#`, `@`, `%` and `\\` included), `.` and `..` refused, and the URL checked to still be on the
backend's scheme, host, port and base path before it is sent (a parameter never changes where a
request goes); query parameters encoded (a list: the parameter once per value); header
parameters, then the source's configured `headers` (they win: an agent cannot replace the
credentials); the JSON body. Arguments the operation does not declare are sent as the Go
project sends them: as the JSON body of an operation that has one (when no `body` is given),
else in the query string. Redirects are not followed. The call's W3C `traceparent` and its
`X-Trace-Id` go along, as the Go project sends them (unless the configured headers set them).

The result: `{status, content_type, body}` (the body parsed when it is JSON, else text) as
structured content and as text; a 4xx / 5xx status is a tool result with `isError: true`. No
answer within the source's `timeout` is an `UpstreamTimeout`, an unreachable backend an
`UpstreamError`: the only gateway errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from mesh_config.sources import OpenApiSource
from workers.openapi_spec import Operation, Spec, SpecError, load, parse_text
from workers.tool_source import LocalSource, ToolRefused, tool_result
from workers.upstream_types import LogCallback, ProgressCallback, UpstreamError, UpstreamTimeout

VERSION = version("agent-mesh")  # as installed, from pyproject.toml

log = logging.getLogger(__name__)

BACKEND_UNREACHABLE = -32000
MAX_BODY = 4 << 20  # bytes of a response kept
SPEC_TIMEOUT = 30.0


async def read_spec(source: OpenApiSource, validate: bool = False) -> Spec:
    """Fetch or read the document and build its operations; SpecError says what is wrong."""
    if source.url is not None:
        try:
            async with httpx.AsyncClient(timeout=SPEC_TIMEOUT, follow_redirects=True) as client:
                response = await client.get(source.url)
        except httpx.HTTPError as exc:
            raise SpecError(f"cannot fetch {source.url}: {exc}") from None
        if response.status_code != 200:
            raise SpecError(f"cannot fetch {source.url}: HTTP {response.status_code}")
        where, text, base_uri = source.url, response.text, str(response.url)
    else:
        assert source.file is not None
        try:
            text = Path(source.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read {source.file}: {exc}") from None
        where, base_uri = source.file, Path(source.file).resolve().as_uri()
    data = parse_text(text, where)
    try:
        return load(data, base_uri, source.backend_url, source.url, validate=validate)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


class OpenApiToolSource(LocalSource):
    kind = "openapi"

    def __init__(self, name: str, source: OpenApiSource) -> None:
        super().__init__(name)
        self.source = source
        self.operations: dict[str, Operation] = {}
        self.base_url = ""
        self._http: httpx.AsyncClient | None = None
        self.identity(VERSION)

    async def start(self) -> None:
        spec = await read_spec(self.source)
        self.operations = {op.tool: op for op in spec.operations}
        self.base_url = spec.base_url
        self.tools = [
            {"name": op.tool, "description": op.description, "inputSchema": op.input_schema()}
            for op in spec.operations
        ]
        self._http = httpx.AsyncClient(timeout=self.source.timeout_seconds, follow_redirects=False)
        log.info(
            "%s: %d operations from OpenAPI %s, backend %s",
            self.name,
            len(self.tools),
            spec.version,
            self.base_url,
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await super().close()

    def knows(self, tool: str) -> bool:
        return tool in self.operations

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
    ) -> dict[str, Any]:
        assert self._http is not None
        op = self.operations[name]
        try:
            request = build_request(self._http, self.base_url, op, arguments, self.source.headers)
        except ValueError as exc:
            raise ToolRefused(str(exc)) from None
        traceparent = (meta or {}).get("traceparent")
        if isinstance(traceparent, str):  # as the Go project: the call's trace, to the backend
            request.headers.setdefault("traceparent", traceparent)
            request.headers.setdefault("X-Trace-Id", traceparent.split("-")[1])
        try:
            request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
            response = await self._http.send(request, stream=True)
            try:
                body, truncated = await _read(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"{op.method} {op.path} gave no answer in {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                BACKEND_UNREACHABLE,
                f"backend {self.base_url} unreachable: {type(exc).__name__}: {exc}",
            ) from None
        return _rendered(response, body, truncated)


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(
        f"{where}: must be a string, a number or a boolean, got {type(value).__name__}"
    )


def build_request(
    http: httpx.AsyncClient,
    base_url: str,
    op: Operation,
    arguments: dict[str, Any],
    headers: Mapping[str, str],
) -> httpx.Request:
    """The backend request for a call; ValueError (refused, nothing sent) says what is wrong."""
    args = dict(arguments)
    path, query, sent_headers = op.path, [], {}
    for p in op.params:
        if p.name not in args:
            if p.required:
                raise ValueError(f"missing required {p.location} parameter {p.name!r}")
            continue
        value = args.pop(p.name)
        if p.location == "path":
            segment = _text(value, p.name)
            if segment in ("", ".", ".."):
                raise ValueError(f"path parameter {p.name!r} may not be {segment!r}")
            path = path.replace("{" + p.name + "}", quote(segment, safe=""))
        elif p.location == "query":
            for item in value if isinstance(value, list) else [value]:
                query.append((p.name, _text(item, p.name)))
        else:
            sent_headers[p.name] = _text(value, p.name)
    content: bytes | None = None
    if op.body is not None:
        if op.body_name in args:
            body = args.pop(op.body_name)
        else:  # the Go project's way: the other arguments are the body
            body, args = (args or None), {}
        if body is None and op.body_required:
            raise ValueError(f"missing the request body {op.body_name!r}")
        if body is not None:
            content = json.dumps(body).encode()
            sent_headers["Content-Type"] = "application/json"
    for name, value in args.items():  # undeclared, no body: the query string (as the Go project)
        query.append((name, value if isinstance(value, str) else json.dumps(value)))
    url = httpx.URL(base_url + path, params=query)
    _same_origin(url, base_url)
    return http.build_request(op.method, url, content=content, headers={**sent_headers, **headers})


def _same_origin(url: httpx.URL, base_url: str) -> None:
    """A parameter never changes where the request goes (encoding should make this impossible;
    this is the check that it did)."""
    base = urlsplit(base_url)
    port = base.port or {"http": 80, "https": 443}.get(base.scheme)
    prefix = base.path.rstrip("/") + "/"
    path = url.raw_path.decode("ascii").partition("?")[0] + "/"  # as sent: encoded
    if (
        (url.scheme, url.host, url.port or port) != (base.scheme, base.hostname, port)
        or not path.startswith(prefix)
        or "/../" in path
        or "/./" in path
    ):
        raise ValueError(f"the request would leave {base_url}: refused")


async def _read(response: httpx.Response) -> tuple[bytes, int]:
    kept, total = bytearray(), 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        kept += chunk[: max(0, MAX_BODY - len(kept))]
    return bytes(kept), total if total > MAX_BODY else 0


def _rendered(response: httpx.Response, raw: bytes, truncated: int) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    body: Any = text
    if raw and not truncated and ("json" in content_type or not content_type):
        try:
            body = json.loads(text)
        except ValueError:
            pass
    structured: dict[str, Any] = {
        "status": response.status_code,
        "content_type": content_type,
        "body": body,
    }
    if truncated:
        structured["truncated"] = truncated
    shown = text if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False)
    error = response.status_code >= 400
    if error or not shown:
        shown = f"HTTP {response.status_code} {response.reason_phrase}" + (
            f": {shown}" if shown else ""
        )
    return tool_result(structured, shown, error)
