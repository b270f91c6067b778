"""Config files that load (compat.md §1): the spec's examples, defaults, extensions, the state
directory a config names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import Config, LoadedConfig
from tests.mesh_config.config_files import write

# The full example of compat.md §1, verbatim.
FULL_EXAMPLE = """\
port: 9090                      # HTTP port; default 9090
trace_file: traces.jsonl        # append-only JSONL trace log (optional)
otel_endpoint: stdout           # "stdout" | "http://host:4318" (OTLP/HTTP) | omitted
approval:
  timeout_seconds: 300          # default 300; on timeout the call is denied
  notify_url: http://...        # webhook POSTed when an approval becomes pending
supervisor:
  enabled: false                # true: hide approval.resolve / approval.pending, calls block
  expose_content: true          # false: redact large/content params in the approvals API
policy_dir: policies/           # optional; every *.yaml in it is one policy (relative to config)
mcp_servers:
  - name: filesystem            # tools become "filesystem.<tool>"
    transport: stdio            # stdio | sse  (we add: streamable_http / http)
    command: npx
    args: ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/projects"]
    env: {KEY: value}
  - name: remote
    transport: sse
    url: http://localhost:8080/sse
    headers: {Authorization: "Bearer ..."}
cli_tools:                      # governed command-line tools (no shell, ever)
  - name: git
    bin: git
    default_action: deny        # allow | deny | human_approval; default deny
    strict: false               # true: only declared commands exist
    working_dir: /repo
    env: {}
    commands:
      status: {}
      log: {allowed_args: ["--oneline", "-n"], timeout: 30s}
openapi:                        # import REST endpoints as tools
  - file: petstore.yaml         # or url: ...; exactly one of the two
    backend_url: http://localhost:8080
policies:
  - name: claude
    agent: "claude"             # exact id, glob ("support-*") or "*"
    rate_limit: {max_per_minute: 60, max_total: 1000}
    rules:
      - tools: ["filesystem.read_*", "filesystem.list_*"]
        action: allow
      - tools: ["payments.refund"]
        action: allow
        condition: {field: params.amount, operator: "<", value: 100}
      - tools: ["filesystem.write_file"]
        action: human_approval
      - tools: ["*"]
        action: deny
