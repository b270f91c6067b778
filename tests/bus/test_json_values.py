"""Property tests of the bus codec (bus/frames.py, bus/json_values.py): any value `json.loads`
accepts either crosses the bus and reaches the upstream's wire unchanged, or is refused with a
message whose path leads to the value that could not be carried."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import frames
from bus.json_values import MAX_DEPTH, dumps, refusal
from bus.messages import PolicyCheck, ToolCall, trace_record
from workers.stdio_rpc import encode

# Number texts as a client may write them: any length, any exponent (1e400 parses to inf).
NUMBER_TEXT = st.from_regex(
    r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: hypothesis goes past 64 bits
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats()  # inf and NaN included: json.loads takes Infinity and NaN
    | NUMBER_TEXT.map(json.loads)
    | st.text(st.characters(codec=None, exclude_categories=()))  # lone surrogates included
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(codec=None)), inner, max_size=4)
    ),
    max_leaves=25,
)


def as_json_text(value: Any) -> Any:
    """What `json.loads` gives for the JSON text of `value`: the value a client's body holds."""
    return json.loads(json.dumps(value))


def nested(depth: int, leaf: Any = 1) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def follow(value: Any, path: str) -> tuple[Any, Any]:
    """(container, last key) that `path` ('params.a[2]["x y"]') leads to in `value`."""
    assert path.startswith("params"), path
    rest, parent, key = path[len("params") :], None, None
    node = value
    while rest:
        match = _STEP.match(rest)
        assert match, f"unparseable step at {rest!r} in {path!r}"
        name, index, quoted = match.groups()
        key = name if name is not None else int(index) if index is not None else json.loads(quoted)
        parent, node = node, node[key]
        rest = rest[match.end() :]
    return parent, key


def cannot_be_carried(value: Any) -> bool:
    """The oracle: strict JSON text in UTF-8 cannot hold it (non-finite float, lone surrogate)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return True
    return False


@settings(max_examples=400, deadline=None, derandomize=True)
@given(JSON_VALUES.map(as_json_text))
def test_a_json_value_crosses_the_bus_unchanged_or_is_refused_by_its_path(value: Any) -> None:
    params = {"v": value}
    why = refusal(params)
    if why is None:
        assert not cannot_be_carried(params)
        body = PolicyCheck(agent="a", tool="s.t", params=params).dump()  # what the gateway sends
        assert frames.unpack(frames.pack(body)) == body
        call = ToolCall(tool="t", arguments=params).dump()  # what the upstream worker gets
        arrived = frames.unpack(frames.pack(call))["arguments"]
        line = encode(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "t", "arguments": arrived},
            }
        )
        assert line.endswith(b"\n") and b"\n" not in line[:-1]
        assert json.loads(line)["params"]["arguments"] == params  # the upstream reads what was sent
        record = trace_record(
            trace_id="x",
            agent_id="a",
            tool="s.t",
            policy="allow",
            status_code=200,
            latency_ms=1.0,
            params=params,
        )
        assert json.loads(dumps(record))["params"] == params  # the trace store keeps it too
        return
    assert cannot_be_carried(params), why
    path, _, what = why.partition(": ")
    parent, key = follow(params, path)
    if what.startswith("key "):
        assert isinstance(key, str) and cannot_be_carried(key)
    else:
        bad = parent[key]
        assert cannot_be_carried(bad) and not isinstance(bad, dict | list), (why, bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**70, None),
        (-(2**70), None),
        (2**64 - 1, None),
        (-(2**63), None),
        (10**4000, None),
        (
            float("inf"),
            "params.v: number out of range (no 64-bit float holds it; Infinity is not JSON)",
        ),
        (
            float("-inf"),
            "params.v: number out of range (no 64-bit float holds it; Infinity is not JSON)",
        ),
        (float("nan"), "params.v: NaN is not a JSON number"),
        (
            {"ok": 1, "s": "ab\ud800"},
            (
                "params.v.s: string holds a lone surrogate \\ud800 at character 2: "
                "not Unicode, which a JSON string must be"
            ),
        ),
        (
            [0, {"a b": [1.5, "\U0001f600", "\udfff"]}],
            (
                'params.v[1]["a b"][2]: string holds a lone surrogate '
                "\\udfff at character 0: not Unicode, which a JSON string must be"
            ),
        ),
        (
            {"\ud83d": 1},
            (
                'params.v["\\ud83d"]: key holds a lone surrogate \\ud83d at character 0: '
                "not Unicode, which a JSON string must be"
            ),
        ),
    ],
)
def test_refusals_name_the_path(value: Any, expected: str | None) -> None:
    assert refusal({"v": value}) == expected
    if expected is None:
        assert frames.unpack(frames.pack({"v": value})) == {"v": value}
        assert json.loads(encode({"v": value})) == {"v": value}


def test_nesting_is_carried_to_max_depth_and_refused_past_it() -> None:
    deep = nested(MAX_DEPTH - 1)  # params holds it: MAX_DEPTH containers in all
    assert refusal({"v": deep}) is None
    body = PolicyCheck(agent="a", tool="s.t", params={"v": deep}).dump()
    assert frames.unpack(frames.pack(body)) == body
    assert json.loads(encode({"jsonrpc": "2.0", "params": body})) == {
        "jsonrpc": "2.0",
        "params": body,
    }
    why = refusal({"v": nested(MAX_DEPTH)})
    assert why is not None and why.endswith(f": nested deeper than {MAX_DEPTH} levels")
    assert why.startswith("params.v[0].k[0].k[0]") and "…" in why and len(why) < 120


def test_a_json_body_nested_past_the_parser_is_not_a_crash() -> None:
    with pytest.raises(RecursionError):
        json.loads("[" * 100_000 + "]" * 100_000)  # why gateway/http_edge.py catches it


def test_big_integers_travel_as_an_extension_and_unknown_extensions_are_undecodable() -> None:
    packed = frames.pack({"n": 2**70})
    assert bytes([frames.EXT_BIG_INT]) + b"1180591620717411303424" in packed
    assert frames.unpack(packed) == {"n": 2**70}
    for bad in (b"\xc7\x03\x02abc", b"\xc7\x03\x011x3", b"\xc7\x00\x01"):
        with pytest.raises(ValueError, match="bad msgpack extension"):
            frames.unpack(bad)


def test_dumps_writes_what_orjson_cannot() -> None:
    assert (
        dumps({"n": 2**70, "m": [nested(300)]})
        == json.dumps({"n": 2**70, "m": [nested(300)]}, separators=(",", ":")).encode()
    )
    assert dumps({"t": "é"}) == '{"t":"é"}'.encode()
