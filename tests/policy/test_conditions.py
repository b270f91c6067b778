"""Rule conditions: dotted paths, numeric and string comparison, mismatches are false."""

from __future__ import annotations

from typing import Any

import pytest

from policy.conditions import condition_holds
from policy.model import Condition

CALL: dict[str, Any] = {
    "agent": "claude",
    "tool": "payments.refund",
    "params": {
        "amount": 50,
        "price": 99.5,
        "big": 10**30,
        "flag": True,
        "text_amount": "50",
        "currency": "EUR",
        "user": {"role": "admin", "id": 7, "tags": ["a", "b"]},
        "items": [{"n": 1}],
        "nothing": None,
        "nan": float("nan"),
        "has.dot": 1,
    },
}


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        # numbers, every operator, both sides of the boundary
        ("params.amount", "<", 100, True),
        ("params.amount", "<", 50, False),
        ("params.amount", "<=", 50, True),
        ("params.amount", "<=", 49, False),
        ("params.amount", ">", 49, True),
        ("params.amount", ">", 50, False),
        ("params.amount", ">=", 50, True),
        ("params.amount", ">=", 51, False),
        ("params.amount", "==", 50, True),
        ("params.amount", "==", 51, False),
        ("params.amount", "!=", 51, True),
        ("params.amount", "!=", 50, False),
        # float vs int compare numerically
        ("params.amount", "==", 50.0, True),
        ("params.price", "<", 100, True),
        ("params.price", ">", 99, True),
        ("params.price", ">=", 99.6, False),
        ("params.big", ">", 1e29, True),
        # nested path
        ("params.user.role", "==", "admin", True),
        ("params.user.role", "!=", "admin", False),
        ("params.user.role", "!=", "guest", True),
        ("params.user.id", ">=", 7, True),
        # top-level fields of the call
        ("tool", "==", "payments.refund", True),
        ("agent", "!=", "claude", False),
        # missing field -> false for every operator, `!=` included
        ("params.missing", "<", 100, False),
        ("params.missing", "!=", 100, False),
        ("params.user.missing", "==", "x", False),
        ("amount", "<", 100, False),  # paths start at the call, not at params
        ("params.has.dot", "==", 1, False),  # dots always split the path
        # path through a non-mapping -> false
        ("params.user.tags.0", "==", "a", False),
        ("params.items.n", "==", 1, False),
        ("params.currency.len", ">", 0, False),
        ("params.amount.value", "<", 100, False),
        ("params.nothing.x", "==", 1, False),
        # bool is not a number
        ("params.flag", "==", 1, False),
        ("params.flag", ">", 0, False),
        ("params.flag", "!=", 1, False),
        ("params.amount", "==", True, False),
        # bool vs bool: equality only
        ("params.flag", "==", True, True),
        ("params.flag", "!=", False, True),
        ("params.flag", "<", True, False),
        # strings: equality only; ordering is a mismatch
        ("params.currency", "==", "EUR", True),
        ("params.currency", "==", "eur", False),
        ("params.currency", "!=", "USD", True),
        ("params.currency", "<", "ZZZ", False),
        ("params.currency", ">=", "A", False),
        # a numeric string param is never parsed (params are untrusted)
        ("params.text_amount", "<", 100, False),
        ("params.text_amount", "==", 50, False),
        ("params.text_amount", "!=", 50, False),
        ("params.text_amount", "==", "50", True),
        # a numeric string in the config is a number when the param is a number
        ("params.amount", "<", "100", True),
        ("params.amount", "<", "50", False),
        ("params.amount", "==", "50", True),
        ("params.amount", "==", "+50", True),
        ("params.price", "<", "99.75", True),
        ("params.price", ">", "1e1", True),
        ("params.amount", "<", "1_000", False),  # only plain decimal literals
        ("params.amount", "<", "inf", False),
        ("params.amount", "<", " 100", False),
        ("params.amount", "==", "abc", False),
        # other config types vs a number
        ("params.amount", "==", None, False),
        ("params.amount", "<", [100], False),
        # None, lists, dicts as the call's value
        ("params.nothing", "==", None, False),
        ("params.user", "==", {"role": "admin"}, False),
        ("params.user.tags", "==", ["a", "b"], False),
        # NaN is a mismatch, never "not equal"
        ("params.nan", "!=", 1, False),
        ("params.nan", "<", 1, False),
    ],
)
def test_condition_holds(field: str, op: str, value: Any, expected: bool) -> None:
    cond = Condition(field=field, operator=op, value=value)  # type: ignore[arg-type]
    assert condition_holds(cond, CALL) is expected


def test_params_not_a_mapping() -> None:
    cond = Condition(field="params.amount", operator="<", value=100)
    assert condition_holds(cond, {"params": [1, 2], "tool": "t", "agent": "a"}) is False
    assert condition_holds(cond, {"params": "amount", "tool": "t", "agent": "a"}) is False


def test_never_raises_on_uncomparable_config_value() -> None:
    # int("9" * 5000) raises ValueError in Python >= 3.11 (int max str digits).
    cond = Condition(field="params.amount", operator="<", value="9" * 5000)
    assert condition_holds(cond, CALL) is False
