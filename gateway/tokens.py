"""Token counts for a trace, as the Go project's `trace/tokens.go` makes them: real counts when
an LLM tool's result carries them (`ollama.*`, `anthropic.*`, `openai.*`), else the chars/4
estimate of the params and of the result (at least 1 for anything non-empty).

"chars" is Go's: the length in bytes of `json.Marshal`, which escapes <, > and & as \\u003c
(6 bytes) and U+2028 / U+2029 as \\u2028 (6 bytes instead of 3). Key order does not change a
length, so orjson's output (bus/json_values.py), corrected for those escapes, measures the same.
"""

from __future__ import annotations

from typing import Any, Literal

from bus import json_values

TokenSource = Literal["real", "estimate"]


def _go_json_length(value: Any) -> int:
    data = json_values.dumps(value)
    html = data.count(b"<") + data.count(b">") + data.count(b"&")
    separators = data.count("\u2028".encode()) + data.count("\u2029".encode())
    return len(data) + 5 * html + 3 * separators


def estimate_tokens(value: Any) -> int:
    """chars/4, at least 1 when there is anything at all; 0 for None."""
    if value is None:
        return 0
    chars = len(value.encode()) if isinstance(value, str) else _go_json_length(value)
    return max(chars // 4, 1 if chars else 0)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def llm_tokens(tool: str, result: Any) -> tuple[int, int] | None:
    """(input, output) reported by a known LLM provider's response, else None."""
    if not isinstance(result, dict):
        return None
    if tool.startswith("ollama."):
        counts = _int(result.get("prompt_eval_count")), _int(result.get("eval_count"))
    elif tool.startswith(("anthropic.", "openai.")):
        usage = result.get("usage")
        if not isinstance(usage, dict):
            return None
        keys = (
            ("input_tokens", "output_tokens")
            if tool.startswith("anthropic.")
            else ("prompt_tokens", "completion_tokens")
        )
        counts = _int(usage.get(keys[0])), _int(usage.get(keys[1]))
    else:
        return None
    return counts if any(counts) else None


def token_fields(tool: str, params: dict[str, Any], result: Any) -> dict[str, Any]:
    """The trace fields of a forwarded call; zero counts are left out (Go's omitempty)."""
    real = llm_tokens(tool, result)
    counts, source = (
        (real, "real")
        if real is not None
        else ((estimate_tokens(params), estimate_tokens(result)), "estimate")
    )
    fields: dict[str, Any] = {"tokens_source": source}
    if counts[0]:
        fields["estimated_input_tokens"] = counts[0]
    if counts[1]:
        fields["estimated_output_tokens"] = counts[1]
    return fields
