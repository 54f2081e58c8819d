"""Render the HA transition table as Markdown (docs/ha-transitions.md).

`python -m pgwarden.supervisor.render_transitions > docs/ha-transitions.md`; a unit test
fails when the committed page differs from the table the code runs.
"""
from __future__ import annotations

import sys

from pgwarden.supervisor.rules import TRANSITIONS


def render() -> str:
    lines = [
        "# HA transitions",
        "",
        "Generated from `supervisor/rules.py: TRANSITIONS` by",
        "`python -m pgwarden.supervisor.render_transitions`; do not edit by hand.",
        "The decision core scans the rows in order and takes the first whose state matches",
        "and whose condition holds (`*` = any state).",
        "",
        "| # | from | condition | action | to |",
        "|---|---|---|---|---|",
    ]
    for i, t in enumerate(TRANSITIONS, 1):
        frm = ", ".join(t.from_states) if len(t.from_states) < 6 else "any running state"
        lines.append(f"| {i} | {frm} | {t.condition} | `{t.action}` | {t.to_state} |")
    lines += ["", "```mermaid", "stateDiagram-v2"]
    seen: set[tuple[str, str, str]] = set()
    for t in TRANSITIONS:
        froms = ["[*]"] if "*" in t.from_states else list(t.from_states)
        to = t.to_state if not t.to_state.startswith("(") else None
        for f in froms:
            edge = (f, to or f, t.action)
            if edge not in seen and f != "[*]":
                seen.add(edge)
                lines.append(f"    {f} --> {to or f}: {t.action}")
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