"""

SPEC_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "filesystem.yaml"


def test_full_spec_example_loads(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "config.yaml", FULL_EXAMPLE))
    c = loaded.config
    assert (c.port, c.host, c.otel_endpoint, c.policy_workers) == (9090, "127.0.0.1", "stdout", 1)
    assert c.approval.timeout_seconds == 300 and c.approval.notify_url == "http://..."
    assert (c.supervisor.enabled, c.supervisor.expose_content) == (False, True)
    fs, remote = c.mcp_servers
    assert (fs.name, fs.transport, fs.command) == ("filesystem", "stdio", "npx")
    assert fs.env == {"KEY": "value"}
    assert fs.args[-1] == "/home/me/projects" and (fs.workers, fs.timeout_seconds) == (1, 60.0)
    assert (remote.transport, remote.command) == ("sse", None)
    assert remote.url == "http://localhost:8080/sse"
    assert remote.headers == {"Authorization": "Bearer ..."}
    git = c.cli_tools[0]
    assert (git.bin, git.default_action, git.strict) == ("git", "deny", False)
    assert git.working_dir == "/repo"
    # no allowed_args: any flag (Go's nil list); no timeout: 30 s
    assert git.commands["status"].allowed_args is None and git.commands["status"].timeout is None
    assert git.commands["status"].timeout_seconds == 30.0
    assert git.commands["log"].allowed_args == ["--oneline", "-n"]
    assert git.commands["log"].timeout_seconds == 30.0
    assert (c.openapi[0].file, c.openapi[0].url) == (
        str(tmp_path.resolve() / "petstore.yaml"),
        None,
    )
    [claude] = c.policies
    assert claude.rate_limit is not None and claude.rate_limit.max_per_minute == 60
    assert [r.action for r in claude.rules] == ["allow", "allow", "human_approval", "deny"]
    cond = claude.rules[1].condition
    assert cond is not None
    assert (cond.field, cond.operator, cond.value) == ("params.amount", "<", 100)
    assert not any("not supported" in w for w in loaded.warnings)
    assert [(s.name, s.kind, s.prefix) for s in c.sources()] == [
        ("filesystem", "mcp", "filesystem."),
        ("remote", "mcp", "remote."),
        ("git", "cli", "git."),
        ("openapi-0", "openapi", ""),
    ]
    # policies/ does not exist next to this config: a warning, not an error.
    assert any("policy_dir" in w and "does not exist" in w for w in loaded.warnings)
    assert loaded.trace_path == tmp_path.resolve() / "traces.jsonl"
    assert loaded.policy_dir_path == tmp_path.resolve() / "policies"
    assert c.server("remote") is remote and c.server("nope") is None


def test_spec_filesystem_example_loads() -> None:
    path = SPEC_EXAMPLE
    loaded = load_config(path)
    assert loaded.warnings == []
    assert [p.name for p in loaded.config.policies] == ["claude", "default"]
    assert loaded.config.policies[0].rules[2].tools == ["filesystem.move_file"]
    assert loaded.config.server("filesystem") is not None
    assert loaded.path == path.resolve()
    assert loaded.trace_path == path.resolve().parent / "traces.jsonl"


def test_default_action_decides_what_no_rule_does(tmp_path: Path) -> None:
    from policy.engine import PolicyEngine
    from policy.model import Decision

    loaded = load_config(
        write(
            tmp_path,
            "c.yaml",
            """\
        cli_tools:
          - {name: tf, bin: terraform, default_action: human_approval}
          - {name: gh, bin: gh, default_action: allow}
          - {name: kc, bin: kubectl}
        policies:
          - name: claude
            agent: claude
            rules:
              - {tools: [tf.destroy], action: deny}
        """,
        )
    )
    names = [p.name for p in loaded.config.policies]
    assert names == ["claude", "default_action:tf", "default_action:gh"]  # deny: nothing to add
    engine = PolicyEngine(loaded.config.policies)

    def decide(agent: str, tool: str) -> Decision:
        return engine.evaluate(agent, tool, {}, 0.0)

    assert (decide("claude", "tf.destroy").action, decide("claude", "tf.destroy").rule) == (
        "deny",
        "claude",
    )
    assert (decide("claude", "tf.plan").action, decide("claude", "tf.plan").rule) == (
        "human_approval",
        "default_action:tf",
    )
    assert decide("bob", "gh.pr.list").action == "allow"
    assert (decide("bob", "kc.get").action, decide("bob", "kc.get").rule) == ("deny", "default")


def test_empty_mapping_gives_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "c.yaml", "{}\n"))
    assert loaded.config == Config()
    c = loaded.config
    assert (c.port, c.host, c.policy_workers) == (9090, "127.0.0.1", 1)
    assert c.approval.timeout_seconds == 300
    assert (c.trace_file, c.otel_endpoint, c.policy_dir, c.policies) == (None, None, None, [])
    assert loaded.warnings == [] and loaded.trace_path is None and loaded.policy_dir_path is None


def test_extensions_and_aliases(tmp_path: Path) -> None:
    loaded = load_config(
        write(
            tmp_path,
            "sub/c.yaml",
            """\
        host: 0.0.0.0
        policy_workers: 4
        otel_endpoint: https://collector:4318
        trace_file: /var/log/mesh.jsonl
        mcp_servers:
          - name: web-api_2
            transport: http
            url: https://example.com/mcp
            workers: 3
            timeout_seconds: 2.5
          - name: local
            command: ./server
            cwd: ../tools
          - name: abs
            command: srv
            cwd: /opt/srv
        cli_tools:
          - name: ls
            bin: ls
            strict: true
            commands:
              run:
        """,
        )
    )
    c = loaded.config
    assert (c.host, c.policy_workers, c.otel_endpoint) == ("0.0.0.0", 4, "https://collector:4318")
    web = c.server("web-api_2")
    assert web is not None
    assert (web.transport, web.workers, web.timeout_seconds) == ("streamable_http", 3, 2.5)
    local = c.server("local")
    assert local is not None and local.transport == "stdio"
    assert local.cwd == str(tmp_path.resolve() / "tools")
    assert c.mcp_servers[2].cwd == "/opt/srv"
    assert loaded.trace_path == Path("/var/log/mesh.jsonl")
    assert c.cli_tools[0].commands["run"].allowed_args is None  # `run:` (null) is `run: {}`
    assert c.cli_tools[0].working_dir == str(tmp_path.resolve() / "sub")  # the config's directory


def test_bus_section_and_remote_only_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaded = load_config(
        write(
            tmp_path,
            "sub/c.yaml",
            """\
        bus: {listen: "tcp://0.0.0.0:7000", keys: ../keys}
        mcp_servers:
          - {name: far, command: srv, workers: 0}
        """,
        )
    )
    assert (loaded.config.bus.listen, loaded.bus_keys_path) == (
        "tcp://0.0.0.0:7000",
        tmp_path.resolve() / "keys",
    )
    assert loaded.config.mcp_servers[0].workers == 0  # served by workers on other hosts only
    home = load_config(write(tmp_path, "h.yaml", "bus: {listen: 'tcp://[::1]:7000', keys: ~/k}\n"))
    assert home.bus_keys_path == (tmp_path / "home" / "k").resolve()
    # keys without listen: for a listen address given by flag or environment
    assert load_config(write(tmp_path, "k.yaml", "bus: {keys: /k}\n")).config.bus.listen is None
    assert load_config(write(tmp_path, "n.yaml", "bus:\n")).bus_keys_path is None


def test_loop_detection_settings(tmp_path: Path) -> None:
    loaded = load_config(
        write(
            tmp_path,
            "c.yaml",
            """\
        policies:
          - {name: a, agent: a, rate_limit: {}}
          - {name: b, agent: b, rate_limit: {max_per_minute: 5, loop_threshold: 0}}
          - {name: c, agent: c, rate_limit: {loop_threshold: 10, loop_window: 1m30s}}
          - {name: d, agent: d, rate_limit: {loop_window: 2.5}}
          - {name: e, agent: e}
        """,
        )
    )
    limits = [p.rate_limit for p in loaded.config.policies]
    assert [(r.loop_threshold, r.loop_window) for r in limits if r is not None] == [
        (3, 10.0),
        (0, 10.0),
        (10, 90.0),
        (3, 2.5),
    ]
    assert limits[-1] is None  # no rate_limit: no limits, no loop detection


def test_null_sections_mean_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "c.yaml", "approval:\npolicies:\nmcp_servers:\n"))
    assert loaded.config == Config()


def test_config_hash_and_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "c.yaml", "port: 9091\n")
    loaded = load_config(path)
    expected = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    assert loaded.config_hash == expected and len(expected) == 12
    monkeypatch.setenv("AGENT_MESH_HOME", str(tmp_path / "home"))
    assert loaded.state_dir() == tmp_path / "home" / expected
    monkeypatch.delenv("AGENT_MESH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert loaded.state_dir() == tmp_path / "user" / ".agent-mesh" / expected
    assert not (tmp_path / "user").exists()  # not created
    # The same file reached through another relative spelling has the same hash.
    monkeypatch.chdir(tmp_path)
    assert load_config("./c.yaml").config_hash == expected
    other = load_config(write(tmp_path, "d.yaml", "port: 9091\n"))
    assert other.config_hash != expected


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "c.yaml", "port: 1\n"))
    assert isinstance(loaded, LoadedConfig)
    with pytest.raises(AttributeError):
        loaded.path = tmp_path  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        loaded.config.port = 2


def test_live_policies_example_loads_and_decides() -> None:
    from policy.engine import PolicyEngine

    example = Path(__file__).resolve().parents[2] / "examples" / "live-policies" / "mesh.yaml"
    engine = PolicyEngine(load_config(example).config.policies)

    def action(tool: str, **params: object) -> str:
        return engine.evaluate("claude", f"filesystem.{tool}", params, now=0).action

    assert action("read_text_file", path="/tmp/mesh-demo/notes.txt") == "allow"
    assert action("read_multiple_files", paths=["/tmp/mesh-demo/a", "/tmp/mesh-demo/b"]) == "allow"
    assert action("read_multiple_files", paths=["/tmp/mesh-demo/a", "/etc/passwd"]) == "deny"
    assert action("read_text_file", path="/tmp/mesh-demo/../../etc/passwd") == "deny"
    assert action("read_text_file", path="/tmp/mesh-demo-evil/x") == "deny"
    assert action("read_text_file", path="/tmp/mesh-demo/.env") == "deny"
    assert action("write_file", path="/tmp/mesh-demo/a", content="x") == "human_approval"
    assert action("write_file", path="/etc/a", content="x") == "deny"
    assert (
        engine.evaluate(
            "bob", "filesystem.read_text_file", {"path": "/tmp/mesh-demo/a"}, now=0
        ).action
        == "deny"
    )
