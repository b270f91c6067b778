"""`cli_tools:` end to end: real binaries (git, ls, sh, python) behind their own upstream workers,
governed and traced, over REST, /mcp and the stdio MCP front-end (attached to the same mesh)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from pydantic import TypeAdapter

from tests.e2e.mesh import Mesh, running
from tests.support import wait_until

_RAW = TypeAdapter(dict[str, Any])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("work")
    repo = root / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit"], check=True)
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("# guide\n")
    (root / "sleepy").write_text("echo started\nsleep 60\n")  # sh runs this file
    (root / "big").write_text(f"import sys\nsys.stdout.write('x' * {5 << 20})\n")
    return root


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, work: Path) -> Iterator[Mesh]:
    config = {
        "trace_file": "traces.jsonl",
        "cli_tools": [
            # fine-tuned: declared commands, any other subcommand falls to default_action
            {
                "name": "git",
                "bin": "git",
                "working_dir": str(work / "repo"),
                "default_action": "allow",
                "workers": 2,
                "env": {"GIT_PAGER": "cat"},
                "commands": {
                    "status": None,
                    "log": {"allowed_args": ["--oneline", "-n"], "timeout": "10s"},
                },
            },
            # strict: only `docs` exists
            {
                "name": "files",
                "bin": "ls",
                "strict": True,
                "working_dir": str(work),
                "commands": {"docs": {}},
            },
            {
                "name": "slow",
                "bin": "sh",
                "strict": True,
                "working_dir": str(work),
                "commands": {"sleepy": {"timeout": "1s"}},
            },
            {
                "name": "big",
                "bin": sys.executable,
                "strict": True,
                "working_dir": str(work),
                "commands": {"big": {}},
            },
        ],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["git.push"], "action": "deny"},
                    {
                        "tools": ["git.status", "git.log", "files.*", "slow.*", "big.*"],
                        "action": "allow",
                    },
                ],
            },
        ],
    }
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config), timeout=90) as m:
        yield m


def _ok(
    mesh: Mesh, tool: str, params: dict[str, Any] | None = None, agent: str = "claude"
) -> dict[str, Any]:
    r = mesh.call(tool, params, agent=agent)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _trace(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    traces = mesh.http.get("/traces", params={"limit": 200}).json()
    return next(t for t in traces if t["trace_id"] == trace_id)


def test_declared_commands_over_rest(mesh: Mesh) -> None:
    body = _ok(mesh, "git.log", {"args": ["--oneline"], "flags": {"n": 1}})
    assert body["policy"] == "allow"
    result = body["result"]  # the Go project's shape over REST
    assert set(result) == {"stdout", "stderr", "exit_code"}
    assert result["exit_code"] == 0 and result["stdout"].endswith("first commit\n")
    status = _ok(mesh, "git.status")["result"]
    assert "On branch main" in status["stdout"]
    trace = _trace(mesh, body["trace_id"])
    assert (trace["tool"], trace["exit_code"], trace["status_code"]) == ("git.log", 0, 200)
    assert trace["params"] == {"args": ["--oneline"], "flags": {"n": 1}}


def test_a_non_zero_exit_is_a_result_not_a_gateway_error(mesh: Mesh) -> None:
    body = _ok(mesh, "git.show", {"args": ["no-such-ref"]})  # undeclared: default_action allow
    assert body["result"]["exit_code"] == 128 and "no-such-ref" in body["result"]["stderr"]
    trace = _trace(mesh, body["trace_id"])
    assert (trace["policy_rule"], trace["exit_code"]) == ("default_action:git", 128)


def test_refused_arguments_never_run(mesh: Mesh) -> None:
    for params, why in (
        ({"args": ["--format=%H"]}, "flag '--format=%H' is not allowed here"),
        ({"args": ["-n", "1", "--", "-rf"]}, "flag '--' is not allowed"),
        ({"args": ["HEAD; touch pwned"]}, "holds ';'"),
        ({"flags": {"n": "$(id)"}}, "holds '$('"),
    ):
        r = mesh.call("git.log", params)
        assert r.status_code == 400, r.text
        assert why in r.json()["error"] and r.json()["error"].startswith("git.log: ")


def test_subcommands_policy_and_dispatch(mesh: Mesh) -> None:
    head = _ok(mesh, "git.rev-parse", {"args": ["HEAD"]})
    assert len(head["result"]["stdout"].strip()) == 40
    # the Go project's catch-all: decided and traced as the real subcommand
    via = _ok(mesh, "git.__dispatch", {"command": "rev-parse", "args": ["HEAD"]})
    assert via["result"]["stdout"] == head["result"]["stdout"]
    assert _trace(mesh, via["trace_id"])["tool"] == "git.rev-parse"
    denied = mesh.call("git.__dispatch", {"command": "push", "args": ["origin"]})
    assert denied.status_code == 403 and "denied by policy claude" in denied.json()["error"]
    assert mesh.call("git.push").status_code == 403
    # another agent: no policy of its own, so default_action (allow) for git
    assert _ok(mesh, "git.status", agent="bob")["policy"] == "allow"
    # ... and deny (the default default_action) for files
    assert mesh.call("files.docs", agent="bob").status_code == 403
    bad = mesh.call("git.__dispatch", {"command": "-c x"})
    assert bad.status_code == 404 and "needs a 'command'" in bad.json()["error"]


def test_strict_tools_have_only_their_commands(mesh: Mesh) -> None:
    assert _ok(mesh, "files.docs")["result"]["stdout"] == "guide.md\n"
    r = mesh.call("files.etc")
    assert r.status_code == 404 and "files has no tool 'etc'" in r.json()["error"]


def test_timeout_and_output_cap(mesh: Mesh) -> None:
    started = time.monotonic()
    slow = _ok(mesh, "slow.sleepy")["result"]
    assert time.monotonic() - started < 5
    assert slow["timed_out"] is True and slow["exit_code"] == -9 and slow["stdout"] == "started\n"
    big = _ok(mesh, "big.big")["result"]
    assert len(big["stdout"]) == 1 << 20 and big["truncated"] == {"stdout": 5 << 20}


def test_listed_as_tools_and_servers(mesh: Mesh) -> None:
    tools = {t["name"]: t for t in mesh.http.get("/tools").json()}
    assert {"git.status", "git.log", "git.__dispatch", "files.docs", "slow.sleepy"} <= set(tools)
    assert "files.__dispatch" not in tools  # strict
    assert tools["git.log"]["source"] == "cli" and "mcp_server" not in tools["git.log"]
    assert tools["git.log"]["inputSchema"]["properties"].keys() == {"args", "flags"}
    servers = {s["name"]: s for s in mesh.http.get("/mcp-servers").json()}
    git = servers["git"]
    assert (git["transport"], git["status"], git["configured_workers"]) == ("cli", "ready", 2)
    wait_until(
        lambda: len(mesh.http.get("/mcp-servers").json()[0]["workers"]) == 2, 10, "two git workers"
    )


async def test_over_mcp_http(mesh: Mesh) -> None:
    async with mesh.mcp() as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert {"git.status", "git.log", "git.__dispatch", "mesh.catalog"} <= set(listed)
        result = _RAW.validate_python(
            (await client.call_tool("git.log", {"args": ["--oneline"]})).model_dump(
                by_alias=True, exclude_none=True
            )
        )
        assert result["isError"] is False and result["structuredContent"]["stdout"].endswith(
            "first commit\n"
        )
        assert result["content"][0]["text"].endswith("first commit\n")
        failed = await client.call_tool("git.show", {"args": ["nope"]})
        assert failed.is_error and failed.structured_content["exit_code"] == 128
        assert "exited with code 128" in failed.content[0].text  # type: ignore[union-attr]
        refused = await client.call_tool("git.log", {"args": ["--exec=x"]})
        assert refused.is_error and "not allowed" in refused.content[0].text  # type: ignore[union-attr]
        catalog = await client.call_tool("mesh.catalog", {})
        tools = {t["tool"]: t["action"] for t in catalog.structured_content["servers"]["git"]}
        assert tools["git.status"] == "allow"


async def test_over_stdio_mcp(mesh: Mesh) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        env=mesh.env,
        cwd=str(mesh.tmp),
        args=[
            "-m",
            "agent_mesh",
            "--mcp",
            "--config",
            str(mesh.config_path),
            "--mcp-agent",
            "claude",
        ],
    )
    async with Client(params, mode="legacy") as client:  # attaches to the running mesh
        result = await client.call_tool("git.status", {})
        assert not result.is_error and "On branch main" in result.structured_content["stdout"]
        denied = await client.call_tool("git.push", {})
        assert denied.is_error and "denied by policy claude" in denied.content[0].text  # type: ignore[union-attr]


# The Go project's examples/cli-tools/config.yaml, as written for it (port and trace file aside).
GO_EXAMPLE = """
cli_tools:
  - name: gh
    bin: gh
    default_action: allow
  - name: terraform
    bin: terraform
    working_dir: /home/user/infra
    default_action: human_approval
    env:
      TF_IN_AUTOMATION: "1"
    commands:
      plan:
        timeout: 120s
      apply:
        allowed_args: ["-target"]
        timeout: 300s
      destroy:
        allowed_args: ["-target"]
        timeout: 300s
  - name: kubectl
    bin: kubectl
    strict: true
    commands:
      get:
        allowed_args: ["-n", "--namespace", "-o", "--output"]
      apply:
        allowed_args: ["-f", "-n", "--namespace"]
      delete:
        allowed_args: ["-n", "--namespace"]
