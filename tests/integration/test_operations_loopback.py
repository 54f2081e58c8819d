"""Planned operations on a real 3-node loopback cluster (etcd, PostgreSQL 15, 3 agents),
driven through the REST API exactly as patronictl and pgwardenctl drive it.

One cluster for the module (each test starts by waiting for it to be healthy, and leaves it
healthy); the order of the tests is the order of an operator's day: switchovers, a refused
failover, pause, configuration and restarts, reinitialize.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from pgwarden.lab.loopback import SUPERUSER_PASSWORD, LoopbackCluster

pytestmark = pytest.mark.integration

HEAL = 90.0


def healthy(c: LoopbackCluster) -> str | None:
    """The primary's name when there is exactly one and both others stream from it."""
    roles = c.roles()
    primaries = [n for n, (p, _) in roles.items() if p == 200]
    if len(primaries) != 1 or len(roles) != len(c.nodes):
        return None
    if any(r != 200 for n, (_, r) in roles.items() if n != primaries[0]):
        return None  # pg_basebackup's own walsender also shows as streaming
    rows = c.sql(primaries[0], "SELECT count(*) FROM pg_stat_replication "
                 "WHERE state = 'streaming'") or [(0,)]
    return primaries[0] if rows[0][0] == len(c.nodes) - 1 else None


def wait_healthy(c: LoopbackCluster, timeout: float = HEAL) -> str:
    return c.wait_until(lambda: healthy(c), timeout, "a healthy cluster")


def patroni(c: LoopbackCluster, name: str) -> dict:
    code, body = c.nodes[name].get("/patroni")
    assert code == 200, (name, code, body)
    return body


CALLBACK = """#!/bin/sh
# argv: <log file> <action> <role> <scope>
echo "$2 $3 $4" >> "$1"
"""


def callbacks_log(c: LoopbackCluster, name: str) -> list[str]:
    try:
        return (c.base / "callbacks" / f"{name}.log").read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    base = Path(tempfile.mkdtemp(prefix="pgwarden-ops-", dir="/tmp"))
    cbdir = base / "callbacks"
    cbdir.mkdir()
    os.chmod(base, 0o755)
    os.chmod(cbdir, 0o777)  # callbacks run as the database user
    script = cbdir / "cb.sh"
    script.write_text(CALLBACK)
    os.chmod(script, 0o755)
    extra = {name: {"callbacks": {action: [str(script), str(cbdir / f"{name}.log")]
                                  for action in ("on_start", "on_stop", "on_restart",
                                                 "on_reload", "on_role_change")}}
             for name in ("n1", "n2", "n3")}
    c = LoopbackCluster(base, size=3, scope=f"ops{os.getpid()}", postgresql_extra=extra,
                        extra_dcs={"postgresql": {"use_pg_rewind": True, "use_slots": True}})
    try:
        c.start_all()
        wait_healthy(c, 120)
        c.sql(healthy(c) or "n1", "CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)")
        yield c
    finally:
        c.close()
        if not os.environ.get("KEEPDBG"):
            shutil.rmtree(base, ignore_errors=True)


class Writer:
    """Writes one row every 10 ms to whichever node is the primary (libpq multi-host with
    target_session_attrs=read-write) and remembers every id whose COMMIT was acknowledged."""

    def __init__(self, c: LoopbackCluster) -> None:
        hosts = ",".join("127.0.0.1" for _ in c.nodes)
        ports = ",".join(str(n.pg_port) for n in c.nodes.values())
        self.dsn = (f"host={hosts} port={ports} user=postgres password={SUPERUSER_PASSWORD} "
                    "dbname=postgres target_session_attrs=read-write connect_timeout=2")
        self.acked: list[int] = []
        self.gaps: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn = None
        n, last_ok = 0, time.monotonic()
        while not self.stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                conn.execute("INSERT INTO acked VALUES (%s)", (n,))
                self.acked.append(n)
                now = time.monotonic()
                self.gaps.append(now - last_ok)
                last_ok = now
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_switchover_to_a_named_candidate_loses_no_acknowledged_write(cluster) -> None:
    c = cluster
    old = wait_healthy(c)
    cand = sorted(n for n in c.nodes if n != old)[0]
    c.sql(old, "TRUNCATE acked")
    with Writer(c) as w:
        time.sleep(1.0)
        t0 = time.monotonic()
        code, text = c.nodes[old].request("POST", "/switchover", {"leader": old, "candidate": cand})
        took = time.monotonic() - t0
        assert code == 200, text
        assert text == f'Successfully switched over to "{cand}"'
        time.sleep(1.0)
    assert took < 15, f"the API call took {took:.1f} s"
    new = wait_healthy(c)
    assert new == cand
    rows = {r[0] for r in c.sql(new, "SELECT id FROM acked") or []}
    lost = [i for i in w.acked if i not in rows]
    assert w.acked and not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    print(f"switchover API {took:.2f} s, longest write gap {max(w.gaps):.3f} s")
    # the new leader cleared the failover key and recorded the promotion in history
    c.wait_until(lambda: c.etcd_get("failover") in (None, "", "{}"), 10, "failover key cleared")
    code, hist = c.nodes[new].get("/history")
    assert code == 200 and hist and hist[-1][-1] == new
    # callbacks, with Patroni's arguments: action, role, scope
    scope = c.scope
    c.wait_until(lambda: f"on_role_change primary {scope}" in callbacks_log(c, new), 10,
                 "on_role_change on the new primary")
    c.wait_until(lambda: f"on_role_change replica {scope}" in callbacks_log(c, old), 30,
                 "on_role_change on the old primary")
    assert f"on_stop primary {scope}" in callbacks_log(c, old)
    assert any(line.startswith("on_start ") for line in callbacks_log(c, cand))


