"""Workers on other hosts: the broker also serves tcp, CURVE-encrypted, and only to clients whose
public key is authorised (docs/multihost.md). Loopback only; keys made by `agent-mesh keys`."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from agent_mesh import keys as keys_cli
from bus import frames
from bus.broker import Broker
from bus.client import BusClient
from bus.endpoints import CurveClient, CurveServer, Endpoints, KeysError
from bus.errors import BusError
from bus.worker import BusWorker, Request
from tests.support import free_port


@dataclass
class Mesh:
    local: Endpoints  # ipc, as on the broker's host
    remote: str  # tcp, as seen from another host
    keys: Path
    broker: Broker


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    assert keys_cli.main(["--dir", str(directory), "--client", "host-b", "--client", "host-c"]) == 0
    return directory


@pytest.fixture
def mesh(tmp_path: Path, keys: Path) -> Iterator[Mesh]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # the broker's own, like its own process
    local = Endpoints.in_dir(tmp_path / "state")
    remote = f"tcp://127.0.0.1:{free_port()}"
    broker = Broker(local, ctx, remote=remote, curve=CurveServer.from_dir(keys))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    yield Mesh(local, remote, keys, broker)
    broker.stop()
    thread.join(timeout=2)
    ctx.term()


def bundle(keys: Path, name: str) -> CurveClient:
    return CurveClient.from_dir(keys / "clients" / name)


async def echo(request: Request) -> Any:
    return {"echo": request.body}


async def _services(client: BusClient) -> dict[str, Any]:
    return await client.request("mmi.services", {}, timeout=1)  # type: ignore[no-any-return]


async def _registered(client: BusClient, service: str, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if (await _services(client)).get(service, {}).get("workers"):
            return True
        await asyncio.sleep(0.05)
    return False


async def _unregistered_until_refused(
    client: BusClient, service: str, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    """`service` has no worker from now until `refusal` (a refused handshake) is logged, nor
    once it is: a READY never gets past a refused handshake, and the worker retries with the same
    keys. The refusal must come within 10 s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while True:
        refused = refusal in caplog.text
        workers = (await _services(client)).get(service, {}).get("workers")
        assert not workers, f"{service} registered: {workers}"
        if refused:
            return
        assert loop.time() < end, f"no refused handshake seen in 10 s: {refusal!r} not logged"
        await asyncio.sleep(0.05)


def _worker(
    endpoint: str, service: str, curve: CurveClient | None
) -> tuple[BusWorker, asyncio.Task[None]]:
    worker = BusWorker(endpoint, service, echo, capacity=4, slot=service, curve=curve)
    return worker, asyncio.create_task(worker.run())


