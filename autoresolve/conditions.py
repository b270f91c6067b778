"""The supervisor's rule conditions: a small language parsed once, at load, into a tree.

    params.path starts_with /home/user and not (params.path contains .ssh)
    tool in [fs.write_file, fs.edit_file] or params.size < 4096

Grammar (keywords lowercase; `not` binds tighter than `and`, `and` tighter than `or`):

    expr       := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | comparison
    comparison := field [op value | "in" "[" value ("," value)* "]"]
    op         := == | != | < | <= | > | >= | starts_with | ends_with | contains | matches

Fields: `params.<name>[.<name>...]`, `tool`, `server` (the tool's `<server>` part), `agent`,
`policy_rule`, `injection_risk`. A field alone holds when its value is `true`.
Values: a bare word (`/home/user`, `fs.write_file`, `42`, `true`) or a quoted string
("with spaces", 'or (brackets)'); a quoted value is always a string. `matches` is a regular
expression searched in the value (Python `re`, anchor it with ^ and $).

Evaluation never raises; what cannot be compared is false, for `!=` too (so a missing param
fails every comparison, and `not (...)` around it holds):
- numbers compare numerically (never bools, never numeric strings sent by the agent);
- a list param holds when it is non-empty and every element does (`contains` on a list is
  membership instead);
- **paths**: a comparison is path-valued when the param names a path (`path`, `source`,
  `destination`, `file`, `dir`, `directory`, `cwd`, `*_path`, `*_dir`, ...) or, except for
  `contains` and `matches`, the rule's value is an absolute path. Both sides are normalised
  first (`..`, `.`, `//` collapsed, trailing `/` dropped), and `starts_with` compares whole
  components: `/home/user/../etc` does not start with `/home/user`, nor does `/home/username`.
  Symlinks are not resolved (the supervisor may not run on the mesh's host): restrict them
  upstream.
- with the mesh's `supervisor.expose_content: false`, content params arrive as
  `{content_length, content_sha256, content_type_detected}`: `params.content.content_length < 4096`.

The tree and its evaluation: autoresolve/condition_tree.py.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from autoresolve.condition_tree import (
    And,
    Call,
    Compare,
    Field,
    Node,
    Not,
    Or,
    Truth,
    is_number,
    normalise_path,
)

__all__ = ["Call", "Condition", "ConditionError", "normalise_path", "parse"]

Scalar = str | int | float | bool

FIELDS = ("tool", "server", "agent", "policy_rule", "injection_risk")
OPERATORS = (
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "in",
)
KEYWORDS = frozenset({"and", "or", "not", "true", "false", *OPERATORS})
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PUNCT = "()[],"
_SYMBOLS = ("==", "!=", "<=", ">=", "<", ">")
_BARE_STOP = set(_PUNCT) | set("\"'=!<>")


class ConditionError(ValueError):
    """A condition that does not parse; the message names the column and the problem."""

    def __init__(self, column: int, problem: str) -> None:
        self.column, self.problem = column, problem
        super().__init__(f"column {column}: {problem}")


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "string" | "punct" | "symbol" | "end"
    text: str
    column: int  # 1-based

    def shown(self) -> str:
        return "the end of the condition" if self.kind == "end" else repr(self.text)


def tokenize(source: str) -> list[Token]:
    tokens, i, n = [], 0, len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token("punct", ch, i + 1))
            i += 1
        elif ch in "\"'":
            text, end = _quoted(source, i)
            tokens.append(Token("string", text, i + 1))
            i = end
        elif symbol := next((s for s in _SYMBOLS if source.startswith(s, i)), None):
            tokens.append(Token("symbol", symbol, i + 1))
            i += len(symbol)
        elif ch in "=!":
            raise ConditionError(i + 1, f"unknown operator {ch!r} (use == or !=)")
        else:
            start = i
            while i < n and not source[i].isspace() and source[i] not in _BARE_STOP:
                i += 1
            tokens.append(Token("word", source[start:i], start + 1))
    tokens.append(Token("end", "", n + 1))
    return tokens


def _quoted(source: str, start: int) -> tuple[str, int]:
    """A quoted string from `start`; `\\` escapes the quote and itself, other backslashes stay
    (so regular expressions like "\\.py$" need no doubling). Returns (text, index after)."""
    quote, out, i = source[start], [], start + 1
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source) and source[i + 1] in (quote, "\\"):
            out.append(source[i + 1])
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise ConditionError(start + 1, f"unterminated string: missing closing {quote}")


# -- the parser -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A parsed condition and the text it came from."""

    source: str
    tree: Node

    def holds(self, call: Call) -> bool:
        return self.tree.holds(call)

    def __str__(self) -> str:
        return self.source