def test_switchover_to_any_member(cluster) -> None:
    c = cluster
    old = wait_healthy(c)
    code, text = c.nodes[old].request("POST", "/switchover", {"leader": old})
    assert code == 200, text
    assert text.startswith("Successfully switched over to")
    new = wait_healthy(c)
    assert new != old


def test_switchover_refusals_use_patronis_codes(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    other = sorted(n for n in c.nodes if n != leader)[0]
    node = c.nodes[leader]
    assert node.request("POST", "/switchover", {"candidate": other}) == (
        400, "Switchover could be performed only from a specific leader")
    assert node.request("POST", "/switchover", {"leader": other, "candidate": leader}) == (
        412, "leader name does not match")
    assert node.request("POST", "/switchover", {"leader": leader, "candidate": "nope"}) == (
        412, "candidate does not exists")
    assert node.request("POST", "/switchover", {"leader": leader, "candidate": leader}) == (
        400, "Switchover target and source are the same")
    assert node.request("POST", "/failover", {"leader": leader})[0] == 400
    assert node.request("POST", "/failover", {"candidate": other,
                                              "scheduled_at": "2030-01-01T00:00:00+00:00"}) == (
        400, "Failover can't be scheduled")
    code, text = node.request("POST", "/switchover", {"leader": leader,
                                                      "scheduled_at": "2030-01-01T00:00:00"})
    assert code == 400 and "Timezone" in text
    code, _ = node.request("POST", "/switchover", {"leader": leader,
                                                   "scheduled_at": "2001-01-01T00:00:00+00:00"})
    assert code == 422
    assert wait_healthy(c) == leader


def test_scheduled_switchover_fires_and_can_be_cancelled(cluster) -> None:
    c = cluster
    old = wait_healthy(c)
    cand = sorted(n for n in c.nodes if n != old)[-1]
    far = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    code, text = c.nodes[old].request("POST", "/switchover",
                                      {"leader": old, "candidate": cand, "scheduled_at": far})
    assert (code, text) == (202, "Switchover scheduled")
    code, body = c.nodes[old].get("/cluster")
    assert body.get("scheduled_switchover", {}).get("to") == cand or \
        json.loads(c.etcd_get("failover") or "{}").get("member") == cand
    assert c.nodes[old].request("DELETE", "/switchover") == (200, "scheduled switchover deleted")
    assert c.nodes[old].request("DELETE", "/switchover") == (404, "no switchover is scheduled")
    soon = (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat()
    code, _ = c.nodes[old].request("POST", "/switchover",
                                   {"leader": old, "candidate": cand, "scheduled_at": soon})
    assert code == 202
    time.sleep(2)
    assert healthy(c) == old, "a switchover scheduled 4 s ahead fired early"
    c.wait_until(lambda: healthy(c) == cand, 30, f"the scheduled switchover to {cand}")


def test_failover_to_a_lagging_candidate_is_refused(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    cand = sorted(n for n in c.nodes if n != leader)[0]
    node = c.nodes[leader]
    code, conf = node.get("/config")
    assert code == 200
    code, text = node.request("PATCH", "/config", {"maximum_lag_on_failover": 1024})
    assert code == 200, text
    rows = c.sql(cand, "SELECT pid FROM pg_stat_wal_receiver")
    assert rows, "the candidate has no WAL receiver"
    walreceiver = rows[0][0]
    os.kill(walreceiver, signal.SIGSTOP)
    try:
        c.sql(leader, "CREATE TABLE IF NOT EXISTS filler AS SELECT g FROM generate_series(1, 50000) g")
        c.sql(leader, "INSERT INTO filler SELECT g FROM generate_series(1, 50000) g")
        # wait until the leader's member key shows it ahead by more than 1024 bytes
        def lagging() -> bool:
            ms = {m["name"]: m for m in (node.get("/cluster")[1] or {}).get("members", [])}
            return isinstance(ms.get(cand, {}).get("lag"), int) and ms[cand]["lag"] > 1024
        c.wait_until(lagging, 20, "the candidate to lag")
        code, text = node.request("POST", "/failover", {"candidate": cand})
        assert code == 412, text
        assert "lags" in text and "maximum_lag_on_failover" in text
    finally:
        os.kill(walreceiver, signal.SIGCONT)
        node.request("PATCH", "/config", {"maximum_lag_on_failover": None})
        c.sql(leader, "DROP TABLE IF EXISTS filler")
    assert wait_healthy(c) == leader


def test_pause_then_kill_postgres_then_resume_heals(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    node = c.nodes[leader]
    code, text = node.request("PATCH", "/config", {"pause": True})
    assert code == 200, text
    try:
        c.wait_until(lambda: all(patroni(c, n).get("pause") for n in c.nodes), 15, "all paused")
        killed = c.postmaster_pid(leader)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        time.sleep(3 * c.loop_wait + 2)
        # nothing automatic: no new postmaster, nobody else is promoted
        assert c.postmaster_pid(leader) in (None, killed), "PostgreSQL was restarted in pause"
        assert patroni(c, leader)["state"] != "running"
        others = [n for n in c.nodes if n != leader]
        assert all(c.nodes[n].get("/primary")[0] == 503 for n in others)
    finally:
        # resumed even when the test fails: the next tests need a cluster that acts
        code, text = node.request("PATCH", "/config", {"pause": None})
    assert code == 200, text
    new = wait_healthy(c, 120)
    print(f"after resume: {new} leads")


def test_pending_restart_is_shown_everywhere_and_a_restart_clears_it(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    node = c.nodes[leader]
    code, text = node.request("PATCH", "/config",
                              {"postgresql": {"parameters": {"max_connections": 123}}})
    assert code == 200, text
    c.wait_until(lambda: all(patroni(c, n).get("pending_restart") for n in c.nodes), 30,
                 "pending_restart on every member")
    reason = patroni(c, leader).get("pending_restart_reason") or {}
    assert reason.get("max_connections", {}).get("new_value") in ("123", 123), reason
    # restart_pending: restarts a member that needs it, refuses one that does not
    for name in c.nodes:
        code, text = c.nodes[name].request("POST", "/restart", {"restart_pending": True})
        assert (code, text) == (200, "restarted successfully"), (name, code, text)
    c.wait_until(lambda: not any(patroni(c, n).get("pending_restart") for n in c.nodes), 30,
                 "pending_restart cleared")
    assert f"on_restart primary {c.scope}" in callbacks_log(c, leader)
    assert any(line.startswith("on_reload ") for line in callbacks_log(c, leader))
    assert all((c.sql(n, "SHOW max_connections") or [("?",)])[0][0] == "123" for n in c.nodes)
    code, text = c.nodes[leader].request("POST", "/restart", {"restart_pending": True})
    assert (code, text) == (503, "restart conditions are not satisfied")
    assert wait_healthy(c) == leader


def test_restart_filters_schedules_and_bad_input(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    node = c.nodes[leader]
    assert node.request("POST", "/restart", {"role": "replica"}) == (
        503, "restart conditions are not satisfied")
    assert node.request("POST", "/restart", {"role": "bogus"})[0] == 400
    assert node.request("POST", "/restart", {"bogus": 1}) == (
        400, "Unknown filter for the scheduled restart: bogus")
    far = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert node.request("POST", "/restart", {"schedule": far}) == (202, "Restart scheduled")
    assert node.request("POST", "/restart", {"schedule": far}) == (
        409, "Another restart is already scheduled")
    assert patroni(c, leader).get("scheduled_restart", {}).get("schedule") == far
    assert node.request("DELETE", "/restart") == (200, "scheduled restart deleted")
    assert node.request("DELETE", "/restart") == (404, "no restarts are scheduled")
    assert node.request("POST", "/reload") == (202, "reload scheduled")
    assert wait_healthy(c) == leader


def test_reinitialize_rebuilds_a_replica(cluster) -> None:
    c = cluster
    leader = wait_healthy(c)
    replica = sorted(n for n in c.nodes if n != leader)[0]
    assert c.nodes[leader].request("POST", "/reinitialize") == (
        503, "I am the leader, can not reinitialize")
    c.sql(leader, "CREATE TABLE IF NOT EXISTS reinit_marker (x int)")
    before = patroni(c, replica)["postmaster_start_time"]
    code, text = c.nodes[replica].request("POST", "/reinitialize", {"force": True})
    assert (code, text) == (200, "reinitialize started")
    assert wait_healthy(c, 120) == leader
    c.wait_until(lambda: patroni(c, replica).get("postmaster_start_time") != before, 60,
                 "a new postmaster on the reinitialized replica")
    assert c.sql(replica, "SELECT count(*) FROM reinit_marker") == [(0,)]
