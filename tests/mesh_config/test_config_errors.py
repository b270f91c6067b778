"""A config that does not validate: ONE ConfigError listing every problem as `<file>: <field
path>: <problem>` (line), never echoing a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mesh_config.config_files import ACTION_PROBLEM, load_error

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
        "trace_file: t.jsonl\naudit: {checkpoint_every: 1x, signing_key: k.pem}\n",
        ["audit.checkpoint_every: invalid duration '1x': unknown unit 'x'"],
        id="checkpoint-every-bad-duration",
    ),
    pytest.param(
        "trace_file: t.jsonl\naudit: {checkpoint_every: 1h}\n",
        ["audit: checkpoint_every needs signing_key, the key that signs them"],
        id="checkpoint-every-without-key",
    ),
    pytest.param(
        "audit: {checkpoint_every: 1h, signing_key: k.pem}\n",
        ["audit.checkpoint_every: needs trace_file (the chain it signs)"],
        id="checkpoint-every-without-trace-file",
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
