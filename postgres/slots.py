"""Physical replication slots for the cluster's members, kept in step in one bounded call.

A slot makes the primary keep the WAL a replica has not received yet, so a replica that was
away can catch up by streaming instead of a new basebackup. A slot of a member that is gone
keeps WAL forever and fills the disk, so slots of departed members are dropped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from pgwarden.postgres.query import ConnParams, Session, run_once

_INVALID_CHAR = re.compile(r"[^a-z0-9_]")


def slot_name(member_name: str) -> str:
    """Patroni's slot name for a member (dcs/__init__.py slot_name_from_member_name).

    Lowercased; '-' and '.' (common in host names) become '_'; any other character outside
    [a-z0-9_] becomes 'u' + its code point as 4+ decimal digits; at most 63 characters.
    Replicas name their primary_slot_name the same way, so both sides must agree exactly.
    """

    def replace(match: re.Match[str]) -> str:
        c = match.group(0)
        return "_" if c in "-." else f"u{ord(c):04d}"

    return _INVALID_CHAR.sub(replace, member_name.lower())[:63]


@dataclass(frozen=True)
class SlotSync:
    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()  # unwanted but in use by a connected walsender: left in place


# One statement: the view is read once, creations and drops act on that snapshot.
# Creating with immediately_reserve => true makes the slot hold WAL from now on, before its
# replica ever connects (Patroni does the same).
_SYNC_SQL = """
WITH existing AS (
    SELECT slot_name::text AS name, slot_type, temporary, active
      FROM pg_catalog.pg_replication_slots
), created AS (
    SELECT (pg_catalog.pg_create_physical_replication_slot(w.name, true)).slot_name::text AS name
      FROM pg_catalog.unnest(%(wanted)s::text[]) AS w(name)
     WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.name = w.name)
), candidates AS (
    SELECT e.name, e.active
      FROM existing e
     WHERE e.slot_type = 'physical' AND NOT e.temporary
       AND NOT (e.name = ANY(%(wanted)s::text[]))
       AND NOT (e.name = ANY(%(ignore)s::text[]))
       AND (%(managed)s::text[] IS NULL OR e.name = ANY(%(managed)s::text[]))
), dropped AS (
    SELECT c.name, pg_catalog.pg_drop_replication_slot(c.name) FROM candidates c WHERE NOT c.active
)
SELECT 'created', name FROM created
UNION ALL SELECT 'dropped', name FROM dropped
UNION ALL SELECT 'busy', name FROM candidates WHERE active
"""


def sync_slots(
    target: Session | ConnParams,
    members: Iterable[str],
    timeout: float = 5.0,
    *,
    managed: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> SlotSync:
    """Make the physical slots on this server match `members` (member names, not slot names).

    Creates the missing slots; drops physical, non-temporary slots that are not wanted, are
    not in `ignore` (slot names kept for other tools), and, when `managed` is given, belong
    to those member names (slots we may own). With `managed=None` every other physical slot
    is ours, as in Patroni. Logical and temporary slots (pg_basebackup's) are never touched.
    An unwanted slot still in use is reported in `busy` and dropped by a later call.
    """
    params = {
        "wanted": sorted({slot_name(m) for m in members}),
        "ignore": sorted(set(ignore)),
        "managed": None if managed is None else sorted({slot_name(m) for m in managed}),
    }

    def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(_SYNC_SQL, params, prepare=False).fetchall()

    if isinstance(target, Session):
        rows = target.call(run, timeout, what="replication slots")
    else:
        rows = run_once(target, run, timeout, what="replication slots")
    by_kind: dict[str, list[str]] = {"created": [], "dropped": [], "busy": []}
    for kind, name in rows:
        by_kind[kind].append(name)
    return SlotSync(*(tuple(sorted(by_kind[k])) for k in ("created", "dropped", "busy")))


def list_slots(target: Session | ConnParams, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every slot on the server: name, type, temporary, active, restart_lsn (text or None)."""
    sql = (
        "SELECT slot_name::text, slot_type, temporary, active, restart_lsn::text"
        " FROM pg_catalog.pg_replication_slots ORDER BY slot_name"
    )

    def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(sql, prepare=False).fetchall()

    rows = target.call(run, timeout) if isinstance(target, Session) else run_once(target, run, timeout)
    keys = ("name", "type", "temporary", "active", "restart_lsn")
    return [dict(zip(keys, r)) for r in rows]
