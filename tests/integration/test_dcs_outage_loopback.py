"""The DCS goes away under a running 3-node loopback cluster (etcd SIGSTOPped).

Without failsafe mode the primary stops taking writes before its lease deadline and the
cluster heals when etcd returns. With `failsafe_mode: true` and every member reachable the
primary keeps running through the outage (Patroni's POST /failsafe protocol) and keeps the
leader key when etcd returns; when one member cannot answer, it demotes as without failsafe.
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
from test_operations_loopback import healthy, patroni, wait_healthy

pytestmark = pytest.mark.integration

TTL = 10


@pytest.fixture
def make_cluster() -> Iterator:
    made: list[tuple[LoopbackCluster, Path]] = []

    def make(**dcs: object) -> LoopbackCluster:
        base = Path(tempfile.mkdtemp(prefix="pgwarden-dcsout-", dir="/tmp"))
        c = LoopbackCluster(base, size=3, scope=f"out{os.getpid()}{len(made)}", ttl=TTL,
                            extra_dcs={"postgresql": {"use_pg_rewind": True}, **dcs})
        made.append((c, base))
        c.start_all()
        wait_healthy(c, 120)
        return c

    yield make
    for c, base in made:
        assert c.etcd is not None
        if c.etcd.pid:
            os.kill(c.etcd.pid, signal.SIGCONT)  # never leave a frozen etcd behind
        c.close()
        shutil.rmtree(base, ignore_errors=True)


def writable(c: LoopbackCluster, name: str) -> bool:
    return c.sql(name, "CREATE TEMP TABLE probe (x int)") is not None


def test_without_failsafe_the_primary_demotes_before_its_lease_deadline(make_cluster) -> None:
    c = make_cluster()
    leader = wait_healthy(c)
    assert c.etcd is not None
    c.etcd.freeze()
    frozen_at = time.monotonic()
    try:
        c.wait_until(lambda: not writable(c, leader), TTL + 5, "the primary to stop writes")
        stopped_after = time.monotonic() - frozen_at
        # rule 1: unwritable by the lease deadline minus the safety margin (ttl - 3 here),
        # counted from the last renewal, which is at most one renewal interval before the freeze
        assert stopped_after < TTL, f"the primary took writes for {stopped_after:.1f} s"
        c.wait_until(lambda: all(c.nodes[n].get("/primary")[0] != 200 for n in c.nodes), 5,
                     "no node answering /primary")
    finally:
        c.etcd.thaw()
    new = wait_healthy(c, 120)
    print(f"writes stopped {stopped_after:.1f} s after the freeze; {new} leads after the thaw")


def test_with_failsafe_the_primary_keeps_running_through_the_outage(make_cluster) -> None:
    c = make_cluster(failsafe_mode=True)
    leader = wait_healthy(c)
    c.wait_until(lambda: set(json.loads(c.etcd_get("failsafe") or "{}")) ==
                 set(c.nodes), 20, "the failsafe key listing every member")
    assert c.etcd is not None
    c.etcd.freeze()
    try:
        time.sleep(2 * TTL)
        assert writable(c, leader), "the primary stopped writes although every member answered"
        body = patroni(c, leader)
        assert body.get("failsafe_mode_is_active") is True, body
        assert all(c.nodes[n].get("/primary")[0] == 503 for n in c.nodes if n != leader)
    finally:
        c.etcd.thaw()
    c.wait_until(lambda: healthy(c) == leader, 60, f"{leader} still leading after the thaw")
    c.wait_until(lambda: c.etcd_get("leader") == leader, 30, "the leader key back")


def test_with_failsafe_an_unreachable_member_ends_it(make_cluster) -> None:
    c = make_cluster(failsafe_mode=True)
    leader = wait_healthy(c)
    c.wait_until(lambda: c.etcd_get("failsafe") not in (None, "", "{}"), 20, "failsafe key")
    other = sorted(n for n in c.nodes if n != leader)[0]
    agent = c.agent_pid(other)
    assert agent is not None
    # freeze the whole agent of one replica: its API cannot accept the pings
    victims = [agent] + [int(p) for p in os.popen(f"pgrep -P {agent}").read().split()]
    assert c.etcd is not None
    for pid in victims:
        os.kill(pid, signal.SIGSTOP)
    c.etcd.freeze()
    try:
        c.wait_until(lambda: not writable(c, leader), 2 * TTL, "the primary to stop writes")
    finally:
        c.etcd.thaw()
        for pid in victims:
            os.kill(pid, signal.SIGCONT)
    wait_healthy(c, 120)
