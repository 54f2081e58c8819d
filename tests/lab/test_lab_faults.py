"""Faults on the primary in the lab: PostgreSQL killed (restart in place, or failover with
primary_start_timeout 0) and a network partition of the primary's host.

Real namespaces, etcd, PostgreSQL 15, pgwarden agents with the VIP and the emulated watchdog.
A client writes through the VIP every 10 ms; for the partition a second writer runs INSIDE the
isolated host, against its own address, to see how long it keeps acknowledging writes, and
the split-brain checker (lab/splitbrain.py) judges both writers' records afterwards.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pgwarden.lab import netns
from pgwarden.lab.acked_writer import read_log as read_acked_log
from pgwarden.lab.netlab import Lab, random_prefix
from pgwarden.lab.splitbrain import Write
from pgwarden.lab.splitcheck import check_lab, spawn_acked_writer, stop_process
from pgwarden.lab.writer import read_log

pytestmark = pytest.mark.lab

TTL = 10
LOCAL_SEQ = 10**9  # the in-host writer's sequence numbers, apart from the VIP writer's


@pytest.fixture(scope="module")
def lab(lab_ready: None) -> Iterator[Lab]:
    prefix = "pgwf" + random_prefix()[4:]
    lab = Lab(prefix, hosts=3, scope=f"lab{prefix}", ttl=TTL, loop_wait=2, retry_timeout=3,
              owned=True)
    try:
        lab.up(wait=120)
        yield lab
    finally:
        lab.down()


def _acked(log: Path) -> list[dict[str, Any]]:
    try:
        return [r for r in read_log(str(log)) if r.get("outcome") == "acked"]
    except FileNotFoundError:
        return []


def _first_ack_after(log: Path, t: float, node: str | None = None) -> dict[str, Any] | None:
    after = [r for r in _acked(log) if r["t"] > t and node in (None, r["node"])]
    return min(after, key=lambda r: r["t"]) if after else None


def _kill_postmaster_under_writes(lab: Lab, host: str, log: Path) -> float:
    """Once the writer is acknowledged through the VIP, SIGKILL the host's postmaster;
    returns the instant of the kill."""
    lab.wait_until(lambda: len(_acked(log)) >= 50, 30, "writes through the VIP")
    pm = lab.postmaster_pid(host)
    assert pm
    t_kill = time.monotonic()
    netns.signal_pids([pm], signal.SIGKILL, lab.ns(host))
    return t_kill


def _healthy_again(lab: Lab, timeout: float = 90) -> str:
    primary = lab.wait_until(lambda: lab.healthy(), timeout, "a healthy cluster")
    replicas = sorted(h for h in lab.db_hosts if h != primary)
    lab.wait_until(lambda: lab.streaming(primary) == replicas, timeout, "every replica streaming")
    lab.wait_until(lambda: lab.vip_holders() == [primary], 30, "the VIP on the primary")
    return primary


def test_postgres_killed_on_the_primary_restarts_in_place(lab: Lab) -> None:
    primary = _healthy_again(lab)
    log = lab.start_writer("vip")
    try:
        t_kill = _kill_postmaster_under_writes(lab, primary, log)
        first = lab.wait_until(lambda: _first_ack_after(log, t_kill + 0.05), 60,
                               "a write acknowledged after the kill")
    finally:
        lab.stop_writer()
    assert first["node"] == primary  # restarted in place (primary_start_timeout 300)
    took = first["t"] + first["dt"] - t_kill
    assert lab.healthy() == primary
    print(f"\nPostgreSQL killed on {primary}: writes through the VIP again after {took:.2f} s, "
          "same host")


def test_postgres_killed_with_primary_start_timeout_zero_fails_over(lab: Lab) -> None:
    primary = _healthy_again(lab)
    _patch_dcs_config(lab, {"primary_start_timeout": 0})
    time.sleep(2 * 2)  # every agent sees the new config within a loop
    log = lab.start_writer("vip")
    try:
        t_kill = _kill_postmaster_under_writes(lab, primary, log)
        first = lab.wait_until(lambda: (r := _first_ack_after(log, t_kill + 0.05))
                               and r["node"] != primary and r, 60,
                               "a write acknowledged by another host")
    finally:
        lab.stop_writer()
        _patch_dcs_config(lab, {"primary_start_timeout": 300})
    took = first["t"] + first["dt"] - t_kill
    new = first["node"]
    # never two writable primaries: nothing acknowledged by the old primary once the new one
    # acknowledged its first write (a backend may still commit for an instant after its
    # postmaster was killed, before it notices the postmaster is gone)
    assert not [r for r in _acked(log) if r["node"] == primary and r["t"] + r["dt"] > first["t"]]
    # the old primary comes back as a replica of the new one
    lab.wait_until(lambda: primary in lab.streaming(new), 90, f"{primary} streaming from {new}")
    print(f"\nPostgreSQL killed on {primary} with primary_start_timeout 0: {new} took writes "
          f"through the VIP after {took:.2f} s; {primary} rejoined as a replica")


def test_partitioned_primary_stops_writes_before_the_majority_promotes(lab: Lab) -> None:
    old = _healthy_again(lab)
    others = sorted(h for h in lab.db_hosts if h != old)
    vip_log = lab.start_acked_writer("vip", lab.host_dir("client") / "partition-vip.jsonl")
    # a second recording writer INSIDE the isolated host, against its own address: how long
    # does an isolated primary keep acknowledging writes? (sequence numbers of its own)
    local_log = lab.host_dir(old) / "partition-local.jsonl"
    local = spawn_acked_writer(lab, old, local_log, first_seq=LOCAL_SEQ)
    try:
        lab.wait_until(lambda: len(_acks(local_log)) >= 50 and len(_acks(vip_log)) >= 50,
                       30, "both writers acknowledged")
        t_part = time.monotonic()
        lab.partition(old)
        new = lab.wait_until(lambda: lab.healthy(others), TTL + 30, "a new primary")
        lab.wait_until(lambda: any(w.host == new for w in _acks(vip_log)), 30,
                       f"a write through the VIP acknowledged by {new}")
        # the isolated host dropped the VIP itself (its namespace no longer has it)
        assert old not in lab.vip_holders()
    finally:
        stop_process(local)
        lab.stop_writer()
    # heal: the old primary rejoins as a replica (its local writes after the partition are gone)
    lab.heal(old)
    lab.wait_until(lambda: old in lab.streaming(new), 120, f"{old} streaming from {new}")
    lab.wait_until(lambda: lab.healthy() == new, 30, "one healthy cluster again")

    # never two writable primaries (no overlap, a positive gap at the handover), nothing
    # refused present, nothing acknowledged lost but around the partition (asynchronous)
    report = check_lab(lab, [vip_log, local_log], new, fault_time=t_part)
    print("\n" + report.describe(sync=False))
    assert report.ok(sync=False), report.describe(sync=False)
    old_reign = next(r for r in report.reigns if r.host == old and r.first_ack < t_part)
    new_reign = next(r for r in report.reigns if r.host == new and r.first_ack > t_part)
    assert new_reign.timeline is not None and old_reign.timeline is not None
    assert new_reign.timeline > old_reign.timeline  # promoted
    # the isolated primary stopped acknowledging before the lease could expire
    assert old_reign.last_ack < t_part + TTL
    gap = new_reign.first_ack - old_reign.last_ack
    assert gap > 0
    after = [w for w in _acks(local_log) if w.t_ack is not None and w.t_ack > t_part]
    print(f"partition of {old}: it acknowledged local writes for "
          f"{old_reign.last_ack - t_part:.2f} s after the link went down ({len(after)} writes, "
          f"lost on rejoin); {new}'s first write through the VIP came {gap:.2f} s after the "
          "old primary's last one")


def _acks(log: Path) -> list[Write]:
    return [w for w in read_acked_log(log) if w.outcome == "acked"]


def _patch_dcs_config(lab: Lab, changes: dict[str, Any]) -> None:
    """Change the dynamic configuration in etcd, as `patronictl edit-config` would."""
    key = f"/service/{lab.scope}/config"
    endpoint = f"http://{lab.address('dcs')}:2379"
    get = lab.exec_in("dcs", ["etcdctl", "--endpoints", endpoint, "get", "--print-value-only",
                              key], timeout=10)
    value = json.loads(get.stdout)
    value.update(changes)
    put = lab.exec_in("dcs", ["etcdctl", "--endpoints", endpoint, "put", key,
                              json.dumps(value, separators=(",", ":"))],
                      timeout=10)
    assert put.returncode == 0, put.stderr
