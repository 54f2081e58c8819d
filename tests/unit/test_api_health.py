"""Every health endpoint's 200/503 conditions, row by row (Patroni 4 rules, PATRONI-COMPAT 2.2)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pgwarden.dcs.model import ClusterView, Versioned
from pgwarden.workers.api_health import (
    HEALTH_CHECKS,
    QueryError,
    health_code,
    parse_lag,
    readiness_failure,
)
from pgwarden.workers.api_status import NodeStatus

PRIMARY_PATHS = ["/", "/primary", "/read-write", "/master"]


def view(leader: str | None = "n1", optime: int | None = 1000) -> ClusterView:
    return ClusterView(leader=leader, status=Versioned({"optime": optime} if optime else None, 1))


PRIMARY = NodeStatus(
    name="n1", scope="demo", state="running", role="primary", detailed=True, holds_leader=True,
    view=view(), paused=False, tags={}, replication_state=None, received_location=None,
    replayed_location=None, ttl=30, maximum_lag_on_failover=1048576, supervisor_age=0.5,
)
REPLICA = replace(
    PRIMARY, name="n2", role="replica", holds_leader=False, replication_state="streaming",
    received_location=1000, replayed_location=1000,
)


def q(**params: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in params.items()}


def code(path: str, status: NodeStatus, **params: str) -> int:
    return health_code(path, status, q(**params))


# -- /, /primary, /read-write, /master and /leader ---------------------------------------

LEADER_ROWS: list[tuple[str, NodeStatus, dict[str, str], int]] = [
    ("holds the lock", PRIMARY, {}, 200),
    ("does not hold the lock", replace(PRIMARY, holds_leader=False), {}, 503),
    ("replica without the lock", REPLICA, {}, 503),
    ("lock held while still promoting (role replica)", replace(REPLICA, holds_leader=True), {}, 200),
    ("tags are ignored", PRIMARY, {"tag_zone": "b"}, 200),
    ("lag is ignored", PRIMARY, {"lag": "0"}, 200),
    ("no DCS view, not paused", replace(PRIMARY, view=None, holds_leader=False), {}, 503),
    ("no DCS view, paused, postgres is primary",
     replace(PRIMARY, view=None, holds_leader=False, paused=True), {}, 200),
    ("no DCS view, paused, postgres is replica", replace(REPLICA, view=None, paused=True), {}, 503),
    ("paused with a view: the lock decides", replace(PRIMARY, holds_leader=False, paused=True), {}, 503),
]


@pytest.mark.parametrize("path", PRIMARY_PATHS + ["/leader"])
@pytest.mark.parametrize("why,status,params,expected", LEADER_ROWS, ids=[r[0] for r in LEADER_ROWS])
def test_leader_paths(path: str, why: str, status: NodeStatus, params: dict[str, str], expected: int) -> None:
    assert code(path, status, **params) == expected


# -- /replica ---------------------------------------------------------------------------

REPLICA_ROWS: list[tuple[str, NodeStatus, dict[str, str], int]] = [
    ("running streaming replica", REPLICA, {}, 200),
    ("the primary is not a replica", PRIMARY, {}, 503),
    ("replica still starting", replace(REPLICA, state="starting"), {}, 503),
    ("replica stopped", replace(REPLICA, state="stopped"), {}, 503),
    ("replica with an unknown (stale) state", replace(REPLICA, state="unknown"), {}, 503),
    ("noloadbalance: true", replace(REPLICA, tags={"noloadbalance": True}), {}, 503),
    ("noloadbalance: 'on'", replace(REPLICA, tags={"noloadbalance": "on"}), {}, 503),
    ("noloadbalance: false", replace(REPLICA, tags={"noloadbalance": False}), {}, 200),
    ("lag within ?lag", replace(REPLICA, replayed_location=900), {"lag": "100"}, 200),
    ("lag beyond ?lag", replace(REPLICA, replayed_location=900), {"lag": "99"}, 503),
    ("big lag but no ?lag", replace(REPLICA, replayed_location=1), {}, 200),
    ("lag with units within", replace(REPLICA, view=view(optime=20000), replayed_location=20000 - 16384),
     {"lag": "16kB"}, 200),
    ("lag with units beyond", replace(REPLICA, view=view(optime=20000), replayed_location=20000 - 16385),
     {"lag": "16kB"}, 503),
    ("received ahead of optime counts", replace(REPLICA, received_location=5000, replayed_location=1000),
     {"lag": "1000"}, 503),
    ("no DCS view: received WAL is the reference",
     replace(REPLICA, view=None, received_location=1500, replayed_location=1000), {"lag": "499"}, 503),
    ("no reference at all is never lagging",
     replace(REPLICA, view=None, received_location=None, replayed_location=None), {"lag": "0"}, 200),
    ("?replication_state=streaming while streaming", REPLICA, {"replication_state": "streaming"}, 200),
    ("?replication_state=streaming in archive recovery",
     replace(REPLICA, replication_state="in archive recovery"), {"replication_state": "streaming"}, 503),
    ("tag matches", replace(REPLICA, tags={"zone": "a"}), {"tag_zone": "a"}, 200),
    ("tag differs", replace(REPLICA, tags={"zone": "a"}), {"tag_zone": "b"}, 503),
    ("tag unknown to the node", REPLICA, {"tag_zone": "a"}, 503),
    ("boolean tag compares lower-case", replace(REPLICA, tags={"clonefrom": True}), {"tag_clonefrom": "true"}, 200),
    ("boolean tag is not 'True'", replace(REPLICA, tags={"clonefrom": True}), {"tag_clonefrom": "True"}, 503),
    ("integer tag compares as text", replace(REPLICA, tags={"failover_priority": 2}),
     {"tag_failover_priority": "2"}, 200),
]


@pytest.mark.parametrize("why,status,params,expected", REPLICA_ROWS, ids=[r[0] for r in REPLICA_ROWS])
def test_replica(why: str, status: NodeStatus, params: dict[str, str], expected: int) -> None:
    assert code("/replica", status, **params) == expected


# -- /read-only -------------------------------------------------------------------------

READ_ONLY_ROWS: list[tuple[str, NodeStatus, dict[str, str], int]] = [
    ("the primary with the lock", PRIMARY, {}, 200),
    ("a running replica", REPLICA, {}, 200),
    ("a lagging replica with ?lag", replace(REPLICA, replayed_location=1), {"lag": "10"}, 503),
    ("a primary ignores ?lag", replace(PRIMARY, replayed_location=None), {"lag": "0"}, 200),
    ("a primary without the lock", replace(PRIMARY, holds_leader=False), {}, 503),
    ("a stopped replica", replace(REPLICA, state="stopped"), {}, 503),
    ("noloadbalance replica", replace(REPLICA, tags={"noloadbalance": True}), {}, 503),
    ("primary with a mismatching tag", replace(PRIMARY, tags={"zone": "a"}), {"tag_zone": "b"}, 503),
    ("primary with a matching tag", replace(PRIMARY, tags={"zone": "a"}), {"tag_zone": "a"}, 200),
]


@pytest.mark.parametrize("why,status,params,expected", READ_ONLY_ROWS, ids=[r[0] for r in READ_ONLY_ROWS])
def test_read_only(why: str, status: NodeStatus, params: dict[str, str], expected: int) -> None:
    assert code("/read-only", status, **params) == expected


# -- /health ----------------------------------------------------------------------------

HEALTH_ROWS: list[tuple[str, NodeStatus, dict[str, str], int]] = [
    ("running primary", PRIMARY, {}, 200),
    ("running replica", REPLICA, {}, 200),
    ("running without the lock", replace(PRIMARY, holds_leader=False, view=None), {}, 200),
    ("stopped", replace(PRIMARY, state="stopped"), {}, 503),
    ("starting", replace(REPLICA, state="starting"), {}, 503),
    ("unknown (stale sample)", replace(PRIMARY, state="unknown"), {}, 503),
    ("tag mismatch", replace(PRIMARY, tags={"zone": "a"}), {"tag_zone": "b"}, 503),
]


@pytest.mark.parametrize("why,status,params,expected", HEALTH_ROWS, ids=[r[0] for r in HEALTH_ROWS])
def test_health(why: str, status: NodeStatus, params: dict[str, str], expected: int) -> None:
    assert code("/health", status, **params) == expected


# -- /liveness --------------------------------------------------------------------------

LIVENESS_ROWS: list[tuple[str, NodeStatus, int]] = [
    ("primary, supervisor beat just now", PRIMARY, 200),
    ("primary, beat 29 s ago (ttl 30)", replace(PRIMARY, supervisor_age=29.0), 200),
    ("primary, beat 31 s ago", replace(PRIMARY, supervisor_age=31.0), 503),
    ("replica gets twice the ttl", replace(REPLICA, supervisor_age=59.0), 200),
    ("replica, beat 61 s ago", replace(REPLICA, supervisor_age=61.0), 503),
    ("stopped primary counts as replica", replace(PRIMARY, state="stopped", supervisor_age=45.0), 200),
    ("ttl from the dynamic config", replace(PRIMARY, ttl=20, supervisor_age=25.0), 503),
    ("supervisor never beat", replace(PRIMARY, supervisor_age=float("inf")), 503),
    ("paused: a stuck loop is fine", replace(PRIMARY, paused=True, supervisor_age=float("inf")), 200),
]


@pytest.mark.parametrize("why,status,expected", LIVENESS_ROWS, ids=[r[0] for r in LIVENESS_ROWS])
def test_liveness(why: str, status: NodeStatus, expected: int) -> None:
    assert code("/liveness", status) == expected


# -- /readiness -------------------------------------------------------------------------

READINESS_ROWS: list[tuple[str, NodeStatus, dict[str, str], int]] = [
    ("holds the lock", PRIMARY, {}, 200),
    ("holds the lock even while postgres starts", replace(PRIMARY, state="starting"), {}, 200),
    ("streaming replica in sync", REPLICA, {}, 200),
    ("replica not running", replace(REPLICA, state="stopped"), {}, 503),
    ("replica in archive recovery", replace(REPLICA, replication_state="in archive recovery"), {}, 503),
    ("no DCS view and no received WAL",
     replace(REPLICA, view=None, received_location=None), {}, 503),
    ("no DCS view but received WAL", replace(REPLICA, view=None), {}, 200),
    ("lag at maximum_lag_on_failover",
     replace(REPLICA, view=view(optime=2_000_000), replayed_location=2_000_000 - 1048576,
             received_location=None), {}, 200),
    ("lag beyond maximum_lag_on_failover",
     replace(REPLICA, view=view(optime=2_000_000), replayed_location=2_000_000 - 1048577,
             received_location=None), {}, 503),
    ("?lag overrides the default",
     replace(REPLICA, replayed_location=900), {"lag": "50"}, 503),
    ("?lag=0 is a real limit", replace(REPLICA, replayed_location=999), {"lag": "0"}, 503),
    ("mode=write measures received WAL",
     replace(REPLICA, received_location=1000, replayed_location=0), {"mode": "write", "lag": "0"}, 200),
    ("mode=apply measures replayed WAL",
     replace(REPLICA, received_location=1000, replayed_location=0), {"mode": "apply", "lag": "0"}, 503),
]


@pytest.mark.parametrize("why,status,params,expected", READINESS_ROWS, ids=[r[0] for r in READINESS_ROWS])
def test_readiness(why: str, status: NodeStatus, params: dict[str, str], expected: int) -> None:
    assert code("/readiness", status, **params) == expected


def test_readiness_says_why() -> None:
    lagging = replace(REPLICA, replayed_location=900)
    assert readiness_failure(lagging, q(lag="50")) == "Replication apply lag 100 exceeds maximum allowable 50"
    assert readiness_failure(replace(REPLICA, state="stopped"), {}) == "PostgreSQL is not running"


# -- query parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("0", 0), ("1048576", 1048576), ("16kB", 16384), ("16kb", 16384), ("64MB", 64 * 1024**2),
     ("1GB", 1024**3), ("1.5GB", 1536 * 1024**2), ("2TB", 2 * 1024**4), ("100B", 100), (" 8 MB ", 8 * 1024**2)],
)
def test_parse_lag(text: str, expected: int) -> None:
    assert parse_lag(text) == expected


@pytest.mark.parametrize("text", ["9" * 400, "1" * 30 + "TB", "99999999999999999999"])
def test_parse_lag_beyond_64_bits_means_no_limit(text: str) -> None:
    """Found by tests/unit/test_api_fuzz.py: a float infinity used to be a 500."""
    assert parse_lag(text) == 2**63 - 1


@pytest.mark.parametrize("text", ["", "abc", "-1", "10XB", "1e3", "16 kB extra", "MB"])
def test_parse_lag_rejects(text: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_lag(text)
    assert "\n" not in str(e.value) and "lag=" in str(e.value)


@pytest.mark.parametrize("path", ["/replica", "/read-only", "/readiness"])
def test_bad_lag_is_a_query_error_whatever_the_role(path: str) -> None:
    for status in (PRIMARY, REPLICA):
        with pytest.raises(QueryError):
            code(path, status, lag="lots")


def test_bad_readiness_mode() -> None:
    with pytest.raises(QueryError, match="mode"):
        code("/readiness", REPLICA, mode="replay")


def test_every_route_has_a_check() -> None:
    expected = set(PRIMARY_PATHS) | {"/leader", "/replica", "/read-only", "/health", "/liveness", "/readiness"}
    assert set(HEALTH_CHECKS) == expected


def test_only_the_first_query_value_counts() -> None:
    params: dict[str, Any] = {"tag_zone": ["a", "b"]}
    assert health_code("/replica", replace(REPLICA, tags={"zone": "a"}), params) == 200
