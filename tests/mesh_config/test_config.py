"""Config loading and validation (compat.md §1)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from mesh_config.file import load_config
from mesh_config.model import Config, ConfigError, LoadedConfig
from policy.durations import parse_duration

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


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path, text: str, name: str = "mesh.yaml") -> ConfigError:
    path = write(directory, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == path
    assert info.value.problems
    return info.value


# --- files that load -----------------------------------------------------------------------


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


def test_environment_variables_are_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TEST_TOKEN", "s3cret-token")
    monkeypatch.setenv("MESH_TEST_DIR", "/srv/demo")
    monkeypatch.setenv("MESH_TEST_EMPTY", "")
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    c = load_config(
        write(
            tmp_path,
            "c.yaml",
            """\
        auth: {operator_token: "${MESH_TEST_TOKEN}"}
        mcp_servers:
          - name: fs
            command: "${MESH_TEST_UNSET:-npx}"
            args:
              - "--root=${MESH_TEST_DIR}/files"
              - "$${NOT_EXPANDED}"
              - "${MESH_TEST_EMPTY:-fallback}"
            env: {TOKEN: "Bearer ${MESH_TEST_TOKEN}"}
        """,
        )
    ).config
    assert c.auth.operator_token == "s3cret-token"
    fs = c.mcp_servers[0]
    assert fs.command == "npx"
    assert fs.args == ["--root=/srv/demo/files", "${NOT_EXPANDED}", "fallback"]
    assert fs.env == {"TOKEN": "Bearer s3cret-token"}


def test_an_empty_operator_token_means_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    loaded = load_config(
        write(tmp_path, "c.yaml", "auth: {operator_token: '${MESH_TEST_UNSET:-}'}\n")
    )
    assert loaded.config.auth.operator_token is None


def test_unset_variable_names_variable_field_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    monkeypatch.setenv("MESH_TEST_SHORT", "short")
    error = load_error(
        tmp_path,
        """\
        port: 9090
        auth:
          operator_token: ${MESH_TEST_UNSET}
        mcp_servers:
          - {name: fs, command: x, args: ["${MESH_TEST_UNSET}", "${oops"]}
        """,
    )
    assert error.problems == [
        (
            f"{tmp_path / 'mesh.yaml'}: auth.operator_token: environment variable MESH_TEST_UNSET "
            "is "
            "not set "
            "(export it, or write ${MESH_TEST_UNSET:-default} for a default) (line 3)"
        ),
        (
            f"{tmp_path / 'mesh.yaml'}: mcp_servers[0] (name=fs).args[0]: environment variable "
            "MESH_TEST_UNSET is not set (export it, or write ${MESH_TEST_UNSET:-default} for a "
            "default) (line 5)"
        ),
        (
            f"{tmp_path / 'mesh.yaml'}: mcp_servers[0] (name=fs).args[1]: invalid variable "
            "reference "
            "at "
            "'${oops' (write ${NAME}, ${NAME:-default}, or $${ for a literal ${) (line 5)"
        ),
    ]
    # a token too short is reported without echoing it
    short = load_error(
        tmp_path, "auth: {operator_token: '${MESH_TEST_SHORT}'}\n", name="short.yaml"
    )
    assert "auth.operator_token: String should have at least 8 characters" in str(short)
    assert "short'" not in str(short)


def test_policy_dir_files_are_expanded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TEST_AGENT", "claude")
    write(tmp_path, "policies/p.yaml", "name: p\nagent: ${MESH_TEST_AGENT}\n")
    loaded = load_config(write(tmp_path, "c.yaml", "policy_dir: policies\n"))
    assert loaded.config.policies[0].agent == "claude"
    write(tmp_path, "policies/q.yaml", "name: q\nagent: ${MESH_TEST_UNSET}\n")
    monkeypatch.delenv("MESH_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yaml")
    assert "policies/q.yaml: agent: environment variable MESH_TEST_UNSET is not set" in str(
        info.value
    )


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


# --- errors: file, field path, problem -----------------------------------------------------

ACTION_PROBLEM = "Input should be 'allow', 'deny' or 'human_approval'"

ERROR_CASES = [
    pytest.param(
        """\
        policies:
          - name: ok
            agent: a
            rules: [{tools: ["*"], action: allow}]
          - name: claude
            agent: claude
            rules:
              - tools: ["*"]
                action: alow
        """,
        [f"policies[1] (name=claude).rules[0].action: {ACTION_PROBLEM}", "got 'alow'", "(line 9)"],
        id="unknown-action",
    ),
    pytest.param(
        """\
        policies:
          - {name: claude, agent: a}
          - {name: other, agent: b}
          - {name: claude, agent: c}
        """,
        ["policies[2] (name=claude): duplicate policy name 'claude' (also policies[0])"],
        id="duplicate-policy-names",
    ),
    pytest.param(
        """\
        openapi:
          - file: petstore.yaml
            url: http://example.com/openapi.json
        """,
        ["openapi[0]: exactly one of 'file' or 'url' is required; both were given"],
        id="openapi-both",
    ),
    pytest.param(
        """\
        openapi:
          - backend_url: http://localhost:8080
        """,
        ["openapi[0]: exactly one of 'file' or 'url' is required; neither was given"],
        id="openapi-neither",
    ),
    pytest.param(
        "cli_tools:\n  - bin: git\n",
        ["cli_tools[0].name: Field required"],
        id="cli-tool-without-name",
    ),
    pytest.param(
        "cli_tools:\n  - name: git\n",
        ["cli_tools[0] (name=git).bin: Field required"],
        id="cli-tool-without-bin",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git, strict: true}\n",
        ["cli_tools[0] (name=git): commands: strict: true needs at least one command"],
        id="strict-without-commands",
    ),
    pytest.param(
        """\
        cli_tools:
          - name: git
            bin: git
            commands:
              log: {timeout: 30x}
        """,
        ["cli_tools[0] (name=git).commands.log.timeout: invalid duration '30x': unknown unit 'x'"],
        id="bad-timeout",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git, commands: {log: {timeout: 0s}}}\n",
        ["cli_tools[0] (name=git).commands.log.timeout: must be a positive duration"],
        id="zero-timeout",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git, default_action: maybe}\n",
        [f"cli_tools[0] (name=git).default_action: {ACTION_PROBLEM}"],
        id="cli-default-action",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git}\n  - {name: git, bin: git2}\n",
        ["cli_tools[1] (name=git): duplicate cli tool name 'git' (also cli_tools[0])"],
        id="duplicate-cli-tools",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: fs, command: srv}\ncli_tools:\n  - {name: fs, bin: ls}\n",
        ["cli_tools[0] (name=fs): duplicate source name 'fs' (also mcp_servers[0])"],
        id="cli-tool-named-as-a-server",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git}\nopenapi:\n  - {file: p.yaml, name: git}\n",
        ["openapi[0] (name=git): duplicate source name 'git' (also cli_tools[0])"],
        id="openapi-named-as-a-cli-tool",
    ),
    pytest.param(
        "cli_tools:\n  - {name: git, bin: git, commands: {'-rf': {}}}\n",
        ["cli_tools[0] (name=git).commands: command name '-rf': must be words of letters"],
        id="cli-command-name",
    ),
    pytest.param(
        "openapi:\n  - {url: 'file:///etc/spec.json'}\n",
        ["openapi[0]: url: must be an http:// or https:// URL, got 'file:///etc/spec.json'"],
        id="openapi-url-scheme",
    ),
    pytest.param(
        "mcp_servers:\n  - name: fs\n    transport: stdio\n",
        ["mcp_servers[0] (name=fs): command: required for transport 'stdio'"],
        id="stdio-without-command",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: fs, command: npx, url: http://x/sse}\n",
        ["mcp_servers[0] (name=fs): url: not allowed for transport 'stdio'"],
        id="stdio-with-url",
    ),
    pytest.param(
        "mcp_servers:\n  - name: remote\n    transport: sse\n",
        ["mcp_servers[0] (name=remote): url: required for transport 'sse'"],
        id="sse-without-url",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: r, transport: streamable_http, url: http://x/mcp, command: y}\n",
        ["mcp_servers[0] (name=r): command: not allowed for transport 'streamable_http'"],
        id="http-with-command",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: remote, transport: sse, url: ftp://host/sse}\n",
        ["mcp_servers[0] (name=remote).url: must be an http:// or https:// URL"],
        id="sse-url-not-http",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: remote, transport: websocket, url: http://x}\n",
        ["mcp_servers[0] (name=remote).transport: Input should be 'stdio', 'sse'"],
        id="unknown-transport",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: file.system, command: npx}\n",
        ["mcp_servers[0] (name=file.system).name: must contain only letters, digits, '_' and '-'"],
        id="server-name-with-dot",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: a, command: x}\n  - {name: a, command: y}\n",
        ["mcp_servers[1] (name=a): duplicate server name 'a' (also mcp_servers[0])"],
        id="duplicate-servers",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: fs, command: npx, workers: -1}\n",
        ["mcp_servers[0] (name=fs).workers: Input should be greater than or equal to 0"],
        id="workers-negative",
    ),
    pytest.param(
        "bus: {listen: '0.0.0.0:7000', keys: /k}\n",
        [
            (
                "bus.listen: must be tcp://host:port, e.g. tcp://0.0.0.0:7000, got '0.0.0.0:7000' "
                "(line 1)"
            )
        ],
        id="bus-listen-without-scheme",
    ),
    pytest.param(
        "bus: {listen: 'tcp://0.0.0.0:70000', keys: /k}\n",
        ["bus.listen: must be tcp://host:port", "got 'tcp://0.0.0.0:70000'"],
        id="bus-listen-bad-port",
    ),
    pytest.param(
        "port: 9090\nbus:\n  listen: tcp://0.0.0.0:7000\n",
        [
            (
                "bus: keys: required when listen is set (the CURVE keys directory made by "
                "`agent-mesh "
                "keys`"
            ),
            "(line 2)",
        ],
        id="bus-listen-without-keys",
    ),
    pytest.param(
        "bus: {lisen: tcp://0.0.0.0:7000}\n",
        ["bus.lisen: unknown key"],
        id="bus-unknown-key",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: fs, command: npx, timeout_seconds: 0}\n",
        ["mcp_servers[0] (name=fs).timeout_seconds: Input should be greater than 0"],
        id="server-timeout-0",
    ),
    pytest.param(
        "port: 9090\nlisten: 1\n",
        ["listen: unknown key", "(line 2)"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "bus:\n  lisen: tcp://0.0.0.0:7000\n",
        ["bus.lisen: unknown key; did you mean 'listen'?"],
        id="typo-suggestion-bus",
    ),
    pytest.param(
        "trace_fle: t.jsonl\n",
        ["trace_fle: unknown key; did you mean 'trace_file'?"],
        id="typo-suggestion",
    ),
    pytest.param(
        "mcp_servers:\n  - {name: fs, command: npx, comand: x}\n",
        ["mcp_servers[0] (name=fs).comand: unknown key; did you mean 'command'?"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "port: 70000\n",
        ["port: Input should be less than or equal to 65535", "got 70000"],
        id="port-too-high",
    ),
    pytest.param("port: 0\n", ["port: Input should be greater than or equal to 1"], id="port-0"),
    pytest.param(
        "policy_workers: 65\n",
        ["policy_workers: Input should be less than or equal to 64"],
        id="policy-workers-65",
    ),
    pytest.param(
        "gateway: {processes: 0}\n",
        ["gateway.processes: must be a number of processes from 1 to 64 or auto", "not 0"],
        id="gateway-processes-0",
    ),
    pytest.param(
        "gateway: {processes: all}\n",
        ["gateway.processes: must be a number of processes from 1 to 64 or auto", "not 'all'"],
        id="gateway-processes-word",
    ),
    pytest.param(
        "otel_endpoint: grpc://collector:4317\n",
        ["otel_endpoint: must be 'stdout' or an http:// or https:// URL"],
        id="otel-endpoint",
    ),
    pytest.param(
        "approval: {timeout_seconds: 0}\n",
        ["approval.timeout_seconds: Input should be greater than 0"],
        id="approval-timeout-0",
    ),
    pytest.param(
        "supervisor: {enabled: maybe}\n",
        ["supervisor.enabled: Input should be a valid boolean"],
        id="supervisor-enabled",
    ),
    pytest.param(
        "policies:\n  - {name: p, agent: a, rules: [{tools: [x], action: allow, "
        "condition: {field: params.a, operator: '=~', value: 1}}]}\n",
        ["policies[0] (name=p).rules[0].condition.operator: Input should be '<'"],
        id="bad-operator",
    ),
    pytest.param(
        "policies:\n  - {name: p, agent: a, rate_limit: {max_per_minute: 0}}\n",
        ["policies[0] (name=p).rate_limit.max_per_minute: Input should be greater than or equal"],
        id="rate-limit-0",
    ),
    pytest.param(
        "policies:\n  - {name: p, agent: a, rate_limit: {loop_threshold: -1}}\n",
        [
            (
                "policies[0] (name=p).rate_limit.loop_threshold: Input should be greater than or "
                "equal "
                "to 0, got -1 (line 2)"
            )
        ],
        id="loop-threshold-negative",
    ),
    pytest.param(
        "policies:\n  - name: p\n    agent: a\n    rate_limit:\n      loop_window: 10x\n",
        [
            (
                "mesh.yaml: policies[0] (name=p).rate_limit.loop_window: invalid duration '10x': "
                "unknown unit 'x' after '10' (use ns, us, ms, s, m or h) (line 5)"
            )
        ],
        id="loop-window-bad-unit",
    ),
    pytest.param(
        "policies:\n  - {name: p, agent: a, rate_limit: {loop_window: 0s}}\n",
        ["policies[0] (name=p).rate_limit.loop_window: Input should be greater than 0"],
        id="loop-window-0",
    ),
    pytest.param(
        "policies:\n  - {name: p, agent: a, rate_limit: {loop_treshold: 5}}\n",
        [
            (
                "policies[0] (name=p).rate_limit.loop_treshold: unknown key; did you mean "
                "'loop_threshold'?"
            )
        ],
        id="loop-threshold-typo",
    ),
    pytest.param(
        "policies:\n  - {agent: a}\n",
        ["policies[0].name: Field required"],
        id="policy-without-name",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_validation_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    error = load_error(tmp_path, text)
    message = str(error)
    for problem in error.problems:
        assert problem.startswith(f"{tmp_path / 'mesh.yaml'}: ")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_all_problems_in_one_error(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        """\
        port: 0
        bogus: true
        mcp_servers:
          - {name: a.b, command: x}
        policies:
          - {name: p, agent: a, rules: [{tools: ["*"], action: nope}]}
        """,
    )
    assert len(error.problems) == 4
    message = str(error)
    assert message.startswith(f"4 problems in config {tmp_path / 'mesh.yaml'}:")
    for fragment in (
        "port:",
        "bogus: unknown key",
        "mcp_servers[0] (name=a.b).name:",
        "policies[0] (name=p).rules[0].action:",
    ):
        assert fragment in message


def test_env_and_header_values_are_not_echoed(tmp_path: Path) -> None:
    error = load_error(tmp_path, "mcp_servers:\n  - {name: a, command: x, env: {TOKEN: 123456}}\n")
    assert "mcp_servers[0] (name=a).env.TOKEN: Input should be a valid string" in str(error)
    assert "123456" not in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "port: 9090\nmcp_servers:\n  - name: [x\n",
            "invalid YAML: line 4, column 1: expected ',' or ']'",
            id="unclosed",
        ),
        pytest.param(
            "port: 9090\npolicies: a: b\n",
            "invalid YAML: line 2, column 12: mapping values are not allowed here",
            id="mapping-in-scalar",
        ),
        pytest.param("port: 1\n\tmcp_servers: []\n", "invalid YAML: line 2, column 1:", id="tab"),
        pytest.param("port: 1\n---\nport: 2\n", "invalid YAML: line 2, column 1:", id="two-docs"),
        pytest.param(
            "x: !!python/object:os.system y\n", "invalid YAML: line 1, column 4:", id="unsafe-tag"
        ),
        pytest.param(
            "port: 1\npolicies: []\nport: 2\n",
            "line 3: duplicate key 'port' (first at line 1)",
            id="duplicate-key",
        ),
        pytest.param("", "the top level must be a mapping; the file is empty", id="empty"),
        pytest.param("# only a comment\n", "the file is empty", id="only-comment"),
        pytest.param("- port: 1\n", "the top level must be a mapping; got list", id="list"),
        pytest.param("9090\n", "the top level must be a mapping; got int", id="scalar"),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: str) -> None:
    error = load_error(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'mesh.yaml'}: ")
    assert expected in str(error)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: file not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.file == tmp_path / "nope.yaml"


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


# --- policy_dir ----------------------------------------------------------------------------

POLICY = """\
name: {name}
agent: "{agent}"
rules:
  - tools: ["*"]
    action: {action}
