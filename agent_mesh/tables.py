"""Plain-text tables for the `mesh` command that fit the terminal (80 columns stay readable).

Each column says how far it may shrink (`min`, 0 = may be dropped) and in which order columns
give up width (`shrink`, lowest first); a column with `shrink=None` is never cut (tool names).
Cells that lose width end with `…`, except a column's `wrap` cells (errors): one that does not fit
goes whole on the lines below its row, indented past the first column and as wide as the terminal
allows. Times are shown as local `HH:MM:SS`.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.cells import cell_len, set_cell_size

GAP = "  "
ELLIPSIS = "…"
NARROWEST = 8  # a droppable column narrower than this is dropped


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    min: int = 0  # narrowest it may become; 0: it may be dropped when nothing is left for it
    shrink: int | None = 0  # order in which columns give up width (lowest first); None: never
    render: Callable[[Any], str] | None = None  # the cell's text from the row's value
    right: bool = False  # right-aligned (numbers)
    # a row key: in a row where it is set (an error), a cell too wide is wrapped below, not cut
    wrap: str | None = None


def clock(value: Any) -> str:
    """A unix time or an RFC 3339 string as local `HH:MM:SS` (what a person reads in a table)."""
    if isinstance(value, int | float):
        return time.strftime("%H:%M:%S", time.localtime(value))
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).astimezone().strftime("%H:%M:%S")
        except ValueError:
            return value
    return ""


def text(value: Any) -> str:
    """One line: JSON for structures, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return " ".join(str(value).split())


def _cut(cell: str, width: int) -> str:
    if cell_len(cell) <= width:
        return cell
    if width <= 1:
        return ELLIPSIS[:width]
    return set_cell_size(cell, width - 1) + ELLIPSIS


def widths(columns: Sequence[Column], cells: list[list[str]], total: int) -> list[int]:
    """Each column's width so that the table fits in `total` (0 width: the column is dropped).
    Columns that may shrink give up width in their `shrink` order; if the table still does not
    fit, it is left wider than `total` (the terminal wraps) rather than cut a whole tool name."""
    natural = [
        max([cell_len(c.header), *(cell_len(row[i]) for row in cells)])
        for i, c in enumerate(columns)
    ]
    out = list(natural)

    def used() -> int:
        shown = [w for w in out if w]
        return sum(shown) + len(GAP) * max(0, len(shown) - 1)

    order = sorted(
        (i for i, c in enumerate(columns) if c.shrink is not None),
        key=lambda i: columns[i].shrink or 0,
    )
    for i in order:
        excess = used() - total
        if excess <= 0:
            break
        wanted = out[i] - excess
        if columns[i].min == 0 and wanted < min(natural[i], NARROWEST):
            out[i] = 0  # better no column than a column of ellipses
        else:
            out[i] = max(columns[i].min, 1, wanted)
    return out


def render(
    columns: Sequence[Column], rows: Sequence[dict[str, Any]], total: int, title: str | None = None
) -> str:
    """The table as lines of text, at most `total` cells wide where the columns allow it."""
    cells = [[(c.render or text)(row.get(c.key)) for c in columns] for row in rows]
    sizes = widths(columns, cells, total)
    shown = [(i, c) for i, c in enumerate(columns) if sizes[i]]

    def line(values: list[str]) -> str:
        parts = []
        for i, column in shown:
            cell = _cut(values[i], sizes[i])
            pad = " " * (sizes[i] - cell_len(cell))
            parts.append(pad + cell if column.right else cell + pad)
        return GAP.join(parts).rstrip()

    indent = " " * (sizes[shown[0][0]] + len(GAP)) if shown else ""
    out = [title] if title else []
    out.append(line([c.header for c in columns]))
    for row, values in zip(rows, cells, strict=True):
        below: list[str] = []
        for i, column in enumerate(columns):
            if column.wrap and row.get(column.wrap) and cell_len(values[i]) > sizes[i]:
                room = max(total - len(indent), 20)
                below += [indent + part for part in textwrap.wrap(values[i], room)]
                values[i] = ""
        out.append(line(values))
        out.extend(below)
    return "\n".join(out)