policies:
  - name: cli-governance
    agent: "*"
    rules:
      - tools: ["terraform.destroy"]
        action: deny
      - tools: ["terraform.plan"]
        action: allow
      - tools: ["kubectl.delete*"]
        action: human_approval
      - tools: ["gh.*"]
        action: allow
"""


def test_the_go_projects_example_runs_unchanged(tmp_path: Path) -> None:
    import yaml

    m = Mesh(tmp_path, yaml.safe_load(GO_EXAMPLE)).start(timeout=90)
    try:
        tools = {t["name"] for t in m.http.get("/tools").json()}
        assert tools == {
            "gh.__dispatch",
            "terraform.plan",
            "terraform.apply",
            "terraform.destroy",
            "terraform.__dispatch",
            "kubectl.get",
            "kubectl.apply",
            "kubectl.delete",
        }
        assert m.call("terraform.destroy").status_code == 403
        assert m.call("kubectl.logs").status_code == 404  # strict: not a tool
        # No rule for kubectl.get: kubectl's default_action, deny (the policy decides first).
        denied = m.call("kubectl.get", {"args": ["pods"]})
        assert (denied.status_code, denied.json()["policy"]) == (403, "deny")
        refused = m.call("terraform.plan", {"args": ["-out=plan; rm -rf /"]})
        assert refused.status_code == 400 and "holds ';'" in refused.json()["error"]
        # Allowed, then each fails as this machine makes it fail: a result or one clear 502.
        no_params: dict[str, Any] = {}
        for tool, params in (("gh.pr.list", no_params), ("terraform.plan", no_params)):
            r = m.call(tool, params)
            assert r.json()["policy"] == "allow", r.text
            if r.status_code == 502:
                assert "cannot run" in r.json()["error"], r.text
            else:
                assert r.status_code == 200 and isinstance(r.json()["result"]["exit_code"], int), (
                    r.text
                )
        # No rule: terraform's default_action, human_approval; a human denies it.
        waiting: dict[str, Any] = {}

        def pending() -> bool:
            waiting.update(
                next(iter(m.http.get("/approvals", params={"status": "pending"}).json()), {})
            )
            return bool(waiting)

        import threading

        answer: list[Any] = []
        caller = threading.Thread(target=lambda: answer.append(m.call("terraform.init")))
        caller.start()
        wait_until(pending, 10, "terraform.init pending approval")
        assert (waiting["tool"], waiting["policy_rule"]) == (
            "terraform.init",
            "default_action:terraform",
        )
        assert m.http.post(f"/approvals/{waiting['id']}/deny", json={}).status_code == 200
        caller.join(10)
        assert answer[0].status_code == 403
        # A grant turns the default_action's human_approval into allow, as for any tool.
        grant = m.http.post(
            "/grants", json={"agent": "claude", "tools": "terraform.*", "duration": "5m"}
        )
        assert grant.status_code == 201, grant.text
        granted = m.call("terraform.init")  # runs now; /home/user/infra does not exist here
        assert granted.json()["policy"] == "allow", granted.text
        assert _trace(m, granted.json()["trace_id"])["policy_rule"] == f"grant:{grant.json()['id']}"
        assert (
            granted.status_code == 502 and "working_dir /home/user/infra" in granted.json()["error"]
        )
    finally:
        assert m.stop() == set()


def test_the_shipped_example(tmp_path: Path) -> None:
    import yaml

    repo = Path(__file__).parents[2]
    config = yaml.safe_load((repo / "examples" / "cli-tools.yaml").read_text())
    for tool in config["cli_tools"]:
        tool["working_dir"] = str(repo)
    m = Mesh(tmp_path, config).start(timeout=90)
    try:
        log = m.call("git.log", {"args": ["--oneline", "-n", "1"]})
        assert log.status_code == 200 and log.json()["result"]["exit_code"] == 0
        assert "compat.md" in m.call("repo.docs").json()["result"]["stdout"]
        assert m.call("git.push").status_code == 403
        assert m.call("git.log", {"args": ["--format=%H"]}).status_code == 400
    finally:
        assert m.stop() == set()


def test_a_killed_cli_worker_costs_nothing_but_itself(mesh: Mesh) -> None:
    import os
    import signal

    workers = [
        pid
        for pid, cmd in mesh.processes().items()
        if "agent_mesh run upstream" in cmd and "--server git" in cmd
    ]
    assert len(workers) == 3  # workers: 2, and the warm spare
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    for _ in range(20):  # every call is answered: by the other worker, then by the spare too
        r = mesh.call("git.status")
        assert r.status_code in (200, 502, 503), r.text
        if r.status_code != 200:  # only a call the killed worker held may fail, once
            assert time.monotonic() < deadline
    assert mesh.call("git.status").status_code == 200
    wait_until(
        lambda: len(mesh.http.get("/mcp-servers").json()[0]["workers"]) == 2,
        20,
        "two git workers again",
    )
