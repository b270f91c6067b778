"""Local model servers: ollama (`/api/chat` or `/api/generate`) and OpenAI-compatible chat
completions (llama.cpp server, vLLM, LM Studio), streamed or not. One call = one system + one
user message in, the model's text out; the whole answer must arrive within `timeout`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from autoresolve.config import LlmConfig


class LlmError(Exception):
    """No usable answer from the model server (down, HTTP error, timeout, unreadable body)."""


class Model(Protocol):
    name: str

    async def complete(self, system: str, user: str) -> str: ...


class _Base:
    def __init__(self, config: LlmConfig, http: httpx.AsyncClient) -> None:
        self.config, self.http, self.name = config, http, config.model

    async def complete(self, system: str, user: str) -> str:
        seconds = self.config.timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await self._complete(system, user)
        except TimeoutError:
            raise LlmError(f"{self.config.url}: no complete answer within {seconds:g}s") from None
        except httpx.HTTPError as exc:
            raise LlmError(f"{self.config.url}: {type(exc).__name__}: {exc}") from None

    async def _complete(self, system: str, user: str) -> str:
        raise NotImplementedError

    async def _post(
        self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        response = await self.http.post(url, json=body, headers=headers, timeout=None)
        _check(response, url)
        try:
            return response.json()
        except ValueError:
            raise LlmError(f"{url}: the answer is not JSON: {response.text[:200]!r}") from None

    async def _lines(
        self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> AsyncIterator[str]:
        async with self.http.stream(
            "POST", url, json=body, headers=headers, timeout=None
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                _check(response, url)
            async for line in response.aiter_lines():
                if line.strip():
                    yield line


class Ollama(_Base):
    """ollama's API; `format: json` asks the server to constrain the answer to JSON."""

    async def _complete(self, system: str, user: str) -> str:
        cfg = self.config
        common = {
            "model": cfg.model,
            "stream": cfg.stream,
            "format": "json",
            "options": {"temperature": 0},
        }
        if cfg.api == "chat":
            url, key = f"{cfg.url.rstrip('/')}/api/chat", "message"
            body = common | {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ]
            }
        else:
            url, key = f"{cfg.url.rstrip('/')}/api/generate", "response"
            body = common | {"system": system, "prompt": user}
        if not cfg.stream:
            return _piece(await self._post(url, body), key, url)
        parts = []
        async for line in self._lines(url, body):
            chunk = _loads(line, url)
            parts.append(_piece(chunk, key, url))
            if chunk.get("done") is True:
                break
        return "".join(parts)


class OpenAICompatible(_Base):
    """`POST <url>/v1/chat/completions` (the url may already end in /v1)."""

    async def _complete(self, system: str, user: str) -> str:
        cfg = self.config
        base = cfg.url.rstrip("/")
        url = f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
        key = cfg.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else None
        body = {
            "model": cfg.model,
            "stream": cfg.stream,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if not cfg.stream:
            answer = await self._post(url, body, headers)
            return _choice(answer, "message", url)
        parts = []
        async for line in self._lines(url, body, headers):
            if not line.startswith("data:"):
                continue  # SSE comments and other fields
            data = line[5:].strip()
            if data == "[DONE]":
                break
            parts.append(_choice(_loads(data, url), "delta", url))
        return "".join(parts)


def model_for(config: LlmConfig, http: httpx.AsyncClient) -> Model:
    return Ollama(config, http) if config.provider == "ollama" else OpenAICompatible(config, http)


def _check(response: httpx.Response, url: str) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        raise LlmError(f"{url}: HTTP {response.status_code}: {str(detail)[:200]}")


def _loads(text: str, url: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise LlmError(f"{url}: unreadable stream chunk {text[:100]!r}") from None
    if not isinstance(value, dict):
        raise LlmError(f"{url}: unexpected stream chunk {text[:100]!r}")
    if "error" in value:
        raise LlmError(f"{url}: {str(value['error'])[:200]}")
    return value


def _piece(chunk: Any, key: str, url: str) -> str:
    """ollama: `message.content` (chat) or `response` (generate)."""
    if not isinstance(chunk, dict):
        raise LlmError(f"{url}: unexpected answer {str(chunk)[:100]!r}")
    if "error" in chunk:
        raise LlmError(f"{url}: {str(chunk['error'])[:200]}")
    value = chunk.get(key)
    if key == "message":
        value = value.get("content") if isinstance(value, dict) else None
    if not isinstance(value, str):
        if chunk.get("done") is True and value is None:
            return ""
        raise LlmError(f"{url}: answer without {key}: {str(chunk)[:100]!r}")
    return value


def _choice(answer: Any, key: str, url: str) -> str:
    """OpenAI: `choices[0].message.content`, or `.delta.content` when streaming."""
    try:
        content = answer["choices"][0][key].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        if isinstance(answer, dict) and "error" in answer:
            raise LlmError(f"{url}: {str(answer['error'])[:200]}") from None
        raise LlmError(f"{url}: answer without choices[0].{key}: {str(answer)[:100]!r}") from None
    return content if isinstance(content, str) else ""
