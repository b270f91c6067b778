"""Resources and prompts of the upstreams, proxied to MCP agents under the same policy engine
as tool calls (compat.md §4, extension).

Listing is not governed (like `tools/list`): `resources/list`, `resources/templates/list` and
`prompts/list` ask every live upstream that advertises the capability (through its
`upstream.<server>` worker, `UpstreamRequest`) and merge the answers in config order. Using one
is governed: `resources/read` and `prompts/get` take the same path as a tool call
(`Pipeline.governed`: rate limits, loop detection, grants and human approval included, traced
the same way). A read that needs approval waits for it in every mode (a human resolves it with
`mesh approve`): unlike a tool call, its answer cannot say "pending".

Naming — what agents see, and the name policies and traces match against:

- **Prompts** are listed as `<server>.<prompt>` (like tools, so names are unique across
  servers); `prompts/get` takes that name. Policy / trace name: `<server>.prompt:<prompt>`,
  policy params: the prompt's `arguments`.
- **Resources** keep their URIs untouched (tool results link to them as they are); a URI is
  routed to the server that listed it (last `resources/list`), else whose resource template
  matches it, else — when only one live upstream has resources — to that one. Policy / trace
  name: `<server>.resource:<uri>`, policy params: `{"uri": <uri>}`.

`:` cannot occur in a tool name, so a rule on `<server>.<tool>` never covers a prompt or a
resource, while `<server>.*` covers the server's tools, prompts and resources alike; e.g.
`everything.resource:demo://resource/static/*` for static documents only. A refusal is a
JSON-RPC error with code `RPC_POLICY_REFUSED` (bus/errors.py) naming the policy rule (`data`:
policy, rule, trace_id); an upstream's own JSON-RPC error (unknown prompt, unknown resource) is
passed through with its code, message and data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from bus.client import PartialHandler
from bus.errors import RPC_POLICY_REFUSED, RPC_RESOURCE_NOT_FOUND, rpc_code
from bus.messages import UpstreamRequest
from gateway.call import Outcome
from gateway.catalog import ServerView
from gateway.frontend import FrontEnd

log = logging.getLogger(__name__)


def prompt_policy_name(server: str, prompt: str) -> str:
    return f"{server}.prompt:{prompt}"


def resource_policy_name(server: str, uri: str) -> str:
    return f"{server}.resource:{uri}"


class McpProxy:
    def __init__(self, frontend: FrontEnd) -> None:
        self.pipeline = frontend.pipeline
        self.catalog = frontend.catalog
        self._owners: dict[str, str] = {}  # resource URI → the server that listed it
        self._templates: dict[str, list[UriTemplate]] = {}  # server → its resource templates

    def servers_with(self, capability: str) -> list[ServerView]:
        return [view for view in self.catalog.servers.values() if view.has(capability)]

    # -- listing (not governed) --------------------------------------------------------------

    async def list_resources(self) -> dict[str, Any]:
        resources: list[Any] = []
        for server, result in await self._fan_out("resources", "resources/list"):
            listed = [r for r in result.get("resources") or [] if isinstance(r, dict)]
            for uri in [u for u, owner in self._owners.items() if owner == server]:
                del self._owners[uri]
            for resource in listed:
                if isinstance(resource.get("uri"), str):
                    self._owners.setdefault(resource["uri"], server)
            resources.extend(listed)
        return {"resources": resources}

    async def list_resource_templates(self) -> dict[str, Any]:
        templates: list[Any] = []
        for server, result in await self._fan_out("resources", "resources/templates/list"):
            listed = [t for t in result.get("resourceTemplates") or [] if isinstance(t, dict)]
            parsed = []
            for template in listed:
                try:
                    parsed.append(UriTemplate.parse(str(template.get("uriTemplate"))))
                except (InvalidUriTemplate, ValueError):
                    log.debug(
                        "%s: unusable resource template %r", server, template.get("uriTemplate")
                    )
            self._templates[server] = parsed
            templates.extend(listed)
        return {"resourceTemplates": templates}

    async def list_prompts(self) -> dict[str, Any]:
        prompts: list[Any] = []
        for server, result in await self._fan_out("prompts", "prompts/list"):
            for prompt in result.get("prompts") or []:
                if isinstance(prompt, dict) and isinstance(prompt.get("name"), str):
                    prompts.append(
                        {**prompt, "name": self.catalog.prefixes[server] + prompt["name"]}
                    )
        return {"prompts": prompts}

    async def _fan_out(self, capability: str, method: str) -> list[tuple[str, dict[str, Any]]]:
        """Ask every live upstream with `capability`; the answers in config order. Upstreams that
        fail are left out (and logged); if all fail, the first failure is the error."""
        servers = self.servers_with(capability)
        replies = await asyncio.gather(
            *(self._upstream(view.name, UpstreamRequest(method=method)) for view in servers),
            return_exceptions=True,
        )
        out: list[tuple[str, dict[str, Any]]] = []
        failures: list[BaseException] = []
        for view, reply in zip(servers, replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, Exception):
                    raise reply  # cancellation
                log.warning("%s from %s failed: %s", method, view.name, reply)
                failures.append(reply)
            else:
                out.append((view.name, reply))
        if failures and not out:
            first = failures[0]
            if isinstance(first, MCPError):
                raise MCPError(first.code, f"{method}: {first.message}", first.data)
            raise first
        return out

    async def _upstream(self, server: str, request: UpstreamRequest) -> dict[str, Any]:
        """The upstream's result to a request that needs no decision, or MCPError (its JSON-RPC
        error as is, or what the bus said)."""
        upstream = self.pipeline.upstream_call(server, request)
        if upstream is None:
            raise MCPError(types.INVALID_PARAMS, f"no upstream server named {server!r}")
        result: dict[str, Any] = answer(await self.pipeline.ask(upstream))
        return result

    # -- governed ----------------------------------------------------------------------------

    async def read_resource(
        self,
        agent: str,
        session_id: str,
        uri: str,
        *,
        on_partial: PartialHandler | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        server = await self.resource_owner(uri)
        if server is None:
            message = (
                f"Resource not found: {uri} "
                "(no upstream lists it or has a matching resource template)"
            )
            self.pipeline.refused(agent, session_id, f"resource:{uri}", {"uri": uri}, 404, message)
            raise MCPError(RPC_RESOURCE_NOT_FOUND, message, data={"uri": uri})
        request = UpstreamRequest(method="resources/read", params={"uri": uri}, progress=progress)
        return await self._governed(
            agent,
            session_id,
            server,
            resource_policy_name(server, uri),
            {"uri": uri},
            request,
            on_partial,
        )

    def _prompt_owner(self, name: str) -> tuple[str, str]:
        """Exposed prompt name → (server, upstream prompt name): the longest matching prefix wins,
        so `fs.x` goes to server `fs` even when another server has the empty prefix."""
        for server, prefix in sorted(self.catalog.prefixes.items(), key=lambda item: -len(item[1])):
            if name.startswith(prefix) and len(name) > len(prefix):
                return server, name[len(prefix) :]
        return name.partition(".")[0], ""

    async def get_prompt(
        self,
        agent: str,
        session_id: str,
        name: str,
        arguments: dict[str, Any],
        *,
        on_partial: PartialHandler | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        server_name, prompt = self._prompt_owner(name)
        view = self.catalog.servers.get(server_name)
        if not prompt or view is None:
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown prompt {name}: no upstream server named {server_name!r} "
                "(prompts are named <server>.<prompt>)",
            )
        if not view.has("prompts"):
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown prompt {name}: {server_name} has no prompts"
                + ("" if view.up else " (upstream unavailable)"),
            )
        params: dict[str, Any] = {"name": prompt}
        if arguments:
            params["arguments"] = arguments
        request = UpstreamRequest(method="prompts/get", params=params, progress=progress)
        return await self._governed(
            agent,
            session_id,
            server_name,
            prompt_policy_name(server_name, prompt),
            arguments,
            request,
            on_partial,
        )

    async def complete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`completion/complete` for a prompt's or a resource template's argument, asked of the
        server that owns it (prompt names lose their prefix on the way). Not governed: it suggests
        values, it does not act."""
        ref = params.get("ref")
        if not isinstance(ref, dict) or ref.get("type") not in ("ref/prompt", "ref/resource"):
            raise MCPError(
                types.INVALID_PARAMS,
                "completion/complete needs a ref of type ref/prompt or ref/resource",
            )
        if ref["type"] == "ref/prompt":
            server, prompt = self._prompt_owner(str(ref.get("name", "")))
            if not prompt or server not in self.catalog.servers:
                raise MCPError(types.INVALID_PARAMS, f"unknown prompt {ref.get('name')}")
            params = {**params, "ref": {**ref, "name": prompt}}
        else:
            owner = await self.resource_owner(str(ref.get("uri", "")))
            if owner is None:
                raise MCPError(
                    RPC_RESOURCE_NOT_FOUND, f"no upstream has resources matching {ref.get('uri')}"
                )
            server = owner
        return await self._upstream(
            server, UpstreamRequest(method="completion/complete", params=dict(params))
        )

    async def forward_to_owner(self, uri: str, method: str) -> str:
        """resources/subscribe | unsubscribe, to the upstream that owns `uri`; returns that
        server."""
        owner = await self.resource_owner(uri)
        if owner is None:
            raise MCPError(RPC_RESOURCE_NOT_FOUND, f"Resource not found: {uri}", data={"uri": uri})
        await self._upstream(owner, UpstreamRequest(method=method, params={"uri": uri}))
        return owner

    async def resource_owner(self, uri: str) -> str | None:
        """The server a resource URI is routed to (see the module docstring), None if none."""
        owner = self._lookup(uri)
        if owner is None:  # listed since we last looked? ask again once
            await asyncio.gather(
                self.list_resources(), self.list_resource_templates(), return_exceptions=True
            )
            owner = self._lookup(uri)
        if owner is None:
            live = self.servers_with("resources")
            if len(live) == 1:
                owner = live[0].name
        return owner

    def _lookup(self, uri: str) -> str | None:
        live = {view.name for view in self.servers_with("resources")}
        owner = self._owners.get(uri)
        if owner in live:
            return owner
        for server, templates in self._templates.items():
            if server in live and any(t.match(uri) is not None for t in templates):
                return server
        return None

    async def _governed(
        self,
        agent: str,
        session_id: str,
        server: str,
        policy_name: str,
        policy_params: dict[str, Any],
        request: UpstreamRequest,
        on_partial: PartialHandler | None,
    ) -> dict[str, Any]:
        upstream = self.pipeline.upstream_call(server, request)
        if upstream is None:
            raise MCPError(types.INVALID_PARAMS, f"no upstream server named {server!r}")
        outcome = await self.pipeline.governed(
            agent,
            policy_name,
            policy_params,
            upstream,
            session_id=session_id,
            on_progress=on_partial,
            params_name="arguments",
        )
        result: dict[str, Any] = answer(outcome)
        return result


def answer(outcome: Outcome) -> Any:
    """The result of a passed-through request, or the MCPError it ended with: a policy refusal
    (`RPC_POLICY_REFUSED`, data: policy, rule, trace_id), the upstream's own JSON-RPC error as it
    sent it, or the error map's code for the status (bus/errors.py)."""
    if outcome.status == 200:
        return outcome.result
    if outcome.refused_by_policy:
        raise MCPError(
            RPC_POLICY_REFUSED,
            outcome.error,
            data={"policy": outcome.policy, "rule": outcome.rule, "trace_id": outcome.trace_id},
        )
    if outcome.rpc_code is not None:
        raise MCPError(outcome.rpc_code, outcome.error, outcome.rpc_data)
    raise MCPError(rpc_code(outcome.status), outcome.error)