def parse(source: str) -> Condition:
    """Parse a condition; ConditionError names the column and what is wrong."""
    if not isinstance(source, str):
        raise ConditionError(
            1, f"a condition is text such as 'params.path starts_with /tmp', got {source!r}"
        )
    parser = _Parser(tokenize(source))
    if parser.peek().kind == "end":
        raise ConditionError(1, "empty condition (leave `condition` out to match every call)")
    tree = parser.expr()
    end = parser.peek()
    if end.kind != "end":
        raise ConditionError(
            end.column, f"unexpected {end.shown()}: expected 'and', 'or' or the end"
        )
    return Condition(source, tree)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i += min(1, len(self.tokens) - 1 - self.i)
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text == word:
            self.next()
            return True
        return False

    def expr(self) -> Node:
        items = [self.conjunction()]
        while self.keyword("or"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Node:
        items = [self.unary()]
        while self.keyword("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        if self.keyword("not"):
            return Not(self.unary())
        token = self.peek()
        if token.kind == "punct" and token.text == "(":
            self.next()
            inner = self.expr()
            close = self.next()
            if close.text != ")" or close.kind != "punct":
                raise ConditionError(
                    close.column,
                    f"expected ')' to close the '(' at column {token.column}, got {close.shown()}",
                )
            return inner
        return self.comparison()

    def comparison(self) -> Node:
        token = self.next()
        field = _field(token)
        op = self.peek()
        if op.kind == "end" or (op.kind == "punct" and op.text == ")") or op.text in ("and", "or"):
            return Truth(field)
        if op.text not in OPERATORS or op.kind not in ("word", "symbol"):
            raise ConditionError(
                op.column,
                f"expected an operator after {token.text!r} "
                f"({', '.join(OPERATORS)}), got {op.shown()}{_hint(op.text, OPERATORS)}",
            )
        self.next()
        if op.text == "in":
            options = self.options(op)
            path = field.is_path or any(_absolute(o) for o in options)
            return Compare(field, "in", tuple(_normalised(o, path) for o in options), path)
        value_token = self.next()
        value = _value(value_token, op)
        # contains / matches look inside any text: only a path-named param makes them path-valued
        path = field.is_path or (_absolute(value) and op.text not in ("contains", "matches"))
        if op.text in ("<", "<=", ">", ">="):
            if not is_number(value):
                raise ConditionError(
                    value_token.column, f"{op.text!r} compares numbers; got {value_token.shown()}"
                )
        elif op.text in ("starts_with", "ends_with", "contains", "matches"):
            value = value_token.text  # `2024` or `true` as written: these operators compare text
        if op.text == "matches":
            try:
                return Compare(field, op.text, re.compile(value), path)
            except re.error as exc:
                raise ConditionError(
                    value_token.column, f"invalid regular expression {value!r}: {exc}"
                ) from None
        return Compare(field, op.text, _normalised(value, path), path)

    def options(self, op: Token) -> list[Scalar]:
        open_ = self.next()
        if open_.text != "[" or open_.kind != "punct":
            raise ConditionError(
                open_.column, f"'in' needs a list such as [a, b], got {open_.shown()}"
            )
        options: list[Scalar] = []
        while True:
            token = self.next()
            if token.kind == "punct" and token.text == "]" and not options:
                raise ConditionError(token.column, "empty list after 'in': it would never match")
            options.append(_value(token, op))
            sep = self.next()
            if sep.kind == "punct" and sep.text == "]":
                return options
            if sep.kind != "punct" or sep.text != ",":
                raise ConditionError(
                    sep.column, f"expected ',' or ']' in the list, got {sep.shown()}"
                )


def _field(token: Token) -> Field:
    if token.kind != "word" or token.text in KEYWORDS:
        raise ConditionError(
            token.column,
            f"expected a field (params.<name>, {', '.join(FIELDS)}), got {token.shown()}",
        )
    parts = tuple(token.text.split("."))
    if token.text in FIELDS:
        return Field(parts)
    if token.text == "agent_id":
        return Field(("agent",))
    if parts[0] == "params" and len(parts) > 1 and all(parts[1:]):
        return Field(parts)
    known = [*FIELDS, "params.<name>"]
    hint = _hint(
        token.text, [*FIELDS, "params." + ".".join(parts[1:]) if len(parts) > 1 else "params"]
    )
    raise ConditionError(
        token.column, f"unknown field {token.text!r} (known: {', '.join(known)}){hint}"
    )


def _value(token: Token, op: Token) -> Scalar:
    if token.kind == "string":
        return token.text
    if token.kind != "word" or token.text in KEYWORDS - {"true", "false"}:
        raise ConditionError(
            token.column,
            f"expected a value after {op.text!r}, got {token.shown()}"
            + (
                " (quote values containing ()[],=!<> or spaces)"
                if token.kind in ("punct", "symbol")
                else ""
            ),
        )
    if token.text in ("true", "false"):
        return token.text == "true"
    if _NUMBER.fullmatch(token.text):
        number = float(token.text)
        return (
            int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", token.text) else number
        )
    return token.text


def _absolute(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _normalised(value: Scalar, path: bool) -> Scalar:
    return normalise_path(value) if path and isinstance(value, str) else value


def _hint(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""
