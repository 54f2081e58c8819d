"""The health checks behind `/primary`, `/replica`, `/liveness`, ...: status + query -> 200 or 503.

Pure functions over a `NodeStatus` (api_status.py) and the parsed query string
(`{key: [values]}` as `urllib.parse.parse_qs` gives it). HAProxy, Kubernetes probes and
vip-manager act on these codes, so they follow Patroni 4's rules (PATRONI-COMPAT.md 2.2),
with one deliberate difference: a malformed query parameter is a 400 naming the problem,
where Patroni silently ignores it and a typo in `?lag=` would pass a lagging replica.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from pgwarden.workers.api_status import NodeStatus, is_truthy_tag

Query = Mapping[str, Sequence[str]]
Check = Callable[[NodeStatus, Query], int]

OK = 200
UNAVAILABLE = 503

# PostgreSQL's memory units (base 1024), accepted case-insensitively.
LAG_UNITS: dict[str, int] = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_LAG_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
READINESS_MODES = ("apply", "write")
MAX_LAG = 2**63 - 1  # WAL positions are 64-bit


class QueryError(ValueError):
    """A query parameter the client got wrong; the message is the one-line 400 body."""


def first(query: Query, key: str) -> str | None:
    """The first value of a query parameter, as Patroni reads it."""
    values = query.get(key)
    return values[0] if values else None


def parse_lag(text: str) -> int:
    """`?lag=` in bytes: `1048576`, `16kB`, `64MB`, `1GB`, `1.5GB`."""
    match = _LAG_RE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in LAG_UNITS:
        raise QueryError(
            f"lag={text!r} is not a size: give bytes or a number with B, kB, MB, GB or TB, e.g. lag=16MB"
        )
    value = float(match.group(1)) * LAG_UNITS[unit]
    # 400 digits is a float infinity: as good as no limit, and no reason for a 500
    return int(value) if math.isfinite(value) and value < MAX_LAG else MAX_LAG


def lag_param(query: Query) -> int | None:
    text = first(query, "lag")
    return None if text is None else parse_lag(text)


def wal_reference(status: NodeStatus) -> int:
    """How far the cluster's WAL is known to reach: max(/status optime, our received LSN)."""
    return max(status.optime or 0, status.received_location or 0)


def is_lagging(status: NodeStatus, max_lag: int) -> bool:
    reference = wal_reference(status)
    return reference > 0 and reference > (status.replayed_location or 0) + max_lag


def leader_code(status: NodeStatus) -> int:
    # Without a DCS view a paused cluster cannot lose its leader, so Postgres' role decides.
    if status.view is None and status.paused:
        return OK if status.role in ("primary", "standby_leader") else UNAVAILABLE
    return OK if status.holds_leader else UNAVAILABLE


def primary_code(status: NodeStatus) -> int:
    # pgwarden has no standby clusters, so the lock holder is always a primary.
    if status.view is None and status.paused:
        return OK if status.role == "primary" else UNAVAILABLE
    return leader_code(status)


def replica_code(status: NodeStatus, query: Query) -> int:
    max_lag = lag_param(query)  # parsed first so a bad value is a 400 whatever the role
    wanted_state = first(query, "replication_state")
    if is_truthy_tag(status.tags.get("noloadbalance")):
        return UNAVAILABLE
    if status.role != "replica" or not status.running:
        return UNAVAILABLE
    if wanted_state and status.replication_state != wanted_state:
        return UNAVAILABLE
    if max_lag is not None and is_lagging(status, max_lag):
        return UNAVAILABLE
    return OK


def tags_match(status: NodeStatus, query: Query) -> bool:
    """Every `?tag_<k>=<v>` equals our tag k; non-string tags compare as lower-case text."""
    for key, values in query.items():
        if not key.startswith("tag_") or not values:
            continue
        mine = status.tags.get(key[len("tag_"):])
        if mine is None:
            return False
        if (mine if isinstance(mine, str) else str(mine).lower()) != values[0]:
            return False
    return True


def with_tags(check: Check) -> Check:
    """Patroni applies the tag filter only to checks that pass, and not to the leader paths."""

    def checked(status: NodeStatus, query: Query) -> int:
        code = check(status, query)
        return UNAVAILABLE if code == OK and not tags_match(status, query) else code

    return checked


def check_primary(status: NodeStatus, query: Query) -> int:
    return primary_code(status)


def check_leader(status: NodeStatus, query: Query) -> int:
    return leader_code(status)


def check_read_only(status: NodeStatus, query: Query) -> int:
    replica = replica_code(status, query)
    return OK if primary_code(status) == OK else replica


def check_health(status: NodeStatus, query: Query) -> int:
    return OK if status.running else UNAVAILABLE


def check_liveness(status: NodeStatus, query: Query) -> int:
    """The supervisor's decision loop ran recently (`last_cycle`), or we are paused.

    A replica gets twice the ttl: killing it for a slow loop costs more than waiting.
    """
    is_primary = status.role == "primary" and status.running
    threshold = status.ttl * (1 if is_primary else 2)
    return OK if status.paused or status.supervisor_age < threshold else UNAVAILABLE


def readiness_failure(status: NodeStatus, query: Query) -> str | None:
    """Why this node should not take traffic yet, or None when it is ready."""
    max_lag = lag_param(query)
    mode = first(query, "mode") or "apply"
    if mode not in READINESS_MODES:
        raise QueryError(f"mode={mode!r} is not a readiness mode: use mode=apply or mode=write")
    if status.holds_leader:
        return None
    if not status.running:
        return "PostgreSQL is not running"
    if status.replication_state != "streaming":
        return "PostgreSQL replication state is not streaming"
    if status.view is None and not status.received_location:
        return "DCS is not accessible"
    location = status.received_location if mode == "write" else status.replayed_location
    lag = wal_reference(status) - (location or 0)
    limit = status.maximum_lag_on_failover if max_lag is None else max_lag
    if lag > limit:
        return f"Replication {mode} lag {lag} exceeds maximum allowable {limit}"
    return None


def check_readiness(status: NodeStatus, query: Query) -> int:
    return OK if readiness_failure(status, query) is None else UNAVAILABLE


HEALTH_CHECKS: dict[str, Check] = {
    "/": check_primary,
    "/primary": check_primary,
    "/read-write": check_primary,
    "/master": check_primary,
    "/leader": check_leader,
    "/replica": with_tags(replica_code),
    "/read-only": with_tags(check_read_only),
    "/health": with_tags(check_health),
    "/liveness": check_liveness,
    "/readiness": check_readiness,
}

# Patroni answers these two with the status line alone, even on GET (Kubernetes probes).
STATUS_ONLY_PATHS = frozenset({"/liveness", "/readiness"})


def health_code(path: str, status: NodeStatus, query: Query) -> int:
    """200 or 503 for a health path; QueryError for a malformed query parameter."""
    return HEALTH_CHECKS[path](status, query)
