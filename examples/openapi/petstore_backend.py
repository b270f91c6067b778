"""A tiny in-memory backend for examples/openapi/petstore.yaml (Starlette), for the OpenAPI
example and its tests:

    python examples/openapi/petstore_backend.py --port 8081
    agent-mesh serve --config examples/openapi.yaml

Every request it receives is recorded (`GET /_seen` lists method, raw path, query, headers), so
tests can check what the mesh sent, and that nothing reached `/admin`. `findByStatus` takes an
undeclared `delay` (seconds) before it answers, for timeout tests. `GET /openapi.json` serves the
spec with a relative server (`--openapi http://127.0.0.1:8081/openapi.json` needs no --backend).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

API_KEY = "demo-key"  # what examples/openapi.yaml sends as X-API-Key


def create_app() -> Starlette:
    pets: dict[int, dict[str, Any]] = {
        1: {"id": 1, "name": "rex", "status": "available", "tags": []}
    }
    seen: list[dict[str, Any]] = []

    async def record(request: Request) -> None:
        seen.append(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "headers": dict(request.headers),
            }
        )

    async def add_pet(request: Request) -> Response:
        await record(request)
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"message": "name is required"}, status_code=400)
        pet = {"id": max(pets, default=0) + 1, "status": "available", "tags": [], **body}
        pets[pet["id"]] = pet
        return JSONResponse(pet)

    async def update_pet(request: Request) -> Response:
        await record(request)
        body = await request.json()
        if body.get("id") not in pets:
            return JSONResponse({"message": f"pet {body.get('id')} not found"}, status_code=404)
        pets[body["id"]].update(body)
        return JSONResponse(pets[body["id"]])

    async def find_by_status(request: Request) -> Response:
        await record(request)
        await asyncio.sleep(float(request.query_params.get("delay", 0)))  # for timeout tests
        status = request.query_params.get("status")
        limit = int(request.query_params.get("limit", 20))
        return JSONResponse([p for p in pets.values() if p["status"] == status][:limit])

    async def pet(request: Request) -> Response:
        await record(request)
        try:
            pet_id = int(request.path_params["pet_id"])
        except ValueError:
            return JSONResponse({"message": "petId must be an integer"}, status_code=400)
        if pet_id not in pets:
            return JSONResponse({"message": f"pet {pet_id} not found"}, status_code=404)
        if request.method == "DELETE":
            del pets[pet_id]
            return Response(status_code=204)
        return JSONResponse(pets[pet_id])

    async def inventory(request: Request) -> Response:
        await record(request)
        if request.headers.get("x-api-key") != API_KEY:
            return JSONResponse({"message": "missing or wrong X-API-Key"}, status_code=401)
        counts: dict[str, int] = {}
        for p in pets.values():
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        return JSONResponse(counts)

    async def files(request: Request) -> Response:
        await record(request)
        return PlainTextResponse(f"contents of {request.path_params['name']}")

    async def anything(request: Request) -> Response:
        await record(request)
        return JSONResponse({"message": f"no route {request.url.path}"}, status_code=404)

    async def list_seen(request: Request) -> Response:
        return JSONResponse(seen)

    async def document(request: Request) -> Response:
        """The spec itself, as JSON, its server relative to where it is served from."""
        spec = yaml.safe_load((Path(__file__).parent / "petstore.yaml").read_text())
        return JSONResponse({**spec, "servers": [{"url": "/api/v3"}]})

    routes = [
        Route("/api/v3/pet", add_pet, methods=["POST"]),
        Route("/api/v3/pet", update_pet, methods=["PUT"]),
        Route("/api/v3/pet/findByStatus", find_by_status, methods=["GET"]),
        Route("/api/v3/pet/{pet_id}", pet, methods=["GET", "DELETE"]),
        Route("/api/v3/store/inventory", inventory, methods=["GET"]),
        Route(
            "/api/v3/files/{name:path}", files, methods=["GET"]
        ),  # the decoded segment, "/" or not
        Route("/_seen", list_seen, methods=["GET"]),
        Route("/openapi.json", document, methods=["GET"]),
        Route("/{rest:path}", anything, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    return Starlette(routes=routes)


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")
