"""Boxed text tables laid out exactly as patronictl's (prettytable with a title in the top rule).

Written here rather than depending on prettytable: the layout is small and fixed, and
people (and their scripts) compare our `list` with patronictl's line by line.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def cell_text(value: Any) -> str:
    return "" if value is None else str(value)


def _justify(text: str, width: int, align: str) -> str:
    if align == "r":
        return text.rjust(width)
    if align == "c":
        return text.center(width)
    return text.ljust(width)


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "",
                 align: Mapping[str, str] | None = None) -> str:
    """The table as text. `title` replaces the start of the top rule (cut to fit, as patronictl).

    Columns default to left alignment; `align` maps a column name to "l", "r" or "c" (for
    the header cell too). A cell with several lines makes every row separated by a rule.
    """
    aligns = [(align or {}).get(c, "l") for c in columns]
    cells = [[cell_text(v).split("\n") for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    top = rule
    if title:
        text = title[:len(rule) - 2]
        top = rule[0] + text + rule[1 + len(text):]
    every_row = any(len(lines) > 1 for row in cells for lines in row)
    out = [top, _line([[c] for c in columns], widths, aligns), rule]
    for n, row in enumerate(cells):
        out.extend(_row_lines(row, widths, aligns))
        if every_row and n < len(cells) - 1:
            out.append(rule)
    out.append(rule)
    return "\n".join(out)


def _row_lines(row: list[list[str]], widths: list[int], aligns: list[str]) -> list[str]:
    height = max((len(lines) for lines in row), default=1)
    return [_line([[lines[k] if k < len(lines) else ""] for lines in row], widths, aligns)
            for k in range(height)]


def _line(row: list[list[str]], widths: list[int], aligns: list[str]) -> str:
    parts = [" " + _justify(lines[0], w, a) + " " for lines, w, a in zip(row, widths, aligns)]
    return "|" + "|".join(parts) + "|"
