"""A starter policy from discovered tools (`agent-mesh discover --generate-policy`). Pure: tools
in, YAML text out.

Each tool falls in one class, first match wins:
1. `destructive`: MCP `destructiveHint: true`, or a destructive word among its name's words
   (delete, remove, move, ...) → human_approval.
2. `read-only`: MCP `readOnlyHint: true`, or a name starting with a reading verb (read_, list_,
   get_, search_, ...) → allow.
3. everything else → human_approval.
Then one final rule denies every other tool (fail closed, also for tools added later).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["read-only", "destructive", "other"]

READ_VERBS = (
    "read",
    "list",
    "get",
    "search",
    "find",
    "describe",
    "show",
    "fetch",
    "query",
    "view",
    "stat",
    "head",
    "cat",
    "ls",
    "status",
    "info",
    "tree",
    "diff",
    "log",
)
DESTRUCTIVE_WORDS = frozenset(
    {
        "delete",
        "remove",
        "rm",
        "move",
        "mv",
        "rename",
        "drop",
        "destroy",
        "kill",
        "truncate",
        "purge",
        "erase",
        "wipe",
        "reset",
        "terminate",
        "revoke",
        "overwrite",
        "unlink",
        "rmdir",
        "uninstall",
        "shutdown",
        "force",
        "clean",
        "prune",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@dataclass(frozen=True)
class Tool:
    """One discovered tool: canonical `<source>.<tool>` name and the MCP tool dict."""

    name: str
    spec: dict[str, Any]

    @property
    def own_name(self) -> str:
        return str(self.spec.get("name") or self.name.split(".", 1)[-1])


def words(name: str) -> list[str]:
    """`read_text_file` / `readTextFile` / `read-text.file` → ['read', 'text', 'file']."""
    return [w.lower() for w in _WORD.findall(name)]


def classify(tool: Tool) -> tuple[Kind, str]:
    """The class of a tool and why (for the comment beside it)."""
    hints = tool.spec.get("annotations") or {}
    if hints.get("destructiveHint") is True:
        return "destructive", "destructiveHint"
    parts = words(tool.own_name)
    bad = next((w for w in parts if w in DESTRUCTIVE_WORDS), None)
    if bad is not None:
        return "destructive", f"'{bad}' in its name"
    if hints.get("readOnlyHint") is True:
        return "read-only", "readOnlyHint"
    if parts and parts[0] in READ_VERBS:
        return "read-only", f"name starts with '{parts[0]}'"
    return "other", "neither read-only nor destructive by its name or hints"


def one_line(text: Any, width: int = 72) -> str:
    """The first line of a description, at most `width` characters."""
    line = next((s.strip() for s in str(text or "").splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


_SECTIONS: tuple[tuple[Kind, str, list[str]], ...] = (
    (
        "read-only",
        "allow",
        ["Read-only by name (read_, list_, get_, search_, ...) or readOnlyHint: allowed."],
    ),
    (
        "destructive",
        "human_approval",
        [
            "Destructive by destructiveHint or name (delete, remove, move, ...):",
            "a human approves each call.",
        ],
    ),
    (
        "other",
        "human_approval",
        [
            "Everything else (writes, commands, unknown effects): a human approves each call.",
            "Move tools up to `allow` once you trust them.",
        ],
    ),
)


def render(
    tools: Sequence[Tool], agent: str = "*", *, missing: Sequence[str] = (), source_note: str = ""
) -> str:
    """The starter policy as one policy_dir file (a single policy mapping), commented."""
    name = "starter" if agent == "*" else f"{_slug(agent)}-starter"
    lines = [
        "# Starter policy written by `agent-mesh discover --generate-policy`" + source_note + ".",
        "# Review it: the classes below are guesses from tool names and MCP hints.",
        "# Use it as a file in your policy_dir, or as one item of `policies:` in the config.",
    ]
    lines += [f"# NOT INCLUDED (could not be listed): {m}" for m in missing]
    lines += [f"name: {json.dumps(name)}", f"agent: {json.dumps(agent)}", "rules:"]
    for kind, action, comment in _SECTIONS:
        chosen = [t for t in tools if classify(t)[0] == kind]
        if not chosen:
            continue
        lines.append("")
        lines += [f"  # {c}" for c in comment]
        lines += ["  - tools:"]
        width = max(len(json.dumps(t.name)) for t in chosen)
        for tool in sorted(chosen, key=lambda t: t.name):
            why = classify(tool)[1]
            desc = one_line(tool.spec.get("description"), 60)
            note = f"{why}; {desc}" if kind != "other" and desc else (desc or why)
            lines.append(f"      - {json.dumps(tool.name):<{width}}  # {_comment(note)}")
        lines.append(f"    action: {action}")
    lines += [
        "",
        "  # Any other tool, including ones added later: denied (fail closed).",
        '  - tools: ["*"]',
        "    action: deny",
        "",
    ]
    return "\n".join(lines)


def _comment(text: str) -> str:
    return " ".join(text.split())  # one line whatever the description held


def _slug(agent: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", agent).strip("-") or "agent"
