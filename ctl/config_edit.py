"""Changing the dynamic configuration: `--set`/`--pg` pairs, YAML patches, and the diff shown.

Pure functions on dicts and text. Semantics match patronictl's edit-config so the same
command lines give the same config: keys are dotted paths (except below
postgresql.parameters, where a GUC name may contain dots), values are YAML, and an empty
value or null removes the key; a patch file merges recursively, null deleting.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from pgwarden.ctl.errors import UsageError

PG_PARAMETERS = ("postgresql", "parameters")


def _set_path(config: dict[str, Any], path: list[str], value: Any, prefix: tuple[str, ...] = ()) -> None:
    if prefix == PG_PARAMETERS:
        path = [".".join(path)]  # GUCs such as auto_explain.log_min_duration keep their dots
    key = path[0]
    if len(path) == 1:
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
        return
    if not isinstance(config.get(key), dict):
        config[key] = {}
    _set_path(config[key], path[1:], value, prefix + (key,))
    if config[key] == {}:
        del config[key]  # removing the last key of a section removes the section


def apply_pairs(config: dict[str, Any], pairs: Iterable[str]) -> dict[str, Any]:
    """A copy of `config` with each `dotted.key=yaml value` applied in order."""
    changed = copy.deepcopy(config)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid setting {pair!r}: expected key=value, e.g. loop_wait=5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"invalid value in {pair!r}: not a YAML value (quote it)") from None
        _set_path(changed, key.strip().split("."), value)
    return changed


def pg_pairs(pairs: Iterable[str]) -> list[str]:
    """`--pg name=value` is `--set postgresql.parameters.name=value`."""
    return ["postgresql.parameters." + p.lstrip() for p in pairs]


def merge(config: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with `patch` merged in recursively; a null in the patch deletes the key."""
    merged = copy.deepcopy(config)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            base = merged.get(key)
            merged[key] = merge(base if isinstance(base, dict) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_yaml_document(text: str, source: str) -> dict[str, Any]:
    """A YAML mapping from a file, stdin or the editor; anything else is a usage error."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise UsageError(f"{source}: invalid YAML{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: the top level must be a mapping of keys, got "
                         f"{type(doc).__name__}")
    return doc


def unified_diff(before: str, after: str) -> Iterator[str]:
    """The change as unified diff lines (without newlines)."""
    def lines(text: str) -> list[str]:
        return [line + "\n" for line in text.rstrip("\n").split("\n")]

    for line in difflib.unified_diff(lines(before), lines(after)):
        yield line.rstrip("\n")


_COLOURS = {"+": "\x1b[32m", "-": "\x1b[31m", "@": "\x1b[36m"}


def colour_diff_line(line: str) -> str:
    """ANSI colours for a terminal: additions green, removals red, hunks cyan."""
    colour = _COLOURS.get(line[:1])
    if colour is None or line.startswith(("+++", "---")):
        return f"\x1b[1m{line}\x1b[0m" if line.startswith(("+++", "---")) else line
    return f"{colour}{line}\x1b[0m"
