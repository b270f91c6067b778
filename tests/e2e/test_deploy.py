"""docs/deploy.md followed end to end on this machine: `scripts/deploy --prefix` (as root) creates
a service user and its directories, installs agent-mesh from this checkout into a venv and the
pinned npm upstreams into a known directory; then the installed systemd unit's command runs as
that user, serves a call, writes traces and logs where the guide says, generates exactly
deploy/supervisord.conf (relocated), and answers the guide's supervisorctl commands."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import REPO, free_port, wait_until

sys.path.insert(0, str(REPO / "scripts"))
import deploy_conf

pytestmark = pytest.mark.timeout(600)  # a venv, npm ci and a mesh start on a busy machine

USER = f"amtest{os.getpid() % 100000}"
SYSTEM_PYTHON = "/usr/bin/python3.11"  # one the service user can run (not under /root)


class Installed:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.etc = prefix / "etc" / "agent-mesh"
        self.home = prefix / "var" / "lib" / "agent-mesh"
        self.logs = prefix / "var" / "log" / "agent-mesh"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The installed unit's ExecStart, as its User, with its Environment and EnvironmentFile."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read_string(
            (self.prefix / "etc" / "systemd" / "system" / "agent-mesh.service").read_text()
        )
        service = unit["Service"]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        text = (self.prefix / "etc" / "systemd" / "system" / "agent-mesh.service").read_text()
        for line in text.splitlines():
            if line.startswith("Environment="):
                key, _, value = line.removeprefix("Environment=").partition("=")
                env[key] = value
        for line in Path(service["EnvironmentFile"]).read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        self.serve = subprocess.Popen(
            shlex.split(service["ExecStart"]),
            env=env,
            user=service["User"],
            group=service["Group"],
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            umask=0o027,
        )

    def ready(self) -> bool:
        assert self.serve is not None
        if self.serve.poll() is not None:
            out = self.serve.stdout.read().decode() if self.serve.stdout else ""
            raise AssertionError(f"serve exited {self.serve.returncode}: {out}")
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The guide's `ctl`: supervisorctl as the service user on the state dir's conf."""
        (conf,) = self.home.glob("*/supervisord.conf")
        return subprocess.run(
            [str(self.prefix / "opt/agent-mesh/venv/bin/supervisorctl"), "-c", str(conf), *args],
            user=USER,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(60)
            except subprocess.TimeoutExpired:
                self.serve.kill()


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.fail("docs/deploy.md is followed as root (useradd, chown): run this test as root")
    # Under /tmp, traversable by the service user (pytest's own tmp dirs are root's, 0700).
    prefix = Path(tempfile.mkdtemp(prefix="agent-mesh-deploy-", dir="/tmp"))
    prefix.chmod(0o755)
    done = subprocess.run(
        [str(REPO / "scripts" / "deploy"), "--prefix", str(prefix), "--user", USER],
        env={**os.environ, "PYTHON": SYSTEM_PYTHON},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    box = Installed(prefix)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "installed under" in done.stdout
        config = box.etc / "agent-mesh.yaml"
        config.write_text(
            config.read_text().replace("port: 9090", f"port: {box.port}")
        )  # as an operator would
        box.start()
        wait_until(box.ready, 90, "the installed mesh ready")
        yield box
    finally:
        box.stop()
        subprocess.run(["pkill", "-KILL", "-u", USER], check=False)
        subprocess.run(["userdel", USER], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(prefix)], check=False)


def test_it_runs_as_the_service_user_from_the_installed_paths(installed: Installed) -> None:
    opt = installed.prefix / "opt" / "agent-mesh"
    assert (opt / "venv" / "bin" / "agent-mesh").exists()
    (site,) = (opt / "venv" / "lib").glob("python3*/site-packages")
    assert (site / "agent_mesh").is_dir() and not list(site.glob("__editable__*")), (
        "a regular install"
    )
    assert (opt / "upstreams" / "node_modules" / ".bin" / "mcp-server-filesystem").exists()
    config = yaml.safe_load((installed.etc / "agent-mesh.yaml").read_text())
    assert (
        config["mcp_servers"][0]["command"]
        == f"{opt}/upstreams/node_modules/.bin/mcp-server-filesystem"
    )
    assert oct((installed.etc / "env").stat().st_mode & 0o777) == "0o600"
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if f"--config {installed.etc}/agent-mesh.yaml" in cmd:
            assert uid != 0, f"runs as root: {cmd}"
        assert not ("npx" in cmd and str(installed.prefix) in cmd), cmd


def test_a_call_is_served_and_traced_under_var_lib_and_logged_under_var_log(
    installed: Installed,
) -> None:
    r = httpx.post(
        f"{installed.url}/tool/filesystem.list_allowed_directories",
        json={"params": {}},
        headers={"Authorization": "Bearer agent:claude"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert str(installed.home / "files") in r.text
    trace_id = r.json()["trace_id"]
    traces = installed.home / "traces.jsonl"
    wait_until(
        lambda: trace_id in traces.read_text(), 10, "the trace in /var/lib/agent-mesh/traces.jsonl"
    )
    assert traces.stat().st_uid != 0
    logs = {p.name for p in installed.logs.iterdir()}
    assert {
        "gateway-0.log",
        "broker-0.log",
        "policy-1.log",
        "upstream-filesystem-2.log",
        "supervisord.log",
    } <= logs


def test_the_generated_supervisord_conf_is_deploy_supervisord_conf(installed: Installed) -> None:
    (generated,) = installed.home.glob("*/supervisord.conf")
    expected = deploy_conf.render(installed.prefix).removeprefix(deploy_conf.HEADER)
    assert generated.read_text() == expected


def test_the_guides_supervisorctl_commands(installed: Installed) -> None:
    # Each role is STARTING for its startsecs (3 s) before supervisord calls it RUNNING.
    def all_running() -> bool:
        lines = installed.ctl("status").stdout.splitlines()
        return len(lines) == 10 and all(" RUNNING " in line for line in lines)

    wait_until(all_running, 30, "every program of the guide's tree RUNNING")
    status = installed.ctl("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert installed.ctl("stop", "policy:policy-1").stdout.strip() == "policy:policy-1: stopped"
    r = httpx.post(
        f"{installed.url}/tool/filesystem.list_allowed_directories",
        json={"params": {"n": 1}},
        headers={"Authorization": "Bearer agent:claude"},
        timeout=30,
    )
    assert r.status_code == 200, "the other policy worker took its agents"
    assert installed.ctl("start", "policy:policy-1").returncode == 0
    restarted = installed.ctl("restart", "gateway")
    assert restarted.stdout.splitlines() == ["gateway: stopped", "gateway: started"], (
        restarted.stdout
    )
    wait_until(installed.ready, 20, "ready after the gateway restart")
