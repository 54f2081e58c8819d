"""Three hosts, etcd and a client in network namespaces: bootstrap, a host crash, a rejoin, down.

Real namespaces behind a bridge in its own namespace, real etcd, PostgreSQL 15, pgwarden
agents (VIP, watchdog emulator). Every request to the lab goes from inside the client
namespace. The module's lab is always torn down, also when a test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from pgwarden.core.shm import shm_path
from pgwarden.lab import netns
from pgwarden.lab.netlab import Lab, lab_dir_for, random_prefix
from pgwarden.lab.writer import read_log

pytestmark = pytest.mark.lab

BOOT_TIMEOUT = 120.0
TTL = 10


def _prefix() -> str:
    return "pgwt" + random_prefix()[4:]


@pytest.fixture(scope="module")
def lab(lab_ready: None) -> Iterator[Lab]:
    prefix = _prefix()
    # A scope of its own: the agents' shared memory is /dev/shm/pgwarden.<scope>.<name>, and
    # another lab (scope `lab`) may run on this machine at the same time.
    lab = Lab(prefix, hosts=3, scope=f"lab{prefix}", ttl=TTL, loop_wait=2, retry_timeout=3,
              owned=True)
    try:
        t0 = time.monotonic()
        lab.up(wait=BOOT_TIMEOUT)
        print(f"\nlab {prefix} up in {time.monotonic() - t0:.1f} s")
        yield lab
    finally:
        lab.down()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgwarden.lab", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_bootstrap_one_primary_two_streaming_replicas(lab: Lab) -> None:
    primary = lab.healthy()
    assert primary is not None
    replicas = sorted(h for h in lab.db_hosts if h != primary)
    lab.wait_until(lambda: lab.streaming(primary) == replicas, 60,
                   "both replicas streaming in pg_stat_replication")
    assert lab.roles() == {h: "primary" if h == primary else "replica" for h in lab.db_hosts}

    lab.sql(primary, "CREATE TABLE boot_check (id int PRIMARY KEY, note text)")
    lab.sql(primary, "INSERT INTO boot_check VALUES (1, 'written on the primary')")
    for r in replicas:
        lab.wait_until(lambda r=r: lab.sql(r, "SELECT note FROM boot_check WHERE id = 1",
                                           check=False) == [["written on the primary"]],
                       30, f"the row on {r}")
        assert lab.sql(r, "SELECT pg_is_in_recovery()") == [[True]]


def test_the_vip_is_on_the_primary_and_reaches_it(lab: Lab) -> None:
    primary = lab.healthy()
    assert primary is not None
    assert lab.wait_until(lambda: lab.vip_holders() == [primary], 30, "the VIP on the primary")
    node = lab.sql("vip", "SELECT current_setting('pgwarden_lab.node')")
    assert node == [[primary]]


def test_etcd_is_reachable_only_inside_the_lab(lab: Lab) -> None:
    dcs = lab.hosts["dcs"]
    # served to the lab, from the client namespace
    status, body = lab.api_get("dcs", "/health", port=2379)
    assert status == 200 and body["health"] == "true"
    # etcd runs inside the dcs namespace and listens on the lab address only
    etcd = lab.pid_of("dcs", "etcd")
    assert etcd is not None and netns.in_ns(etcd, dcs["ns"])
    assert not lab.tcp_check("127.0.0.1", 2379, via="dcs")
    # the root namespace has nothing of the lab: no address or route in its subnet, no
    # interface of ours (so etcd, and everything else, is unreachable from it)
    subnet = lab.state["subnet"].rsplit(".", 1)[0] + "."
    addrs = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                                      check=True).stdout)
    assert not [a for link in addrs for a in link.get("addr_info", [])
                if str(a.get("local", "")).startswith(subnet)]
    assert not [link["ifname"] for link in addrs
                if link["ifname"] in ("br0",) or link["ifname"].startswith("v-")]
    routes = subprocess.run(["ip", "route", "show", lab.state["subnet"]], capture_output=True,
                            text=True, check=True).stdout
    assert routes.strip() == ""
    for h in lab.hosts.values():
        assert subprocess.run(["ip", "-n", h["ns"], "route", "show", "default"],
                              capture_output=True, text=True).stdout.strip() == "", \
            f"{h['ns']} has a default route"


def test_freeze_thaw_and_partition_heal_of_a_replica(lab: Lab) -> None:
    primary = lab.healthy()
    assert primary is not None
    replica = sorted(h for h in lab.db_hosts if h != primary)[0]

    frozen = lab.freeze(replica, "postgres")
    assert frozen and frozen[0] == lab.postmaster_pid(replica)
    assert all(_proc_state(p) == "T" for p in frozen)
    assert not set(frozen) & set(lab.pids(replica, "agent"))
    lab.thaw(replica, "postgres")
    assert all(_proc_state(p) != "T" for p in frozen)

    lab.partition(replica)
    assert netns.link_state(lab.state["bridge_ns"], f"v-{replica}") == "DOWN"
    assert not lab.tcp_check(replica, 5432)
    assert lab.tcp_check(replica, 5432, via=replica)  # the host itself is fine
    lab.heal(replica)
    lab.wait_until(lambda: lab.tcp_check(replica, 5432), 10, f"{replica} reachable again")
    lab.wait_until(lambda: lab.healthy() == primary, 60, "the cluster healthy again")


def test_crash_of_the_primary_elects_a_new_one_without_losing_rows(lab: Lab) -> None:
    old = lab.healthy()
    assert old is not None
    others = sorted(h for h in lab.db_hosts if h != old)
    log = lab.start_writer("vip")
    try:
        lab.wait_until(lambda: len(_acked(log)) >= 100, 30, "100 rows written through the VIP")
        # Replication is asynchronous: take a point every replica has replayed, then crash.
        lsn = lab.sql(old, "SELECT pg_current_wal_lsn()::text")[0][0]
        t_sync = time.monotonic()
        for r in others:
            lab.wait_until(lambda r=r: lab.sql(
                r, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn], check=False) == [[True]],
                10, f"{r} replayed {lsn}")
        time.sleep(0.3)
        t_cut = time.monotonic()
        lab.crash(old)
        t_crash = time.monotonic()  # the power cut is complete: nothing of `old` runs

        new = lab.wait_until(lambda: lab.healthy(others), TTL + 30, "a new primary")
        elected = time.monotonic() - t_crash
        assert new in others
        third = [h for h in others if h != new][0]
        lab.wait_until(lambda: lab.streaming(new) == [third], 60, f"{third} streaming from {new}")
        lab.wait_until(lambda: lab.vip_holders() == [new], 10, f"the VIP on {new}")
        # the gratuitous ARP moved the client's neighbour entry for the VIP to the new host
        lab.wait_until(lambda: _neighbour_mac(lab, "client", lab.address("vip"))
                       == _mac(lab, new), 10, f"the client's neighbour entry -> {new}'s MAC")
        lab.wait_until(lambda: any(r["node"] == new for r in _acked(log)), 30,
                       f"the writer acked by {new} through the VIP")
    finally:
        lab.stop_writer()
    records = read_log(str(log))
    acked = [r for r in records if r["outcome"] == "acked"]
    before = [r["id"] for r in acked if r["t"] + r["dt"] <= t_sync]
    assert len(before) >= 100
    assert {r["node"] for r in acked if r["t"] + r["dt"] <= t_cut} == {old}
    present = {row[0] for row in lab.sql(new, "SELECT id FROM lab_writes")}
    assert set(before) <= present, f"rows lost: {sorted(set(before) - present)[:20]}"
    after = [r for r in acked if r["t"] > t_crash]
    assert after and {r["node"] for r in after} == {new}
    assert {r["id"] for r in after} <= present
    window = [r["id"] for r in acked if t_sync < r["t"] + r["dt"] <= t_cut]
    first_new = min(r["t"] + r["dt"] for r in after)
    print(f"\ncrash of {old}: {new} primary after {elected:.1f} s, writes through the VIP "
          f"back after {first_new - t_crash:.1f} s; {len(before)} rows replicated before the "
          f"crash all present; {len([i for i in window if i not in present])} of "
          f"{len(window)} rows acked in the last {t_cut - t_sync:.2f} s lost (async); "
          + ", ".join(f"{o} {sum(r['outcome'] == o for r in records)}"
                      for o in ("acked", "failed", "unknown")))


def _mac(lab: Lab, host: str) -> str:
    out = lab.exec_in(host, ["ip", "-j", "link", "show", "eth0"])
    return str(json.loads(out.stdout)[0]["address"]).lower()


def _neighbour_mac(lab: Lab, host: str, address: str) -> str | None:
    out = lab.exec_in(host, ["ip", "-j", "neigh", "show", address])
    entries = json.loads(out.stdout or "[]")
    return str(entries[0]["lladdr"]).lower() if entries and "lladdr" in entries[0] else None


def test_restart_of_the_crashed_host_rejoins_as_a_streaming_replica(lab: Lab) -> None:
    crashed = list(lab.state["crashed"])
    assert len(crashed) == 1, "runs after the crash test"
    host = crashed[0]
    new = lab.primary()
    assert new is not None and new != host
    t0 = time.monotonic()
    lab.restart(host)
    replicas = sorted(h for h in lab.db_hosts if h != new)
    lab.wait_until(lambda: lab.streaming(new) == replicas, 90,
                   f"{host} streaming from {new} again")
    lab.wait_until(lambda: lab.healthy() == new, 30, f"{host} a healthy replica")
    took = time.monotonic() - t0
    top = lab.sql(new, "SELECT max(id) FROM lab_writes")[0][0]
    lab.wait_until(lambda: lab.sql(host, "SELECT max(id) FROM lab_writes", check=False)
                   == [[top]], 30, f"{host} caught up")
    assert lab.vip_holders() == [new]
    print(f"\n{host} rejoined as a streaming replica {took:.1f} s after restart")


def test_cli_status_reads_the_lab_state(lab: Lab) -> None:
    out = _cli("status", "--json", "--prefix", lab.prefix)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    roles = {h["host"]: h["role"] for h in st["hosts"] if h["kind"] == "db"}
    primary = lab.primary()
    assert roles == {h: "primary" if h == primary else "replica" for h in lab.db_hosts}
    vip = {h["host"] for h in st["hosts"] if h.get("vip")}
    assert vip == {primary}
    assert all(h["agent"] for h in st["hosts"] if h["kind"] == "db")
    assert [h for h in st["hosts"] if h["kind"] == "dcs"][0]["etcd_healthy"]


def test_down_leaves_nothing_and_a_second_down_is_harmless(lab: Lab) -> None:
    spaces = {n: netns.ns_inode(n) for n in netns.list_namespaces()
              if n.startswith(lab.prefix + "-")}
    assert len(spaces) == len(lab.hosts) + 1  # hosts + the bridge
    pids = {p for n in spaces for p in netns.pids_in(n)}
    assert pids
    t0 = time.monotonic()
    lab.down()
    took = time.monotonic() - t0
    assert not [n for n in netns.list_namespaces() if n.startswith(lab.prefix + "-")]
    inodes = set(spaces.values())
    stray = [int(p) for p in os.listdir("/proc")
             if p.isdigit() and netns.pid_netns_inode(int(p)) in inodes]
    assert not stray, f"processes left in the lab's namespaces: {stray}"
    assert not [p for p in pids if _proc_state(p) not in (None, "Z")]
    assert not lab.lab_dir.exists()
    assert not [h for h in lab.db_hosts if os.path.exists(shm_path(lab.scope, h))]
    again = _cli("down", "--prefix", lab.prefix)
    assert again.returncode == 0, again.stderr
    lab.down()
    print(f"\ndown in {took:.1f} s")


def test_down_cleans_up_a_half_built_lab(lab_ready: None) -> None:
    prefix = _prefix()
    d = lab_dir_for(prefix)
    procs = []
    try:
        netns.add(f"{prefix}-br")
        netns.add(f"{prefix}-n1")
        d.mkdir()
        (d / "n1").mkdir()
        for host in ("n1", "br"):
            p = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-{host}", "sleep", "300"])
            procs.append(p)
            _wait(lambda p=p, host=host: netns.in_ns(p.pid, f"{prefix}-{host}"))
        out = _cli("down", "--prefix", prefix)
        assert out.returncode == 0, out.stderr
        assert f"lab {prefix} down" in out.stdout
        assert not [n for n in netns.list_namespaces() if n.startswith(prefix + "-")]
        for p in procs:
            assert p.wait(5) == -signal.SIGKILL
        assert not d.exists()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in (f"{prefix}-n1", f"{prefix}-br"):
            netns.delete(n)
        shutil.rmtree(d, ignore_errors=True)


def _wait(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _acked(log: Path) -> list[dict]:
    try:
        return [r for r in read_log(str(log)) if r["outcome"] == "acked"]
    except FileNotFoundError:
        return []


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
