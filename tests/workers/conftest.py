from tests.bus.conftest import broker, endpoints  # noqa: F401 - the real broker on ipc, reused
