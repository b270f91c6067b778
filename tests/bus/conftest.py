from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus.broker import Broker
from bus.endpoints import Endpoints


@pytest.fixture
def endpoints(tmp_path: Path) -> Endpoints:
    return Endpoints.in_dir(tmp_path / "state")


@pytest.fixture
def broker(endpoints: Endpoints) -> Iterator[Broker]:
    """A real broker on real ipc sockets, in a thread of the test process."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    b = Broker(endpoints, ctx)
    thread = threading.Thread(target=b.run, daemon=True)
    thread.start()
    yield b
    b.stop()
    thread.join(timeout=2)
    ctx.term()
