"""One REST route as a contract: method, path, handler, the pydantic models of its query string
and JSON body, and its answers. The gateway's Starlette routes and its OpenAPI document
(gateway/openapi.py) are both built from these, so a route is added in one place, described.

A handler gets its query and body validated, as keyword arguments `query` and `body`; a bad
one never reaches it: the caller gets a 400 naming the parameter or field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bus.json_values import refusal
from gateway.http_edge import HttpError, read_json

Handler = Callable[..., Awaitable[Response]]
Q = TypeVar("Q", bound=BaseModel)


@dataclass(frozen=True)
class Answer:
    """One documented answer: its shape (a type pydantic can describe) and when it is given."""

    shape: Any
    description: str
    example: Any = None
    media_type: str = "application/json"
    links: dict[str, dict[str, Any]] | None = None  # OpenAPI links: where this answer's ids lead


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str  # Starlette's: /approvals/{id}, /tool/{tool:path}
    handler: Handler
    summary: str
    answers: dict[int, Answer]
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_example: Any = None
    description: str = ""  # default: the handler's docstring
    operator: bool = False  # may need X-Operator-Token (auth.operator_token); reads the bearer
    bearer: bool = False  # the caller's agent id comes from its Authorization header
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # JSON Schema of each
    tags: Sequence[str] = field(default_factory=tuple)

    async def endpoint(self, request: Request) -> Response:
        args: dict[str, Any] = {}
        if self.query is not None:
            args["query"] = validated_query(self.query, request)
        if self.body is not None:
            args["body"] = validated_body(
                self.body, await read_json(request.headers, request.receive)
            )
        return await self.handler(request, **args)


def starlette_routes(routes: Sequence[ApiRoute]) -> list[BaseRoute]:
    """One Starlette route per path, whatever its methods: a method it does not take is a 405
    whose `Allow` lists all those it does."""
    by_path: dict[str, dict[str, Handler]] = {}
    for route in routes:
        by_path.setdefault(route.path, {})[route.method] = route.endpoint
    out: list[BaseRoute] = []
    for path, endpoints in by_path.items():

        async def endpoint(request: Request, endpoints: dict[str, Handler] = endpoints) -> Response:
            return await endpoints["GET" if request.method == "HEAD" else request.method](request)

        out.append(Route(path, endpoint, methods=list(endpoints), name=path))
    return out


def validated_query(model: type[Q], request: Request) -> Q:
    raw = dict(request.query_params)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in problem["loc"])
        raise HttpError(
            400, f"invalid query parameter {name}={raw.get(name)!r}: {_expected(problem['msg'])}"
        ) from None


def validated_body(model: type[Q], body: Any) -> Q:
    if not isinstance(body, dict):
        raise HttpError(400, f"invalid body: expected a JSON object, got {_json_type(body)}")
    if (bad := refusal(body, "body")) is not None:
        raise HttpError(400, f"invalid {bad}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        where, why = _first_problem(exc)
        raise HttpError(400, f"invalid body{where}: {why}") from None


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    """(path, what was expected) of the first bad field. The members of a union (`tools`: a
    string or a list) each add an error: the deepest one is the caller's mistake, else all say
    what would do ("expected a valid string or a valid list")."""
    problems: dict[tuple[Any, ...], list[str]] = {}
    for problem in exc.errors(include_url=False):
        # pydantic names union members in the path ("constrained-str", "list[str]"): not fields
        loc = tuple(
            p for p in problem["loc"] if isinstance(p, int) or ("-" not in p and "[" not in p)
        )
        problems.setdefault(loc, []).append(_expected(problem["msg"]))
    first = next(iter(problems))
    loc = max((loc for loc in problems if loc[: len(first)] == first), key=len)
    why = " or ".join(
        dict.fromkeys(m.removeprefix("expected ") if i else m for i, m in enumerate(problems[loc]))
    )
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc), why


def _expected(message: str) -> str:
    """pydantic's "Input should be a valid integer" → "expected a valid integer"."""
    for lead in ("Input should be ", "Value should be "):
        if message.startswith(lead):
            return "expected " + message[len(lead) :]
    return message[:1].lower() + message[1:]


def _json_type(value: Any) -> str:
    names = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)
