"""A timeline's history file (pg_wal/<TLI>.history), parsed: where each timeline forked off.

Each line reads `<parent tli>\t<switch LSN>\t<reason>`; the file's mtime is the promotion
time. Patroni's `history` key and `GET /history` list these rows with the timestamp and the
name of the member that was promoted.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

from pgwarden.postgres.lsn import parse_lsn


def history_path(data_dir: str, timeline: int) -> str:
    return os.path.join(data_dir, "pg_wal", f"{timeline:08X}.history")


def parse_history(text: str) -> list[tuple[int, int, str]]:
    """[(timeline, switch LSN, reason)] from a .history file; malformed lines are skipped."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        try:
            rows.append((int(parts[0]), parse_lsn(parts[1].strip()),
                         parts[2].strip() if len(parts) > 2 else ""))
        except ValueError:
            continue
    return rows


def read_history(data_dir: str, timeline: int) -> dict[str, Any] | None:
    """{"rows": [[tli, lsn, reason]], "at": ISO time of the promotion}, or None."""
    if timeline <= 1:
        return None
    path = history_path(data_dir, timeline)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    at = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).astimezone()
    return {"rows": [list(r) for r in parse_history(text)], "at": at.isoformat()}


def history_key_value(previous: list[Any], timeline_history: dict[str, Any], leader: str,
                      keep: int | None = None) -> list[list[Any]]:
    """The `history` key after a promotion: earlier rows keep their timestamps and leaders
    (from the key as it was), the newest row gets this promotion's time and leader."""
    known = {int(r[0]): r for r in previous if isinstance(r, list) and r and isinstance(r[0], int)}
    rows = timeline_history.get("rows") or []
    out: list[list[Any]] = []
    for i, (tli, lsn, reason) in enumerate(rows):
        if i == len(rows) - 1:
            out.append([tli, lsn, reason, timeline_history.get("at"), leader])
        elif tli in known and len(known[tli]) >= 5:
            out.append([tli, lsn, reason, known[tli][3], known[tli][4]])
        else:
            out.append([tli, lsn, reason])
    if keep is not None and keep >= 0 and len(out) > keep:
        out = out[len(out) - keep:] if keep else []
    return out