"""


def test_missing_policy_dir_is_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "c.yaml", "policy_dir: nowhere/\n"))
    assert loaded.config.policies == []
    assert len(loaded.warnings) == 1
    assert "policy_dir" in loaded.warnings[0] and "nowhere" in loaded.warnings[0]
    assert "does not exist" in loaded.warnings[0]


def test_policy_dir_files_load_in_name_order_after_inline(tmp_path: Path) -> None:
    write(tmp_path, "pol/b_second.yaml", POLICY.format(name="second", agent="b", action="deny"))
    write(tmp_path, "pol/a_first.yml", POLICY.format(name="first", agent="a", action="allow"))
    write(tmp_path, "pol/README.md", "not a policy")
    write(tmp_path, "pol/.hidden.yaml", "garbage: [")
    path = write(
        tmp_path,
        "c.yaml",
        """\
        policy_dir: pol
        policies:
          - {name: inline, agent: "*"}
        """,
    )
    loaded = load_config(path)
    assert [p.name for p in loaded.config.policies] == ["inline", "first", "second"]
    assert loaded.config.policies[1].rules[0].action == "allow"
    assert loaded.warnings == []
    assert loaded.policy_dir_path == tmp_path.resolve() / "pol"


def test_policy_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "etc/policies/p.yaml", POLICY.format(name="p", agent="a", action="allow"))
    write(tmp_path, "etc/c.yaml", "policy_dir: policies/\n")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in load_config("etc/c.yaml").config.policies] == ["p"]


def test_error_in_policy_dir_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "pol/a.yaml", POLICY.format(name="a", agent="x", action="allow"))
    write(tmp_path, "pol/b.yaml", POLICY.format(name="b", agent="x", action="sometimes"))
    write(tmp_path, "pol/c.yaml", "name: c\nagent: x\nrules: [\n")
    path = write(tmp_path, "c.yaml", "policy_dir: pol\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert len(problems) == 2
    b_file, c_file = tmp_path / "pol" / "b.yaml", tmp_path / "pol" / "c.yaml"
    assert problems[0].startswith(f"{b_file}: rules[0].action: {ACTION_PROBLEM}")
    assert "(line 5)" in problems[0]
    assert problems[1].startswith(f"{c_file}: invalid YAML: line 4")


def test_policy_dir_file_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "pol/a.yaml", "- name: a\n")
    write(tmp_path, "pol/b.yaml", "name: b\nagent: x\ncolor: red\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "c.yaml", "policy_dir: pol\n"))
    message = str(info.value)
    assert f"{tmp_path / 'pol' / 'a.yaml'}: the top level must be a mapping; got list" in message
    assert f"{tmp_path / 'pol' / 'b.yaml'}: color: unknown key" in message


def test_duplicate_policy_names_across_inline_and_policy_dir(tmp_path: Path) -> None:
    write(tmp_path, "pol/one.yaml", POLICY.format(name="claude", agent="c", action="allow"))
    write(tmp_path, "pol/two.yaml", POLICY.format(name="other", agent="o", action="allow"))
    write(tmp_path, "pol/zzz.yaml", POLICY.format(name="other", agent="p", action="deny"))
    path = write(tmp_path, "c.yaml", "policy_dir: pol\npolicies:\n  - {name: claude, agent: x}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    one, two, zzz = (tmp_path / "pol" / n for n in ("one.yaml", "two.yaml", "zzz.yaml"))
    assert info.value.problems == [
        f"{one}: name: duplicate policy name 'claude' (also {path}: policies[0])",
        f"{zzz}: name: duplicate policy name 'other' (also {two})",
    ]


def test_policy_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "pol", "not a dir")
    with pytest.raises(ConfigError, match="policy_dir: cannot list"):
        load_config(write(tmp_path, "c.yaml", "policy_dir: pol\n"))


# --- parse_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("30m", 1800.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1m0.5s", 60.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("0", 0.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5s", "negative duration '-5s'"),
        ("-0", "negative duration"),
        ("+5s", "expected a number"),
        ("30", "missing unit after '30'"),
        ("1h30", "missing unit after '30'"),
        ("30x", "unknown unit 'x'"),
        ("5d", "unknown unit 'd'"),
        ("s", "expected a number"),
        ("abc", "expected a number"),
        ("1h 30m", "expected a number"),
        ("1..5s", "unknown unit '.5s'"),
        ("30sec", "expected a number at 'ec'"),
        ("inf", "expected a number"),
        ("1" + "0" * 400 + "h", "too large"),
    ],
)
def test_parse_duration_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(text)
    assert problem in str(info.value)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(30)  # type: ignore[arg-type]


def test_condition_v2_errors_name_policy_rule_and_part(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        """\
        policies:
          - name: dev
            agent: claude
            rules:
              - tools: [fs.*]
                action: allow
                condition:
                  all:
                    - {field: params.path, operator: within, value: relative/x}
                    - not: {field: params.path, operator: matches, value: "(a)\\\\1"}
                    - {nto: {field: x, operator: "==", value: 1}}
        """,
    )
    message = str(error)
    assert len(error.problems) == 3, message
    assert (
        "policies[0] (name=dev).rules[0].condition.all[0]: value: within needs an absolute "
        "path (e.g. /home/me/project), got 'relative/x' (line 9)"
    ) in message
    assert (
        "policies[0] (name=dev).rules[0].condition.all[1].not: value: matches: invalid regex "
        in message
    )
    assert "condition.all[2].nto: unknown key; did you mean 'not'? (line 11)" in message


def test_condition_v2_loads_from_policy_dir(tmp_path: Path) -> None:
    write(
        tmp_path / "policies",
        "dev.yaml",
        """\
        name: dev
        agent: claude
        rules:
          - tools: [fs.*]
            action: allow
            condition:
              any:
                - {field: params.path, operator: within, value: /srv/data/}
                - {field: tool, operator: in, value: [fs.list_allowed_directories]}
        """,
    )
    loaded = load_config(write(tmp_path, "mesh.yaml", "policy_dir: policies\n"))
    condition = loaded.config.policies[0].rules[0].condition
    assert condition is not None and condition.any is not None
    assert condition.any[0].compiled == "/srv/data"


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


def test_openapi_sources_and_the_openapi_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        "c.yaml",
        """\
        openapi:
          - {file: specs/pets.yaml, name: pets, headers: {X-Key: k}, timeout: 5s}
        """,
    )
    loaded = load_config(config)
    (pets,) = loaded.config.sources()
    assert (pets.name, pets.prefix, pets.kind, pets.timeout_seconds) == (
        "pets",
        "pets.",
        "openapi",
        5.0,
    )
    assert loaded.config.openapi[0].file == str(tmp_path.resolve() / "specs" / "pets.yaml")
    # `agent-mesh --openapi SPEC --backend URL` (the command sets these for the whole tree)
    monkeypatch.setenv("AGENT_MESH_OPENAPI", "https://api.example.com/openapi.json")
    monkeypatch.setenv("AGENT_MESH_OPENAPI_BACKEND", "http://localhost:8080")
    flagged = load_config(config).config
    assert [(s.name, s.prefix) for s in flagged.sources()] == [("pets", "pets."), ("openapi-1", "")]
    assert flagged.openapi[1].url == "https://api.example.com/openapi.json"
    assert flagged.openapi[1].backend_url == "http://localhost:8080"
    monkeypatch.setenv("AGENT_MESH_OPENAPI_BACKEND", "localhost:8080")
    with pytest.raises(
        ConfigError, match="--openapi https://api.example.com/openapi.json: --backend: must be"
    ):
        load_config(config)


def test_check_reads_openapi_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent_mesh.check import check

    spec = Path(__file__).resolve().parents[2] / "examples" / "openapi" / "petstore.yaml"
    ok = load_config(
        write(
            tmp_path, "ok.yaml", f"openapi:\n  - {{file: {spec}}}\n  - {{file: {spec}, name: b}}\n"
        )
    )
    assert check(ok) == 0
    clash = load_config(
        write(tmp_path, "clash.yaml", f"openapi:\n  - {{file: {spec}}}\n  - {{file: {spec}}}\n")
    )
    assert check(clash) == 1
    assert "openapi[1]: 7 of its tools are also made by openapi[0]" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"swagger": "1.2"}')
    bad = load_config(write(tmp_path, "bad.yaml", "openapi:\n  - {file: bad.json}\n"))
    assert check(bad) == 1
    assert "bad.json: not an OpenAPI 3.x or Swagger 2.0 document" in capsys.readouterr().err
