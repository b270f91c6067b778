"""Fixtures for the workers tests."""

from collections.abc import AsyncIterator

import pytest

from tests.bus.conftest import broker, endpoints  # noqa: F401 - the real broker on ipc, reused
from tests.workers.upstreams import everything_spec
from workers.mcp_client import UpstreamClient


@pytest.fixture
async def everything() -> AsyncIterator[UpstreamClient]:
    """A client session on the `everything` reference server, closed after the test."""
    async with UpstreamClient(everything_spec()) as client:
        yield client
