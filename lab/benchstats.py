"""The benchmark's arithmetic, with no lab attached: reading a writer log as it grows, the
first acknowledged write after a fault, acknowledged writes missing from a table, min/median/
max, and the table printed at the end. Pure, so tests need no root."""
from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence


class LogTail:
    """The attempts appended to a writer log since the last call (complete lines only: the
    writer may be in the middle of one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        new = []
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if "outcome" in rec:
                new.append(rec)
        self.records.extend(new)
        return new


def ack_time(rec: dict[str, Any]) -> float:
    """When the client had its answer (CLOCK_MONOTONIC): the attempt's start plus its length."""
    return float(rec["t"]) + float(rec["dt"])


def first_ack_after(records: Iterable[dict[str, Any]], t: float,
                    not_node: str | None = None) -> dict[str, Any] | None:
    """The earliest write acknowledged after `t` (by a node other than `not_node`)."""
    best = None
    for r in records:
        if r.get("outcome") != "acked" or ack_time(r) <= t:
            continue
        if not_node is not None and r.get("node") == not_node:
            continue
        if best is None or ack_time(r) < ack_time(best):
            best = r
    return best


def first_ack_after_outage(records: Iterable[dict[str, Any]], t: float) -> dict[str, Any] | None:
    """The first write acknowledged after the first failed attempt that ended after `t`: a
    backend orphaned by a killed postmaster may still acknowledge a write or two, which is not
    the service coming back. None while no write failed yet or none came back."""
    recs = list(records)
    fails = [ack_time(r) for r in recs if r.get("outcome") != "acked" and ack_time(r) > t]
    if not fails:
        return None
    return first_ack_after(recs, min(fails))


def acked_rows(records: Iterable[dict[str, Any]]) -> set[tuple[int, str]]:
    """(id, node) of every acknowledged write. The node is part of the key because a lost
    tail of WAL can take a sequence advance with it, so a new primary may hand out an id again."""
    return {(int(r["id"]), str(r["node"])) for r in records if r.get("outcome") == "acked"}


def missing(acked: set[tuple[int, str]], present: Iterable[Sequence[Any]]) -> list[tuple[int, str]]:
    """Acknowledged writes absent from the table rows (id, node) read afterwards."""
    have = {(int(row[0]), str(row[1])) for row in present}
    return sorted(acked - have)


def outcome_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = {"acked": 0, "failed": 0, "unknown": 0}
    for r in records:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


# What the new primary's agent logs on its way to taking over, in order: the sentence that
# starts each step (see supervisor/rules.py, workers/postgres_worker.py, the network worker).
TAKEOVER_MARKERS = (("leader_gone", "the cluster has no leader"),
                    ("lock_taken", "leader key acquired"),
                    ("promote_start", "promote: starting"),
                    ("promoted", "promoted in"),
                    ("vip_held", "held: running primary"))


def log_time(line: str) -> float | None:
    """The wall-clock time of an agent log line ('2026-12-02 09:09:34,117 INFO ...')."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def takeover_steps(lines: Iterable[str], since_wall: float) -> dict[str, float]:
    """Seconds from `since_wall` to the first line of each takeover step after it."""
    out: dict[str, float] = {}
    for line in lines:
        t = log_time(line)
        if t is None or t < since_wall:
            continue
        for key, text in TAKEOVER_MARKERS:
            if key not in out and text in line:
                out[key] = round(t - since_wall, 3)
    return out


def summary(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """min/median/max over the runs that produced a value, and how many did."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(got), "min": got[0], "median": statistics.median(got), "max": got[-1]}


def table(rows: Sequence[tuple[str, dict[str, Any], str]]) -> list[str]:
    """Lines of a min/median/max table; each row is (label, summary, unit)."""
    def cell(v: Any, unit: str) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if unit == "s" else f"{v:g}"

    width = max([len(r[0]) for r in rows] + [6])
    out = [f"{'':<{width}}  {'min':>8} {'median':>8} {'max':>8}  runs",
           "-" * (width + 36)]
    for label, s, unit in rows:
        out.append(f"{label:<{width}}  {cell(s['min'], unit):>8} {cell(s['median'], unit):>8} "
                   f"{cell(s['max'], unit):>8}  {s['n']}")
    return out