async def test_authorised_worker_on_tcp_is_served(mesh: Mesh) -> None:
    """A worker "on host b" (tcp + its bundle) serves a client on the broker's host (ipc) and a
    client "on host c" (tcp + its bundle): one bus across both sockets."""
    _, task = _worker(mesh.remote, "upstream.remote", bundle(mesh.keys, "host-b"))
    try:
        async with (
            BusClient(mesh.local.requests) as local,
            BusClient(mesh.remote, curve=bundle(mesh.keys, "host-c")) as far,
        ):
            assert await _registered(local, "upstream.remote", 3)
            replies = await asyncio.gather(
                *(
                    c.request("upstream.remote", i, timeout=2)
                    for i in range(50)
                    for c in (local, far)
                )
            )
            assert replies == [{"echo": i} for i in range(50) for _ in range(2)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("who", ["unknown-key", "no-keys", "wrong-broker-key", "revoked"])
async def test_unauthenticated_worker_is_never_registered(
    mesh: Mesh, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused at the CURVE handshake: no message of its ever reaches the broker, so it is never
    registered and never gets a request; the honest worker next to it is served as usual."""
    good = bundle(mesh.keys, "host-b")
    curve: CurveClient | None
    if who == "unknown-key":  # a keypair nobody authorised, with the right broker key
        curve = CurveClient(*zmq.curve_keypair(), good.server)
    elif who == "no-keys":  # plain tcp to a CURVE socket
        curve = None
    elif who == "wrong-broker-key":  # an authorised keypair, but it expects another broker
        curve = CurveClient(good.public, good.secret, zmq.curve_keypair()[0])
    else:  # host-c's genuine bundle, revoked while the broker runs (it re-reads authorized/)
        curve = bundle(mesh.keys, "host-c")
        assert keys_cli.main(["--dir", str(mesh.keys), "--revoke", "host-c"]) == 0
    caplog.set_level(logging.WARNING)
    rogue_service = f"upstream.rogue-{who}"
    _, rogue = _worker(mesh.remote, rogue_service, curve)
    _, honest = _worker(mesh.remote, "upstream.honest", good)
    try:
        async with BusClient(mesh.local.requests) as client:
            assert await _registered(client, "upstream.honest", 3)
            if who in ("unknown-key", "revoked"):  # the broker's ZAP handler turns the key away
                refusal = f"public key {curve.public.decode()} is not in"  # type: ignore[union-attr]
            else:  # refused before ZAP (a wrong broker key, or no CURVE at all): the rogue worker's
                # own socket monitor sees the failed handshake
                refusal = f"{rogue_service}: broker at {mesh.remote} refused the CURVE handshake"
            await _unregistered_until_refused(client, rogue_service, caplog, refusal)
            with pytest.raises(BusError) as err:
                await client.request(rogue_service, "steal", timeout=1)
            assert err.value.code == frames.UNAVAILABLE
            assert await client.request("upstream.honest", 1, timeout=2) == {"echo": 1}
            report = await _services(client)
            assert [w["slot"] for w in report["upstream.honest"]["workers"]] == ["upstream.honest"]
    finally:
        for task in (rogue, honest):
            task.cancel()
        await asyncio.gather(rogue, honest, return_exceptions=True)
    if who in ("unknown-key", "revoked"):  # the broker says which key it turned away
        assert f"public key {curve.public.decode()} is not in" in caplog.text  # type: ignore[union-attr]
    if who != "no-keys":  # and the worker says why it gets nowhere
        assert "refused the CURVE handshake" in caplog.text


async def test_unauthenticated_client_gets_nothing_served(mesh: Mesh) -> None:
    _, task = _worker(mesh.local.requests, "upstream.local", None)
    try:
        async with BusClient(mesh.local.requests) as local:
            assert await _registered(local, "upstream.local", 3)
        async with BusClient(
            mesh.remote, curve=CurveClient(*zmq.curve_keypair(), bundle(mesh.keys, "host-b").server)
        ) as rogue:
            with pytest.raises(BusError) as err:
                await rogue.request("upstream.local", "steal", timeout=1)
            assert (err.value.code, err.value.message) == (frames.UNAVAILABLE, "broker unavailable")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_worker_on_tcp_publishes_events_to_subscribers_on_the_broker_host(
    mesh: Mesh,
) -> None:
    """EVENT over the remote worker's own CURVE connection: a subscriber at the broker's XPUB (ipc,
    as the gateway is) gets `resource.<server>.updated`; the topics that worker may not publish
    (the broker's `worker.*`, the trace writer's `trace.*`) are not republished."""
    from bus.events import Subscriber

    assert mesh.local.events_out
    everything = Subscriber(mesh.local.events_out)
    worker, task = _worker(mesh.remote, "upstream.far", bundle(mesh.keys, "host-b"))
    seen: list[tuple[str, Any]] = []

    async def until_resource_event() -> None:
        async for topic, body in everything:
            seen.append((topic, body))
            if topic.startswith("resource."):
                return

    try:
        async with BusClient(mesh.local.requests) as local:
            assert await _registered(local, "upstream.far", 3)
        collecting = asyncio.create_task(until_resource_event())
        # Subscriptions reach the broker asynchronously (slow joiner): publish until seen. The
        # forged events go first on the same connection, so they would arrive first if let through.
        for i in range(100):
            worker.publish("worker.x.ready", {"slot": "x"})
            worker.publish("trace.claude.recorded", {"trace_id": "forged"})
            worker.publish("resource.far.updated", {"uri": f"file:///{i}"})
            await asyncio.wait({collecting}, timeout=0.05)
            if collecting.done():
                break
        await asyncio.wait_for(collecting, 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        everything.close()
    topics = [topic for topic, _ in seen]
    assert topics[-1] == "resource.far.updated" and seen[-1][1]["uri"].startswith("file:///")
    assert not {"worker.x.ready", "trace.claude.recorded"} & set(topics), topics


def test_keys_are_private_and_checked(keys: Path, tmp_path: Path) -> None:
    for path in [keys, *keys.rglob("*")]:
        mode = os.stat(path).st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert {p.name for p in (keys / "clients" / "host-b").iterdir()} == {
        "client.key",
        "client.key_secret",
        "broker.key",
    }
    assert CurveServer.from_dir(keys).public == bundle(keys, "host-b").server
    # An existing client is not silently replaced; --force does (and revokes the old key).
    old = bundle(keys, "host-b").public
    assert keys_cli.main(["--dir", str(keys), "--client", "host-b"]) == 1
    assert keys_cli.main(["--dir", str(keys), "--client", "host-b", "--force"]) == 0
    assert bundle(keys, "host-b").public != old
    assert (keys / "authorized" / "host-b.key").read_text() == (
        keys / "clients" / "host-b" / "client.key"
    ).read_text()
    # The broker keypair survives a re-run (every bundle holds its public key).
    broker = CurveServer.from_dir(keys).public
    assert keys_cli.main(["--dir", str(keys)]) == 0 and CurveServer.from_dir(keys).public == broker
    # A secret key others can read is refused, naming the file.
    os.chmod(keys / "clients" / "host-b" / "client.key_secret", 0o644)
    with pytest.raises(KeysError, match="client.key_secret: secret key readable by others"):
        bundle(keys, "host-b")
    other = tmp_path / "other"
    keys_cli.ensure_broker(other)
    (other / "authorized").rmdir()
    with pytest.raises(KeysError, match="authorized: no such directory"):
        CurveServer.from_dir(other)
    assert keys_cli.main(["--dir", str(keys), "--client", "../escape"]) == 1
    assert not (keys.parent / "escape").exists()


async def test_agent_mesh_run_over_tcp_with_curve(tmp_path: Path, keys: Path) -> None:
    """The real entry points: `agent-mesh run broker` serving tcp with CURVE next to its ipc
    sockets, a policy worker "on another host" (`run policy --connect tcp://… `, its bundle in
    $AGENT_MESH_KEYS) serving a client on the broker's host; an unknown key and a missing
    bundle get nowhere."""
    import subprocess
    import sys

    from mesh_config.file import load_config
    from tests.support import wait_until

    config = tmp_path / "mesh.yaml"
    config.write_text(
        "policies:\n  - name: all\n    agent: '*'\n    rules:\n"
        "      - tools: ['*']\n        action: allow\n"
    )
    port = free_port()
    env = {**os.environ, "AGENT_MESH_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("AGENT_MESH_KEYS", None)
    env.pop("AGENT_MESH_LISTEN", None)
    run = [sys.executable, "-m", "agent_mesh", "run"]
    repo = Path(__file__).parents[2]

    logs: list[Path] = []

    def start(role: str, *args: str, **extra: str) -> subprocess.Popen[str]:
        logs.append(tmp_path / f"{len(logs)}-{role}.log")  # read while it runs
        with logs[-1].open("w") as out:
            return subprocess.Popen(
                [*run, role, "--config", str(config), *args],
                env={**env, **extra},
                cwd=repo,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    os.environ["AGENT_MESH_HOME"] = env["AGENT_MESH_HOME"]
    try:
        state = load_config(config).state_dir()
    finally:
        del os.environ["AGENT_MESH_HOME"]
    stranger_keys = tmp_path / "stranger"
    keys_cli.main(["--dir", str(stranger_keys), "--client", "x"])
    # A stranger knows the broker's public key (it is public), but its own key was never authorised.
    (stranger_keys / "clients" / "x" / "broker.key").write_bytes((keys / "broker.key").read_bytes())
    procs = [
        start("broker", AGENT_MESH_LISTEN=f"tcp://127.0.0.1:{port}", AGENT_MESH_KEYS=str(keys))
    ]
    try:
        wait_until(lambda: (state / "bus.ipc").exists(), 15, "the broker's ipc socket")
        connect = ["--connect", f"tcp://127.0.0.1:{port}"]
        procs.append(
            start(
                "policy", "--slot", "7", *connect, AGENT_MESH_KEYS=str(keys / "clients" / "host-b")
            )
        )
        procs.append(
            start(
                "policy",
                "--slot",
                "8",
                *connect,
                AGENT_MESH_KEYS=str(stranger_keys / "clients" / "x"),
            )
        )
        bare = start("policy", "--slot", "9", *connect)
        bare.wait(timeout=15)
        out = logs[-1].read_text()
        assert bare.returncode != 0 and "needs CURVE keys: --keys DIR or $AGENT_MESH_KEYS" in out, (
            out
        )
        # A policy worker serves once it has the kill switch's freezes, from the approval service.
        procs.append(start("approval"))
        async with BusClient(f"ipc://{state / 'bus.ipc'}") as client:
            assert await _registered(client, "policy", 15)
            decision = await client.request(
                "policy", {"agent": "a", "tool": "x.y", "params": {}}, timeout=2
            )
            assert decision["action"] == "allow"
            deadline = asyncio.get_running_loop().time() + 15
            while "refused the CURVE handshake" not in logs[2].read_text():  # the stranger tried
                assert asyncio.get_running_loop().time() < deadline, logs[2].read_text()
                await asyncio.sleep(0.05)
            slots = [w["slot"] for w in (await _services(client))["policy"]["workers"]]
            assert slots == ["policy:7"], slots
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        outputs = [log.read_text() for log in logs]
    assert "CURVE; 2 authorised keys" in outputs[0], outputs[0]
    assert "refused a tcp peer" in outputs[0]
    assert "refused the CURVE handshake (our key is not authorised)" in outputs[2], outputs[2]
