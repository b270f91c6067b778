"""Tool pinning, the pure part (no I/O): a tool definition's fingerprint, the readable diff
between two definitions, what a call of a changed tool gets in each `pinning.mode`, and the
injection phrases a tool's description carries (docs/pinning.md).

The fingerprint covers what a model reads and what a caller sends: name, description, input and
output schema, annotations. Canonical JSON (sorted keys, no spaces, UTF-8) so that the same
definition listed with its keys in another order has the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from policy.approvals import INJECTION_PHRASES

PinMode = Literal["block", "approve", "warn"]
PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")
MAX_QUOTE = 200  # characters of a description quoted in a diff line


def definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a tool (as an upstream lists it) that is pinned; absent fields are left out."""
    return {key: tool[key] for key in PINNED_FIELDS if tool.get(key) is not None}


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(tool: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the tool's pinned definition."""
    return hashlib.sha256(canonical(definition(tool))).hexdigest()


def _keys(schema: Any, prefix: str = "") -> set[str]:
    """Every property path of a JSON schema (`path`, `options.recursive`), nested objects and
    array items' objects included."""
    if not isinstance(schema, Mapping):
        return set()
    out: set[str] = set()
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            out.add(prefix + str(name))
            out |= _keys(sub, f"{prefix}{name}.")
    items = schema.get("items")
    if isinstance(items, Mapping):
        out |= _keys(items, f"{prefix}[].")
    return out


def _quote(text: Any) -> str:
    """JSON-quoted, non-ASCII escaped (a zero-width or right-to-left character is seen), cut."""
    text = "" if text is None else str(text)
    return json.dumps(text[:MAX_QUOTE]) + ("…" if len(text) > MAX_QUOTE else "")


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed from `old` to `new` (pinned definitions), one readable line per change:
    the description old vs new, each schema's keys added / removed, its required list, the
    annotations."""
    lines = []
    if old.get("description") != new.get("description"):
        lines.append(
            f"description: {_quote(old.get('description'))} -> {_quote(new.get('description'))}"
        )
    for field, label in (("inputSchema", "input schema"), ("outputSchema", "output schema")):
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        keys_before, keys_after = _keys(before), _keys(after)
        parts = []
        if added := sorted(keys_after - keys_before):
            parts.append("keys added: " + ", ".join(added))
        if removed := sorted(keys_before - keys_after):
            parts.append("keys removed: " + ", ".join(removed))
        req_before, req_after = _required(before), _required(after)
        if req_before != req_after:
            parts.append(f"required {sorted(req_before)} -> {sorted(req_after)}")
        if before is None or after is None:
            parts.append("added" if before is None else "removed")
        lines.append(f"{label}: " + ("; ".join(parts) or "changed (same keys)"))
    if old.get("annotations") != new.get("annotations"):
        lines.append(
            f"annotations: {json.dumps(old.get('annotations'), sort_keys=True)} -> "
            f"{json.dumps(new.get('annotations'), sort_keys=True)}"
        )
    if old.get("name") != new.get("name"):
        lines.append(f"name: {_quote(old.get('name'))} -> {_quote(new.get('name'))}")
    return lines


def _required(schema: Any) -> set[str]:
    required = schema.get("required") if isinstance(schema, Mapping) else None
    return {str(r) for r in required} if isinstance(required, list) else set()


def held_action(mode: PinMode, policy_action: str) -> str:
    """What a call of a tool whose definition changed (not yet accepted) gets, given the action
    its policy decided: `block` refuses it (`deny`), `approve` makes an allowed call a human
    approval, `warn` leaves the policy's action. A deny or rate limit stays what it is."""
    if policy_action in ("deny", "rate_limited") or mode == "warn":
        return policy_action
    return "deny" if mode == "block" else "human_approval"


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def injection_phrases(tool: Mapping[str, Any]) -> list[str]:
    """The known injection phrases (the approval views' list, policy/approvals.py) found in the
    tool's description or in any text of its input schema (parameter descriptions, defaults)."""
    texts = [t.lower() for t in _texts([tool.get("description"), tool.get("inputSchema")])]
    return [phrase for phrase in INJECTION_PHRASES if any(phrase in t for t in texts)]
