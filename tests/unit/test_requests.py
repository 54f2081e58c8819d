"""Local operation requests (supervisor/requests.py): Patroni's codes and texts, row by row."""
from __future__ import annotations

from typing import Any

import pytest

from pgwarden.supervisor.requests import (
    LocalRequests,
    postgres_version_int,
    restart_matches,
    validate_restart_args,
)

WALL = 1_800_000_000.0
PG = {"pid": 42, "state": "running", "server_version": 150010, "pending_restart": False,
      "postmaster_start_time": "2027-01-15 08:00:00+00:00"}
FUTURE = "2027-01-15T09:00:00+00:00"  # after WALL


def ask(r: LocalRequests, kind: str, args: dict[str, Any] | None = None, rid: str = "r1",
        pg: dict[str, Any] = PG, leader: bool = True, has_leader: bool = True,
        paused: bool = False) -> dict[str, Any] | None:
    r.absorb([{"id": rid, "kind": kind, "args": args or {}}], pg, leader, has_leader, paused, WALL)
    return r.done.get(rid)


def test_a_request_id_is_answered_once() -> None:
    r = LocalRequests()
    assert ask(r, "reload") == {"code": 202, "text": "reload scheduled"}
    r.reload_wanted = False
    ask(r, "reload")
    assert not r.reload_wanted, "the same id must not reload twice"


@pytest.mark.parametrize("args,pg,leader,answer", [
    ({"role": "replica"}, PG, True, (503, "restart conditions are not satisfied")),
    ({"restart_pending": True}, PG, False, (503, "restart conditions are not satisfied")),
    ({"postgres_version": "15.0"}, PG, True, (503, "restart conditions are not satisfied")),
    ({}, dict(PG, state="starting"), True, (503, "postgres is still starting")),
    ({}, dict(PG, operation={"name": "basebackup"}), True,
     (503, "basebackup already in progress")),
])
def test_restart_refusals(args: dict[str, Any], pg: dict[str, Any], leader: bool,
                          answer: tuple[int, str]) -> None:
    got = ask(LocalRequests(), "restart", args, pg=pg, leader=leader)
    assert got == {"code": answer[0], "text": answer[1]}


def test_restart_accepted_then_answered_from_the_workers_report() -> None:
    r = LocalRequests()
    assert ask(r, "restart", {"role": "primary", "postgres_version": "16.1"}) is None
    assert r.intent()["restart"] == {"token": 1, "timeout": None}
    r.tick(dict(PG, restart_done={"token": 1, "ok": True}), True, WALL)
    assert r.done["r1"] == {"code": 200, "text": "restarted successfully"}


def test_a_restart_timeout_reaches_the_worker_and_a_slow_start_is_reported_as_such() -> None:
    """Patroni's texts: a start that outlived the timeout is "still starting", not failed."""
    r = LocalRequests()
    assert ask(r, "restart", {"timeout": 5.0}) is None
    assert r.intent()["restart"] == {"token": 1, "timeout": 5.0}
    assert r.restart_timeout() == 5.0
    r.tick(dict(PG, restart_done={"token": 1, "ok": False, "still_starting": True}), True, WALL)
    assert r.done["r1"] == {"code": 503, "text": "postgres is still starting"}
    assert r.restart_timeout() is None  # answered: nothing asked any more
    assert ask(r, "restart", {}, rid="r2") is None
    r.tick(dict(PG, restart_done={"token": 2, "ok": False}), True, WALL)
    assert r.done["r2"] == {"code": 503, "text": "restart failed"}


def test_schedule_conflict_cancel_and_skip_when_restarted_meanwhile() -> None:
    r = LocalRequests()
    assert ask(r, "restart", {"schedule": FUTURE}) == {"code": 202, "text": "Restart scheduled"}
    assert ask(r, "restart", {"schedule": FUTURE}, rid="r2")["code"] == 409
    assert r.published()["scheduled_restart"]["schedule"] == FUTURE
    assert ask(r, "cancel_restart", rid="r3") == {"code": 200, "text": "scheduled restart deleted"}
    assert ask(r, "cancel_restart", rid="r4")["code"] == 404
    assert ask(r, "restart", {"schedule": FUTURE}, rid="r5")["code"] == 202
    later = dict(PG, postmaster_start_time="2027-01-15 08:30:00+00:00")
    r.tick(later, True, WALL + 7200)
    assert r.restart_token == 0 and r.skipped_restart, "restarted meanwhile: not again"


def test_schedule_refusals() -> None:
    assert ask(LocalRequests(), "restart", {"schedule": FUTURE}, paused=True)["code"] == 400
    assert ask(LocalRequests(), "restart", {"schedule": "2027-01-15T09:00:00"})["code"] == 400
    assert ask(LocalRequests(), "restart", {"schedule": "tomorrow"})["code"] == 422
    assert ask(LocalRequests(), "restart", {"schedule": "2001-01-01T00:00:00+00:00"})["code"] == 422


@pytest.mark.parametrize("leader,has_leader,answer", [
    (True, True, "I am the leader, can not reinitialize"),
    (False, False, "Cluster has no leader, can not reinitialize"),
])
def test_reinitialize_refusals(leader: bool, has_leader: bool, answer: str) -> None:
    got = ask(LocalRequests(), "reinitialize", leader=leader, has_leader=has_leader)
    assert got == {"code": 503, "text": answer}


def test_reinitialize_of_a_busy_member_needs_force() -> None:
    busy = dict(PG, operation={"name": "restart"})
    got = ask(LocalRequests(), "reinitialize", pg=busy, leader=False)
    assert got == {"code": 503, "text": "restart already in progress"}  # patronictl's suffix
    r = LocalRequests()
    assert ask(r, "reinitialize", {"force": True}, pg=busy, leader=False) is None
    assert r.intent()["reinit"] == {"token": 1, "force": True}


@pytest.mark.parametrize("text,value", [("15.2", 150002), ("9.6.3", 90603), ("16", 160000),
                                        ("x", None), ("1.2.3.4", None)])
def test_postgres_version_int(text: str, value: int | None) -> None:
    assert postgres_version_int(text) == value


@pytest.mark.parametrize("args,problem", [
    ({"role": "bogus"}, "PostgreSQL role should be either primary, standby_leader, or replica"),
    ({"timeout": 0}, "Timeout should be a positive number of seconds"),
    ({"timeout": True}, "Timeout should be a positive number of seconds"),
    ({"restart_pending": "yes"}, "restart_pending should be true or false"),
    ({"nope": 1}, "Unknown filter for the scheduled restart: nope"),
    ({"role": "master", "timeout": 5, "postgres_version": "15.1"}, None),
])
def test_validate_restart_args(args: dict[str, Any], problem: str | None) -> None:
    assert validate_restart_args(args) == problem


def test_restart_matches_pending() -> None:
    assert restart_matches({"restart_pending": True}, dict(PG, pending_restart=True), False)
