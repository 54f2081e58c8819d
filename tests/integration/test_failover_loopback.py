"""Failover on loopback: PostgreSQL crashes on the primary, and a whole node dies.

Real etcd, PostgreSQL 15 and pgwarden agents. The node "crash" is a SIGKILL of the agent's
process group and of the postmaster (a power cut without the network namespaces of the lab).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from pgwarden.lab.loopback import LoopbackCluster

pytestmark = pytest.mark.integration


def _healthy(c: LoopbackCluster, names: tuple[str, ...]) -> str | None:
    roles = {n: r for n, r in c.roles().items() if n in names}
    primaries = [n for n, (p, _) in roles.items() if p == 200]
    replicas = [n for n, (_, r) in roles.items() if r == 200]
    if len(primaries) == 1 and len(replicas) == len(names) - 1 and len(roles) == len(names):
        return primaries[0]
    return None


def _streaming(c: LoopbackCluster, primary: str) -> list[str]:
    rows = c.sql(primary, "SELECT application_name FROM pg_stat_replication "
                 "WHERE state = 'streaming' ORDER BY 1") or []
    return [r[0] for r in rows]


@pytest.fixture
def make_cluster() -> Iterator:
    made: list[tuple[LoopbackCluster, Path]] = []

    def make(size: int = 3, **kw: object) -> LoopbackCluster:
        base = Path(tempfile.mkdtemp(prefix="pgwarden-itest-", dir="/tmp"))
        c = LoopbackCluster(base, size=size, scope=f"fo{os.getpid()}{len(made)}",
                            extra_dcs={"postgresql": {"use_pg_rewind": True, "use_slots": True}},
                            **kw)  # type: ignore[arg-type]
        made.append((c, base))
        c.start_all()
        names = tuple(c.nodes)
        c.wait_until(lambda: _healthy(c, names) and
                     len(_streaming(c, _healthy(c, names) or "n1")) == size - 1, 120,
                     "a healthy cluster")
        return c

    yield make
    for c, base in made:
        c.close()
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_killed_on_the_primary_restarts_in_place(make_cluster) -> None:
    c = make_cluster()
    names = tuple(c.nodes)
    primary = _healthy(c, names)
    assert primary
    tl_before = c.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()")
    pm = c.postmaster_pid(primary)
    t0 = time.monotonic()
    os.kill(pm, signal.SIGKILL)
    c.wait_until(lambda: c.postmaster_pid(primary) not in (None, pm)
                 and c.sql(primary, "SELECT NOT pg_is_in_recovery()") == [(True,)],
                 60, "PostgreSQL restarted in place")
    took = time.monotonic() - t0
    assert _healthy(c, names) == primary
    assert c.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()") == tl_before
    assert "starting it in place" in c.nodes[primary].log_text()
    print(f"\nPostgreSQL crash -> writable again on the same node after {took:.2f} s")


def test_primary_start_timeout_zero_fails_over_to_a_replica(make_cluster) -> None:
    c = make_cluster()
    names = tuple(c.nodes)
    primary = _healthy(c, names)
    assert primary
    # primary_start_timeout is dynamic: set it in the DCS config like patronictl edit-config
    _set_dynamic(c, {"primary_start_timeout": 0})
    time.sleep(1.5)  # let every agent see the new config
    pm = c.postmaster_pid(primary)
    t0 = time.monotonic()
    os.kill(pm, signal.SIGKILL)
    new = c.wait_until(lambda: (p := _healthy(c, names)) and p != primary and p, 60,
                       "another primary")
    took = time.monotonic() - t0
    # /primary answers 200 as soon as the node holds the lock (Patroni's rule), a moment
    # before the promotion completes
    c.wait_until(lambda: c.sql(new, "SELECT NOT pg_is_in_recovery()") == [(True,)], 30,
                 f"{new} promoted")
    c.wait_until(lambda: sorted(_streaming(c, new)) == sorted(n for n in names if n != new),
                 90, "the old primary and the other replica streaming from the new one")
    print(f"\nPostgreSQL crash with primary_start_timeout 0 -> {new} primary after {took:.2f} s")


def test_node_crash_fails_over_and_the_node_rejoins_with_rewind(make_cluster) -> None:
    c = make_cluster()
    names = tuple(c.nodes)
    primary = _healthy(c, names)
    assert primary
    c.sql(primary, "CREATE TABLE acked (id int primary key)")
    for i in range(100):
        c.sql(primary, f"INSERT INTO acked VALUES ({i})")
    others = tuple(n for n in names if n != primary)
    c.wait_until(lambda: all(c.sql(n, "SELECT count(*) FROM acked") == [(100,)]
                             for n in others), 30, "rows on the replicas")
    t0 = time.monotonic()
    c.crash(primary)
    new = c.wait_until(lambda: _healthy(c, others), c.ttl + 60, "a new primary")
    took = time.monotonic() - t0
    assert c.sql(new, "SELECT count(*) FROM acked") == [(100,)]
    third = [n for n in others if n != new][0]
    c.wait_until(lambda: _streaming(c, new) == [third], 60, "the third node following")
    # the old primary comes back and rejoins as a streaming replica
    c.start(primary)
    c.wait_until(lambda: sorted(_streaming(c, new)) == sorted([third, primary]), 120,
                 "the old primary streaming again")
    c.wait_until(lambda: _healthy(c, names) == new, 30, "every member healthy again")
    assert c.sql(primary, "SELECT count(*) FROM acked") == [(100,)]
    assert "pg_rewind from" in c.nodes[primary].log_text()
    # the promotion is recorded in Patroni's `history` key: [tl, lsn, reason, time, leader]
    history = c.wait_until(lambda: _get_key(c, "history"), 30, "the history key")
    assert history[-1][0] == 1 and history[-1][4] == new and isinstance(history[-1][1], int)
    print(f"\nnode crash -> {new} primary after {took:.2f} s (ttl {c.ttl})")


def _get_key(c: LoopbackCluster, key: str) -> object:
    raw = c.etcd_get(key)
    return json.loads(raw) if raw else None


def _set_dynamic(c: LoopbackCluster, changes: dict) -> None:
    """Change the dynamic configuration in etcd, as `patronictl edit-config` would."""
    value = json.loads(c.etcd_get("config") or "{}")
    value.update(changes)
    c.etcd_put("config", json.dumps(value, separators=(",", ":")))


def test_agent_sigkilled_on_the_primary_then_restarted_adopts_postgres(make_cluster) -> None:
    """KillMode=process: SIGKILL of the supervisor (its workers die with it through
    PDEATHSIG), PostgreSQL keeps running; the agent started again within the lease's ttl
    adopts the running primary: same postmaster, same timeline, no other member promoted."""
    c = make_cluster()
    names = tuple(c.nodes)
    primary = _healthy(c, names)
    assert primary
    pm = c.postmaster_pid(primary)
    tl = c.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()")
    agent = c.agent_pid(primary)
    assert pm and agent
    os.kill(agent, signal.SIGKILL)
    c.wait_until(lambda: c.nodes[primary].proc is not None
                 and c.nodes[primary].proc.poll() is not None, 10, "the agent gone")
    assert c.postmaster_pid(primary) == pm, "PostgreSQL must outlive a killed agent"
    c.start(primary)
    c.wait_until(lambda: _healthy(c, names) == primary, 60, f"{primary} leading again")
    assert c.postmaster_pid(primary) == pm, "the running postmaster was adopted, not restarted"
    assert c.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()") == tl
    log = c.nodes[primary].log_text()
    assert "adopted the running postmaster" in log and "leader key" in log
    for other in names:
        if other != primary:
            assert "promoting" not in c.nodes[other].log_text()


def test_a_switchover_whose_candidate_is_gone_gives_the_cluster_back_its_old_primary(
        make_cluster) -> None:
    """Two nodes; the candidate's agent is frozen (its PostgreSQL keeps streaming) just before
    a switchover to it: the old primary stops cleanly and releases the key, nobody takes it.
    After the handover window the old primary, whose WAL ends at its shutdown checkpoint,
    wins the race and starts as the primary again on the same timeline. Before, it sat
    stopped with no WAL position and the cluster had no primary until the candidate woke."""
    c = make_cluster(size=2)
    names = tuple(c.nodes)
    old = _healthy(c, names)
    assert old
    candidate = next(n for n in names if n != old)
    c.sql(old, "CREATE TABLE sw_gone(x int); INSERT INTO sw_gone VALUES (1)")
    timeline = c.sql(old, "SELECT timeline_id FROM pg_control_checkpoint()")
    frozen = c.nodes[candidate].proc
    assert frozen is not None
    os.killpg(frozen.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        code, text = c.nodes[old].request("POST", "/switchover",
                                          {"leader": old, "candidate": candidate}, timeout=60)
        assert code == 503, (code, text)  # failed, or still in progress: never "successful"
        c.wait_until(lambda: c.sql(old, "SELECT NOT pg_is_in_recovery()") == [(True,)], 90,
                     "the old primary leading again")
        took = time.monotonic() - t0
        assert c.etcd_get("leader") == old
        assert c.sql(old, "SELECT timeline_id FROM pg_control_checkpoint()") == timeline
        assert "starting it as the primary" in c.nodes[old].log_text()
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    c.wait_until(lambda: _healthy(c, names) == old and _streaming(c, old) == [candidate], 90,
                 "the woken candidate following the old primary")
    c.sql(old, "INSERT INTO sw_gone VALUES (2)")
    c.wait_until(lambda: c.sql(candidate, "SELECT count(*) FROM sw_gone") == [(2,)], 30,
                 "the candidate replicating")
    print(f"\nswitchover to a frozen candidate: {text!r}; the old primary led again after "
          f"{took:.1f} s")


def test_a_restart_that_outlives_its_timeout_fails_over(make_cluster) -> None:
    """POST /restart with `timeout` on the leader whose PostgreSQL can no longer start (a
    library that does not exist, set with ALTER SYSTEM): the restart answers 503, the leader
    retries in place only until the timeout (not primary_start_timeout's 300 s) and then
    releases the key; a replica takes over."""
    c = make_cluster()
    names = tuple(c.nodes)
    old = _healthy(c, names)
    assert old
    c.sql(old, "ALTER SYSTEM SET shared_preload_libraries = 'pgwarden_no_such_library'")
    t0 = time.monotonic()
    code, text = c.nodes[old].request("POST", "/restart", {"timeout": 5}, timeout=60)
    assert (code, text) == (503, "restart failed"), (code, text)
    new = c.wait_until(lambda: (p := c.primary()) not in (None, old) and p, 60,
                       "a replica promoted after the restart's timeout")
    took = time.monotonic() - t0
    log = c.nodes[old].log_text()
    assert "(timeout 5 s)" in log and "did not come back within the restart's timeout" in log
    print(f"\nrestart with timeout 5 s that cannot start: {new} leads after {took:.1f} s")
