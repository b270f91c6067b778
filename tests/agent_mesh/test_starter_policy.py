"""The starter policy's classes (pure): names and MCP hints → allow / human_approval; the text
it renders is one loadable policy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agent_mesh.starter_policy import Tool, classify, one_line, render, words
from policy.engine import PolicyEngine
from policy.model import Policy


def tool(name: str, **annotations: Any) -> Tool:
    spec: dict[str, Any] = {"name": name.split(".", 1)[1]}
    if annotations:
        spec["annotations"] = annotations
    return Tool(name, spec)


@pytest.mark.parametrize(
    ("t", "kind"),
    [
        (tool("fs.read_file"), "read-only"),
        (tool("fs.list_directory"), "read-only"),
        (tool("fs.get_file_info"), "read-only"),
        (tool("fs.search_files"), "read-only"),
        (tool("ev.get-sum"), "read-only"),
        (tool("api.listPets"), "read-only"),
        (tool("git.status"), "read-only"),
        (tool("ev.echo", readOnlyHint=True), "read-only"),
        (tool("fs.move_file"), "destructive"),
        (tool("mem.delete_entities"), "destructive"),
        (tool("api.removeUser"), "destructive"),
        (tool("fs.get_and_delete"), "destructive"),  # a destructive word wins over a reading verb
        (tool("fs.read_file", destructiveHint=True), "destructive"),  # the hint wins over the name
        (tool("x.purge", readOnlyHint=True), "destructive"),  # contradictory: the careful side
        (tool("fs.write_file"), "other"),
        (tool("fs.create_directory"), "other"),
        (tool("fs.directory_tree"), "other"),
        (tool("ev.toggle", readOnlyHint=False), "other"),
        (tool("x.reader"), "other"),  # a word, not a prefix of one
    ],
)
def test_classify(t: Tool, kind: str) -> None:
    assert classify(t)[0] == kind


def test_words_and_one_line() -> None:
    assert words("readTextFile") == ["read", "text", "file"]
    assert words("get-HTTPStatus_now") == ["get", "http", "status", "now"]
    assert one_line("first line\nsecond") == "first line"
    assert one_line("x" * 100, 10) == "xxxxxxx..."
    assert one_line(None) == ""


def test_render_is_a_loadable_policy_with_a_final_deny() -> None:
    tools = [
        tool("fs.read_file"),
        tool("fs.move_file"),
        tool("fs.write_file"),
        Tool(
            "fs.weird", {"name": "weird", "description": "line one # not a comment end\nline: two"}
        ),
    ]
    text = render(tools, "claude", missing=['MCP server "x": failed'])
    policy = Policy.model_validate(yaml.safe_load(text))
    assert policy.name == "claude-starter" and policy.agent == "claude"
    assert [r.action for r in policy.rules] == ["allow", "human_approval", "human_approval", "deny"]
    assert policy.rules[-1].tools == ["*"]
    assert '# NOT INCLUDED (could not be listed): MCP server "x": failed' in text
    engine = PolicyEngine([policy])
    assert engine.evaluate("claude", "fs.read_file", {}, now=0).action == "allow"
    assert engine.evaluate("claude", "fs.move_file", {}, now=0).action == "human_approval"
    assert engine.evaluate("claude", "fs.weird", {}, now=0).action == "human_approval"
    assert engine.evaluate("claude", "other.tool", {}, now=0).action == "deny"


def test_render_with_no_tools_still_loads() -> None:
    policy = Policy.model_validate(yaml.safe_load(render([], "*")))
    assert policy.name == "starter" and [r.action for r in policy.rules] == ["deny"]
