"""Printing tabular results as a table for people, or as json/yaml/tsv for scripts.

The rules follow patronictl's `print_output`, so its users' scripts keep working:
json/yaml give a list of objects keyed by column name (empty cells left out when the
table has a title); tsv repeats the cluster name in every row; YAML keys are sorted.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from pgwarden.ctl.table import render_table

FORMATS = ("pretty", "tsv", "json", "yaml", "yml")


def yaml_text(data: Any, flow: bool = False) -> str:
    """YAML as patronictl writes it for show-config and edit-config (sorted keys, wide lines)."""
    return str(yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, width=200))


def json_text(data: Any) -> str:
    return json.dumps(data)


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "pretty",
                title: str = "", align: Mapping[str, str] | None = None,
                delimiter: str = "\t") -> str:
    """The whole output, without the final newline."""
    if fmt in ("json", "yaml", "yml"):
        objects = [{c: v for c, v in zip(columns, row) if not title or str(v)} for row in rows]
        return json_text(objects) if fmt == "json" else yaml_text(objects).rstrip("\n")
    if fmt == "tsv":
        lines = ([list(columns)] if columns else []) + [list(r) for r in rows]
        return "\n".join(delimiter.join(map(str, r)) for r in lines)
    return render_table(columns, rows, title, align)


def print_rows(out: TextIO, columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "pretty",
               title: str = "", align: Mapping[str, str] | None = None, delimiter: str = "\t") -> None:
    out.write(format_rows(columns, rows, fmt, title, align, delimiter) + "\n")
