"""The model clients against a fake server speaking the real APIs: ollama chat and generate,
OpenAI-compatible chat completions, each streamed and not; errors, garbage and timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from autoresolve.config import LlmConfig
from autoresolve.llm import LlmError, Model, model_for
from tests.autoresolve.fake_llm import FakeLlm

VERDICT = '{"decision": "deny", "confidence": 0.93, "reasoning": "outside the project"}'


@pytest.fixture
def fake() -> Iterator[FakeLlm]:
    server = FakeLlm()
    yield server
    server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def model(fake: FakeLlm, http: httpx.AsyncClient, **settings: Any) -> Model:
    return model_for(
        LlmConfig.model_validate({"url": fake.url, "model": "qwen3:14b"} | settings), http
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"api": "chat", "stream": False},
        {"api": "chat", "stream": True},
        {"api": "generate", "stream": False},
        {"api": "generate", "stream": True},
        {"provider": "openai_compatible", "stream": False},
        {"provider": "openai_compatible", "stream": True},
    ],
)
async def test_each_api_returns_the_models_text(
    fake: FakeLlm, http: httpx.AsyncClient, settings: dict[str, Any]
) -> None:
    fake.reply = VERDICT
    assert await model(fake, http, **settings).complete("SYSTEM", "USER") == VERDICT
    path, body = fake.requests[-1]
    assert body["model"] == "qwen3:14b"
    assert body["stream"] is settings["stream"]
    if settings.get("provider") == "openai_compatible":
        assert path == "/v1/chat/completions"
        assert body["messages"] == [
            {"role": "system", "content": "SYSTEM"},
            {"role": "user", "content": "USER"},
        ]
    elif settings["api"] == "chat":
        assert path == "/api/chat"
        assert body["format"] == "json"
        assert body["messages"][0] == {"role": "system", "content": "SYSTEM"}
    else:
        assert path == "/api/generate"
        assert (body["system"], body["prompt"], body["format"]) == ("SYSTEM", "USER", "json")


async def test_openai_url_with_v1_and_api_key(fake: FakeLlm, http: httpx.AsyncClient) -> None:
    client = model(
        fake, http, provider="openai_compatible", url=fake.url + "/v1", api_key="sk-local"
    )
    await client.complete("s", "u")
    path, body = fake.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["_headers"]["Authorization"] == "Bearer sk-local"


@pytest.mark.parametrize("stream", [False, True])
async def test_timeout_covers_the_whole_answer(
    fake: FakeLlm, http: httpx.AsyncClient, stream: bool
) -> None:
    if stream:
        fake.stall = True  # the first piece arrives at once, the rest never does
    else:
        fake.delay = 2
    with pytest.raises(LlmError, match="no complete answer within 0.3s"):
        await model(fake, http, stream=stream, timeout="300ms").complete("s", "u")


async def test_server_errors(fake: FakeLlm, http: httpx.AsyncClient) -> None:
    with pytest.raises(LlmError, match='HTTP 404: model "nope" not found'):
        await model(fake, http, model="nope").complete("s", "u")
    fake.status = 500
    with pytest.raises(LlmError, match="HTTP 500: something broke"):
        await model(fake, http).complete("s", "u")
    fake.status = 200
    fake.close()
    with pytest.raises(LlmError, match="ConnectError"):
        await model(fake, http).complete("s", "u")
